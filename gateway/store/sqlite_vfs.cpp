// The VFS the SQLite engine opens its connections with (see sqlite_connection.hpp): SQLite's
// default VFS ("unix"), except that the writes to a write-ahead log are coalesced.
//
// SQLite writes each WAL frame as two write calls: the 24-byte frame header, then the page. A
// create commits ~18 pages, so 36 pwrite(2)s; on this project's VMs each syscall costs far more
// than the bytes it copies (bench/README.md 6h). Here the writes to a WAL file collect in one
// buffer while they are contiguous, and go to the file as one write when:
//  - the page of a commit frame (a frame header whose "database size after commit" is not 0)
//    has been added: the buffer is written before sqlite3WalFrames returns, so before the
//    wal-index header makes the frames visible to other connections (which read the file
//    through descriptors of their own) and before any fdatasync of the file by anyone;
//  - a write is not contiguous with the buffer (a frame rewritten in place, a WAL restart at
//    offset 0): the buffer first, then a new buffer starting with this write;
//  - the buffer holds more than max_buffer bytes (a transaction larger than the cache);
//  - before any other operation on the file: read, sync, truncate, size, file control, close.
// Writes therefore reach the file in the order SQLite issued them, and every byte SQLite could
// read, sync or publish is in the file first. A process killed with frames still buffered loses
// only frames of a transaction that had not committed: as if it had been killed before writing
// them. A failed write of the buffer fails the SQLite call that triggered it (the commit frame's
// write, a sync, a read): SQLite handles it as that call's failure, and the buffer is dropped.
//
// Every other file (the database, its -shm) and every VFS method passes straight through.

#include <sqlite3.h>

#include <algorithm>
#include <atomic>
#include <cstdint>
#include <cstring>
#include <mutex>
#include <new>
#include <vector>

#include "gateway/store/sqlite_connection.hpp"

namespace segue::store::sqlite {

namespace {

constexpr const char* vfs_name = "segue-wal";
constexpr int frame_header_size = 24;
constexpr std::size_t max_buffer = 1u << 20;
// The most the default VFS takes in one write: its unixWrite keeps only the low 17 bits of a
// length (seekAndWriteFd: nBuf &= 0x1ffff), so 128 KiB would write nothing and fail as
// SQLITE_FULL.
constexpr std::size_t max_write = (128u << 10) - 4096;

std::atomic<std::uint64_t> wal_writes{0};   // write calls SQLite made on WAL files
std::atomic<std::uint64_t> wal_flushes{0};  // writes made to the files for them

sqlite3_vfs* real_vfs = nullptr;

struct wal_file {
    sqlite3_file base;   // what SQLite sees; pMethods from methods_for()
    sqlite3_file* real;  // the default VFS's file, allocated right after this struct
    bool is_wal;
    // The pending bytes, for [offset, offset + pending.size()) of the file.
    std::vector<char>* pending;
    sqlite3_int64 offset;
    sqlite3_int64 commit_page_at;  // offset of the page of the commit frame just announced, or -1
};

int flush(wal_file* f) {
    if (f->pending == nullptr || f->pending->empty())
        return SQLITE_OK;
    int rc = SQLITE_OK;
    for (std::size_t done = 0; done < f->pending->size() && rc == SQLITE_OK;) {
        const std::size_t n = std::min(f->pending->size() - done, max_write);
        rc = f->real->pMethods->xWrite(f->real, f->pending->data() + done, static_cast<int>(n),
                                       f->offset + static_cast<sqlite3_int64>(done));
        wal_flushes.fetch_add(1, std::memory_order_relaxed);
        done += n;
    }
    f->pending->clear();
    if (f->pending->capacity() > 2 * max_buffer)  // after a write larger than the cap
        std::vector<char>().swap(*f->pending);
    f->commit_page_at = -1;
    return rc;
}

wal_file* self(sqlite3_file* p) {
    return reinterpret_cast<wal_file*>(p);
}

int x_close(sqlite3_file* p) {
    auto* f = self(p);
    const int flushed = flush(f);
    const int rc = f->real->pMethods->xClose(f->real);
    delete f->pending;
    f->pending = nullptr;
    return flushed != SQLITE_OK ? flushed : rc;
}

int x_read(sqlite3_file* p, void* buf, int amt, sqlite3_int64 off) {
    auto* f = self(p);
    if (const int rc = flush(f); rc != SQLITE_OK)
        return rc;
    return f->real->pMethods->xRead(f->real, buf, amt, off);
}

bool is_commit_header(const void* buf, int amt) {
    if (amt != frame_header_size)
        return false;
    const auto* b = static_cast<const unsigned char*>(buf);
    return (b[4] | b[5] | b[6] | b[7]) != 0;  // big-endian "database size after commit"
}

int x_write(sqlite3_file* p, const void* buf, int amt, sqlite3_int64 off) {
    auto* f = self(p);
    if (!f->is_wal)
        return f->real->pMethods->xWrite(f->real, buf, amt, off);
    wal_writes.fetch_add(1, std::memory_order_relaxed);
    auto& pending = *f->pending;
    const bool completes_commit = off == f->commit_page_at;  // before a flush forgets it
    if (!pending.empty() && (off != f->offset + static_cast<sqlite3_int64>(pending.size()) ||
                             pending.size() + static_cast<std::size_t>(amt) > max_buffer)) {
        if (const int rc = flush(f); rc != SQLITE_OK)
            return rc;
    }
    if (pending.empty())
        f->offset = off;
    const auto* bytes = static_cast<const char*>(buf);
    try {
        pending.insert(pending.end(), bytes, bytes + amt);
    } catch (const std::bad_alloc&) {
        // Not buffered: write what is pending and then this one directly, in order.
        if (const int rc = flush(f); rc != SQLITE_OK)
            return rc;
        wal_flushes.fetch_add(1, std::memory_order_relaxed);
        const int rc = f->real->pMethods->xWrite(f->real, buf, amt, off);
        if (rc == SQLITE_OK && is_commit_header(buf, amt))
            f->commit_page_at = off + amt;
        return rc;
    }
    if (completes_commit)
        return flush(f);
    if (is_commit_header(buf, amt))
        f->commit_page_at = off + amt;
    return SQLITE_OK;
}

int x_truncate(sqlite3_file* p, sqlite3_int64 size) {
    auto* f = self(p);
    if (const int rc = flush(f); rc != SQLITE_OK)
        return rc;
    return f->real->pMethods->xTruncate(f->real, size);
}

int x_sync(sqlite3_file* p, int flags) {
    auto* f = self(p);
    if (const int rc = flush(f); rc != SQLITE_OK)
        return rc;
    return f->real->pMethods->xSync(f->real, flags);
}

int x_file_size(sqlite3_file* p, sqlite3_int64* size) {
    auto* f = self(p);
    if (const int rc = flush(f); rc != SQLITE_OK)
        return rc;
    return f->real->pMethods->xFileSize(f->real, size);
}

int x_lock(sqlite3_file* p, int lock) {
    return self(p)->real->pMethods->xLock(self(p)->real, lock);
}
int x_unlock(sqlite3_file* p, int lock) {
    return self(p)->real->pMethods->xUnlock(self(p)->real, lock);
}
int x_check_reserved_lock(sqlite3_file* p, int* out) {
    return self(p)->real->pMethods->xCheckReservedLock(self(p)->real, out);
}

int x_file_control(sqlite3_file* p, int op, void* arg) {
    auto* f = self(p);
    if (const int rc = flush(f); rc != SQLITE_OK)
        return rc;
    return f->real->pMethods->xFileControl(f->real, op, arg);
}

int x_sector_size(sqlite3_file* p) {
    return self(p)->real->pMethods->xSectorSize(self(p)->real);
}
int x_device_characteristics(sqlite3_file* p) {
    return self(p)->real->pMethods->xDeviceCharacteristics(self(p)->real);
}
int x_shm_map(sqlite3_file* p, int page, int size, int extend, void volatile** out) {
    return self(p)->real->pMethods->xShmMap(self(p)->real, page, size, extend, out);
}
int x_shm_lock(sqlite3_file* p, int offset, int n, int flags) {
    return self(p)->real->pMethods->xShmLock(self(p)->real, offset, n, flags);
}
void x_shm_barrier(sqlite3_file* p) {
    self(p)->real->pMethods->xShmBarrier(self(p)->real);
}
int x_shm_unmap(sqlite3_file* p, int delete_flag) {
    return self(p)->real->pMethods->xShmUnmap(self(p)->real, delete_flag);
}
int x_fetch(sqlite3_file* p, sqlite3_int64 off, int amt, void** out) {
    auto* f = self(p);
    if (const int rc = flush(f); rc != SQLITE_OK)
        return rc;
    return f->real->pMethods->xFetch(f->real, off, amt, out);
}
int x_unfetch(sqlite3_file* p, sqlite3_int64 off, void* ptr) {
    return self(p)->real->pMethods->xUnfetch(self(p)->real, off, ptr);
}

// Built for the default VFS's methods (its version, and only the methods it has).
sqlite3_io_methods make_methods(const sqlite3_io_methods& real) {
    sqlite3_io_methods m{};
    m.iVersion = real.iVersion;
    m.xClose = x_close;
    m.xRead = x_read;
    m.xWrite = x_write;
    m.xTruncate = x_truncate;
    m.xSync = x_sync;
    m.xFileSize = x_file_size;
    m.xLock = x_lock;
    m.xUnlock = x_unlock;
    m.xCheckReservedLock = x_check_reserved_lock;
    m.xFileControl = x_file_control;
    m.xSectorSize = x_sector_size;
    m.xDeviceCharacteristics = x_device_characteristics;
    if (real.iVersion >= 2) {
        m.xShmMap = real.xShmMap ? x_shm_map : nullptr;
        m.xShmLock = real.xShmLock ? x_shm_lock : nullptr;
        m.xShmBarrier = real.xShmBarrier ? x_shm_barrier : nullptr;
        m.xShmUnmap = real.xShmUnmap ? x_shm_unmap : nullptr;
    }
    if (real.iVersion >= 3) {
        m.xFetch = real.xFetch ? x_fetch : nullptr;
        m.xUnfetch = real.xUnfetch ? x_unfetch : nullptr;
    }
    return m;
}

// One methods table per distinct table of the default VFS (in practice one), kept for the
// process's life: open files point at it.
const sqlite3_io_methods* methods_for(const sqlite3_io_methods* real) {
    static std::mutex mu;
    static std::vector<std::pair<const sqlite3_io_methods*, sqlite3_io_methods*>> tables;
    std::lock_guard lk(mu);
    for (const auto& [r, ours] : tables)
        if (r == real)
            return ours;
    tables.emplace_back(real, new sqlite3_io_methods(make_methods(*real)));
    return tables.back().second;
}

int x_open(sqlite3_vfs*, sqlite3_filename name, sqlite3_file* p, int flags, int* out_flags) {
    auto* f = self(p);
    f->base.pMethods = nullptr;  // SQLite calls xClose only if the open set it
    f->real = reinterpret_cast<sqlite3_file*>(f + 1);
    f->is_wal = (flags & SQLITE_OPEN_WAL) != 0;
    f->pending = nullptr;
    f->offset = 0;
    f->commit_page_at = -1;
    if (f->is_wal) {
        f->pending = new (std::nothrow) std::vector<char>();
        if (f->pending == nullptr)
            return SQLITE_NOMEM;
    }
    const int rc = real_vfs->xOpen(real_vfs, name, f->real, flags, out_flags);
    if (rc != SQLITE_OK || f->real->pMethods == nullptr) {
        // A failed open that still set its methods expects its xClose (SQLite's contract).
        if (f->real->pMethods != nullptr)
            f->real->pMethods->xClose(f->real);
        delete f->pending;
        f->pending = nullptr;
        return rc != SQLITE_OK ? rc : SQLITE_CANTOPEN;
    }
    f->base.pMethods = methods_for(f->real->pMethods);
    return SQLITE_OK;
}

int x_delete(sqlite3_vfs*, const char* name, int sync_dir) {
    return real_vfs->xDelete(real_vfs, name, sync_dir);
}
int x_access(sqlite3_vfs*, const char* name, int flags, int* out) {
    return real_vfs->xAccess(real_vfs, name, flags, out);
}
int x_full_pathname(sqlite3_vfs*, const char* name, int n, char* out) {
    return real_vfs->xFullPathname(real_vfs, name, n, out);
}
void* x_dl_open(sqlite3_vfs*, const char* name) {
    return real_vfs->xDlOpen(real_vfs, name);
}
void x_dl_error(sqlite3_vfs*, int n, char* out) {
    real_vfs->xDlError(real_vfs, n, out);
}
void (*x_dl_sym(sqlite3_vfs*, void* h, const char* sym))(void) {
    return real_vfs->xDlSym(real_vfs, h, sym);
}
void x_dl_close(sqlite3_vfs*, void* h) {
    real_vfs->xDlClose(real_vfs, h);
}
int x_randomness(sqlite3_vfs*, int n, char* out) {
    return real_vfs->xRandomness(real_vfs, n, out);
}
int x_sleep(sqlite3_vfs*, int us) {
    return real_vfs->xSleep(real_vfs, us);
}
int x_current_time(sqlite3_vfs*, double* out) {
    return real_vfs->xCurrentTime(real_vfs, out);
}
int x_get_last_error(sqlite3_vfs*, int n, char* out) {
    return real_vfs->xGetLastError ? real_vfs->xGetLastError(real_vfs, n, out) : 0;
}
int x_current_time_int64(sqlite3_vfs*, sqlite3_int64* out) {
    return real_vfs->xCurrentTimeInt64(real_vfs, out);
}

}  // namespace

const char* wal_coalescing_vfs() {
    static std::once_flag once;
    static sqlite3_vfs vfs{};
    static const char* registered = nullptr;
    std::call_once(once, [] {
        real_vfs = sqlite3_vfs_find(nullptr);
        if (real_vfs == nullptr)
            return;
        vfs.iVersion = std::min(real_vfs->iVersion, 2);
        vfs.szOsFile = static_cast<int>(sizeof(wal_file)) + real_vfs->szOsFile;
        vfs.mxPathname = real_vfs->mxPathname;
        vfs.zName = vfs_name;
        vfs.xOpen = x_open;
        vfs.xDelete = x_delete;
        vfs.xAccess = x_access;
        vfs.xFullPathname = x_full_pathname;
        vfs.xDlOpen = real_vfs->xDlOpen ? x_dl_open : nullptr;
        vfs.xDlError = real_vfs->xDlError ? x_dl_error : nullptr;
        vfs.xDlSym = real_vfs->xDlSym ? x_dl_sym : nullptr;
        vfs.xDlClose = real_vfs->xDlClose ? x_dl_close : nullptr;
        vfs.xRandomness = x_randomness;
        vfs.xSleep = x_sleep;
        vfs.xCurrentTime = x_current_time;
        vfs.xGetLastError = x_get_last_error;
        if (vfs.iVersion >= 2)
            vfs.xCurrentTimeInt64 = real_vfs->xCurrentTimeInt64 ? x_current_time_int64 : nullptr;
        if (sqlite3_vfs_register(&vfs, 0) == SQLITE_OK)
            registered = vfs_name;
    });
    return registered;  // nullptr: open with the default VFS
}

wal_write_counts wal_writes_so_far() noexcept {
    return {wal_writes.load(std::memory_order_relaxed),
            wal_flushes.load(std::memory_order_relaxed)};
}

}  // namespace segue::store::sqlite

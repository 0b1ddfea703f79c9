// The SQLite engine of the durable store (see store.hpp for the contract).
//
// Three connections, each owned by exactly one thread (so they are opened NOMUTEX), and a
// fourth thread:
//  - the writer runs queued write units in groups: BEGIN IMMEDIATE, one SAVEPOINT per unit, one
//    COMMIT for the whole group (synchronous=NORMAL: no fsync in it), then hands the group's
//    completions to the syncer and runs the next group;
//  - the syncer (with synchronous_full) fdatasyncs the WAL once for every group committed since
//    its last sync, then runs those completions in commit order: a unit completes only once it
//    is durable, and the disk's latency overlaps the writer's work instead of adding to it;
//  - the checkpointer copies the WAL into the database file (PASSIVE) when it passes
//    checkpoint_pages; the writer finishes each checkpoint between two groups so the WAL starts
//    over (SQLite's automatic checkpoint, inside a commit, is off);
//  - the reader runs read units one at a time, each in its own deferred transaction so it sees a
//    consistent snapshot; WAL lets it proceed while the writer writes. With synchronous_full a
//    read unit only runs once every commit its snapshot may hold is durable (see
//    wait_durable_snapshot): else a GET or an SSE stream could show a commit that a power loss
//    right after would undo.
//
// The files of the engine: this one (the threads and the store), sqlite_transaction.hpp (the
// operations over one connection, defined by concern in sqlite_tasks/jobs/outbox/ledger/
// idempotency.cpp), sqlite_connection.{hpp,cpp} (connection, statement, binding helpers),
// sqlite_sql.{hpp,cpp} (every statement's SQL text and the row readers) and sqlite_schema.cpp
// (migrations).

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <filesystem>
#include <limits>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <thread>
#include <utility>
#include <vector>

#include "gateway/log/log.hpp"
#include "gateway/store/sqlite_transaction.hpp"
#include "gateway/store/store.hpp"
#include "gateway/store/work_queue.hpp"

namespace segue::store {

namespace sqlite {
// sqlite_schema.cpp: applies the migrations the database has not seen yet.
void migrate(connection& c);
}  // namespace sqlite

namespace {

using detail::call_done;
using detail::name_thread;
using sqlite::connection;
using sqlite::exec_cached;
using sqlite::migrate;
using sqlite::q;
using sqlite::sqlite_transaction;

// SQLite keeps malloc statistics behind a global mutex by default: two lock round trips per
// allocation, for figures segue never reads (measured: ~4 % of the writer thread's CPU). Must
// run before SQLite initializes; a later call is refused (SQLITE_MISUSE) and changes nothing.
void disable_memory_statistics() {
    static const bool once = [] {
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
        return true;
    }();
    (void)once;
}

// The one-process rule of the SQLite store, kept by the kernel: an exclusive flock() of
// `<database>.lock`, held while the store is open and released when the process exits, however
// it exits (a SIGKILL included), so a stale lock file never blocks a start. The file names the
// holder's pid for the message of whoever waits.
//
// A store that fails to open removes the lock file if it made it (bad input changes nothing:
// a `sqlite_path` that is not a database leaves nothing beside it). It unlinks the file while
// still holding the lock, so a process that opened the same file meanwhile and then got its lock
// would hold a lock on a file no longer at that path; so a lock counts only when the path still
// names the locked file, and otherwise it is taken again on the file the path names now.
class process_lock {
  public:
    process_lock(const std::string& db_path, int wait_ms) : path_(db_path + ".lock") {
        const auto until = std::chrono::steady_clock::now() + std::chrono::milliseconds(wait_ms);
        bool told = false;
        for (;;) {
            open_file();
            if (!try_lock(db_path, wait_ms, until, told))
                continue;  // the file was removed while we waited: lock the one there now
            break;
        }
        const std::string pid = std::to_string(::getpid()) + "\n";
        if (::ftruncate(fd_, 0) != 0 || ::pwrite(fd_, pid.data(), pid.size(), 0) < 0) {
            // The lock holds without it; only a waiter's message goes without the pid.
        }
    }
    // Until keep(), the destructor removes a lock file this process created (the store failed
    // to open); after it, the file stays, as it does for a store that opened.
    ~process_lock() {
        if (fd_ >= 0 && created_ && !kept_)
            ::unlink(path_.c_str());  // still locked: nobody else can be using it as theirs
        release();
    }
    void keep() { kept_ = true; }
    void release() {
        if (fd_ >= 0)
            ::close(fd_);  // releases the lock
        fd_ = -1;
    }
    process_lock(const process_lock&) = delete;
    process_lock& operator=(const process_lock&) = delete;

  private:
    void open_file() {
        created_ = false;
        for (;;) {
            fd_ = ::open(path_.c_str(), O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
            if (fd_ >= 0) {
                created_ = true;
                return;
            }
            if (errno == EEXIST) {
                fd_ = ::open(path_.c_str(), O_RDWR | O_CLOEXEC);
                if (fd_ >= 0 || errno != ENOENT)
                    break;
                continue;  // removed between the two opens
            }
            break;
        }
        if (fd_ < 0)
            throw store_error("sqlite: cannot open " + path_ + ": " + std::strerror(errno));
    }

    // Locks fd_ (waiting until `until`): true once locked and the path still names the file;
    // false (fd_ closed) when the file was removed or replaced meanwhile.
    bool try_lock(const std::string& db_path, int wait_ms,
                  std::chrono::steady_clock::time_point until, bool& told) {
        while (::flock(fd_, LOCK_EX | LOCK_NB) != 0) {
            const int err = errno;
            if (err == EINTR)
                continue;
            if (err != EWOULDBLOCK) {
                release();
                throw store_error("sqlite: cannot lock " + path_ + ": " + std::strerror(err));
            }
            const std::string holder = holder_of();
            if (std::chrono::steady_clock::now() >= until) {
                release();
                throw store_error(
                    "the database is in use by another segue process" +
                    (holder.empty() ? std::string() : " (pid " + holder + ")") +
                    "; SQLite serves one process: stop it first, or use storage.engine: "
                    "postgres for several replicas");
            }
            if (!told) {
                log::warn(
                    "the SQLite database is in use by another process; waiting for it to "
                    "exit",
                    {{"path", db_path},
                     {"pid", holder},
                     {"wait_ms", static_cast<std::int64_t>(wait_ms)}});
                told = true;
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(100));
        }
        struct stat held {};
        struct stat named {};
        if (::fstat(fd_, &held) == 0 && ::stat(path_.c_str(), &named) == 0 &&
            held.st_dev == named.st_dev && held.st_ino == named.st_ino)
            return true;
        release();
        return false;
    }

    std::string holder_of() const {
        std::array<char, 32> buf{};
        const auto n = ::pread(fd_, buf.data(), buf.size() - 1, 0);
        std::string s(buf.data(), n > 0 ? static_cast<std::size_t>(n) : 0);
        while (!s.empty() && (s.back() == '\n' || s.back() == ' '))
            s.pop_back();
        return s.find_first_not_of("0123456789") == std::string::npos ? s : std::string();
    }
    std::string path_;
    int fd_ = -1;
    bool created_ = false;
    bool kept_ = false;
};

class sqlite_store final : public store {
  public:
    explicit sqlite_store(const sqlite_options& o)
        : lock_(checked_path(o.path), o.lock_wait_ms),
          path_(o.path),
          max_batch_(static_cast<std::size_t>(std::max(1, o.max_batch))),
          sync_wal_(o.synchronous_full),
          before_sync_(o.before_sync) {
        disable_memory_statistics();
        writer_db_ = std::make_unique<connection>(o.path, o.busy_timeout_ms);
        const std::string mode = writer_db_->query_text("PRAGMA journal_mode = WAL");
        if (mode != "wal")
            throw store_error("sqlite: could not enable WAL (journal_mode is '" + mode + "')");
        // NORMAL: COMMIT does not fsync. With synchronous_full the syncer thread makes each
        // commit durable (fdatasync of the WAL) before its completions run, while the writer
        // already runs the next group: see sync_loop.
        writer_db_->exec("PRAGMA synchronous = NORMAL");
        writer_db_->exec("PRAGMA foreign_keys = ON");
        // Savepoint journals stay in memory instead of spilling to /var/tmp files (measured:
        // ~1.2 temp files created and deleted per task without it).
        writer_db_->exec("PRAGMA temp_store = MEMORY");
        // A restarted WAL is cut back to this size (it is reused, not shrunk, otherwise).
        writer_db_->exec("PRAGMA journal_size_limit = 67108864");
        // Negative: in KiB rather than pages.
        const std::string cache = "PRAGMA cache_size = -" + std::to_string(std::max<std::uint64_t>(
                                                                1, o.writer_cache_bytes / 1024));
        writer_db_->exec(cache.c_str());
        migrate(*writer_db_);
        release_stale_leases();

        // Opened after the migrations so it never sees a half-built schema.
        reader_db_ = std::make_unique<connection>(o.path, o.busy_timeout_ms);
        reader_db_->exec("PRAGMA foreign_keys = ON");
        reader_db_->exec("PRAGMA query_only = ON");  // read units cannot write, by construction

        // Checkpoints (WAL -> database file) run on their own connection and thread, see
        // checkpoint_loop. The hook replaces SQLite's automatic checkpoint, which would copy
        // ~1,000 pages and fsync twice inside a commit of the writer: measured, that stall was
        // the whole tail of the submit latency (bench/submit.sh p99 12 ms -> 5.8 ms without it).
        checkpoint_db_ = std::make_unique<connection>(o.path, o.busy_timeout_ms);
        // A connection learns that the database is in WAL mode (and opens the WAL) only when it
        // first reads it; until then sqlite3_wal_checkpoint_v2 on it is a no-op that returns
        // SQLITE_OK (log and copied -1), and every checkpoint fell to the writer's tail.
        checkpoint_db_->query_text("PRAGMA schema_version");
        checkpoint_pages_ = std::max(1, o.checkpoint_pages);
        sqlite3_wal_hook(writer_db_->get(), &sqlite_store::on_wal_commit, this);

        if (o.synchronous_full) {
            // The WAL exists now (the connections above read the database). fdatasync on any
            // descriptor of a file flushes that file; SQLite keeps the WAL's inode until the
            // last connection closes (a restarted WAL is rewritten or truncated in place).
            const std::string wal = o.path + "-wal";
            wal_fd_ = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
            if (wal_fd_ < 0)
                throw store_error("sqlite: cannot open " + wal +
                                  " to sync it: " + std::strerror(errno));
            // Frames a killed predecessor committed but never synced are still in the page
            // cache, and readable: make them durable before anything reads them.
            if (::fdatasync(wal_fd_) != 0) {
                const std::string err = std::strerror(errno);
                close_wal_fd();
                throw store_error("sqlite: cannot sync " + wal + ": " + err);
            }
        }

        // Named for ps -L, top -H, perf and the benchmarks (which read each one's CPU time).
        syncer_ = std::thread([this] {
            name_thread("store-sync");
            sync_loop();
        });
        try {
            writer_ = std::thread([this] {
                name_thread("store-writer");
                writer_loop();
            });
            reader_ = std::thread([this] {
                name_thread("store-reader");
                reader_loop();
            });
            checkpointer_ = std::thread([this] {
                name_thread("store-ckpt");  // a name has 15 characters at most
                checkpoint_loop();
            });
        } catch (...) {
            writes_.stop();
            reads_.stop();
            stop_checkpointer();
            if (writer_.joinable())
                writer_.join();
            stop_syncer();
            syncer_.join();
            if (reader_.joinable())
                reader_.join();
            close_wal_fd();
            throw;
        }
        // Kept apart from the std::thread objects, which join() modifies.
        writer_id_ = writer_.get_id();
        reader_id_ = reader_.get_id();
        syncer_id_ = syncer_.get_id();
        lock_.keep();
    }

    ~sqlite_store() override { close(); }

    void submit_write(unit fn, completion done, write_lane) override {
        writes_.submit(std::move(fn), std::move(done));
    }
    void submit_write_first(unit fn, completion done, write_lane) override {
        writes_.submit_first(std::move(fn), std::move(done));
    }
    void submit_read(unit fn, completion done) override {
        reads_.submit(std::move(fn), std::move(done));
    }

    void close() override {
        writes_.stop();
        reads_.stop();
        // From a completion (a store thread) we cannot join ourselves: the loops still drain
        // and exit, and the destructor joins.
        const auto self = std::this_thread::get_id();
        if (self == writer_id_ || self == reader_id_ || self == syncer_id_)
            return;
        std::lock_guard lk(close_mutex_);
        if (writer_.joinable())
            writer_.join();
        // After the writer: its last groups still get synced and completed.
        stop_syncer();
        if (syncer_.joinable())
            syncer_.join();
        close_wal_fd();
        if (reader_.joinable())
            reader_.join();
        stop_checkpointer();
        if (checkpointer_.joinable())
            checkpointer_.join();
        if (checkpoints_off_.load(std::memory_order_acquire))
            for (auto* c : {writer_db_.get(), reader_db_.get(), checkpoint_db_.get()})
                if (c)
                    sqlite3_db_config(c->get(), SQLITE_DBCONFIG_NO_CKPT_ON_CLOSE, 1, nullptr);
        checkpoint_db_.reset();
        reader_db_.reset();
        writer_db_.reset();  // the last connection to close checkpoints and removes the WAL
        // Unless a sync failed: then the WAL stays, and so must the frames the shared index
        // says were copied already (into pages the kernel may have dropped). Without the index
        // the next open rebuilds it from the WAL alone and copies every frame again.
        if (checkpoints_off_.load(std::memory_order_acquire))
            ::unlink((path_ + "-shm").c_str());
        lock_.release();  // closed: another process may open it now
    }

    void set_commit_listener(std::function<void(const commit_notice&)> fn) override {
        std::lock_guard lk(listener_mutex_);
        commit_listener_ = std::move(fn);
    }

    store_stats stats() const override {
        return store_stats{commits_.load(std::memory_order_relaxed),
                           units_.load(std::memory_order_relaxed),
                           checkpoints_.load(std::memory_order_relaxed),
                           wal_pages_.load(std::memory_order_relaxed),
                           syncs_.load(std::memory_order_relaxed),
                           read_waits_.load(std::memory_order_relaxed)};
    }

  private:
    struct pending_done {
        completion done;
        std::exception_ptr err;
    };
    struct synced_group {
        bool committed = false;  // needs the sync before its completions
        // Its COMMIT appended frames to the WAL. A group that changed nothing (a claim round
        // that found no work, a renewal with nothing to renew) commits without writing a
        // frame: there is nothing of it to sync.
        bool wrote = true;
        std::uint64_t seq = 0;  // its commit sequence number (0: no COMMIT was attempted)
        commit_notice notice;   // what it changed: tell the commit listener
        std::vector<pending_done> dones;
    };

    void writer_loop() {
        std::vector<detail::queued_unit> batch;
        batch.reserve(std::min<std::size_t>(max_batch_, 1024));
        while (writes_.take(batch, max_batch_)) {
            std::span<detail::queued_unit> rest(batch);
            while (!rest.empty())
                rest = rest.subspan(run_group(rest));
            batch.clear();
            if (finish_checkpoint_.exchange(false, std::memory_order_acq_rel)) {
                checkpoint_tail();
                checkpoint_started_ = false;
            }
        }
    }

    // Called by SQLite on the writer thread after each commit, with the WAL's size in pages.
    static int on_wal_commit(void* self, sqlite3*, const char*, int pages) {
        auto& s = *static_cast<sqlite_store*>(self);
        s.wal_commits_.fetch_add(1, std::memory_order_relaxed);
        s.wal_pages_.store(static_cast<std::uint64_t>(pages), std::memory_order_relaxed);
        // One checkpoint at a time, from its start to the writer's tail: a background
        // checkpoint started again at every commit would hold SQLite's checkpoint lock nearly
        // always, the tail would find it busy, and the WAL would never start over.
        if (pages >= s.checkpoint_pages_ && !s.checkpoint_started_) {
            s.checkpoint_started_ = true;
            {
                std::lock_guard lk(s.checkpoint_mutex_);
                s.checkpoint_due_ = true;
            }
            s.checkpoint_cv_.notify_one();
        }
        return SQLITE_OK;
    }

    // The bulk of each checkpoint, off the writer: a PASSIVE checkpoint copies the WAL's frames
    // into the database file (and fsyncs both) without taking the write lock, so commits go on
    // meanwhile. It cannot catch up with a writer that keeps appending, and SQLite only starts
    // the WAL over once a checkpoint has copied every frame; so the writer then finishes it
    // itself between two groups (checkpoint_tail), when only the frames of the last moments
    // are left to copy.
    void checkpoint_loop() {
        std::unique_lock lk(checkpoint_mutex_);
        for (;;) {
            checkpoint_cv_.wait(lk, [&] { return checkpoint_due_ || checkpoint_stop_; });
            if (checkpoint_stop_)
                return;
            checkpoint_due_ = false;
            if (checkpoints_off_.load(std::memory_order_acquire))
                continue;
            lk.unlock();
            int log_pages = 0, copied = 0;
            const int rc = sqlite3_wal_checkpoint_v2(
                checkpoint_db_->get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_pages, &copied);
            // Counted only when the WAL had frames it saw copied: a call that does nothing (on a
            // connection that cannot see the WAL, see the constructor: copied -1) must not
            // count as one that works.
            if (rc == SQLITE_OK && copied > 0)
                checkpoints_.fetch_add(1, std::memory_order_relaxed);
            else if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
                log::warn("store checkpoint failed",
                          {{"error", sqlite3_errmsg(checkpoint_db_->get())}});
            // Whatever happened, the writer's tail comes next (and copies what is left), and
            // after it the next checkpoint may start.
            finish_checkpoint_.store(true, std::memory_order_release);
            lk.lock();
        }
    }

    // On the writer, between groups: copies what the background checkpoint left (the frames
    // committed while it ran), so that the next transaction starts the WAL over.
    void checkpoint_tail() {
        if (checkpoints_off_.load(std::memory_order_acquire))
            return;
        int log_pages = 0, copied = 0;
        const int rc = sqlite3_wal_checkpoint_v2(writer_db_->get(), nullptr,
                                                 SQLITE_CHECKPOINT_PASSIVE, &log_pages, &copied);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            log::warn("store checkpoint failed", {{"error", sqlite3_errmsg(writer_db_->get())}});
    }

    void stop_checkpointer() {
        {
            std::lock_guard lk(checkpoint_mutex_);
            checkpoint_stop_ = true;
        }
        checkpoint_cv_.notify_all();
    }

    // Runs units of `items` in one transaction and completes them; returns how many it
    // consumed (all of them, unless SQLite aborted the whole transaction mid-way: the rest then
    // go to a fresh transaction).
    std::size_t run_group(std::span<detail::queued_unit> items) {
        connection& c = *writer_db_;
        sqlite_transaction txn(c);
        std::vector<std::exception_ptr> errs(items.size());
        if (sync_failed_.load(std::memory_order_acquire)) {
            // Completed through the syncer too, so completions keep their order.
            synced_group g;
            for (auto& it : items)
                g.dones.push_back({std::move(it.done), sync_failure()});
            to_syncer(std::move(g));
            return items.size();
        }

        try {
            if (c.in_transaction())  // a failed ROLLBACK earlier must not wedge every group
                exec_cached(c, q::rollback);
            exec_cached(c, q::begin_immediate);
        } catch (...) {
            const auto err = std::current_exception();
            synced_group g;
            for (auto& it : items)
                g.dones.push_back({std::move(it.done), err});
            to_syncer(std::move(g));
            return items.size();
        }

        std::size_t ran = 0;
        bool lost = false;  // the whole transaction is gone (SQLite rolled it back)
        for (; ran < items.size() && !lost; ++ran) {
            try {
                exec_cached(c, q::savepoint);
            } catch (...) {
                errs[ran] = std::current_exception();
                lost = true;
                break;
            }
            try {
                items[ran].fn(txn);
                exec_cached(c, q::release);
            } catch (...) {
                errs[ran] = std::current_exception();
                // Some errors (I/O, disk full, ...) make SQLite roll back the whole transaction,
                // which also undid the earlier units of this group.
                if (!c.in_transaction()) {
                    lost = true;
                    break;
                }
                try {
                    exec_cached(c, q::rollback_to);
                    exec_cached(c, q::release);
                } catch (...) {
                    lost = true;
                    break;
                }
            }
        }

        std::exception_ptr group_err;
        std::uint64_t seq = 0;
        bool wrote = true;
        if (lost) {
            group_err = std::make_exception_ptr(
                store_error("sqlite: transaction aborted by a failing unit; nothing committed"));
            ++ran;  // the unit that broke the transaction is consumed (it has its error)
        } else {
            // Published before the COMMIT makes the group visible to readers: see
            // wait_durable_snapshot for why not after.
            seq = ++commit_seq_;
            committing_.store(seq, std::memory_order_seq_cst);
            const auto wal_commits = wal_commits_.load(std::memory_order_relaxed);
            try {
                exec_cached(c, q::commit);
                // SQLite calls the WAL hook (on this thread, inside COMMIT) exactly for the
                // commits that appended frames.
                wrote = wal_commits_.load(std::memory_order_relaxed) != wal_commits;
            } catch (...) {
                group_err = std::current_exception();  // a store_error from statement::step
            }
        }
        if (group_err && c.in_transaction()) {
            try {
                exec_cached(c, q::rollback);
            } catch (...) {
                // Nothing more to do: the connection reports the state on the next BEGIN.
            }
        }

        if (!group_err) {
            std::uint64_t ok = 0;
            for (std::size_t i = 0; i < ran; ++i)
                ok += errs[i] ? 0 : 1;
            commits_.fetch_add(1, std::memory_order_relaxed);
            units_.fetch_add(ok, std::memory_order_relaxed);
        }
        // Completions only after COMMIT (the group's data is visible to any read submitted from
        // a completion) and, with synchronous_full, after the syncer made it durable. A unit
        // that failed on its own keeps its own exception; every unit that would have committed
        // gets the group's store_error.
        synced_group g;
        g.committed = !group_err;
        g.wrote = group_err || wrote;
        g.seq = seq;
        if (!group_err)
            g.notice = std::move(txn.notice);
        g.dones.reserve(ran);
        for (std::size_t i = 0; i < ran; ++i)
            g.dones.push_back({std::move(items[i].done), errs[i] ? errs[i] : own_copy(group_err)});
        to_syncer(std::move(g));
        return ran;
    }

    // Every group's completions go through the syncer, failed groups' too, so that completions
    // keep the order of the units.
    void to_syncer(synced_group g) {
        {
            std::lock_guard lk(sync_mutex_);
            sync_queue_.push_back(std::move(g));
        }
        sync_cv_.notify_one();
    }

    // Completes committed groups in commit order. With synchronous_full, first one fdatasync
    // of the WAL for every group committed since the last one: meanwhile the writer runs the
    // next groups instead of waiting for the disk (measured: the writer spent ~a third of its
    // time in fsync). A failed sync fails the units it covered and every later write: after a
    // failed fsync the kernel may have dropped the dirty pages, so nothing written since can be
    // trusted to be on disk (the process must restart).
    void sync_loop() {
        std::vector<synced_group> groups;
        for (;;) {
            {
                std::unique_lock lk(sync_mutex_);
                sync_cv_.wait(lk, [&] { return !sync_queue_.empty() || sync_stop_; });
                if (sync_queue_.empty()) {
                    lk.unlock();
                    {
                        std::lock_guard dlk(durable_mutex_);
                        sync_exited_ = true;
                    }
                    durable_cv_.notify_all();
                    return;
                }
                groups.swap(sync_queue_);
            }
            bool any_commit = false;
            commit_notice notice;
            std::uint64_t top = 0;  // the highest commit sequence number these groups hold
            for (auto& g : groups) {
                // A failed COMMIT too: its number counts as durable only after a sync. A
                // commit that wrote no frame needs none: every frame before it was synced
                // before an earlier batch's completions, or is synced now with this batch.
                any_commit = any_commit || (g.seq != 0 && g.wrote);
                merge_notice(notice, std::move(g.notice));
                top = std::max(top, g.seq);
            }
            std::exception_ptr sync_err;
            if (any_commit && wal_fd_ >= 0) {
                if (sync_failed_.load(std::memory_order_acquire)) {
                    sync_err = sync_failure();
                } else if (const std::string why = sync_wal(); !why.empty()) {
                    log::error("store: fdatasync of the WAL failed; refusing further writes",
                               {{"error", why}});
                    stop_checkpoints();
                    sync_err = sync_failure();
                } else {
                    syncs_.fetch_add(1, std::memory_order_relaxed);
                }
            }
            // Before the completions: a read submitted from one must see its write.
            if (sync_err)
                wake_readers();  // a read waiting for these groups fails
            else if (top != 0)
                publish_durable(top);
            if (!notice.empty() && !sync_err) {
                std::function<void(const commit_notice&)> listener;
                {
                    std::lock_guard lk(listener_mutex_);
                    listener = commit_listener_;
                }
                if (listener)
                    listener(notice);
            }
            for (auto& g : groups)
                for (auto& d : g.dones)
                    // Each completion its own exception object: they run on other threads,
                    // and one shared object's refcount would be the only thing between them.
                    call_done(d.done, d.err                     ? d.err
                                      : g.committed && sync_err ? sync_failure()
                                                                : nullptr);
            groups.clear();
        }
    }

    // The fdatasync of the WAL (after the test hook): "" on success, else why it failed.
    std::string sync_wal() {
        try {
            if (before_sync_)
                before_sync_();
        } catch (const std::exception& e) {
            return std::string("before_sync: ") + e.what();
        } catch (...) {
            return "before_sync threw";
        }
        if (::fdatasync(wal_fd_) != 0)
            return std::strerror(errno);
        return {};
    }

    // SQLite is one process's store, and the lock says no other process has it open: every
    // lease in it is a dead process's (one killed, or one that stopped before its work ended).
    // Expired now, its work is claimed at once instead of when the lease would have run out
    // (engine.lease, 2 min by default). The owner stays, so the claim counts the run as failed,
    // as it counts any lease that ended unreleased (engine.max_job_failures).
    void release_stale_leases() {
        int jobs = 0, deliveries = 0;
        writer_db_->exec("BEGIN IMMEDIATE");
        try {
            writer_db_->exec(
                "UPDATE jobs SET lease_until = 0 WHERE lease_owner <> '' AND "
                "lease_until > 0");
            jobs = sqlite3_changes(writer_db_->get());
            writer_db_->exec(
                "UPDATE deliveries SET lease_until = 0 WHERE lease_owner <> '' AND "
                "lease_until > 0");
            deliveries = sqlite3_changes(writer_db_->get());
            writer_db_->exec("COMMIT");
        } catch (...) {
            writer_db_->exec("ROLLBACK");
            throw;
        }
        if (jobs > 0 || deliveries > 0)
            log::info("store: work a previous process left leased is taken up at once",
                      {{"jobs", jobs}, {"deliveries", deliveries}});
    }

    // After a failed sync of the WAL nothing since the last good one may be trusted to be on
    // disk (the kernel may have dropped the pages it could not write): writes are refused, and
    // no checkpoint may run, not even the one SQLite makes when the last connection closes,
    // which would copy frames read back from the disk into the database and delete the WAL.
    // The WAL stays for the next start, whose recovery keeps the frames whose checksums hold.
    void stop_checkpoints() {
        checkpoints_off_.store(true, std::memory_order_release);
        sync_failed_.store(true, std::memory_order_release);
    }

    // Every commit up to `seq` is durable.
    void publish_durable(std::uint64_t seq) {
        {
            std::lock_guard lk(durable_mutex_);
            durable_.store(seq, std::memory_order_release);
        }
        durable_cv_.notify_all();
    }

    // Wakes a reader waiting in wait_durable_snapshot to look at sync_failed_ / sync_exited_.
    void wake_readers() {
        { std::lock_guard lk(durable_mutex_); }  // no lost wakeup: its predicate reads under it
        durable_cv_.notify_all();
    }

    // A store_error of its own with the same message: one exception object per completion.
    static std::exception_ptr own_copy(const std::exception_ptr& e) {
        if (!e)
            return e;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            return std::make_exception_ptr(store_error(ex.what()));
        } catch (...) {
            return e;
        }
    }

    static std::exception_ptr sync_failure() {
        return std::make_exception_ptr(
            store_error("sqlite: an fsync of the WAL failed: writes are not durable; restart"));
    }

    void stop_syncer() {
        {
            std::lock_guard lk(sync_mutex_);
            sync_stop_ = true;
        }
        sync_cv_.notify_all();
    }

    void close_wal_fd() {
        if (wal_fd_ >= 0)
            ::close(wal_fd_);
        wal_fd_ = -1;
    }

    // Starts the read transaction just begun on `c` and returns once everything its snapshot
    // holds is durable. The order of the steps is what makes that true:
    //  1. The writer publishes a group's commit sequence number k (committing_) before its
    //     COMMIT; the COMMIT makes the group visible to new snapshots when it writes the WAL
    //     index header, inside the COMMIT. So "k published" happens before "k visible".
    //  2. Here the snapshot is fixed first (read_snapshot starts the read transaction, which
    //     reads that header), then committing_ is read: c. If the snapshot holds group k, this
    //     thread read the header after k's COMMIT wrote it, hence after k was published, so
    //     c >= k. (SQLite puts a full memory barrier next to each write and read of the shared
    //     header, and committing_ is seq_cst, so the publication is seen.)
    //  3. Waiting until durable_ >= c (set by the syncer after the fdatasync that covers c)
    //     thus covers every group in the snapshot; c may also be a group not in it (published,
    //     COMMIT not yet done): then the read waits for one group more than it needs.
    // Either other order is wrong: reading committing_ before fixing the snapshot lets groups
    // committed in between into the snapshot unsynced; publishing after the COMMIT lets a
    // snapshot taken between the two hold a group newer than c.
    // The snapshot stays open while it waits (for one fsync at most), which only delays a WAL
    // restart. Throws store_error if the sync fails (nothing after it will become durable) or
    // the syncer has stopped.
    void wait_durable_snapshot(connection& c) {
        exec_cached(c, q::read_snapshot);
        const std::uint64_t need = committing_.load(std::memory_order_seq_cst);
        if (durable_.load(std::memory_order_acquire) >= need)
            return;  // nothing pending: no lock, no wait
        read_waits_.fetch_add(1, std::memory_order_relaxed);
        std::unique_lock lk(durable_mutex_);
        durable_cv_.wait(lk, [&] {
            return durable_.load(std::memory_order_acquire) >= need ||
                   sync_failed_.load(std::memory_order_acquire) || sync_exited_;
        });
        if (durable_.load(std::memory_order_acquire) >= need)
            return;
        if (sync_failed_.load(std::memory_order_acquire))
            std::rethrow_exception(sync_failure());
        throw store_error("sqlite: store closed before a read's data was durable");
    }

    void reader_loop() {
        connection& c = *reader_db_;
        sqlite_transaction txn(c);
        std::vector<detail::queued_unit> one;
        while (reads_.take(one, 1)) {
            std::exception_ptr err;
            try {
                // Deferred: the snapshot starts at the first read and holds until COMMIT.
                exec_cached(c, q::begin_deferred);
                if (sync_wal_)
                    wait_durable_snapshot(c);
                one.front().fn(txn);
                exec_cached(c, q::commit);
            } catch (...) {
                err = std::current_exception();
                if (c.in_transaction()) {
                    try {
                        exec_cached(c, q::rollback);
                    } catch (...) {
                    }
                }
            }
            call_done(one.front().done, err);
            one.clear();
        }
    }

    static const std::string& checked_path(const std::string& path) {
        if (path.empty() || path == ":memory:" || path.starts_with("file::memory:"))
            throw store_error("sqlite: a database file path is required (WAL needs a file)");
        // Said plainly, before anything is made beside it (SQLite would say "unable to open
        // database file").
        std::error_code ec;
        if (std::filesystem::is_directory(path, ec))
            throw store_error("sqlite: " + path + " is a directory, not a database file");
        // An existing file must be a database already (empty is new). SQLite itself refuses
        // most other files, but takes a one-byte file for an empty database and overwrites it.
        if (std::filesystem::is_regular_file(path, ec) &&
            std::filesystem::file_size(path, ec) > 0) {
            static constexpr std::string_view magic{"SQLite format 3\0", 16};
            std::array<char, 16> head{};
            const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
            if (fd < 0)
                throw store_error("sqlite: cannot open " + path + ": " + std::strerror(errno));
            const auto n = ::pread(fd, head.data(), head.size(), 0);
            ::close(fd);
            if (n != static_cast<ssize_t>(head.size()) ||
                std::string_view(head.data(), head.size()) != magic)
                throw store_error("sqlite: " + path +
                                  " is not a SQLite database (it does not start with SQLite's "
                                  "header); name a new file or an existing segue database");
        }
        return path;
    }

    // First: released last, once every connection below is closed.
    process_lock lock_;
    const std::string path_;
    const std::size_t max_batch_;
    const bool sync_wal_;  // synchronous_full: the syncer fdatasyncs, reads wait for it
    const std::function<void()> before_sync_;
    std::mutex listener_mutex_;
    std::function<void(const commit_notice&)> commit_listener_;
    std::unique_ptr<connection> writer_db_;
    std::unique_ptr<connection> reader_db_;
    std::unique_ptr<connection> checkpoint_db_;
    int checkpoint_pages_ = 1000;
    std::mutex checkpoint_mutex_;
    std::condition_variable checkpoint_cv_;
    bool checkpoint_due_ = false;
    bool checkpoint_stop_ = false;
    std::atomic<bool> finish_checkpoint_{false};
    bool checkpoint_started_ = false;  // the writer's: set by on_wal_commit, cleared after the tail
    std::atomic<std::uint64_t> checkpoints_{0};
    int wal_fd_ = -1;  // the WAL, for the syncer's fdatasync; -1 without synchronous_full
    // A sync failed: no checkpoint may complete after it (see stop_checkpoints).
    std::atomic<bool> checkpoints_off_{false};
    std::mutex sync_mutex_;
    std::condition_variable sync_cv_;
    std::vector<synced_group> sync_queue_;
    bool sync_stop_ = false;
    std::atomic<bool> sync_failed_{false};
    std::atomic<std::uint64_t> syncs_{0};
    // Commit sequence numbers: the writer numbers each group's COMMIT (commit_seq_, its own),
    // publishes the number before the COMMIT (committing_), and the syncer publishes the highest
    // number a successful fdatasync covered (durable_). See wait_durable_snapshot.
    std::uint64_t commit_seq_ = 0;
    std::atomic<std::uint64_t> committing_{0};
    std::atomic<std::uint64_t> durable_{0};
    std::mutex durable_mutex_;
    std::condition_variable durable_cv_;
    bool sync_exited_ = false;  // under durable_mutex_
    std::atomic<std::uint64_t> read_waits_{0};
    std::atomic<std::uint64_t> wal_pages_{0};
    std::atomic<std::uint64_t> wal_commits_{0};  // commits that appended WAL frames (the hook)
    detail::work_queue writes_;
    detail::work_queue reads_;
    std::atomic<std::uint64_t> commits_{0};
    std::atomic<std::uint64_t> units_{0};
    std::mutex close_mutex_;
    std::thread writer_;
    std::thread reader_;
    std::thread checkpointer_;
    std::thread syncer_;
    std::thread::id syncer_id_;
    std::thread::id writer_id_;
    std::thread::id reader_id_;
};

}  // namespace

std::unique_ptr<store> open_sqlite(const sqlite_options& options) {
    return std::make_unique<sqlite_store>(options);
}

}  // namespace segue::store

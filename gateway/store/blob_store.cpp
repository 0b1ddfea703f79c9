// The blob store's shared parts: the factory, key rules, POSIX helpers and the local cache.

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <map>
#include <mutex>

#include "gateway/store/blob_internal.hpp"
#include "gateway/util/crypto.hpp"
#include "gateway/util/fd_io.hpp"

namespace segue::store {

namespace fs = std::filesystem;

void throw_exception_from_error(const blob_error& e, const boost::source_location&) {
    throw blob_failure(e);
}

blob_result<std::vector<std::uint64_t>> blob_store::put_all(std::span<const blob_put> files,
                                                            put_mode mode) {
    std::vector<std::uint64_t> sizes;
    sizes.reserve(files.size());
    for (const auto& f : files) {
        auto r = put(f.key, f.local_path, mode);
        if (!r) {
            for (std::size_t i = 0; i < sizes.size(); ++i)
                (void)remove(files[i].key);
            return r.error();
        }
        sizes.push_back(*r);
    }
    return sizes;
}

std::string check_blob_key(std::string_view key) {
    if (key.empty())
        return "empty key";
    if (key.size() > 1024)
        return "key longer than 1024 bytes";
    if (key.front() == '/')
        return "key must be a relative path";
    for (unsigned char c : key)
        if (c < 0x20 || c == 0x7f)
            return "key holds a control character";
    std::size_t start = 0;
    for (;;) {
        const auto end = key.find('/', start);
        const auto seg = key.substr(start, end == std::string_view::npos ? end : end - start);
        if (seg.empty())
            return "key has an empty segment";
        if (seg == "." || seg == "..")
            return "key has a '.' or '..' segment";
        if (end == std::string_view::npos)
            return "";
        start = end + 1;
    }
}

std::unique_ptr<blob_store> open_blob_store(const blob_options& options) {
    if (options.dir.empty())
        throw std::runtime_error("blob store: no directory (storage.blob_dir)");
    switch (options.backend) {
        case blob_backend::directory:
            return blob_detail::open_directory(options);
        case blob_backend::postgres:
            if (options.pg_url.empty())
                throw std::runtime_error(
                    "storage.blobs: postgres needs a PostgreSQL URL (storage.postgres.url)");
            return blob_detail::open_postgres(options);
    }
    throw std::runtime_error("blob store: unknown backend");
}

namespace blob_detail {

blob_error make_error(blob_errc code, std::string message) {
    return {code, std::move(message)};
}

blob_error errno_error(const std::string& what, int err) {
    return {err == ENOENT ? blob_errc::not_found : blob_errc::io, what + ": " + std::strerror(err)};
}

fd_closer::~fd_closer() {
    if (fd >= 0)
        ::close(fd);
}

bool write_all(int fd, const char* data, std::size_t size) {
    if (const int err = util::write_all(fd, std::string_view(data, size)); err != 0) {
        errno = err;
        return false;
    }
    return true;
}

long read_full(int fd, char* data, std::size_t size) {
    std::size_t got = 0;
    while (got < size) {
        const ssize_t n = ::read(fd, data + got, size - got);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return -1;
        }
        if (n == 0)
            break;
        got += static_cast<std::size_t>(n);
    }
    return static_cast<long>(got);
}

bool fsync_dir(const std::string& dir) {
    const int fd = ::open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0)
        return false;
    const bool ok = ::fsync(fd) == 0;
    ::close(fd);
    return ok;
}

bool make_dirs(const std::string& dir) {
    struct stat st {};
    if (::stat(dir.c_str(), &st) == 0)
        return S_ISDIR(st.st_mode);
    const fs::path p(dir);
    const std::string parent = p.parent_path().string();
    if (!parent.empty() && parent != dir && !make_dirs(parent))
        return false;
    if (::mkdir(dir.c_str(), 0750) != 0 && errno != EEXIST)
        return false;
    return fsync_dir(parent.empty() ? "." : parent);
}

// ---------------------------------------------------------------------------------------------
// blob_cache

namespace {

constexpr std::string_view temp_prefix = ".tmp-";

}  // namespace

struct blob_cache::state {
    std::string dir;
    std::chrono::seconds ttl;
    std::mutex mu;
    std::map<std::string, int, std::less<>> in_use;  // name -> holds handed out
    std::chrono::steady_clock::time_point last_sweep = std::chrono::steady_clock::now();

    void release(const std::string& name) {
        std::lock_guard lock(mu);
        auto it = in_use.find(name);
        if (it != in_use.end() && --it->second == 0)
            in_use.erase(it);
    }
};

blob_cache::blob_cache(std::string dir, std::chrono::seconds ttl) : st_(std::make_shared<state>()) {
    st_->dir = std::move(dir);
    st_->ttl = ttl;
    if (!make_dirs(st_->dir))
        throw std::runtime_error("blob cache: cannot create " + st_->dir + ": " +
                                 std::strerror(errno));
    sweep();  // copies a previous run left behind
}

blob_cache::~blob_cache() = default;

blob_result<local_blob> blob_cache::get(const std::string& name, std::uint64_t size,
                                        const filler& fill) {
    bool sweep_now = false;
    {
        std::lock_guard lock(st_->mu);
        ++st_->in_use[name];
        const auto now = std::chrono::steady_clock::now();
        if (now - st_->last_sweep >= st_->ttl / 4) {
            st_->last_sweep = now;
            sweep_now = true;
        }
    }
    // The hold is made first, so every way out below releases the name.
    std::shared_ptr<const void> hold(st_.get(),
                                     [st = st_, name](const void*) { st->release(name); });
    if (sweep_now)
        sweep();
    const std::string path = st_->dir + "/" + name;
    struct stat sb {};
    if (::stat(path.c_str(), &sb) == 0 && S_ISREG(sb.st_mode) &&
        static_cast<std::uint64_t>(sb.st_size) == size) {
        ::utimensat(AT_FDCWD, path.c_str(), nullptr, 0);  // used now: the sweep keeps it
        return local_blob{path, std::move(hold)};
    }
    const std::string temp = st_->dir + "/" + std::string(temp_prefix) + util::random_hex(8);
    auto filled = fill(temp);
    if (filled &&
        (::stat(temp.c_str(), &sb) != 0 || static_cast<std::uint64_t>(sb.st_size) != size))
        filled = make_error(blob_errc::changed,
                            "cached copy " + name + " is not " + std::to_string(size) + " bytes");
    if (!filled) {
        ::unlink(temp.c_str());
        return filled.error();
    }
    if (::rename(temp.c_str(), path.c_str()) != 0) {
        const int err = errno;
        ::unlink(temp.c_str());
        return errno_error("blob cache: rename to " + path, err);
    }
    return local_blob{path, std::move(hold)};
}

std::size_t blob_cache::sweep() {
    const auto cutoff = fs::file_time_type::clock::now() - st_->ttl;
    std::size_t removed = 0;
    std::error_code ec;
    std::lock_guard lock(st_->mu);
    for (const auto& e : fs::directory_iterator(st_->dir, ec)) {
        const std::string name = e.path().filename().string();
        if (st_->in_use.count(name))
            continue;
        std::error_code tec;
        const auto t = fs::last_write_time(e.path(), tec);
        if (!tec && t <= cutoff && fs::remove(e.path(), tec))
            ++removed;
    }
    return removed;
}

}  // namespace blob_detail
}  // namespace segue::store

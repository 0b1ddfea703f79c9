// The directory blob backend: a blob is the file <dir>/<key>. Writes go to a temporary file
// beside the target, are fsynced, and renamed over it (then the directory is fsynced), so a
// reader (here, or another replica on a shared volume) sees the old file or the new one, and
// an open reader keeps the file it opened. Right for one machine and for a volume shared by
// every replica (NFS, a ReadWriteMany PersistentVolumeClaim).

#include <fcntl.h>
#include <sys/stat.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <filesystem>
#include <span>
#include <vector>

#include "gateway/store/blob_internal.hpp"
#include "gateway/util/crypto.hpp"

namespace segue::store::blob_detail {
namespace {

namespace fs = std::filesystem;

constexpr std::size_t copy_bytes = 1u << 20;

class dir_reader final : public blob_reader {
  public:
    dir_reader(int fd, std::uint64_t size, std::string key)
        : fd_{fd}, size_(size), key_(std::move(key)) {}
    std::uint64_t size() const override { return size_; }
    blob_result<std::size_t> read(std::span<char> into) override {
        const auto want =
            static_cast<std::size_t>(std::min<std::uint64_t>(into.size(), size_ - pos_));
        if (want == 0)
            return std::size_t{0};
        ssize_t n;
        do
            n = ::pread(fd_.fd, into.data(), want, static_cast<off_t>(pos_));
        while (n < 0 && errno == EINTR);
        if (n < 0)
            return errno_error("blob " + key_ + ": read", errno);
        if (n == 0)
            return make_error(blob_errc::changed, "blob " + key_ + " is shorter than it was");
        pos_ += static_cast<std::uint64_t>(n);
        return static_cast<std::size_t>(n);
    }
    blob_result<void> seek(std::uint64_t offset) override {
        if (offset > size_)
            return make_error(blob_errc::io, "blob " + key_ + ": offset beyond the end");
        pos_ = offset;
        return {};
    }

  private:
    fd_closer fd_;
    std::uint64_t size_;
    std::uint64_t pos_ = 0;
    std::string key_;
};

class dir_store final : public blob_store {
  public:
    explicit dir_store(std::string root) : root_(std::move(root)) {
        if (!make_dirs(root_))
            throw std::runtime_error("blob directory " + root_ + " cannot be created");
    }

    std::string_view backend() const override { return "directory"; }

    blob_result<std::uint64_t> put(std::string_view key, const std::string& local,
                                   put_mode mode) override {
        std::string parent;
        auto size = place(key, local, mode, parent);
        if (size && !fsync_dir(parent))
            return errno_error("blob " + std::string(key) + ": fsync " + parent, errno);
        return size;
    }

    // Each file placed as by put(), then each directory they went into synced once: the
    // renames (and new entries) of the whole set become durable together.
    blob_result<std::vector<std::uint64_t>> put_all(std::span<const blob_put> files,
                                                    put_mode mode) override {
        std::vector<std::uint64_t> sizes;
        sizes.reserve(files.size());
        std::vector<std::string> parents;
        auto undo = [&] {
            for (std::size_t i = 0; i < sizes.size(); ++i)
                (void)remove(files[i].key);
        };
        for (const auto& f : files) {
            std::string parent;
            auto size = place(f.key, f.local_path, mode, parent);
            if (!size) {
                undo();
                return size.error();
            }
            sizes.push_back(*size);
            if (std::find(parents.begin(), parents.end(), parent) == parents.end())
                parents.push_back(std::move(parent));
        }
        for (const auto& p : parents)
            if (!fsync_dir(p)) {
                const int err = errno;
                undo();
                return errno_error("blob set: fsync " + p, err);
            }
        return sizes;
    }

    blob_result<std::unique_ptr<blob_reader>> open(std::string_view key) override {
        if (auto why = check_blob_key(key); !why.empty())
            return make_error(blob_errc::invalid_key, why);
        const std::string path = path_of(key);
        const int fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return errno_error("blob " + std::string(key), errno);
        struct stat st {};
        if (::fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
            ::close(fd);
            return make_error(blob_errc::not_found, "blob " + std::string(key) + " is not a file");
        }
        return std::unique_ptr<blob_reader>(
            new dir_reader(fd, static_cast<std::uint64_t>(st.st_size), std::string(key)));
    }

    blob_result<local_blob> materialize(std::string_view key) override {
        if (auto why = check_blob_key(key); !why.empty())
            return make_error(blob_errc::invalid_key, why);
        std::string path = path_of(key);
        struct stat st {};
        if (::stat(path.c_str(), &st) != 0)
            return errno_error("blob " + std::string(key), errno);
        if (!S_ISREG(st.st_mode))
            return make_error(blob_errc::not_found, "blob " + std::string(key) + " is not a file");
        return local_blob{std::move(path), {}};
    }

    blob_result<bool> remove(std::string_view key) override {
        if (auto why = check_blob_key(key); !why.empty())
            return make_error(blob_errc::invalid_key, why);
        if (::unlink(path_of(key).c_str()) == 0) {
            // A task's own directory (outputs/<task>/...) goes with its last file, or retention
            // would leave one empty directory per task behind. Not a top-level one (uploads/).
            // A put racing into it re-creates it (place() retries once on ENOENT).
            if (std::count(key.begin(), key.end(), '/') >= 2)
                (void)::rmdir(fs::path(path_of(key)).parent_path().c_str());
            return true;
        }
        if (errno == ENOENT)
            return false;
        return errno_error("blob " + std::string(key) + ": remove", errno);
    }

  private:
    std::string path_of(std::string_view key) const { return root_ + "/" + std::string(key); }

    // The local file's bytes durable under `key` (its data synced, renamed into place), but the
    // directory entry not yet: the caller syncs `parent` (set to the key's directory).
    blob_result<std::uint64_t> place(std::string_view key, const std::string& local, put_mode mode,
                                     std::string& parent) {
        if (auto why = check_blob_key(key); !why.empty())
            return make_error(blob_errc::invalid_key, why);
        // Its directory may be removed with the last file of another key in it (remove())
        // between make_dirs and the rename: once more then.
        auto r = place_once(key, local, mode, parent);
        if (!r && r.error().code != blob_errc::invalid_key && ::access(local.c_str(), F_OK) == 0 &&
            ::access(parent.c_str(), F_OK) != 0)
            r = place_once(key, local, mode, parent);
        return r;
    }

    blob_result<std::uint64_t> place_once(std::string_view key, const std::string& local,
                                          put_mode mode, std::string& parent) {
        const std::string target = path_of(key);
        parent = fs::path(target).parent_path().string();
        if (!make_dirs(parent))
            return errno_error("blob " + std::string(key) + ": create " + parent, errno);
        if (mode == put_mode::take) {
            // The local file becomes the blob: durable first, then renamed into place (on the
            // same file system; across file systems it is copied like any other).
            fd_closer src{::open(local.c_str(), O_RDONLY | O_CLOEXEC)};
            struct stat st {};
            if (src.fd < 0 || ::fstat(src.fd, &st) != 0)
                return errno_error("blob " + std::string(key) + ": open " + local, errno);
            if (::fsync(src.fd) != 0)
                return errno_error("blob " + std::string(key) + ": fsync " + local, errno);
            if (::rename(local.c_str(), target.c_str()) == 0)
                return static_cast<std::uint64_t>(st.st_size);
            if (errno != EXDEV)
                return errno_error("blob " + std::string(key) + ": rename " + local, errno);
        }
        auto size = copy_in(key, local, target);
        if (size && mode == put_mode::take)
            ::unlink(local.c_str());
        return size;
    }

    // Copies `local` to a temporary file beside `target`, fsyncs it and renames it over (the
    // caller syncs the directory).
    blob_result<std::uint64_t> copy_in(std::string_view key, const std::string& local,
                                       const std::string& target) {
        const std::string what = "blob " + std::string(key);
        fd_closer src{::open(local.c_str(), O_RDONLY | O_CLOEXEC)};
        if (src.fd < 0)
            return errno_error(what + ": open " + local, errno);
        const std::string temp = target + ".tmp-" + util::random_hex(6);
        fd_closer dst{::open(temp.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640)};
        if (dst.fd < 0)
            return errno_error(what + ": create " + temp, errno);
        auto fail = [&](const std::string& step) {
            const int err = errno;
            ::unlink(temp.c_str());
            return errno_error(what + ": " + step, err);
        };
        std::vector<char> buf(copy_bytes);
        std::uint64_t total = 0;
        for (;;) {
            const long n = read_full(src.fd, buf.data(), buf.size());
            if (n < 0)
                return fail("read " + local);
            if (n == 0)
                break;
            if (!write_all(dst.fd, buf.data(), static_cast<std::size_t>(n)))
                return fail("write " + temp);
            total += static_cast<std::uint64_t>(n);
        }
        if (::fsync(dst.fd) != 0)
            return fail("fsync " + temp);
        if (::close(dst.fd) != 0) {
            dst.fd = -1;
            return fail("close " + temp);
        }
        dst.fd = -1;
        if (::rename(temp.c_str(), target.c_str()) != 0)
            return fail("rename " + temp);
        return total;
    }

    std::string root_;
};

}  // namespace

std::unique_ptr<blob_store> open_directory(const blob_options& options) {
    return std::make_unique<dir_store>(options.dir);
}

}  // namespace segue::store::blob_detail

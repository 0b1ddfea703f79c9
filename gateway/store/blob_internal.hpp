#pragma once
// Inside the blob store: the backends' constructors, the local cache of materialized copies, and
// the POSIX file helpers the backends share. Not for code outside gateway/store/blob_*.cpp.

#include <functional>
#include <memory>
#include <string>
#include <string_view>

#include "gateway/store/blob_store.hpp"

namespace segue::store::blob_detail {

std::unique_ptr<blob_store> open_directory(const blob_options& options);
std::unique_ptr<blob_store> open_postgres(const blob_options& options);

blob_error make_error(blob_errc code, std::string message);
// An error naming `what` and errno's text.
blob_error errno_error(const std::string& what, int err);

// Closes a file descriptor (if >= 0) when it goes.
struct fd_closer {
    explicit fd_closer(int f) : fd(f) {}
    ~fd_closer();
    fd_closer(const fd_closer&) = delete;
    fd_closer& operator=(const fd_closer&) = delete;
    int fd;
};

// Writes all of `size` bytes (retrying short writes and EINTR); false with errno set.
bool write_all(int fd, const char* data, std::size_t size);
// Reads until `size` bytes or the end of the file; the count, or -1 with errno set.
long read_full(int fd, char* data, std::size_t size);
// fsyncs a directory, so a rename or a new entry in it is durable.
bool fsync_dir(const std::string& dir);
// Creates `dir` and any missing parents, fsyncing the parent of each one it creates.
bool make_dirs(const std::string& dir);

// Local copies of blobs for code that needs a path, under one directory, named by their
// content (the SHA-256 of their bytes), so a copy is never stale and one blob stored twice is
// one copy. A copy in use (a local_blob holds it) stays; one unused for `ttl` is removed by a
// sweep, which get() runs at most every ttl/4. Thread-safe.
class blob_cache {
  public:
    // Creates the directory; throws std::runtime_error if it cannot.
    blob_cache(std::string dir, std::chrono::seconds ttl);
    ~blob_cache();
    blob_cache(const blob_cache&) = delete;
    blob_cache& operator=(const blob_cache&) = delete;

    using filler = std::function<blob_result<void>(const std::string& temp_path)>;
    // The copy named `name` (hex), made by `fill` writing a temporary file when there is none
    // of `size` bytes yet.
    blob_result<local_blob> get(const std::string& name, std::uint64_t size, const filler& fill);
    // Removes the copies unused for the ttl (and stale temporary files). Returns how many.
    std::size_t sweep();

  private:
    struct state;
    std::shared_ptr<state> st_;  // shared with the holds handed out
};

}  // namespace segue::store::blob_detail

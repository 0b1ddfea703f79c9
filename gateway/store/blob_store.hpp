#pragma once
// The blob store: the bytes of uploads and produced audio, by key. The task store
// (store.hpp) records each file (file_row) with its key in `path`; the bytes live here.
//
// Backends: a directory (the default; a volume shared by every replica works the same way) and
// PostgreSQL (1 MiB rows, so replicas need nothing but the database). Every call blocks: run
// them on the blocking pool, never on an IO thread. Every backend is thread-safe.
//
// Keys are relative paths ("uploads/file_...", "outputs/ext_.../file_...-output-1.wav"): the
// paths file rows held when files lived only under storage.blob_dir, so those rows stay valid.
//
// Nothing is ever whole in memory: put streams a local file in, a reader streams a blob out in
// pieces the caller sizes, and code that needs a path gets a local copy (materialize). That is
// also the shape of an object store (S3: multipart upload, ranged GET, download to a cache).

#include <boost/system/result.hpp>

#include <chrono>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <span>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

namespace segue::store {

enum class blob_errc {
    not_found,    // no blob under the key
    invalid_key,  // not a relative path of plain segments (check_blob_key)
    changed,      // the blob was replaced or removed while it was being read
    io,           // a local file could not be read or written
    backend,      // the database (or another remote) failed
};

struct blob_error {
    blob_errc code = blob_errc::io;
    std::string message;  // for logs: names the key and the cause
};

template <class T>
using blob_result = boost::system::result<T, blob_error>;

// What result::value() throws when it holds an error.
struct blob_failure : std::runtime_error {
    explicit blob_failure(blob_error e) : std::runtime_error(e.message), error(std::move(e)) {}
    blob_error error;
};
[[noreturn]] void throw_exception_from_error(const blob_error& e, const boost::source_location&);

// A streamed read of one blob. Holds at most one backend chunk in memory; not thread-safe
// (one reader, one caller at a time), and it holds no database connection between calls.
class blob_reader {
  public:
    virtual ~blob_reader() = default;
    virtual std::uint64_t size() const = 0;
    // Reads up to into.size() bytes from the current offset; 0 only at the end.
    virtual blob_result<std::size_t> read(std::span<char> into) = 0;
    // Moves the offset (at most size()): reads of a range (HTTP Range) start here.
    virtual blob_result<void> seek(std::uint64_t offset) = 0;
};

// A blob as a local file, for code that needs a path (audio decoding, a multipart upload
// streamed from disk). The file stays while this object (or a copy of it) lives; after that a
// backend that made a copy may remove it. Read it, never write it.
struct local_blob {
    std::string path;
    std::shared_ptr<const void> hold;  // keeps a cached copy in use; empty when nothing to keep
};

enum class put_mode {
    copy,  // the local file stays as it is
    take,  // the store takes the local file: renamed into place where it can, else removed
};

// One file of a set stored by put_all.
struct blob_put {
    std::string key;
    std::string local_path;
};

class blob_store {
  public:
    virtual ~blob_store() = default;
    // "directory" or "postgres": for logs and metrics.
    virtual std::string_view backend() const = 0;
    // Stores the local file under `key`, streamed, durably, replacing any blob there: a reader
    // sees the old blob or the new one, never a part. Returns the size stored.
    virtual blob_result<std::uint64_t> put(std::string_view key, const std::string& local_path,
                                           put_mode mode) = 0;
    // Stores a set of files, as put() each, and returns their sizes in order: the files of one
    // output set, which nothing points at until all of them are stored. A backend may make the
    // set durable at once rather than file by file (the directory backend syncs each directory
    // once for the set, not once per file). On an error, what the call stored of the set is
    // removed again (a local file taken before the error is gone).
    virtual blob_result<std::vector<std::uint64_t>> put_all(std::span<const blob_put> files,
                                                            put_mode mode);
    // The blob for a streamed read (not_found if absent).
    virtual blob_result<std::unique_ptr<blob_reader>> open(std::string_view key) = 0;
    // The blob as a local file: the directory backend's own file, or a copy in the local cache.
    virtual blob_result<local_blob> materialize(std::string_view key) = 0;
    // Removes the blob; false if there was none.
    virtual blob_result<bool> remove(std::string_view key) = 0;
};

enum class blob_backend { directory, postgres };

struct blob_options {
    blob_backend backend = blob_backend::directory;
    // The directory backend's blobs. Every backend keeps scratch files and the cache of
    // materialized copies under it (dir/cache), so it must be writable.
    std::string dir;
    // PostgreSQL: a libpq connection URL (its search_path names the schema, if not public).
    std::string pg_url;
    int pg_max_connections = 4;  // opened on demand, kept for reuse
    // Each statement's bound (the session's statement_timeout; the gateway gives the task
    // store's); an answer that does not come within it + 10 s gives the connection up as lost
    // (a server that stopped answering). A put of a key that another put holds (a rare race of
    // two runs of one job) waits that long, then fails, and its job runs again.
    int pg_statement_timeout_ms = 5000;
    std::size_t chunk_size = 1u << 20;     // bytes per row (the last row of a blob is shorter)
    std::chrono::seconds cache_ttl{3600};  // a materialized copy unused this long is removed
};

// Opens the configured backend (PostgreSQL: connects and creates its tables if missing).
// Throws std::runtime_error at start-up when it cannot.
std::unique_ptr<blob_store> open_blob_store(const blob_options& options);

// Why `key` is not a valid key (empty when it is): a relative path of 1-1024 bytes, segments
// separated by single '/', none empty, "." or "..", no NUL or control characters.
std::string check_blob_key(std::string_view key);

}  // namespace segue::store

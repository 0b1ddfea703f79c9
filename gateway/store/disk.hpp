#pragma once
// The data volume: free space and sizes, for storage.min_free_bytes (uploads refused with 507
// below it) and the disk metrics. Every call blocks (statvfs, stat): run it on the blocking
// pool, never on an IO thread.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace segue::store {

struct volume_space {
    std::uint64_t device = 0;     // st_dev: two paths on one file system are one volume
    std::uint64_t available = 0;  // bytes this process may still write (f_bavail)
    std::uint64_t size = 0;       // bytes of the file system
};

// The file system holding `path`, or its nearest existing ancestor (a directory not made yet).
std::optional<volume_space> volume_of(const std::string& path);

// The least space available on the volumes of `paths` (each volume counted once); nullopt if
// none could be measured.
std::optional<volume_space> tightest_volume(const std::vector<std::string>& paths);

// Bytes of a file (0 if it does not exist).
std::uint64_t file_size(const std::string& path);

}  // namespace segue::store

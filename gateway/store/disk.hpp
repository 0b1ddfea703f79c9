#pragma once
// The data volume: free space and sizes, for storage.min_free_bytes (uploads refused with 507
// below it) and the disk metrics. Every call blocks (statvfs, stat): run it on the blocking
// pool, never on an IO thread.

#include <chrono>
#include <cstdint>
#include <mutex>
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

// storage.min_free_bytes without a statvfs (and a blocking-pool hop) per request: an
// admission may rest on a recent measurement when that measurement was far from the floor.
// Pure bookkeeping (time is passed in); thread-safe. The rules:
//  - a refusal is never taken from it: below or near the floor every request measures again,
//    so uploads are taken again the moment space returns;
//  - a measurement answers for `max_age` at most, and only while what it found, less the bytes
//    admitted on it since, still clears `floor + incoming` by `floor` again (at least
//    `min_headroom`): for it to admit wrongly, more than that must have been written by others
//    within `max_age`, and the write that then finds the disk full still answers 507.
class space_gate {
  public:
    using clock = std::chrono::steady_clock;
    static constexpr std::chrono::milliseconds max_age{1000};
    static constexpr std::uint64_t min_headroom = 64ull << 20;

    // True if the last measurement admits `incoming` more bytes above `floor` without a new
    // one (and counts them against it); false: measure, then call measured().
    bool admits(std::uint64_t floor, std::uint64_t incoming, clock::time_point now);
    // A fresh measurement taken at `at` (nullopt: it failed, and nothing is cached), and the
    // bytes admitted on it.
    void measured(std::optional<volume_space> v, clock::time_point at, std::uint64_t admitted);

  private:
    std::mutex m_;
    std::optional<volume_space> last_;
    clock::time_point at_{};
    std::uint64_t admitted_ = 0;  // bytes admitted on last_ since it was measured
};

}  // namespace segue::store

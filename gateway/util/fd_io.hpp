#pragma once
// Small POSIX file helpers.

#include <string_view>

namespace segue::util {

// Writes all of `data` to `fd` (retrying short writes and EINTR). Returns 0, or the errno of the
// write that failed. Blocking: for worker threads.
int write_all(int fd, std::string_view data) noexcept;

}  // namespace segue::util

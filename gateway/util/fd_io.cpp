#include "gateway/util/fd_io.hpp"

#include <unistd.h>

#include <cerrno>
#include <cstddef>

namespace segue::util {

int write_all(int fd, std::string_view data) noexcept {
    const char* p = data.data();
    std::size_t left = data.size();
    while (left > 0) {
        const auto n = ::write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return errno;
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
    return 0;
}

}  // namespace segue::util

#pragma once
// A request that cannot be served for now (its database is out of reach, say): the HTTP server
// answers it 503 `unavailable` with Retry-After, in the route's own error shape, instead of the
// 500 of an unexpected error. Thrown only where nothing was done yet, so a retry is safe.

#include <stdexcept>
#include <string>

namespace segue::util {

class unavailable_error : public std::runtime_error {
  public:
    unavailable_error(const std::string& what, int retry_after_s)
        : std::runtime_error(what), retry_after_s_(retry_after_s) {}
    int retry_after_s() const noexcept { return retry_after_s_; }

  private:
    int retry_after_s_;
};

}  // namespace segue::util

#pragma once
// API keys -> tenants. Keys are kept only as SHA-256 digests and compared in constant time.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config/settings.hpp"

namespace segue::api {

// The token of an "Authorization: Bearer <token>" value (scheme in any case, spaces around the
// token trimmed); "" if absent, empty or another scheme.
std::string_view bearer_token(std::optional<std::string_view> authorization);

class authenticator {
  public:
    explicit authenticator(const std::vector<config::tenant_settings>& tenants);
    // The tenant owning the key in an "Authorization: Bearer <key>" value, if any.
    std::optional<std::string> authenticate(std::optional<std::string_view> authorization) const;
    std::size_t tenant_count() const noexcept { return tenants_; }

  private:
    struct entry {
        std::string digest;  // raw SHA-256 of the key
        std::string tenant;
    };
    std::vector<entry> entries_;
    std::size_t tenants_ = 0;
};

}  // namespace segue::api

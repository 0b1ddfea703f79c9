#pragma once
// Expiring, signed file URLs: what a provider fetches an uploaded file from without credentials
// (some take audio only by URL). The signature is HMAC-SHA256(key, "<file id>.<expires>"),
// hex; every replica must share api.url_signing_key.

#include <cstdint>
#include <string>
#include <string_view>

namespace segue::core {

// "/v1/files/<id>?expires=<unix s>&sig=<hex>" (prefix it with api.public_base_url).
std::string signed_file_path(std::string_view key, std::string_view file_id,
                             std::int64_t expires_unix_s);

// True if `sig` signs (file_id, expires) under `key` and `expires` (decimal Unix seconds) is
// not past `now_unix_s`. Constant-time comparison.
bool verify_file_signature(std::string_view key, std::string_view file_id, std::string_view expires,
                           std::string_view sig, std::int64_t now_unix_s);

}  // namespace segue::core

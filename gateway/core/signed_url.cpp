#include "gateway/core/signed_url.hpp"

#include <charconv>

#include "gateway/util/crypto.hpp"

namespace segue::core {
namespace {

std::string signature(std::string_view key, std::string_view file_id, std::string_view expires) {
    std::string msg;
    msg.reserve(file_id.size() + 1 + expires.size());
    msg.append(file_id).append(".").append(expires);
    return util::hex_encode(util::hmac_sha256(key, msg));
}

}  // namespace

std::string signed_file_path(std::string_view key, std::string_view file_id,
                             std::int64_t expires_unix_s) {
    const std::string e = std::to_string(expires_unix_s);
    return "/v1/files/" + std::string(file_id) + "?expires=" + e +
           "&sig=" + signature(key, file_id, e);
}

bool verify_file_signature(std::string_view key, std::string_view file_id, std::string_view expires,
                           std::string_view sig, std::int64_t now_unix_s) {
    std::int64_t e = 0;
    auto [p, ec] = std::from_chars(expires.data(), expires.data() + expires.size(), e);
    if (ec != std::errc() || p != expires.data() + expires.size() || expires.empty() ||
        expires.size() > 12 || key.empty())
        return false;
    const bool valid = util::constant_time_equal(signature(key, file_id, expires), sig);
    return valid && e >= now_unix_s;
}

}  // namespace segue::core

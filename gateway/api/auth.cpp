#include "gateway/api/auth.hpp"

#include <cctype>

#include "gateway/util/crypto.hpp"
#include "gateway/util/text.hpp"

namespace segue::api {
namespace {

std::string unhex(std::string_view hex) {
    std::string out;
    out.reserve(hex.size() / 2);
    auto val = [](char c) -> int {
        if (c >= '0' && c <= '9')
            return c - '0';
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
        return c - 'a' + 10;
    };
    for (std::size_t i = 0; i + 1 < hex.size(); i += 2)
        out.push_back(static_cast<char>(val(hex[i]) << 4 | val(hex[i + 1])));
    return out;
}

}  // namespace

std::string_view bearer_token(std::optional<std::string_view> authorization) {
    constexpr std::string_view scheme = "bearer ";
    if (!authorization || authorization->size() <= scheme.size() ||
        !util::iequals(authorization->substr(0, scheme.size()), scheme))
        return {};
    std::string_view v = authorization->substr(scheme.size());
    while (!v.empty() && v.front() == ' ')
        v.remove_prefix(1);
    while (!v.empty() && v.back() == ' ')
        v.remove_suffix(1);
    return v;
}

authenticator::authenticator(const std::vector<config::tenant_settings>& tenants)
    : tenants_(tenants.size()) {
    for (const auto& t : tenants) {
        for (const auto& k : t.api_keys) {
            // The config validated "sha256:" keys as 64 hex digits.
            if (k.rfind("sha256:", 0) == 0)
                entries_.push_back({unhex(k.substr(7)), t.name});
            else
                entries_.push_back({util::sha256_raw(k), t.name});
        }
    }
}

std::optional<std::string> authenticator::authenticate(
    std::optional<std::string_view> authorization) const {
    const std::string_view v = bearer_token(authorization);
    if (v.empty())
        return std::nullopt;
    // Digests have a fixed length, so every comparison takes the same time; all entries are
    // checked so timing does not reveal which tenant's key was close.
    const std::string digest = util::sha256_raw(v);
    const entry* found = nullptr;
    for (const auto& e : entries_)
        if (util::constant_time_equal(digest, e.digest) && !found)
            found = &e;
    if (!found)
        return std::nullopt;
    return found->tenant;
}

}  // namespace segue::api

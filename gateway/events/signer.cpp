#include "gateway/events/signer.hpp"

#include <openssl/rand.h>

#include <stdexcept>

#include "gateway/util/crypto.hpp"
#include "gateway/util/text.hpp"

namespace segue::events {

namespace {

using util::iequals;

const std::string* find_header(const header_list& headers, std::string_view name) {
    for (const auto& [k, v] : headers)
        if (iequals(k, name))
            return &v;
    return nullptr;
}

// Decimal digits only (no sign, no spaces), at most 18 of them: no overflow, and far beyond
// any real unix time.
bool parse_timestamp(std::string_view text, std::int64_t& out) {
    if (text.empty() || text.size() > 18)
        return false;
    std::int64_t v = 0;
    for (char c : text) {
        if (c < '0' || c > '9')
            return false;
        v = v * 10 + (c - '0');
    }
    out = v;
    return true;
}

}  // namespace

bool parse_secret(std::string_view text, std::string& key_bytes, std::string& error) {
    if (text.substr(0, webhook_secret_prefix.size()) == webhook_secret_prefix)
        text.remove_prefix(webhook_secret_prefix.size());
    std::string key;
    if (text.empty()) {
        error = "webhook secret is empty";
        return false;
    }
    if (!util::base64_decode(text, key)) {
        error = "webhook secret is not whsec_ followed by standard base64";
        return false;
    }
    if (key.empty()) {
        error = "webhook secret is empty";
        return false;
    }
    if (key.size() < webhook_min_key_bytes || key.size() > webhook_max_key_bytes) {
        error = "webhook secret decodes to " + std::to_string(key.size()) +
                " bytes; it must be whsec_ followed by the base64 of " +
                std::to_string(webhook_min_key_bytes) + " to " +
                std::to_string(webhook_max_key_bytes) + " random bytes";
        return false;
    }
    key_bytes = std::move(key);
    return true;
}

std::string format_secret(std::string_view key_bytes) {
    return std::string(webhook_secret_prefix) + util::base64_encode(key_bytes);
}

std::string generate_secret() {
    std::string key(32, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(key.data()), static_cast<int>(key.size())) != 1)
        throw std::runtime_error("RAND_bytes failed");
    return format_secret(key);
}

std::string sign(std::string_view key_bytes, std::string_view msg_id, std::int64_t timestamp_s,
                 std::string_view body) {
    std::string content;
    const std::string ts = std::to_string(timestamp_s);
    content.reserve(msg_id.size() + ts.size() + body.size() + 2);
    content.append(msg_id);
    content.push_back('.');
    content.append(ts);
    content.push_back('.');
    content.append(body);
    return "v1," + util::base64_encode(util::hmac_sha256(key_bytes, content));
}

std::string signature_header(const std::vector<std::string>& keys, std::string_view msg_id,
                             std::int64_t timestamp_s, std::string_view body) {
    std::string out;
    for (const auto& key : keys) {
        if (!out.empty())
            out.push_back(' ');
        out += sign(key, msg_id, timestamp_s, body);
    }
    return out;
}

bool verify(const std::vector<std::string>& keys, const header_list& headers, std::string_view body,
            std::int64_t now_s, std::int64_t tolerance_s, std::string& error) {
    if (keys.empty()) {
        error = "no webhook keys to verify with";
        return false;
    }
    const std::string* id = find_header(headers, "webhook-id");
    const std::string* ts_text = find_header(headers, "webhook-timestamp");
    const std::string* sigs = find_header(headers, "webhook-signature");
    if (!id || id->empty()) {
        error = "missing webhook-id header";
        return false;
    }
    if (!ts_text || ts_text->empty()) {
        error = "missing webhook-timestamp header";
        return false;
    }
    if (!sigs || sigs->empty()) {
        error = "missing webhook-signature header";
        return false;
    }
    if (id->find('.') != std::string::npos) {
        error = "webhook-id contains '.'";
        return false;
    }
    std::int64_t ts = 0;
    if (!parse_timestamp(*ts_text, ts)) {
        error = "webhook-timestamp is not an integer unix time";
        return false;
    }
    // 128-bit so that no now_s/ts pair can overflow.
    const __int128 age = static_cast<__int128>(now_s) - ts;
    if (age > tolerance_s) {
        error = "webhook-timestamp too old";
        return false;
    }
    if (-age > tolerance_s) {
        error = "webhook-timestamp too new";
        return false;
    }

    std::vector<std::string> expected;
    expected.reserve(keys.size());
    for (const auto& key : keys) {
        std::string s = sign(key, *id, ts, body);
        expected.push_back(s.substr(3));  // drop "v1,"
    }
    bool matched = false;
    bool any_v1 = false;
    std::string_view rest = *sigs;
    while (!rest.empty()) {
        const std::size_t sp = rest.find(' ');
        std::string_view token = rest.substr(0, sp);
        rest = sp == std::string_view::npos ? std::string_view{} : rest.substr(sp + 1);
        if (token.empty())
            continue;
        const std::size_t comma = token.find(',');
        if (comma == std::string_view::npos || token.substr(0, comma) != "v1")
            continue;
        any_v1 = true;
        const std::string_view candidate = token.substr(comma + 1);
        // No early exit: every v1 signature is compared against every key.
        for (const auto& e : expected)
            matched |= util::constant_time_equal(e, candidate);
    }
    if (!matched) {
        error = any_v1 ? "no matching webhook signature" : "no v1 webhook signature";
        return false;
    }
    return true;
}

std::optional<signer> signer::from_secrets(const std::vector<std::string>& whsec_secrets,
                                           std::string& error) {
    if (whsec_secrets.empty()) {
        error = "no webhook secrets";
        return std::nullopt;
    }
    std::vector<std::string> keys;
    keys.reserve(whsec_secrets.size());
    for (std::size_t i = 0; i < whsec_secrets.size(); ++i) {
        std::string key, why;
        if (!parse_secret(whsec_secrets[i], key, why)) {
            error = "webhook secret #" + std::to_string(i + 1) + ": " + why;
            return std::nullopt;
        }
        keys.push_back(std::move(key));
    }
    return signer(std::move(keys));
}

header_list signer::headers(std::string_view msg_id, std::int64_t timestamp_s,
                            std::string_view body) const {
    return {
        {"webhook-id", std::string(msg_id)},
        {"webhook-timestamp", std::to_string(timestamp_s)},
        {"webhook-signature", header(msg_id, timestamp_s, body)},
    };
}

}  // namespace segue::events

#pragma once
// Standard Webhooks (https://www.standardwebhooks.com, spec 1.0.0) symmetric signatures.
//
// A delivery carries three headers:
//   webhook-id:        the message id (same on every retry; consumers use it to deduplicate)
//   webhook-timestamp: the attempt's unix time in seconds (new on every retry)
//   webhook-signature: space-separated "v1,<base64 HMAC-SHA256(key, id.timestamp.body)>",
//                      one per active key (key rotation), newest key first
//
// A secret is presented as "whsec_" + standard base64 of the raw key bytes; the prefix is
// optional on input, as in the spec's libraries. Key length: the spec asks for "at least 24
// bytes (192 bits, 512 maximum)", so parse_secret() refuses keys shorter than 24 or longer than
// 64 bytes (generate_secret() makes 32). The reference libraries accept any non-empty key;
// this is deliberately stricter, and only applies to secrets, not to raw keys passed to sign().
//
// The message id must not contain '.' (the spec: it would make "id.ts.body" ambiguous);
// verify() refuses such ids, sign() assumes the caller's ids are generated ("msg_...").

#include <cstddef>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace segue::events {

inline constexpr std::string_view webhook_secret_prefix = "whsec_";
inline constexpr std::size_t webhook_min_key_bytes = 24;
inline constexpr std::size_t webhook_max_key_bytes = 64;
// The spec's (and its libraries') replay window, both ways.
inline constexpr std::int64_t webhook_default_tolerance_s = 5 * 60;

// Lower-case header names and value pairs, as sent and as given to verify().
using header_list = std::vector<std::pair<std::string, std::string>>;

// "whsec_<base64>" or bare "<base64>" (padding optional) -> raw key bytes. False with a reason
// (that never quotes the secret) for an empty key, bad base64, or a key outside 24..64 bytes.
bool parse_secret(std::string_view text, std::string& key_bytes, std::string& error);
// Raw key bytes -> "whsec_<base64>".
std::string format_secret(std::string_view key_bytes);
// A fresh "whsec_..." secret of 32 CSPRNG bytes.
std::string generate_secret();

// "v1,<base64 HMAC-SHA256(key, msg_id + "." + timestamp_s + "." + body)>".
std::string sign(std::string_view key_bytes, std::string_view msg_id, std::int64_t timestamp_s,
                 std::string_view body);
// The webhook-signature value: one "v1,..." per key, in the order given (newest first),
// separated by single spaces. Empty for no keys.
std::string signature_header(const std::vector<std::string>& keys, std::string_view msg_id,
                             std::int64_t timestamp_s, std::string_view body);

// The receiving side. Requires webhook-id, webhook-timestamp (decimal digits only) and
// webhook-signature (names matched case-insensitively; the first of duplicates wins); the
// timestamp within tolerance_s of now_s both ways; and one of the space-separated "v1,..."
// signatures equal (constant-time) to the signature under one of `keys`. Other versions
// ("v1a,...", "v2,...") are ignored. False with a reason otherwise.
bool verify(const std::vector<std::string>& keys, const header_list& headers, std::string_view body,
            std::int64_t now_s, std::int64_t tolerance_s, std::string& error);

// The parsed keys of one endpoint (or tenant), newest first.
class signer {
  public:
    // Every secret must parse; an empty list is refused. The error names the secret's index.
    static std::optional<signer> from_secrets(const std::vector<std::string>& whsec_secrets,
                                              std::string& error);

    // The webhook-signature value for one attempt.
    std::string header(std::string_view msg_id, std::int64_t timestamp_s,
                       std::string_view body) const {
        return signature_header(keys_, msg_id, timestamp_s, body);
    }
    // All three headers for one attempt: webhook-id, webhook-timestamp, webhook-signature.
    header_list headers(std::string_view msg_id, std::int64_t timestamp_s,
                        std::string_view body) const;
    bool verify(const header_list& headers, std::string_view body, std::int64_t now_s,
                std::int64_t tolerance_s, std::string& error) const {
        return events::verify(keys_, headers, body, now_s, tolerance_s, error);
    }
    const std::vector<std::string>& keys() const { return keys_; }

  private:
    explicit signer(std::vector<std::string> keys) : keys_(std::move(keys)) {}
    std::vector<std::string> keys_;
};

}  // namespace segue::events

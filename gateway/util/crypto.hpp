#pragma once
// Small crypto helpers over OpenSSL: ids, digests, constant-time comparison.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace segue::util {

// prefix + 26 base32 characters from 130 CSPRNG bits ("ext_0k2m..."): unguessable ids.
std::string random_id(std::string_view prefix);
// prefix + 26 base32 characters that sort by creation time: 10 for the Unix time in
// milliseconds (48 bits, as in ULID), then 16 from 80 CSPRNG bits. Still unguessable, and rows
// keyed by them are inserted at the right edge of their B-tree indexes instead of on a random
// page each (measured: that random page per index is most of what a commit writes). Ids this
// process makes in one millisecond sort in the order it made them (the 80 bits grow by a
// random step of up to 40 bits).
std::string sortable_id(std::string_view prefix);
// The same from a given time (tests).
std::string sortable_id(std::string_view prefix, std::uint64_t unix_ms);
// `n` random bytes as lowercase hex.
std::string random_hex(std::size_t n);
std::string sha256_hex(std::string_view data);
// Raw 32-byte digest.
std::string sha256_raw(std::string_view data);
// Constant-time equality for equal-length secrets; false (still constant-time in the
// length of `a`) when the lengths differ.
bool constant_time_equal(std::string_view a, std::string_view b) noexcept;
std::string hex_encode(std::string_view raw);
// Raw 32-byte HMAC-SHA256 of `data` under `key`.
std::string hmac_sha256(std::string_view key, std::string_view data);
// AES-256-GCM under a 32-byte key: `plain` sealed as nonce (12 random bytes) || ciphertext ||
// tag (16), authenticated together with `aad`; open gives the plaintext back, or nullopt for
// anything not sealed by aead_seal under that key with that `aad` (altered, cut, forged).
// Throws std::invalid_argument for a key of another length.
std::string aead_seal(std::string_view key, std::string_view aad, std::string_view plain);
std::optional<std::string> aead_open(std::string_view key, std::string_view aad,
                                     std::string_view sealed);
// Standard base64 (RFC 4648 section 4, with padding).
std::string base64_encode(std::string_view raw);
// Standard base64 with or without padding; false for any other character or a bad length.
bool base64_decode(std::string_view text, std::string& out);

// SHA-256 of a file's bytes (read a MiB at a time), lowercase hex; "" if it cannot be read.
std::string sha256_file_hex(const std::string& path);

// Incremental SHA-256, for streamed uploads.
class sha256_stream {
  public:
    sha256_stream();
    ~sha256_stream();
    sha256_stream(const sha256_stream&) = delete;
    sha256_stream& operator=(const sha256_stream&) = delete;
    void update(std::string_view data);
    std::string hex_digest();

  private:
    void* ctx_;
};

}  // namespace segue::util

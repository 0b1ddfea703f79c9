#include "gateway/util/crypto.hpp"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include <chrono>
#include <cstring>
#include <fstream>
#include <mutex>
#include <stdexcept>
#include <vector>

namespace segue::util {

std::string hex_encode(std::string_view raw) {
    static constexpr char digits[] = "0123456789abcdef";
    std::string out;
    out.reserve(raw.size() * 2);
    for (unsigned char c : raw) {
        out.push_back(digits[c >> 4]);
        out.push_back(digits[c & 0xf]);
    }
    return out;
}

std::string hmac_sha256(std::string_view key, std::string_view data) {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    if (!HMAC(EVP_sha256(), key.data(), static_cast<int>(key.size()),
              reinterpret_cast<const unsigned char*>(data.data()), data.size(), md, &len))
        throw std::runtime_error("HMAC failed");
    return std::string(reinterpret_cast<char*>(md), len);
}

namespace {

constexpr std::size_t gcm_nonce = 12, gcm_tag = 16;

struct cipher_ctx {
    EVP_CIPHER_CTX* p = EVP_CIPHER_CTX_new();
    ~cipher_ctx() { EVP_CIPHER_CTX_free(p); }
    cipher_ctx() {
        if (!p)
            throw std::runtime_error("EVP_CIPHER_CTX_new failed");
    }
    cipher_ctx(const cipher_ctx&) = delete;
    cipher_ctx& operator=(const cipher_ctx&) = delete;
};

const unsigned char* bytes(std::string_view s) {
    return reinterpret_cast<const unsigned char*>(s.data());
}

}  // namespace

std::string aead_seal(std::string_view key, std::string_view aad, std::string_view plain) {
    if (key.size() != 32)
        throw std::invalid_argument("aead_seal: the key must be 32 bytes");
    std::string out(gcm_nonce + plain.size() + gcm_tag, '\0');
    auto* o = reinterpret_cast<unsigned char*>(out.data());
    if (RAND_bytes(o, static_cast<int>(gcm_nonce)) != 1)
        throw std::runtime_error("RAND_bytes failed");
    cipher_ctx c;
    int n = 0;
    if (EVP_EncryptInit_ex(c.p, EVP_aes_256_gcm(), nullptr, bytes(key), o) != 1 ||
        EVP_EncryptUpdate(c.p, nullptr, &n, bytes(aad), static_cast<int>(aad.size())) != 1 ||
        EVP_EncryptUpdate(c.p, o + gcm_nonce, &n, bytes(plain), static_cast<int>(plain.size())) !=
            1 ||
        EVP_EncryptFinal_ex(c.p, o + gcm_nonce + n, &n) != 1 ||
        EVP_CIPHER_CTX_ctrl(c.p, EVP_CTRL_GCM_GET_TAG, static_cast<int>(gcm_tag),
                            o + gcm_nonce + plain.size()) != 1)
        throw std::runtime_error("AES-256-GCM sealing failed");
    return out;
}

std::optional<std::string> aead_open(std::string_view key, std::string_view aad,
                                     std::string_view sealed) {
    if (key.size() != 32)
        throw std::invalid_argument("aead_open: the key must be 32 bytes");
    if (sealed.size() < gcm_nonce + gcm_tag)
        return std::nullopt;
    const std::size_t len = sealed.size() - gcm_nonce - gcm_tag;
    std::string plain(len, '\0');
    auto* p = reinterpret_cast<unsigned char*>(plain.data());
    std::string tag(sealed.substr(gcm_nonce + len));
    cipher_ctx c;
    int n = 0;
    if (EVP_DecryptInit_ex(c.p, EVP_aes_256_gcm(), nullptr, bytes(key), bytes(sealed)) != 1 ||
        EVP_DecryptUpdate(c.p, nullptr, &n, bytes(aad), static_cast<int>(aad.size())) != 1 ||
        EVP_DecryptUpdate(c.p, p, &n, bytes(sealed) + gcm_nonce, static_cast<int>(len)) != 1 ||
        EVP_CIPHER_CTX_ctrl(c.p, EVP_CTRL_GCM_SET_TAG, static_cast<int>(gcm_tag), tag.data()) !=
            1 ||
        EVP_DecryptFinal_ex(c.p, p + n, &n) != 1)
        return std::nullopt;
    return plain;
}

namespace {
constexpr char b64_alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
}

std::string base64_encode(std::string_view raw) {
    std::string out;
    out.reserve((raw.size() + 2) / 3 * 4);
    std::size_t i = 0;
    auto byte = [&](std::size_t k) { return static_cast<unsigned char>(raw[k]); };
    for (; i + 3 <= raw.size(); i += 3) {
        unsigned v = (byte(i) << 16) | (byte(i + 1) << 8) | byte(i + 2);
        out.push_back(b64_alphabet[(v >> 18) & 63]);
        out.push_back(b64_alphabet[(v >> 12) & 63]);
        out.push_back(b64_alphabet[(v >> 6) & 63]);
        out.push_back(b64_alphabet[v & 63]);
    }
    if (raw.size() - i == 1) {
        unsigned v = byte(i) << 16;
        out.push_back(b64_alphabet[(v >> 18) & 63]);
        out.push_back(b64_alphabet[(v >> 12) & 63]);
        out += "==";
    } else if (raw.size() - i == 2) {
        unsigned v = (byte(i) << 16) | (byte(i + 1) << 8);
        out.push_back(b64_alphabet[(v >> 18) & 63]);
        out.push_back(b64_alphabet[(v >> 12) & 63]);
        out.push_back(b64_alphabet[(v >> 6) & 63]);
        out.push_back('=');
    }
    return out;
}

bool base64_decode(std::string_view text, std::string& out) {
    while (!text.empty() && text.back() == '=')
        text.remove_suffix(1);
    if (text.size() % 4 == 1)
        return false;
    out.clear();
    out.reserve(text.size() * 3 / 4);
    unsigned acc = 0;
    int bits = 0;
    for (char c : text) {
        int v;
        if (c >= 'A' && c <= 'Z')
            v = c - 'A';
        else if (c >= 'a' && c <= 'z')
            v = c - 'a' + 26;
        else if (c >= '0' && c <= '9')
            v = c - '0' + 52;
        else if (c == '+')
            v = 62;
        else if (c == '/')
            v = 63;
        else
            return false;
        acc = (acc << 6) | static_cast<unsigned>(v);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            out.push_back(static_cast<char>((acc >> bits) & 0xff));
        }
    }
    return true;
}

namespace {

// Id bytes from OpenSSL's CSPRNG, drawn 4 KiB at a time per thread: one RAND_bytes call per
// ~150 ids instead of one each (its locks and DRBG setup were ~3 % of the store writer's CPU,
// which makes the event ids). Bytes handed out are wiped from the pool.
void id_random_bytes(unsigned char* out, std::size_t n) {
    struct pool {
        unsigned char bytes[4096];
        std::size_t pos = sizeof bytes;
        ~pool() { OPENSSL_cleanse(bytes, sizeof bytes); }
    };
    thread_local pool p;
    if (n > sizeof p.bytes) {
        if (RAND_bytes(out, static_cast<int>(n)) != 1)
            throw std::runtime_error("RAND_bytes failed");
        return;
    }
    if (sizeof p.bytes - p.pos < n) {
        if (RAND_bytes(p.bytes, sizeof p.bytes) != 1)
            throw std::runtime_error("RAND_bytes failed");
        p.pos = 0;
    }
    std::memcpy(out, p.bytes + p.pos, n);
    OPENSSL_cleanse(p.bytes + p.pos, n);
    p.pos += n;
}

}  // namespace

std::string random_id(std::string_view prefix) {
    static constexpr char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";  // Crockford base32
    unsigned char bytes[26];
    id_random_bytes(bytes, sizeof bytes);
    std::string id(prefix);
    for (unsigned char b : bytes)
        id.push_back(alphabet[b & 31]);
    return id;
}

std::string sortable_id(std::string_view prefix, std::uint64_t unix_ms) {
    static constexpr char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";  // Crockford base32
    unsigned char bytes[16];
    id_random_bytes(bytes, sizeof bytes);
    std::string id(prefix);
    id.reserve(prefix.size() + 26);
    // 10 characters hold 50 bits: the time's 48 (good until the year 10889) behind two zeros,
    // most significant first so that the string order is the time order.
    for (int shift = 45; shift >= 0; shift -= 5)
        id.push_back(alphabet[(unix_ms >> shift) & 31]);
    for (unsigned char b : bytes)
        id.push_back(alphabet[b & 31]);
    return id;
}

std::string sortable_id(std::string_view prefix) {
    static constexpr char alphabet[] = "0123456789abcdefghjkmnpqrstvwxyz";  // Crockford base32
    using u128 = unsigned __int128;
    constexpr u128 mask80 = (u128{1} << 80) - 1;
    // Ids made in one millisecond by this process sort in the order they were made (rows of one
    // transaction, such as a task's deliveries, list in their order): within a millisecond the
    // 80 bits grow by a random step, so they stay unguessable. A clock that steps back keeps
    // the last millisecond.
    static std::mutex m;
    static std::uint64_t last_ms = 0;
    static u128 last = 0;
    unsigned char bytes[16];
    id_random_bytes(bytes, sizeof bytes);
    u128 fresh = 0;
    for (int i = 0; i < 10; ++i)
        fresh = (fresh << 8) | bytes[i];
    std::uint64_t step = 0;
    for (int i = 10; i < 15; ++i)
        step = (step << 8) | bytes[i];  // 40 bits
    auto ms = static_cast<std::uint64_t>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                             std::chrono::system_clock::now().time_since_epoch())
                                             .count());
    u128 r;
    {
        std::lock_guard lock(m);
        if (ms <= last_ms && last + step + 1 <= mask80) {
            ms = last_ms;
            r = last + step + 1;
        } else {
            ms = std::max(ms, last_ms + (ms <= last_ms ? 1 : 0));
            r = fresh & (mask80 >> 1);  // room to grow within the millisecond
        }
        last_ms = ms;
        last = r;
    }
    std::string id(prefix);
    id.reserve(prefix.size() + 26);
    for (int shift = 45; shift >= 0; shift -= 5)
        id.push_back(alphabet[(ms >> shift) & 31]);
    for (int shift = 75; shift >= 0; shift -= 5)
        id.push_back(alphabet[static_cast<unsigned>(r >> shift) & 31]);
    return id;
}

std::string random_hex(std::size_t n) {
    std::string raw(n, '\0');
    if (RAND_bytes(reinterpret_cast<unsigned char*>(raw.data()), static_cast<int>(n)) != 1)
        throw std::runtime_error("RAND_bytes failed");
    return hex_encode(raw);
}

std::string sha256_raw(std::string_view data) {
    unsigned char md[SHA256_DIGEST_LENGTH];
    SHA256(reinterpret_cast<const unsigned char*>(data.data()), data.size(), md);
    return std::string(reinterpret_cast<char*>(md), sizeof md);
}

std::string sha256_hex(std::string_view data) {
    return hex_encode(sha256_raw(data));
}

bool constant_time_equal(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size()) {
        volatile unsigned char sink = 0;
        for (unsigned char c : a)
            sink = sink | c;
        (void)sink;
        return false;
    }
    return CRYPTO_memcmp(a.data(), b.data(), a.size()) == 0;
}

sha256_stream::sha256_stream() : ctx_(EVP_MD_CTX_new()) {
    if (!ctx_ || EVP_DigestInit_ex(static_cast<EVP_MD_CTX*>(ctx_), EVP_sha256(), nullptr) != 1)
        throw std::runtime_error("EVP_DigestInit_ex failed");
}

sha256_stream::~sha256_stream() {
    EVP_MD_CTX_free(static_cast<EVP_MD_CTX*>(ctx_));
}

void sha256_stream::update(std::string_view data) {
    EVP_DigestUpdate(static_cast<EVP_MD_CTX*>(ctx_), data.data(), data.size());
}

std::string sha256_stream::hex_digest() {
    unsigned char md[EVP_MAX_MD_SIZE];
    unsigned int len = 0;
    EVP_DigestFinal_ex(static_cast<EVP_MD_CTX*>(ctx_), md, &len);
    return hex_encode(std::string_view(reinterpret_cast<char*>(md), len));
}

std::string sha256_file_hex(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    if (!in)
        return {};
    sha256_stream sha;
    std::vector<char> buf(1 << 20);
    while (in) {
        in.read(buf.data(), static_cast<std::streamsize>(buf.size()));
        if (in.gcount() > 0)
            sha.update(std::string_view(buf.data(), static_cast<std::size_t>(in.gcount())));
    }
    if (in.bad())
        return {};
    return sha.hex_digest();
}

}  // namespace segue::util

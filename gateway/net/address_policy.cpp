#include "gateway/net/address_policy.hpp"

#include <arpa/inet.h>

#include <cstring>
#include <stdexcept>

namespace segue::net {
namespace {

struct v4_range {
    std::uint32_t base;
    int prefix;
    const char* why;
};

constexpr std::uint32_t ip4(unsigned a, unsigned b, unsigned c, unsigned d) {
    return (a << 24) | (b << 16) | (c << 8) | d;
}

constexpr v4_range v4_blocked[] = {
    {ip4(0, 0, 0, 0), 8, "unspecified/this network"},
    {ip4(10, 0, 0, 0), 8, "private"},
    {ip4(100, 64, 0, 0), 10, "carrier-grade NAT"},
    {ip4(127, 0, 0, 0), 8, "loopback"},
    {ip4(169, 254, 0, 0), 16, "link-local (cloud metadata)"},
    {ip4(172, 16, 0, 0), 12, "private"},
    {ip4(192, 0, 0, 0), 24, "IETF protocol assignments"},
    {ip4(192, 0, 2, 0), 24, "documentation"},
    {ip4(192, 88, 99, 0), 24, "6to4 relay anycast"},
    {ip4(192, 168, 0, 0), 16, "private"},
    {ip4(198, 18, 0, 0), 15, "benchmarking"},
    {ip4(198, 51, 100, 0), 24, "documentation"},
    {ip4(203, 0, 113, 0), 24, "documentation"},
    {ip4(224, 0, 0, 0), 4, "multicast"},
    {ip4(240, 0, 0, 0), 4, "reserved/broadcast"},
};

std::optional<std::string> check_v4(std::uint32_t a) {
    for (const auto& r : v4_blocked) {
        std::uint32_t mask = r.prefix == 0 ? 0 : ~std::uint32_t{0} << (32 - r.prefix);
        if ((a & mask) == r.base)
            return std::string(r.why);
    }
    return std::nullopt;
}

std::uint32_t v4_at(const unsigned char* p) {
    return (std::uint32_t{p[0]} << 24) | (std::uint32_t{p[1]} << 16) | (std::uint32_t{p[2]} << 8) |
           p[3];
}

bool prefix_match(const unsigned char* a, const unsigned char* b, int bits) {
    int full = bits / 8;
    if (std::memcmp(a, b, static_cast<std::size_t>(full)) != 0)
        return false;
    int rest = bits % 8;
    if (rest == 0)
        return true;
    unsigned char mask = static_cast<unsigned char>(0xff << (8 - rest));
    return (a[full] & mask) == (b[full] & mask);
}

std::optional<std::string> check_v6(const unsigned char* b) {
    static const unsigned char zero[16] = {};
    if (std::memcmp(b, zero, 15) == 0 && (b[15] == 0 || b[15] == 1))
        return std::string(b[15] ? "loopback" : "unspecified");
    // IPv4-mapped ::ffff:a.b.c.d and IPv4-compatible ::a.b.c.d: judge the IPv4 inside.
    // The IPv4-compatible form (deprecated by RFC 4291) is refused even around a public
    // address: nothing legitimate uses it, and how a host routes it depends on its tunnels.
    static const unsigned char mapped[12] = {0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff};
    if (std::memcmp(b, mapped, 12) == 0) {
        if (auto why = check_v4(v4_at(b + 12)))
            return "IPv4-mapped " + *why;
        return std::nullopt;
    }
    if (std::memcmp(b, zero, 12) == 0) {
        if (auto why = check_v4(v4_at(b + 12)))
            return "IPv4-compatible " + *why;
        return std::string("IPv4-compatible (deprecated)");
    }
    // NAT64 64:ff9b::/96 (and the local-use 64:ff9b:1::/48): the embedded IPv4 decides.
    static const unsigned char nat64[12] = {0, 0x64, 0xff, 0x9b, 0, 0, 0, 0, 0, 0, 0, 0};
    if (std::memcmp(b, nat64, 12) == 0) {
        if (auto why = check_v4(v4_at(b + 12)))
            return "NAT64 " + *why;
        return std::nullopt;
    }
    static const unsigned char nat64_local[6] = {0, 0x64, 0xff, 0x9b, 0, 1};
    if (std::memcmp(b, nat64_local, 6) == 0)
        return std::string("NAT64 local use");
    // 6to4 2002::/16 embeds an IPv4 address in bits 16..47.
    if (b[0] == 0x20 && b[1] == 0x02) {
        if (auto why = check_v4(v4_at(b + 2)))
            return "6to4 " + *why;
    }
    if ((b[0] & 0xfe) == 0xfc)
        return std::string("unique local (ULA)");
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0x80)
        return std::string("link-local");
    if (b[0] == 0xfe && (b[1] & 0xc0) == 0xc0)
        return std::string("site-local");
    if (b[0] == 0xff)
        return std::string("multicast");
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x0d && b[3] == 0xb8)
        return std::string("documentation");
    // Teredo (2001::/32) embeds an obfuscated client IPv4 address and reaches it through
    // relays: refused whole, like the rest of 2001::/23 (benchmarking 2001:2::/48, ORCHID,
    // AMT, AS112), which no HTTP server a client names lives in.
    if (b[0] == 0x20 && b[1] == 0x01 && b[2] == 0x00 && b[3] == 0x00)
        return std::string("Teredo");
    if (b[0] == 0x20 && b[1] == 0x01 && (b[2] & 0xfe) == 0x00)
        return std::string("IETF protocol assignments");
    if (b[0] == 0x3f && b[1] == 0xff && (b[2] & 0xf0) == 0x00)
        return std::string("documentation");  // 3fff::/20 (RFC 9637)
    if (b[0] == 0x01 && b[1] == 0x00 && std::memcmp(b + 2, zero, 6) == 0)
        return std::string("discard-only");
    // Everything else outside 2000::/3 (the only global unicast block allocated) is not a
    // public address either: ::ffff:0:0/96 translated, 5f00::/16 SRv6, unassigned space.
    if ((b[0] & 0xe0) != 0x20)
        return std::string("not global unicast (outside 2000::/3)");
    return std::nullopt;
}

}  // namespace

std::optional<std::string> non_public_reason(std::string_view ip) {
    std::string s(ip);
    // inet_pton accepts only the canonical dotted-quad form: 0x7f.1, 2130706433 and 0177.0.0.1
    // are refused here, never reinterpreted.
    unsigned char b[16];
    if (::inet_pton(AF_INET, s.c_str(), b) == 1)
        return check_v4(v4_at(b));
    auto pct = s.find('%');  // a zone index (fe80::1%eth0) only appears on link-local addresses
    if (pct != std::string::npos)
        return std::string("scoped (link-local) address");
    if (::inet_pton(AF_INET6, s.c_str(), b) == 1)
        return check_v6(b);
    return std::string("not a numeric IP address");
}

cidr_list::cidr_list(const std::vector<std::string>& cidrs) {
    for (const auto& c : cidrs) {
        auto slash = c.find('/');
        std::string addr = c.substr(0, slash);
        entry e{};
        if (::inet_pton(AF_INET, addr.c_str(), e.bytes) == 1)
            e.v6 = false;
        else if (::inet_pton(AF_INET6, addr.c_str(), e.bytes) == 1)
            e.v6 = true;
        else
            throw std::invalid_argument("not a CIDR: " + c);
        const int max = e.v6 ? 128 : 32;
        e.prefix = max;
        if (slash != std::string::npos) {
            try {
                e.prefix = std::stoi(c.substr(slash + 1));
            } catch (const std::exception&) {
                throw std::invalid_argument("not a CIDR: " + c);
            }
            if (e.prefix < 0 || e.prefix > max)
                throw std::invalid_argument("not a CIDR: " + c);
        }
        entries_.push_back(e);
    }
}

bool cidr_list::contains(std::string_view ip) const {
    std::string s(ip);
    unsigned char b[16];
    bool v6;
    if (::inet_pton(AF_INET, s.c_str(), b) == 1)
        v6 = false;
    else if (::inet_pton(AF_INET6, s.c_str(), b) == 1)
        v6 = true;
    else
        return false;
    for (const auto& e : entries_)
        if (e.v6 == v6 && prefix_match(b, e.bytes, e.prefix))
            return true;
    return false;
}

}  // namespace segue::net

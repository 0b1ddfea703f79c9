#pragma once
// Which addresses a user-given URL may reach. The gateway fetches URLs its clients name
// (audio_url); without this, a client could make it reach the metadata service, loopback or the
// private network (SSRF). The check runs on the resolved addresses, and the client connects to
// exactly the addresses it checked (no second lookup: DNS rebinding gets nowhere).

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace segue::net {

// Why `ip` (a numeric IPv4 or IPv6 address) is not a public unicast address, or nullopt if it
// is. Only canonical numeric text is understood (inet_pton): "2130706433", "0x7f.1" or
// "0177.0.0.1" are refused as "not a numeric IP address", never reinterpreted.
//
// IPv4: 0.0.0.0/8, 10/8, 100.64/10 (CGNAT), 127/8, 169.254/16 (link-local, cloud metadata),
// 172.16/12, 192.0.0/24, 192.0.2/24, 192.88.99/24 (6to4 relay), 192.168/16, 198.18/15,
// 198.51.100/24, 203.0.113/24, 224/4 (multicast), 240/4 (reserved, 255.255.255.255).
// IPv6: ::, ::1, ::ffff:0:0/96 (mapped) and ::/96 (compatible) around a refused IPv4 (the
// compatible form always), 64:ff9b::/96 (NAT64) around a refused IPv4, 64:ff9b:1::/48,
// 2002::/16 (6to4) around a refused IPv4, 2001::/23 (Teredo and other IETF assignments),
// 2001:db8::/32 and 3fff::/20 (documentation), fc00::/7 (ULA), fe80::/10 (link-local, and any
// address with a zone index), fec0::/10, ff00::/8 (multicast), 100::/64, and anything else
// outside 2000::/3.
std::optional<std::string> non_public_reason(std::string_view ip);

// A CIDR allow-list ("127.0.0.1/32", "10.0.0.0/8", "::1/128") that overrides the policy.
class cidr_list {
  public:
    cidr_list() = default;  // empty: allows nothing beyond the policy
    // Throws std::invalid_argument for a malformed entry.
    explicit cidr_list(const std::vector<std::string>& cidrs);
    bool empty() const noexcept { return entries_.empty(); }
    bool contains(std::string_view ip) const;

  private:
    struct entry {
        bool v6;
        unsigned char bytes[16];
        int prefix;
    };
    std::vector<entry> entries_;
};

}  // namespace segue::net

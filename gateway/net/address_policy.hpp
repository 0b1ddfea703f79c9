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
// is. Covers loopback, private, link-local (169.254.169.254), CGNAT, multicast, unspecified,
// broadcast, documentation, benchmarking, reserved, ULA, and IPv4-mapped / NAT64 / 6to4
// spellings of those.
std::optional<std::string> non_public_reason(std::string_view ip);

// A CIDR allow-list ("127.0.0.1/32", "10.0.0.0/8", "::1/128") that overrides the policy.
class cidr_list {
  public:
    // Throws std::invalid_argument for a malformed entry.
    explicit cidr_list(const std::vector<std::string>& cidrs);
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

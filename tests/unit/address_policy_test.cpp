// The address policy for user-given URLs, table-driven.

#include <gtest/gtest.h>

#include "gateway/net/address_policy.hpp"

using segue::net::cidr_list;
using segue::net::non_public_reason;

TEST(AddressPolicy, RefusesEveryNonPublicAddress) {
    const char* refused[] = {
        "127.0.0.1", "127.255.255.254", "0.0.0.0", "0.1.2.3", "10.0.0.1", "10.255.255.255",
        "172.16.0.1", "172.31.255.255", "192.168.1.1", "169.254.169.254", "169.254.0.1",
        "100.64.0.1", "100.127.255.255", "192.0.0.8", "192.0.2.1", "198.51.100.7", "203.0.113.9",
        "198.18.0.1", "224.0.0.1", "239.255.255.250", "240.0.0.1", "255.255.255.255", "::", "::1",
        "::ffff:127.0.0.1", "::ffff:10.1.2.3", "::ffff:169.254.169.254", "::127.0.0.1",
        "64:ff9b::7f00:1", "64:ff9b::a9fe:a9fe", "64:ff9b:1::1",
        "2002:7f00:1::", "2002:a9fe:a9fe::1", "fc00::1", "fd12:3456::1", "fe80::1", "fe80::1%eth0",
        "fec0::1", "ff02::1", "2001:db8::1", "2001:0:4136:e378::1", "100::1",
        // IPv4-compatible (deprecated) even around a public address; the rest of 2001::/23;
        // 3fff::/20 documentation; everything outside 2000::/3.
        "::8.8.8.8", "2001:2::1", "2001:10::1", "2001:20::1", "2001:1ff::1", "3fff::1",
        "3fff:fff::1", "5f00::1", "::ffff:0:7f00:1", "::ffff:0:808:808", "4000::1", "1::1",
        // Other spellings of 127.0.0.1 are not numeric addresses at all: refused, not decoded.
        "2130706433", "0x7f000001", "0177.0.0.1", "127.1", "0x7f.0.0.1", "127.0.0.1.", "",
        "localhost"};
    for (const char* ip : refused)
        EXPECT_TRUE(non_public_reason(ip)) << ip;
}

TEST(AddressPolicy, AllowsPublicAddresses) {
    const char* allowed[] = {"8.8.8.8",
                             "1.1.1.1",
                             "93.184.216.34",
                             "172.15.255.255",
                             "172.32.0.1",
                             "100.63.255.255",
                             "100.128.0.1",
                             "192.169.0.1",
                             "2606:4700:4700::1111",
                             "2a00:1450:4001:80b::200e",
                             "::ffff:8.8.8.8",
                             "64:ff9b::808:808",
                             "2002:808:808::1",
                             "2001:200::1",  // just past 2001::/23
                             "2001:4860:4860::8888",
                             "3fff:1000::1",  // just past 3fff::/20
                             "2c0f:fb50::1"};
    for (const char* ip : allowed)
        EXPECT_FALSE(non_public_reason(ip)) << ip << ": " << non_public_reason(ip).value_or("");
}

TEST(AddressPolicy, ReasonsNameTheRange) {
    EXPECT_EQ(non_public_reason("169.254.169.254").value_or(""), "link-local (cloud metadata)");
    EXPECT_EQ(non_public_reason("::ffff:10.0.0.1").value_or(""), "IPv4-mapped private");
    EXPECT_EQ(non_public_reason("::8.8.8.8").value_or(""), "IPv4-compatible (deprecated)");
    EXPECT_EQ(non_public_reason("2001:0:4136:e378::1").value_or(""), "Teredo");
    EXPECT_EQ(non_public_reason("2001:2::1").value_or(""), "IETF protocol assignments");
    EXPECT_EQ(non_public_reason("5f00::1").value_or(""), "not global unicast (outside 2000::/3)");
    EXPECT_EQ(non_public_reason("64:ff9b::a9fe:a9fe").value_or(""),
              "NAT64 link-local (cloud metadata)");
}

TEST(AddressPolicy, CidrAllowList) {
    cidr_list l({"127.0.0.1/32", "10.1.0.0/16", "::1/128", "fd00::/8"});
    EXPECT_TRUE(l.contains("127.0.0.1"));
    EXPECT_FALSE(l.contains("127.0.0.2"));
    EXPECT_TRUE(l.contains("10.1.200.3"));
    EXPECT_FALSE(l.contains("10.2.0.1"));
    EXPECT_TRUE(l.contains("::1"));
    EXPECT_TRUE(l.contains("fd12::1"));
    EXPECT_FALSE(l.contains("::ffff:127.0.0.1")) << "families are not mixed";
    EXPECT_THROW(cidr_list({"10.0.0.0/33"}), std::invalid_argument);
    EXPECT_THROW(cidr_list({"nope"}), std::invalid_argument);
    EXPECT_TRUE(cidr_list().empty());
    EXPECT_FALSE(cidr_list().contains("127.0.0.1"));
    EXPECT_FALSE(l.empty());
}

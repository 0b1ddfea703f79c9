#include <gtest/gtest.h>

#include "gateway/core/signed_url.hpp"

using segue::core::signed_file_path;
using segue::core::verify_file_signature;

TEST(SignedFileUrl, SignsIdAndExpiryAndRefusesTamperingOrExpiry) {
    const std::string path = signed_file_path("k3y", "file_abc", 1700000100);
    const std::string prefix = "/v1/files/file_abc?expires=1700000100&sig=";
    ASSERT_EQ(path.rfind(prefix, 0), 0u) << path;
    const std::string sig = path.substr(prefix.size());
    EXPECT_EQ(sig.size(), 64u);
    EXPECT_TRUE(verify_file_signature("k3y", "file_abc", "1700000100", sig, 1700000000));
    EXPECT_TRUE(verify_file_signature("k3y", "file_abc", "1700000100", sig, 1700000100));
    EXPECT_FALSE(verify_file_signature("k3y", "file_abc", "1700000100", sig, 1700000101));
    EXPECT_FALSE(verify_file_signature("k3y", "file_abd", "1700000100", sig, 1700000000));
    EXPECT_FALSE(verify_file_signature("k3y", "file_abc", "1700000101", sig, 1700000000));
    EXPECT_FALSE(verify_file_signature("other", "file_abc", "1700000100", sig, 1700000000));
    EXPECT_FALSE(verify_file_signature("k3y", "file_abc", "1700000100", "", 1700000000));
    EXPECT_FALSE(verify_file_signature("k3y", "file_abc", "+1700000100", sig, 1700000000));
    EXPECT_FALSE(verify_file_signature("", "file_abc", "1700000100", sig, 1700000000));
}

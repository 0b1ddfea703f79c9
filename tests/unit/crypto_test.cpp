#include <gtest/gtest.h>

#include <array>
#include <cstdint>
#include <set>
#include <string>
#include <string_view>
#include <thread>
#include <vector>

#include "gateway/util/crypto.hpp"

using namespace segue::util;

TEST(Crypto, HmacSha256MatchesRfc4231) {
    // RFC 4231 test case 2.
    EXPECT_EQ(hex_encode(hmac_sha256("Jefe", "what do ya want for nothing?")),
              "5bdcc146bf60754e6a042426089575c75a003f089d2739839dec58b964ec3843");
    // Test case 1: key = 20 x 0x0b.
    EXPECT_EQ(hex_encode(hmac_sha256(std::string(20, '\x0b'), "Hi There")),
              "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7");
}

TEST(Crypto, AeadSealsAndOpensOnlyWhatItSealedUnderThatKeyAndAad) {
    const std::string key(32, 'k'), other(32, 'o');
    const std::string plain = "https://bucket.example/a.mp3?X-Amz-Signature=secret";
    const auto sealed = segue::util::aead_seal(key, "alpha", plain);
    EXPECT_EQ(sealed.size(), 12 + plain.size() + 16);
    EXPECT_EQ(sealed.find("secret"), std::string::npos);
    EXPECT_EQ(segue::util::aead_open(key, "alpha", sealed), plain);
    EXPECT_NE(segue::util::aead_seal(key, "alpha", plain), sealed);  // a fresh nonce each time
    EXPECT_FALSE(segue::util::aead_open(key, "beta", sealed));
    EXPECT_FALSE(segue::util::aead_open(other, "alpha", sealed));
    for (std::size_t i : {std::size_t{0}, std::size_t{12}, sealed.size() - 1}) {
        auto bad = sealed;  // the nonce, the ciphertext, the tag
        bad[i] = static_cast<char>(bad[i] ^ 1);
        EXPECT_FALSE(segue::util::aead_open(key, "alpha", bad)) << i;
    }
    EXPECT_FALSE(segue::util::aead_open(key, "alpha", sealed.substr(0, sealed.size() - 1)));
    EXPECT_FALSE(segue::util::aead_open(key, "alpha", sealed.substr(0, 27)));
    EXPECT_EQ(segue::util::aead_open(key, "", segue::util::aead_seal(key, "", "")), "");
    EXPECT_THROW(segue::util::aead_seal("short", "", "x"), std::invalid_argument);
}

TEST(Crypto, Base64RoundTripsRfc4648Vectors) {
    const std::pair<const char*, const char*> vectors[] = {
        {"", ""},
        {"f", "Zg=="},
        {"fo", "Zm8="},
        {"foo", "Zm9v"},
        {"foob", "Zm9vYg=="},
        {"fooba", "Zm9vYmE="},
        {"foobar", "Zm9vYmFy"},
    };
    for (auto [raw, text] : vectors) {
        EXPECT_EQ(base64_encode(raw), text);
        std::string back;
        ASSERT_TRUE(base64_decode(text, back)) << text;
        EXPECT_EQ(back, raw);
    }
    std::string bytes;
    for (int i = 0; i < 256; ++i)
        bytes.push_back(static_cast<char>(i));
    std::string back;
    ASSERT_TRUE(base64_decode(base64_encode(bytes), back));
    EXPECT_EQ(back, bytes);
}

TEST(Crypto, Base64RejectsForeignCharactersAndBadLengths) {
    std::string out;
    EXPECT_FALSE(base64_decode("Zm9v!", out));
    EXPECT_FALSE(base64_decode("Zm9-", out));  // URL-safe alphabet is not standard base64
    EXPECT_FALSE(base64_decode("Z", out));
    EXPECT_TRUE(base64_decode("Zm8", out));  // padding is optional
    EXPECT_EQ(out, "fo");
}

TEST(Crypto, SortableIdsEncodeTheTimeFirstAndSortByIt) {
    // 1 ms after the epoch: nine zeros and a 1, then 16 random characters.
    const auto first = sortable_id("ext_", 1);
    ASSERT_EQ(first.size(), 4u + 26u);
    EXPECT_EQ(first.substr(0, 14), "ext_0000000001");
    // ULID's time encoding: 2^48 - 1 (its largest time) is "7zzzzzzzzz".
    EXPECT_EQ(sortable_id("", (std::uint64_t{1} << 48) - 1).substr(0, 10), "7zzzzzzzzz");
    // A later millisecond always sorts after an earlier one, whatever the random part.
    std::string prev = sortable_id("evt_", 1'763'800'000'000);
    for (std::uint64_t ms = 1'763'800'000'001; ms < 1'763'800'002'000; ms += 7) {
        const auto next = sortable_id("evt_", ms);
        EXPECT_LT(prev, next) << ms;
        prev = next;
    }
    // Only Crockford base32 characters after the prefix.
    for (char c : sortable_id("x_").substr(2))
        EXPECT_NE(std::string_view("0123456789abcdefghjkmnpqrstvwxyz").find(c),
                  std::string_view::npos);
}

// A task's deliveries are made in one transaction, in one millisecond: listed by id they must
// come in the order they were made, from any thread.
TEST(Crypto, SortableIdsOfThisProcessSortInTheOrderTheyWereMade) {
    std::string prev = sortable_id("dlv_");
    for (int i = 0; i < 100'000; ++i) {
        auto next = sortable_id("dlv_");
        ASSERT_LT(prev, next) << i;
        prev = std::move(next);
    }
    std::vector<std::thread> threads;
    std::array<bool, 4> ordered{};
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&ordered, t] {
            std::string p = sortable_id("x_");
            bool ok = true;
            for (int i = 0; i < 20'000; ++i) {
                auto n = sortable_id("x_");
                ok = ok && p < n;
                p = std::move(n);
            }
            ordered[static_cast<std::size_t>(t)] = ok;
        });
    for (auto& th : threads)
        th.join();
    for (bool ok : ordered)
        EXPECT_TRUE(ok);
}

TEST(Crypto, SortableIdsOfOneMillisecondDifferInTheirRandomPart) {
    std::set<std::string> seen;
    for (int i = 0; i < 10'000; ++i)
        EXPECT_TRUE(seen.insert(sortable_id("ext_", 42)).second);
}

#include <gtest/gtest.h>

#include "gateway/events/signer.hpp"
#include "gateway/util/crypto.hpp"

using namespace segue::events;

namespace {

// The Standard Webhooks reference vector (spec repo, every library's tests).
constexpr const char* ref_secret = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
constexpr const char* ref_id = "msg_p5jXN8AQM9LWM0D4loKWxJek";
constexpr std::int64_t ref_ts = 1614265330;
constexpr const char* ref_body = R"({"test": 2432232314})";
constexpr const char* ref_sig = "v1,g0hM9SsE+OTPJTGt/tmIKtSyZlE3uFJELVlNIOLJ1OE=";

std::string key_of(const char* secret) {
    std::string key, error;
    EXPECT_TRUE(parse_secret(secret, key, error)) << error;
    return key;
}

header_list headers_for(std::string id, std::int64_t ts, std::string sig) {
    return {{"webhook-id", std::move(id)},
            {"webhook-timestamp", std::to_string(ts)},
            {"webhook-signature", std::move(sig)}};
}

std::string key_b() {
    return std::string(32, '\x5a');
}

}  // namespace

TEST(Signer, ReferenceVector) {
    const std::string key = key_of(ref_secret);
    EXPECT_EQ(key.size(), 24u);
    EXPECT_EQ(sign(key, ref_id, ref_ts, ref_body), ref_sig);
    EXPECT_EQ(signature_header({key}, ref_id, ref_ts, ref_body), ref_sig);

    std::string error;
    EXPECT_TRUE(verify({key}, headers_for(ref_id, ref_ts, ref_sig), ref_body, ref_ts,
                       webhook_default_tolerance_s, error))
        << error;
}

TEST(Signer, SecretPrefixIsOptional) {
    std::string with, without, error;
    ASSERT_TRUE(parse_secret(ref_secret, with, error)) << error;
    ASSERT_TRUE(parse_secret("MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", without, error)) << error;
    EXPECT_EQ(with, without);
    EXPECT_EQ(format_secret(with), ref_secret);
}

TEST(Signer, GeneratedSecretsParseAndDiffer) {
    const std::string a = generate_secret(), b = generate_secret();
    EXPECT_NE(a, b);
    EXPECT_EQ(a.rfind("whsec_", 0), 0u);
    std::string key, error;
    ASSERT_TRUE(parse_secret(a, key, error)) << error;
    EXPECT_EQ(key.size(), 32u);
}

TEST(Signer, BadSecretsAreRefused) {
    std::string key = "untouched", error;
    EXPECT_FALSE(parse_secret("", key, error));
    EXPECT_NE(error.find("empty"), std::string::npos) << error;
    EXPECT_FALSE(parse_secret("whsec_", key, error));
    EXPECT_NE(error.find("empty"), std::string::npos) << error;
    EXPECT_FALSE(parse_secret("whsec_====", key, error));
    EXPECT_FALSE(parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaS!", key, error));
    EXPECT_NE(error.find("base64"), std::string::npos) << error;
    // URL-safe alphabet is not the spec's standard base64.
    EXPECT_FALSE(parse_secret("whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLa-_", key, error));
    // Whitespace is not trimmed.
    EXPECT_FALSE(parse_secret(" whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw", key, error));
    // Too short (16 bytes) and too long (65 bytes) for the spec's 24..64.
    EXPECT_FALSE(parse_secret(format_secret(std::string(16, 'k')), key, error));
    EXPECT_NE(error.find("16 bytes"), std::string::npos) << error;
    EXPECT_FALSE(parse_secret(format_secret(std::string(65, 'k')), key, error));
    EXPECT_EQ(key, "untouched");
    // The bounds themselves are fine.
    EXPECT_TRUE(parse_secret(format_secret(std::string(24, 'k')), key, error)) << error;
    EXPECT_TRUE(parse_secret(format_secret(std::string(64, 'k')), key, error)) << error;
    // The error never quotes the secret.
    EXPECT_FALSE(parse_secret("whsec_c2VjcmV0", key, error));
    EXPECT_EQ(error.find("c2VjcmV0"), std::string::npos) << error;
}

TEST(Signer, TwoKeysGiveTwoSignaturesNewestFirstAndEitherVerifies) {
    const std::string a = key_of(ref_secret), b = key_b();
    const std::string header = signature_header({b, a}, ref_id, ref_ts, ref_body);
    EXPECT_EQ(header, sign(b, ref_id, ref_ts, ref_body) + " " + ref_sig);

    std::string error;
    for (const auto& keys : std::vector<std::vector<std::string>>{{a}, {b}, {a, b}}) {
        EXPECT_TRUE(verify(keys, headers_for(ref_id, ref_ts, header), ref_body, ref_ts, 300, error))
            << error;
    }
    // A receiver with only the new key accepts the single new signature, not the old one.
    EXPECT_TRUE(verify({b}, headers_for(ref_id, ref_ts, sign(b, ref_id, ref_ts, ref_body)),
                       ref_body, ref_ts, 300, error));
    EXPECT_FALSE(verify({b}, headers_for(ref_id, ref_ts, ref_sig), ref_body, ref_ts, 300, error));
    EXPECT_EQ(error, "no matching webhook signature");
    EXPECT_EQ(signature_header({}, ref_id, ref_ts, ref_body), "");
}

TEST(Signer, SignerClassFromSecrets) {
    std::string error;
    auto s = signer::from_secrets({format_secret(key_b()), ref_secret}, error);
    ASSERT_TRUE(s) << error;
    ASSERT_EQ(s->keys().size(), 2u);
    EXPECT_EQ(s->header(ref_id, ref_ts, ref_body),
              sign(key_b(), ref_id, ref_ts, ref_body) + " " + ref_sig);
    const header_list h = s->headers(ref_id, ref_ts, ref_body);
    ASSERT_EQ(h.size(), 3u);
    EXPECT_EQ(h[0], (std::pair<std::string, std::string>{"webhook-id", ref_id}));
    EXPECT_EQ(h[1], (std::pair<std::string, std::string>{"webhook-timestamp", "1614265330"}));
    EXPECT_EQ(h[2].first, "webhook-signature");
    EXPECT_TRUE(s->verify(h, ref_body, ref_ts + 10, 300, error)) << error;

    EXPECT_FALSE(signer::from_secrets({}, error));
    EXPECT_FALSE(signer::from_secrets({ref_secret, "whsec_!!"}, error));
    EXPECT_NE(error.find("#2"), std::string::npos) << error;
}

TEST(Signer, TamperedMessagesFail) {
    const std::vector<std::string> keys{key_of(ref_secret)};
    std::string error;
    EXPECT_FALSE(verify(keys, headers_for(ref_id, ref_ts, ref_sig), R"({"test": 2432232315})",
                        ref_ts, 300, error));
    EXPECT_EQ(error, "no matching webhook signature");
    EXPECT_FALSE(verify(keys, headers_for(ref_id, ref_ts, ref_sig), R"({"test":2432232314})",
                        ref_ts, 300, error));
    EXPECT_FALSE(verify(keys, headers_for("msg_p5jXN8AQM9LWM0D4loKWxJeK", ref_ts, ref_sig),
                        ref_body, ref_ts, 300, error));
    EXPECT_FALSE(
        verify(keys, headers_for(ref_id, ref_ts + 1, ref_sig), ref_body, ref_ts, 300, error));
    // A flipped signature byte, a truncated one, the wrong key.
    std::string flipped = ref_sig;
    flipped[5] = flipped[5] == 'A' ? 'B' : 'A';
    EXPECT_FALSE(verify(keys, headers_for(ref_id, ref_ts, flipped), ref_body, ref_ts, 300, error));
    EXPECT_FALSE(verify(keys, headers_for(ref_id, ref_ts, std::string(ref_sig).substr(0, 20)),
                        ref_body, ref_ts, 300, error));
    EXPECT_FALSE(verify(keys, headers_for(ref_id, ref_ts, "v1,"), ref_body, ref_ts, 300, error));
    EXPECT_FALSE(
        verify({key_b()}, headers_for(ref_id, ref_ts, ref_sig), ref_body, ref_ts, 300, error));
    // Ids with '.' are refused (the signed content would be ambiguous).
    EXPECT_FALSE(verify(keys, headers_for("msg.1", ref_ts, sign(keys[0], "msg.1", ref_ts, "x")),
                        "x", ref_ts, 300, error));
    EXPECT_EQ(error, "webhook-id contains '.'");
    // No keys at all.
    EXPECT_FALSE(verify({}, headers_for(ref_id, ref_ts, ref_sig), ref_body, ref_ts, 300, error));
}

TEST(Signer, TimestampToleranceBothWays) {
    const std::vector<std::string> keys{key_of(ref_secret)};
    const auto h = headers_for(ref_id, ref_ts, ref_sig);
    std::string error;
    EXPECT_TRUE(verify(keys, h, ref_body, ref_ts + 300, 300, error)) << error;
    EXPECT_TRUE(verify(keys, h, ref_body, ref_ts - 300, 300, error)) << error;
    EXPECT_FALSE(verify(keys, h, ref_body, ref_ts + 301, 300, error));
    EXPECT_EQ(error, "webhook-timestamp too old");
    EXPECT_FALSE(verify(keys, h, ref_body, ref_ts - 301, 300, error));
    EXPECT_EQ(error, "webhook-timestamp too new");
    EXPECT_FALSE(verify(keys, h, ref_body, 0, 300, error));
    EXPECT_FALSE(verify(keys, h, ref_body, INT64_MAX, 300, error));
    EXPECT_FALSE(verify(keys, h, ref_body, INT64_MIN, 300, error));
    EXPECT_FALSE(verify(keys, h, ref_body, ref_ts + 1, 0, error));
    EXPECT_TRUE(verify(keys, h, ref_body, ref_ts, 0, error)) << error;

    // Non-integer timestamps, signed or not.
    for (const char* bad : {"1614265330.0", "+1614265330", "-1", " 1614265330", "1614265330abc",
                            "0x60377c72", "9999999999999999999999"}) {
        header_list hb = h;
        hb[1].second = bad;
        EXPECT_FALSE(verify(keys, hb, ref_body, ref_ts, 300, error)) << bad;
        EXPECT_EQ(error, "webhook-timestamp is not an integer unix time") << bad;
    }
}

TEST(Signer, MissingHeadersFail) {
    const std::vector<std::string> keys{key_of(ref_secret)};
    const auto full = headers_for(ref_id, ref_ts, ref_sig);
    const char* names[] = {"webhook-id", "webhook-timestamp", "webhook-signature"};
    for (std::size_t drop = 0; drop < 3; ++drop) {
        header_list h;
        for (std::size_t i = 0; i < 3; ++i)
            if (i != drop)
                h.push_back(full[i]);
        std::string error;
        EXPECT_FALSE(verify(keys, h, ref_body, ref_ts, 300, error));
        EXPECT_EQ(error, std::string("missing ") + names[drop] + " header");
        // Present but empty counts as missing.
        header_list e = full;
        e[drop].second.clear();
        EXPECT_FALSE(verify(keys, e, ref_body, ref_ts, 300, error));
        EXPECT_EQ(error, std::string("missing ") + names[drop] + " header");
    }
    std::string error;
    EXPECT_FALSE(verify(keys, {}, ref_body, ref_ts, 300, error));
}

TEST(Signer, HeaderNamesAreCaseInsensitiveAndOthersIgnored) {
    const std::vector<std::string> keys{key_of(ref_secret)};
    header_list h = {{"content-type", "application/json"},
                     {"Webhook-Id", ref_id},
                     {"WEBHOOK-TIMESTAMP", std::to_string(ref_ts)},
                     {"webhook-signature", ref_sig}};
    std::string error;
    EXPECT_TRUE(verify(keys, h, ref_body, ref_ts, 300, error)) << error;
}

TEST(Signer, OtherVersionsAreIgnored) {
    const std::vector<std::string> keys{key_of(ref_secret)};
    const std::string b64 = std::string(ref_sig).substr(3);
    std::string error;
    // The right bytes under another version are not accepted...
    EXPECT_FALSE(
        verify(keys, headers_for(ref_id, ref_ts, "v2," + b64), ref_body, ref_ts, 300, error));
    EXPECT_EQ(error, "no v1 webhook signature");
    EXPECT_FALSE(
        verify(keys, headers_for(ref_id, ref_ts, "v1a," + b64), ref_body, ref_ts, 300, error));
    EXPECT_FALSE(verify(keys, headers_for(ref_id, ref_ts, b64), ref_body, ref_ts, 300, error));
    // ...and do not stop a v1 signature later in the list from matching.
    const std::string mixed =
        "v2,garbage v1a,hnO3f9T8Ytu9HwrXslvumlUpqtNVqkhqw/enGzPCXe5BdqzCInX "
        "v1,AAAA  " +
        std::string(ref_sig) + " ";
    EXPECT_TRUE(verify(keys, headers_for(ref_id, ref_ts, mixed), ref_body, ref_ts, 300, error))
        << error;
}

TEST(Signer, EmptyAndBinaryBodies) {
    const std::string key = key_b();
    std::string body("a\0b\xff", 4);
    const std::string sig = sign(key, "msg_1", 1700000000, body);
    std::string error;
    EXPECT_TRUE(verify({key}, headers_for("msg_1", 1700000000, sig), body, 1700000000, 300, error));
    EXPECT_FALSE(verify({key}, headers_for("msg_1", 1700000000, sig), std::string("a\0b", 3),
                        1700000000, 300, error));
    // The signed content is exactly id.ts.body: check against a direct HMAC.
    EXPECT_EQ(
        sign(key, "msg_1", 1700000000, ""),
        "v1," + segue::util::base64_encode(segue::util::hmac_sha256(key, "msg_1.1700000000.")));
}

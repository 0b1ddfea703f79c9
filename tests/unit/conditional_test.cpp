// Validators and names for stored files (gateway/http/conditional.hpp) and signed-link expiry.

#include <gtest/gtest.h>

#include "gateway/api/files.hpp"
#include "gateway/http/conditional.hpp"

using namespace segue::http;

TEST(Conditional, IfNoneMatchComparesWeaklyAndListsAndStar) {
    const std::string tag = "\"sha256-ab\"";
    EXPECT_TRUE(none_match("\"sha256-ab\"", tag));
    EXPECT_TRUE(none_match("W/\"sha256-ab\"", tag));
    EXPECT_TRUE(none_match("\"x\", \"sha256-ab\"", tag));
    EXPECT_TRUE(none_match(" * ", tag));
    EXPECT_FALSE(none_match("\"sha256-a\"", tag));
    EXPECT_FALSE(none_match("sha256-ab", tag));  // unquoted is not the tag
    EXPECT_FALSE(none_match("", tag));
    EXPECT_FALSE(none_match(",,", tag));
}

TEST(Conditional, IfRangeNeedsTheSameStrongTag) {
    const std::string tag = "\"f-1\"";
    EXPECT_TRUE(if_range_matches(std::nullopt, tag));
    EXPECT_TRUE(if_range_matches(" \"f-1\"", tag));
    EXPECT_FALSE(if_range_matches("W/\"f-1\"", tag));
    EXPECT_FALSE(if_range_matches("\"f-2\"", tag));
    EXPECT_FALSE(if_range_matches("Thu, 03 Dec 2026 21:00:00 GMT", tag));
}

TEST(Conditional, HttpDate) {
    EXPECT_EQ(http_date(0), "Thu, 01 Jan 1970 00:00:00 GMT");
    EXPECT_EQ(http_date(1796331600000), "Thu, 03 Dec 2026 21:00:00 GMT");
}

TEST(Conditional, ContentDispositionKeepsNamesSafeAndSaysUtf8) {
    EXPECT_EQ(content_disposition(false, "ext_1-1.mp3"), "inline; filename=\"ext_1-1.mp3\"");
    EXPECT_EQ(content_disposition(true, "a b.wav"), "attachment; filename=\"a b.wav\"");
    // Non-ASCII: an ASCII fallback (one '_' per character) and the exact name in filename*.
    EXPECT_EQ(content_disposition(false, "Caf\xc3\xa9 \xe6\x97\xa5-2.mp3"),
              "inline; filename=\"Caf_ _-2.mp3\"; "
              "filename*=UTF-8''Caf%C3%A9%20%E6%97%A5-2.mp3");
    // Quotes, backslashes, separators and control characters never get through.
    const auto hostile = content_disposition(false, "..\\/\"x\r\n.wav");
    EXPECT_EQ(hostile.find('\r'), std::string::npos);
    EXPECT_EQ(hostile.find('\n'), std::string::npos);
    EXPECT_EQ(hostile.find('/'), std::string::npos);
    EXPECT_EQ(hostile.find('\\'), std::string::npos);
    EXPECT_EQ(hostile.substr(0, hostile.find(';', 8)), "inline; filename=\"..___x__.wav\"");
    EXPECT_EQ(content_disposition(false, ""), "inline; filename=\"file\"");
}

TEST(SignedLinks, ExpiryIsRoundedUpInStepsAndNeverShort) {
    using std::chrono::seconds;
    const std::int64_t now = 1796331700;  // 100 s past a quarter hour
    // One hour: steps of 15 minutes.
    const auto a = segue::api::link_expiry(now, seconds(3600));
    EXPECT_GE(a, now + 3600);
    EXPECT_LT(a, now + 3600 + 900);
    EXPECT_EQ(a % 900, 0);
    EXPECT_EQ(segue::api::link_expiry(now + 1, seconds(3600)), a);  // the same link a second later
    // A week: steps of at most an hour.
    EXPECT_EQ(segue::api::link_expiry(now, seconds(7 * 86400)) % 3600, 0);
    EXPECT_EQ(segue::api::link_expiry(now, seconds(1)), now + 1);
}

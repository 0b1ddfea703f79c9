// The Range request header: one byte range, or the whole file.

#include <gtest/gtest.h>

#include "gateway/http/range.hpp"

using segue::http::parse_range;
using segue::http::range_request;

namespace {

TEST(RangeHeader, OneByteRangeOrTheWholeFile) {
    using kind = range_request::kind;
    auto check = [](std::optional<std::string_view> h, std::uint64_t size, kind what,
                    std::uint64_t first = 0, std::uint64_t last = 0) {
        auto r = parse_range(h, size);
        EXPECT_EQ(r.what, what) << h.value_or("(none)");
        if (what == kind::partial) {
            EXPECT_EQ(r.first, first) << *h;
            EXPECT_EQ(r.last, last) << *h;
        }
    };
    check(std::nullopt, 100, kind::whole);
    check("bytes=0-9", 100, kind::partial, 0, 9);
    check("bytes=90-200", 100, kind::partial, 90, 99);  // clipped to the end
    check("bytes=50-", 100, kind::partial, 50, 99);
    check("bytes=-10", 100, kind::partial, 90, 99);
    check("bytes=-500", 100, kind::partial, 0, 99);  // more than there is: all of it
    check("Bytes = 1-2 ", 100, kind::partial, 1, 2);
    check("bytes=99-99", 100, kind::partial, 99, 99);
    check("bytes=100-", 100, kind::unsatisfiable);
    check("bytes=100-200", 100, kind::unsatisfiable);
    check("bytes=-0", 100, kind::unsatisfiable);
    check("bytes=0-0", 0, kind::unsatisfiable);
    check("bytes=-5", 0, kind::unsatisfiable);
    // Ignored: several ranges, other units, bad syntax, last before first, overflow.
    for (auto h : {"bytes=0-1,3-4", "items=0-1", "bytes=a-b", "bytes=5-1", "bytes", "bytes=-",
                   "bytes=+1-2", "bytes=0x1-2", "bytes=99999999999999999999999-"})
        check(h, 100, kind::whole);
}

}  // namespace

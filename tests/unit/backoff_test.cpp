// Backoff policy: bounds over many random draws, the monotone envelope, the cap, deterministic
// zero jitter, overflow-safe huge attempt numbers, Retry-After bounds and parsing.

#include <gtest/gtest.h>

#include <cmath>
#include <cstdint>
#include <limits>
#include <map>
#include <optional>
#include <random>

#include "gateway/core/backoff.hpp"

namespace core = segue::core;
using core::backoff_policy;

namespace {

backoff_policy policy(std::int64_t initial, std::int64_t max, double mult, double jitter) {
    backoff_policy p;
    p.initial_ms = initial;
    p.max_ms = max;
    p.multiplier = mult;
    p.jitter = jitter;
    return p;
}

TEST(Backoff, CeilingIsCappedExponential) {
    const auto p = policy(100, 5000, 2.0, 0.0);
    EXPECT_EQ(core::backoff_ceiling_ms(p, 0), 100);
    EXPECT_EQ(core::backoff_ceiling_ms(p, 1), 200);
    EXPECT_EQ(core::backoff_ceiling_ms(p, 2), 400);
    EXPECT_EQ(core::backoff_ceiling_ms(p, 5), 3200);
    EXPECT_EQ(core::backoff_ceiling_ms(p, 6), 5000);  // 6400 capped
    EXPECT_EQ(core::backoff_ceiling_ms(p, 60), 5000);
    EXPECT_EQ(core::backoff_ceiling_ms(policy(1000, 60000, 1.5, 0), 3), 3375);
}

TEST(Backoff, ZeroJitterIsDeterministic) {
    const auto p = policy(250, 10000, 3.0, 0.0);
    for (int a = 0; a < 10; ++a) {
        const auto c = core::backoff_ceiling_ms(p, a);
        EXPECT_EQ(core::backoff_delay_ms(p, a, 0.0), c) << a;
        EXPECT_EQ(core::backoff_delay_ms(p, a, 0.5), c) << a;
        EXPECT_EQ(core::backoff_delay_ms(p, a, 0.999999), c) << a;
    }
    std::mt19937_64 a(1), b(99);
    EXPECT_EQ(core::backoff_delay_ms(p, 3, a), core::backoff_delay_ms(p, 3, b));
}

TEST(Backoff, EqualJitterBoundsOverManyDraws) {
    for (double jitter : {0.1, 0.5, 1.0}) {
        const auto p = policy(200, 30000, 2.0, jitter);
        std::mt19937_64 rng(42);
        for (int a = 0; a < 20; ++a) {
            const auto c = core::backoff_ceiling_ms(p, a);
            const auto lo = static_cast<std::int64_t>(std::floor(c * (1.0 - jitter)));
            std::int64_t seen_min = std::numeric_limits<std::int64_t>::max(), seen_max = 0;
            for (int i = 0; i < 2000; ++i) {
                const auto d = core::backoff_delay_ms(p, a, rng);
                ASSERT_GE(d, lo) << "jitter " << jitter << " attempt " << a;
                ASSERT_LE(d, c) << "jitter " << jitter << " attempt " << a;
                ASSERT_LE(d, p.max_ms);
                seen_min = std::min(seen_min, d);
                seen_max = std::max(seen_max, d);
            }
            // The draws really spread over the jittered band (not stuck at one end).
            const double band = c * jitter;
            EXPECT_LT(static_cast<double>(seen_min), lo + band * 0.1 + 1) << a;
            EXPECT_GT(static_cast<double>(seen_max), c - band * 0.1 - 1) << a;
        }
    }
    // The band's ends, exactly.
    const auto p = policy(1000, 60000, 2.0, 0.5);
    EXPECT_EQ(core::backoff_delay_ms(p, 2, 0.0), 2000);
    EXPECT_EQ(core::backoff_delay_ms(p, 2, 0.5), 3000);
    EXPECT_LE(core::backoff_delay_ms(p, 2, std::nextafter(1.0, 0.0)), 4000);
}

TEST(Backoff, EnvelopeIsMonotone) {
    for (double mult : {1.0, 1.1, 2.0, 10.0}) {
        const auto p = policy(50, 120000, mult, 0.3);
        std::int64_t prev_ceiling = 0, prev_floor = 0;
        for (int a = 0; a < 200; ++a) {
            const auto c = core::backoff_ceiling_ms(p, a);
            const auto f = core::backoff_delay_ms(p, a, 0.0);  // the envelope's lower edge
            EXPECT_GE(c, prev_ceiling) << mult << " " << a;
            EXPECT_GE(f, prev_floor) << mult << " " << a;
            EXPECT_LE(f, c);
            prev_ceiling = c;
            prev_floor = f;
        }
        EXPECT_EQ(prev_ceiling, mult > 1.0 ? 120000 : 50);
    }
}

TEST(Backoff, HugeAttemptNumbersStayCapped) {
    const auto p = policy(1000, 300000, 2.0, 0.5);
    for (int a : {63, 64, 1023, 1024, 1025, 100000, std::numeric_limits<int>::max()}) {
        EXPECT_EQ(core::backoff_ceiling_ms(p, a), 300000) << a;
        const auto d = core::backoff_delay_ms(p, a, 0.25);
        EXPECT_GE(d, 150000) << a;
        EXPECT_LE(d, 300000) << a;
    }
    // The largest representable cap: no overflow on the way back from double.
    const auto big = policy(1, std::numeric_limits<std::int64_t>::max(), 10.0, 1.0);
    EXPECT_EQ(core::backoff_ceiling_ms(big, std::numeric_limits<int>::max()),
              std::numeric_limits<std::int64_t>::max());
    const auto d = core::backoff_delay_ms(big, 5000, 0.75);
    EXPECT_GE(d, 0);
    EXPECT_LE(d, std::numeric_limits<std::int64_t>::max());
}

TEST(Backoff, OddPoliciesAreClamped) {
    // Negative attempt reads as the first.
    EXPECT_EQ(core::backoff_ceiling_ms(policy(100, 1000, 2.0, 0), -5), 100);
    // Initial above the cap is the cap; negative numbers are 0.
    EXPECT_EQ(core::backoff_ceiling_ms(policy(5000, 1000, 2.0, 0), 0), 1000);
    EXPECT_EQ(core::backoff_delay_ms(policy(-5, 1000, 2.0, 0.5), 3, 0.5), 0);
    EXPECT_EQ(core::backoff_delay_ms(policy(100, -1, 2.0, 0.5), 3, 0.5), 0);
    // A shrinking or NaN multiplier does not shrink the delay.
    EXPECT_EQ(core::backoff_ceiling_ms(policy(100, 1000, 0.5, 0), 4), 100);
    EXPECT_EQ(core::backoff_ceiling_ms(policy(100, 1000, std::nan(""), 0), 4), 100);
    // Jitter beyond [0, 1] is clamped; NaN jitter is none.
    EXPECT_EQ(core::backoff_delay_ms(policy(1000, 10000, 1.0, 7.0), 0, 0.0), 0);
    EXPECT_EQ(core::backoff_delay_ms(policy(1000, 10000, 1.0, -1.0), 0, 0.0), 1000);
    EXPECT_EQ(core::backoff_delay_ms(policy(1000, 10000, 1.0, std::nan("")), 0, 0.0), 1000);
    // A random value outside [0, 1) is clamped; NaN reads as 0.
    const auto p = policy(1000, 10000, 1.0, 0.5);
    EXPECT_EQ(core::backoff_delay_ms(p, 0, -3.0), 500);
    EXPECT_EQ(core::backoff_delay_ms(p, 0, 42.0), 1000);
    EXPECT_EQ(core::backoff_delay_ms(p, 0, std::nan("")), 500);
}

TEST(Backoff, RetryAfterRaisesButNeverPastTheCap) {
    EXPECT_EQ(core::apply_retry_after(2000, std::nullopt, 60000), 2000);
    EXPECT_EQ(core::apply_retry_after(2000, 500, 60000), 2000);       // never shortens
    EXPECT_EQ(core::apply_retry_after(2000, 7000, 60000), 7000);      // honoured
    EXPECT_EQ(core::apply_retry_after(2000, 3600000, 60000), 60000);  // capped
    EXPECT_EQ(core::apply_retry_after(90000, std::nullopt, 60000), 60000);
    EXPECT_EQ(core::apply_retry_after(-10, -5, 60000), 0);
    EXPECT_EQ(core::apply_retry_after(100, 200, -1), 0);
    EXPECT_EQ(core::apply_retry_after(100, std::numeric_limits<std::int64_t>::max(),
                                      std::numeric_limits<std::int64_t>::max()),
              std::numeric_limits<std::int64_t>::max());
    // Over many draws the result stays within [retry_after, max] whenever both allow it.
    const auto p = policy(500, 20000, 2.0, 1.0);
    std::mt19937_64 rng(7);
    for (int a = 0; a < 30; ++a)
        for (std::int64_t ra : {0, 1500, 19999, 20000, 50000}) {
            const auto d = core::apply_retry_after(core::backoff_delay_ms(p, a, rng), ra, p.max_ms);
            EXPECT_GE(d, std::min<std::int64_t>(ra, p.max_ms));
            EXPECT_LE(d, p.max_ms);
        }
}

TEST(Backoff, TheRetryAfterGivenToRefusedClientsIsSpread) {
    EXPECT_EQ(core::spread_retry_after_s(5, 0.0), 3);
    EXPECT_EQ(core::spread_retry_after_s(5, 0.999), 7);
    EXPECT_EQ(core::spread_retry_after_s(5, 1.0), 7);   // clamped
    EXPECT_EQ(core::spread_retry_after_s(5, -3.0), 3);  // clamped
    EXPECT_EQ(core::spread_retry_after_s(5, std::nan("")), 3);
    EXPECT_EQ(core::spread_retry_after_s(1, 0.5), 1);  // never below a second
    EXPECT_EQ(core::spread_retry_after_s(0, 0.5), 1);
    // Every second of the range about equally often.
    std::mt19937_64 rng(7);
    std::map<int, int> seen;
    for (int i = 0; i < 5000; ++i)
        ++seen[core::spread_retry_after_s(5, std::generate_canonical<double, 53>(rng))];
    ASSERT_EQ(seen.size(), 5u);
    for (const auto& [s, n] : seen) {
        EXPECT_GE(s, 3);
        EXPECT_LE(s, 7);
        EXPECT_GT(n, 800) << s;
        EXPECT_LT(n, 1200) << s;
    }
}

TEST(Backoff, ParsesRetryAfterForms) {
    EXPECT_EQ(core::parse_retry_after("3", std::nullopt), 3000);
    EXPECT_EQ(core::parse_retry_after(" 0.25 ", std::nullopt), 250);
    EXPECT_EQ(core::parse_retry_after("0", std::nullopt), 0);
    EXPECT_EQ(core::parse_retry_after("", std::nullopt), std::nullopt);
    EXPECT_EQ(core::parse_retry_after("soon", 0), std::nullopt);
    EXPECT_EQ(core::parse_retry_after("-1", std::nullopt), std::nullopt);
    EXPECT_EQ(core::parse_retry_after("3s", std::nullopt), std::nullopt);
    EXPECT_EQ(core::parse_retry_after("1e400", std::nullopt), std::nullopt);
    EXPECT_EQ(core::parse_retry_after("99999999999999999999", std::nullopt),
              static_cast<std::int64_t>(9.0e18));
    // 1994-11-06T08:49:37Z is 784111777 s; all three HTTP-date forms.
    const std::int64_t at = 784111777000;
    EXPECT_EQ(core::parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at - 5000), 5000);
    EXPECT_EQ(core::parse_retry_after("Sunday, 06-Nov-94 08:49:37 GMT", at - 5000), 5000);
    EXPECT_EQ(core::parse_retry_after("Sun Nov  6 08:49:37 1994", at - 5000), 5000);
    EXPECT_EQ(core::parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", at + 5000), 0);
    // No clock given: a date cannot be resolved.
    EXPECT_EQ(core::parse_retry_after("Sun, 06 Nov 1994 08:49:37 GMT", std::nullopt), std::nullopt);
    EXPECT_EQ(core::parse_retry_after("Sun, 06 Nov 1994 08:49:37 PST", at), std::nullopt);
}

}  // namespace

// Circuit breaker with an injected clock: every transition, open-time backoff growth and cap,
// the half-open probe limit, the failure-ratio trigger and min_requests, window expiry, the
// concurrency limit, stale results, and a multi-threaded smoke test.

#include <gtest/gtest.h>

#include <atomic>
#include <cstdint>
#include <random>
#include <thread>
#include <vector>

#include "gateway/core/breaker.hpp"

namespace core = segue::core;
using core::breaker_settings;
using core::circuit_breaker;
using S = core::circuit_breaker::state;

namespace {

breaker_settings quick() {
    breaker_settings s;
    s.consecutive_failures = 3;
    s.failure_ratio = 0.5;
    s.min_requests = 10;
    s.window_ms = 10000;
    s.open_ms = 1000;
    s.open_backoff = 2.0;
    s.max_open_ms = 5000;
    s.half_open_probes = 1;
    s.max_concurrency = 0;
    return s;
}

// One call: acquire, then report.
bool call(circuit_breaker& b, bool success, std::int64_t now) {
    if (!b.try_acquire(now))
        return false;
    b.on_result(success, now);
    return true;
}

}  // namespace

TEST(Breaker, StateNames) {
    EXPECT_EQ(core::to_string(S::closed), "closed");
    EXPECT_EQ(core::to_string(S::open), "open");
    EXPECT_EQ(core::to_string(S::half_open), "half_open");
}

TEST(Breaker, StartsClosedAndSuccessesKeepItClosed) {
    circuit_breaker b(quick());
    EXPECT_EQ(b.current(0), S::closed);
    EXPECT_EQ(b.open_until_ms(), 0);
    for (int i = 0; i < 100; ++i)
        ASSERT_TRUE(call(b, true, i * 10));
    const auto s = b.snap(1000);
    EXPECT_EQ(s.st, S::closed);
    EXPECT_EQ(s.window_requests, 100);
    EXPECT_EQ(s.window_failures, 0);
    EXPECT_EQ(s.times_opened, 0);
    EXPECT_EQ(s.in_flight, 0);
}

TEST(Breaker, ConsecutiveFailuresOpen) {
    circuit_breaker b(quick());
    EXPECT_TRUE(call(b, false, 100));
    EXPECT_TRUE(call(b, false, 200));
    EXPECT_EQ(b.snap(200).consecutive_failures, 2);
    EXPECT_TRUE(call(b, true, 300));  // a success resets the run
    EXPECT_EQ(b.snap(300).consecutive_failures, 0);
    EXPECT_TRUE(call(b, false, 400));
    EXPECT_TRUE(call(b, false, 500));
    EXPECT_EQ(b.current(500), S::closed);
    EXPECT_TRUE(call(b, false, 600));
    EXPECT_EQ(b.current(600), S::open);
    EXPECT_EQ(b.open_until_ms(), 1600);
    const auto s = b.snap(600);
    EXPECT_EQ(s.times_opened, 1);
    EXPECT_EQ(s.consecutive_failures, 0);  // counters reset on opening
    EXPECT_EQ(s.window_requests, 0);
    // Refused while open.
    EXPECT_FALSE(b.try_acquire(601));
    EXPECT_FALSE(b.try_acquire(1599));
    EXPECT_EQ(b.in_flight(), 0);
}

TEST(Breaker, OpenThenHalfOpenThenClosedOnProbeSuccess) {
    circuit_breaker b(quick());
    for (int i = 0; i < 3; ++i)
        call(b, false, 0);
    ASSERT_EQ(b.current(0), S::open);
    EXPECT_EQ(b.current(999), S::open);
    EXPECT_EQ(b.current(1000), S::half_open);  // time alone makes it half-open
    EXPECT_EQ(b.snap(1000).st, S::half_open);
    ASSERT_TRUE(b.try_acquire(1000));   // the probe
    EXPECT_FALSE(b.try_acquire(1001));  // one probe at a time
    EXPECT_EQ(b.current(1001), S::half_open);
    b.on_result(true, 1200);
    EXPECT_EQ(b.current(1200), S::closed);
    EXPECT_EQ(b.open_until_ms(), 0);
    EXPECT_TRUE(b.try_acquire(1201));
    EXPECT_TRUE(b.try_acquire(1201));
    b.on_result(true, 1202);
    b.on_result(true, 1202);
    // The backoff was reset: the next opening lasts open_ms again.
    for (int i = 0; i < 3; ++i)
        call(b, false, 2000);
    EXPECT_EQ(b.current(2000), S::open);
    EXPECT_EQ(b.open_until_ms(), 3000);
    EXPECT_EQ(b.snap(2000).times_opened, 2);
}

TEST(Breaker, ProbeFailureReopensWithGrowingCappedDuration) {
    circuit_breaker b(quick());  // 1 s, x2, max 5 s
    for (int i = 0; i < 3; ++i)
        call(b, false, 0);
    std::int64_t now = 0;
    const std::vector<std::int64_t> expected = {1000, 2000, 4000, 5000, 5000, 5000};
    for (std::size_t i = 0; i < expected.size(); ++i) {
        const std::int64_t until = b.open_until_ms();
        EXPECT_EQ(until - now, expected[i]) << i;
        EXPECT_FALSE(b.try_acquire(until - 1));
        now = until;
        ASSERT_TRUE(b.try_acquire(now));
        b.on_result(false, now);  // the probe fails
        EXPECT_EQ(b.current(now), S::open);
    }
    EXPECT_EQ(b.snap(now).times_opened, 7);
    // A success finally closes it and resets the backoff.
    ASSERT_TRUE(b.try_acquire(b.open_until_ms()));
    now = b.open_until_ms();
    b.on_result(true, now);
    EXPECT_EQ(b.current(now), S::closed);
    for (int i = 0; i < 3; ++i)
        call(b, false, now);
    EXPECT_EQ(b.open_until_ms() - now, 1000);
}

TEST(Breaker, HalfOpenProbeLimit) {
    auto st = quick();
    st.half_open_probes = 3;
    circuit_breaker b(st);
    for (int i = 0; i < 3; ++i)
        call(b, false, 0);
    EXPECT_TRUE(b.try_acquire(1000));
    EXPECT_TRUE(b.try_acquire(1000));
    EXPECT_TRUE(b.try_acquire(1000));
    EXPECT_FALSE(b.try_acquire(1000));
    EXPECT_EQ(b.in_flight(), 3);
    // One probe fails: open again (2 s); the other two report while open and only free slots.
    b.on_result(false, 1100);
    EXPECT_EQ(b.current(1100), S::open);
    EXPECT_EQ(b.open_until_ms(), 3100);
    b.on_result(true, 1200);
    b.on_result(true, 1300);
    EXPECT_EQ(b.current(1300), S::open);
    EXPECT_EQ(b.in_flight(), 0);
    // Next half-open: again three probes; the first success closes.
    EXPECT_TRUE(b.try_acquire(3100));
    EXPECT_TRUE(b.try_acquire(3100));
    b.on_result(true, 3200);
    EXPECT_EQ(b.current(3200), S::closed);
    b.on_result(false, 3300);  // the other probe, now an ordinary closed-state result
    EXPECT_EQ(b.current(3300), S::closed);
    EXPECT_EQ(b.snap(3300).consecutive_failures, 1);
    EXPECT_EQ(b.in_flight(), 0);
}

TEST(Breaker, ZeroProbesMeansOne) {
    auto st = quick();
    st.half_open_probes = 0;
    circuit_breaker b(st);
    for (int i = 0; i < 3; ++i)
        call(b, false, 0);
    EXPECT_TRUE(b.try_acquire(1000));
    EXPECT_FALSE(b.try_acquire(1000));
}

TEST(Breaker, FailureRatioNeedsMinRequests) {
    auto st = quick();
    st.consecutive_failures = 0;  // only the ratio
    circuit_breaker b(st);
    // Alternating: 50% failures, but fewer than 10 requests.
    for (int i = 0; i < 9; ++i)
        call(b, i % 2 == 1, 100 * i);  // F S F S F S F S F
    EXPECT_EQ(b.current(900), S::closed);
    auto s = b.snap(900);
    EXPECT_EQ(s.window_requests, 9);
    EXPECT_EQ(s.window_failures, 5);
    // The 10th result is a success: successes never open the breaker.
    call(b, true, 1000);
    EXPECT_EQ(b.current(1000), S::closed);
    // A failure with 11 in the window and 6/11 >= 0.5: open.
    call(b, false, 1100);
    EXPECT_EQ(b.current(1100), S::open);
}

TEST(Breaker, FailureRatioBelowThresholdStaysClosed) {
    auto st = quick();
    st.consecutive_failures = 0;
    circuit_breaker b(st);
    // 1 failure in 3, for a long time.
    for (int i = 0; i < 300; ++i)
        call(b, i % 3 != 0, 10 * i);
    EXPECT_EQ(b.current(3000), S::closed);
    EXPECT_EQ(b.snap(3000).times_opened, 0);
}

TEST(Breaker, WindowExpires) {
    auto st = quick();  // window 10 s, buckets of 1 s
    st.consecutive_failures = 0;
    circuit_breaker b(st);
    for (int i = 0; i < 9; ++i)
        call(b, false, 0);  // 9 failures at t=0: under min_requests
    EXPECT_EQ(b.current(0), S::closed);
    EXPECT_EQ(b.snap(9999).window_requests, 9);
    // They leave the window between window_ms and window_ms + one bucket later.
    EXPECT_EQ(b.snap(11000).window_requests, 0);
    // A failure after they left: 1 request in the window, no trigger.
    call(b, false, 11000);
    EXPECT_EQ(b.current(11000), S::closed);
    auto s = b.snap(11000);
    EXPECT_EQ(s.window_requests, 1);
    EXPECT_EQ(s.window_failures, 1);
    // Whereas within the window the 10th failure opens it.
    circuit_breaker c(st);
    for (int i = 0; i < 9; ++i)
        call(c, false, 0);
    call(c, false, 5000);
    EXPECT_EQ(c.current(5000), S::open);
}

TEST(Breaker, SlidingWindowMixesOldAndNew) {
    auto st = quick();
    st.consecutive_failures = 0;
    circuit_breaker b(st);
    // 10 successes at t=0 and 0.5 s; then failures from t=6 s: the old successes still count.
    for (int i = 0; i < 5; ++i)
        call(b, true, 0);
    for (int i = 0; i < 5; ++i)
        call(b, true, 500);
    for (int i = 0; i < 9; ++i)
        call(b, false, 6000);
    EXPECT_EQ(b.current(6000), S::closed);  // 9/19 < 0.5
    call(b, false, 6000);                   // 10/20 >= 0.5
    EXPECT_EQ(b.current(6000), S::open);

    circuit_breaker c(st);
    for (int i = 0; i < 10; ++i)
        call(c, true, 0);
    // At 11 s the successes have left: 5 failures alone are under min_requests...
    for (int i = 0; i < 5; ++i)
        call(c, false, 11000);
    EXPECT_EQ(c.current(11000), S::closed);
    EXPECT_EQ(c.snap(11000).window_requests, 5);
    for (int i = 0; i < 4; ++i)
        call(c, true, 11000);
    EXPECT_EQ(c.current(11000), S::closed);
    call(c, false, 11000);  // ... 6 failures out of 10: open
    EXPECT_EQ(c.current(11000), S::open);
}

TEST(Breaker, ConcurrencyLimit) {
    auto st = quick();
    st.max_concurrency = 2;
    circuit_breaker b(st);
    EXPECT_TRUE(b.try_acquire(0));
    EXPECT_TRUE(b.try_acquire(0));
    EXPECT_FALSE(b.try_acquire(0));
    EXPECT_EQ(b.in_flight(), 2);
    b.on_result(true, 1);
    EXPECT_EQ(b.in_flight(), 1);
    EXPECT_TRUE(b.try_acquire(2));
    EXPECT_FALSE(b.try_acquire(2));
    b.on_result(false, 3);
    b.on_result(false, 3);
    EXPECT_EQ(b.in_flight(), 0);
    EXPECT_EQ(b.current(3), S::closed);
    // A result without a slot changes nothing.
    b.on_result(false, 4);
    EXPECT_EQ(b.in_flight(), 0);
    EXPECT_EQ(b.snap(4).consecutive_failures, 2);
}

TEST(Breaker, ConcurrencyLimitAppliesToProbes) {
    auto st = quick();
    st.max_concurrency = 1;
    st.half_open_probes = 2;
    circuit_breaker b(st);
    for (int i = 0; i < 3; ++i)
        ASSERT_TRUE(call(b, false, 0));
    ASSERT_EQ(b.current(0), S::open);
    ASSERT_TRUE(b.try_acquire(1000));   // probe 1
    EXPECT_FALSE(b.try_acquire(1000));  // probe 2 would pass the concurrency limit
}

TEST(Breaker, StaleResultsWhileOpenOnlyReleaseSlots) {
    circuit_breaker b(quick());
    ASSERT_TRUE(b.try_acquire(0));
    ASSERT_TRUE(b.try_acquire(0));  // two slow calls
    for (int i = 0; i < 3; ++i)
        call(b, false, 10);
    ASSERT_EQ(b.current(10), S::open);
    EXPECT_EQ(b.in_flight(), 2);
    b.on_result(true, 20);  // arrives while open: no effect on the state
    EXPECT_EQ(b.current(20), S::open);
    // After the open period but before any probe: still nothing (no probe in flight).
    b.on_result(true, 1500);
    EXPECT_EQ(b.current(1500), S::half_open);
    EXPECT_EQ(b.in_flight(), 0);
    ASSERT_TRUE(b.try_acquire(1500));
    b.on_result(true, 1600);
    EXPECT_EQ(b.current(1600), S::closed);
}

TEST(Breaker, OpenDurationCapBelowOpenMsKeepsOpenMs) {
    auto st = quick();
    st.open_ms = 3000;
    st.max_open_ms = 1000;  // misconfigured: the cap never shortens the first opening
    st.open_backoff = 0.5;  // below 1 reads as 1
    circuit_breaker b(st);
    for (int i = 0; i < 3; ++i)
        call(b, false, 0);
    EXPECT_EQ(b.open_until_ms(), 3000);
    ASSERT_TRUE(b.try_acquire(3000));
    b.on_result(false, 3000);
    EXPECT_EQ(b.open_until_ms(), 6000);
}

TEST(Breaker, ThreadedSmoke) {
    auto st = quick();
    st.consecutive_failures = 4;
    st.max_concurrency = 3;
    st.half_open_probes = 2;
    st.open_ms = 5;
    st.max_open_ms = 50;
    circuit_breaker b(st);
    std::atomic<std::int64_t> clock{0};
    std::atomic<int> acquired{0}, reported{0}, max_seen{0};
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t) {
        threads.emplace_back([&, t] {
            std::mt19937 rng(t);
            for (int i = 0; i < 20000; ++i) {
                const std::int64_t now = clock.fetch_add(1) / 4;
                if (!b.try_acquire(now))
                    continue;
                ++acquired;
                const int inflight = b.in_flight();
                int prev = max_seen.load();
                while (inflight > prev && !max_seen.compare_exchange_weak(prev, inflight)) {
                }
                if (rng() % 8 == 0)
                    std::this_thread::yield();
                b.on_result(rng() % 3 != 0, clock.load() / 4);
                ++reported;
            }
        });
    }
    for (auto& th : threads)
        th.join();
    EXPECT_EQ(acquired.load(), reported.load());
    EXPECT_GT(acquired.load(), 0);
    EXPECT_EQ(b.in_flight(), 0);
    EXPECT_LE(max_seen.load(), 3);
    const auto s = b.snap(clock.load() / 4);
    EXPECT_EQ(s.in_flight, 0);
    EXPECT_LE(s.window_failures, s.window_requests);
    EXPECT_LE(s.window_requests, reported.load());
    EXPECT_GT(s.times_opened, 0);  // a third of calls fail: it must have opened
}

// A probe whose call was never made (the gateway failed before sending it) gives its slot back
// without an outcome: the breaker stays half-open and the next probe may go (it leaked before,
// leaving the provider refused forever).
TEST(Breaker, ReleaseFreesAProbeSlotWithoutAnOutcome) {
    circuit_breaker b(quick());
    for (int i = 0; i < 3; ++i)
        call(b, false, 0);
    ASSERT_TRUE(b.try_acquire(1000));
    EXPECT_FALSE(b.try_acquire(1000));  // the one probe is out
    b.release();
    EXPECT_EQ(b.in_flight(), 0);
    EXPECT_EQ(b.current(1000), S::half_open);
    ASSERT_TRUE(b.try_acquire(1001));  // a new probe
    b.on_result(true, 1002);
    EXPECT_EQ(b.current(1002), S::closed);
    b.release();  // nothing in flight: nothing happens
    EXPECT_EQ(b.in_flight(), 0);
    // Closed: a released slot records nothing.
    const int before = b.snap(2000).window_requests;
    ASSERT_TRUE(b.try_acquire(2000));
    b.release();
    EXPECT_EQ(b.snap(2000).window_requests, before);
    EXPECT_EQ(b.in_flight(), 0);
}

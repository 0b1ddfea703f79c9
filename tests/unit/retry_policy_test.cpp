// Retry policy: a table over error classes x task states, backoff bounds, Retry-After honoured
// and capped (or failover when it asks for longer than we wait), the deadline cut-off, the
// attempt budget, ambiguous submits, open circuits, and accepted tasks that never fail over
// unless they failed asynchronously on a route that allows regeneration.

#include <gtest/gtest.h>

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

#include "gateway/core/retry_policy.hpp"

namespace core = segue::core;
using core::decision_kind;
using core::error_class;
using K = core::decision_kind;

namespace {

core::failure_info failure(error_class c) {
    core::failure_info f;
    f.cls = c;
    return f;
}

core::retry_state at(int attempts_at_provider, bool has_next, int attempts_total = 1,
                     std::int64_t age_ms = 0) {
    core::retry_state s;
    s.attempts_total = attempts_total;
    s.attempts_at_provider = attempts_at_provider;
    s.task_age_ms = age_ms;
    s.has_next_provider = has_next;
    return s;
}

}  // namespace

TEST(RetryPolicy, Defaults) {
    const core::retry_settings s;
    EXPECT_EQ(s.transient.max_attempts, 3);
    EXPECT_TRUE(s.transient.failover);
    EXPECT_EQ(s.transient.backoff.initial_ms, 1000);
    EXPECT_EQ(s.transient.backoff.max_ms, 30000);
    EXPECT_DOUBLE_EQ(s.transient.backoff.multiplier, 2.0);
    EXPECT_DOUBLE_EQ(s.transient.backoff.jitter, 0.5);
    EXPECT_EQ(s.rate_limited.max_attempts, 4);
    EXPECT_TRUE(s.rate_limited.failover);
    EXPECT_EQ(s.rate_limited.backoff.initial_ms, 2000);
    EXPECT_EQ(s.rate_limited.backoff.max_ms, 60000);
    EXPECT_EQ(s.quota.max_attempts, 1);
    EXPECT_TRUE(s.quota.failover);
    EXPECT_EQ(s.credential.max_attempts, 1);
    EXPECT_TRUE(s.credential.failover);
    EXPECT_EQ(s.rejected.max_attempts, 1);
    EXPECT_FALSE(s.rejected.failover);
    EXPECT_EQ(s.unknown.max_attempts, 1);
    EXPECT_FALSE(s.unknown.failover);
    EXPECT_EQ(s.attempt_budget, 6);
    EXPECT_EQ(s.deadline_ms, 30 * 60 * 1000);
    EXPECT_EQ(&core::policy_for(s, error_class::none), &s.unknown);
    EXPECT_EQ(&core::policy_for(s, error_class::rate_limited), &s.rate_limited);
}

TEST(RetryPolicy, DecisionKindNames) {
    EXPECT_EQ(core::to_string(K::retry_same), "retry_same");
    EXPECT_EQ(core::to_string(K::failover), "failover");
    EXPECT_EQ(core::to_string(K::reconcile), "reconcile");
    EXPECT_EQ(core::to_string(K::fail), "fail");
}

TEST(RetryPolicy, TableOverClassesAndStates) {
    struct row {
        error_class cls;
        int at_provider;
        bool has_next;
        bool accepted;
        bool async;
        bool regen;
        K what;
        std::string reason;
    };
    using E = error_class;
    const std::vector<row> rows = {
        // Not accepted: retry here up to max_attempts, then fail over if the class allows.
        {E::transient, 1, false, false, false, false, K::retry_same, "transient"},
        {E::transient, 2, true, false, false, false, K::retry_same, "transient"},
        {E::transient, 3, true, false, false, false, K::failover, "transient"},
        {E::transient, 3, false, false, false, false, K::fail, "retries_exhausted"},
        {E::rate_limited, 1, true, false, false, false, K::retry_same, "rate_limited"},
        {E::rate_limited, 3, true, false, false, false, K::retry_same, "rate_limited"},
        {E::rate_limited, 4, true, false, false, false, K::failover, "rate_limited"},
        {E::rate_limited, 4, false, false, false, false, K::fail, "retries_exhausted"},
        {E::quota, 1, true, false, false, false, K::failover, "quota"},
        {E::quota, 1, false, false, false, false, K::fail, "retries_exhausted"},
        {E::credential, 1, true, false, false, false, K::failover, "credential"},
        {E::credential, 1, false, false, false, false, K::fail, "retries_exhausted"},
        {E::rejected, 1, true, false, false, false, K::fail, "not_retryable"},
        {E::rejected, 1, false, false, false, false, K::fail, "not_retryable"},
        {E::unknown, 1, true, false, false, false, K::fail, "not_retryable"},
        {E::none, 1, true, false, false, false, K::fail, "not_retryable"},
        // Accepted, the call failed synchronously (a poll): repeat it, never move.
        {E::transient, 1, true, true, false, false, K::retry_same, "transient"},
        {E::transient, 3, true, true, false, false, K::fail, "retries_exhausted"},
        {E::transient, 3, true, true, false, true, K::fail, "retries_exhausted"},
        {E::quota, 1, true, true, false, false, K::fail, "retries_exhausted"},
        {E::credential, 1, true, true, false, true, K::fail, "retries_exhausted"},
        // Accepted, then failed asynchronously, the route forbids regeneration: fail.
        {E::transient, 1, true, true, true, false, K::fail, "async_failure"},
        {E::transient, 3, true, true, true, false, K::fail, "async_failure"},
        {E::quota, 1, true, true, true, false, K::fail, "async_failure"},
        // ... the route allows it: like a fresh failure.
        {E::transient, 1, true, true, true, true, K::retry_same, "transient"},
        {E::transient, 3, true, true, true, true, K::failover, "transient"},
        {E::transient, 3, false, true, true, true, K::fail, "retries_exhausted"},
        {E::quota, 1, true, true, true, true, K::failover, "quota"},
        // A moderation rejection stays a rejection, whatever the route says.
        {E::rejected, 1, true, true, true, true, K::fail, "not_retryable"},
    };
    const core::retry_settings s;
    for (const row& r : rows) {
        auto f = failure(r.cls);
        f.accepted_by_provider = r.accepted;
        f.async_failure = r.async;
        auto st = at(r.at_provider, r.has_next);
        st.route_allows_regeneration = r.regen;
        const auto d = core::decide(s, f, st, 0.5);
        SCOPED_TRACE(std::string(core::to_string(r.cls)) + " at=" + std::to_string(r.at_provider) +
                     " next=" + std::to_string(r.has_next) +
                     " accepted=" + std::to_string(r.accepted) +
                     " async=" + std::to_string(r.async) + " regen=" + std::to_string(r.regen));
        EXPECT_EQ(d.what, r.what) << core::to_string(d.what);
        EXPECT_EQ(d.reason, r.reason);
        if (d.what == K::failover || d.what == K::fail)
            EXPECT_EQ(d.delay_ms, 0);
        if (d.what == K::retry_same)
            EXPECT_GT(d.delay_ms, 0);
    }
}

TEST(RetryPolicy, BackoffBounds) {
    const core::retry_settings s;
    for (int at_provider = 1; at_provider <= 2; ++at_provider) {
        const std::int64_t ceiling = 1000LL << (at_provider - 1);
        std::int64_t lo = INT64_MAX, hi = 0;
        for (int i = 0; i < 100; ++i) {
            const auto d =
                core::decide(s, failure(error_class::transient), at(at_provider, true), i / 100.0);
            ASSERT_EQ(d.what, K::retry_same);
            EXPECT_GE(d.delay_ms, ceiling / 2);
            EXPECT_LE(d.delay_ms, ceiling);
            lo = std::min(lo, d.delay_ms);
            hi = std::max(hi, d.delay_ms);
        }
        EXPECT_EQ(lo, ceiling / 2);  // u = 0
        EXPECT_GE(hi, ceiling * 99 / 100);
    }
    // The schedule is the class's: rate_limited starts at 2 s.
    EXPECT_EQ(core::decide(s, failure(error_class::rate_limited), at(1, true), 0.0).delay_ms, 1000);
    EXPECT_EQ(core::decide(s, failure(error_class::rate_limited), at(3, true), 0.0).delay_ms, 4000);
    // Capped at the class's max_ms.
    core::retry_settings many;
    many.transient.max_attempts = 50;
    many.attempt_budget = 0;
    const auto d = core::decide(many, failure(error_class::transient), at(40, false), 0.999);
    EXPECT_EQ(d.what, K::retry_same);
    EXPECT_LE(d.delay_ms, 30000);
    EXPECT_GE(d.delay_ms, 15000);
}

TEST(RetryPolicy, RetryAfterHonouredAndCapped) {
    const core::retry_settings s;  // rate_limited: 2 s .. 60 s
    auto f = failure(error_class::rate_limited);
    // Longer than the backoff: wait what the provider asks.
    f.retry_after_ms = 5000;
    auto d = core::decide(s, f, at(1, false), 0.0);
    EXPECT_EQ(d.what, K::retry_same);
    EXPECT_EQ(d.delay_ms, 5000);
    EXPECT_EQ(d.reason, "rate_limited");
    // Shorter than the backoff: the backoff wins.
    f.retry_after_ms = 10;
    EXPECT_EQ(core::decide(s, f, at(1, false), 0.0).delay_ms, 1000);
    // Exactly the cap: still worth waiting for, even with somewhere else to go.
    f.retry_after_ms = 60000;
    d = core::decide(s, f, at(1, true), 0.0);
    EXPECT_EQ(d.what, K::retry_same);
    EXPECT_EQ(d.delay_ms, 60000);
    // Longer than we would ever wait: capped when there is nowhere else to go...
    f.retry_after_ms = 3600000;
    d = core::decide(s, f, at(1, false), 0.0);
    EXPECT_EQ(d.what, K::retry_same);
    EXPECT_EQ(d.delay_ms, 60000);
    // ... else the next provider, at once.
    d = core::decide(s, f, at(1, true), 0.0);
    EXPECT_EQ(d.what, K::failover);
    EXPECT_EQ(d.delay_ms, 0);
    EXPECT_EQ(d.reason, "rate_limited");
    // Transient errors with Retry-After (503) use the transient cap.
    auto t = failure(error_class::transient);
    t.retry_after_ms = 45000;
    d = core::decide(s, t, at(1, false), 0.0);
    EXPECT_EQ(d.what, K::retry_same);
    EXPECT_EQ(d.delay_ms, 30000);
    // A negative Retry-After is ignored.
    t.retry_after_ms = -5;
    EXPECT_EQ(core::decide(s, t, at(1, false), 0.0).delay_ms, 500);
}

TEST(RetryPolicy, DeadlineCutOff) {
    core::retry_settings s;
    s.transient.backoff.jitter = 0;  // attempt 0: exactly 1000 ms
    const std::int64_t deadline = s.deadline_ms;
    const auto f = failure(error_class::transient);
    // The retry must start before the deadline.
    auto d = core::decide(s, f, at(1, false, 1, deadline - 1001), 0.5);
    EXPECT_EQ(d.what, K::retry_same);
    EXPECT_EQ(d.delay_ms, 1000);
    d = core::decide(s, f, at(1, false, 1, deadline - 1000), 0.5);
    EXPECT_EQ(d.what, K::fail);
    EXPECT_EQ(d.reason, "deadline");
    // A retry past the deadline falls back to failover while there is time for it.
    d = core::decide(s, f, at(1, true, 1, deadline - 10), 0.5);
    EXPECT_EQ(d.what, K::failover);
    // At the deadline nothing starts.
    d = core::decide(s, f, at(3, true, 1, deadline), 0.5);
    EXPECT_EQ(d.what, K::fail);
    EXPECT_EQ(d.reason, "deadline");
    d = core::decide(s, failure(error_class::quota), at(1, true, 1, deadline + 5), 0.5);
    EXPECT_EQ(d.what, K::fail);
    EXPECT_EQ(d.reason, "deadline");
    // Retry-After past the deadline.
    auto r = failure(error_class::rate_limited);
    r.retry_after_ms = 50000;
    d = core::decide(s, r, at(1, false, 1, deadline - 40000), 0.5);
    EXPECT_EQ(d.what, K::fail);
    EXPECT_EQ(d.reason, "deadline");
    // No deadline.
    s.deadline_ms = 0;
    d = core::decide(s, f, at(1, false, 1, std::int64_t{1} << 50), 0.5);
    EXPECT_EQ(d.what, K::retry_same);
}

TEST(RetryPolicy, AttemptBudget) {
    core::retry_settings s;
    s.attempt_budget = 4;
    const auto f = failure(error_class::transient);
    EXPECT_EQ(core::decide(s, f, at(1, true, 3), 0.5).what, K::retry_same);
    auto d = core::decide(s, f, at(1, true, 4), 0.5);
    EXPECT_EQ(d.what, K::fail);
    EXPECT_EQ(d.reason, "budget_exhausted");
    d = core::decide(s, f, at(3, true, 4), 0.5);  // failover is an attempt too
    EXPECT_EQ(d.what, K::fail);
    EXPECT_EQ(d.reason, "budget_exhausted");
    EXPECT_EQ(core::decide(s, failure(error_class::quota), at(1, true, 3), 0.5).what, K::failover);
    // Nothing to retry anyway: the reason says so.
    EXPECT_EQ(core::decide(s, failure(error_class::rejected), at(1, true, 9), 0.5).reason,
              "not_retryable");
    // A budget of 0 or less is no budget.
    s.attempt_budget = 0;
    EXPECT_EQ(core::decide(s, f, at(1, true, 1000), 0.5).what, K::retry_same);
}

TEST(RetryPolicy, AmbiguousSubmitIsReconciled) {
    core::retry_settings s;
    s.attempt_budget = 2;
    for (auto cls :
         {error_class::transient, error_class::rejected, error_class::unknown, error_class::none}) {
        auto f = failure(cls);
        f.ambiguous = true;
        auto d = core::decide(s, f, at(1, true), 0.0);
        EXPECT_EQ(d.what, K::reconcile);
        EXPECT_EQ(d.reason, "ambiguous_submit");
        EXPECT_EQ(d.delay_ms, 500);  // the transient backoff, attempt 0, u = 0
        // Not an attempt: neither the budget nor the class limit stops it...
        d = core::decide(s, f, at(7, false, 9), 0.0);
        EXPECT_EQ(d.what, K::reconcile);
        // ... nor the deadline, which only shortens the wait.
        d = core::decide(s, f, at(1, false, 1, s.deadline_ms - 100), 0.999);
        EXPECT_EQ(d.what, K::reconcile);
        EXPECT_EQ(d.delay_ms, 100);
        d = core::decide(s, f, at(1, false, 1, s.deadline_ms + 100), 0.999);
        EXPECT_EQ(d.what, K::reconcile);
        EXPECT_EQ(d.delay_ms, 0);
    }
    // Once accepted, "ambiguous" means nothing: the provider has the task.
    auto f = failure(error_class::transient);
    f.ambiguous = true;
    f.accepted_by_provider = true;
    EXPECT_EQ(core::decide(s, f, at(1, true), 0.0).what, K::retry_same);
}

TEST(RetryPolicy, CircuitOpen) {
    const core::retry_settings s;
    auto f = failure(error_class::transient);
    f.circuit_open = true;
    f.retry_after_ms = 90000;  // the breaker's remaining open time
    // Somewhere else to go: at once, whatever the attempts at this provider.
    for (int at_provider : {1, 3, 10}) {
        auto d = core::decide(s, f, at(at_provider, true), 0.5);
        EXPECT_EQ(d.what, K::failover);
        EXPECT_EQ(d.delay_ms, 0);
        EXPECT_EQ(d.reason, "circuit_open");
    }
    // Even for a class that never fails over: nothing was sent.
    auto r = f;
    r.cls = error_class::rejected;
    EXPECT_EQ(core::decide(s, r, at(1, true), 0.5).what, K::failover);
    // Nowhere else: wait for the breaker, uncapped (waiting less is refused again).
    auto d = core::decide(s, f, at(5, false), 0.5);
    EXPECT_EQ(d.what, K::retry_same);
    EXPECT_EQ(d.delay_ms, 90000);
    EXPECT_EQ(d.reason, "circuit_open");
    // Without an open time: the transient backoff.
    auto g = f;
    g.retry_after_ms.reset();
    d = core::decide(s, g, at(1, false), 0.0);
    EXPECT_EQ(d.what, K::retry_same);
    EXPECT_EQ(d.delay_ms, 500);
    // Budget and deadline still apply.
    d = core::decide(s, f, at(1, true, 6), 0.5);
    EXPECT_EQ(d.what, K::fail);
    EXPECT_EQ(d.reason, "budget_exhausted");
    d = core::decide(s, f, at(1, false, 1, s.deadline_ms - 90000), 0.5);
    EXPECT_EQ(d.what, K::fail);
    EXPECT_EQ(d.reason, "deadline");
    // An accepted task cannot move: it waits.
    auto a = f;
    a.accepted_by_provider = true;
    EXPECT_EQ(core::decide(s, a, at(1, true), 0.5).what, K::retry_same);
    // ... unless it failed asynchronously and the route allows regeneration.
    a.async_failure = true;
    auto st = at(1, true);
    st.route_allows_regeneration = true;
    EXPECT_EQ(core::decide(s, a, st, 0.5).what, K::failover);
    st.route_allows_regeneration = false;
    EXPECT_EQ(core::decide(s, a, st, 0.5).reason, "async_failure");
}

TEST(RetryPolicy, AcceptedTasksNeverFailOverUnlessAsyncAndAllowed) {
    const core::retry_settings s;
    for (auto cls : {error_class::transient, error_class::rate_limited, error_class::quota,
                     error_class::credential, error_class::rejected, error_class::unknown}) {
        for (int at_provider = 1; at_provider <= 5; ++at_provider) {
            for (int mask = 0; mask < 4; ++mask) {
                auto f = failure(cls);
                f.accepted_by_provider = true;
                f.async_failure = mask & 1;
                auto st = at(at_provider, true);
                st.route_allows_regeneration = mask & 2;
                const auto d = core::decide(s, f, st, 0.3);
                if (d.what == K::failover) {
                    EXPECT_TRUE(f.async_failure && st.route_allows_regeneration)
                        << core::to_string(cls) << " at " << at_provider << " mask " << mask;
                }
                // A provider that failed an accepted task is not asked again unless allowed.
                if (f.async_failure && !st.route_allows_regeneration) {
                    EXPECT_EQ(d.what, K::fail);
                    EXPECT_EQ(d.reason, "async_failure");
                }
            }
        }
    }
}

TEST(RetryPolicy, ConfigurableClasses) {
    core::retry_settings s;
    s.rejected.max_attempts = 2;  // someone decided rejections are worth one more try
    s.unknown.failover = true;
    auto d = core::decide(s, failure(error_class::rejected), at(1, true), 0.5);
    EXPECT_EQ(d.what, K::retry_same);
    EXPECT_EQ(d.reason, "rejected");
    d = core::decide(s, failure(error_class::rejected), at(2, true), 0.5);
    EXPECT_EQ(d.what, K::fail);
    EXPECT_EQ(d.reason, "retries_exhausted");
    d = core::decide(s, failure(error_class::unknown), at(1, true), 0.5);
    EXPECT_EQ(d.what, K::failover);
    EXPECT_EQ(d.reason, "unknown");
}

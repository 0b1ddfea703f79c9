#include "gateway/core/retry_policy.hpp"

#include <algorithm>

namespace segue::core {

namespace {

decision make(decision_kind what, std::int64_t delay_ms, std::string_view reason) {
    return decision{what, std::max<std::int64_t>(0, delay_ms), std::string(reason)};
}

decision fail(std::string_view reason) {
    return make(decision_kind::fail, 0, reason);
}

}  // namespace

const class_policy& policy_for(const retry_settings& s, error_class c) noexcept {
    switch (c) {
        case error_class::transient:
            return s.transient;
        case error_class::rate_limited:
            return s.rate_limited;
        case error_class::quota:
            return s.quota;
        case error_class::credential:
            return s.credential;
        case error_class::rejected:
            return s.rejected;
        case error_class::none:
        case error_class::unknown:
            break;
    }
    return s.unknown;
}

std::string_view to_string(decision_kind k) noexcept {
    switch (k) {
        case decision_kind::retry_same:
            return "retry_same";
        case decision_kind::failover:
            return "failover";
        case decision_kind::reconcile:
            return "reconcile";
        case decision_kind::fail:
            return "fail";
    }
    return "fail";
}

decision decide(const retry_settings& settings, const failure_info& failure,
                const retry_state& state, double unit_random) {
    const std::int64_t age = std::max<std::int64_t>(0, state.task_age_ms);
    const bool has_deadline = settings.deadline_ms > 0;
    // An action that starts after `delay` must start before the deadline.
    const auto in_time = [&](std::int64_t delay) {
        return !has_deadline || age + std::max<std::int64_t>(0, delay) < settings.deadline_ms;
    };
    const bool budget_left =
        settings.attempt_budget <= 0 || state.attempts_total < settings.attempt_budget;
    // Backoff attempt numbers are 0-based: the first retry follows attempt 1.
    const int backoff_attempt = std::max(0, state.attempts_at_provider - 1);

    // 1. The request may have reached the provider: find out before anything else.
    if (failure.ambiguous && !failure.accepted_by_provider) {
        std::int64_t delay =
            backoff_delay_ms(settings.transient.backoff, backoff_attempt, unit_random);
        if (has_deadline)
            delay = std::min(delay, std::max<std::int64_t>(0, settings.deadline_ms - age));
        return make(decision_kind::reconcile, delay, "ambiguous_submit");
    }

    // 2. The provider failed a task it had accepted; the route forbids generating again.
    const bool regenerate_ok = failure.async_failure && state.route_allows_regeneration;
    if (failure.accepted_by_provider && failure.async_failure && !regenerate_ok)
        return fail("async_failure");

    // The task may leave this provider (the class aside).
    const bool may_move =
        state.has_next_provider && (!failure.accepted_by_provider || regenerate_ok);

    // 3. Refused by this provider's breaker: nothing was sent.
    if (failure.circuit_open) {
        if (!budget_left)
            return fail("budget_exhausted");
        if (may_move) {
            if (!in_time(0))
                return fail("deadline");
            return make(decision_kind::failover, 0, "circuit_open");
        }
        const std::int64_t delay =
            failure.retry_after_ms
                ? std::max<std::int64_t>(0, *failure.retry_after_ms)
                : backoff_delay_ms(settings.transient.backoff, backoff_attempt, unit_random);
        if (!in_time(delay))
            return fail("deadline");
        return make(decision_kind::retry_same, delay, "circuit_open");
    }

    const error_class cls = failure.cls == error_class::none ? error_class::unknown : failure.cls;
    const class_policy& policy = policy_for(settings, cls);
    const std::string_view cls_name = to_string(cls);
    const bool failover_ok = policy.failover && may_move;

    const auto do_failover = [&]() {
        if (!budget_left)
            return fail("budget_exhausted");
        if (!in_time(0))
            return fail("deadline");
        return make(decision_kind::failover, 0, cls_name);
    };

    // 4. Another try at this provider.
    if (state.attempts_at_provider < policy.max_attempts) {
        // The provider asks us to stay away longer than we would wait: go elsewhere.
        if (failover_ok && failure.retry_after_ms &&
            *failure.retry_after_ms > policy.backoff.max_ms)
            return do_failover();
        const std::int64_t delay =
            apply_retry_after(backoff_delay_ms(policy.backoff, backoff_attempt, unit_random),
                              failure.retry_after_ms, policy.backoff.max_ms);
        if (!budget_left)
            return fail("budget_exhausted");
        if (in_time(delay))
            return make(decision_kind::retry_same, delay, cls_name);
        if (failover_ok)
            return do_failover();
        return fail("deadline");
    }

    // 5. The next provider.
    if (failover_ok)
        return do_failover();

    // 6. Nothing left.
    if (policy.max_attempts <= 1 && !policy.failover)
        return fail("not_retryable");
    return fail("retries_exhausted");
}

}  // namespace segue::core

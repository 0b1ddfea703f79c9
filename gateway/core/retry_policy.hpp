#pragma once
// Retry and failover decisions for one task after a failed upstream call (ARCHITECTURE.md,
// reliability rules). Pure: the task's age, its attempt counts and the random draw are
// parameters; the engine owns the clock, the store and the route (see routing.hpp).
//
// decide() answers, in this order:
//   1. ambiguous (the request was sent, then a timeout or reset: the provider may have the task)
//      and not yet accepted -> reconcile (query the provider / await its callback) before any
//      resubmission, never a blind resubmit. Delay: the transient backoff for
//      attempts_at_provider, clamped to the time left before the deadline. Reconciling is not an
//      attempt, so neither the budget nor the deadline stops it: failing without it could leave
//      a live upstream task nobody tracks. The engine calls decide() again, with ambiguous =
//      false, once reconciliation shows the provider never took the task.
//   2. accepted_by_provider && async_failure && !route_allows_regeneration -> fail
//      "async_failure": the provider took the task and then failed it, and the route does not
//      allow generating again (neither there nor elsewhere).
//   3. circuit_open (this provider's breaker refused the call; nothing was sent) -> failover if
//      the task may move (has_next_provider and not tied to this provider, see 5; the class's
//      failover flag does not matter: nothing was sent), else retry_same after retry_after_ms
//      (the remaining open time, not capped: waiting less would only be refused again) or,
//      without it, the transient backoff. Reason "circuit_open". The class's attempt limit does
//      not apply (no call was made); the budget and deadline do.
//   4. the class allows another try here (attempts_at_provider < max_attempts) -> retry_same
//      after backoff_delay_ms(class.backoff, attempts_at_provider - 1), raised to Retry-After and
//      capped at class.backoff.max_ms (apply_retry_after). When the provider's Retry-After is
//      longer than that cap and failover is possible, fail over instead of hammering a provider
//      that asked us to stay away. If the delay would end past the deadline, failover is tried
//      instead, else fail "deadline".
//   5. failover possible -> failover (delay 0), reason = the class ("transient", "quota", ...).
//      Failover is possible when class.failover && has_next_provider && (!accepted_by_provider
//      || (async_failure && route_allows_regeneration)): once a provider has accepted the task
//      it is tied to it, unless it failed the task asynchronously and the route allows
//      regenerating elsewhere.
//   6. else fail: "not_retryable" when the class allows neither a second try nor failover,
//      otherwise "retries_exhausted".
// Every retry_same and failover is a new attempt: when attempts_total >= attempt_budget it
// becomes fail "budget_exhausted"; when task_age_ms (+ delay) reaches deadline_ms, fail
// "deadline".
//
// retry_same after acceptance without async_failure (e.g. a poll or cancel call failed) means
// "repeat that call"; after an async failure it means "submit again to the same provider", which
// like failover needs route_allows_regeneration.
//
// error_class::none in a failure reads as unknown.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

#include "gateway/core/backoff.hpp"
#include "gateway/core/model.hpp"

namespace segue::core {

struct class_policy {
    int max_attempts = 3;  // at one provider, the first try included
    bool failover = true;  // may move to the next provider after this class of error
    backoff_policy backoff;
};

struct retry_settings {
    // Network errors, 5xx: a few quick retries, then the next provider.
    class_policy transient{3, true, {1000, 30000, 2.0, 0.5}};
    // 429: wait longer (and honour Retry-After), then the next provider.
    class_policy rate_limited{4, true, {2000, 60000, 2.0, 0.5}};
    // Our account at this provider is out of credits / over its quota: no point retrying there.
    class_policy quota{1, true, {}};
    // Our key is wrong or revoked at this provider: another provider has its own key.
    class_policy credential{1, true, {}};
    // The request itself is bad (validation, unsupported audio, content moderation): another
    // provider would refuse it too, and a moderation rejection must stay a rejection rather
    // than be shopped around until some provider accepts the content.
    class_policy rejected{1, false, {}};
    // We do not know what happened: do not spend more money on it.
    class_policy unknown{1, false, {}};
    int attempt_budget = 6;                     // attempts per task over all providers; <= 0: none
    std::int64_t deadline_ms = 30 * 60 * 1000;  // from task creation; <= 0: none
    // An attempt a provider accepted fails (upstream_deadline) once this long has passed since
    // it was submitted; <= 0: none. Not a decide() input: see transition::attempt_due_by.
    std::int64_t attempt_deadline_ms = 30 * 60 * 1000;
};

// The policy for a class (none reads as unknown).
const class_policy& policy_for(const retry_settings& s, error_class c) noexcept;

struct failure_info {
    error_class cls = error_class::unknown;
    std::optional<std::int64_t> retry_after_ms;  // Retry-After, or a breaker's remaining open time
    bool accepted_by_provider = false;           // a provider accepted the task: see failover above
    bool async_failure = false;                  // failed after acceptance (failed webhook / poll)
    bool ambiguous = false;                      // timeout/reset after the request was sent
    bool circuit_open = false;                   // the breaker refused the call; nothing was sent
};

struct retry_state {
    int attempts_total = 1;        // attempts made for the task, the failed one included
    int attempts_at_provider = 1;  // attempts made at the current provider, the failed one included
    std::int64_t task_age_ms = 0;  // now - task creation
    bool has_next_provider = false;          // the route has a provider after the current one
    bool route_allows_regeneration = false;  // may resubmit after an async failure
};

enum class decision_kind {
    retry_same,  // the same call at the same provider, after delay_ms
    failover,    // the next provider of the route, after delay_ms (0)
    reconcile,   // find out whether the provider has the task, after delay_ms
    fail,        // the task fails; reason says why
};
std::string_view to_string(decision_kind k) noexcept;

struct decision {
    decision_kind what = decision_kind::fail;
    std::int64_t delay_ms = 0;
    // "transient", "rate_limited", "quota", "credential" (or "rejected", "unknown" if configured
    // retryable), "circuit_open", "ambiguous_submit", "retries_exhausted", "budget_exhausted",
    // "deadline", "not_retryable", "async_failure".
    std::string reason;
};

decision decide(const retry_settings& settings, const failure_info& failure,
                const retry_state& state, double unit_random);

}  // namespace segue::core

#pragma once
// Capped exponential backoff with jitter, and Retry-After, for every upstream retry and poll
// (ARCHITECTURE.md, reliability rules). Pure functions: randomness and the clock are parameters,
// so the schedule is testable and one policy type serves submits, polls and webhook deliveries.

#include <cstdint>
#include <optional>
#include <random>
#include <string_view>

namespace segue::core {

struct backoff_policy {
    std::int64_t initial_ms = 1000;  // the delay before the first retry (attempt 0)
    std::int64_t max_ms = 60000;     // no delay is ever longer
    double multiplier = 2.0;         // growth per attempt; values below 1 are read as 1
    // 0..1: the fraction of each delay that is randomized ("equal jitter"):
    //   delay * (1 - jitter) + uniform(0, delay * jitter)
    // 0 is deterministic; 1 is "full jitter". Out-of-range values are clamped.
    double jitter = 0.5;
};

// Trying a store write again while the database is out of reach or too busy (a job's result,
// a delivery's outcome): 250 ms, doubling, at most 5 s, no jitter (one writer per row).
inline constexpr backoff_policy store_retry_backoff{250, 5000, 2.0, 0.0};

// The delay before retry number `attempt` (0-based) without jitter:
// min(max_ms, initial_ms * multiplier^attempt). Never negative, never above max_ms, and
// non-decreasing in `attempt`, even for attempt numbers whose power overflows a double.
std::int64_t backoff_ceiling_ms(const backoff_policy& policy, int attempt);

// The jittered delay: the ceiling with its `jitter` fraction scaled by `unit_random` (expected
// in [0, 1); anything else is clamped, NaN reads as 0). Always in
// [ceiling * (1 - jitter), ceiling] and so in [0, max_ms].
std::int64_t backoff_delay_ms(const backoff_policy& policy, int attempt, double unit_random);
// The same with a draw from `rng`.
std::int64_t backoff_delay_ms(const backoff_policy& policy, int attempt, std::mt19937_64& rng);

// The Retry-After, in whole seconds, for clients turned away together (the database out of
// reach or too busy): `mean_s` spread over [0.6, 1.4] x mean_s (at least 1 s) by `unit_random`
// (in [0, 1); clamped), so they do not all come back in the same second. With a fixed value
// they came back in waves after an outage, each wave queueing on the same rows (a black-box
// run). 5 gives 3..7.
int spread_retry_after_s(int mean_s, double unit_random);

// Honours an upstream Retry-After: max(computed_ms, retry_after_ms), capped at max_ms (an
// upstream asking for an hour does not park a task for an hour; the next answer says again).
// Never negative.
std::int64_t apply_retry_after(std::int64_t computed_ms, std::optional<std::int64_t> retry_after_ms,
                               std::int64_t max_ms);

// A Retry-After header value in milliseconds (RFC 9110 section 10.2.3): delta-seconds (decimals
// tolerated: "1.5") or an HTTP-date in any of the three forms recipients must accept
// (IMF-fixdate, RFC 850, asctime), relative to `now_unix_ms`. Without `now_unix_ms` a date
// cannot be resolved and gives nullopt (no hidden clock). nullopt if absent or unparsable; a
// date in the past gives 0; never negative.
std::optional<std::int64_t> parse_retry_after(std::string_view value,
                                              std::optional<std::int64_t> now_unix_ms);

}  // namespace segue::core

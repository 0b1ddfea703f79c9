#pragma once
// A per-provider circuit breaker with a concurrency limit (ARCHITECTURE.md, reliability rules:
// "per-provider circuit breakers"). The clock is a parameter (now_ms, any monotonic
// milliseconds, e.g. steady_clock); thread-safe, as several IO threads share one per provider.
//
// States:
//   closed    calls pass (up to max_concurrency in flight). It opens when
//             - `consecutive_failures` failures follow each other (<= 0 disables this), or
//             - a failure leaves the sliding window (the last window_ms) with at least
//               `min_requests` results and a failure ratio >= `failure_ratio` (<= 0 disables).
//   open      calls are refused until open_until_ms. The first opening lasts open_ms; each
//             re-opening straight from half-open multiplies the previous duration by
//             open_backoff (values below 1 read as 1), capped at max_open_ms (a cap below
//             open_ms reads as open_ms).
//   half_open after the open period: `half_open_probes` calls (at least 1) are admitted as
//             probes. A probe success closes the breaker (counters, window and backoff reset);
//             a probe failure opens it again with the longer duration.
// The window is bucketed (1/10 of window_ms, at most 1 s per bucket): a result stays in it for
// window_ms to window_ms + one bucket. Opening and closing clear the window and the counters.
//
// Results are not tied to the call that acquired the slot (the API carries no ticket):
//   - a result that arrives while open (a call admitted before the breaker opened) only
//     releases its slot;
//   - in half-open, results count as probe results while probes are in flight; others only
//     release their slot.
//
// What callers report (their job, not the breaker's): on_result(false) only for failures that
// say something about the provider's health: transient errors (5xx, connection errors),
// rate_limited (429) and timeouts. Answers that show the provider up and reasoning (rejected,
// quota, credential, a 4xx about our request) are on_result(true): they still release the slot.

#include <cstdint>
#include <deque>
#include <mutex>
#include <string_view>

namespace segue::core {

struct breaker_settings {
    int consecutive_failures = 5;
    double failure_ratio = 0.5;
    int min_requests = 10;
    std::int64_t window_ms = 60000;
    std::int64_t open_ms = 30000;
    double open_backoff = 2.0;
    std::int64_t max_open_ms = 600000;
    int half_open_probes = 1;
    int max_concurrency = 0;  // 0 = unlimited
};

class circuit_breaker {
  public:
    enum class state { closed, open, half_open };

    struct snapshot {
        state st = state::closed;
        int consecutive_failures = 0;
        int window_requests = 0;  // results in the window at now_ms
        int window_failures = 0;
        std::int64_t open_until_ms = 0;  // see open_until_ms()
        int in_flight = 0;
        int times_opened = 0;  // over the breaker's life
    };

    explicit circuit_breaker(breaker_settings settings);
    circuit_breaker(const circuit_breaker&) = delete;
    circuit_breaker& operator=(const circuit_breaker&) = delete;

    // Asks to start a call at `now_ms`: false when open (and not yet time for a probe), when
    // the half-open probes are all in flight, or when max_concurrency calls are in flight. On
    // true the caller MUST call on_result(...) exactly once later.
    bool try_acquire(std::int64_t now_ms);
    // Releases the slot taken by try_acquire and records the outcome (see the top of the file).
    // Without a slot in flight it does nothing.
    void on_result(bool success, std::int64_t now_ms);
    // Gives the slot back without an outcome: the call was never made (the gateway failed
    // before sending it). A half-open probe slot becomes free for the next probe.
    void release();

    // The state at now_ms (open turns half_open once open_until_ms has passed).
    state current(std::int64_t now_ms) const;
    // The end of the current or last open period; 0 while closed.
    std::int64_t open_until_ms() const;
    int in_flight() const;
    snapshot snap(std::int64_t now_ms) const;

  private:
    struct bucket {
        std::int64_t start_ms = 0;
        int requests = 0;
        int failures = 0;
    };

    state state_at(std::int64_t now_ms) const;  // the caller holds mu_
    void record(bool success, std::int64_t now_ms);
    void prune(std::int64_t now_ms);
    void open(std::int64_t now_ms, bool reopen);
    void close();
    void window_counts(std::int64_t now_ms, int& requests, int& failures) const;

    const breaker_settings settings_;
    const std::int64_t bucket_ms_;
    mutable std::mutex mu_;
    state state_ = state::closed;  // open stays open here until try_acquire moves it on
    int consecutive_failures_ = 0;
    std::deque<bucket> window_;
    std::int64_t open_until_ms_ = 0;
    std::int64_t last_open_ms_ = 0;  // the duration of the last opening
    int in_flight_ = 0;
    int probes_in_flight_ = 0;
    int times_opened_ = 0;
};

std::string_view to_string(circuit_breaker::state s) noexcept;

}  // namespace segue::core

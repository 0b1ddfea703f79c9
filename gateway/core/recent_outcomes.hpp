#pragma once
// A provider's recent upstream results (successes and failures of the calls the circuit breaker
// counts), kept in minute buckets for the last hour, so GET /v1/providers can show error rates
// over 5 and 60 minutes. Unlike the breaker's window, opening or closing the circuit clears
// nothing. In memory, per replica. Thread-safe.

#include <array>
#include <cstdint>
#include <mutex>

namespace segue::core {

class recent_outcomes {
  public:
    static constexpr int minutes = 60;

    struct counts {
        std::int64_t requests = 0;
        std::int64_t failures = 0;
    };

    void record(bool success, std::int64_t now_ms);
    // Results within the last `span_minutes` (1..60) whole minutes, the current one included.
    counts over(int span_minutes, std::int64_t now_ms) const;

  private:
    struct bucket {
        std::int64_t minute = -1;  // now_ms / 60000 of the results in it; -1 unused
        counts c;
    };
    mutable std::mutex mu_;
    std::array<bucket, minutes> buckets_{};
};

}  // namespace segue::core

#include "gateway/core/recent_outcomes.hpp"

#include <algorithm>

namespace segue::core {

void recent_outcomes::record(bool success, std::int64_t now_ms) {
    const std::int64_t minute = now_ms / 60000;
    std::lock_guard lk(mu_);
    auto& b = buckets_[static_cast<std::size_t>(minute % minutes)];
    if (b.minute != minute)
        b = {minute, {}};  // the slot held a minute an hour (or more) ago
    ++b.c.requests;
    if (!success)
        ++b.c.failures;
}

recent_outcomes::counts recent_outcomes::over(int span_minutes, std::int64_t now_ms) const {
    const std::int64_t now_minute = now_ms / 60000;
    const std::int64_t first = now_minute - std::clamp(span_minutes, 1, minutes) + 1;
    counts out;
    std::lock_guard lk(mu_);
    for (const auto& b : buckets_)
        if (b.minute >= first && b.minute <= now_minute) {
            out.requests += b.c.requests;
            out.failures += b.c.failures;
        }
    return out;
}

}  // namespace segue::core

#include "gateway/core/breaker.hpp"

#include <algorithm>
#include <cmath>

namespace segue::core {

namespace {

std::int64_t bucket_width(std::int64_t window_ms) {
    return std::clamp<std::int64_t>(window_ms / 10, 1, 1000);
}

std::int64_t floor_to(std::int64_t t, std::int64_t width) {
    std::int64_t q = t / width;
    if (t % width != 0 && t < 0)
        --q;
    return q * width;
}

}  // namespace

std::string_view to_string(circuit_breaker::state s) noexcept {
    switch (s) {
        case circuit_breaker::state::closed:
            return "closed";
        case circuit_breaker::state::open:
            return "open";
        case circuit_breaker::state::half_open:
            return "half_open";
    }
    return "closed";
}

circuit_breaker::circuit_breaker(breaker_settings settings)
    : settings_(settings), bucket_ms_(bucket_width(settings.window_ms)) {}

circuit_breaker::state circuit_breaker::state_at(std::int64_t now_ms) const {
    if (state_ == state::open && now_ms >= open_until_ms_)
        return state::half_open;
    return state_;
}

bool circuit_breaker::try_acquire(std::int64_t now_ms) {
    std::lock_guard lock(mu_);
    if (state_ == state::open) {
        if (now_ms < open_until_ms_)
            return false;
        state_ = state::half_open;
        probes_in_flight_ = 0;
    }
    if (settings_.max_concurrency > 0 && in_flight_ >= settings_.max_concurrency)
        return false;
    if (state_ == state::half_open) {
        if (probes_in_flight_ >= std::max(1, settings_.half_open_probes))
            return false;
        ++probes_in_flight_;
    }
    ++in_flight_;
    return true;
}

void circuit_breaker::on_result(bool success, std::int64_t now_ms) {
    std::lock_guard lock(mu_);
    if (in_flight_ <= 0)
        return;
    --in_flight_;
    switch (state_) {
        case state::open:
            // Admitted before the breaker opened: says nothing new.
            return;
        case state::half_open:
            if (probes_in_flight_ <= 0)
                return;
            --probes_in_flight_;
            if (success)
                close();
            else
                open(now_ms, true);
            return;
        case state::closed:
            record(success, now_ms);
            return;
    }
}

void circuit_breaker::release() {
    std::lock_guard lock(mu_);
    if (in_flight_ <= 0)
        return;
    --in_flight_;
    if (state_ == state::half_open && probes_in_flight_ > 0)
        --probes_in_flight_;
}

void circuit_breaker::record(bool success, std::int64_t now_ms) {
    prune(now_ms);
    const std::int64_t start = floor_to(now_ms, bucket_ms_);
    if (window_.empty() || window_.back().start_ms < start)
        window_.push_back(bucket{start, 0, 0});
    // (A clock that went backwards adds to the newest bucket.)
    bucket& b = window_.back();
    ++b.requests;
    if (success) {
        consecutive_failures_ = 0;
        return;
    }
    ++b.failures;
    ++consecutive_failures_;

    if (settings_.consecutive_failures > 0 &&
        consecutive_failures_ >= settings_.consecutive_failures) {
        open(now_ms, false);
        return;
    }
    if (settings_.failure_ratio > 0 && settings_.window_ms > 0) {
        int requests = 0, failures = 0;
        window_counts(now_ms, requests, failures);
        if (requests >= std::max(1, settings_.min_requests) &&
            static_cast<double>(failures) >= settings_.failure_ratio * requests)
            open(now_ms, false);
    }
}

void circuit_breaker::prune(std::int64_t now_ms) {
    while (!window_.empty() &&
           window_.front().start_ms + bucket_ms_ <= now_ms - settings_.window_ms)
        window_.pop_front();
}

void circuit_breaker::window_counts(std::int64_t now_ms, int& requests, int& failures) const {
    requests = failures = 0;
    for (const bucket& b : window_) {
        if (b.start_ms + bucket_ms_ <= now_ms - settings_.window_ms)
            continue;
        requests += b.requests;
        failures += b.failures;
    }
}

void circuit_breaker::open(std::int64_t now_ms, bool reopen) {
    const std::int64_t first = std::max<std::int64_t>(0, settings_.open_ms);
    const std::int64_t cap = std::max(first, settings_.max_open_ms);
    std::int64_t duration = first;
    if (reopen && last_open_ms_ > 0) {
        const double factor =
            std::isnan(settings_.open_backoff) ? 1.0 : std::max(1.0, settings_.open_backoff);
        const double d = static_cast<double>(last_open_ms_) * factor;
        duration =
            d < static_cast<double>(cap) ? std::max(first, static_cast<std::int64_t>(d)) : cap;
    }
    state_ = state::open;
    open_until_ms_ = now_ms + duration;
    last_open_ms_ = duration;
    ++times_opened_;
    consecutive_failures_ = 0;
    window_.clear();
    probes_in_flight_ = 0;
}

void circuit_breaker::close() {
    state_ = state::closed;
    consecutive_failures_ = 0;
    window_.clear();
    open_until_ms_ = 0;
    last_open_ms_ = 0;
    probes_in_flight_ = 0;
}

circuit_breaker::state circuit_breaker::current(std::int64_t now_ms) const {
    std::lock_guard lock(mu_);
    return state_at(now_ms);
}

std::int64_t circuit_breaker::open_until_ms() const {
    std::lock_guard lock(mu_);
    return open_until_ms_;
}

int circuit_breaker::in_flight() const {
    std::lock_guard lock(mu_);
    return in_flight_;
}

circuit_breaker::snapshot circuit_breaker::snap(std::int64_t now_ms) const {
    std::lock_guard lock(mu_);
    snapshot s;
    s.st = state_at(now_ms);
    s.consecutive_failures = consecutive_failures_;
    window_counts(now_ms, s.window_requests, s.window_failures);
    s.open_until_ms = open_until_ms_;
    s.in_flight = in_flight_;
    s.times_opened = times_opened_;
    return s;
}

}  // namespace segue::core

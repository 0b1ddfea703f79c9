#include "gateway/core/backoff.hpp"

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <string>

#include "gateway/util/http_date.hpp"

namespace segue::core {

namespace {

// Clamps a policy into what the formulas assume: 0 <= initial <= max, multiplier >= 1,
// jitter in [0, 1]. NaN reads as the neutral value.
struct sane_policy {
    std::int64_t initial_ms;
    std::int64_t max_ms;
    double multiplier;
    double jitter;
};

sane_policy sanitize(const backoff_policy& p) {
    sane_policy s{};
    s.max_ms = std::max<std::int64_t>(0, p.max_ms);
    s.initial_ms = std::clamp<std::int64_t>(p.initial_ms, 0, s.max_ms);
    s.multiplier = std::isnan(p.multiplier) || p.multiplier < 1.0 ? 1.0 : p.multiplier;
    s.jitter = std::isnan(p.jitter) ? 0.0 : std::clamp(p.jitter, 0.0, 1.0);
    return s;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
        s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
        s.remove_suffix(1);
    return s;
}

}  // namespace

std::int64_t backoff_ceiling_ms(const backoff_policy& policy, int attempt) {
    const sane_policy p = sanitize(policy);
    if (p.initial_ms == 0 || attempt <= 0)
        return p.initial_ms;
    // In double: multiplier^attempt may be +inf for huge attempts, never NaN (initial > 0 and
    // multiplier >= 1), and the comparison below caps it before any conversion back.
    const double d = static_cast<double>(p.initial_ms) * std::pow(p.multiplier, attempt);
    if (!(d < static_cast<double>(p.max_ms)))
        return p.max_ms;
    // d < max_ms <= INT64_MAX, so the conversion is defined.
    return std::max(p.initial_ms, static_cast<std::int64_t>(d));
}

std::int64_t backoff_delay_ms(const backoff_policy& policy, int attempt, double unit_random) {
    const sane_policy p = sanitize(policy);
    const std::int64_t ceiling = backoff_ceiling_ms(policy, attempt);
    double u = std::isnan(unit_random) ? 0.0 : std::clamp(unit_random, 0.0, 1.0);
    // ceiling * (1 - jitter) + u * ceiling * jitter, as one product so it stays <= ceiling.
    const double x = static_cast<double>(ceiling) * (1.0 - p.jitter + p.jitter * u);
    if (!(x < static_cast<double>(ceiling)))
        return ceiling;
    return std::clamp<std::int64_t>(static_cast<std::int64_t>(std::floor(x)), 0, ceiling);
}

std::int64_t backoff_delay_ms(const backoff_policy& policy, int attempt, std::mt19937_64& rng) {
    // generate_canonical is specified as [0, 1) but some library versions can return 1.0;
    // the clamp in the other overload makes that harmless.
    return backoff_delay_ms(policy, attempt, std::generate_canonical<double, 53>(rng));
}

int spread_retry_after_s(int mean_s, double unit_random) {
    const int lo = std::max(1, static_cast<int>(std::lround(mean_s * 0.6)));
    const int hi = std::max(lo, static_cast<int>(std::lround(mean_s * 1.4)));
    const double u = std::isnan(unit_random) ? 0.0 : std::clamp(unit_random, 0.0, 1.0);
    return std::min(hi, lo + static_cast<int>(u * (hi - lo + 1)));
}

std::int64_t apply_retry_after(std::int64_t computed_ms, std::optional<std::int64_t> retry_after_ms,
                               std::int64_t max_ms) {
    std::int64_t d = computed_ms;
    if (retry_after_ms && *retry_after_ms > d)
        d = *retry_after_ms;
    return std::clamp<std::int64_t>(d, 0, std::max<std::int64_t>(0, max_ms));
}

std::optional<std::int64_t> parse_retry_after(std::string_view value,
                                              std::optional<std::int64_t> now_unix_ms) {
    value = trim(value);
    if (value.empty())
        return std::nullopt;
    if (std::isdigit(static_cast<unsigned char>(value.front()))) {
        double secs = 0;
        auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), secs);
        if (ec != std::errc() || p != value.data() + value.size() || !std::isfinite(secs) ||
            secs < 0)
            return std::nullopt;
        // Absurd values are capped well inside int64 rather than overflowing.
        return static_cast<std::int64_t>(std::llround(std::min(secs * 1000.0, 9.0e18)));
    }
    if (!now_unix_ms)
        return std::nullopt;
    if (const auto at_ms = util::parse_http_date(value))
        return std::max<std::int64_t>(0, *at_ms - *now_unix_ms);
    return std::nullopt;
}

}  // namespace segue::core

#include "gateway/audio/dsp.hpp"

#include <algorithm>
#include <array>
#include <cmath>
#include <limits>
#include <numbers>

namespace segue::audio::detail {

namespace {

constexpr double kPi = std::numbers::pi;

// Offset in (-0.5, 0.5) of the vertex of the parabola through (-1, a), (0, b), (1, c).
double parabolic_offset(double a, double b, double c) {
    const double den = a - 2 * b + c;
    if (std::abs(den) < 1e-12)
        return 0;
    return std::clamp(0.5 * (a - c) / den, -0.5, 0.5);
}

double interp(const std::vector<float>& v, double pos) {
    if (pos < 0)
        return 0;
    const auto i = static_cast<std::size_t>(pos);
    if (i + 1 >= v.size())
        return i < v.size() ? v[i] : 0.0;
    const double f = pos - static_cast<double>(i);
    return v[i] * (1 - f) + v[i + 1] * f;
}

}  // namespace

std::vector<float> onset_envelope(const float* x, std::size_t n, int sample_rate, int hop) {
    if (hop <= 0 || sample_rate <= 0)
        return {};
    const std::size_t nf = n / static_cast<std::size_t>(hop);
    std::vector<float> out(nf, 0.0f);
    if (nf < 2)
        return out;
    const double a_low = 1.0 - std::exp(-2 * kPi * 150.0 / sample_rate);
    const double a_mid = 1.0 - std::exp(-2 * kPi * 2000.0 / sample_rate);
    // Band power smoothed by two one-pole low-passes at 25 Hz: removes the ripple of steady tones
    // beating against each other, which would otherwise look like a stream of tiny onsets.
    const double a_env = 1.0 - std::exp(-2 * kPi * 25.0 / sample_rate);
    double lp_low = 0, lp_mid = 0;
    std::array<double, 3> s1{}, s2{}, prev{};
    for (std::size_t f = 0; f < nf; ++f) {
        const float* p = x + f * static_cast<std::size_t>(hop);
        for (int i = 0; i < hop; ++i) {
            const double s = p[i];
            lp_low += a_low * (s - lp_low);
            lp_mid += a_mid * (s - lp_mid);
            const double bands[3] = {lp_low, lp_mid - lp_low, s - lp_mid};
            for (int b = 0; b < 3; ++b) {
                s1[b] += a_env * (bands[b] * bands[b] - s1[b]);
                s2[b] += a_env * (s1[b] - s2[b]);
            }
        }
        double flux = 0;
        for (int b = 0; b < 3; ++b) {
            const double c = std::log1p(1000.0 * std::sqrt(std::max(0.0, s2[b])));
            if (f > 0)
                flux += std::max(0.0, c - prev[b]);
            prev[b] = c;
        }
        out[f] = static_cast<float>(flux);
    }
    return out;
}

beat_grid estimate_beats(const float* mono, std::size_t n, int sample_rate) {
    beat_grid grid;
    if (sample_rate <= 0 || mono == nullptr)
        return grid;
    const int hop = std::max(1, static_cast<int>(std::lround(sample_rate / 200.0)));
    const double rate = static_cast<double>(sample_rate) / hop;  // envelope frames per second
    const std::vector<float> onset = onset_envelope(mono, n, sample_rate, hop);
    const long nf = static_cast<long>(onset.size());
    if (nf < static_cast<long>(rate * 2.5))
        return grid;

    // Remove the local mean (1 s window) so the autocorrelation sees periodicity, not loudness.
    std::vector<double> prefix(static_cast<std::size_t>(nf) + 1, 0.0);
    for (long f = 0; f < nf; ++f)
        prefix[f + 1] = prefix[f] + onset[f];
    const long half = std::max(1L, std::lround(rate * 0.5));
    std::vector<double> d(static_cast<std::size_t>(nf));
    double r0 = 0;
    for (long f = 0; f < nf; ++f) {
        const long a = std::max(0L, f - half), b = std::min(nf, f + half + 1);
        d[f] = onset[f] - (prefix[b] - prefix[a]) / static_cast<double>(b - a);
        r0 += d[f] * d[f];
    }
    r0 /= static_cast<double>(nf);
    if (r0 <= 1e-12)
        return grid;

    const long usable = static_cast<long>(0.6 * static_cast<double>(nf));
    std::vector<double> memo(static_cast<std::size_t>(usable) + 2,
                             std::numeric_limits<double>::quiet_NaN());
    auto r = [&](long lag) -> double {
        if (lag < 0 || lag > usable)
            return 0;
        double& slot = memo[static_cast<std::size_t>(lag)];
        if (std::isnan(slot)) {
            double s = 0;
            for (long f = 0; f + lag < nf; ++f)
                s += d[f] * d[f + lag];
            slot = s / static_cast<double>(nf - lag) / r0;
        }
        return slot;
    };

    const long lag_lo = static_cast<long>(std::ceil(rate * 60.0 / 180.0));
    const long lag_hi = static_cast<long>(std::floor(rate * 60.0 / 60.0));
    double best_score = -std::numeric_limits<double>::infinity();
    long best_lag = 0;
    for (long lag = lag_lo; lag <= lag_hi && lag <= usable; ++lag) {
        double s = 0;
        int count = 0;
        for (int m = 1; m <= 4; ++m) {
            // The lag is an integer, the period is not: m * lag may miss the m-th peak by up to
            // m / 2 frames, so take the best value within that distance.
            const long centre = m * lag, reach = m / 2;
            if (centre + reach > usable)
                break;
            double peak = r(centre);
            for (long k = centre - reach; k <= centre + reach; ++k)
                peak = std::max(peak, r(k));
            s += peak;
            ++count;
        }
        if (count == 0)
            continue;
        const double bpm = 60.0 * rate / static_cast<double>(lag);
        const double octave = std::log2(bpm / 120.0);
        const double score = s / count * std::exp(-0.5 * octave * octave);
        if (score > best_score) {
            best_score = score;
            best_lag = lag;
        }
    }
    if (best_lag == 0)
        return grid;

    double period = static_cast<double>(best_lag) +
                    parabolic_offset(r(best_lag - 1), r(best_lag), r(best_lag + 1));
    const long pl = std::lround(period);
    const double confidence = std::max({r(pl - 1), r(pl), r(pl + 1)});
    // Significance: white noise gives |r| ~ 1/sqrt(frames) at every lag.
    if (confidence < std::max(0.1, 5.0 / std::sqrt(static_cast<double>(nf))))
        return grid;

    // Refine period and phase together: the grid whose beats collect the most onset strength
    // (mean over the beats in the window). Over dozens of beats this pins the period down far
    // better than the autocorrelation peak, and does not drift on noisy long-lag peaks.
    std::vector<float> smooth(onset.size());
    for (long f = 0; f < nf; ++f)
        smooth[f] = 0.25f * onset[std::max(0L, f - 1)] + 0.5f * onset[f] +
                    0.25f * onset[std::min(nf - 1, f + 1)];
    auto comb = [&](double p, double phase) {
        double s = 0;
        int count = 0;
        for (double pos = phase; pos < static_cast<double>(nf) - 1; pos += p, ++count)
            s += interp(smooth, pos);
        return count > 0 ? s / count : 0.0;
    };
    double best_period = period, best_phase = 0, best_mean = -1;
    auto search = [&](double p_lo, double p_hi, double p_step, double ph_step) {
        const double centre_phase = best_phase;
        const bool local = best_mean >= 0;
        for (double p = p_lo; p <= p_hi + 1e-9; p += p_step) {
            const double ph_lo = local ? centre_phase - 2 : 0, ph_hi = local ? centre_phase + 2 : p;
            for (double ph = ph_lo; ph < ph_hi; ph += ph_step) {
                const double phase = std::fmod(ph + p, p);
                const double m = comb(p, phase);
                if (m > best_mean) {
                    best_mean = m;
                    best_period = p;
                    best_phase = phase;
                }
            }
        }
    };
    search(period * 0.97, period * 1.03, period * 0.0005, 0.5);
    const double coarse = best_period;
    search(coarse * 0.9994, coarse * 1.0006, coarse * 0.00005, 0.125);
    period = best_period;

    grid.bpm = 60.0 * rate / period;
    grid.period = period * hop;
    grid.phase = best_phase * hop;
    grid.confidence = confidence;
    return grid;
}

long best_alignment(const float* mono, long len, long fixed, long moving, long radius,
                    long half_window) {
    if (mono == nullptr || len <= 0 || fixed < 0 || fixed > len || moving < 0 || moving > len)
        return 0;
    const long dlo = std::max(-radius, -moving);
    const long dhi = std::min(radius, len - 1 - moving);
    if (dhi < dlo)
        return 0;
    const long jlo = std::max({-half_window, -fixed, -(moving + dlo)});
    const long jhi = std::min({half_window, len - fixed, len - (moving + dhi)});
    if (jhi - jlo < 8)
        return 0;
    double ea = 0;
    for (long j = jlo; j < jhi; ++j)
        ea += static_cast<double>(mono[fixed + j]) * mono[fixed + j];
    if (ea <= 1e-12)
        return 0;
    // Energy of the moving window, slid incrementally.
    double eb = 0;
    for (long j = jlo; j < jhi; ++j)
        eb += static_cast<double>(mono[moving + dlo + j]) * mono[moving + dlo + j];
    double best = -std::numeric_limits<double>::infinity();
    long best_d = 0;
    const double r = std::max(1L, radius);
    for (long dd = dlo; dd <= dhi; ++dd) {
        if (dd > dlo) {
            const double out = mono[moving + dd - 1 + jlo];
            const double in = mono[moving + dd + jhi - 1];
            eb += in * in - out * out;
        }
        double dot = 0;
        const float* a = mono + fixed;
        const float* b = mono + moving + dd;
        for (long j = jlo; j < jhi; ++j)
            dot += static_cast<double>(a[j]) * b[j];
        const double norm = std::sqrt(ea * std::max(eb, 1e-12));
        const double score = dot / norm - 0.1 * (dd / r) * (dd / r);
        if (score > best) {
            best = score;
            best_d = dd;
        }
    }
    return best_d;
}

resampler::resampler(int in_rate, int out_rate, int channels)
    : channels_(std::max(1, channels)),
      step_(static_cast<double>(in_rate) / std::max(1, out_rate)) {
    const double cutoff = 0.5 * std::min(1.0, 1.0 / step_) * 0.94;  // cycles per input sample
    constexpr double kZeroCrossings = 12;
    half_width_ = kZeroCrossings / (2 * cutoff);
    const auto size = static_cast<std::size_t>(half_width_ * table_res_) + 3;
    table_.resize(size);
    for (std::size_t i = 0; i < size; ++i) {
        const double dist = static_cast<double>(i) / table_res_;
        if (dist >= half_width_) {
            table_[i] = 0;
            continue;
        }
        const double x = 2 * cutoff * dist;
        const double sinc = x == 0 ? 1.0 : std::sin(kPi * x) / (kPi * x);
        const double w = dist / half_width_;
        const double blackman = 0.42 + 0.5 * std::cos(kPi * w) + 0.08 * std::cos(2 * kPi * w);
        table_[i] = static_cast<float>(2 * cutoff * sinc * blackman);
    }
}

double resampler::kernel(double d) const {
    const double pos = std::abs(d) * table_res_;
    const auto i = static_cast<std::size_t>(pos);
    if (i + 1 >= table_.size())
        return 0;
    const double f = pos - static_cast<double>(i);
    return table_[i] * (1 - f) + table_[i + 1] * f;
}

void resampler::process(const float* in, std::size_t frames, std::vector<float>& out) {
    hist_.insert(hist_.end(), in, in + frames * static_cast<std::size_t>(channels_));
    input_frames_ += static_cast<long long>(frames);
    run(out, false);
}

void resampler::flush(std::vector<float>& out) {
    run(out, true);
}

void resampler::run(std::vector<float>& out, bool final) {
    const long long target = std::llround(static_cast<double>(input_frames_) / step_);
    const long long have = base_ + static_cast<long long>(hist_.size()) / channels_;
    std::vector<double> acc(static_cast<std::size_t>(channels_));
    for (;;) {
        const double t = static_cast<double>(produced_) * step_;
        const auto last = static_cast<long long>(std::floor(t + half_width_));
        if (final ? produced_ >= target : last >= have)
            break;
        std::fill(acc.begin(), acc.end(), 0.0);
        for (long long k = std::max(0LL, static_cast<long long>(std::ceil(t - half_width_)));
             k <= last && k < have; ++k) {
            const double w = kernel(t - static_cast<double>(k));
            const float* frame = hist_.data() + (k - base_) * channels_;
            for (int c = 0; c < channels_; ++c)
                acc[c] += w * frame[c];
        }
        for (int c = 0; c < channels_; ++c)
            out.push_back(static_cast<float>(acc[c]));
        ++produced_;
    }
    // Drop input no future output needs.
    const auto keep_from =
        static_cast<long long>(std::floor(static_cast<double>(produced_) * step_ - half_width_)) -
        1;
    if (keep_from > base_) {
        const long long drop = std::min(keep_from, have) - base_;
        hist_.erase(hist_.begin(), hist_.begin() + drop * channels_);
        base_ += drop;
    }
}

}  // namespace segue::audio::detail

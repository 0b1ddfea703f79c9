#include "gateway/audio/verify.hpp"

#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <memory>
#include <numbers>
#include <vector>

#include "gateway/audio/audio.hpp"

namespace segue::audio {

namespace {

constexpr double kSilentPeakDbfs = -60;
constexpr double kSpliceWindow = 0.5;    // seconds on each side of the splice point
constexpr double kSpliceJumpDb = 10;     // level jump that counts as a discontinuity
constexpr double kSpliceBrightness = 3;  // brightness ratio (either way) that counts

struct sf_closer {
    void operator()(SNDFILE* f) const {
        if (f != nullptr)
            sf_close(f);
    }
};

// A direct-form I biquad.
struct biquad {
    double b0 = 1, b1 = 0, b2 = 0, a1 = 0, a2 = 0;
    double x1 = 0, x2 = 0, y1 = 0, y2 = 0;
    double step(double x) {
        const double y = b0 * x + b1 * x1 + b2 * x2 - a1 * y1 - a2 * y2;
        x2 = x1;
        x1 = x;
        y2 = y1;
        y1 = y;
        return y;
    }
};

// The two stages of the BS.1770 K-weighting filter for any sample rate (the published 48 kHz
// coefficients re-derived from their analog prototypes, as libebur128 does).
std::pair<biquad, biquad> k_weighting(double fs) {
    biquad shelf, hp;
    {
        const double f0 = 1681.974450955533, gain_db = 3.999843853973347, q = 0.7071752369554196;
        const double k = std::tan(std::numbers::pi * f0 / fs);
        const double vh = std::pow(10.0, gain_db / 20.0);
        const double vb = std::pow(vh, 0.4996667741545416);
        const double a0 = 1.0 + k / q + k * k;
        shelf.b0 = (vh + vb * k / q + k * k) / a0;
        shelf.b1 = 2.0 * (k * k - vh) / a0;
        shelf.b2 = (vh - vb * k / q + k * k) / a0;
        shelf.a1 = 2.0 * (k * k - 1.0) / a0;
        shelf.a2 = (1.0 - k / q + k * k) / a0;
    }
    {
        const double f0 = 38.13547087602444, q = 0.5003270373238773;
        const double k = std::tan(std::numbers::pi * f0 / fs);
        const double a0 = 1.0 + k / q + k * k;
        hp.b0 = 1.0;
        hp.b1 = -2.0;
        hp.b2 = 1.0;
        hp.a1 = 2.0 * (k * k - 1.0) / a0;
        hp.a2 = (1.0 - k / q + k * k) / a0;
    }
    return {shelf, hp};
}

double db(double power_ratio) {
    return 10.0 * std::log10(power_ratio);
}

// Gated integrated loudness from the K-weighted energy of consecutive 100 ms segments.
std::optional<double> integrated_lufs(const std::vector<double>& segment_energy,
                                      double segment_frames) {
    if (segment_energy.size() < 4)
        return std::nullopt;
    std::vector<double> blocks;  // mean square of each 400 ms block (75 % overlap)
    for (std::size_t i = 0; i + 4 <= segment_energy.size(); ++i)
        blocks.push_back((segment_energy[i] + segment_energy[i + 1] + segment_energy[i + 2] +
                          segment_energy[i + 3]) /
                         (4 * segment_frames));
    auto loud = [](double z) { return -0.691 + db(z); };
    double sum = 0;
    int n = 0;
    for (double z : blocks)
        if (z > 0 && loud(z) > -70)
            sum += z, ++n;
    if (n == 0)
        return std::nullopt;
    const double relative = loud(sum / n) - 10;
    sum = 0;
    n = 0;
    for (double z : blocks)
        if (z > 0 && loud(z) > -70 && loud(z) > relative)
            sum += z, ++n;
    if (n == 0)
        return std::nullopt;
    return loud(sum / n);
}

void check_splice(const std::vector<float>& before, const std::vector<float>& after,
                  splice_check& s) {
    auto stats = [](const std::vector<float>& v, double& rms, double& diff_rms) {
        double e = 0, d = 0;
        for (std::size_t i = 0; i < v.size(); ++i) {
            e += double(v[i]) * v[i];
            if (i > 0)
                d += (double(v[i]) - v[i - 1]) * (double(v[i]) - v[i - 1]);
        }
        rms = std::sqrt(e / std::max<std::size_t>(1, v.size()));
        diff_rms = std::sqrt(d / std::max<std::size_t>(1, v.size()));
    };
    double rb = 0, db_ = 0, ra = 0, da = 0;
    stats(before, rb, db_);
    stats(after, ra, da);
    constexpr double floor = 1e-5;  // -100 dBFS: silence on both sides compares equal
    s.level_before_dbfs = 20 * std::log10(std::max(rb, floor));
    s.level_after_dbfs = 20 * std::log10(std::max(ra, floor));
    s.level_jump_db = s.level_after_dbfs - s.level_before_dbfs;
    const double bb = rb > floor ? db_ / rb : 0, ba = ra > floor ? da / ra : 0;
    s.brightness_ratio = bb > 0 && ba > 0 ? ba / bb : 1;
    s.checked = true;
}

verification verify_impl(const std::string& path, const verify_options& o) {
    verification v;
    const auto p = probe(path);
    if (!p.ok) {
        v.error = p.error;
        v.flags.push_back("undecodable");
        return v;
    }
    v.format = p.format;
    SF_INFO info{};
    std::unique_ptr<SNDFILE, sf_closer> f(sf_open(path.c_str(), SFM_READ, &info));
    if (!f || info.channels <= 0 || info.samplerate <= 0) {
        v.error = "not a decodable audio file: " + std::string(sf_strerror(nullptr));
        v.flags.push_back("undecodable");
        return v;
    }
    v.sample_rate = info.samplerate;
    v.channels = info.channels;
    v.header_frames = info.frames < SF_COUNT_MAX / 2 ? info.frames : 0;
    const int ch = info.channels;
    const double fs = info.samplerate;

    std::vector<std::pair<biquad, biquad>> filters(static_cast<std::size_t>(ch), k_weighting(fs));
    const auto segment = static_cast<std::int64_t>(std::llround(fs / 10));  // 100 ms
    std::vector<double> segments;
    double seg_energy = 0;
    std::int64_t seg_fill = 0;
    double peak = 0;

    // The splice windows, as mono.
    std::int64_t splice_frame = -1, window = 0;
    if (o.splice_at && *o.splice_at > 0) {
        splice_frame = std::llround(*o.splice_at * fs);
        window = std::llround(std::min(kSpliceWindow, *o.splice_at) * fs);
    }
    std::vector<float> before, after;

    constexpr sf_count_t block = 4096;
    std::vector<float> buf(static_cast<std::size_t>(block * ch));
    std::int64_t pos = 0;
    for (;;) {
        const sf_count_t got = sf_readf_float(f.get(), buf.data(), block);
        if (got <= 0)
            break;
        for (sf_count_t i = 0; i < got; ++i) {
            double e = 0, mono = 0;
            for (int c = 0; c < ch; ++c) {
                float x = buf[static_cast<std::size_t>(i * ch + c)];
                if (!std::isfinite(x))
                    x = 0;
                peak = std::max(peak, double(std::fabs(x)));
                mono += x;
                auto& [shelf, hp] = filters[static_cast<std::size_t>(c)];
                const double y = hp.step(shelf.step(x));
                e += y * y;
            }
            seg_energy += e;
            if (++seg_fill == segment) {
                segments.push_back(seg_energy);
                seg_energy = 0;
                seg_fill = 0;
            }
            const std::int64_t n = pos + i;
            if (splice_frame >= 0) {
                if (n >= splice_frame - window && n < splice_frame)
                    before.push_back(static_cast<float>(mono / ch));
                else if (n >= splice_frame && n < splice_frame + window)
                    after.push_back(static_cast<float>(mono / ch));
            }
        }
        pos += got;
    }
    v.frames = pos;
    if (pos == 0) {
        v.error = "not a decodable audio file: no audio frames";
        v.flags.push_back("undecodable");
        return v;
    }
    v.ok = true;
    v.duration = static_cast<double>(pos) / fs;
    if (peak > 0)
        v.peak_dbfs = 20 * std::log10(peak);
    v.loudness_lufs = integrated_lufs(segments, static_cast<double>(segment));

    if (!v.peak_dbfs || *v.peak_dbfs < kSilentPeakDbfs)
        v.flags.push_back("silent");
    bool truncated = false;
    // MP3 headers count whole MPEG frames, decoders drop the encoder delay and padding: allow
    // for a few frames of difference.
    const std::int64_t slack = std::max<std::int64_t>(4096, v.header_frames / 100);
    if (v.header_frames > 0 && v.frames + slack < v.header_frames)
        truncated = true;
    if (o.reported_duration && *o.reported_duration > 0 &&
        v.duration < *o.reported_duration - std::max(1.0, 0.05 * *o.reported_duration))
        truncated = true;
    if (truncated)
        v.flags.push_back("truncated");
    if (o.expected_duration && *o.expected_duration > 0 &&
        std::fabs(v.duration - *o.expected_duration) > std::max(2.0, 0.1 * *o.expected_duration))
        v.flags.push_back("duration_mismatch");
    if (splice_frame >= 0 && !before.empty() && !after.empty()) {
        v.splice.at = *o.splice_at;
        check_splice(before, after, v.splice);
        if (std::fabs(v.splice.level_jump_db) > kSpliceJumpDb ||
            v.splice.brightness_ratio > kSpliceBrightness ||
            v.splice.brightness_ratio < 1 / kSpliceBrightness)
            v.flags.push_back("splice_discontinuity");
    }
    return v;
}

}  // namespace

verification verify(const std::string& path, const verify_options& options) {
    try {
        return verify_impl(path, options);
    } catch (const std::exception& e) {
        verification v;
        v.error = std::string("verification failed: ") + e.what();
        v.flags.push_back("undecodable");
        return v;
    } catch (...) {
        verification v;
        v.error = "verification failed";
        v.flags.push_back("undecodable");
        return v;
    }
}

}  // namespace segue::audio

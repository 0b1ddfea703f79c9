// write_test_song: a deterministic synthetic song for tests and benchmarks.

#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <numbers>
#include <string>
#include <vector>

#include "gateway/audio/audio.hpp"

namespace segue::audio {

namespace {

constexpr double kTwoPi = 2 * std::numbers::pi;

std::uint32_t hash32(std::uint64_t x) {
    x ^= x >> 33;
    x *= 0xff51afd7ed558ccdULL;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ULL;
    x ^= x >> 33;
    return static_cast<std::uint32_t>(x);
}

// Deterministic white noise in [-1, 1] as a function of the sample index.
double noise(long long n) {
    return hash32(static_cast<std::uint64_t>(n) * 0x9E3779B97F4A7C15ULL + 1) / 2147483647.5 - 1.0;
}

double midi_hz(double note) {
    return 440.0 * std::pow(2.0, (note - 69.0) / 12.0);
}

// Event envelope: linear attack over `attack` seconds, exponential decay, and a smoothstep taper to
// exactly 0 between 0.6 and 0.8 s after the onset (so no event ever stops with a jump).
constexpr double kEventSeconds = 0.8;

double taper(double tau) {
    if (tau <= 0.6)
        return 1;
    const double x = std::min(1.0, (tau - 0.6) / 0.2);
    return 1 - x * x * (3 - 2 * x);
}

// Renders blocks of the song; oscillators and decays run as recurrences (a handful of multiplies
// per sample and voice), which keeps a 3-minute song at a fraction of a second.
class synth {
  public:
    synth(int sample_rate, double bpm) : sr_(sample_rate), eighth_(sample_rate * 30.0 / bpm) {}

    // Adds frames [start, start + n) to l and r (which the caller zeroes).
    void render(long long start, long long n, double* l, double* r) const {
        const long long end = start + n;
        const double life = kEventSeconds * sr_;
        const auto first = std::max(
            0LL, static_cast<long long>(std::floor((static_cast<double>(start) - life) / eighth_)));
        const auto last =
            static_cast<long long>(std::floor(static_cast<double>(end - 1) / eighth_));
        for (long long e = first; e <= last; ++e) {
            const double onset = static_cast<double>(e) * eighth_;
            const long long a = std::max(start, static_cast<long long>(std::ceil(onset)));
            const long long b = std::min(end, static_cast<long long>(std::ceil(onset + life)));
            if (a >= b)
                continue;
            span s{l + (a - start), r + (a - start), b - a, (static_cast<double>(a) - onset) / sr_,
                   a};
            const long long beat = e / 2;
            const long long bar = beat / 4;
            const bool on_beat = e % 2 == 0;
            noise_voice(s, 0.045 * 0.5 * 0.4, 0.045 * 0.5 * 0.6, 0.0005, 0.018, true, 0);  // hat
            const double bass_hz = midi_hz(kRoots[bar % 4] - 12);
            const double bass_gain = on_beat ? 0.22 : 0.12;
            tone_voice(s, bass_gain, bass_gain, 0.004, 0.14, bass_hz, 0.25, 2);
            if (!on_beat)
                continue;
            kick(s);
            if (beat % 4 == 1 || beat % 4 == 3) {  // snare on 2 and 4
                noise_voice(s, 0.14 * 0.6, 0.14 * 0.4, 0.0015, 0.07, false, 7777777);
                tone_voice(s, 0.08 * 0.6, 0.08 * 0.4, 0.0015, 0.05, 185, 0, 1);
            }
            // Melody: one note per beat chosen by a hash of the beat (never repeats as a loop).
            const std::uint32_t h = hash32(static_cast<std::uint64_t>(beat) + 0x5EED);
            if (h % 6 != 0) {
                const double hz =
                    midi_hz(69 + kScale[(h >> 8) % 7] + ((h >> 16) % 3 == 0 ? 12 : 0));
                tone_voice(s, 0.1 * 0.7, 0.1 * 0.3, 0.005, 0.25, hz, 0.3, 3);
            }
        }
        pad(start, n, l, r);
    }

  private:
    struct span {
        double* l;
        double* r;
        long long n;      // samples
        double tau0;      // seconds since the onset at the first sample
        long long first;  // absolute index of the first sample
    };

    // Partial 1 plus `h_amp` times partial `h`, enveloped.
    void tone_voice(const span& s, double gl, double gr, double attack, double decay, double hz,
                    double h_amp, int h) const {
        const double dt = 1.0 / sr_;
        double env = std::exp(-s.tau0 / decay);
        const double k = std::exp(-dt / decay);
        const double w1 = kTwoPi * hz, wh = kTwoPi * hz * h;
        double s1 = std::sin(w1 * s.tau0), c1 = std::cos(w1 * s.tau0);
        double sh = std::sin(wh * s.tau0), ch = std::cos(wh * s.tau0);
        const double rs1 = std::sin(w1 * dt), rc1 = std::cos(w1 * dt);
        const double rsh = std::sin(wh * dt), rch = std::cos(wh * dt);
        double tau = s.tau0;
        for (long long i = 0; i < s.n; ++i, tau += dt) {
            const double g = env * (tau < attack ? tau / attack : 1.0) * taper(tau);
            const double v = g * (s1 + h_amp * sh);
            s.l[i] += gl * v;
            s.r[i] += gr * v;
            const double ns1 = s1 * rc1 + c1 * rs1;
            c1 = c1 * rc1 - s1 * rs1;
            s1 = ns1;
            const double nsh = sh * rch + ch * rsh;
            ch = ch * rch - sh * rsh;
            sh = nsh;
            env *= k;
        }
    }

    void noise_voice(const span& s, double gl, double gr, double attack, double decay,
                     bool high_pass, long long salt) const {
        const double dt = 1.0 / sr_;
        double env = std::exp(-s.tau0 / decay);
        const double k = std::exp(-dt / decay);
        double tau = s.tau0;
        for (long long i = 0; i < s.n; ++i, tau += dt) {
            const long long idx = s.first + i + salt;
            const double x = high_pass ? noise(idx) - noise(idx - 1) : noise(idx);
            const double v = env * (tau < attack ? tau / attack : 1.0) * taper(tau) * x;
            s.l[i] += gl * v;
            s.r[i] += gr * v;
            env *= k;
        }
    }

    // A decaying sine sweep from 135 Hz down to 45 Hz.
    void kick(const span& s) const {
        const double dt = 1.0 / sr_;
        double env = std::exp(-s.tau0 / 0.12), sweep = std::exp(-s.tau0 / 0.04);
        const double k = std::exp(-dt / 0.12), ks = std::exp(-dt / 0.04);
        double tau = s.tau0;
        for (long long i = 0; i < s.n; ++i, tau += dt) {
            const double v = 0.55 * env * (tau < 0.001 ? tau / 0.001 : 1.0) * taper(tau) *
                             std::sin(kTwoPi * (45 * tau + 90 * 0.04 * (1 - sweep)));
            s.l[i] += v;
            s.r[i] += v;
            env *= k;
            sweep *= ks;
        }
    }

    // The bar's triad, fading in and out within the bar (continuous at bar lines).
    void pad(long long start, long long n, double* l, double* r) const {
        const double bar_len = 8 * eighth_;
        const double dt = 1.0 / sr_;
        long long i = 0;
        while (i < n) {
            const long long pos = start + i;
            const auto bar = static_cast<long long>(std::floor(static_cast<double>(pos) / bar_len));
            const auto bar_end =
                static_cast<long long>(std::ceil(static_cast<double>(bar + 1) * bar_len));
            const long long seg = std::max(1LL, std::min(n - i, bar_end - pos));
            const double bar_seconds = bar_len / sr_;
            const double in_bar =
                (static_cast<double>(pos) - static_cast<double>(bar) * bar_len) / sr_;
            const double t0 = static_cast<double>(pos) / sr_;
            for (int v = 0; v < 3; ++v) {
                const double hz = midi_hz(kRoots[bar % 4] + kTriad[bar % 4][v]);
                for (int side = 0; side < 2; ++side) {
                    const double w = kTwoPi * hz * (side == 0 ? 0.997 : 1.003);
                    double sn = std::sin(w * t0), cs = std::cos(w * t0);
                    const double rs = std::sin(w * dt), rc = std::cos(w * dt);
                    double* out = (side == 0 ? l : r) + i;
                    double tb = in_bar;
                    for (long long j = 0; j < seg; ++j, tb += dt) {
                        const double env =
                            std::max(0.0, std::min({1.0, tb / 0.05, (bar_seconds - tb) / 0.05}));
                        out[j] += 0.045 * env * sn;
                        const double ns = sn * rc + cs * rs;
                        cs = cs * rc - sn * rs;
                        sn = ns;
                    }
                }
            }
            i += seg;
        }
    }

    static constexpr int kRoots[4] = {57, 53, 48, 55};  // A, F, C, G
    static constexpr int kTriad[4][3] = {{0, 3, 7}, {0, 4, 7}, {0, 4, 7}, {0, 4, 7}};
    static constexpr int kScale[7] = {0, 2, 3, 5, 7, 8, 10};  // A natural minor

    double sr_;
    double eighth_;  // samples per eighth note
};

bool mp3_rate(int sr) {
    for (int r : {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
        if (r == sr)
            return true;
    return false;
}

}  // namespace

bool write_test_song(const std::string& path, double seconds, int sample_rate, int channels,
                     double bpm, const std::string& format, double gain) {
    try {
        if (!(seconds > 0 && seconds <= 3600) || sample_rate < 8000 || sample_rate > 384000 ||
            channels < 1 || channels > 8 || !(bpm >= 30 && bpm <= 300) || !(gain >= 0 && gain <= 1))
            return false;
        SF_INFO info{};
        info.samplerate = sample_rate;
        info.channels = channels;
        if (format == "wav") {
            info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
        } else if (format == "flac") {
            info.format = SF_FORMAT_FLAC | SF_FORMAT_PCM_16;
        } else if (format == "mp3") {
            if (channels > 2 || !mp3_rate(sample_rate))
                return false;
            info.format = SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III;
        } else if (format == "ogg") {
            info.format = SF_FORMAT_OGG | SF_FORMAT_VORBIS;
        } else {
            return false;
        }
        if (sf_format_check(&info) == 0)
            return false;
        SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
        if (f == nullptr)
            return false;
        sf_command(f, SFC_SET_CLIPPING, nullptr, SF_TRUE);
        const synth s(sample_rate, bpm);
        const long long total = std::llround(seconds * sample_rate);
        constexpr long long kBlock = 4096;
        std::vector<float> buf(static_cast<std::size_t>(kBlock * channels));
        std::vector<double> left(kBlock), right(kBlock);
        bool ok = true;
        for (long long pos = 0; pos < total && ok; pos += kBlock) {
            const long long n = std::min(kBlock, total - pos);
            std::fill(left.begin(), left.end(), 0.0);
            std::fill(right.begin(), right.end(), 0.0);
            s.render(pos, n, left.data(), right.data());
            for (long long i = 0; i < n; ++i) {
                const double l = 0.62 * gain * left[i], r = 0.62 * gain * right[i];
                for (int c = 0; c < channels; ++c) {
                    const double v = channels == 1 ? 0.5 * (l + r) : (c % 2 == 0 ? l : r);
                    buf[static_cast<std::size_t>(i * channels + c)] = static_cast<float>(v);
                }
            }
            ok = sf_writef_float(f, buf.data(), n) == n;
        }
        ok = sf_close(f) == 0 && ok;
        if (!ok)
            std::remove(path.c_str());
        return ok;
    } catch (...) {
        return false;
    }
}

}  // namespace segue::audio

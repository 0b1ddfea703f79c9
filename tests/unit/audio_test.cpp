#include <gtest/gtest.h>
#include <sndfile.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <filesystem>
#include <fstream>
#include <random>
#include <string>
#include <thread>
#include <vector>

#include "gateway/audio/audio.hpp"
#include "gateway/audio/dsp.hpp"
#include "tests/support/process.hpp"

namespace fs = std::filesystem;
namespace au = segue::audio;

namespace {

// Whole file through libsndfile's int interface (full-scale 32-bit for every PCM width).
struct pcm {
    bool ok = false;
    int sr = 0;
    int ch = 0;
    long long frames = 0;
    int format = 0;
    std::vector<int> s;  // interleaved

    double at(long long frame, int c) const {
        return s[static_cast<std::size_t>(frame * ch + c)] / 2147483648.0;
    }
};

pcm read_pcm(const std::string& path) {
    pcm p;
    SF_INFO info{};
    SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
    if (f == nullptr)
        return p;
    p.sr = info.samplerate;
    p.ch = info.channels;
    p.format = info.format;
    std::vector<int> buf(static_cast<std::size_t>(4096 * info.channels));
    for (sf_count_t got; (got = sf_readf_int(f, buf.data(), 4096)) > 0;)
        p.s.insert(p.s.end(), buf.begin(), buf.begin() + got * info.channels);
    sf_close(f);
    p.frames = static_cast<long long>(p.s.size()) / p.ch;
    p.ok = p.frames > 0;
    return p;
}

// Largest |x[n] - x[n-1]| over frames [a, b), any channel.
double max_step(const pcm& p, long long a, long long b) {
    double m = 0;
    for (long long n = std::max(1LL, a); n < std::min(b, p.frames); ++n)
        for (int c = 0; c < p.ch; ++c)
            m = std::max(m, std::abs(p.at(n, c) - p.at(n - 1, c)));
    return m;
}

// Quantile q of |x[n] - x[n-1]| over frames [a, b).
double step_quantile(const pcm& p, long long a, long long b, double q) {
    std::vector<double> d;
    for (long long n = std::max(1LL, a); n < std::min(b, p.frames); ++n)
        for (int c = 0; c < p.ch; ++c)
            d.push_back(std::abs(p.at(n, c) - p.at(n - 1, c)));
    if (d.empty())
        return 0;
    auto k = static_cast<std::size_t>(q * static_cast<double>(d.size() - 1));
    std::nth_element(d.begin(), d.begin() + static_cast<long>(k), d.end());
    return d[k];
}

bool tempo_matches(double estimate, double bpm) {
    for (double m : {1.0, 2.0, 0.5, 1.5, 2.0 / 3.0})
        if (std::abs(estimate - bpm * m) <= 0.03 * bpm * m)
            return true;
    return false;
}

class AudioTest : public ::testing::Test {
  protected:
    void SetUp() override {
        const auto* info = ::testing::UnitTest::GetInstance()->current_test_info();
        dir_ = fs::temp_directory_path() / ("segue_audio_" + std::to_string(::getpid()) + "_" +
                                            info->test_suite_name() + "_" + info->name());
        fs::remove_all(dir_);
        fs::create_directories(dir_);
    }
    void TearDown() override {
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }
    std::string path(const std::string& name) const { return (dir_ / name).string(); }

    // Extends and checks the invariants every successful extension has: the WAV has the input's
    // rate/channels and length extend_after + length, its prefix is bit-identical to the (PCM)
    // input, the MP3 decodes to the same duration.
    struct outcome {
        au::extend_result r;
        pcm in, wav, mp3;
        long long cut = 0;
    };
    outcome extend_checked(const std::string& input, const au::extend_options& o,
                           const std::string& tag, bool pcm_input = true) {
        outcome out;
        out.in = read_pcm(input);
        const std::string wav = path(tag + ".wav"), mp3 = path(tag + ".mp3");
        out.r = au::extend(input, wav, mp3, o);
        EXPECT_TRUE(out.r.ok) << out.r.error;
        if (!out.r.ok)
            return out;
        out.wav = read_pcm(wav);
        out.mp3 = read_pcm(mp3);
        EXPECT_TRUE(out.wav.ok);
        EXPECT_TRUE(out.mp3.ok);
        if (!out.wav.ok || !out.mp3.ok)
            return out;
        EXPECT_EQ(out.wav.sr, out.in.sr);
        EXPECT_EQ(out.wav.ch, out.in.ch);
        const double expected = o.extend_after + o.length;
        EXPECT_NEAR(static_cast<double>(out.wav.frames) / out.wav.sr, expected, 0.1);
        EXPECT_NEAR(out.r.duration_seconds, expected, 1.5 / out.in.sr);
        EXPECT_NEAR(static_cast<double>(out.mp3.frames) / out.mp3.sr, expected, 0.15);
        out.cut = std::llround(o.extend_after * out.in.sr);
        if (pcm_input) {
            const auto n = static_cast<std::size_t>(out.cut * out.in.ch);
            EXPECT_TRUE(std::equal(out.in.s.begin(), out.in.s.begin() + static_cast<long>(n),
                                   out.wav.s.begin()))
                << "prefix is not bit-identical";
        }
        EXPECT_FALSE(out.r.method.empty());
        EXPECT_NE(out.r.method.find("not AI"), std::string::npos);
        EXPECT_LT(out.r.loop_start, out.r.loop_end);
        return out;
    }

    // Seams of an outcome: the cut, and every loop wrap inside the continuation (output frames).
    static std::vector<long long> seams(const outcome& o) {
        std::vector<long long> s;
        const int sr = o.in.sr;
        const long long ls = std::llround(o.r.loop_start * sr),
                        le = std::llround(o.r.loop_end * sr);
        const long long period = le - ls;
        if (o.cut > 0)
            s.push_back(o.cut);
        const long long start = o.cut > 0 ? ((o.cut - ls) % period + period) % period : 0;
        for (long long k = 1; o.cut + k < o.wav.frames; ++k)
            if ((k + start) % period == 0)
                s.push_back(o.cut + k);
        return s;
    }

    fs::path dir_;
};

using AudioProbe = AudioTest;
using AudioExtend = AudioTest;
using AudioTempo = AudioTest;

TEST_F(AudioProbe, WavMp3FlacOgg) {
    for (const std::string fmt : {"wav", "mp3", "flac", "ogg"}) {
        const std::string p = path("song." + fmt);
        ASSERT_TRUE(au::write_test_song(p, 6.5, 44100, 2, 120, fmt)) << fmt;
        const au::probe_result r = au::probe(p);
        ASSERT_TRUE(r.ok) << fmt << ": " << r.error;
        EXPECT_NEAR(r.duration_seconds, 6.5, 0.05) << fmt;
        EXPECT_EQ(r.sample_rate, 44100) << fmt;
        EXPECT_EQ(r.channels, 2) << fmt;
        EXPECT_EQ(r.format, fmt);
        EXPECT_NEAR(static_cast<double>(r.frames) / r.sample_rate, r.duration_seconds, 1e-9);
    }
    const std::string mono = path("mono48.wav");
    ASSERT_TRUE(au::write_test_song(mono, 3, 48000, 1, 100, "wav"));
    const au::probe_result r = au::probe(mono);
    ASSERT_TRUE(r.ok) << r.error;
    EXPECT_EQ(r.sample_rate, 48000);
    EXPECT_EQ(r.channels, 1);
    EXPECT_EQ(r.frames, 144000);
}

TEST_F(AudioProbe, RejectsGarbageEmptyAndMissing) {
    const std::string garbage = path("garbage.mp3");
    {
        std::mt19937 rng(1234);
        std::ofstream out(garbage, std::ios::binary);
        for (int i = 0; i < 50000; ++i)
            out.put(static_cast<char>(rng() & 0xff));
    }
    const std::string text = path("text.wav");
    {
        std::ofstream out(text);
        for (int i = 0; i < 500; ++i)
            out << "this is not audio at all\n";
    }
    const std::string empty = path("empty.wav");
    std::ofstream(empty).close();
    for (const std::string& p : {garbage, text, empty}) {
        const au::probe_result r = au::probe(p);
        EXPECT_FALSE(r.ok) << p;
        EXPECT_NE(r.error.find("not a decodable audio file"), std::string::npos) << r.error;
    }
    const au::probe_result missing = au::probe(path("nope.wav"));
    EXPECT_FALSE(missing.ok);
    EXPECT_FALSE(missing.error.empty());
    // A dangling header with no frames at all.
    const std::string header_only = path("header_only.wav");
    {
        SF_INFO info{};
        info.samplerate = 44100;
        info.channels = 2;
        info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
        sf_close(sf_open(header_only.c_str(), SFM_WRITE, &info));
    }
    const au::probe_result hdr = au::probe(header_only);
    EXPECT_FALSE(hdr.ok);
    EXPECT_FALSE(hdr.error.empty());
}

TEST_F(AudioExtend, Wav16StereoPrefixDurationsVariantsAndSeams) {
    const std::string in = path("in.wav");
    ASSERT_TRUE(au::write_test_song(in, 40, 44100, 2, 120, "wav"));
    au::extend_options o;
    o.extend_after = 25.3;
    o.length = 20;
    o.variant = 1;
    const outcome a = extend_checked(in, o, "v1");
    ASSERT_TRUE(a.r.ok && a.wav.ok);
    EXPECT_TRUE(tempo_matches(a.r.tempo_bpm, 120)) << a.r.tempo_bpm;
    EXPECT_LE(a.r.loop_end, o.extend_after + 1e-9);  // material from before the cut
    EXPECT_NE(a.r.method.find("bar"), std::string::npos) << a.r.method;

    o.variant = 2;
    const outcome b = extend_checked(in, o, "v2");
    ASSERT_TRUE(b.r.ok && b.wav.ok);
    EXPECT_TRUE(a.r.loop_start != b.r.loop_start || a.r.loop_end != b.r.loop_end);
    // The continuations differ substantially (not just by a sample or two).
    double diff = 0, energy = 0;
    for (long long n = a.cut + a.in.sr / 5; n < a.wav.frames - a.in.sr; ++n)
        for (int c = 0; c < a.wav.ch; ++c) {
            const double d = a.wav.at(n, c) - b.wav.at(n, c);
            diff += d * d;
            energy += a.wav.at(n, c) * a.wav.at(n, c);
        }
    EXPECT_GT(diff, 0.05 * energy);

    // No clicks: across every seam the largest sample-to-sample step stays within a few times the
    // source's typical large step (99.9th percentile of |x[n] - x[n-1]| before the cut).
    const double typical = step_quantile(a.in, 0, a.cut, 0.999);
    ASSERT_GT(typical, 0);
    for (const outcome* o2 : {&a, &b}) {
        const auto s = seams(*o2);
        ASSERT_GE(s.size(), 2u);  // the cut and at least one loop wrap in 20 s of 8/4 bars
        const long long half = o2->in.sr / 10;
        for (long long seam : s) {
            const double m = max_step(o2->wav, seam - half, seam + half);
            EXPECT_LE(m, 3 * typical) << "seam at frame " << seam << " variant " << o2->r.method;
        }
    }

    // The beat goes on: the grid found in the continuation is the source's grid carried across
    // the cut (same tempo, same phase within a few ms).
    auto mono = [](const pcm& p, long long from, long long n) {
        std::vector<float> m(static_cast<std::size_t>(n));
        for (long long i = 0; i < n; ++i) {
            double s = 0;
            for (int c = 0; c < p.ch; ++c)
                s += p.at(from + i, c);
            m[static_cast<std::size_t>(i)] = static_cast<float>(s / p.ch);
        }
        return m;
    };
    const int sr = a.in.sr;
    const long long before = a.cut - 20LL * sr;
    for (const outcome* o2 : {&a, &b}) {
        const auto src = mono(o2->in, before, 20LL * sr);
        const auto cont = mono(o2->wav, o2->cut, 18LL * sr);
        const auto gs = au::detail::estimate_beats(src.data(), src.size(), sr);
        const auto gc = au::detail::estimate_beats(cont.data(), cont.size(), sr);
        ASSERT_GT(gs.bpm, 0);
        ASSERT_GT(gc.bpm, 0);
        EXPECT_NEAR(gc.bpm, gs.bpm, 0.005 * gs.bpm);
        const double expected_phase = std::fmod(
            std::fmod(static_cast<double>(before - o2->cut) + gs.phase, gs.period) + gs.period,
            gs.period);
        double offset = gc.phase - expected_phase;
        offset -= gs.period * std::round(offset / gs.period);
        EXPECT_LT(std::abs(offset), 0.01 * sr) << "grid offset " << offset / sr << " s";
    }
}

// Tonal material (inharmonic sines + smooth kick-like pulses on a 120 BPM grid): its steps are
// small everywhere, so any hard splice would stand out; the crossfaded seams must not.
std::string write_tonal_song(const std::string& path, double seconds, int sr) {
    SF_INFO info{};
    info.samplerate = sr;
    info.channels = 2;
    info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
    if (f == nullptr)
        return "cannot create " + path;
    const auto n = static_cast<long long>(seconds * sr);
    const double beat = 0.5;  // 120 BPM
    std::vector<float> buf(static_cast<std::size_t>(n * 2));
    for (long long i = 0; i < n; ++i) {
        const double t = static_cast<double>(i) / sr;
        const double tau = std::fmod(t, beat);
        const double pulse =
            0.3 * std::min(1.0, tau / 0.005) * std::exp(-tau / 0.1) * std::sin(2 * M_PI * 60 * tau);
        for (int c = 0; c < 2; ++c)
            buf[static_cast<std::size_t>(i * 2 + c)] =
                static_cast<float>(0.25 * std::sin(2 * M_PI * 220.7 * t + c) +
                                   0.2 * std::sin(2 * M_PI * 331.1 * t + 1 + c) +
                                   0.15 * std::sin(2 * M_PI * 497.3 * t + 2) + pulse);
    }
    const bool ok = sf_writef_float(f, buf.data(), n) == n;
    sf_close(f);
    return ok ? "" : "write failed";
}

TEST_F(AudioExtend, NoClicksOnTonalMaterial) {
    const std::string in = path("tonal.wav");
    ASSERT_EQ(write_tonal_song(in, 30, 22050), "");
    const pcm src = read_pcm(in);
    ASSERT_TRUE(src.ok);
    for (double after : {21.37, 30.0}) {  // mid-song, and at the very end (no tail to blend)
        for (int variant : {1, 2, 3}) {
            au::extend_options o;
            o.extend_after = after;
            o.length = 20;  // room for a wrap of an 8-bar (16 s) loop
            o.variant = variant;
            const outcome out = extend_checked(
                in, o,
                "tonal_" + std::to_string(static_cast<int>(after)) + "_" + std::to_string(variant));
            ASSERT_TRUE(out.r.ok && out.wav.ok);
            EXPECT_TRUE(tempo_matches(out.r.tempo_bpm, 120)) << out.r.tempo_bpm;
            const double threshold = 3 * step_quantile(src, 0, out.cut, 0.999);
            const auto s = seams(out);
            ASSERT_GE(s.size(), 2u);
            for (long long seam : s) {
                const double m = max_step(out.wav, seam - src.sr / 10, seam + src.sr / 10);
                EXPECT_LE(m, threshold)
                    << "after " << after << " variant " << variant << " seam at " << seam;
            }
            // The threshold has teeth: hard splices from the cut to arbitrary points jump
            // further.
            const long long ls = std::llround(out.r.loop_start * src.sr);
            int caught = 0;
            for (int k = 0; k < 20; ++k) {
                const long long from = ls + 97 * k + 13;
                double jump = 0;
                for (int c = 0; c < src.ch; ++c)
                    jump = std::max(jump, std::abs(src.at(from, c) - src.at(out.cut - 1, c)));
                caught += jump > threshold ? 1 : 0;
            }
            EXPECT_GE(caught, 12);
        }
    }
}

TEST_F(AudioExtend, ConcurrentCallsAreIndependent) {
    const std::string in = path("in.wav");
    ASSERT_TRUE(au::write_test_song(in, 14, 22050, 2, 118, "wav"));
    au::extend_options o;
    o.extend_after = 11;
    o.length = 6;
    const au::extend_result ref = au::extend(in, path("ref.wav"), path("ref.mp3"), o);
    ASSERT_TRUE(ref.ok) << ref.error;
    const pcm expected = read_pcm(path("ref.wav"));
    std::vector<au::extend_result> results(4);
    std::vector<std::thread> threads;
    for (int i = 0; i < 4; ++i)
        threads.emplace_back([&, i] {
            results[i] = au::extend(in, path("c" + std::to_string(i) + ".wav"),
                                    path("c" + std::to_string(i) + ".mp3"), o);
        });
    for (auto& t : threads)
        t.join();
    for (int i = 0; i < 4; ++i) {
        ASSERT_TRUE(results[i].ok) << results[i].error;
        EXPECT_EQ(read_pcm(path("c" + std::to_string(i) + ".wav")).s, expected.s);
    }
}

TEST_F(AudioExtend, SilenceAndNoiseHaveNoBeatButStillExtend) {
    for (const std::string kind : {"silence", "noise"}) {
        const std::string in = path(kind + ".wav");
        {
            SF_INFO info{};
            info.samplerate = 22050;
            info.channels = 1;
            info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
            SNDFILE* f = sf_open(in.c_str(), SFM_WRITE, &info);
            ASSERT_NE(f, nullptr);
            std::vector<short> data(22050 * 8, 0);
            std::mt19937 rng(11);
            if (kind == "noise")
                for (short& v : data)
                    v = static_cast<short>(static_cast<int>(rng() % 8001) - 4000);
            ASSERT_EQ(sf_writef_short(f, data.data(), static_cast<sf_count_t>(data.size())),
                      static_cast<sf_count_t>(data.size()));
            sf_close(f);
        }
        au::extend_options o;
        o.extend_after = 6;
        o.length = 5;
        const outcome out = extend_checked(in, o, kind + "_out");
        ASSERT_TRUE(out.r.ok && out.wav.ok);
        EXPECT_EQ(out.r.tempo_bpm, 0) << kind;
        EXPECT_NE(out.r.method.find("no steady beat"), std::string::npos) << out.r.method;
        if (kind == "silence")
            EXPECT_TRUE(
                std::all_of(out.wav.s.begin(), out.wav.s.end(), [](int v) { return v == 0; }));
    }
}

TEST_F(AudioTempo, EstimateWithinThreePercent) {
    for (double bpm : {90.0, 123.0, 142.0}) {
        const std::string in = path("t" + std::to_string(static_cast<int>(bpm)) + ".wav");
        ASSERT_TRUE(au::write_test_song(in, 24, 22050, 1, bpm, "wav"));
        // Direct estimate on the whole song...
        const pcm p = read_pcm(in);
        ASSERT_TRUE(p.ok);
        std::vector<float> mono(static_cast<std::size_t>(p.frames));
        for (long long i = 0; i < p.frames; ++i)
            mono[static_cast<std::size_t>(i)] = static_cast<float>(p.at(i, 0));
        const auto grid = au::detail::estimate_beats(mono.data(), mono.size(), p.sr);
        EXPECT_TRUE(tempo_matches(grid.bpm, bpm)) << bpm << " -> " << grid.bpm;
        EXPECT_NEAR(grid.period * grid.bpm / 60.0, p.sr, 1e-6 * p.sr);
        // ...and the one extend() reports.
        au::extend_options o;
        o.extend_after = 20;
        o.length = 4;
        const outcome out = extend_checked(in, o, "x" + std::to_string(static_cast<int>(bpm)));
        EXPECT_TRUE(tempo_matches(out.r.tempo_bpm, bpm)) << bpm << " -> " << out.r.tempo_bpm;
    }
}

TEST_F(AudioExtend, ExtendAfterZeroAndAtTheEnd) {
    const std::string in = path("in.wav");
    ASSERT_TRUE(au::write_test_song(in, 16, 44100, 2, 110, "wav"));
    au::extend_options o;
    o.extend_after = 0;
    o.length = 10;
    const outcome zero = extend_checked(in, o, "zero");
    ASSERT_TRUE(zero.r.ok && zero.wav.ok);
    EXPECT_GT(zero.r.tempo_bpm, 0);
    EXPECT_GE(zero.r.loop_start, 0);
    EXPECT_LT(zero.r.loop_start, 0.05);  // the song's first beat is at 0
    EXPECT_LE(zero.r.loop_end, 16.0 + 1e-9);
    const double typical = step_quantile(zero.in, 0, zero.in.frames, 0.999);
    for (long long seam : seams(zero))
        EXPECT_LE(max_step(zero.wav, seam - 4410, seam + 4410), 3 * typical) << seam;

    const au::probe_result pr = au::probe(in);
    ASSERT_TRUE(pr.ok);
    o.extend_after = pr.duration_seconds;
    o.length = 8;
    const outcome end = extend_checked(in, o, "end");
    ASSERT_TRUE(end.r.ok && end.wav.ok);
    EXPECT_EQ(end.cut, end.in.frames);
    for (long long seam : seams(end))
        EXPECT_LE(max_step(end.wav, seam - 4410, seam + 4410), 3 * typical) << seam;
}

TEST_F(AudioExtend, InvalidRequestsFailWithoutOutputs) {
    const std::string in = path("in.wav");
    ASSERT_TRUE(au::write_test_song(in, 5, 44100, 2, 120, "wav"));
    const std::string wav = path("out.wav"), mp3 = path("out.mp3");
    auto expect_fail = [&](const au::extend_options& o, const std::string& input,
                           const std::string& needle) {
        const au::extend_result r = au::extend(input, wav, mp3, o);
        EXPECT_FALSE(r.ok);
        EXPECT_NE(r.error.find(needle), std::string::npos) << r.error;
        EXPECT_FALSE(fs::exists(wav));
        EXPECT_FALSE(fs::exists(mp3));
    };
    au::extend_options o;
    o.extend_after = 6;  // past the end of a 5 s song
    expect_fail(o, in, "past the end");
    o.extend_after = 1;
    o.length = 0;
    expect_fail(o, in, "length");
    o.length = std::nan("");
    expect_fail(o, in, "length");
    o.length = 5;
    o.variant = 0;
    expect_fail(o, in, "variant");
    o.variant = 1;
    o.extend_after = -1;
    expect_fail(o, in, "extend_after");
    o.extend_after = 1;
    expect_fail(o, path("missing.wav"), "not a decodable audio file");
    const std::string garbage = path("garbage.bin");
    {
        std::ofstream out(garbage, std::ios::binary);
        for (int i = 0; i < 10000; ++i)
            out.put(static_cast<char>((i * 7919) & 0xff));
    }
    expect_fail(o, garbage, "not a decodable audio file");
    const au::extend_result r = au::extend(in, path("no/such/dir/out.wav"), mp3, o);
    EXPECT_FALSE(r.ok);
    EXPECT_FALSE(r.error.empty());
    EXPECT_FALSE(fs::exists(mp3));
}

TEST_F(AudioExtend, Mono48kHz) {
    const std::string in = path("in_mono.wav");
    ASSERT_TRUE(au::write_test_song(in, 20, 48000, 1, 128, "wav"));
    au::extend_options o;
    o.extend_after = 17.5;
    o.length = 6;
    const outcome out = extend_checked(in, o, "mono");
    ASSERT_TRUE(out.r.ok && out.wav.ok);
    EXPECT_EQ(out.wav.sr, 48000);
    EXPECT_EQ(out.wav.ch, 1);
    EXPECT_EQ(out.mp3.sr, 48000);
    EXPECT_EQ(out.mp3.ch, 1);
    EXPECT_TRUE(tempo_matches(out.r.tempo_bpm, 128)) << out.r.tempo_bpm;
    const double typical = step_quantile(out.in, 0, out.cut, 0.999);
    for (long long seam : seams(out))
        EXPECT_LE(max_step(out.wav, seam - 4800, seam + 4800), 3 * typical) << seam;
}

TEST_F(AudioExtend, ShortPrefixLoopsWhatIsThere) {
    const std::string in = path("in.wav");
    ASSERT_TRUE(au::write_test_song(in, 10, 44100, 2, 120, "wav"));
    au::extend_options o;
    o.extend_after = 0.7;  // less than a bar before the cut
    o.length = 5;
    const outcome one = extend_checked(in, o, "short1");
    ASSERT_TRUE(one.r.ok);
    EXPECT_LE(one.r.loop_end, 0.7 + 1e-9);
    o.variant = 2;
    const outcome two = extend_checked(in, o, "short2");
    ASSERT_TRUE(two.r.ok);
    EXPECT_TRUE(one.r.loop_start != two.r.loop_start || one.r.loop_end != two.r.loop_end);
}

TEST_F(AudioExtend, PcmWidthsAndFloatAreCopiedExactly) {
    const std::string song = path("song.wav");
    ASSERT_TRUE(au::write_test_song(song, 12, 22050, 2, 100, "wav"));
    const pcm src = read_pcm(song);
    ASSERT_TRUE(src.ok);
    au::extend_options o;
    o.extend_after = 9.25;
    o.length = 3;
    // Low bits populated (24/32-bit) so a float round trip with the wrong scale would show.
    for (const int sub : {SF_FORMAT_PCM_U8, SF_FORMAT_PCM_24, SF_FORMAT_PCM_32, SF_FORMAT_FLOAT}) {
        const std::string in = path("in" + std::to_string(sub) + ".wav");
        {
            SF_INFO info{};
            info.samplerate = src.sr;
            info.channels = src.ch;
            info.format = SF_FORMAT_WAV | sub;
            SNDFILE* f = sf_open(in.c_str(), SFM_WRITE, &info);
            ASSERT_NE(f, nullptr);
            std::vector<int> data(src.s);
            std::mt19937 rng(7);
            for (int& v : data)
                v = static_cast<int>((static_cast<unsigned>(v) & 0xffff0000u) | (rng() & 0xff00u));
            std::vector<float> fdata(data.size());
            for (std::size_t i = 0; i < data.size(); ++i)
                fdata[i] = static_cast<float>(data[i] / 2147483648.0);
            ASSERT_EQ(sub == SF_FORMAT_FLOAT ? sf_writef_float(f, fdata.data(), src.frames)
                                             : sf_writef_int(f, data.data(), src.frames),
                      src.frames);
            sf_close(f);
        }
        const outcome out = extend_checked(in, o, "out" + std::to_string(sub));
        ASSERT_TRUE(out.wav.ok);
        EXPECT_EQ(out.wav.format & SF_FORMAT_SUBMASK, sub);
        if (sub == SF_FORMAT_FLOAT) {  // compare the floats themselves
            auto floats = [](const std::string& p, long long n) {
                SF_INFO info{};
                SNDFILE* f = sf_open(p.c_str(), SFM_READ, &info);
                std::vector<float> v(static_cast<std::size_t>(n * info.channels));
                sf_readf_float(f, v.data(), n);
                sf_close(f);
                return v;
            };
            EXPECT_EQ(floats(in, out.cut),
                      floats(path("out" + std::to_string(sub) + ".wav"), out.cut));
        }
    }

    const std::string flac = path("in.flac");
    ASSERT_TRUE(au::write_test_song(flac, 12, 22050, 2, 100, "flac"));
    const outcome of = extend_checked(flac, o, "oflac");
    ASSERT_TRUE(of.wav.ok);
    EXPECT_EQ(of.wav.format & SF_FORMAT_SUBMASK, SF_FORMAT_PCM_16);
}

TEST_F(AudioExtend, Mp3InputGivesDecodedSamples) {
    const std::string in = path("in.mp3");
    ASSERT_TRUE(au::write_test_song(in, 12, 44100, 2, 120, "mp3"));
    au::extend_options o;
    o.extend_after = 10;
    o.length = 4;
    const outcome out = extend_checked(in, o, "fromMp3", /*pcm_input=*/false);
    ASSERT_TRUE(out.r.ok && out.wav.ok);
    double worst = 0;
    for (long long n = 0; n < out.cut; ++n)
        for (int c = 0; c < out.in.ch; ++c)
            worst = std::max(worst, std::abs(out.wav.at(n, c) - out.in.at(n, c)));
    EXPECT_LE(worst, 2.0 / 32768);  // the decoded samples, at 16 bits
}

// An MP3 of `seconds` of silence with one full-scale click at exactly `click_s`, as libsndfile
// writes it (LAME, with its Info tag: encoder delay and padding).
bool write_click_mp3(const std::string& path, int sr, int ch, double seconds, double click_s) {
    std::vector<float> x(static_cast<std::size_t>(seconds * sr) * ch, 0.0f);
    for (int c = 0; c < ch; ++c)
        x[static_cast<std::size_t>(std::llround(click_s * sr)) * ch + c] = 0.9f;
    SF_INFO info{};
    info.samplerate = sr;
    info.channels = ch;
    info.format = SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III;
    SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
    if (f == nullptr)
        return false;
    const auto frames = static_cast<sf_count_t>(x.size() / ch);
    const bool ok = sf_writef_float(f, x.data(), frames) == frames;
    return sf_close(f) == 0 && ok;
}

// Byte length of the MPEG audio frame (Layer III) whose header is at `p`; 0 if not one.
std::size_t mp3_frame_length(const std::string& b, std::size_t p) {
    if (p + 4 > b.size())
        return 0;
    const auto u = [&](std::size_t i) { return static_cast<unsigned char>(b[p + i]); };
    if (u(0) != 0xff || (u(1) & 0xe0) != 0xe0 || ((u(1) >> 1) & 3) != 1)
        return 0;
    const int version = (u(1) >> 3) & 3;  // 3: MPEG-1, 2: MPEG-2, 0: MPEG-2.5
    const int bi = u(2) >> 4, si = (u(2) >> 2) & 3, pad = (u(2) >> 1) & 1;
    static constexpr int kbps1[] = {0,   32,  40,  48,  56,  64,  80, 96,
                                    112, 128, 160, 192, 224, 256, 320};
    static constexpr int kbps2[] = {0, 8, 16, 24, 32, 40, 48, 56, 64, 80, 96, 112, 128, 144, 160};
    static constexpr int rates[] = {44100, 48000, 32000};
    if (bi == 0 || bi == 15 || si == 3 || version == 1)
        return 0;
    const int rate = rates[si] >> (version == 3 ? 0 : version == 2 ? 1 : 2);
    const int kbps = version == 3 ? kbps1[bi] : kbps2[bi];
    return static_cast<std::size_t>((version == 3 ? 144000 : 72000) * kbps / rate + pad);
}

// MP3s in the three shapes found in the wild: LAME's Info tag (delay and padding), a Xing/Info
// frame without the LAME extension, and no tag frame at all (a stream). Each must decode with
// the click where it was encoded: at 1.000 s, not 13 ms (576) or 25 ms (529 + 576) later.
TEST_F(AudioExtend, Mp3SourcesAreGapless) {
    for (const auto& [sr, ch] : {std::pair{44100, 1}, std::pair{48000, 2}}) {
        const std::string tagged = path("click_" + std::to_string(sr) + ".mp3");
        ASSERT_TRUE(write_click_mp3(tagged, sr, ch, 3.0, 1.0));
        const std::string bytes = segue::test::read_file(tagged);
        const std::size_t first = mp3_frame_length(bytes, 0);
        ASSERT_GT(first, 0u) << "libsndfile writes no ID3v2 tag: the tag frame comes first";
        const std::size_t lame = bytes.find("LAME", 0);
        ASSERT_LT(lame, first) << "the first frame carries LAME's tag";
        ASSERT_TRUE(bytes.find("Xing") < first || bytes.find("Info") < first);

        std::string xing_only = bytes;
        std::fill(xing_only.begin() + static_cast<long>(lame),
                  xing_only.begin() + static_cast<long>(first), '\0');
        const std::string untagged = bytes.substr(first);
        const std::pair<std::string, std::string> shapes[] = {
            {"tagged", bytes}, {"xing_only", xing_only}, {"untagged", untagged}};
        for (const auto& [name, data] : shapes) {
            const std::string tag = name + "_" + std::to_string(sr);
            const std::string in = path(tag + ".mp3");
            {
                std::ofstream o(in, std::ios::binary);
                o.write(data.data(), static_cast<std::streamsize>(data.size()));
            }
            const auto probed = au::probe(in);
            ASSERT_TRUE(probed.ok) << tag << ": " << probed.error;
            if (name == "tagged")
                EXPECT_EQ(probed.frames, 3LL * sr) << tag << ": LAME's tag gives the exact length";

            au::extend_options o;
            o.extend_after = 2.0;
            o.length = 1.0;
            const std::string wav = path(tag + "_out.wav"), mp3 = path(tag + "_out.mp3");
            const auto r = au::extend(in, wav, mp3, o);
            ASSERT_TRUE(r.ok) << tag << ": " << r.error;
            const pcm out = read_pcm(wav);
            ASSERT_TRUE(out.ok) << tag;
            long long peak = 0;
            for (long long n = 0; n < 2LL * sr; ++n)
                if (std::abs(out.at(n, 0)) > std::abs(out.at(peak, 0)))
                    peak = n;
            EXPECT_NEAR(peak, sr, 2) << tag << ": the click is " << peak - sr << " samples late";
            EXPECT_GT(std::abs(out.at(peak, 0)), 0.3) << tag;
        }
    }
}

TEST_F(AudioExtend, HighRateMultichannelResamplesTheMp3Only) {
    const std::string in = path("in96.wav");
    ASSERT_TRUE(au::write_test_song(in, 8, 96000, 3, 120, "wav"));
    au::extend_options o;
    o.extend_after = 6;
    o.length = 3;
    const outcome out = extend_checked(in, o, "hr");
    ASSERT_TRUE(out.r.ok && out.wav.ok);
    EXPECT_EQ(out.wav.sr, 96000);
    EXPECT_EQ(out.wav.ch, 3);
    EXPECT_EQ(out.mp3.sr, 48000);
    EXPECT_EQ(out.mp3.ch, 2);
}

TEST(AudioDsp, ResamplerKeepsLengthAndTone) {
    au::detail::resampler rs(96000, 48000, 1);
    std::vector<float> in(96000), out;
    for (std::size_t i = 0; i < in.size(); ++i)
        in[i] = static_cast<float>(0.5 * std::sin(2 * M_PI * 1000.0 * i / 96000.0));
    for (std::size_t pos = 0; pos < in.size(); pos += 1000)
        rs.process(in.data() + pos, std::min<std::size_t>(1000, in.size() - pos), out);
    rs.flush(out);
    ASSERT_EQ(out.size(), 48000u);
    for (std::size_t i = 1000; i < 47000; i += 97)
        EXPECT_NEAR(out[i], 0.5 * std::sin(2 * M_PI * 1000.0 * i / 48000.0), 0.01) << i;
}

TEST(AudioDsp, AlignmentFindsTheShift) {
    std::vector<float> x(20000);
    std::mt19937 rng(3);
    std::normal_distribution<float> g;
    for (float& v : x)
        v = g(rng);
    // Make [12000, 13000) a copy of [2000, 3000) shifted by 37 samples.
    for (int j = -400; j < 600; ++j)
        x[12000 + j] = x[2000 + 37 + j];
    EXPECT_EQ(au::detail::best_alignment(x.data(), 20000, 12000, 2000, 100, 300), 37);
}

}  // namespace

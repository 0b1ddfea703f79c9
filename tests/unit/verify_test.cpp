// Output verification (gateway/audio/verify.hpp): loudness against the BS.1770 calibration
// signal, and each flag on a file made to deserve it (and not on one that does not).

#include <gtest/gtest.h>
#include <sndfile.h>

#include <boost/json.hpp>

#include <algorithm>
#include <cmath>
#include <filesystem>
#include <fstream>
#include <functional>
#include <numbers>
#include <string>
#include <vector>

#include "gateway/audio/audio.hpp"
#include "gateway/audio/verify.hpp"
#include "gateway/core/mirror.hpp"
#include "tests/support/process.hpp"

namespace au = segue::audio;

namespace {

bool has(const au::verification& v, const std::string& flag) {
    return std::find(v.flags.begin(), v.flags.end(), flag) != v.flags.end();
}

// A 16-bit WAV of `seconds` whose sample n (channel c) is fn(n, c).
void write_wav(const std::string& path, double seconds, int sr, int channels,
               const std::function<double(long long, int)>& fn) {
    SF_INFO info{};
    info.samplerate = sr;
    info.channels = channels;
    info.format = SF_FORMAT_WAV | SF_FORMAT_PCM_16;
    SNDFILE* f = sf_open(path.c_str(), SFM_WRITE, &info);
    ASSERT_NE(f, nullptr);
    const long long n = std::llround(seconds * sr);
    std::vector<double> buf(static_cast<std::size_t>(n * channels));
    for (long long i = 0; i < n; ++i)
        for (int c = 0; c < channels; ++c)
            buf[static_cast<std::size_t>(i * channels + c)] = fn(i, c);
    sf_writef_double(f, buf.data(), n);
    sf_close(f);
}

}  // namespace

// BS.1770-4: a 0 dBFS 1 kHz sine on one channel reads -3.01 LKFS; at -20 dBFS, -23.01.
TEST(Verify, LoudnessMatchesTheBs1770Calibration) {
    segue::test::temp_dir d;
    for (int sr : {48000, 44100}) {
        const std::string path = d.file("sine" + std::to_string(sr) + ".wav");
        write_wav(path, 5, sr, 2, [sr](long long n, int c) {
            return c == 0 ? 0.1 * std::sin(2 * std::numbers::pi * 1000 * n / sr) : 0.0;
        });
        const auto v = au::verify(path, {});
        ASSERT_TRUE(v.ok) << v.error;
        ASSERT_TRUE(v.loudness_lufs);
        EXPECT_NEAR(*v.loudness_lufs, -23.01, 0.1) << sr;
        EXPECT_NEAR(*v.peak_dbfs, -20, 0.05);
        EXPECT_NEAR(v.duration, 5, 1e-6);
        EXPECT_EQ(v.channels, 2);
        EXPECT_TRUE(v.flags.empty());
    }
}

TEST(Verify, FlagsSilence) {
    segue::test::temp_dir d;
    const std::string path = d.file("silent.wav");
    ASSERT_TRUE(au::write_test_song(path, 4, 22050, 1, 120, "wav", 0.0));
    const auto v = au::verify(path, {});
    ASSERT_TRUE(v.ok);
    EXPECT_TRUE(has(v, "silent"));
    EXPECT_FALSE(v.peak_dbfs);
    EXPECT_FALSE(v.loudness_lufs);
    const std::string song = d.file("song.wav");
    ASSERT_TRUE(au::write_test_song(song, 4, 22050, 1, 120, "wav"));
    EXPECT_FALSE(has(au::verify(song, {}), "silent"));
}

TEST(Verify, FlagsATruncatedWavAndMp3) {
    segue::test::temp_dir d;
    for (const char* fmt : {"wav", "mp3"}) {
        const std::string path = d.file(std::string("song.") + fmt);
        ASSERT_TRUE(au::write_test_song(path, 8, 22050, 1, 120, fmt));
        au::verify_options o;
        o.reported_duration = 8;
        EXPECT_FALSE(has(au::verify(path, o), "truncated")) << fmt;
        // Half the bytes: the header (and the provider) promise all of it.
        const auto size = std::filesystem::file_size(path);
        std::filesystem::resize_file(path, size / 2);
        const auto v = au::verify(path, o);
        ASSERT_TRUE(v.ok) << fmt << " " << v.error;
        EXPECT_TRUE(has(v, "truncated")) << fmt;
        EXPECT_LT(v.duration, 5) << fmt;
        // Without the provider's word, the MP3's frame count (its LAME tag) tells.
        if (std::string(fmt) == "mp3")
            EXPECT_TRUE(has(au::verify(path, {}), "truncated"));
    }
}

TEST(Verify, FlagsADurationFarFromTheRequest) {
    segue::test::temp_dir d;
    const std::string path = d.file("song.wav");
    ASSERT_TRUE(au::write_test_song(path, 10, 22050, 1, 120, "wav"));
    au::verify_options o;
    o.expected_duration = 10.5;
    EXPECT_FALSE(has(au::verify(path, o), "duration_mismatch"));
    o.expected_duration = 30;
    EXPECT_TRUE(has(au::verify(path, o), "duration_mismatch"));
}

TEST(Verify, FlagsAJumpAtTheSplicePoint) {
    segue::test::temp_dir d;
    const int sr = 22050;
    auto tone = [](long long n, double amp, double hz) {
        return amp * std::sin(2 * std::numbers::pi * hz * n / sr);
    };
    // Smooth: the same tone on both sides of 3 s.
    const std::string smooth = d.file("smooth.wav");
    write_wav(smooth, 6, sr, 1, [&](long long n, int) { return tone(n, 0.3, 220); });
    au::verify_options o;
    o.splice_at = 3;
    auto v = au::verify(smooth, o);
    ASSERT_TRUE(v.splice.checked);
    EXPECT_NEAR(v.splice.level_jump_db, 0, 0.5);
    EXPECT_FALSE(has(v, "splice_discontinuity"));
    // 26 dB louder after 3 s.
    const std::string loud = d.file("loud.wav");
    write_wav(loud, 6, sr, 1,
              [&](long long n, int) { return tone(n, n < 3 * sr ? 0.015 : 0.3, 220); });
    v = au::verify(loud, o);
    EXPECT_GT(v.splice.level_jump_db, 20);
    EXPECT_TRUE(has(v, "splice_discontinuity"));
    // Same level, far brighter: a dull tone becomes noise-like.
    const std::string bright = d.file("bright.wav");
    write_wav(bright, 6, sr, 1,
              [&](long long n, int) { return tone(n, 0.3, n < 3 * sr ? 110 : 5000); });
    v = au::verify(bright, o);
    EXPECT_GT(v.splice.brightness_ratio, 3);
    EXPECT_TRUE(has(v, "splice_discontinuity"));
}

TEST(Verify, AnUndecodableFileIsSaidSo) {
    segue::test::temp_dir d;
    const std::string path = d.file("junk.mp3");
    std::ofstream(path) << "<Error><Code>NoSuchKey</Code></Error>";
    const auto v = au::verify(path, {});
    EXPECT_FALSE(v.ok);
    EXPECT_TRUE(has(v, "undecodable"));
}

// The output's `verification` object: the WAV speaks for the output, every format's flags count.
TEST(Verify, OutputVerificationPrefersTheWavAndMergesFlags) {
    segue::test::temp_dir d;
    const std::string wav = d.file("o.wav"), mp3 = d.file("o.mp3");
    ASSERT_TRUE(au::write_test_song(wav, 6, 22050, 1, 120, "wav"));
    ASSERT_TRUE(au::write_test_song(mp3, 6, 22050, 1, 120, "mp3"));
    std::filesystem::resize_file(mp3, std::filesystem::file_size(mp3) / 2);
    segue::core::verify_request req;
    req.extend_after = 2;
    req.reported_duration = 6;
    const std::string j = segue::core::verify_output({{"mp3", mp3}, {"wav", wav}}, req);
    auto v = boost::json::parse(j).as_object();
    EXPECT_EQ(v["source"], "wav") << j;
    EXPECT_NEAR(v["duration"].to_number<double>(), 6, 0.01) << j;
    EXPECT_EQ(v["flags"], boost::json::parse(R"(["truncated"])")) << j;
    EXPECT_EQ(v["formats"].at("wav").at("flags"), boost::json::array()) << j;
    EXPECT_EQ(v["splice"].at("at").to_number<double>(), 2) << j;
}

#include "gateway/audio/audio.hpp"

#include <mpg123.h>
#include <sndfile.h>

#include <algorithm>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <exception>
#include <filesystem>
#include <memory>
#include <mutex>
#include <new>
#include <numbers>
#include <sstream>
#include <string>
#include <string_view>
#include <system_error>
#include <utility>
#include <vector>

#include "gateway/audio/dsp.hpp"

namespace segue::audio {

namespace {

namespace fs = std::filesystem;

constexpr double kCrossfadeSeconds = 0.05;  // every seam: loop boundaries and the cut
constexpr double kFadeOutSeconds = 1.0;
constexpr double kFadeInSeconds = 0.005;  // only when there is no prefix (extend_after == 0)
constexpr double kWindowSeconds = 48;     // source window before the cut (analysis + loop)
constexpr long long kWindowMaxSamples = 16'000'000;  // caps the window for many-channel inputs
constexpr double kMaxLength = 3600;
constexpr sf_count_t kBlock = 16384;

struct sf_closer {
    void operator()(SNDFILE* f) const {
        if (f != nullptr)
            sf_close(f);
    }
};
using sf_handle = std::unique_ptr<SNDFILE, sf_closer>;

std::string format_name(int format) {
    const int major = format & SF_FORMAT_TYPEMASK;
    const int sub = format & SF_FORMAT_SUBMASK;
    switch (major) {
        case SF_FORMAT_WAV:
        case SF_FORMAT_WAVEX:
            return "wav";
        case SF_FORMAT_RF64:
            return "rf64";
        case SF_FORMAT_W64:
            return "w64";
        case SF_FORMAT_AIFF:
            return "aiff";
        case SF_FORMAT_AU:
            return "au";
        case SF_FORMAT_FLAC:
            return "flac";
        case SF_FORMAT_CAF:
            return "caf";
        case SF_FORMAT_OGG:
            return sub == SF_FORMAT_OPUS ? "opus" : "ogg";
        case SF_FORMAT_MPEG:
            if (sub == SF_FORMAT_MPEG_LAYER_I)
                return "mp1";
            if (sub == SF_FORMAT_MPEG_LAYER_II)
                return "mp2";
            return "mp3";
        default:
            break;
    }
    SF_FORMAT_INFO info{};
    info.format = major;
    if (sf_command(nullptr, SFC_GET_FORMAT_MAJOR, &info, sizeof(info)) == 0 &&
        info.extension != nullptr)
        return info.extension;
    return "unknown";
}

bool mp3_rate(int sr) {
    for (int r : {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
        if (r == sr)
            return true;
    return false;
}

// The rate the MP3 is written at: the input's if MPEG supports it, else the nearest sensible one.
int mp3_target_rate(int sr) {
    if (mp3_rate(sr))
        return sr;
    if (sr > 48000)
        return sr % 44100 == 0 ? 44100 : 48000;
    for (int r : {8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000})
        if (r >= sr)
            return r;
    return 48000;
}

// MP3 sources, gapless. An MP3 decodes to the encoder's delay (LAME: 576 samples) plus the
// decoder's own (529) before the first sample of the original, and ends with padding. LAME's
// Info/Xing tag records the encoder delay and the padding; mpg123 (libsndfile's MP3 decoder)
// removes them itself when it finds that tag, but measured here (mpg123 1.31, libsndfile 1.2):
//   LAME tag (delay + padding)       nothing left to remove: sample-aligned
//   Xing/Info frame count, no LAME   529 removed, the encoder's 576 left: 13 ms late
//   no tag at all                    nothing removed: 1105 samples, 25 ms late at 44.1 kHz
// So the decoder is asked what it drops at the start (the same first frames decoded with and
// without its gapless mode) and the rest of 529 + the tag's delay (576 without a tag, LAME's
// fixed delay) is dropped here. The padding of an untagged file is unknown and stays (past the
// end, where it changes nothing before a cut).
constexpr long kMp3DecoderDelay = 529;
constexpr long kMp3DefaultEncoderDelay = 576;

struct mpg123_closer {
    void operator()(mpg123_handle* h) const {
        if (h != nullptr) {
            mpg123_close(h);
            mpg123_delete(h);
        }
    }
};

// Samples mpg123 outputs for the first `max_frames` MPEG frames of `path`, and the encoder
// delay its LAME tag declares (-1: none). -1 samples if the file does not decode.
long mp3_head_samples(const std::string& path, bool gapless, int max_frames, long& enc_delay) {
    static std::once_flag init;
    std::call_once(init, [] { mpg123_init(); });  // required before 1.27, a no-op since
    int err = 0;
    std::unique_ptr<mpg123_handle, mpg123_closer> h(mpg123_new(nullptr, &err));
    if (!h)
        return -1;
    mpg123_param(h.get(), gapless ? MPG123_ADD_FLAGS : MPG123_REMOVE_FLAGS, MPG123_GAPLESS, 0);
    mpg123_param(h.get(), MPG123_ADD_FLAGS, MPG123_QUIET, 0);
    if (mpg123_open(h.get(), path.c_str()) != MPG123_OK)
        return -1;
    long rate = 0;
    int channels = 0, encoding = 0;
    if (mpg123_getformat(h.get(), &rate, &channels, &encoding) != MPG123_OK || channels <= 0)
        return -1;
    const int frame_bytes = mpg123_encsize(encoding) * channels;
    if (frame_bytes <= 0)
        return -1;
    long delay = -1;
    double unused = 0;
    if (mpg123_getstate(h.get(), MPG123_ENC_DELAY, &delay, &unused) == MPG123_OK)
        enc_delay = delay;
    long samples = 0;
    for (int frames = 0; frames < max_frames;) {
        off_t num = 0;
        unsigned char* audio = nullptr;
        size_t bytes = 0;
        const int r = mpg123_decode_frame(h.get(), &num, &audio, &bytes);
        if (r == MPG123_NEW_FORMAT)
            continue;
        if (r != MPG123_OK)
            break;
        samples += static_cast<long>(bytes) / frame_bytes;
        ++frames;
    }
    return samples;
}

// Frames to drop at the start of the decoded MP3 `path` (see above); 0 when unsure.
long mp3_start_skip(const std::string& path) {
    // 16 frames (>= 9216 samples; 4608 at MPEG-2 rates) hold any start trim: 529 + 4095 at most.
    constexpr int kFrames = 16;
    long enc_delay = -1, unused = -1;
    const long with = mp3_head_samples(path, true, kFrames, enc_delay);
    const long without = mp3_head_samples(path, false, kFrames, unused);
    if (with < 0 || without < 0)
        return 0;
    // A file shorter than kFrames has its end padding trimmed too (only with a LAME tag, whose
    // delay is then removed already): the difference only grows, the skip stays 0.
    const long dropped = without - with;
    const long wanted = kMp3DecoderDelay + (enc_delay >= 0 ? enc_delay : kMp3DefaultEncoderDelay);
    return std::max(0L, wanted - dropped);
}

bool is_mp3(int format) {
    return (format & SF_FORMAT_TYPEMASK) == SF_FORMAT_MPEG &&
           (format & SF_FORMAT_SUBMASK) == SF_FORMAT_MPEG_LAYER_III;
}

// sf_open for reading, with MP3 sources made gapless: what mp3_start_skip says is read and
// dropped, and info.frames (when known) counts only the rest.
sf_handle open_source(const std::string& path, SF_INFO& info) {
    sf_handle f(sf_open(path.c_str(), SFM_READ, &info));
    if (!f || !is_mp3(info.format) || info.channels <= 0)
        return f;
    const long skip = mp3_start_skip(path);
    if (skip <= 0)
        return f;
    std::vector<float> scratch(static_cast<std::size_t>(skip) * info.channels);
    const sf_count_t got = sf_readf_float(f.get(), scratch.data(), skip);
    if (info.frames < SF_COUNT_MAX / 2)
        info.frames = std::max<sf_count_t>(0, info.frames - std::max<sf_count_t>(0, got));
    return f;
}

// How samples move from the input to the WAV output.
enum class sample_kind { int32, float32, float64 };
struct sample_plan {
    sample_kind kind;
    int bits;           // int32 kind: significant bits of the output subformat
    int wav_subformat;  // SF_FORMAT_PCM_16, ...
};

sample_plan plan_for(int format) {
    switch (format & SF_FORMAT_SUBMASK) {
        case SF_FORMAT_PCM_S8:
        case SF_FORMAT_PCM_U8:
        case SF_FORMAT_DPCM_8:
            return {sample_kind::int32, 8, SF_FORMAT_PCM_U8};
        case SF_FORMAT_PCM_16:
        case SF_FORMAT_ULAW:
        case SF_FORMAT_ALAW:
        case SF_FORMAT_IMA_ADPCM:
        case SF_FORMAT_MS_ADPCM:
        case SF_FORMAT_GSM610:
        case SF_FORMAT_VOX_ADPCM:
        case SF_FORMAT_NMS_ADPCM_16:
        case SF_FORMAT_NMS_ADPCM_24:
        case SF_FORMAT_NMS_ADPCM_32:
        case SF_FORMAT_G721_32:
        case SF_FORMAT_G723_24:
        case SF_FORMAT_G723_40:
        case SF_FORMAT_DWVW_12:
        case SF_FORMAT_DWVW_16:
        case SF_FORMAT_DPCM_16:
        case SF_FORMAT_ALAC_16:
            return {sample_kind::int32, 16, SF_FORMAT_PCM_16};
        case SF_FORMAT_PCM_24:
        case SF_FORMAT_DWVW_24:
        case SF_FORMAT_ALAC_20:
        case SF_FORMAT_ALAC_24:
            return {sample_kind::int32, 24, SF_FORMAT_PCM_24};
        case SF_FORMAT_PCM_32:
        case SF_FORMAT_ALAC_32:
            return {sample_kind::int32, 32, SF_FORMAT_PCM_32};
        case SF_FORMAT_FLOAT:
            return {sample_kind::float32, 0, SF_FORMAT_FLOAT};
        case SF_FORMAT_DOUBLE:
            return {sample_kind::float64, 0, SF_FORMAT_DOUBLE};
        default:  // lossy: Vorbis, Opus, MPEG, ... -> 16-bit of the decoded samples
            return {sample_kind::float32, 0, SF_FORMAT_PCM_16};
    }
}

sf_count_t read_frames(SNDFILE* f, int* p, sf_count_t n) {
    return sf_readf_int(f, p, n);
}
sf_count_t read_frames(SNDFILE* f, float* p, sf_count_t n) {
    return sf_readf_float(f, p, n);
}
sf_count_t read_frames(SNDFILE* f, double* p, sf_count_t n) {
    return sf_readf_double(f, p, n);
}
sf_count_t write_frames(SNDFILE* f, const int* p, sf_count_t n) {
    return sf_writef_int(f, p, n);
}
sf_count_t write_frames(SNDFILE* f, const float* p, sf_count_t n) {
    return sf_writef_float(f, p, n);
}
sf_count_t write_frames(SNDFILE* f, const double* p, sf_count_t n) {
    return sf_writef_double(f, p, n);
}

// libsndfile's int interface is full-scale 32-bit for every PCM width.
float to_float(int v) {
    return static_cast<float>(v * (1.0 / 2147483648.0));
}
float to_float(float v) {
    return v;
}
float to_float(double v) {
    return static_cast<float>(v);
}

float finite_or_zero(float v) {
    return std::isfinite(v) ? v : 0.0f;
}

// Inverse of to_float(int) at `bits` of resolution: an unmodified sample round-trips exactly.
class quantizer {
  public:
    explicit quantizer(int bits)
        : bits_(std::clamp(bits, 8, 32)), scale_(std::ldexp(1.0, bits_ - 1)) {}
    int operator()(float x) const {
        const double v = std::isfinite(x) ? static_cast<double>(x) : 0.0;
        const double q = std::clamp(std::nearbyint(v * scale_), -scale_, scale_ - 1);
        const auto i = static_cast<std::int32_t>(q);
        return bits_ == 32 ? i : static_cast<int>(static_cast<std::uint32_t>(i) << (32 - bits_));
    }

  private:
    int bits_;
    double scale_;
};

// MP3 output: VBR, stereo or mono, at an MPEG sample rate (downmix/resample only when needed).
class mp3_writer {
  public:
    std::string open(const std::string& path, int sample_rate, int channels) {
        in_channels_ = channels;
        out_channels_ = std::min(channels, 2);
        const int rate = mp3_target_rate(sample_rate);
        if (rate != sample_rate)
            resampler_ = std::make_unique<detail::resampler>(sample_rate, rate, out_channels_);
        SF_INFO info{};
        info.samplerate = rate;
        info.channels = out_channels_;
        info.format = SF_FORMAT_MPEG | SF_FORMAT_MPEG_LAYER_III;
        file_.reset(sf_open(path.c_str(), SFM_WRITE, &info));
        if (!file_)
            return "cannot create MP3 output " + path + ": " + sf_strerror(nullptr);
        int mode = SF_BITRATE_MODE_VARIABLE;
        double level = 0.3;  // LAME VBR quality ~3
        sf_command(file_.get(), SFC_SET_BITRATE_MODE, &mode, sizeof(mode));
        sf_command(file_.get(), SFC_SET_COMPRESSION_LEVEL, &level, sizeof(level));
        return {};
    }

    bool write(const float* x, sf_count_t frames) {
        if (frames <= 0)
            return true;
        const float* p = x;
        if (in_channels_ > 2) {  // even channels -> left, odd -> right
            mix_.assign(static_cast<std::size_t>(frames) * 2, 0.0f);
            const int n_left = (in_channels_ + 1) / 2, n_right = in_channels_ / 2;
            for (sf_count_t i = 0; i < frames; ++i) {
                for (int c = 0; c < in_channels_; ++c)
                    mix_[i * 2 + c % 2] += x[i * in_channels_ + c];
                mix_[i * 2] /= static_cast<float>(n_left);
                mix_[i * 2 + 1] /= static_cast<float>(n_right);
            }
            p = mix_.data();
        }
        for (sf_count_t i = 0; i < frames * out_channels_; ++i)
            if (!std::isfinite(p[i])) {
                if (p != mix_.data()) {
                    mix_.assign(p, p + frames * out_channels_);
                    p = mix_.data();
                }
                mix_[i] = 0;
            }
        if (!resampler_)
            return sf_writef_float(file_.get(), p, frames) == frames;
        resampled_.clear();
        resampler_->process(p, static_cast<std::size_t>(frames), resampled_);
        return write_resampled();
    }

    std::string close() {
        if (!file_)
            return "MP3 output not open";
        bool ok = true;
        if (resampler_) {
            resampled_.clear();
            resampler_->flush(resampled_);
            ok = write_resampled();
        }
        if (sf_close(file_.release()) != 0 || !ok)
            return "failed to write the MP3 output";
        return {};
    }

  private:
    bool write_resampled() {
        const auto frames = static_cast<sf_count_t>(resampled_.size()) / out_channels_;
        return frames == 0 || sf_writef_float(file_.get(), resampled_.data(), frames) == frames;
    }

    sf_handle file_;
    int in_channels_ = 0, out_channels_ = 0;
    std::unique_ptr<detail::resampler> resampler_;
    std::vector<float> mix_, resampled_;
};

// Removes the outputs unless the extension completed.
class output_guard {
  public:
    output_guard(std::string a, std::string b) : a_(std::move(a)), b_(std::move(b)) {}
    output_guard(const output_guard&) = delete;
    output_guard& operator=(const output_guard&) = delete;
    ~output_guard() {
        if (!committed_) {
            std::error_code ec;
            fs::remove(a_, ec);
            fs::remove(b_, ec);
        }
    }
    void commit() { committed_ = true; }

  private:
    std::string a_, b_;
    bool committed_ = false;
};

// Source audio around the cut, as float: frames [start, start + len) of the input, interleaved.
struct source_window {
    std::vector<float> data;
    long len = 0;
    int channels = 1;

    // Past the end the signal is mirrored (continuous), so seams at the very end stay click-free.
    float at(long i, int c) const {
        if (i >= len)
            i = 2 * len - 1 - i;
        i = std::clamp(i, 0L, len - 1);
        return data[static_cast<std::size_t>(i) * channels + c];
    }
};

// Gains of a correlation-compensated equal-power crossfade of `n` samples: out = g_out * a + g_in
// * b. With rho = 0 this is the plain sin/cos equal-power fade; with correlated material the
// gains are scaled down so the level stays constant instead of bumping by up to 3 dB.
void crossfade_gains(long n, double rho, std::vector<float>& g_out, std::vector<float>& g_in) {
    rho = std::clamp(std::isfinite(rho) ? rho : 0.0, 0.0, 1.0);
    g_out.resize(static_cast<std::size_t>(n));
    g_in.resize(static_cast<std::size_t>(n));
    for (long i = 0; i < n; ++i) {
        const double t = (static_cast<double>(i) + 0.5) / static_cast<double>(n);
        const double gi = std::sin(std::numbers::pi / 2 * t);
        const double go = std::cos(std::numbers::pi / 2 * t);
        const double norm = 1.0 / std::sqrt(1.0 + 2.0 * rho * gi * go);
        g_out[i] = static_cast<float>(go * norm);
        g_in[i] = static_cast<float>(gi * norm);
    }
}

struct loop_plan {
    long ls = 0, le = 0, period = 1;  // window-relative; period = le - ls
    long xfade = 0;                   // samples of crossfade at each wrap
    long j0 = 0;                      // crossfade covers [wrap + j0, wrap + j0 + xfade)
    std::vector<float> g_out, g_in;
};

// Loop output at loop time u (u = 0 is the loop start): plain loop content except within the
// crossfade around each wrap, where the material following the loop end (a) fades into the
// material at the loop start (b).
void loop_value(const source_window& w, const loop_plan& p, long long u, float* out) {
    const long q = static_cast<long>(u % p.period);
    long j = 0;
    bool mix = false;
    if (p.xfade > 0 && q < p.j0 + p.xfade) {
        j = q;
        mix = true;
    } else if (p.xfade > 0 && q >= p.period + p.j0) {
        j = q - p.period;
        mix = true;
    }
    if (!mix) {
        for (int c = 0; c < w.channels; ++c)
            out[c] = w.at(p.ls + q, c);
        return;
    }
    const auto k = static_cast<std::size_t>(j - p.j0);
    for (int c = 0; c < w.channels; ++c)
        out[c] = p.g_out[k] * w.at(p.le + j, c) + p.g_in[k] * w.at(p.ls + j, c);
}

struct candidate {
    long ls, le;
    int bars;  // 0: not beat-aligned
};

std::string seconds_text(double s) {
    std::ostringstream o;
    o.precision(3);
    o << std::fixed << s;
    return o.str();
}

template <class T>
std::string copy_prefix_and_capture(SNDFILE* in, int channels, long long read_end, long long cut,
                                    long long window_start, SNDFILE* wav, mp3_writer& mp3,
                                    source_window& window, long long& frames_read) {
    std::vector<T> buf(static_cast<std::size_t>(kBlock * channels));
    std::vector<float> fbuf(static_cast<std::size_t>(kBlock * channels));
    const long long window_end = window_start + window.len;
    long long pos = 0;
    while (pos < read_end) {
        const sf_count_t want = std::min<long long>(kBlock, read_end - pos);
        const sf_count_t got = read_frames(in, buf.data(), want);
        if (got <= 0)
            break;
        for (sf_count_t i = 0; i < got * channels; ++i)
            fbuf[i] = to_float(buf[i]);
        if (pos < cut) {
            const sf_count_t n = std::min<long long>(got, cut - pos);
            if (write_frames(wav, buf.data(), n) != n)
                return "failed to write the WAV output";
            if (!mp3.write(fbuf.data(), n))
                return "failed to write the MP3 output";
        }
        const long long a = std::max(pos, window_start), b = std::min(pos + got, window_end);
        for (long long f = a; f < b; ++f)
            for (int c = 0; c < channels; ++c)
                window.data[static_cast<std::size_t>((f - window_start) * channels + c)] =
                    finite_or_zero(fbuf[static_cast<std::size_t>((f - pos) * channels + c)]);
        pos += got;
        if (got < want)
            break;
    }
    frames_read = pos;
    return {};
}

extend_result extend_impl(const std::string& input_path, const std::string& wav_path,
                          const std::string& mp3_path, const extend_options& opt) {
    extend_result res;
    auto fail = [&res](std::string msg) {
        res.ok = false;
        res.error = std::move(msg);
        return res;
    };
    if (!std::isfinite(opt.extend_after) || opt.extend_after < 0)
        return fail("extend_after must be a finite number of seconds >= 0");
    if (!std::isfinite(opt.length) || opt.length <= 0 || opt.length > kMaxLength)
        return fail("length must be > 0 and <= 3600 seconds");
    if (opt.variant < 1)
        return fail("variant must be >= 1");
    if (wav_path.empty() || mp3_path.empty() || wav_path == mp3_path)
        return fail("the WAV and MP3 output paths must be distinct and non-empty");
    {
        std::error_code ec;
        if (fs::equivalent(input_path, wav_path, ec) || fs::equivalent(input_path, mp3_path, ec))
            return fail("an output path is the input file");
    }

    SF_INFO info{};
    sf_handle in = open_source(input_path, info);
    if (!in)
        return fail("not a decodable audio file: " + std::string(sf_strerror(nullptr)));
    const int sr = info.samplerate;
    const int ch = info.channels;
    if (sr <= 0 || ch <= 0 || info.frames <= 0)
        return fail("not a decodable audio file: no audio frames");
    long long frames = info.frames;
    const double duration = static_cast<double>(frames) / sr;
    if (opt.extend_after * sr > static_cast<double>(frames) + 0.5)
        return fail("extend_after (" + seconds_text(opt.extend_after) +
                    " s) is past the end of the input (" + seconds_text(duration) + " s)");
    long long cut = std::min(frames, std::llround(opt.extend_after * sr));
    const long long length = std::max(1LL, std::llround(opt.length * sr));
    const bool backward = cut > 0;  // loop material before the cut; else from the song's start
    const long xfade_nominal = std::max(1L, std::lround(kCrossfadeSeconds * sr));
    const long long window_max =
        std::max(1LL, std::min(std::llround(kWindowSeconds * sr), kWindowMaxSamples / ch));

    long long ws = 0, we = 0, data_end = 0;
    if (backward) {
        ws = std::max(0LL, cut - window_max);
        we = cut;
        data_end = std::min(frames, cut + xfade_nominal);
    } else {
        ws = 0;
        we = std::min(frames, window_max);
        data_end = std::min(frames, we + xfade_nominal);
    }
    const long long read_end = std::max(cut, data_end);

    const sample_plan plan = plan_for(info.format);
    SF_INFO out_info{};
    out_info.samplerate = sr;
    out_info.channels = ch;
    out_info.format = SF_FORMAT_WAV | plan.wav_subformat;
    if (sf_format_check(&out_info) == 0)
        return fail("cannot write a WAV with the input's layout");

    output_guard guard(wav_path, mp3_path);
    sf_handle wav(sf_open(wav_path.c_str(), SFM_WRITE, &out_info));
    if (!wav)
        return fail("cannot create WAV output " + wav_path + ": " + sf_strerror(nullptr));
    if (plan.kind != sample_kind::int32)
        sf_command(wav.get(), SFC_SET_CLIPPING, nullptr, SF_TRUE);
    mp3_writer mp3;
    if (std::string err = mp3.open(mp3_path, sr, ch); !err.empty())
        return fail(err);

    // One sequential pass: copy the prefix through, keep the window around the cut.
    source_window win;
    win.channels = ch;
    win.len = static_cast<long>(data_end - ws);
    win.data.assign(static_cast<std::size_t>(win.len) * ch, 0.0f);
    long long frames_read = 0;
    std::string err;
    switch (plan.kind) {
        case sample_kind::int32:
            err = copy_prefix_and_capture<int>(in.get(), ch, read_end, cut, ws, wav.get(), mp3, win,
                                               frames_read);
            break;
        case sample_kind::float32:
            err = copy_prefix_and_capture<float>(in.get(), ch, read_end, cut, ws, wav.get(), mp3,
                                                 win, frames_read);
            break;
        case sample_kind::float64:
            err = copy_prefix_and_capture<double>(in.get(), ch, read_end, cut, ws, wav.get(), mp3,
                                                  win, frames_read);
            break;
    }
    if (!err.empty())
        return fail(err);
    in.reset();
    if (frames_read < read_end) {
        // The header promised more than the stream holds (estimated lengths, truncated files):
        // accept a shortfall of up to a second before the cut, and cut where the audio ends.
        if (cut - frames_read > sr)
            return fail("the input ends at " + seconds_text(static_cast<double>(frames_read) / sr) +
                        " s, before extend_after (truncated file?)");
        frames = frames_read;
        cut = std::min(cut, frames);
        we = std::min(we, frames);
        data_end = std::min(data_end, frames);
        if (data_end - ws <= 0 || we - ws <= 0)
            return fail("not a decodable audio file: no audio frames");
        win.len = static_cast<long>(data_end - ws);
    }

    // Mono of the window for analysis and alignment.
    std::vector<float> mono(static_cast<std::size_t>(win.len));
    for (long i = 0; i < win.len; ++i) {
        double s = 0;
        for (int c = 0; c < ch; ++c)
            s += win.data[static_cast<std::size_t>(i) * ch + c];
        mono[i] = static_cast<float>(s / ch);
    }
    const long cut_rel = static_cast<long>(cut - ws);
    const long avail = static_cast<long>(we - ws);  // analysis / loop source: [0, avail)
    const detail::beat_grid grid = detail::estimate_beats(mono.data(), avail, sr);

    // Candidate loops, in order of preference; the variant picks one.
    std::vector<candidate> cands;
    if (grid.bpm > 0) {
        static constexpr int kSpecs[][2] = {{8, 0}, {4, 0}, {8, 32}, {4, 16}, {2, 0},
                                            {2, 8}, {1, 0}, {4, 8},  {2, 4},  {1, 4},
                                            {1, 2}, {1, 1}, {1, 3}};  // {bars, beats of offset}
        const double beat = grid.period;
        for (const auto& spec : kSpecs) {
            const double span = spec[0] * 4 * beat, off = spec[1] * beat;
            double ls = 0, le = 0;
            if (backward) {
                const double anchor =
                    grid.phase + std::floor((cut_rel - grid.phase) / beat) * beat;  // beat <= cut
                le = anchor - off;
                ls = le - span;
            } else {
                // From the first beat of the song; a beat estimated a hair before 0 is at 0.
                double first = grid.phase;
                if (first - beat >= -0.05 * beat)
                    first = std::max(0.0, first - beat);
                ls = first + off;
                le = ls + span;
            }
            if (ls >= 0 && le <= static_cast<double>(avail) && le - ls >= 4)
                cands.push_back({static_cast<long>(std::lround(ls)),
                                 static_cast<long>(std::lround(le)), spec[0]});
        }
    }
    // No beat, or too little material for two bar loops: loop what is there (so that variants
    // still get different loops).
    if (cands.size() < 2) {
        const long base = std::min<long>(avail, std::lround(8.0 * sr));
        const long specs[][2] = {
            {base, 0}, {base / 2, 0}, {base / 2, base / 2}, {base * 3 / 4, 0}, {base / 4, 0}};
        for (const auto& spec : specs) {
            const long len = spec[0], off = spec[1];
            if (len < 1)
                continue;
            const long ls = backward ? avail - off - len : off;
            const long le = ls + len;
            if (ls < 0 || le > avail)
                continue;
            if (std::none_of(cands.begin(), cands.end(),
                             [&](const candidate& c) { return c.ls == ls && c.le == le; }))
                cands.push_back({ls, le, 0});
        }
    }
    if (cands.empty())
        cands.push_back({0, std::max(1L, avail), 0});
    const candidate pick = cands[static_cast<std::size_t>(opt.variant - 1) % cands.size()];

    // Sample-accurate alignment of the loop boundary (moves the loop start, or for loops from the
    // song's start the loop end) so the waveforms around the seam match.
    loop_plan lp;
    lp.ls = pick.ls;
    lp.le = pick.le;
    {
        const long span = lp.le - lp.ls;
        long radius = pick.bars > 0
                          ? std::clamp<long>(std::lround(0.004 * span), std::lround(0.001 * sr),
                                             std::lround(0.015 * sr))
                          : std::lround(0.03 * sr);
        if (pick.bars > 0)
            radius = std::min<long>(radius, std::lround(grid.period / 8));
        radius = std::min(radius, span / 8);
        const long half_window = std::lround(0.02 * sr);
        if (radius > 0) {
            if (backward) {
                lp.ls +=
                    detail::best_alignment(mono.data(), win.len, lp.le, lp.ls, radius, half_window);
                lp.ls = std::clamp(lp.ls, 0L, lp.le - 1);
            } else {
                lp.le +=
                    detail::best_alignment(mono.data(), win.len, lp.ls, lp.le, radius, half_window);
                lp.le = std::clamp(lp.le, lp.ls + 1, win.len);
            }
        }
    }
    lp.period = lp.le - lp.ls;
    lp.xfade = std::min<long>(xfade_nominal, lp.period / 4);
    if (lp.xfade > 0) {
        const long lo = std::max(-lp.xfade, -lp.ls);
        const long hi = std::min(0L, win.len - lp.le - lp.xfade);
        lp.j0 = lo <= hi ? std::clamp(-lp.xfade / 2, lo, hi) : lo;
        double ab = 0, aa = 0, bb = 0;
        for (long j = lp.j0; j < lp.j0 + lp.xfade; ++j)
            for (int c = 0; c < ch; ++c) {
                const double a = win.at(lp.le + j, c), b = win.at(lp.ls + j, c);
                ab += a * b;
                aa += a * a;
                bb += b * b;
            }
        crossfade_gains(lp.xfade, aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0, lp.g_out,
                        lp.g_in);
    }
    // Loop time at the first continuation sample: keeps the song's beat phase across the cut.
    const long long start_off =
        backward ? ((cut_rel - lp.ls) % lp.period + lp.period) % lp.period : 0;

    // The cut seam: the original's tail past the cut fades into the continuation.
    std::vector<float> cut_out, cut_in;
    const long cut_x = backward ? static_cast<long>(std::min<long long>(xfade_nominal, length)) : 0;
    std::vector<float> frame(static_cast<std::size_t>(ch));
    if (cut_x > 0) {
        double ab = 0, aa = 0, bb = 0;
        for (long k = 0; k < cut_x; ++k) {
            loop_value(win, lp, start_off + k, frame.data());
            for (int c = 0; c < ch; ++c) {
                const double a = win.at(cut_rel + k, c), b = frame[c];
                ab += a * b;
                aa += a * a;
                bb += b * b;
            }
        }
        crossfade_gains(cut_x, aa > 0 && bb > 0 ? ab / std::sqrt(aa * bb) : 0.0, cut_out, cut_in);
    }
    const long long fade_out = std::min<long long>(std::llround(kFadeOutSeconds * sr), length);
    const long long fade_in =
        backward ? 0 : std::min<long long>(std::llround(kFadeInSeconds * sr), length);

    // Generate and write the continuation.
    std::vector<float> block(static_cast<std::size_t>(kBlock * ch));
    std::vector<int> iblock(plan.kind == sample_kind::int32 ? block.size() : 0);
    const quantizer quantize(plan.bits);
    for (long long k0 = 0; k0 < length; k0 += kBlock) {
        const sf_count_t n = std::min<long long>(kBlock, length - k0);
        for (sf_count_t i = 0; i < n; ++i) {
            const long long k = k0 + i;
            float* out = block.data() + i * ch;
            loop_value(win, lp, start_off + k, out);
            double gain = 1;
            if (k < cut_x) {
                for (int c = 0; c < ch; ++c)
                    out[c] =
                        cut_out[k] * win.at(cut_rel + static_cast<long>(k), c) + cut_in[k] * out[c];
            }
            if (k < fade_in) {
                const double s = std::sin(std::numbers::pi / 2 * (k + 0.5) / fade_in);
                gain *= s * s;
            }
            if (k >= length - fade_out) {
                const double c = std::cos(std::numbers::pi / 2 *
                                          static_cast<double>(k - (length - fade_out) + 1) /
                                          static_cast<double>(fade_out));
                gain *= c * c;
            }
            if (gain != 1)
                for (int c = 0; c < ch; ++c)
                    out[c] = static_cast<float>(out[c] * gain);
        }
        bool ok = true;
        if (plan.kind == sample_kind::int32) {
            for (sf_count_t i = 0; i < n * ch; ++i)
                iblock[i] = quantize(block[i]);
            ok = sf_writef_int(wav.get(), iblock.data(), n) == n;
        } else {
            ok = sf_writef_float(wav.get(), block.data(), n) == n;
        }
        if (!ok)
            return fail("failed to write the WAV output");
        if (!mp3.write(block.data(), n))
            return fail("failed to write the MP3 output");
    }
    if (sf_close(wav.release()) != 0)
        return fail("failed to finish the WAV output");
    if (std::string e = mp3.close(); !e.empty())
        return fail(e);
    guard.commit();

    res.ok = true;
    res.duration_seconds = static_cast<double>(cut + length) / sr;
    res.tempo_bpm = pick.bars > 0 ? grid.bpm : 0;
    res.loop_start = static_cast<double>(ws + lp.ls) / sr;
    res.loop_end = static_cast<double>(ws + lp.le) / sr;
    if (pick.bars > 0) {
        res.method = "beat-aligned crossfaded loop, " + std::to_string(pick.bars) +
                     (pick.bars == 1 ? " bar" : " bars") + " (DSP, not AI)";
    } else {
        res.method = std::string("crossfaded loop, ") +
                     (grid.bpm > 0 ? "not beat-aligned (too little material for bar loops)"
                                   : "no steady beat found") +
                     " (DSP, not AI)";
    }
    return res;
}

}  // namespace

std::string_view content_type_for_format(std::string_view format) {
    // IANA audio/* types (RFC 3003 mpeg, RFC 2361 wav as browsers send it, RFC 9639 flac,
    // RFC 5334 ogg); Opus here is always in an Ogg container.
    static constexpr std::pair<std::string_view, std::string_view> table[] = {
        {"mp3", "audio/mpeg"}, {"mp2", "audio/mpeg"}, {"mp1", "audio/mpeg"},
        {"wav", "audio/wav"},  {"rf64", "audio/wav"}, {"flac", "audio/flac"},
        {"ogg", "audio/ogg"},  {"opus", "audio/ogg"}, {"aiff", "audio/aiff"},
        {"au", "audio/basic"},
    };
    for (const auto& [f, type] : table)
        if (f == format)
            return type;
    return "application/octet-stream";
}

probe_result probe(const std::string& path) {
    probe_result r;
    try {
        std::error_code ec;
        const auto st = fs::status(path, ec);
        if (ec || !fs::exists(st)) {
            r.error = "cannot open " + path + ": no such file";
            return r;
        }
        if (!fs::is_regular_file(st)) {
            r.error = "not a decodable audio file: " + path + " is not a regular file";
            return r;
        }
        if (fs::file_size(path, ec) == 0 && !ec) {
            r.error = "not a decodable audio file: the file is empty";
            return r;
        }
        SF_INFO info{};
        sf_handle f = open_source(path, info);
        if (!f) {
            r.error = "not a decodable audio file: " + std::string(sf_strerror(nullptr));
            return r;
        }
        if (info.samplerate <= 0 || info.channels <= 0) {
            r.error = "not a decodable audio file: invalid sample rate or channel count";
            return r;
        }
        // Decode a first block: a header alone does not make a song.
        std::vector<float> buf(static_cast<std::size_t>(4096) * info.channels);
        const sf_count_t got = sf_readf_float(f.get(), buf.data(), 4096);
        if (info.frames <= 0 || got <= 0) {
            r.error = "not a decodable audio file: no audio frames";
            return r;
        }
        if (info.frames >= SF_COUNT_MAX / 2) {  // length unknown (streamed formats): count
            info.frames = got;
            for (sf_count_t n; (n = sf_readf_float(f.get(), buf.data(), 4096)) > 0;)
                info.frames += n;
        }
        r.ok = true;
        r.sample_rate = info.samplerate;
        r.channels = info.channels;
        r.frames = info.frames;
        r.duration_seconds = static_cast<double>(info.frames) / info.samplerate;
        r.format = format_name(info.format);
        return r;
    } catch (const std::exception& e) {
        r = probe_result{};
        r.error = std::string("probe failed: ") + e.what();
        return r;
    } catch (...) {
        r = probe_result{};
        r.error = "probe failed";
        return r;
    }
}

extend_result extend(const std::string& input_path, const std::string& wav_path,
                     const std::string& mp3_path, const extend_options& options) {
    try {
        return extend_impl(input_path, wav_path, mp3_path, options);
    } catch (const std::bad_alloc&) {
        extend_result r;
        r.error = "out of memory";
        return r;
    } catch (const std::exception& e) {
        extend_result r;
        r.error = std::string("extend failed: ") + e.what();
        return r;
    } catch (...) {
        extend_result r;
        r.error = "extend failed";
        return r;
    }
}

}  // namespace segue::audio

#pragma once

// Audio library behind the offline DSP provider: probing uploaded songs and extending them
// with a DSP continuation (a beat-aligned, crossfaded loop of material taken from the song
// itself). No AI, no network. Everything here is synchronous, meant for worker threads, and never
// throws: errors come back as values.

#include <cstdint>
#include <string>
#include <string_view>

namespace segue::audio {

struct probe_result {
    bool ok = false;
    std::string error;  // human readable when !ok ("not a decodable audio file: ...")
    double duration_seconds = 0;
    int sample_rate = 0;
    int channels = 0;
    std::int64_t frames = 0;
    std::string format;  // "wav", "mp3", "flac", "ogg", "opus", "aiff", ...
};

// Opens `path` and reads its header plus the first block of audio. A file without any audio frame
// is reported as !ok. MP3s are read gapless here and in extend(): the encoder and decoder delay
// is removed (from the LAME tag, else the usual 529 + 576 samples), so sample n of the decoded
// MP3 is sample n of the audio that was encoded.
probe_result probe(const std::string& path);

// The media type to serve a file of a probed format with ("mp3" -> "audio/mpeg", "wav" ->
// "audio/wav", "flac" -> "audio/flac", "ogg" and "opus" -> "audio/ogg", ...);
// "application/octet-stream" for a format without a registered audio type.
std::string_view content_type_for_format(std::string_view format);

struct extend_options {
    double extend_after = 0;  // seconds; 0 <= extend_after <= duration
    double length = 30;       // seconds of new audio; 0 < length <= 3600
    int variant = 1;          // 1, 2, ...: different continuations
};

struct extend_result {
    bool ok = false;
    std::string error;
    double duration_seconds = 0;          // of the output = extend_after + length (±1 frame)
    double tempo_bpm = 0;                 // estimate used for beat alignment (0 if none found)
    double loop_start = 0, loop_end = 0;  // seconds, the source segment looped
    std::string method;  // e.g. "beat-aligned crossfaded loop, 8 bars (DSP, not AI)"
};

// Writes `wav_path` and `mp3_path`: the input's first `extend_after` seconds, unchanged, followed
// by `length` seconds of continuation. The WAV keeps the input's sample rate and channels. For
// integer PCM inputs (8/16/24/32-bit WAV, FLAC, AIFF, ...) the WAV keeps the bit depth and its
// first `extend_after` seconds are bit-identical to the input's samples; float WAV inputs are
// copied exactly as float; lossy inputs (MP3, Ogg, Opus) give a 16-bit WAV of the decoded samples.
// The MP3 (VBR) has the same content; inputs above 48 kHz or with more than two channels are
// resampled / downmixed for the MP3 only. On failure neither output file is left behind.
//
// Continuation: the tempo is estimated from an onset-strength envelope (autocorrelation,
// 60-180 BPM); a loop of whole bars (variant picks 8, 4, 2 or 1 bars and an offset) ending on the
// last beat before the cut is repeated with its beat phase continuing that of the song, with
// correlation-compensated equal-power crossfades (50 ms) at every loop boundary and at the cut
// (where the original's own tail past the cut is faded out), and a 1 s fade-out at the end. With no
// steady beat, or too little material before the cut for bar loops, the material before the cut
// is looped as is (still crossfaded); with extend_after == 0 the continuation loops the first bars
// of the song. Only the last 48 s before the cut are held in memory; the prefix streams through.
extend_result extend(const std::string& input_path, const std::string& wav_path,
                     const std::string& mp3_path, const extend_options& options);

// Test/bench helper: writes a synthetic song (kick on every beat, snare on 2 and 4, hi-hats and
// bass on eighths, a pad following a 4-bar chord cycle and a non-repeating melody) of `seconds` at
// `bpm` to `path` in the given format ("wav" 16-bit PCM, "mp3", "flac" 16-bit, "ogg" Vorbis).
// Deterministic. `gain` (0..1) scales it; 0 writes digital silence. Returns false on failure.
bool write_test_song(const std::string& path, double seconds, int sample_rate, int channels,
                     double bpm, const std::string& format, double gain = 1.0);

}  // namespace segue::audio

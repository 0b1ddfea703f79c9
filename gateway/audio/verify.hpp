#pragma once

// Output verification: decodes a whole audio file (streamed, a block at a time) and measures what
// a user of a generated song would want to know before trusting it: its real length, format,
// peak and loudness, and whether it is silent, cut short, far from the length asked for, or
// jumps at the point where the original song hands over to the new part. Synchronous, for worker
// threads; never throws.

#include <cstdint>
#include <optional>
#include <string>
#include <vector>

namespace segue::audio {

struct verify_options {
    // What the provider said the output lasts (its metadata); a decode far shorter is truncated.
    std::optional<double> reported_duration;
    // extend_after + length, when the request gave a length: a duration far from it is flagged.
    std::optional<double> expected_duration;
    // extend_after: where the original ends and the continuation begins (the splice point).
    std::optional<double> splice_at;
};

// Level and brightness just before and just after the splice point (windows of up to 0.5 s of
// the mono mix). Brightness is the RMS of the first difference over the RMS of the signal: a
// crude spectral tilt measure, high for bright or noisy audio, low for dull audio.
struct splice_check {
    bool checked = false;  // false: the splice point is not inside the decoded audio
    double at = 0;
    double level_before_dbfs = 0, level_after_dbfs = 0;
    double level_jump_db = 0;     // after - before
    double brightness_ratio = 1;  // after / before
};

struct verification {
    bool ok = false;    // decoded at all
    std::string error;  // why not
    std::string format;
    double duration = 0;  // of what decoded
    int sample_rate = 0;
    int channels = 0;
    std::int64_t frames = 0;         // decoded
    std::int64_t header_frames = 0;  // what the header promised (0: unknown)
    // Sample peak (not true peak) in dBFS; nullopt for digital silence.
    std::optional<double> peak_dbfs;
    // Integrated loudness per ITU-R BS.1770-4 (K-weighted, 400 ms blocks, absolute gate -70
    // LUFS, relative gate -10 LU), every channel weighted 1.0 (no surround weights); nullopt when
    // no block passes the gates (silence, or under 0.4 s of audio).
    std::optional<double> loudness_lufs;
    splice_check splice;
    // "undecodable", "silent" (peak under -60 dBFS), "truncated" (the decode ended well before
    // the header's frame count or the reported duration), "duration_mismatch" (more than
    // max(2 s, 10 %) from the expected duration), "splice_discontinuity" (a level jump over
    // 10 dB or a brightness ratio beyond 3x either way at the splice point).
    std::vector<std::string> flags;
};

verification verify(const std::string& path, const verify_options& options);

}  // namespace segue::audio

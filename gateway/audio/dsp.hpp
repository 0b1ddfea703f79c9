#pragma once

// Internal DSP helpers of segue::audio (tempo estimation, alignment, resampling). Not part of the
// public API; exposed in a header so that they can be unit tested.

#include <cstddef>
#include <vector>

namespace segue::audio::detail {

struct beat_grid {
    double bpm = 0;         // 0: no steady beat found
    double period = 0;      // samples per beat
    double phase = 0;       // position (samples) of a beat, 0 <= phase < period
    double confidence = 0;  // normalised autocorrelation of the onset envelope at the period
};

// Onset strength, one value per `hop` samples: positive flux of the compressed energy of three
// bands (< 150 Hz, 150 Hz - 2 kHz, > 2 kHz) smoothed over 4 hops.
std::vector<float> onset_envelope(const float* mono, std::size_t n, int sample_rate, int hop);

// Tempo and beat phase of `mono` (at least ~3 s needed): autocorrelation of the onset envelope,
// comb-summed over 4 multiples of the lag, with a broad prior around 120 BPM to pick the metrical
// level, restricted to 60-180 BPM, refined on longer lags; the phase maximises the onset strength
// summed on the grid.
beat_grid estimate_beats(const float* mono, std::size_t n, int sample_rate);

// The offset d in [-radius, radius] such that mono[moving + d + j] best matches mono[fixed + j]
// for j in [-half_window, half_window) (normalised cross-correlation with a mild preference for
// small |d|). Only indices in [0, len) are used; returns 0 when there is not enough signal.
long best_alignment(const float* mono, long len, long fixed, long moving, long radius,
                    long half_window);

// Streaming band-limited resampler (windowed sinc, interleaved float frames).
class resampler {
  public:
    resampler(int in_rate, int out_rate, int channels);
    // Appends the output frames that `frames` more input frames make available to `out`.
    void process(const float* in, std::size_t frames, std::vector<float>& out);
    // Appends the remaining output (total output = round(input frames * out_rate / in_rate)).
    void flush(std::vector<float>& out);

  private:
    void run(std::vector<float>& out, bool final);
    double kernel(double d) const;

    int channels_;
    double step_;        // input samples per output sample
    double half_width_;  // kernel half width, input samples
    std::vector<float> table_;
    double table_res_ = 256;
    std::vector<float> hist_;  // pending input, interleaved, starting at absolute frame base_
    long long base_ = 0;
    long long input_frames_ = 0;
    long long produced_ = 0;
};

}  // namespace segue::audio::detail

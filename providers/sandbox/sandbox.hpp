#pragma once
// The offline sandbox provider: no account, no network. It really extends the audio with DSP
// (gateway/audio: the input's first extend_after seconds, then a beat-aligned crossfaded loop
// of material from before the cut), writes WAV and MP3, makes a title, timestamped lyrics and a
// cover, and reports them like a real provider would, over time. It is not AI, and says so.

#include <chrono>
#include <string>

#include "gateway/config/settings.hpp"
#include "providers/provider.hpp"

namespace segue::providers {
struct descriptor;
}

namespace segue::providers::sandbox {

// This provider's block, providers.sandbox (declared, with bounds and docs, in descriptor.cpp).
struct sandbox_settings {
    bool enabled = true;
    config::duration delay = std::chrono::seconds(1);  // before it "starts" and between events
    double default_length = 30;
    double price = 0;  // credits per output
};

// Name, settings schema, price and factory (providers/builtin.cpp lists it).
const descriptor& provider_descriptor();

class sandbox_provider final : public provider {
  public:
    explicit sandbox_provider(sandbox_settings settings);
    std::string_view name() const override { return "sandbox"; }
    const capabilities& caps() const override { return caps_; }
    boost::asio::awaitable<update> submit(const task_view& task, services& svc) override;
    boost::asio::awaitable<update> poll(const task_view& task, services& svc) override;

  private:
    sandbox_settings settings_;
    capabilities caps_;
};

// Title and timestamped lyrics the sandbox gives an output (exposed for tests).
std::string make_title(const core::extend_request& r, int variant);
std::vector<core::lyric_line> make_timestamped_lyrics(const core::extend_request& r, double length);
std::string make_cover_svg(const std::string& seed, const std::string& title);

}  // namespace segue::providers::sandbox

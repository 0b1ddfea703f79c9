#pragma once
// MusicAPI.ai (producer): audio becomes a clip first (an asynchronous upload task), then the clip
// is extended (`extend_music`), then the extend task is polled until it succeeds or fails; a
// signed webhook, when configured, finishes it early. Polling runs through the engine's job
// table, so it survives restarts and spreads across replicas. The wire format is in
// transform.*; this class only does the calls, through the core's upstream client.
//
// File sources: MusicAPI takes no file upload, only `audio_url`. The gateway hands it a short-
// lived signed URL of its own for the spooled file (GET /v1/files/{id}?expires=…&sig=…, see
// services::signed_file_url), so nothing leaves the gateway except to whoever holds that URL
// until it expires (providers.musicapi.source_url_ttl). It needs api.public_base_url.

#include <chrono>
#include <string>

#include "gateway/config/settings.hpp"
#include "providers/provider.hpp"

namespace segue::providers {
struct descriptor;
}

namespace segue::providers::musicapi {

// This provider's block, providers.musicapi (declared, with bounds and docs, in descriptor.cpp).
struct musicapi_settings {
    bool enabled = false;
    std::string base_url = "https://api.musicapi.ai/api/v1";
    std::string api_key;         // secret
    std::string webhook_secret;  // secret; "" = no webhooks, polling only
    config::duration submit_timeout = std::chrono::seconds(60);
    config::duration poll_timeout = std::chrono::seconds(15);
    config::duration poll_initial = std::chrono::seconds(5);
    config::duration poll_max = std::chrono::seconds(30);
    double poll_multiplier = 1.5;
    double poll_jitter = 0.2;
    config::duration deadline = std::chrono::minutes(30);  // upload + extend, from submission
    config::duration source_url_ttl = std::chrono::minutes(30);
    config::duration webhook_tolerance = std::chrono::minutes(5);
    double price = 12;  // credits per output
};

// Name, settings schema, price and factory (providers/builtin.cpp lists it).
const descriptor& provider_descriptor();

class musicapi_provider final : public provider {
  public:
    explicit musicapi_provider(musicapi_settings settings);
    std::string_view name() const override { return "musicapi"; }
    const capabilities& caps() const override { return caps_; }
    boost::asio::awaitable<update> submit(const task_view& task, services& svc) override;
    boost::asio::awaitable<update> poll(const task_view& task, services& svc) override;
    std::optional<update> on_webhook(const task_view& task, const inbound_webhook& hook,
                                     webhook_refusal& refused) const override;

  private:
    boost::asio::awaitable<update> create_extend(const task_view& task, services& svc,
                                                 std::string state_json);
    std::int64_t next_poll_ms(int polls, std::optional<std::int64_t> retry_after_ms) const;

    musicapi_settings settings_;
    capabilities caps_;
};

}  // namespace segue::providers::musicapi

#pragma once
// MusicGPT: multipart (file) or JSON (URL) submit with a raw Authorization key, five webhooks per
// task (two audio, two timestamped lyrics, one cover; any order, possibly repeated) and byId
// polling to reconcile when webhooks are late or never come. The wire format is in transform.*;
// this class only does the calls, through the core's upstream client.

#include <chrono>
#include <string>

#include "gateway/config/settings.hpp"
#include "providers/provider.hpp"

namespace segue::providers {
struct descriptor;
}

namespace segue::providers::musicgpt {

// This provider's block, providers.musicgpt (declared, with bounds and docs, in descriptor.cpp).
struct musicgpt_settings {
    bool enabled = false;
    std::string base_url = "https://api.musicgpt.com/api/public";
    std::string api_key;                                        // secret
    config::duration submit_timeout = std::chrono::minutes(2);  // uploads can be large
    config::duration poll_timeout = std::chrono::seconds(15);
    // First byId reconcile when webhooks have not finished the task by then.
    config::duration reconcile_after = std::chrono::seconds(90);
    config::duration poll_interval = std::chrono::seconds(30);
    double price = 42;  // credits per output
};

// Name, settings schema, price and factory (providers/builtin.cpp lists it).
const descriptor& provider_descriptor();

class musicgpt_provider final : public provider {
  public:
    explicit musicgpt_provider(musicgpt_settings settings);
    std::string_view name() const override { return "musicgpt"; }
    const capabilities& caps() const override { return caps_; }
    boost::asio::awaitable<update> submit(const task_view& task, services& svc) override;
    boost::asio::awaitable<update> poll(const task_view& task, services& svc) override;
    std::optional<update> on_webhook(const task_view& task, const inbound_webhook& hook,
                                     webhook_refusal& refused) const override;

  private:
    musicgpt_settings settings_;
    capabilities caps_;
};

}  // namespace segue::providers::musicgpt

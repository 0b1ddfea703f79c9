#pragma once
// MusicGPT: multipart (file) or JSON (URL) submit with a raw Authorization key, five webhooks per
// task (two audio, two timestamped lyrics, one cover; any order, possibly repeated) and byId
// polling to reconcile when webhooks are late or never come. The wire format is in transform.*;
// this class only does the calls, through the core's upstream client.

#include "gateway/config/settings.hpp"
#include "providers/provider.hpp"

namespace segue::providers::musicgpt {

class musicgpt_provider final : public provider {
  public:
    explicit musicgpt_provider(config::musicgpt_settings settings);
    std::string_view name() const override { return "musicgpt"; }
    const capabilities& caps() const override { return caps_; }
    boost::asio::awaitable<update> submit(const task_view& task, services& svc) override;
    boost::asio::awaitable<update> poll(const task_view& task, services& svc) override;
    std::optional<update> on_webhook(const task_view& task, const inbound_webhook& hook,
                                     std::string& error) const override;

  private:
    config::musicgpt_settings settings_;
    capabilities caps_;
};

}  // namespace segue::providers::musicgpt

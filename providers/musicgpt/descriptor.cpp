// The musicgpt provider's descriptor: its settings block (providers.musicgpt), with bounds and
// docs.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "gateway/config/schema.hpp"
#include "providers/descriptor.hpp"
#include "providers/musicgpt/compat/compat.hpp"
#include "providers/musicgpt/musicgpt.hpp"

namespace segue::providers::musicgpt {
namespace {

using namespace std::chrono_literals;
using config::object_schema;

object_schema<musicgpt_settings> musicgpt_schema() {
    object_schema<musicgpt_settings> s;
    s.field("enabled", &musicgpt_settings::enabled, "Route requests to MusicGPT.").def(false);
    s.field("base_url", &musicgpt_settings::base_url,
            "MusicGPT's public API root (the fake in tests/fakes listens on plain http).")
        .def("https://api.musicgpt.com/api/public");
    s.field("api_key", &musicgpt_settings::api_key,
            "MusicGPT API key, sent raw in Authorization. Use ${MUSICGPT_API_KEY}.")
        .secret()
        .def("");
    s.field("submit_timeout", &musicgpt_settings::submit_timeout,
            "Deadline of one extend submission, upload included.")
        .def(2min)
        .range(1s, 30min);
    s.field("poll_timeout", &musicgpt_settings::poll_timeout, "Deadline of one byId query.")
        .def(15s)
        .range(1s, 5min);
    s.field("reconcile_after", &musicgpt_settings::reconcile_after,
            "After acceptance, when to ask byId if webhooks have not finished the task (a lost "
            "webhook never leaves a task hanging). Without public_base_url there are no webhooks "
            "and poll_interval applies from the start.")
        .def(90s)
        .range(1s, 24h);
    s.field("poll_interval", &musicgpt_settings::poll_interval,
            "Interval of later byId queries while the task runs.")
        .def(30s)
        .range(100ms, 1h);
    s.field("price", &musicgpt_settings::price,
            "Credits held per requested output when a task is routed here first, captured when "
            "the output is ready and released when it is not (see GET /v1/credits).")
        .def(42.0)
        .range(0.0, 1000000.0);

    s.validate([](const musicgpt_settings& m) -> std::optional<std::string> {
        if (m.enabled && m.api_key.empty())
            return "enabled needs an api_key";
        if (!is_http_url_with_host(m.base_url))
            return "base_url must be an http(s) URL with a host";
        return std::nullopt;
    });
    return s;
}

}  // namespace

const descriptor& provider_descriptor() {
    static const descriptor d = [] {
        auto d = make_descriptor<musicgpt_settings>(
            "musicgpt", "MusicGPT (multipart or JSON submit, webhooks, byId polling).",
            musicgpt_schema(),
            [](const musicgpt_settings& s) { return std::make_unique<musicgpt_provider>(s); });
        d.compat = compat::install;  // MusicGPT's own API, served by Segue
        return d;
    }();
    return d;
}

}  // namespace segue::providers::musicgpt

// The musicapi provider's descriptor: its settings block (providers.musicapi), with bounds and
// docs.

#include <chrono>
#include <memory>
#include <optional>
#include <string>

#include "gateway/config/schema.hpp"
#include "providers/descriptor.hpp"
#include "providers/musicapi/compat/compat.hpp"
#include "providers/musicapi/musicapi.hpp"

namespace segue::providers::musicapi {
namespace {

using namespace std::chrono_literals;
using config::object_schema;

object_schema<musicapi_settings> musicapi_schema() {
    object_schema<musicapi_settings> s;
    s.field("enabled", &musicapi_settings::enabled, "Route requests to MusicAPI.ai.").def(false);
    s.field("base_url", &musicapi_settings::base_url,
            "MusicAPI's API root, up to and including /api/v1 (the fake in tests/fakes listens "
            "on plain http).")
        .def("https://api.musicapi.ai/api/v1");
    s.field("api_key", &musicapi_settings::api_key,
            "MusicAPI key, sent as Authorization: Bearer <key>. Use ${MUSICAPI_API_KEY}.")
        .secret()
        .def("");
    s.field("webhook_secret", &musicapi_settings::webhook_secret,
            "Secret MusicAPI signs its webhooks with (X-Webhook-Signature: sha256=HMAC of "
            "\"timestamp.body\"). When set, and api.public_base_url makes the gateway reachable, "
            "extends ask for a webhook and a verified one finishes the task early; polling "
            "continues regardless. Empty: polling only.")
        .secret()
        .def("");
    s.field("submit_timeout", &musicapi_settings::submit_timeout,
            "Deadline of one upload or create call.")
        .def(60s)
        .range(1s, 30min);
    s.field("poll_timeout", &musicapi_settings::poll_timeout, "Deadline of one task query.")
        .def(15s)
        .range(1s, 5min);
    s.field("poll_initial", &musicapi_settings::poll_initial,
            "First delay between task queries; it grows by poll_multiplier up to poll_max.")
        .def(5s)
        .range(10ms, 1h);
    s.field("poll_max", &musicapi_settings::poll_max, "Longest delay between task queries.")
        .def(30s)
        .range(10ms, 1h);
    s.field("poll_multiplier", &musicapi_settings::poll_multiplier,
            "Growth of the delay between task queries.")
        .def(1.5)
        .range(1.0, 10.0);
    s.field("poll_jitter", &musicapi_settings::poll_jitter,
            "Fraction of each delay that is randomized, so replicas and tasks spread out.")
        .def(0.2)
        .range(0.0, 1.0);
    s.field("deadline", &musicapi_settings::deadline,
            "Overall time from submission (upload included) after which a task still running "
            "upstream fails with upstream_deadline, class transient. retry.attempt_deadline "
            "bounds the upload and the extend attempt each as well: whichever ends first.")
        .def(30min)
        .range(1s, 48h);
    s.field("source_url_ttl", &musicapi_settings::source_url_ttl,
            "Lifetime of the signed URL MusicAPI downloads an uploaded file from (file sources).")
        .def(30min)
        .range(10s, 24h);
    s.field("webhook_tolerance", &musicapi_settings::webhook_tolerance,
            "Inbound webhooks whose X-Webhook-Timestamp is further than this from now are "
            "refused (replay guard).")
        .def(5min)
        .range(1s, 1h);
    s.field("price", &musicapi_settings::price,
            "Credits held per requested output when a task is routed here first, captured when "
            "the output is ready and released when it is not (see GET /v1/credits).")
        .def(12.0)
        .range(0.0, 1000000.0);
    s.validate([](const musicapi_settings& m) -> std::optional<std::string> {
        if (m.enabled && m.api_key.empty())
            return "enabled needs an api_key";
        if (!is_http_url_with_host(m.base_url))
            return "base_url must be an http(s) URL with a host";
        if (m.poll_max < m.poll_initial)
            return "poll_max must be at least poll_initial";
        return std::nullopt;
    });
    return s;
}

}  // namespace

const descriptor& provider_descriptor() {
    static const descriptor d = [] {
        auto d = make_descriptor<musicapi_settings>(
            "musicapi",
            "MusicAPI.ai producer (upload to a clip, extend_music, polled task, signed webhooks).",
            musicapi_schema(),
            [](const musicapi_settings& s) { return std::make_unique<musicapi_provider>(s); });
        d.compat = compat::install;  // MusicAPI's own API, served by Segue
        return d;
    }();
    return d;
}

}  // namespace segue::providers::musicapi

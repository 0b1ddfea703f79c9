#include "providers/musicapi/musicapi.hpp"

#include <chrono>
#include <random>

#include "gateway/core/backoff.hpp"
#include "gateway/net/http_client.hpp"
#include "providers/common/transport.hpp"
#include "providers/common/wire.hpp"
#include "providers/musicapi/transform.hpp"

namespace segue::providers::musicapi {
namespace {

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

using wire::failed;

update transport_failure(const net::result& r, std::string_view what) {
    return wire::transport_failure(r, "MusicAPI", what);
}

}  // namespace

musicapi_provider::musicapi_provider(musicapi_settings settings) : settings_(std::move(settings)) {
    caps_.source_file = true;  // through a signed URL of our own (needs api.public_base_url)
    caps_.file_by_public_url = true;
    caps_.source_url = true;
    caps_.source_clip = true;
    caps_.length = true;
    // MusicAPI decides how many clips an extend makes. Asking for two is accepted with a
    // warning, and an output it does not make then fails as "not produced"; with num_outputs
    // left out, the clips it did not make are dropped from the task instead.
    caps_.max_outputs = 2;
    caps_.output_count_varies = true;
    caps_.webhooks = !settings_.webhook_secret.empty();
    caps_.polling = true;
    // No lookup by our reference exists: only a webhook can show an ambiguous create.
    caps_.reconcile_window_ms = settings_.poll_max.count();
}

std::int64_t musicapi_provider::next_poll_ms(int polls,
                                             std::optional<std::int64_t> retry_after_ms) const {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    core::backoff_policy p;
    p.initial_ms = settings_.poll_initial.count();
    p.max_ms = settings_.poll_max.count();
    p.multiplier = settings_.poll_multiplier;
    p.jitter = settings_.poll_jitter;
    const auto delay = core::backoff_delay_ms(p, polls, rng);
    // A Retry-After lengthens the wait, up to the overall deadline at most.
    return core::apply_retry_after(delay, retry_after_ms, settings_.deadline.count());
}

boost::asio::awaitable<update> musicapi_provider::submit(const task_view& task, services& svc) {
    attempt_state st;
    st.started_ms = now_ms();

    // The second step: the upload of an earlier attempt made the clip; the extend create is
    // this attempt's own call (the core recorded its intent before calling).
    if (auto prepared = parse_state(task.state_json);
        prepared.phase == "extend" && !prepared.clip_id.empty()) {
        prepared.polls = 0;
        prepared.task_id.clear();
        prepared.callback_url.clear();
        if (prepared.started_ms == 0)
            prepared.started_ms = st.started_ms;
        co_return co_await create_extend(task, svc, state_to_json(prepared));
    }

    if (task.request.source == core::source_kind::clip) {
        st.clip_id = task.request.clip_id;
        st.phase = "extend";
        auto u = co_await create_extend(task, svc, state_to_json(st));
        co_return u;
    }

    std::string audio_url;
    if (task.request.source == core::source_kind::url) {
        audio_url = task.request.audio_url;
    } else {
        if (!svc.signed_file_url || task.request.audio_file_id.empty())
            co_return failed(core::error_class::rejected, "file_source_unreachable",
                             "MusicAPI downloads audio from a URL: file uploads need "
                             "api.public_base_url so it can fetch the file from the gateway");
        audio_url = svc.signed_file_url(
            task.request.audio_file_id,
            std::chrono::duration_cast<std::chrono::seconds>(settings_.source_url_ttl));
    }

    net::request req;
    req.method = "POST";
    req.url = settings_.base_url + std::string(upload_path);
    req.metrics_host = "musicapi";
    req.headers = {{"Authorization", authorization_value(settings_.api_key)},
                   {"Accept", "application/json"},
                   {"Content-Type", "application/json"}};
    req.body = build_upload(audio_url);
    req.timeout = settings_.submit_timeout;
    auto r = co_await svc.http->send(std::move(req));
    if (!r.ok())
        co_return transport_failure(r, "upload");
    auto u = parse_upload_response(r.res.status, r.res.body, r.res.headers, now_ms());
    u.ambiguous = u.what == update::kind::failed && u.error_code == "malformed_response";
    if (u.what != update::kind::accepted)
        co_return u;
    auto up = parse_state(u.state_json);
    up.started_ms = st.started_ms;
    up.callback_url.clear();
    u.method = "musicapi producer extend_music";
    if (!up.clip_id.empty()) {
        // A synchronous upload: the clip exists already. The create is its own attempt.
        up.phase = "extend";
        u.what = update::kind::prepared;
        u.state_json = state_to_json(up);
        co_return u;
    }
    u.state_json = state_to_json(up);
    u.poll_after_ms = next_poll_ms(0, std::nullopt);
    co_return u;
}

boost::asio::awaitable<update> musicapi_provider::create_extend(const task_view& task,
                                                                services& svc,
                                                                std::string state_json) {
    auto st = parse_state(state_json);
    // This attempt's webhook URL comes from the core with the call, never from the persisted
    // state: it holds the attempt's secret callback token.
    const std::string callback = settings_.webhook_secret.empty() ? "" : task.callback_url;
    auto body = build_extend(task.request, st.clip_id, callback,
                             callback.empty() ? "" : settings_.webhook_secret);
    if (!body.ok) {
        auto u = failed(core::error_class::rejected, body.error_code, body.error);
        u.warnings = body.warnings;
        co_return u;
    }
    net::request req;
    req.method = "POST";
    req.url = settings_.base_url + std::string(create_path);
    req.metrics_host = "musicapi";
    req.headers = {{"Authorization", authorization_value(settings_.api_key)},
                   {"Accept", "application/json"},
                   {"Content-Type", "application/json"}};
    req.body = body.json_body;
    req.timeout = settings_.submit_timeout;
    auto r = co_await svc.http->send(std::move(req));
    update u;
    if (!r.ok()) {
        u = transport_failure(r, "create extend_music");
    } else {
        u = parse_create_response(state_json, r.res.status, r.res.body, r.res.headers, now_ms());
        u.ambiguous = u.what == update::kind::failed && u.error_code == "malformed_response";
        if (u.what == update::kind::accepted) {
            // parse_create_response keeps the fields it knows; keep ours too.
            auto next = parse_state(u.state_json);
            next.started_ms = st.started_ms;
            next.callback_url.clear();
            u.state_json = state_to_json(next);
            u.poll_after_ms = next_poll_ms(0, std::nullopt);
        }
    }
    u.method = "musicapi producer extend_music";
    for (auto& w : body.warnings)
        u.warnings.push_back(w);
    co_return u;
}

boost::asio::awaitable<update> musicapi_provider::poll(const task_view& task, services& svc) {
    auto st = parse_state(task.state_json);
    const auto now = now_ms();
    if (st.started_ms != 0 && now - st.started_ms > settings_.deadline.count())
        co_return failed(core::error_class::transient, "upstream_deadline",
                         "MusicAPI did not finish within providers.musicapi.deadline (" +
                             std::to_string(settings_.deadline.count() / 1000) + " s)");

    const bool uploading = st.phase == "upload";
    const std::string id =
        uploading ? st.upload_task_id : (st.task_id.empty() ? task.provider_task_id : st.task_id);
    if (id.empty()) {
        // Known upstream only by a callback that named no task (engine reconcile): nothing to
        // ask by yet.
        update u;
        u.what = update::kind::running;
        u.poll_after_ms = settings_.poll_max.count();
        co_return u;
    }
    net::request req;
    req.url = settings_.base_url + task_path(id);
    req.headers = {{"Authorization", authorization_value(settings_.api_key)},
                   {"Accept", "application/json"}};
    req.timeout = settings_.poll_timeout;
    req.metrics_host = "musicapi";
    auto r = co_await svc.http->send(std::move(req));
    if (!r.ok()) {
        // A failed poll is not a failed task: try again later (the deadline bounds it).
        update u;
        u.what = update::kind::running;
        st.polls += 1;
        u.state_json = state_to_json(st);
        u.poll_after_ms = next_poll_ms(st.polls, std::nullopt);
        co_return u;
    }

    if (uploading) {
        auto p = parse_upload_task(r.res.status, r.res.body, r.res.headers, now);
        switch (p.what) {
            case upload_poll::kind::failed: {
                auto u = std::move(p.failure);
                u.provider_task_id = st.upload_task_id;
                co_return u;
            }
            case upload_poll::kind::running: {
                update u =
                    p.failure.what == update::kind::running ? std::move(p.failure) : update{};
                u.what = update::kind::running;
                st.polls += 1;
                u.state_json = state_to_json(st);
                u.poll_after_ms = next_poll_ms(st.polls, p.retry_after_ms);
                co_return u;
            }
            case upload_poll::kind::ready:
                break;
        }
        // The clip exists. The extend create is a new, non-idempotent request: hand it back to
        // the core, which records its intent and runs it as a submit of its own attempt.
        st.clip_id = p.clip_id;
        st.clip_duration = p.duration;
        st.phase = "extend";
        st.polls = 0;
        st.callback_url.clear();  // the create's attempt brings its own
        update u;
        u.what = update::kind::prepared;
        u.state_json = state_to_json(st);
        u.method = "musicapi producer extend_music";
        co_return u;
    }

    auto u = parse_extend_task(task.state_json, r.res.status, r.res.body, r.res.headers, now);
    if (u.what == update::kind::running) {
        auto next = parse_state(u.state_json.empty() ? task.state_json : u.state_json);
        u.poll_after_ms = next_poll_ms(next.polls, u.retry_after_ms);
    }
    co_return u;
}

std::optional<update> musicapi_provider::on_webhook(const task_view& task,
                                                    const inbound_webhook& hook,
                                                    webhook_refusal& refused) const {
    std::string& error = refused.message;
    if (settings_.webhook_secret.empty()) {
        error = "webhooks are not configured (providers.musicapi.webhook_secret)";
        return std::nullopt;
    }
    const auto now_s = now_ms() / 1000;
    const auto tolerance_s =
        std::chrono::duration_cast<std::chrono::seconds>(settings_.webhook_tolerance).count();
    if (!verify_webhook_signature(settings_.webhook_secret, hook.headers, hook.body, now_s,
                                  tolerance_s, error))
        return std::nullopt;
    return parse_webhook(task.state_json, hook.body, error);
}

}  // namespace segue::providers::musicapi

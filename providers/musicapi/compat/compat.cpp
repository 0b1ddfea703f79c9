#include "providers/musicapi/compat/compat.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cstdio>
#include <memory>

#include "gateway/api/auth.hpp"
#include "gateway/api/common.hpp"
#include "gateway/api/create_flow.hpp"
#include "gateway/config/settings.hpp"
#include "gateway/core/json.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/multipart.hpp"
#include "gateway/http/router.hpp"
#include "gateway/net/url_guard.hpp"
#include "gateway/util/crypto.hpp"
#include "gateway/util/json_keys.hpp"
#include "gateway/util/json_text.hpp"
#include "gateway/util/text.hpp"
#include "providers/musicapi/transform.hpp"
#include "providers/registry.hpp"

namespace segue::providers::musicapi::compat {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

constexpr std::string_view provider_name = "musicapi";
constexpr std::string_view upload_prefix = "upl_";
constexpr std::size_t max_upload_url = 2048;
// The body of an upload: {"audio_url"} with room to spare.
constexpr std::uint64_t max_upload_body = 64 * 1024;

// MusicAPI's verbatim messages (docs.musicapi.ai/error-handling).
constexpr std::string_view msg_no_auth = "Authorization header is missing.";
constexpr std::string_view msg_bad_auth = "Invalid authorization format.";
constexpr std::string_view msg_credits =
    "The remaining credits are not enough. You can buy more one-time credit packs or subscribe.";
constexpr std::string_view msg_not_found = "task not found.";
constexpr std::string_view msg_missing_id = "missing task id.";

std::string text(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

std::string body_of(int code, std::string_view message) {
    return util::json_text(json::object{{"code", code}, {"message", message}});
}

void answer(http::context& ctx, int status, std::string body) {
    ctx.res().status = status;
    ctx.res().content_type = "application/json";
    ctx.res().body = std::move(body);
}

std::string base64url(std::string_view raw) {
    std::string s = util::base64_encode(raw);
    for (auto& c : s)
        c = c == '+' ? '-' : c == '/' ? '_' : c;
    while (!s.empty() && s.back() == '=')
        s.pop_back();
    return s;
}

std::optional<std::string> unbase64url(std::string_view text) {
    std::string s(text);
    for (auto& c : s) {
        if (c == '+' || c == '/')
            return std::nullopt;
        c = c == '-' ? '+' : c == '_' ? '/' : c;
    }
    std::string out;
    if (!util::base64_decode(s, out))
        return std::nullopt;
    return out;
}

std::string upload_key(std::string_view key) {
    return util::hmac_sha256(key, "musicapi-upload-key");  // 32 bytes: AES-256's key
}

std::string upload_aad(std::string_view tenant) {
    return "musicapi-upload\n" + std::string(tenant);
}

std::string upload_signature(std::string_view key, std::string_view tenant, std::string_view url) {
    return util::hex_encode(util::hmac_sha256(key, "musicapi-upload\n" + std::string(tenant) +
                                                       "\n" + std::string(url)))
        .substr(0, 32);
}

// The task's status in MusicAPI's newer shape.
std::string_view status_of(std::string_view s) {
    return api::status_in(s, {spelling::status_pending, spelling::status_running,
                              spelling::status_success, spelling::status_failed});
}

// A field of Segue's request by MusicAPI's name for it (what a MusicAPI client sent): in
// field errors, and as the first word of a failed task's reason ("extend_after (45 s) is ...").
std::string field_name(const std::string& f) {
    if (f == "extend_after")
        return "starts_at";
    if (f == "prompt")
        return "instruction";
    if (f == "clip" || f.rfind("clip.", 0) == 0 || f == "audio_url" || f == "audio_file")
        return "clip_id";
    return f;
}

std::string task_error(const store::task_row& t, const std::vector<store::output_row>& outputs) {
    std::string m = api::failure_message(t, outputs);
    if (m.empty())
        m = t.status == "canceled" ? "the task was canceled" : "the task failed";
    // A reason about the request's own field in MusicAPI's name for it (found by a black-box
    // run: a client that sent starts_at read "extend_after (45.000 s) is beyond ...").
    if (const auto sp = m.find(' '); sp != std::string::npos) {
        const std::string first = m.substr(0, sp);
        if (const auto own = field_name(first); own != first)
            m.replace(0, sp, own);
    }
    // Segue releases what it held for outputs not produced (extension.credits.refunded).
    while (!m.empty() && (m.back() == '.' || m.back() == ' '))
        m.pop_back();  // a message that ends its own sentence: "(30 s).. Credits" otherwise
    // MusicAPI's own failure message may say so already ("Credits have been refunded").
    std::string lower(m);
    std::transform(lower.begin(), lower.end(), lower.begin(), util::ascii_lower);
    if (lower.find("refunded") != std::string::npos)
        return m + ".";
    return m + ". Credits were refunded.";
}

// The id a client sees for output `o`: MusicAPI's own clip id for what MusicAPI made (so it
// can be extended there again), else "<task id>-N".
std::string clip_id_of(const store::task_row& t, const store::output_row& o,
                       const json::object& d) {
    if (t.provider == provider_name)
        if (auto id = text(d, "provider_output_id"); !id.empty())
            return id;
    return api::output_id(t.id, o.index);
}

// One clip of a task: both shapes' fields (legacy `state`, newer `audio_url`/`wav_url`).
json::object clip_of(const store::task_row& t, const store::output_row& o,
                     const config::settings& settings, bool duration_as_text) {
    const auto d = api::output_data(o);
    json::object c;
    c["clip_id"] = clip_id_of(t, o, d);
    std::string_view state = spelling::state_pending;
    if (o.status == "ready")
        state = spelling::state_succeeded;
    else if (o.status == "failed" || o.status == "canceled")
        state = spelling::state_failed;
    else if (t.status == "running")
        state = spelling::state_running;
    c["state"] = state;
    c["title"] = text(d, "title");
    c["tags"] = "";
    c["lyrics"] = text(d, "lyrics");
    c["image_url"] = api::public_url(settings, text(d, "cover_url"));
    c["audio_url"] = api::public_audio_url(settings, d, "mp3");
    c["wav_url"] = api::public_audio_url(settings, d, "wav");
    c["video_url"] = "";
    c["created_at"] = core::iso8601(t.created_at);
    c["mv"] = "";
    json::value duration = nullptr;
    if (const auto* a = d.if_contains("audio"); a && a->is_object())
        if (const auto* x = a->as_object().if_contains("duration"); x && x->is_number())
            duration = *x;
    if (duration_as_text && duration.is_number()) {
        char buf[32];
        std::snprintf(buf, sizeof buf, "%.2f", duration.to_number<double>());
        duration = buf;  // MusicAPI's webhooks send it as a string
    }
    c["duration"] = duration;
    if (o.status == "failed")
        c["error"] = text(d, "error");
    c["provider"] = t.provider;
    return c;
}

}  // namespace

error_answer error_of(const api::create::refusal& r) {
    const int status = api::info(r.kind).status;
    if (r.kind == api::error_kind::payment_required)
        return {403, body_of(403, msg_credits)};
    if (status == 422) {
        // MusicAPI answers field errors with 400 and a message; named by its own fields.
        std::string m;
        for (const auto& e : r.errors)
            m += (m.empty() ? "" : "; ") + field_name(e.field) + ": " + e.message;
        return {400, body_of(400, m.empty() ? r.detail : m)};
    }
    return {status, body_of(status, r.detail)};
}

// The URL sealed (AES-256-GCM) under a key of its own derived from the signing key, bound to
// the tenant: the id says nothing of the URL, whose query may hold a pre-signed URL's secret
// (found by a black-box run: the id was the URL in base64, and ids end up in access logs).
std::string upload_id(std::string_view key, std::string_view tenant, std::string_view url) {
    return std::string(upload_prefix) +
           base64url(util::aead_seal(upload_key(key), upload_aad(tenant), url));
}

std::optional<std::string> upload_url(std::string_view key, std::string_view tenant,
                                      std::string_view id) {
    if (id.rfind(upload_prefix, 0) != 0)
        return std::nullopt;
    id.remove_prefix(upload_prefix.size());
    const auto dot = id.rfind('.');
    if (dot == std::string_view::npos) {
        // Only the canonical spelling: another with the same bytes (a last character whose
        // unused bits differ) would be a second id for the same upload.
        const auto sealed = unbase64url(id);
        if (!sealed || base64url(*sealed) != id)
            return std::nullopt;
        return util::aead_open(upload_key(key), upload_aad(tenant), *sealed);
    }
    // An id of an earlier version ("<base64url of the URL>.<signature>"), still honoured.
    auto url = unbase64url(id.substr(0, dot));
    if (!url || !util::constant_time_equal(id.substr(dot + 1), upload_signature(key, tenant, *url)))
        return std::nullopt;
    return url;
}

std::string task_document(const api::task_snapshot& t, const config::settings& settings) {
    const auto status = status_of(t.task.status);
    json::object o;
    o["code"] = 200;
    o["task_id"] = t.task.id;
    o["type"] = spelling::task_extend;
    o["status"] = status;
    o["message"] = status == spelling::status_failed    ? task_error(t.task, t.outputs)
                   : status == spelling::status_success ? "success"
                                                        : "processing";
    o["provider"] = t.task.provider;
    json::array data;
    for (const auto& out : t.outputs)
        data.emplace_back(clip_of(t.task, out, settings, false));
    o["data"] = std::move(data);
    return util::json_text(o);
}

std::optional<events::formatted> format_webhook(const events::format_input& in,
                                                const config::settings& settings) {
    const auto& type = in.delivery.event_type;
    const bool failed = type == core::event_type::failed || type == core::event_type::canceled;
    if (!failed && type != core::event_type::succeeded &&
        type != core::event_type::partially_succeeded)
        return std::nullopt;  // MusicAPI calls back when the task ends
    json::object b;
    b["code"] = 200;
    b["task_id"] = in.task.id;
    b["message"] = failed ? task_error(in.task, in.outputs) : "success";
    json::array data;
    for (const auto& o : in.outputs)
        data.emplace_back(clip_of(in.task, o, settings, true));
    b["data"] = std::move(data);
    events::formatted f;
    f.body = util::json_text(b);
    const std::string ts = std::to_string(in.timestamp_s);
    f.headers = {{"X-Webhook-Id", in.delivery.event_id},
                 {"Idempotency-Key", in.delivery.event_id},
                 {"X-Webhook-Event",
                  std::string(failed ? spelling::event_failed : spelling::event_completed)},
                 {"X-Webhook-Timestamp", ts}};
    if (!in.request.webhook_format_secret.empty())
        f.headers.emplace_back(
            "X-Webhook-Signature",
            "sha256=" + signature_hex(in.request.webhook_format_secret, ts, f.body));
    return f;
}

namespace {

struct handlers : std::enable_shared_from_this<handlers> {
    explicit handlers(const api::api_deps& d) : deps(d), creating(d) {}

    // Bearer only, as MusicAPI.
    std::optional<std::string> tenant_of(http::context& ctx) {
        auto h = ctx.header("Authorization");
        std::optional<std::string> t;
        if (h && h->size() > 7) {
            std::string scheme(h->substr(0, 7));
            std::transform(scheme.begin(), scheme.end(), scheme.begin(), ::tolower);
            if (scheme == "bearer ")
                t = deps.auth.authenticate(*h);
        }
        if (!t) {
            creating.count_refusal("unauthorized");
            answer(ctx, 401, body_of(401, !h ? msg_no_auth : msg_bad_auth));
        }
        return t;
    }

    awaitable<std::optional<api::create::refusal>> translate(api::create::submission& s,
                                                             const std::string& tenant,
                                                             std::shared_ptr<std::string> secret);
    awaitable<void> create(http::context& ctx);
    awaitable<void> upload(http::context& ctx);
    awaitable<void> task(http::context& ctx);

    api::api_deps deps;
    api::create::flow creating;
};

api::create::refusal bad(std::string message, api::error_kind kind = api::error_kind::bad_request) {
    return {kind, "validation", std::move(message), {}};
}

awaitable<std::optional<api::create::refusal>> handlers::translate(
    api::create::submission& s, const std::string& tenant, std::shared_ptr<std::string> secret) {
    const auto& in = s.fields;
    const std::string task_type = text(in, "task_type");
    if (task_type.empty())
        co_return bad("task_type is required");
    if (task_type == "music_variation" || task_type == "swap_music_vocals" ||
        task_type == "swap_music_sound")
        co_return bad("task_type " + task_type + " is no longer available", api::error_kind::gone);
    if (task_type != spelling::task_extend)
        co_return bad("task_type " + task_type + " is not served by this gateway (only " +
                      std::string(spelling::task_extend) + ")");
    const std::string clip = text(in, "clip_id");
    if (clip.empty())
        co_return bad("clip_id is required");
    json::object out;
    // The clip: an upload of ours, an output of a Segue task, or MusicAPI's own.
    if (auto url = upload_url(deps.settings.api.url_signing_key, tenant, clip)) {
        out["audio_url"] = *url;
    } else if (clip.rfind(upload_prefix, 0) == 0) {
        // Spelled as an upload of ours but not one of this tenant's at this gateway (another
        // tenant's, another gateway's, altered): unknown, as its task is (GET task/{id}), and
        // never sent to MusicAPI as one of its clips.
        co_return bad("clip not found.");
    } else if (auto ref = api::parse_output_id(clip); ref && ref->task_id.rfind("ext_", 0) == 0) {
        // An output of a Segue task: the create resolves it (create_flow.hpp).
        out["clip"] = json::object{{"provider", provider_name}, {"id", clip}};
    } else if (deps.providers.find(provider_name) != nullptr) {
        out["clip"] = json::object{{"provider", provider_name}, {"id", clip}};
    } else {
        co_return bad("clip not found.");  // a MusicAPI clip, and MusicAPI is not configured
    }
    auto copy = [&](std::string_view from, std::string_view to) {
        if (const auto* v = in.if_contains(from); v && !out.contains(to))
            out[to] = *v;
    };
    copy("starts_at", "extend_after");
    copy("starts", "extend_after");
    copy("instruction", "prompt");
    copy("lyrics", "lyrics");
    copy("lyrics_text", "lyrics");
    copy("length", "length");
    copy("webhook_url", "webhook_url");
    if (const auto* v = in.if_contains("webhook_secret")) {
        if (!v->is_string())
            co_return bad("webhook_secret must be a string");
        *secret = std::string(v->as_string());
    }
    s.fields = std::move(out);
    co_return std::nullopt;
}

awaitable<void> handlers::create(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant)
        co_return;
    // MusicAPI's create takes JSON only: say so in its shape (the shared reader would name
    // MusicGPT's multipart upload, or read curl's default form type as empty fields).
    if (!http::media_type_is(ctx.header("Content-Type").value_or(""), "application/json"))
        co_return answer(ctx, 415, body_of(415, "send the body as application/json"));
    auto secret = std::make_shared<std::string>();
    api::create::flow_hooks hooks;
    hooks.translate = [this, tenant = *tenant, secret](api::create::submission& s) {
        return translate(s, tenant, secret);
    };
    hooks.decorate = [secret](core::extend_request& r) {
        r.webhook_format = format_name;
        r.webhook_format_secret = *secret;
    };
    hooks.best_effort = {"length"};  // served by a provider without it: its default length
    auto r = co_await creating.run(ctx, *tenant, hooks);
    std::string task_id;
    switch (r.what) {
        case api::create::flow_result::kind::refused: {
            auto e = error_of(r.refused);
            co_return answer(ctx, e.status, std::move(e.body));
        }
        case api::create::flow_result::kind::created:
            task_id = r.admitted.task.id;
            break;
        case api::create::flow_result::kind::replay:
            task_id = r.prior.task_id;
            ctx.res().set_header("Idempotent-Replayed", "true");
            break;
    }
    ctx.res().set_header("Location", "/v1/extensions/" + task_id);
    answer(ctx, 200, util::json_text(json::object{{"message", "success"}, {"task_id", task_id}}));
}

awaitable<void> handlers::upload(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant)
        co_return;
    boost::system::error_code ec;
    auto v = json::parse(ctx.body(), ec);
    if (ec || !v.is_object())
        co_return answer(ctx, 400, body_of(400, "the body must be a JSON object"));
    if (auto twice = util::duplicate_json_key(ctx.body()))
        co_return answer(ctx, 400, body_of(400, "field '" + *twice + "' given twice"));
    const std::string url = text(v.as_object(), "audio_url");
    if (url.empty())
        co_return answer(ctx, 400, body_of(400, "audio_url is required"));
    if (url.size() > max_upload_url)
        co_return answer(ctx, 400, body_of(400, "audio_url is too long"));
    if (deps.url_policy)
        if (auto why = net::check_url_syntax(url, *deps.url_policy))
            co_return answer(ctx, 400, body_of(400, "audio_url refused: " + *why));
    answer(ctx, 200,
           util::json_text(json::object{
               {"message", "success"},
               {"task_id", upload_id(deps.settings.api.url_signing_key, *tenant, url)}}));
}

awaitable<void> handlers::task(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant)
        co_return;
    const std::string id(ctx.param("id"));
    if (id.empty())
        co_return answer(ctx, 400, body_of(400, msg_missing_id));
    if (auto url = upload_url(deps.settings.api.url_signing_key, *tenant, id)) {
        json::object clip{{"clip_id", id},
                          {"state", spelling::state_succeeded},
                          {"audio_url", *url},
                          {"title", ""},
                          {"duration", nullptr}};
        co_return answer(ctx, 200,
                         util::json_text(json::object{{"code", 200},
                                                      {"task_id", id},
                                                      {"type", "upload"},
                                                      {"status", spelling::status_success},
                                                      {"message", "success"},
                                                      {"data", json::array{std::move(clip)}}}));
    }
    auto t = co_await api::load_task(deps.db, id, *tenant);
    if (!t)
        co_return answer(ctx, 400, body_of(400, msg_not_found));
    answer(ctx, 200, task_document(*t, deps.settings));
}

}  // namespace

void install(api::compat_host& host) {
    auto h = std::make_shared<handlers>(host.deps);
    const auto& s = host.deps.settings;
    host.routes.add(
        "POST", "/api/v1/producer/create", [h](http::context& c) { return h->create(c); },
        {.body = http::body_mode::streamed,
         .max_body_bytes = s.api.max_json_bytes,
         .body_limit_detail = "JSON body exceeds " + std::to_string(s.api.max_json_bytes) +
                              " bytes (api.max_json_bytes)"});
    host.routes.add(
        "POST", "/api/v1/producer/upload", [h](http::context& c) { return h->upload(c); },
        {.max_body_bytes = max_upload_body,
         .body_limit_detail = "request body exceeds " + std::to_string(max_upload_body) +
                              " bytes (an {\"audio_url\"} of at most " +
                              std::to_string(max_upload_url) + " characters)"});
    host.routes.add("GET", "/api/v1/producer/task/{id}",
                    [h](http::context& c) { return h->task(c); });
    // Any other path or method there, in MusicAPI's error shape; its download says why.
    host.routes.on_unrouted("/api/v1/", [](http::response& res, int status, std::string_view path) {
        res.status = status;
        res.content_type = "application/json";
        if (status == 405) {
            res.body = body_of(405, "Method Not Allowed.");
        } else if (path == "/api/v1/producer/task/" || path == "/api/v1/producer/task") {
            // A task read without its id: MusicAPI's own 400, not a 404.
            res.status = 400;
            res.body = body_of(400, msg_missing_id);
        } else if (path == "/api/v1/producer/download") {
            res.body =
                body_of(404,
                        "download is not offered by this gateway: a task's clips already carry "
                        "audio_url (MP3) and wav_url (WAV).");
        } else {
            res.body = body_of(404, "Not Found.");
        }
    });
    // What the server answers itself there (413 by Content-Length, 431, 408, …), as MusicAPI's.
    host.routes.on_error("/api/v1/", [](http::response& res, int status, std::string_view message) {
        res.status = status;
        res.content_type = "application/json";
        res.body = body_of(status, message);
    });
    host.formats.add(std::string(format_name),
                     [&s](const events::format_input& in) { return format_webhook(in, s); });
}

}  // namespace segue::providers::musicapi::compat

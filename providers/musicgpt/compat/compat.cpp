#include "providers/musicgpt/compat/compat.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <memory>

#include "gateway/api/auth.hpp"
#include "gateway/api/common.hpp"
#include "gateway/api/create_flow.hpp"
#include "gateway/config/settings.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/ledger.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/router.hpp"
#include "gateway/util/json_text.hpp"
#include "providers/musicgpt/transform.hpp"

namespace segue::providers::musicgpt::compat {

namespace json = boost::json;
using boost::asio::awaitable;

namespace {

// Fields MusicGPT's extend takes that mean the same in Segue's request.
constexpr std::array<std::string_view, 8> shared_fields = {
    "audio_url", "extend_after", "prompt",     "lyrics", "lyrics_section_to_extend",
    "gender",    "num_outputs",  "webhook_url"};

// MusicGPT gives no estimate rule; Segue's providers report none at submit. A fixed figure in
// MusicGPT's range (its docs' example is 38 s).
constexpr int eta_seconds = 60;
// MusicGPT's num_outputs when a request has none (its docs: "default : 2").
constexpr int default_conversions = 2;

std::string text(const json::object& o, std::string_view key) {
    const auto* v = o.if_contains(key);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

// Segue's timestamped lyrics ([{text,start_ms,end_ms}]) as MusicGPT sends them: a JSON string
// of [{index,text,start,end}] in milliseconds.
std::string lyrics_timestamped_text(const json::value* v) {
    json::array out;
    if (v && v->is_array()) {
        std::int64_t i = 0;
        for (const auto& line : v->as_array()) {
            if (!line.is_object())
                continue;
            const auto& l = line.as_object();
            json::object m;
            m["index"] = i++;
            m["text"] = text(l, "text");
            m["start"] = l.contains("start_ms") ? l.at("start_ms") : json::value(0);
            m["end"] = l.contains("end_ms") ? l.at("end_ms") : json::value(0);
            out.emplace_back(std::move(m));
        }
    }
    return util::json_text(out);
}

json::value duration_of(const json::object& output) {
    const auto* a = output.if_contains("audio");
    if (a && a->is_object())
        if (const auto* d = a->as_object().if_contains("duration"); d && d->is_number())
            return *d;
    return nullptr;
}

std::string status_msg(std::string_view status, const api::task_snapshot& s) {
    if (status == spelling::status_completed)
        return "Conversion successful";
    if (status == spelling::status_in_queue)
        return "In queue";
    if (status == spelling::status_processing)
        return "Processing";
    if (auto m = api::failure_message(s.task, s.outputs); !m.empty())
        return m;
    return s.task.status == "canceled" ? "Canceled" : "Conversion failed";
}

// What byId says of one conversion: its own outcome once it has one (made: COMPLETED; failed
// or canceled: FAILED, with its reason, as its webhook says success:false), else the task's.
// A conversion with no output row (dropped by the provider) once the task ended was not made.
struct conversion_state {
    std::string_view status;
    std::string msg;
};

conversion_state conversion_of(const api::task_snapshot& t, int n) {
    const auto task_status = status_of(t.task.status);
    const auto it = std::find_if(t.outputs.begin(), t.outputs.end(),
                                 [n](const store::output_row& o) { return o.index == n; });
    if (it == t.outputs.end()) {
        if (task_status == spelling::status_in_queue || task_status == spelling::status_processing)
            return {task_status, status_msg(task_status, t)};
        return {spelling::status_failed, "not produced"};
    }
    if (it->status == "ready")
        return {spelling::status_completed, "Conversion successful"};
    if (it->status == "failed" || it->status == "canceled") {
        std::string why = text(api::output_data(*it), "error");
        if (why.empty())
            why = it->status == "canceled" || t.task.status == "canceled" ? "Canceled"
                                                                          : "Conversion failed";
        return {spelling::status_failed, std::move(why)};
    }
    if (task_status == spelling::status_completed || task_status == spelling::status_failed)
        return {spelling::status_failed, status_msg(spelling::status_failed, t)};
    return {task_status, status_msg(task_status, t)};
}

// The task's status_msg: a task that made some of its conversions is COMPLETED (there is audio
// to fetch), and says which conversions failed and why rather than "Conversion successful".
std::string task_msg(std::string_view status, const api::task_snapshot& t) {
    if (status != spelling::status_completed)
        return status_msg(status, t);
    std::string failed;
    int made = 0;
    for (int n = 1; n <= t.task.num_outputs; ++n) {
        auto c = conversion_of(t, n);
        if (c.status == spelling::status_completed) {
            ++made;
            continue;
        }
        failed +=
            (failed.empty() ? "; " : ", ") + api::output_id(t.task.id, n) + " failed: " + c.msg;
    }
    if (failed.empty())
        return "Conversion successful";
    return std::to_string(made) + " of " + std::to_string(t.task.num_outputs) +
           " conversions successful" + failed;
}

std::string cover_of(const std::vector<store::output_row>& outputs,
                     const config::settings& settings) {
    for (const auto& o : outputs)
        if (auto c = text(api::output_data(o), "cover_url"); !c.empty())
            return api::public_url(settings, c);
    return "";
}

void answer(http::context& ctx, int status, const json::value& body) {
    ctx.res().status = status;
    ctx.res().content_type = "application/json";
    ctx.res().body = util::json_text(body);
}

void answer_message(http::context& ctx, int status, std::string message) {
    answer(ctx, status, json::object{{"success", false}, {"message", std::move(message)}});
}

}  // namespace

void translate_fields(api::create::submission& s) {
    json::object kept;
    for (auto& kv : s.fields) {
        if (std::find(shared_fields.begin(), shared_fields.end(), kv.key()) == shared_fields.end())
            continue;
        // A form field sent empty is one not sent, as FastAPI (which MusicGPT's API looks
        // like, PROVIDERS.md) reads forms: a client that posts every field of its form
        // ("gender=", "webhook_url=") is not refused for the ones left blank. A JSON body's ""
        // stays a value (and is validated as one).
        if (s.from_form && kv.value().is_string() && kv.value().as_string().empty())
            continue;
        kept[kv.key()] = std::move(kv.value());
    }
    // MusicGPT's API is FastAPI's: a number sent as a JSON string ("35.0") is read as the
    // number (pydantic's coercion), as a form's text is.
    s.text_numbers = true;
    // MusicGPT's default is two conversions, and its answer names both: asked for, so one a
    // provider does not make (MusicAPI decides how many clips it returns) is still reported,
    // as failed ("not produced", not charged), rather than never heard of again.
    if (!kept.contains("num_outputs"))
        kept["num_outputs"] = default_conversions;
    s.fields = std::move(kept);
}

error_answer error_of(const api::create::refusal& r) {
    const int status = api::info(r.kind).status;
    if (status == 422) {
        // FastAPI's validation shape, which MusicGPT answers with.
        json::array detail;
        for (const auto& e : r.errors)
            detail.emplace_back(json::object{{"loc", json::array{"body", e.field}},
                                             {"msg", e.message},
                                             {"type", "value_error"}});
        if (detail.empty())
            detail.emplace_back(json::object{
                {"loc", json::array{"body"}}, {"msg", r.detail}, {"type", "value_error"}});
        return {422, util::json_text(json::object{{"detail", std::move(detail)}})};
    }
    json::object body{{"success", false}, {"message", r.detail}};
    if (r.kind == api::error_kind::payment_required) {
        body["message"] = "INSUFFICIENT FUNDS";
        body["detail"] = r.detail;
    }
    return {status, util::json_text(body)};
}

std::string_view status_of(std::string_view s) {
    return api::status_in(s, {spelling::status_in_queue, spelling::status_processing,
                              spelling::status_completed, spelling::status_failed});
}

std::string by_id_document(const api::task_snapshot& t, const config::settings& settings,
                           std::optional<int> conversion) {
    const auto& task = t.task;
    const auto status = status_of(task.status);
    json::object c;
    c["task_id"] = task.id;
    c["conversion_type"] = spelling::by_id_type_extend;
    // Asked for one conversion, the status is that conversion's (a conversion that failed
    // reads FAILED, with why, even when its sibling was made); for the task, the task's.
    conversion_state asked{status, task_msg(status, t)};
    if (conversion)
        asked = conversion_of(t, *conversion);
    c["status"] = asked.status;
    c["status_msg"] = asked.msg;
    c["message"] = asked.msg;
    c["provider"] = task.provider;
    for (const auto& o : t.outputs) {
        const auto d = api::output_data(o);
        const int n = o.index;
        // Copied out first: inserting into `c` may move what a reference into it points at.
        const std::string id = api::output_id(task.id, n);
        const std::string title = text(d, "title");
        const std::string mp3 = api::public_audio_url(settings, d, "mp3");
        const std::string wav = api::public_audio_url(settings, d, "wav");
        const json::value duration = duration_of(d);
        const std::string lyrics = text(d, "lyrics");
        c[spelling::numbered("conversion_id", n)] = id;
        c[spelling::numbered("title", n)] = title;
        c[spelling::numbered("conversion_path", n)] = mp3;
        c[spelling::numbered("conversion_path_wav", n)] = wav;
        c[spelling::numbered("conversion_duration", n)] = duration;
        c[spelling::numbered("lyrics", n)] = lyrics;
        const std::string timestamped =
            lyrics_timestamped_text(d.if_contains("lyrics_timestamped"));
        const bool flagged =
            d.contains("flagged") && d.at("flagged").is_bool() && d.at("flagged").as_bool();
        c[spelling::numbered("lyrics_timestamped", n)] = timestamped;
        c[spelling::numbered("is_flagged", n)] = flagged;
        // Which of the numbered conversions failed, for a client that reads the task.
        const auto state = conversion_of(t, n);
        c[spelling::numbered("status", n)] = state.status;
        c[spelling::numbered("status_msg", n)] = state.msg;
        if (conversion && *conversion == n) {
            c["conversion_id"] = id;
            c["title"] = title;
            c["conversion_path"] = mp3;
            c["audio_url"] = mp3;
            c["conversion_path_wav"] = wav;
            c["conversion_duration"] = duration;
            c["lyrics"] = lyrics;
            c["lyrics_timestamped"] = timestamped;
            c["is_flagged"] = flagged;
        }
    }
    c["album_cover_path"] = cover_of(t.outputs, settings);
    // What the task costs so far: held while it runs, charged once it ends (a failed task: 0;
    // an output not made is given back).
    c["conversion_cost"] = core::credits_value(t.ledger.hold - t.ledger.released);
    c["createdAt"] = core::iso8601(task.created_at);
    c["updatedAt"] = core::iso8601(task.updated_at);
    return util::json_text(json::object{{"success", true}, {"conversion", std::move(c)}});
}

std::optional<events::formatted> format_webhook(const events::format_input& in,
                                                const config::settings& settings) {
    const auto& type = in.delivery.event_type;
    boost::system::error_code ec;
    auto parsed = json::parse(in.delivery.event_data_json, ec);
    if (ec || !parsed.is_object())
        return std::nullopt;
    const auto& data = parsed.as_object();
    const auto& task_id = in.task.id;
    int index = 0;
    if (const auto* i = data.if_contains("index"); i && i->is_int64())
        index = static_cast<int>(i->as_int64());
    json::object b;
    if (type == core::event_type::output_ready || type == core::event_type::output_failed) {
        json::object output;
        if (const auto* o = data.if_contains("output"); o && o->is_object())
            output = o->as_object();
        b["success"] = type == core::event_type::output_ready;
        b["conversion_type"] = spelling::conversion_type_extend;
        b["task_id"] = task_id;
        b["conversion_id"] = api::output_id(task_id, index);
        if (type == core::event_type::output_ready) {
            b["conversion_path"] = api::public_audio_url(settings, output, "mp3");
            b["conversion_path_wav"] = api::public_audio_url(settings, output, "wav");
            b["conversion_duration"] = duration_of(output);
            b["is_flagged"] = output.contains("flagged") && output.at("flagged").is_bool() &&
                              output.at("flagged").as_bool();
            b["reason"] = text(output, "flag_reason");
            b["lyrics"] = text(output, "lyrics");
            b["lyrics_timestamped"] = json::array();  // they come in their own callback
            b["title"] = text(output, "title");
        } else {
            b["status"] = spelling::status_failed;
            b["status_msg"] = text(output, "error");
            b["reason"] = text(output, "error");
        }
    } else if (type == core::event_type::lyrics_ready) {
        b["subtype"] = spelling::subtype_lyrics;
        b["task_id"] = task_id;
        b["conversion_id"] = api::output_id(task_id, index);
        b["lyrics_timestamped"] = lyrics_timestamped_text(data.if_contains("lyrics_timestamped"));
    } else if (type == core::event_type::cover_ready) {
        b["subtype"] = spelling::subtype_cover;
        b["success"] = true;
        b["task_id"] = task_id;
        b["image_path"] = api::public_url(settings, text(data, "cover_url"));
        for (int n = 1; n <= in.task.num_outputs; ++n)
            b[spelling::numbered("conversion_id", n)] = api::output_id(task_id, n);
    } else {
        return std::nullopt;  // MusicGPT calls back only with results
    }
    b["provider"] = in.task.provider;
    return events::formatted{util::json_text(b), {}, {}};
}

namespace {

struct handlers : std::enable_shared_from_this<handlers> {
    explicit handlers(const api::api_deps& d) : deps(d), creating(d) {}

    std::optional<std::string> tenant_of(http::context& ctx) {
        auto t = api::tenant_of_key(deps.auth, ctx.header("Authorization"));
        if (!t) {
            creating.count_refusal("unauthorized");
            answer_message(ctx, 401, "Invalid API key");
        }
        return t;
    }

    awaitable<void> extend(http::context& ctx);
    awaitable<void> by_id(http::context& ctx);

    api::api_deps deps;
    api::create::flow creating;
};

awaitable<void> handlers::extend(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant)
        co_return;
    api::create::flow_hooks hooks;
    hooks.translate =
        [](api::create::submission& s) -> awaitable<std::optional<api::create::refusal>> {
        translate_fields(s);
        co_return std::nullopt;
    };
    hooks.decorate = [](core::extend_request& r) { r.webhook_format = format_name; };
    auto r = co_await creating.run(ctx, *tenant, hooks);
    std::string task_id;
    int outputs = 0;
    std::int64_t hold = 0;
    std::string provider;
    switch (r.what) {
        case api::create::flow_result::kind::refused: {
            auto e = error_of(r.refused);
            ctx.res().status = e.status;
            ctx.res().content_type = "application/json";
            ctx.res().body = std::move(e.body);
            co_return;
        }
        case api::create::flow_result::kind::created:
            task_id = r.admitted.task.id;
            outputs = r.admitted.task.num_outputs;
            hold = r.admitted.request.hold_milli;
            provider = r.admitted.task.provider;
            break;
        case api::create::flow_result::kind::replay: {
            // The same answer as the first time, rebuilt from the task.
            auto t = co_await api::load_task(deps.db, r.prior.task_id, *tenant);
            if (!t) {
                answer_message(ctx, 404, "Conversion not found");
                co_return;
            }
            task_id = t->task.id;
            outputs = t->task.num_outputs;
            hold = t->request.hold_milli;
            provider = t->task.provider;
            ctx.res().set_header("Idempotent-Replayed", "true");
            break;
        }
    }
    json::object b;
    b["success"] = true;
    b["message"] = "Extend request submitted successfully";
    b["task_id"] = task_id;
    for (int n = 1; n <= outputs; ++n)
        b[spelling::numbered("conversion_id", n)] = api::output_id(task_id, n);
    b["eta"] = eta_seconds;
    b["credit_estimate"] = core::credits_value(hold);
    b["provider"] = provider;
    ctx.res().set_header("Location", "/v1/extensions/" + task_id);
    answer(ctx, 200, b);
}

awaitable<void> handlers::by_id(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant)
        co_return;
    auto query_error = [&](std::string_view name, std::string msg) {
        answer(ctx, 422,
               json::object{{"detail", json::array{json::object{{"loc", json::array{"query", name}},
                                                                {"msg", std::move(msg)},
                                                                {"type", "value_error"}}}}});
    };
    const auto type = api::query_param(ctx.query(), "conversionType");
    const auto task_id = api::query_param(ctx.query(), "task_id");
    const auto conversion_id = api::query_param(ctx.query(), "conversion_id");
    using st = api::query_value::state;
    for (const auto& [name, q] :
         {std::pair<std::string_view, const api::query_value&>{"conversionType", type},
          {"task_id", task_id},
          {"conversion_id", conversion_id}})
        if (q.status == st::repeated)
            co_return query_error(name, "given more than once");
    if (type.status != st::present)
        co_return query_error("conversionType", "field required");
    if (task_id.status == st::malformed || conversion_id.status == st::malformed)
        co_return query_error(task_id.status == st::malformed ? "task_id" : "conversion_id",
                              "malformed value");
    // MusicGPT's two answers (tests/fakes/musicgpt): neither id is a 422 on task_id, both a 400.
    if (task_id.status == st::present && conversion_id.status == st::present)
        co_return answer_message(ctx, 400, "Provide either task_id or conversion_id, not both");
    if (task_id.status != st::present && conversion_id.status != st::present)
        co_return query_error("task_id", "either task_id or conversion_id is required");
    std::string id = task_id.value;
    std::optional<int> conversion;
    if (conversion_id.status == st::present) {
        auto ref = api::parse_output_id(conversion_id.value);
        if (!ref)
            co_return answer_message(ctx, 404, "Conversion not found");
        id = ref->task_id;
        conversion = ref->index;
    }
    std::string upper(type.value);
    std::transform(upper.begin(), upper.end(), upper.begin(), ::toupper);
    std::optional<api::task_snapshot> t;
    if (upper == spelling::by_id_type_extend)
        t = co_await api::load_task(deps.db, id, *tenant);
    if (!t || (conversion && *conversion > t->task.num_outputs))
        co_return answer_message(ctx, 404, "Conversion not found");
    ctx.res().status = 200;
    ctx.res().content_type = "application/json";
    ctx.res().body = by_id_document(*t, deps.settings, conversion);
}

}  // namespace

void install(api::compat_host& host) {
    auto h = std::make_shared<handlers>(host.deps);
    const auto& s = host.deps.settings;
    const std::uint64_t max_body =
        std::max<std::uint64_t>(s.api.max_upload_bytes, s.api.max_json_bytes) + 64 * 1024;
    host.routes.add(
        "POST", "/api/public/v1/extend", [h](http::context& c) { return h->extend(c); },
        {.body = http::body_mode::streamed,
         .max_body_bytes = max_body,
         .body_limit_detail = "upload exceeds " + std::to_string(s.api.max_upload_bytes) +
                              " bytes (api.max_upload_bytes)"});
    host.routes.add("GET", "/api/public/v1/byId", [h](http::context& c) { return h->by_id(c); });
    // Any other path or method there, as MusicGPT's (FastAPI's) own 404 and 405.
    host.routes.on_unrouted(
        "/api/public/v1/", [](http::response& res, int status, std::string_view) {
            res.status = status;
            res.content_type = "application/json";
            res.body =
                status == 405 ? R"({"detail":"Method Not Allowed"})" : R"({"detail":"Not Found"})";
        });
    // What the server answers itself there (413 by Content-Length, 431, 408, …), as MusicGPT's.
    host.routes.on_error(
        "/api/public/v1/", [](http::response& res, int status, std::string_view message) {
            res.status = status;
            res.content_type = "application/json";
            res.body = util::json_text(json::object{{"success", false}, {"message", message}});
        });
    host.formats.add(std::string(format_name),
                     [&s](const events::format_input& in) { return format_webhook(in, s); });
}

}  // namespace segue::providers::musicgpt::compat

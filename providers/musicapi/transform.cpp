#include "providers/musicapi/transform.hpp"

#include "providers/common/wire.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <cmath>
#include <initializer_list>

#include "gateway/core/backoff.hpp"
#include "gateway/util/crypto.hpp"
#include "gateway/util/json_text.hpp"

namespace segue::providers::musicapi {

namespace json = boost::json;

namespace {

using wire::failed;
using wire::field;
using wire::find_header;
using wire::format_number;
using wire::icontains;
using wire::iequals;
using wire::json_string;
using wire::printable_prefix;
using wire::trim;

constexpr std::string_view method_name = "musicapi producer extend_music";

bool icontains_any(std::string_view hay, std::initializer_list<std::string_view> needles) {
    return std::any_of(needles.begin(), needles.end(),
                       [&](std::string_view n) { return icontains(hay, n); });
}

std::string lower(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s)
        out.push_back(static_cast<char>(std::tolower(static_cast<unsigned char>(c))));
    return out;
}

std::optional<json::value> parse_value(std::string_view text) {
    boost::system::error_code ec;
    auto v = json::parse(json::string_view(text.data(), text.size()), ec);
    if (ec)
        return std::nullopt;
    return v;
}

std::optional<json::object> parse_object(std::string_view text) {
    auto v = parse_value(text);
    if (!v || !v->is_object())
        return std::nullopt;
    return std::move(v->as_object());
}

// A string field ("" when absent or not a string).
std::string text(const json::object& o, std::string_view key) {
    auto* v = field(o, key);
    if (!v || !v->is_string())
        return {};
    return std::string(v->as_string());
}

// Numbers arrive as ints, doubles or numeric strings ("104.88").
std::optional<double> number(const json::value* v) {
    if (!v)
        return std::nullopt;
    if (v->is_int64())
        return static_cast<double>(v->as_int64());
    if (v->is_uint64())
        return static_cast<double>(v->as_uint64());
    if (v->is_double())
        return std::isfinite(v->as_double()) ? std::optional<double>(v->as_double()) : std::nullopt;
    if (v->is_string()) {
        auto s = trim(std::string_view(v->as_string()));
        double d = 0;
        auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
        if (!s.empty() && ec == std::errc() && p == s.data() + s.size() && std::isfinite(d))
            return d;
    }
    return std::nullopt;
}

std::optional<double> duration_of(const json::value* v) {
    auto d = number(v);
    if (!d || *d < 0)
        return std::nullopt;
    return d;
}

// The body's own "code", when it is a number.
std::optional<int> body_code(const json::object& o) {
    auto d = number(field(o, "code"));
    if (!d || *d < 0 || *d > 999 || *d != std::floor(*d))
        return std::nullopt;
    return static_cast<int>(*d);
}

std::string error_text_of(const json::object& o) {
    for (std::string_view key : {"message", "error", "detail", "msg", "error_message"}) {
        auto* v = field(o, key);
        if (!v)
            continue;
        if (v->is_string() && !trim(std::string_view(v->as_string())).empty())
            return std::string(v->as_string());
        if (v->is_object()) {  // {"error":{"message":"…"}}
            if (auto m = text(v->as_object(), "message"); !m.empty())
                return m;
            return json::serialize(*v);
        }
    }
    return {};
}

// "refunded" in a message, unless it says the opposite.
bool says_refunded(std::string_view msg) {
    return icontains(msg, "refund") &&
           !icontains_any(msg, {"not refund", "no refund", "non-refund", "not been refund",
                                "not yet refund", "unable to refund", "refund failed",
                                "without refund", "cannot refund", "can't refund"});
}

// The newer shape's task status is a string; a numeric "status" (an HTTP code echoed by some
// answers) is not one, and the clips decide.
bool has_status(const json::object& o) {
    auto* v = field(o, "status");
    return v && v->is_string();
}

// "MusicAPI answered HTTP 403: …", naming the body's code when it differs from the HTTP status.
std::string answer_text(std::string_view what, int http, int effective, std::string_view msg) {
    std::string s = "MusicAPI answered " + std::string(what) + "HTTP " + std::to_string(http);
    if (effective != http)
        s += " (code " + std::to_string(effective) + " in the body)";
    if (!msg.empty())
        s += ": " + std::string(msg);
    return s;
}

// These vendors repeat the status in the body; a 2xx carrying an error code is that error
// (unless the body has a task status of its own, which then says what happened).
int effective_status(int http, const std::optional<json::object>& obj) {
    if (http >= 200 && http < 300 && obj && !has_status(*obj))
        if (auto c = body_code(*obj); c && *c >= 400 && *c < 600)
            return *c;
    return http;
}

// The legacy "still processing" answer: HTTP 202 {"code":202,"type":"processing","error":…}.
bool is_processing(int http, const std::optional<json::object>& obj) {
    if (http == 202)
        return true;
    if (!obj || http < 200 || http >= 300)
        return false;
    return body_code(*obj) == 202 || iequals(text(*obj, "type"), "processing");
}

std::optional<std::int64_t> header_retry_after(const header_list& headers,
                                               std::optional<std::int64_t> now_unix_ms) {
    if (auto h = find_header(headers, "retry-after"))
        return retry_after_ms(*h, now_unix_ms);
    return std::nullopt;
}

// A failed submit (upload or create) from an error status.
update submit_failure(std::string_view what, int http, int effective, std::string_view msg,
                      const header_list& headers, std::optional<std::int64_t> now_unix_ms) {
    const auto info = describe_error(effective, msg);
    update u = failed(info.error, info.code, answer_text(what, http, effective, msg));
    u.provider_refunded = info.provider_refunded;
    u.retry_after_ms = header_retry_after(headers, now_unix_ms);
    return u;
}

// Task states, one vocabulary for the newer top-level `status` and the legacy clip `state`
// (case-insensitive). Anything else is unknown, never "still running".
enum class state { in_progress, succeeded, failed, unknown };

state read_state(std::string_view s) {
    const std::string v = lower(trim(s));
    if (v == "pending" || v == "running" || v == "streaming")
        return state::in_progress;
    if (v == "success" || v == "succeeded")
        return state::succeeded;
    if (v == "failed")
        return state::failed;
    return state::unknown;
}

// data[] as clip objects; a lone object counts as one clip. nullopt when absent or not clips.
std::optional<std::vector<const json::object*>> clips_of(const json::object& o) {
    auto* d = field(o, "data");
    if (!d)
        return std::nullopt;
    std::vector<const json::object*> out;
    if (d->is_object()) {
        out.push_back(&d->as_object());
        return out;
    }
    if (!d->is_array())
        return std::nullopt;
    for (const auto& c : d->as_array()) {
        if (!c.is_object())
            return std::nullopt;
        out.push_back(&c.as_object());
    }
    return out;
}

std::string clip_failure_text(const json::object& clip, std::string_view task_message) {
    auto m = error_text_of(clip);
    if (m.empty() && !iequals(task_message, "success"))
        m = std::string(task_message);
    return m.empty() ? std::string("MusicAPI reported the clip as failed") : m;
}

std::string clip_id_of(const json::object& clip) {
    auto id = text(clip, "clip_id");
    return id.empty() ? text(clip, "id") : id;
}

// One clip of a finished task -> one output.
output_update clip_output(const json::object& clip, int index, std::string_view task_message,
                          std::vector<std::string>& warnings) {
    output_update o;
    o.index = index;
    o.provider_output_id = clip_id_of(clip);
    if (read_state(text(clip, "state")) == state::failed) {
        o.status = core::output_status::failed;
        o.error = clip_failure_text(clip, task_message);
        return o;
    }
    o.mp3_url = text(clip, "audio_url");
    if (o.mp3_url.empty()) {
        o.status = core::output_status::failed;
        o.error = "MusicAPI finished the task without audio for this clip";
        if (!task_message.empty() && !iequals(task_message, "success"))
            o.error += " (" + std::string(task_message) + ")";
        return o;
    }
    o.status = core::output_status::ready;
    o.wav_url = text(clip, "wav_url");
    o.cover_url = text(clip, "image_url");  // each clip has its own cover
    if (auto* d = field(clip, "duration"); d && !d->is_null()) {
        o.duration = duration_of(d);
        if (!o.duration)
            warnings.push_back("musicapi: unreadable duration " + util::json_text(*d) +
                               " ignored for output " + std::to_string(index));
    }
    if (auto t = text(clip, "title"); !t.empty())
        o.title = t;
    if (auto l = text(clip, "lyrics"); !l.empty())
        o.lyrics = l;
    return o;
}

// A finished task's clips -> `done`, outputs in order, each with its own cover; the task's
// cover is the first non-empty one.
update done_from(const std::vector<const json::object*>& clips, std::string_view task_message) {
    update u;
    u.what = update::kind::done;
    u.method = std::string(method_name);
    int index = 0;
    for (const auto* c : clips) {
        u.outputs.push_back(clip_output(*c, ++index, task_message, u.warnings));
        if (u.cover_url.empty())
            u.cover_url = text(*c, "image_url");
    }
    return u;
}

// A failed extend. MusicAPI documents that a failed extend is refunded automatically
// (docs.musicapi.ai/api-450367154, and the task page: "credits charged at submit time are
// automatically refunded"); the message only tells whether the refund has been processed yet.
// So provider_refunded is true whatever it says: the money comes back either way.
update extend_failed(std::string_view message) {
    update u = failed(core::error_class::rejected, "upstream_failed",
                      "MusicAPI reported the task FAILED" +
                          (message.empty() ? std::string() : ": " + std::string(message)));
    u.provider_refunded = true;
    return u;
}

// The legacy shape has no task status: the clips decide. Every clip needs a known state.
struct derived {
    state what = state::unknown;
    std::string unknown_state;  // the offending spelling when unknown
};
derived derive(const std::vector<const json::object*>& clips) {
    derived d;
    bool any_progress = false, any_ok = false, any_failed = false;
    for (const auto* c : clips) {
        const std::string s = text(*c, "state");
        switch (read_state(s)) {
            case state::in_progress:
                any_progress = true;
                break;
            case state::succeeded:
                any_ok = true;
                break;
            case state::failed:
                any_failed = true;
                break;
            case state::unknown:
                d.unknown_state = s;
                return d;
        }
    }
    if (any_progress)
        d.what = state::in_progress;
    else if (any_ok)
        d.what = state::succeeded;
    else if (any_failed)
        d.what = state::failed;
    return d;  // no clips at all: unknown with an empty spelling
}

// The update for a failed HTTP answer to a task poll: `running` with the error set (keep
// polling) for 429 / 408 / 425 / 5xx, `failed` otherwise. A 5xx that reports the task itself as
// failed (504 "Task failed due to timeout. Credits were previously refunded.") fails.
update poll_http_failure(int http, int effective, std::string_view msg, const header_list& headers,
                         std::optional<std::int64_t> now_unix_ms) {
    const std::string message = answer_text("the task poll with ", http, effective, msg);
    auto info = describe_error(effective, msg);
    const auto retry = header_retry_after(headers, now_unix_ms);
    if (info.error == core::error_class::rate_limited ||
        (info.error == core::error_class::transient && !info.provider_refunded &&
         !icontains(msg, "task failed"))) {
        update u;
        u.what = update::kind::running;
        u.error = info.error;
        u.error_code = info.error == core::error_class::rate_limited ? "poll_rate_limited"
                                                                     : "poll_unavailable";
        u.error_message = message;
        u.retry_after_ms = retry;
        u.poll_after_ms = retry;
        return u;
    }
    // The poll names the task: "not found" here means the task.
    if (effective == 404 || (effective == 400 && icontains(msg, "not found")))
        info.code = "upstream_task_not_found";
    update u = failed(info.error, info.code, message);
    u.provider_refunded = info.provider_refunded;
    u.retry_after_ms = retry;
    return u;
}

update keep_polling_malformed(std::string message) {
    update u;
    u.what = update::kind::running;
    u.error = core::error_class::transient;
    u.error_code = "malformed_poll_response";
    u.error_message = std::move(message);
    return u;
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Paths and state

std::string task_path(std::string_view task_id) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out(task_path_prefix);
    for (char c : task_id) {
        const auto u = static_cast<unsigned char>(c);
        if (std::isalnum(u) || c == '-' || c == '_' || c == '.' || c == '~') {
            out.push_back(c);
        } else {
            out.push_back('%');
            out.push_back(hex[u >> 4]);
            out.push_back(hex[u & 0xf]);
        }
    }
    return out;
}

attempt_state parse_state(std::string_view state_json) {
    attempt_state st;
    auto o = parse_object(state_json);
    if (!o)
        return st;
    st.phase = text(*o, "phase");
    st.upload_task_id = text(*o, "upload_task_id");
    st.clip_id = text(*o, "clip_id");
    st.task_id = text(*o, "task_id");
    if (auto p = number(field(*o, "polls")); p && *p >= 0 && *p < 1e9)
        st.polls = static_cast<int>(*p);
    if (auto t = number(field(*o, "phase_started_ms")); t && *t >= 0 && *t < 9e18)
        st.phase_started_ms = static_cast<std::int64_t>(*t);
    st.clip_duration = duration_of(field(*o, "clip_duration"));
    if (auto t = number(field(*o, "started_ms")); t && *t >= 0 && *t < 9e18)
        st.started_ms = static_cast<std::int64_t>(*t);
    // "callback_url", which states written by earlier versions hold, is ignored: it carries
    // the attempt's webhook token, and the token lives in the store only as its SHA-256.
    return st;
}

std::string state_to_json(const attempt_state& st) {
    std::string b = "{\"phase\":" + json_string(st.phase);
    if (!st.upload_task_id.empty())
        b += ",\"upload_task_id\":" + json_string(st.upload_task_id);
    if (!st.clip_id.empty())
        b += ",\"clip_id\":" + json_string(st.clip_id);
    if (!st.task_id.empty())
        b += ",\"task_id\":" + json_string(st.task_id);
    b += ",\"polls\":" + std::to_string(st.polls);
    b += ",\"phase_started_ms\":" + std::to_string(st.phase_started_ms);
    if (st.clip_duration)
        b += ",\"clip_duration\":" + format_number(*st.clip_duration);
    if (st.started_ms != 0)
        b += ",\"started_ms\":" + std::to_string(st.started_ms);
    b += "}";
    return b;
}

// ---------------------------------------------------------------------------------------------
// Requests

std::string build_upload(std::string_view audio_url) {
    return "{\"audio_url\":" + json_string(audio_url) + "}";
}

// Every field of core::extend_request, decided:
//
//   neutral field             MusicAPI producer extend_music
//   ------------------------  --------------------------------------------------------------
//   source, audio_url,        not here: a URL becomes a clip through build_upload first; a
//   audio_file_id/_filename   file would need a URL MusicAPI can fetch (upload takes only
//                             audio_url); a clip source passes its clip_id in
//   clip_provider, clip_id    the `clip_id` parameter (the uploaded or native clip) is sent
//   extend_after              starts_at (seconds, a number). Legacy alias `starts` not sent
//   prompt                    instruction (new in 2026-04; the docs' example uses it)
//   lyrics_section_to_extend  lyrics: MusicAPI generates only the new part, so its `lyrics`
//                             are the words to sing there, which is exactly this field
//   lyrics (the original's)   lyrics, when no lyrics_section_to_extend is given (the only
//                             words we have); otherwise not sent, with a warning. Legacy
//                             alias `lyrics_text` not sent
//   length                    length (seconds, a number)
//   gender                    warning: no voice control in producer extend
//   num_outputs > 1           warning, when the client sent it (not for the default): the
//                             producer returns the clips it returns (the outputs are still
//                             read one per clip)
//   webhook_url (tenant's)    never sent: the tenant gets the gateway's own events. The
//                             `webhook_url` argument is the gateway's inbound URL instead
//   provider, route           routing only
//   metadata_json             never sent: echoed by the gateway in its events
//   source_duration/_sample_  informational (upstream validates starts_at against the clip)
//   rate/_channels
// The new names only: the 2026-04 migration note says `starts` and `lyrics_text` are still
// accepted but `starts_at`, `lyrics`, `instruction` and `length` are preferred, and sending
// both spellings would leave the precedence to MusicAPI.
create_request build_extend(const core::extend_request& r, std::string_view clip_id,
                            std::string_view webhook_url, std::string_view webhook_secret) {
    create_request c;
    if (clip_id.empty()) {
        c.error_code = "missing_clip";
        c.error =
            "musicapi: no clip to extend (the upload produced none, or the clip source is "
            "empty)";
        return c;
    }
    if (!std::isfinite(r.extend_after) || r.extend_after < 0) {
        c.error_code = "invalid_extend_after";
        c.error = "musicapi: extend_after must be a non-negative number of seconds";
        return c;
    }
    if (r.length && (!std::isfinite(*r.length) || *r.length <= 0)) {
        c.error_code = "invalid_length";
        c.error = "musicapi: length must be a positive number of seconds";
        return c;
    }

    // Built by hand so numbers read naturally ("35.5", not Boost.JSON's "3.55E1").
    std::string b = "{\"task_type\":\"extend_music\",\"clip_id\":" + json_string(clip_id);
    b += ",\"starts_at\":" + format_number(r.extend_after);
    if (r.prompt)
        b += ",\"instruction\":" + json_string(*r.prompt);
    if (r.lyrics_section_to_extend) {
        b += ",\"lyrics\":" + json_string(*r.lyrics_section_to_extend);
        if (r.lyrics)
            c.warnings.emplace_back(
                "musicapi: lyrics (of the original) not sent; MusicAPI takes only the lyrics "
                "of the new part (lyrics_section_to_extend)");
    } else if (r.lyrics) {
        b += ",\"lyrics\":" + json_string(*r.lyrics);
    }
    if (r.length)
        b += ",\"length\":" + format_number(*r.length);
    if (!webhook_url.empty()) {
        b += ",\"webhook_url\":" + json_string(webhook_url);
        if (!webhook_secret.empty())
            b += ",\"webhook_secret\":" + json_string(webhook_secret);
    }
    b += "}";

    if (r.gender)
        c.warnings.push_back("musicapi: gender '" + *r.gender +
                             "' is not supported by producer extend; not sent");
    if (r.num_outputs_given && r.num_outputs > 1)
        c.warnings.push_back("musicapi: num_outputs " + std::to_string(r.num_outputs) +
                             " cannot be requested; MusicAPI decides how many clips it returns");
    c.ok = true;
    c.json_body = std::move(b);
    return c;
}

// ---------------------------------------------------------------------------------------------
// Errors

error_info describe_error(int status, std::string_view msg) {
    error_info e;
    const bool credits = icontains(msg, "credit");
    const bool out_of_credits =
        credits && icontains_any(msg, {"not enough", "insufficient", "remaining"});
    if ((status == 402 || status == 403 || status == 429) && out_of_credits) {
        e.error = core::error_class::quota;
        e.code = "insufficient_credits";
        return e;
    }
    if (status == 402 || status == 403) {
        // A missing subscription is a billing state like an empty balance, not a bad key:
        // retrying cannot help, rotating keys would not either, another provider can.
        if (icontains(msg, "subscription")) {
            e.error = core::error_class::quota;
            e.code = "no_subscription";
        } else if (status == 402 || credits) {
            e.error = core::error_class::quota;
            e.code = "insufficient_credits";
        } else if (icontains_any(msg, {"copyright", "moderat", "inappropriate", "sensitive",
                                       "violat", "prohibited", "policy", "flagged",
                                       "lyrics contain", "description contain"})) {
            // MusicAPI's 403 also refuses content (lyrics or description moderation): the
            // request is at fault, not the key.
            e.error = core::error_class::rejected;
            e.code = "upstream_moderation";
        } else {
            // MusicAPI documents no other 403; what remains is most likely content policy too.
            e.error = core::error_class::rejected;
            e.code = "upstream_forbidden";
        }
        return e;
    }
    if (status == 401) {
        e.error = core::error_class::credential;
        e.code = "upstream_unauthorized";
        return e;
    }
    if (status == 429) {
        e.error = core::error_class::rate_limited;
        e.code = "upstream_rate_limited";
        return e;
    }
    if (status == 408 || status == 425 || (status >= 500 && status < 600)) {
        e.error = core::error_class::transient;
        e.code = status == 504 || status == 408 || icontains(msg, "timeout")
                     ? "upstream_timeout"
                     : "upstream_unavailable";
        e.provider_refunded = says_refunded(msg);
        return e;
    }
    if (status >= 400 && status < 500) {
        e.error = core::error_class::rejected;
        if (status == 410)
            e.code = "unsupported_task_type";
        else if (status == 404)
            e.code = "upstream_not_found";
        else if (status == 400 && icontains(msg, "task not found"))
            e.code = "upstream_task_not_found";
        else
            e.code = "upstream_rejected";
        return e;
    }
    e.error = core::error_class::unknown;
    e.code = "upstream_unexpected_status";
    return e;
}

std::string error_text(std::string_view body) {
    if (auto o = parse_object(body))
        return error_text_of(*o);
    return printable_prefix(body, 200);
}

std::optional<std::int64_t> retry_after_ms(std::string_view value,
                                           std::optional<std::int64_t> now_unix_ms) {
    return core::parse_retry_after(value, now_unix_ms);
}

// ---------------------------------------------------------------------------------------------
// Submit answers

update parse_upload_response(int status, std::string_view body, const header_list& headers,
                             std::optional<std::int64_t> now_unix_ms) {
    const auto obj = parse_object(body);
    const int eff = effective_status(status, obj);
    if (eff < 200 || eff >= 300) {
        const std::string msg = obj ? error_text_of(*obj) : printable_prefix(body, 200);
        return submit_failure("the upload with ", status, eff, msg, headers, now_unix_ms);
    }
    if (!obj)
        return failed(core::error_class::transient, "malformed_response",
                      "MusicAPI answered HTTP " + std::to_string(status) +
                          " to the upload with a body that is not a JSON object (" +
                          printable_prefix(body, 120) + ")");
    attempt_state st;
    st.phase = "upload";
    st.upload_task_id = text(*obj, "task_id");
    // A synchronous answer names the clip already (top-level clip_id, or data[0]; a top-level
    // "id" is not trusted to be a clip).
    st.clip_id = text(*obj, "clip_id");
    auto clips = clips_of(*obj);
    if (st.clip_id.empty() && clips && !clips->empty())
        st.clip_id = clip_id_of(*clips->front());
    if (clips && !clips->empty())
        st.clip_duration = duration_of(field(*clips->front(), "duration"));
    if (!st.clip_duration)
        st.clip_duration = duration_of(field(*obj, "duration"));
    if (st.upload_task_id.empty() && st.clip_id.empty())
        return failed(
            core::error_class::transient, "malformed_response",
            "MusicAPI accepted the upload without a task_id" +
                (error_text_of(*obj).empty() ? std::string() : " (" + error_text_of(*obj) + ")"));
    st.phase_started_ms = now_unix_ms.value_or(0);
    update u;
    u.what = update::kind::accepted;
    u.provider_task_id = st.upload_task_id.empty() ? st.clip_id : st.upload_task_id;
    u.state_json = state_to_json(st);
    return u;
}

update parse_create_response(const std::string& state_json, int status, std::string_view body,
                             const header_list& headers, std::optional<std::int64_t> now_unix_ms) {
    attempt_state st = parse_state(state_json);
    const auto obj = parse_object(body);
    const int eff = effective_status(status, obj);
    update u;
    if (eff < 200 || eff >= 300) {
        const std::string msg = obj ? error_text_of(*obj) : printable_prefix(body, 200);
        u = submit_failure("the extend with ", status, eff, msg, headers, now_unix_ms);
    } else if (!obj) {
        u = failed(core::error_class::transient, "malformed_response",
                   "MusicAPI answered HTTP " + std::to_string(status) +
                       " to the extend with a body that is not a JSON object (" +
                       printable_prefix(body, 120) +
                       "); the task may exist upstream: reconcile before resubmitting");
    } else if (const std::string id = text(*obj, "task_id"); id.empty()) {
        const std::string msg = error_text_of(*obj);
        u = failed(core::error_class::transient, "malformed_response",
                   "MusicAPI accepted the extend without a task_id" +
                       (msg.empty() ? std::string() : " (" + msg + ")") +
                       "; the task may exist upstream: reconcile before resubmitting");
    } else {
        st.phase = "extend";
        st.task_id = id;
        st.polls = 0;
        st.phase_started_ms = now_unix_ms.value_or(0);
        u.what = update::kind::accepted;
        u.provider_task_id = id;
        u.state_json = state_to_json(st);
        return u;
    }
    return u;
}

// ---------------------------------------------------------------------------------------------
// Polling

upload_poll parse_upload_task(int status, std::string_view body, const header_list& headers,
                              std::optional<std::int64_t> now_unix_ms) {
    upload_poll p;
    const auto obj = parse_object(body);
    auto set_failure = [&](update u) {
        p.what =
            u.what == update::kind::failed ? upload_poll::kind::failed : upload_poll::kind::running;
        p.error_code = u.error_code;
        p.retry_after_ms = u.retry_after_ms;
        p.failure = std::move(u);
        return p;
    };

    if (is_processing(status, obj))
        return p;
    const int eff = effective_status(status, obj);
    if (eff < 200 || eff >= 300) {
        const std::string msg = obj ? error_text_of(*obj) : printable_prefix(body, 200);
        return set_failure(poll_http_failure(status, eff, msg, headers, now_unix_ms));
    }
    if (!obj)
        return set_failure(keep_polling_malformed(
            "MusicAPI answered the upload task poll with a body that is not a JSON object (" +
            printable_prefix(body, 120) + ")"));

    const std::string message = text(*obj, "message");
    const auto clips = clips_of(*obj);
    state s;
    std::string spelling;
    if (has_status(*obj)) {
        spelling = text(*obj, "status");
        s = read_state(spelling);
    } else if (clips && !clips->empty()) {
        // Legacy: the upload's one clip carries the state.
        spelling = text(*clips->front(), "state");
        s = read_state(spelling);
    } else {
        return set_failure(
            keep_polling_malformed("MusicAPI answered the upload task poll without status or data" +
                                   (message.empty() ? std::string() : ": " + message)));
    }

    switch (s) {
        case state::in_progress:
            return p;
        case state::succeeded: {
            if (clips)
                for (const auto* c : *clips) {
                    p.clip_id = clip_id_of(*c);
                    if (!p.clip_id.empty()) {
                        p.duration = duration_of(field(*c, "duration"));
                        break;
                    }
                }
            if (p.clip_id.empty())
                return set_failure(failed(core::error_class::unknown, "malformed_response",
                                          "MusicAPI reports the upload as succeeded without a "
                                          "clip id"));
            p.what = upload_poll::kind::ready;
            return p;
        }
        case state::failed: {
            std::string why = message;
            if (why.empty() && clips && !clips->empty())
                why = error_text_of(*clips->front());
            update u = failed(
                core::error_class::rejected, "upstream_upload_failed",
                "MusicAPI reported the upload FAILED" + (why.empty() ? std::string() : ": " + why));
            u.provider_refunded = says_refunded(why);
            return set_failure(std::move(u));
        }
        case state::unknown:
            break;
    }
    return set_failure(failed(core::error_class::unknown, "unknown_upstream_status",
                              "MusicAPI upload task has an unknown status '" + spelling + "'"));
}

update parse_extend_task(const std::string& state_json, int status, std::string_view body,
                         const header_list& headers, std::optional<std::int64_t> now_unix_ms) {
    const attempt_state st = parse_state(state_json);
    const auto obj = parse_object(body);

    // Every answer names the attempt's extend task; a `running` one also counts the poll.
    auto finish = [&](update u) {
        u.provider_task_id = st.task_id;
        if (u.what == update::kind::running && !st.phase.empty()) {
            attempt_state next = st;
            next.polls += 1;
            u.state_json = state_to_json(next);
        }
        return u;
    };

    if (is_processing(status, obj)) {
        update u;
        u.what = update::kind::running;
        return finish(std::move(u));
    }
    const int eff = effective_status(status, obj);
    if (eff < 200 || eff >= 300) {
        const std::string msg = obj ? error_text_of(*obj) : printable_prefix(body, 200);
        return finish(poll_http_failure(status, eff, msg, headers, now_unix_ms));
    }
    if (!obj)
        return finish(keep_polling_malformed(
            "MusicAPI answered the task poll with a body that is not a JSON object (" +
            printable_prefix(body, 120) + ")"));

    const std::string message = text(*obj, "message");
    const auto clips = clips_of(*obj);
    state s;
    std::string spelling;
    if (has_status(*obj)) {
        spelling = text(*obj, "status");
        s = read_state(spelling);
    } else if (clips && !clips->empty()) {
        const auto d = derive(*clips);
        s = d.what;
        spelling = "a clip in an unknown clip state '" + d.unknown_state + "'";
    } else {
        return finish(
            keep_polling_malformed("MusicAPI answered the task poll without status or clips" +
                                   (message.empty() ? std::string() : ": " + message)));
    }

    switch (s) {
        case state::in_progress: {
            update u;
            u.what = update::kind::running;
            return finish(std::move(u));
        }
        case state::succeeded:
            if (!clips || clips->empty())
                return finish(failed(core::error_class::unknown, "malformed_response",
                                     "MusicAPI reports the task as succeeded without any clip"));
            return finish(done_from(*clips, message));
        case state::failed: {
            std::string why = message;
            if (why.empty() && clips && !clips->empty())
                why = error_text_of(*clips->front());
            return finish(extend_failed(why));
        }
        case state::unknown:
            break;
    }
    if (has_status(*obj))
        spelling = "an unknown status '" + spelling + "'";
    return finish(failed(core::error_class::unknown, "unknown_upstream_status",
                         "MusicAPI task has " + spelling));
}

// ---------------------------------------------------------------------------------------------
// Webhooks

bool verify_webhook_signature(std::string_view secret, const header_list& headers,
                              std::string_view raw_body, std::int64_t now_unix_s,
                              std::int64_t tolerance_s, std::string& error) {
    if (secret.empty()) {
        error = "no MusicAPI webhook secret is configured; the signature cannot be checked";
        return false;
    }
    const auto sig_header = find_header(headers, "x-webhook-signature");
    if (!sig_header) {
        error = "MusicAPI webhook without an X-Webhook-Signature header";
        return false;
    }
    const auto ts_header = find_header(headers, "x-webhook-timestamp");
    if (!ts_header) {
        error = "MusicAPI webhook without an X-Webhook-Timestamp header";
        return false;
    }
    const std::string_view ts = trim(*ts_header);
    std::int64_t sent = 0;
    {
        // Unix seconds; at most 15 digits keeps the arithmetic below far from overflow.
        const bool digits =
            !ts.empty() && ts.size() <= 15 && std::all_of(ts.begin(), ts.end(), [](char c) {
                return std::isdigit(static_cast<unsigned char>(c));
            });
        auto [p, ec] = std::from_chars(ts.data(), ts.data() + ts.size(), sent);
        if (!digits || ec != std::errc() || p != ts.data() + ts.size()) {
            error = "MusicAPI webhook with a malformed X-Webhook-Timestamp '" +
                    printable_prefix(ts, 40) + "'";
            return false;
        }
    }
    const std::int64_t skew = sent > now_unix_s ? sent - now_unix_s : now_unix_s - sent;
    if (skew > std::max<std::int64_t>(0, tolerance_s)) {
        error = "MusicAPI webhook timestamp is " + std::to_string(skew) +
                " s away from now (tolerance " + std::to_string(tolerance_s) +
                " s): stale or replayed";
        return false;
    }
    std::string_view sig = trim(*sig_header);
    if (sig.size() < 7 || !iequals(sig.substr(0, 7), "sha256=")) {
        error = "MusicAPI webhook signature is not of the form sha256=<hex>";
        return false;
    }
    const std::string got = lower(sig.substr(7));
    const std::string expected = signature_hex(secret, ts, raw_body);
    if (!util::constant_time_equal(got, expected)) {
        error = "MusicAPI webhook signature does not match";
        return false;
    }
    return true;
}

std::string signature_hex(std::string_view secret, std::string_view timestamp,
                          std::string_view raw_body) {
    return util::hex_encode(
        util::hmac_sha256(secret, std::string(timestamp) + "." + std::string(raw_body)));
}

std::optional<update> parse_webhook(const std::string& state_json, std::string_view body,
                                    std::string& error) {
    auto hook = wire::open_webhook("MusicAPI", body, parse_state(state_json).task_id, error);
    if (!hook)
        return std::nullopt;
    const auto& o = hook->object;
    const std::string& provider_task_id = hook->provider_task_id;
    const std::string message = text(o, "message");
    const auto code = body_code(o);
    const auto clips = clips_of(o);

    if (!clips || clips->empty()) {
        if (code && *code >= 400) {
            update u = extend_failed(message.empty() ? error_text_of(o) : message);
            u.provider_task_id = provider_task_id;
            u.webhook_kind = std::string(spelling::event_failed);
            return u;
        }
        error = clips ? "MusicAPI webhook without clips"
                      : "MusicAPI webhook without a data array of clips";
        return std::nullopt;
    }
    const auto d = derive(*clips);
    update u;
    switch (d.what) {
        case state::unknown:
            error = "MusicAPI webhook with an unknown clip state '" + d.unknown_state + "'";
            return std::nullopt;
        case state::in_progress:
            // "streaming" deliveries: the audio is not final yet; nothing to record.
            u.what = update::kind::running;
            u.webhook_kind = "song.streaming";
            break;
        case state::succeeded:
            u = done_from(*clips, message);
            u.webhook_kind = std::string(spelling::event_completed);
            break;
        case state::failed: {
            std::string why = message;
            if (why.empty())
                why = error_text_of(*clips->front());
            u = extend_failed(why);
            u.webhook_kind = std::string(spelling::event_failed);
            break;
        }
    }
    u.provider_task_id = provider_task_id;
    return u;
}

std::optional<double> parse_duration(std::string_view json_value) {
    auto v = parse_value(json_value);
    if (!v)
        return std::nullopt;
    return duration_of(&*v);
}

}  // namespace segue::providers::musicapi

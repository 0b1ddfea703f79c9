#include "providers/musicgpt/transform.hpp"

#include "providers/common/wire.hpp"

#include "gateway/core/backoff.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstring>
#include <ctime>

namespace segue::providers::musicgpt {

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

std::string upper(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    for (char c : s)
        out.push_back(static_cast<char>(std::toupper(static_cast<unsigned char>(c))));
    return out;
}

std::optional<json::object> parse_object(std::string_view text) {
    boost::system::error_code ec;
    auto v = json::parse(json::string_view(text.data(), text.size()), ec);
    if (ec || !v.is_object())
        return std::nullopt;
    return std::move(v.as_object());
}

std::optional<std::string> str(const json::object& o, std::string_view key) {
    auto* v = field(o, key);
    if (!v || !v->is_string())
        return std::nullopt;
    return std::string(v->as_string());
}

// A non-empty string field.
std::string nonempty(const json::object& o, std::string_view key) {
    auto s = str(o, key);
    return s ? *s : std::string();
}

// Numbers arrive as ints, doubles or numeric strings ("104.88").
std::optional<double> num(const json::value* v) {
    if (!v)
        return std::nullopt;
    if (v->is_int64())
        return static_cast<double>(v->as_int64());
    if (v->is_uint64())
        return static_cast<double>(v->as_uint64());
    if (v->is_double())
        return v->as_double();
    if (v->is_string()) {
        auto s = trim(std::string_view(v->as_string()));
        double d = 0;
        auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
        if (ec == std::errc() && p == s.data() + s.size() && std::isfinite(d))
            return d;
    }
    return std::nullopt;
}

std::optional<double> num(const json::object& o, std::string_view key) {
    return num(field(o, key));
}

// true / false / "true" / "false" / 1 / 0; nullopt when absent or anything else.
std::optional<bool> boolean(const json::object& o, std::string_view key) {
    auto* v = field(o, key);
    if (!v)
        return std::nullopt;
    if (v->is_bool())
        return v->as_bool();
    if (v->is_int64())
        return v->as_int64() != 0;
    if (v->is_string()) {
        if (iequals(v->as_string(), "true"))
            return true;
        if (iequals(v->as_string(), "false"))
            return false;
    }
    return std::nullopt;
}

std::string render_detail(const json::value& d) {
    if (d.is_string())
        return std::string(d.as_string());
    if (d.is_array()) {
        std::string out;
        for (const auto& item : d.as_array()) {
            if (!out.empty())
                out += "; ";
            if (!item.is_object()) {
                out += item.is_string() ? std::string(item.as_string()) : json::serialize(item);
                continue;
            }
            const auto& o = item.as_object();
            if (auto* loc = o.if_contains("loc"); loc && loc->is_array()) {
                std::string path;
                for (const auto& part : loc->as_array()) {
                    if (!path.empty())
                        path += ".";
                    path +=
                        part.is_string() ? std::string(part.as_string()) : json::serialize(part);
                }
                if (!path.empty())
                    out += path + ": ";
            }
            auto msg = str(o, "msg");
            out += msg ? *msg : json::serialize(item);
        }
        return out;
    }
    return json::serialize(d);
}

std::string error_text_of(const json::object& o) {
    if (auto* d = field(o, "detail"); d && !d->is_null())
        return render_detail(*d);
    for (std::string_view key : {"message", "error", "status_msg", "reason"}) {
        auto* v = field(o, key);
        if (!v)
            continue;
        if (v->is_string() && !v->as_string().empty())
            return std::string(v->as_string());
        if (v->is_object()) {  // {"error":{"message":"…"}}
            if (auto m = str(v->as_object(), "message"))
                return *m;
            return json::serialize(*v);
        }
    }
    return {};
}

bool says_insufficient_funds(std::string_view text) {
    return icontains(text, "insufficient") &&
           (icontains(text, "fund") || icontains(text, "credit") || icontains(text, "balance"));
}

std::optional<std::int64_t> body_retry_after_ms(const json::object& o) {
    auto s = num(o, "retry_after");
    if (!s || *s < 0)
        return std::nullopt;
    return static_cast<std::int64_t>(std::llround(*s * 1000.0));
}

std::string content_type_for(std::string_view filename) {
    auto dot = filename.rfind('.');
    std::string ext = dot == std::string_view::npos ? "" : upper(filename.substr(dot + 1));
    if (ext == "MP3")
        return "audio/mpeg";
    if (ext == "WAV" || ext == "WAVE")
        return "audio/wav";
    if (ext == "FLAC")
        return "audio/flac";
    if (ext == "OGG" || ext == "OGA")
        return "audio/ogg";
    if (ext == "OPUS")
        return "audio/opus";
    if (ext == "M4A" || ext == "MP4" || ext == "AAC")
        return "audio/mp4";
    if (ext == "AIF" || ext == "AIFF")
        return "audio/aiff";
    return "application/octet-stream";
}

// The filename goes into a quoted header parameter: no quotes, backslashes or line breaks.
std::string safe_filename(std::string_view name) {
    std::string out;
    for (char c : name) {
        const auto u = static_cast<unsigned char>(c);
        out.push_back(c == '"' || c == '\\' || u < 0x20 || u == 0x7f ? '_' : c);
    }
    return out.empty() ? std::string("audio") : out;
}

std::string expected_ids(const attempt_state& st) {
    std::string out;
    for (const auto& id : st.conversion_ids) {
        if (!out.empty())
            out += ", ";
        out += "'" + id + "'";
    }
    return out.empty() ? "none known" : out;
}

// Fields of one output, unsuffixed (webhook, single byId shape) or suffixed ("_1").
struct output_fields {
    const json::object& o;
    std::string suffix;
    std::string key(std::string_view base) const { return std::string(base) + suffix; }
};

std::optional<std::vector<core::lyric_line>> lyrics_from_value(const json::value& v) {
    if (v.is_string())
        return parse_lyrics_timestamped(std::string_view(v.as_string()));
    if (v.is_array())
        return parse_lyrics_timestamped(json::serialize(v));
    return std::nullopt;
}

// Fills the audio part of an output (ready) from its fields. False if there is no audio URL.
bool fill_ready_output(const output_fields& f, output_update& o, std::vector<std::string>& warn) {
    o.mp3_url = nonempty(f.o, f.key("conversion_path"));
    if (o.mp3_url.empty())
        o.mp3_url = nonempty(f.o, f.key("audio_url"));
    if (o.mp3_url.empty())
        return false;
    o.status = core::output_status::ready;
    o.wav_url = nonempty(f.o, f.key("conversion_path_wav"));
    o.duration = num(f.o, f.key("conversion_duration"));
    if (!o.duration)
        o.duration = num(f.o, f.key("duration"));
    if (auto t = str(f.o, f.key("title")); t && !t->empty())
        o.title = *t;
    if (auto l = str(f.o, f.key("lyrics")); l && !l->empty())
        o.lyrics = *l;
    if (auto* lt = field(f.o, f.key("lyrics_timestamped")); lt && !lt->is_null()) {
        const bool empty = (lt->is_string() && trim(std::string_view(lt->as_string())).empty()) ||
                           (lt->is_array() && lt->as_array().empty());
        if (!empty) {
            if (auto lines = lyrics_from_value(*lt); lines && !lines->empty())
                o.lyrics_timestamped = std::move(*lines);
            else if (!lines)
                warn.push_back("musicgpt: unreadable " + f.key("lyrics_timestamped") +
                               " ignored for output " + std::to_string(o.index));
        }
    }
    return true;
}

void fill_flag(const output_fields& f, output_update& o) {
    if (boolean(f.o, f.key("is_flagged")).value_or(false)) {
        o.flagged = true;
        o.flag_reason = nonempty(f.o, f.key("reason"));
        if (o.flag_reason.empty())
            o.flag_reason = "flagged by MusicGPT moderation";
    }
}

std::string failure_text(const output_fields& f) {
    for (std::string_view k : {"status_msg", "error", "message", "reason"}) {
        auto s = nonempty(f.o, f.key(k));
        if (!s.empty())
            return s;
    }
    return "MusicGPT reported the output as failed";
}

bool is_failed_status(std::string_view s) {
    auto u = upper(trim(s));
    return u == "FAILED" || u == "ERROR";
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Submit

submit_request build_submit(const core::extend_request& r, const std::string& webhook_url) {
    submit_request s;
    if (r.length)
        s.warnings.emplace_back(
            "musicgpt: length is not supported; MusicGPT chooses the length of the new audio");
    int outputs = r.num_outputs;
    if (outputs < 1 || outputs > 2) {
        outputs = std::clamp(outputs, 1, 2);
        s.warnings.push_back("musicgpt: num_outputs " + std::to_string(r.num_outputs) +
                             " is not supported; sent " + std::to_string(outputs));
    }
    switch (r.source) {
        case core::source_kind::clip:
            s.kind = submit_request::body_kind::none;
            s.error_code = "unsupported_source";
            s.error = "musicgpt cannot extend a provider clip; send audio_file or audio_url";
            return s;
        case core::source_kind::url: {
            if (r.audio_url.empty()) {
                s.kind = submit_request::body_kind::none;
                s.error_code = "missing_source";
                s.error = "the request has a URL source without audio_url";
                return s;
            }
            // Built by hand so numbers read naturally ("35.5", not Boost.JSON's "3.55E1").
            std::string b = "{\"audio_url\":" + json_string(r.audio_url);
            b += ",\"extend_after\":" + format_number(r.extend_after);
            if (r.prompt)
                b += ",\"prompt\":" + json_string(*r.prompt);
            if (r.lyrics)
                b += ",\"lyrics\":" + json_string(*r.lyrics);
            if (r.lyrics_section_to_extend)
                b += ",\"lyrics_section_to_extend\":" + json_string(*r.lyrics_section_to_extend);
            if (r.gender)
                b += ",\"gender\":" + json_string(*r.gender);
            b += ",\"num_outputs\":" + std::to_string(outputs);
            if (!webhook_url.empty())
                b += ",\"webhook_url\":" + json_string(webhook_url);
            b += "}";
            s.kind = submit_request::body_kind::json;
            s.json_body = std::move(b);
            return s;
        }
        case core::source_kind::file: {
            s.kind = submit_request::body_kind::multipart;
            s.fields.push_back({"extend_after", format_number(r.extend_after)});
            if (r.prompt)
                s.fields.push_back({"prompt", *r.prompt});
            if (r.lyrics)
                s.fields.push_back({"lyrics", *r.lyrics});
            if (r.lyrics_section_to_extend)
                s.fields.push_back({"lyrics_section_to_extend", *r.lyrics_section_to_extend});
            if (r.gender)
                s.fields.push_back({"gender", *r.gender});
            s.fields.push_back({"num_outputs", std::to_string(outputs)});
            if (!webhook_url.empty())
                s.fields.push_back({"webhook_url", webhook_url});
            s.file_field = "audio_file";
            s.file_name = safe_filename(r.audio_filename);
            s.file_content_type = content_type_for(s.file_name);
            return s;
        }
    }
    s.kind = submit_request::body_kind::none;
    s.error_code = "unsupported_source";
    s.error = "unknown source kind";
    return s;
}

// ---------------------------------------------------------------------------------------------
// State

attempt_state parse_state(std::string_view state_json) {
    attempt_state st;
    auto o = parse_object(state_json);
    if (!o)
        return st;
    st.task_id = nonempty(*o, "task_id");
    for (int n = 1; n <= 2; ++n) {
        auto id = nonempty(*o, "conversion_id_" + std::to_string(n));
        if (id.empty())
            break;
        st.conversion_ids.push_back(std::move(id));
    }
    st.eta_seconds = num(*o, "eta");
    st.credit_estimate = num(*o, "credit_estimate");
    st.lookup_conversion_id = nonempty(*o, "lookup_conversion_id");
    return st;
}

std::string state_to_json(const attempt_state& st) {
    std::string b = "{\"task_id\":" + json_string(st.task_id);
    for (std::size_t i = 0; i < st.conversion_ids.size(); ++i)
        b +=
            ",\"conversion_id_" + std::to_string(i + 1) + "\":" + json_string(st.conversion_ids[i]);
    if (st.eta_seconds)
        b += ",\"eta\":" + format_number(*st.eta_seconds);
    if (st.credit_estimate)
        b += ",\"credit_estimate\":" + format_number(*st.credit_estimate);
    if (!st.lookup_conversion_id.empty())
        b += ",\"lookup_conversion_id\":" + json_string(st.lookup_conversion_id);
    b += "}";
    return b;
}

int output_index(const attempt_state& st, std::string_view conversion_id) {
    if (conversion_id.empty())
        return 0;
    for (std::size_t i = 0; i < st.conversion_ids.size(); ++i)
        if (st.conversion_ids[i] == conversion_id)
            return static_cast<int>(i) + 1;
    return 0;
}

namespace {
std::string percent_encode(std::string_view s) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (char c : s) {
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
}  // namespace

std::string by_id_target(std::string_view task_id) {
    return std::string(by_id_path) + "?conversionType=EXTEND&task_id=" + percent_encode(task_id);
}

std::string by_id_target_for_conversion(std::string_view conversion_id) {
    return std::string(by_id_path) +
           "?conversionType=EXTEND&conversion_id=" + percent_encode(conversion_id);
}

// ---------------------------------------------------------------------------------------------
// Errors

core::error_class classify_http(int status) {
    if (status >= 200 && status < 300)
        return core::error_class::none;
    if (status == 401 || status == 403)
        return core::error_class::credential;
    if (status == 402)
        return core::error_class::quota;
    if (status == 429)
        return core::error_class::rate_limited;
    if (status == 408 || status == 425 || (status >= 500 && status < 600))
        return core::error_class::transient;
    if (status >= 400 && status < 500)
        return core::error_class::rejected;
    return core::error_class::unknown;
}

std::optional<std::int64_t> retry_after_ms(std::string_view value,
                                           std::optional<std::int64_t> now_unix_ms) {
    if (!now_unix_ms)
        now_unix_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    return core::parse_retry_after(value, now_unix_ms);
}

std::string error_text(std::string_view body) {
    if (auto o = parse_object(body))
        return error_text_of(*o);
    return printable_prefix(body, 200);
}

update parse_submit_response(int status, std::string_view body, const header_list& headers,
                             std::optional<std::int64_t> now_unix_ms) {
    auto obj = parse_object(body);
    const bool ok_status = status >= 200 && status < 300;
    if (ok_status) {
        if (!obj)
            return failed(core::error_class::transient, "malformed_response",
                          "MusicGPT answered HTTP " + std::to_string(status) +
                              " to the extend submit with a body that is not a JSON object (" +
                              printable_prefix(body, 120) +
                              "); the task may exist upstream: reconcile before resubmitting");
        const auto success = boolean(*obj, "success");
        if (success && !*success) {
            auto msg = error_text_of(*obj);
            if (says_insufficient_funds(msg))
                return failed(core::error_class::quota, "insufficient_funds", "MusicGPT: " + msg);
            if (msg.empty())
                return failed(core::error_class::unknown, "upstream_refused",
                              "MusicGPT answered success:false without a message");
            return failed(core::error_class::rejected, "upstream_refused", "MusicGPT: " + msg);
        }
        attempt_state st;
        st.task_id = nonempty(*obj, "task_id");
        if (st.task_id.empty())
            return failed(core::error_class::transient, "malformed_response",
                          "MusicGPT accepted the extend submit without a task_id; the task may "
                          "exist upstream: reconcile before resubmitting");
        for (int n = 1; n <= 2; ++n) {
            auto id = nonempty(*obj, "conversion_id_" + std::to_string(n));
            if (id.empty())
                break;
            st.conversion_ids.push_back(std::move(id));
        }
        st.eta_seconds = num(*obj, "eta");
        st.credit_estimate = num(*obj, "credit_estimate");
        update u;
        u.what = update::kind::accepted;
        u.provider_task_id = st.task_id;
        u.state_json = state_to_json(st);
        if (st.eta_seconds && *st.eta_seconds > 0)
            u.poll_after_ms = static_cast<std::int64_t>(std::llround(*st.eta_seconds * 1000.0));
        if (st.conversion_ids.empty())
            u.warnings.emplace_back(
                "musicgpt: the submit answer carried no conversion ids; outputs are matched by "
                "position");
        return u;
    }

    std::string msg = obj ? error_text_of(*obj) : printable_prefix(body, 200);
    auto cls = classify_http(status);
    std::string code;
    if (says_insufficient_funds(msg) || status == 402) {
        cls = core::error_class::quota;
        code = "insufficient_funds";
    } else if (status == 401) {
        code = "upstream_unauthorized";
    } else if (status == 403) {
        code = "upstream_forbidden";
    } else if (status == 429) {
        code = "upstream_rate_limited";
    } else if (cls == core::error_class::transient) {
        code = "upstream_unavailable";
    } else if (cls == core::error_class::rejected) {
        code = "upstream_rejected";
    } else {
        code = "upstream_unexpected_status";
    }
    update u = failed(cls, std::move(code),
                      "MusicGPT answered HTTP " + std::to_string(status) +
                          (msg.empty() ? std::string() : ": " + msg));
    if (obj)
        u.retry_after_ms = body_retry_after_ms(*obj);
    if (!u.retry_after_ms)
        if (auto h = find_header(headers, "retry-after"))
            u.retry_after_ms = retry_after_ms(*h, now_unix_ms);
    return u;
}

// ---------------------------------------------------------------------------------------------
// Webhooks

std::optional<std::vector<core::lyric_line>> parse_lyrics_timestamped(std::string_view text) {
    boost::system::error_code ec;
    auto v = json::parse(json::string_view(text.data(), text.size()), ec);
    if (ec || !v.is_array())
        return std::nullopt;
    std::vector<core::lyric_line> out;
    for (const auto& item : v.as_array()) {
        if (!item.is_object())
            return std::nullopt;
        const auto& o = item.as_object();
        auto start = num(o, "start");
        auto end = num(o, "end");
        if (!start || !end)
            return std::nullopt;
        core::lyric_line l;
        l.text = nonempty(o, "text");
        l.start_ms = static_cast<std::int64_t>(std::llround(*start));
        l.end_ms = static_cast<std::int64_t>(std::llround(*end));
        if (l.end_ms < l.start_ms)
            l.end_ms = l.start_ms;
        out.push_back(std::move(l));
    }
    return out;
}

std::optional<update> parse_webhook(const std::string& state_json, std::string_view body,
                                    std::string& error, bool* too_early,
                                    std::string* upstream_task_id, std::string* state_with) {
    const attempt_state st = parse_state(state_json);
    auto hook = wire::open_webhook("MusicGPT", body, st.task_id, error);
    if (!hook)
        return std::nullopt;
    const auto& o = hook->object;

    update u;
    u.what = update::kind::progress;
    u.provider_task_id = hook->provider_task_id;

    const std::string subtype = nonempty(o, "subtype");
    const std::string conversion_id = nonempty(o, "conversion_id");
    const bool has_path = field(o, "conversion_path") || field(o, "audio_url");

    enum class kind { audio, lyrics, cover } k;
    if (iequals(subtype, spelling::subtype_lyrics)) {
        k = kind::lyrics;
    } else if (iequals(subtype, spelling::subtype_cover) ||
               (conversion_id.empty() && field(o, "image_path"))) {
        k = kind::cover;
    } else if (!conversion_id.empty() && field(o, "lyrics_timestamped") && !has_path &&
               !field(o, "success") && !field(o, "status")) {
        k = kind::lyrics;  // a lyrics webhook that lost its subtype
    } else if (!conversion_id.empty() || has_path) {
        k = kind::audio;
    } else {
        error = "unrecognized MusicGPT webhook (no subtype, conversion_id or image_path)";
        return std::nullopt;
    }

    if (k == kind::cover) {
        for (int n = 1; n <= 2; ++n) {
            auto id = nonempty(o, "conversion_id_" + std::to_string(n));
            if (!id.empty() && !st.conversion_ids.empty() && output_index(st, id) == 0) {
                error = "MusicGPT cover webhook names conversion '" + id + "', expected " +
                        expected_ids(st);
                return std::nullopt;
            }
        }
        if (!boolean(o, "success").value_or(true)) {
            auto msg = error_text_of(o);
            u.warnings.push_back("musicgpt: album cover generation failed" +
                                 (msg.empty() ? std::string() : ": " + msg));
            return u;
        }
        u.cover_url = nonempty(o, "image_path");
        if (u.cover_url.empty())
            u.cover_url = nonempty(o, "album_cover_path");
        if (u.cover_url.empty()) {
            error = "MusicGPT cover webhook without image_path";
            return std::nullopt;
        }
        return u;
    }

    int index = output_index(st, conversion_id);
    if (index == 0 && conversion_id.empty() && k == kind::audio && st.conversion_ids.size() <= 1)
        index = 1;  // the generic sample names no conversion; one output leaves no doubt
    if (index == 0) {
        if (too_early && !conversion_id.empty() && st.conversion_ids.empty()) {
            *too_early = true;
            if (upstream_task_id)
                *upstream_task_id = hook->task_id;
            if (state_with && st.task_id.empty() && hook->task_id.empty()) {
                attempt_state with = st;
                with.lookup_conversion_id = conversion_id;
                *state_with = state_to_json(with);
            }
        }
        error = conversion_id.empty() ? std::string("MusicGPT webhook names no conversion_id")
                                      : "MusicGPT webhook for unknown conversion_id '" +
                                            conversion_id + "' (expected " + expected_ids(st) + ")";
        return std::nullopt;
    }

    output_update out;
    out.index = index;
    const output_fields f{o, ""};
    if (k == kind::lyrics) {
        auto* lt = field(o, "lyrics_timestamped");
        std::optional<std::vector<core::lyric_line>> lines;
        if (lt)
            lines = lyrics_from_value(*lt);
        if (!lines) {
            error = lt ? "MusicGPT lyrics webhook with unreadable lyrics_timestamped"
                       : "MusicGPT lyrics webhook without lyrics_timestamped";
            return std::nullopt;
        }
        out.status = core::output_status::pending;
        out.lyrics_timestamped = std::move(*lines);
        u.outputs.push_back(std::move(out));
        return u;
    }

    // Audio.
    const bool failed_output =
        !boolean(o, "success").value_or(true) || is_failed_status(nonempty(o, "status"));
    fill_flag(f, out);
    if (failed_output) {
        out.status = core::output_status::failed;
        out.error = failure_text(f);
    } else if (!fill_ready_output(f, out, u.warnings)) {
        error = "MusicGPT audio webhook for conversion '" + conversion_id +
                "' reports success without conversion_path";
        return std::nullopt;
    }
    u.outputs.push_back(std::move(out));
    return u;
}

// ---------------------------------------------------------------------------------------------
// Polling

update parse_by_id(const std::string& state_json, int status, std::string_view body,
                   const header_list& headers, std::optional<std::int64_t> now_unix_ms) {
    const attempt_state st = parse_state(state_json);
    auto obj = parse_object(body);

    auto keep_polling = [&](core::error_class cls, std::string code, std::string message) {
        update u;
        u.what = update::kind::running;
        u.provider_task_id = st.task_id;
        u.error = cls;
        u.error_code = std::move(code);
        u.error_message = std::move(message);
        if (obj)
            u.retry_after_ms = body_retry_after_ms(*obj);
        if (!u.retry_after_ms)
            if (auto h = find_header(headers, "retry-after"))
                u.retry_after_ms = retry_after_ms(*h, now_unix_ms);
        if (u.retry_after_ms)
            u.poll_after_ms = *u.retry_after_ms;
        return u;
    };

    if (status < 200 || status >= 300) {
        const std::string msg = obj ? error_text_of(*obj) : printable_prefix(body, 200);
        const std::string text = "MusicGPT byId answered HTTP " + std::to_string(status) +
                                 (msg.empty() ? std::string() : ": " + msg);
        const auto cls = classify_http(status);
        update u;
        switch (cls) {
            case core::error_class::rate_limited:
                return keep_polling(cls, "poll_rate_limited", text);
            case core::error_class::transient:
                return keep_polling(cls, "poll_unavailable", text);
            case core::error_class::credential:
                u = failed(cls, status == 401 ? "upstream_unauthorized" : "upstream_forbidden",
                           text);
                break;
            case core::error_class::quota:
                u = failed(cls, "insufficient_funds", text);
                break;
            case core::error_class::rejected:
                u = failed(cls, status == 404 ? "upstream_task_not_found" : "upstream_rejected",
                           text);
                break;
            default:
                u = failed(core::error_class::unknown, "upstream_unexpected_status", text);
        }
        u.provider_task_id = st.task_id;
        return u;
    }

    if (!obj)
        return keep_polling(core::error_class::transient, "malformed_poll_response",
                            "MusicGPT byId answered a body that is not a JSON object (" +
                                printable_prefix(body, 120) + ")");
    const json::value* cv = field(*obj, "conversion");
    if (!cv || !cv->is_object()) {
        auto msg = error_text_of(*obj);
        return keep_polling(core::error_class::transient, "malformed_poll_response",
                            "MusicGPT byId answered without a conversion object" +
                                (msg.empty() ? std::string() : ": " + msg));
    }
    const auto& c = cv->as_object();
    const std::string raw_status = nonempty(c, "status");
    const std::string s = upper(trim(raw_status));
    std::string status_msg = nonempty(c, "status_msg");
    if (status_msg.empty())
        status_msg = nonempty(c, "message");

    update u;
    u.provider_task_id = st.task_id.empty() ? nonempty(c, "task_id") : st.task_id;
    if (s == spelling::status_in_queue || s == "QUEUED" || s == "PENDING" ||
        s == spelling::status_processing) {
        u.what = update::kind::running;
        return u;
    }
    if (s == spelling::status_failed || s == spelling::status_error) {
        const bool f = s == spelling::status_failed;
        u = failed(f ? core::error_class::rejected : core::error_class::unknown,
                   f ? "upstream_failed" : "upstream_error",
                   "MusicGPT reported the task " + s +
                       (status_msg.empty() ? std::string() : ": " + status_msg));
        u.provider_task_id = st.task_id;
        return u;
    }
    if (s != spelling::status_completed) {
        u = failed(core::error_class::unknown, "unknown_upstream_status",
                   "MusicGPT byId returned an unknown status '" + raw_status + "'");
        u.provider_task_id = st.task_id;
        return u;
    }

    // COMPLETED.
    std::vector<bool> seen(std::max<std::size_t>(st.conversion_ids.size(), 2) + 1, false);
    const bool numbered = field(c, "conversion_id_1") || field(c, "conversion_path_1");
    auto add_output = [&](const output_fields& f, int index) {
        output_update o;
        o.index = index;
        fill_flag(f, o);
        if (is_failed_status(nonempty(f.o, f.key("status")))) {
            o.status = core::output_status::failed;
            o.error = failure_text(f);
        } else if (!fill_ready_output(f, o, u.warnings)) {
            o.status = core::output_status::failed;
            o.error = "MusicGPT completed the task without audio for this output" +
                      (status_msg.empty() ? std::string() : " (" + status_msg + ")");
        }
        if (static_cast<std::size_t>(index) < seen.size())
            seen[static_cast<std::size_t>(index)] = true;
        u.outputs.push_back(std::move(o));
    };

    if (numbered) {
        for (int n = 1; n <= 2; ++n) {
            const std::string sfx = "_" + std::to_string(n);
            const std::string cid = nonempty(c, "conversion_id" + sfx);
            if (cid.empty() && !field(c, "conversion_path" + sfx))
                continue;
            int index = output_index(st, cid);
            if (index == 0) {
                if (!st.conversion_ids.empty()) {
                    u.warnings.push_back("musicgpt: byId names unknown conversion '" + cid +
                                         "'; ignored");
                    continue;
                }
                index = n;  // no ids known: by position
            }
            add_output(output_fields{c, sfx}, index);
        }
    } else {
        const std::string cid = nonempty(c, "conversion_id");
        int index = output_index(st, cid);
        if (index == 0 && (cid.empty() || st.conversion_ids.empty()) &&
            st.conversion_ids.size() <= 1)
            index = 1;
        if (index == 0) {
            u.warnings.push_back("musicgpt: byId names unknown conversion '" + cid + "'; ignored");
        } else {
            add_output(output_fields{c, ""}, index);
        }
    }

    u.cover_url = nonempty(c, "album_cover_path");
    // Every known output must be accounted for before the task is done.
    const std::size_t expected = st.conversion_ids.size();
    bool complete = true;
    for (std::size_t i = 1; i <= expected; ++i)
        if (!seen[i]) {
            if (numbered) {
                output_update o;
                o.index = static_cast<int>(i);
                o.status = core::output_status::failed;
                o.error = "MusicGPT completed the task without this output";
                u.outputs.push_back(std::move(o));
            } else {
                complete = false;  // the single-conversion shape shows one output at a time
            }
        }
    if (u.outputs.empty() && expected == 0) {
        u = failed(core::error_class::unknown, "malformed_poll_response",
                   "MusicGPT byId reports COMPLETED without any output");
        u.provider_task_id = st.task_id;
        return u;
    }
    std::sort(u.outputs.begin(), u.outputs.end(),
              [](const output_update& a, const output_update& b) { return a.index < b.index; });
    u.what = complete ? update::kind::done : update::kind::progress;
    return u;
}

}  // namespace segue::providers::musicgpt

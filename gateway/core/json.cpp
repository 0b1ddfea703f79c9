#include "gateway/core/json.hpp"

#include <boost/json.hpp>

#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>

#include "gateway/util/json_text.hpp"

namespace segue::core {

namespace json = boost::json;

store::millis now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string iso8601(store::millis ms) {
    std::time_t secs = static_cast<std::time_t>(ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    char buf[40];
    std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                  tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                  static_cast<int>(ms % 1000));
    return buf;
}

namespace {

template <class T>
void put_opt(json::object& o, std::string_view k, const std::optional<T>& v) {
    if (v)
        o[k] = *v;
}

// Seconds and durations as clients wrote them: a whole number as an integer ("extend_after":5,
// not Boost.JSON's 5E0 for the double 5.0), anything else as a double.
json::value number(double d) {
    if (std::isfinite(d) && d == std::trunc(d) && std::fabs(d) < 9007199254740992.0)  // 2^53
        return static_cast<std::int64_t>(d);
    return d;
}

void put_opt(json::object& o, std::string_view k, const std::optional<double>& v) {
    if (v)
        o[k] = number(*v);
}

std::optional<std::string> get_str(const json::object& o, std::string_view k) {
    auto it = o.find(k);
    if (it == o.end() || !it->value().is_string())
        return std::nullopt;
    return std::string(it->value().get_string());
}

std::optional<double> get_num(const json::object& o, std::string_view k) {
    auto it = o.find(k);
    if (it == o.end() || !it->value().is_number())
        return std::nullopt;
    return it->value().to_number<double>();
}

json::value parse_or_null(const std::string& text) {
    if (text.empty())
        return nullptr;
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec)
        return nullptr;
    return v;
}

json::object request_object(const extend_request& r) {
    json::object o;
    o["source"] = to_string(r.source);
    o["audio_file_id"] = r.audio_file_id;
    o["audio_filename"] = r.audio_filename;
    o["audio_url"] = r.audio_url;
    o["clip_provider"] = r.clip_provider;
    o["clip_id"] = r.clip_id;
    o["extend_after"] = number(r.extend_after);
    put_opt(o, "prompt", r.prompt);
    put_opt(o, "lyrics", r.lyrics);
    put_opt(o, "lyrics_section_to_extend", r.lyrics_section_to_extend);
    put_opt(o, "gender", r.gender);
    o["num_outputs"] = r.num_outputs;
    put_opt(o, "length", r.length);
    put_opt(o, "webhook_url", r.webhook_url);
    put_opt(o, "provider", r.provider);
    put_opt(o, "route", r.route);
    o["metadata"] = r.metadata_json;
    o["source_duration"] = number(r.source_duration);
    o["source_sample_rate"] = r.source_sample_rate;
    o["source_channels"] = r.source_channels;
    json::array chain;
    for (const auto& p : r.route_chain)
        chain.emplace_back(p);
    o["route_chain"] = std::move(chain);
    o["route_regenerate"] = r.route_regenerate;
    o["hold_milli"] = r.hold_milli;
    return o;
}

}  // namespace

std::string request_to_json(const extend_request& r) {
    auto o = request_object(r);
    // Not in request_object: the Idempotency-Key fingerprint must keep its format, and an
    // explicit `num_outputs: 2` is the same request as the default.
    o["num_outputs_given"] = r.num_outputs_given;
    if (!r.webhook_format.empty())
        o["webhook_format"] = r.webhook_format;
    if (!r.webhook_format_secret.empty())
        o["webhook_format_secret"] = r.webhook_format_secret;
    return util::json_text(o);
}

extend_request request_from_json(const std::string& text) {
    extend_request r;
    auto v = json::parse(text);
    const auto& o = v.as_object();
    r.source = parse_source_kind(get_str(o, "source").value_or("file")).value_or(source_kind::file);
    r.audio_file_id = get_str(o, "audio_file_id").value_or("");
    r.audio_filename = get_str(o, "audio_filename").value_or("");
    r.audio_url = get_str(o, "audio_url").value_or("");
    r.clip_provider = get_str(o, "clip_provider").value_or("");
    r.clip_id = get_str(o, "clip_id").value_or("");
    r.extend_after = get_num(o, "extend_after").value_or(0);
    r.prompt = get_str(o, "prompt");
    r.lyrics = get_str(o, "lyrics");
    r.lyrics_section_to_extend = get_str(o, "lyrics_section_to_extend");
    r.gender = get_str(o, "gender");
    r.num_outputs = static_cast<int>(get_num(o, "num_outputs").value_or(2));
    if (auto it = o.find("num_outputs_given"); it != o.end() && it->value().is_bool())
        r.num_outputs_given = it->value().as_bool();
    r.length = get_num(o, "length");
    r.webhook_url = get_str(o, "webhook_url");
    r.provider = get_str(o, "provider");
    r.route = get_str(o, "route");
    r.metadata_json = get_str(o, "metadata").value_or("");
    r.webhook_format = get_str(o, "webhook_format").value_or("");
    r.webhook_format_secret = get_str(o, "webhook_format_secret").value_or("");
    r.source_duration = get_num(o, "source_duration").value_or(0);
    r.source_sample_rate = static_cast<int>(get_num(o, "source_sample_rate").value_or(0));
    r.source_channels = static_cast<int>(get_num(o, "source_channels").value_or(0));
    if (auto it = o.find("route_chain"); it != o.end() && it->value().is_array())
        for (const auto& p : it->value().as_array())
            if (p.is_string())
                r.route_chain.emplace_back(p.as_string());
    if (auto it = o.find("route_regenerate"); it != o.end() && it->value().is_bool())
        r.route_regenerate = it->value().as_bool();
    r.hold_milli = static_cast<std::int64_t>(get_num(o, "hold_milli").value_or(0));
    return r;
}

std::string request_fingerprint(const extend_request& r) {
    auto o = request_object(r);
    // The format before whole numbers became integers: these as doubles, in place (assigning to
    // an existing key keeps its position).
    o["extend_after"] = r.extend_after;
    if (r.length)
        o["length"] = *r.length;
    o["source_duration"] = r.source_duration;
    return json::serialize(o);
}

json::object public_request(const extend_request& r) {
    json::object o;
    json::object src;
    src["type"] = to_string(r.source);
    switch (r.source) {
        case source_kind::file:
            src["file_id"] = r.audio_file_id;
            if (!r.audio_filename.empty())
                src["filename"] = r.audio_filename;
            src["duration"] = number(r.source_duration);
            src["sample_rate"] = r.source_sample_rate;
            src["channels"] = r.source_channels;
            break;
        case source_kind::url:
            src["url"] = r.audio_url;
            break;
        case source_kind::clip:
            src["provider"] = r.clip_provider;
            src["id"] = r.clip_id;
            break;
    }
    o["source"] = std::move(src);
    o["extend_after"] = number(r.extend_after);
    put_opt(o, "prompt", r.prompt);
    put_opt(o, "lyrics", r.lyrics);
    put_opt(o, "lyrics_section_to_extend", r.lyrics_section_to_extend);
    put_opt(o, "gender", r.gender);
    o["num_outputs"] = r.num_outputs;
    put_opt(o, "length", r.length);
    put_opt(o, "webhook_url", r.webhook_url);
    put_opt(o, "provider", r.provider);
    put_opt(o, "route", r.route);
    return o;
}

json::object task_document(const store::task_row& t, const std::vector<store::output_row>& outputs,
                           const std::vector<store::attempt_row>& attempts) {
    json::object o;
    o["id"] = t.id;
    o["object"] = "extension";
    o["status"] = t.status;
    o["provider"] = t.provider.empty() ? json::value(nullptr) : json::value(t.provider);
    o["created_at"] = iso8601(t.created_at);
    o["updated_at"] = iso8601(t.updated_at);
    extend_request req;
    try {
        req = request_from_json(t.request_json);
    } catch (const std::exception&) {
    }
    o["request"] = public_request(req);
    json::array outs;
    for (const auto& row : outputs) {
        json::object out;
        out["index"] = row.index;
        out["status"] = row.status;
        auto data = parse_or_null(row.data_json);
        if (data.is_object())
            for (auto& kv : data.as_object())
                if (kv.key().empty() || kv.key().front() != '_')  // '_': the engine's own notes
                    out[kv.key()] = kv.value();
        outs.emplace_back(std::move(out));
    }
    o["outputs"] = std::move(outs);
    json::array atts;
    for (const auto& a : attempts) {
        json::object x;
        x["number"] = a.number;
        x["provider"] = a.provider;
        x["provider_task_id"] =
            a.provider_task_id.empty() ? json::value(nullptr) : json::value(a.provider_task_id);
        x["status"] = a.status;
        x["error"] = parse_or_null(a.error_json);
        x["started_at"] = iso8601(a.started_at);
        x["finished_at"] =
            a.finished_at ? json::value(iso8601(a.finished_at)) : json::value(nullptr);
        atts.emplace_back(std::move(x));
    }
    o["attempts"] = std::move(atts);
    o["error"] = parse_or_null(t.error_json);
    auto warnings = parse_or_null(t.warnings_json);
    o["warnings"] = warnings.is_array() ? warnings : json::array();
    auto metadata = parse_or_null(req.metadata_json);
    o["metadata"] = metadata.is_object() ? metadata : json::object();
    json::object links;
    links["self"] = "/v1/extensions/" + t.id;
    links["events"] = "/v1/extensions/" + t.id + "/events";
    // Only while there is something to cancel: a final task answers a cancel 409.
    if (!is_terminal(parse_task_status(t.status).value_or(task_status::failed)))
        links["cancel"] = "/v1/extensions/" + t.id + "/cancel";
    o["links"] = std::move(links);
    return o;
}

json::object event_document(const store::event_row& e) {
    json::object o;
    o["id"] = e.id;
    o["type"] = e.type;
    o["task_id"] = e.task_id;
    o["seq"] = e.seq;
    o["created_at"] = iso8601(e.created_at);
    auto data = parse_or_null(e.data_json);
    o["data"] = data.is_object() ? data : json::object();
    return o;
}

}  // namespace segue::core

#include "tests/fakes/musicgpt/musicgpt_fake.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <ctime>
#include <iostream>
#include <random>
#include <sstream>

#include "gateway/util/crypto.hpp"

namespace segue::fakes::musicgpt {

namespace json = boost::json;

namespace {

constexpr std::string_view submit_path = "/api/public/v1/extend";
constexpr std::string_view by_id_path = "/api/public/v1/byId";
constexpr std::string_view files_prefix = "/files/";

// A 1x1 PNG: the album cover (and its thumbnail).
constexpr std::array<unsigned char, 70> cover_png{
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
    0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00,
    0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78,
    0xda, 0x63, 0x64, 0x60, 0xf8, 0x5f, 0x0f, 0x00, 0x02, 0x87, 0x01, 0x80, 0xeb, 0x47,
    0xba, 0x92, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

std::int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

std::string uuid() {
    const std::string h = util::random_hex(16);
    return h.substr(0, 8) + "-" + h.substr(8, 4) + "-" + h.substr(12, 4) + "-" + h.substr(16, 4) +
           "-" + h.substr(20, 12);
}

std::string iso8601(std::int64_t unix_ms) {
    std::time_t t = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[32];
    std::strftime(buf, sizeof buf, "%Y-%m-%dT%H:%M:%S", &tm);
    char out[48];
    std::snprintf(out, sizeof out, "%s.%03dZ", buf, static_cast<int>(unix_ms % 1000));
    return out;
}

std::size_t utf8_length(std::string_view s) {
    std::size_t n = 0;
    for (unsigned char c : s)
        if ((c & 0xC0) != 0x80)
            ++n;
    return n;
}

bool starts_with_ci(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size())
        return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(s[i])) !=
            std::tolower(static_cast<unsigned char>(prefix[i])))
            return false;
    return true;
}

std::string_view trim(std::string_view s) {
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.front())))
        s.remove_prefix(1);
    while (!s.empty() && std::isspace(static_cast<unsigned char>(s.back())))
        s.remove_suffix(1);
    return s;
}

std::string shortest(double v) {
    char buf[64];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, v);
    return ec == std::errc() ? std::string(buf, end) : "0";
}

std::optional<double> parse_float(std::string_view s) {
    s = trim(s);
    if (s.empty())
        return std::nullopt;
    double d = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), d);
    if (ec != std::errc() || p != s.data() + s.size() || !std::isfinite(d))
        return std::nullopt;
    return d;
}

std::optional<std::int64_t> parse_int(std::string_view s) {
    s = trim(s);
    std::int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (s.empty() || ec != std::errc() || p != s.data() + s.size())
        return std::nullopt;
    return v;
}

// http(s)://host… as pydantic's AnyHttpUrl wants it; "" if fine, else the error type.
std::pair<std::string, std::string> url_problem(std::string_view url) {
    auto colon = url.find("://");
    if (colon == std::string_view::npos)
        return {"invalid or missing URL scheme", "value_error.url.scheme"};
    auto scheme = url.substr(0, colon);
    if (!(starts_with_ci(scheme, "http") &&
          (scheme.size() == 4 || (scheme.size() == 5 && (scheme[4] == 's' || scheme[4] == 'S')))))
        return {"URL scheme not permitted", "value_error.url.scheme"};
    auto rest = url.substr(colon + 3);
    auto host = rest.substr(0, rest.find_first_of("/?#"));
    if (host.empty() || host.front() == ':')
        return {"URL host invalid", "value_error.url.host"};
    return {};
}

json::object error_item(std::string_view field, std::string msg, std::string type,
                        json::object ctx = {}) {
    json::object e;
    json::array loc{"body"};
    if (!field.empty())
        loc.emplace_back(field);
    e["loc"] = std::move(loc);
    e["msg"] = std::move(msg);
    e["type"] = std::move(type);
    if (!ctx.empty())
        e["ctx"] = std::move(ctx);
    return e;
}

fake_reply detail_422(json::array detail) {
    json::object o;
    o["detail"] = std::move(detail);
    return json_reply(422, o);
}

std::string make_title(const std::string& prompt, int index) {
    std::string base;
    int words = 0;
    std::istringstream in(prompt);
    std::string w;
    while (words < 4 && in >> w) {
        if (!base.empty())
            base += ' ';
        w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
        base += w;
        ++words;
    }
    if (base.empty())
        base = "Extended Song";
    if (index > 1)
        base += " (Take " + std::to_string(index) + ")";
    return base;
}

// MusicGPT's timestamped lyrics: a JSON array in a string, milliseconds.
std::string make_lyrics_timestamped(const std::string& text, double extend_after, int index) {
    std::vector<std::string> lines;
    std::istringstream in(text);
    std::string line;
    while (std::getline(in, line)) {
        auto t = trim(line);
        if (!t.empty())
            lines.emplace_back(t);
    }
    if (lines.empty())
        lines.emplace_back("[Instrumental]");
    json::array a;
    std::int64_t start = static_cast<std::int64_t>(extend_after * 1000.0) + 173 * index;
    for (std::size_t i = 0; i < lines.size(); ++i) {
        json::object o;
        o["index"] = i;
        o["text"] = lines[i];
        o["start"] = start;
        o["end"] = start + 2400;
        a.push_back(std::move(o));
        start += 2500;
    }
    return to_json_text(a);
}

// Reads a JSON array of ints in {1, 2} into `out`.
std::string read_outputs(const json::value& v, std::string_view key, std::set<int>& out) {
    if (!v.is_array())
        return std::string(key) + " must be an array of output indexes (1, 2)";
    std::set<int> s;
    for (const auto& x : v.as_array()) {
        if (!x.is_int64() || x.as_int64() < 1 || x.as_int64() > 2)
            return std::string(key) + " must be an array of output indexes (1, 2)";
        s.insert(static_cast<int>(x.as_int64()));
    }
    out = std::move(s);
    return {};
}

std::string read_kinds(const json::value& v, std::string_view key, std::set<std::string>& out) {
    if (!v.is_array())
        return std::string(key) +
               R"( must be an array of webhook kinds ("audio", "lyrics", "cover"))";
    std::set<std::string> s;
    for (const auto& x : v.as_array()) {
        if (!x.is_string() ||
            (x.as_string() != "audio" && x.as_string() != "lyrics" && x.as_string() != "cover"))
            return std::string(key) +
                   R"( must be an array of webhook kinds ("audio", "lyrics", "cover"))";
        s.insert(std::string(x.as_string()));
    }
    out = std::move(s);
    return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Settings

std::string apply_settings(const json::object& o, settings& target) {
    settings s = target;
    for (const auto& kv : o) {
        const json::value& v = kv.value();  // not a structured binding: lambdas capture it
        const std::string k(kv.key());
        auto int_of = [&](std::int64_t lo, std::int64_t& out) -> std::string {
            if (!v.is_int64() || v.as_int64() < lo)
                return k + " must be an integer >= " + std::to_string(lo);
            out = v.as_int64();
            return {};
        };
        auto str_of = [&](std::string& out) -> std::string {
            if (!v.is_string())
                return k + " must be a string";
            out = std::string(v.as_string());
            return {};
        };
        auto bool_of = [&](bool& out) -> std::string {
            if (!v.is_bool())
                return k + " must be a boolean";
            out = v.as_bool();
            return {};
        };
        std::string err;
        std::int64_t n = 0;
        if (k == "api_key") {
            err = str_of(s.api_key);
        } else if (k == "base_url") {
            err = str_of(s.base_url);
        } else if (k == "webhook_delay_ms") {
            err = int_of(0, s.webhook_delay_ms);
        } else if (k == "webhook_gap_ms") {
            err = int_of(0, s.webhook_gap_ms);
        } else if (k == "webhook_attempts") {
            if (err = int_of(1, n); err.empty())
                s.webhook_attempts = static_cast<int>(n);
        } else if (k == "webhook_backoff_ms") {
            err = int_of(0, s.webhook_backoff_ms);
        } else if (k == "complete_after_ms") {
            err = int_of(-1, s.complete_after_ms);
        } else if (k == "pending_statuses" || k == "pending_status") {
            std::vector<std::string> list;
            if (v.is_string()) {
                list.emplace_back(v.as_string());
            } else if (v.is_array()) {
                for (const auto& x : v.as_array()) {
                    if (!x.is_string())
                        return k + " must be a status string or an array of them";
                    list.emplace_back(x.as_string());
                }
            }
            if (list.empty())
                return k + " must be a status string or a non-empty array of them";
            s.pending_statuses = std::move(list);
        } else if (k == "failed_status") {
            err = str_of(s.failed_status);
        } else if (k == "status_override") {
            err = str_of(s.status_override);
        } else if (k == "fail_outputs") {
            err = read_outputs(v, k, s.fail_outputs);
        } else if (k == "flag_outputs") {
            err = read_outputs(v, k, s.flag_outputs);
        } else if (k == "silent_outputs") {
            err = read_outputs(v, k, s.silent_outputs);
        } else if (k == "truncated_outputs") {
            err = read_outputs(v, k, s.truncated_outputs);
        } else if (k == "files_gone") {
            err = bool_of(s.files_gone);
        } else if (k == "flag_reason") {
            err = str_of(s.flag_reason);
        } else if (k == "task_fails") {
            err = bool_of(s.task_fails);
        } else if (k == "fail_message") {
            err = str_of(s.fail_message);
        } else if (k == "drop_all_webhooks") {
            err = bool_of(s.drop_all_webhooks);
        } else if (k == "drop_webhooks") {
            err = read_kinds(v, k, s.drop_webhooks);
        } else if (k == "drop_outputs") {
            err = read_outputs(v, k, s.drop_outputs);
        } else if (k == "duplicate_webhooks") {
            if (err = int_of(0, n); err.empty())
                s.duplicate_webhooks = static_cast<int>(n);
        } else if (k == "malformed_webhooks") {
            err = read_kinds(v, k, s.malformed_webhooks);
        } else if (k == "shuffle_webhooks") {
            err = bool_of(s.shuffle_webhooks);
        } else if (k == "seed") {
            if (err = int_of(0, n); err.empty())
                s.seed = static_cast<std::uint64_t>(n);
        } else if (k == "fetch_audio_url") {
            err = bool_of(s.fetch_audio_url);
        } else if (k == "eta") {
            if (err = int_of(0, n); err.empty())
                s.eta = static_cast<int>(n);
        } else if (k == "credits_per_output") {
            if (err = int_of(0, n); err.empty())
                s.credits_per_output = static_cast<int>(n);
        } else {
            return "unknown control key '" + k + "'";
        }
        if (!err.empty())
            return err;
    }
    target = std::move(s);
    return {};
}

json::object settings_json(const settings& s) {
    auto ints = [](const std::set<int>& v) {
        json::array a;
        for (int x : v)
            a.push_back(x);
        return a;
    };
    auto strs = [](const auto& v) {
        json::array a;
        for (const auto& x : v)
            a.emplace_back(x);
        return a;
    };
    json::object o;
    o["api_key"] = s.api_key;
    o["base_url"] = s.base_url;
    o["webhook_delay_ms"] = s.webhook_delay_ms;
    o["webhook_gap_ms"] = s.webhook_gap_ms;
    o["webhook_attempts"] = s.webhook_attempts;
    o["webhook_backoff_ms"] = s.webhook_backoff_ms;
    o["complete_after_ms"] = s.complete_after_ms;
    o["pending_statuses"] = strs(s.pending_statuses);
    o["failed_status"] = s.failed_status;
    o["status_override"] = s.status_override;
    o["fail_outputs"] = ints(s.fail_outputs);
    o["flag_outputs"] = ints(s.flag_outputs);
    o["silent_outputs"] = ints(s.silent_outputs);
    o["truncated_outputs"] = ints(s.truncated_outputs);
    o["files_gone"] = s.files_gone;
    o["flag_reason"] = s.flag_reason;
    o["task_fails"] = s.task_fails;
    o["fail_message"] = s.fail_message;
    o["drop_all_webhooks"] = s.drop_all_webhooks;
    o["drop_webhooks"] = strs(s.drop_webhooks);
    o["drop_outputs"] = ints(s.drop_outputs);
    o["duplicate_webhooks"] = s.duplicate_webhooks;
    o["malformed_webhooks"] = strs(s.malformed_webhooks);
    o["shuffle_webhooks"] = s.shuffle_webhooks;
    o["seed"] = s.seed;
    o["fetch_audio_url"] = s.fetch_audio_url;
    o["eta"] = s.eta;
    o["credits_per_output"] = s.credits_per_output;
    return o;
}

// ---------------------------------------------------------------------------------------------

fake::fake(net::io_context& ioc, settings initial, std::vector<fault_rule> initial_faults,
           std::vector<audio_asset> assets)
    : ioc_(ioc),
      initial_(initial),
      initial_faults_(std::move(initial_faults)),
      s_(std::move(initial)),
      assets_(std::move(assets)),
      webhooks_(ioc) {
    for (const auto& r : initial_faults_)
        faults_.add(r);
    hooks_.faults = &faults_;
    hooks_.requests = &requests_;
    hooks_.webhooks = &webhooks_;
    hooks_.apply = [this](const json::object& o) { return apply_settings(o, s_); };
    hooks_.describe = [this] { return settings_json(s_); };
    hooks_.reset = [this] {
        s_ = initial_;
        for (const auto& r : initial_faults_)
            faults_.add(r);
        tasks_.clear();
        task_order_.clear();
        conversions_.clear();
        ++generation_;
    };
    hooks_.extra = [this](const fake_request& r) { return control_extra(r); };
}

std::string fake::file_url(const std::string& name) const {
    return s_.base_url + std::string(files_prefix) + name;
}

net::awaitable<fake_reply> fake::handle(fake_request& req) {
    if (is_control_path(req.path))
        co_return handle_control(req, hooks_);

    std::string route = "other";
    if (req.path == submit_path)
        route = "submit";
    else if (req.path == by_id_path)
        route = "by_id";
    else if (req.path.substr(0, files_prefix.size()) == files_prefix)
        route = "files";
    const auto content_type = req.header("content-type").value_or("");
    const parsed_body body = parse_body(content_type, req.body);
    requests_.record(req, body, route);

    std::int64_t delay = 0;
    std::string note;
    if (auto rule = faults_.take(route)) {
        if (auto rep = faults_.reply_for(*rule))
            co_return *rep;
        delay = rule->delay_ms;
        note = rule->describe();
    }

    fake_reply rep;
    if (route == "files") {
        rep = (req.method == "GET" || req.method == "HEAD")
                  ? file(req)
                  : json_reply(405, json::object{{"detail", "Method Not Allowed"}});
    } else if (route == "submit" || route == "by_id") {
        const bool method_ok = route == "submit" ? req.method == "POST" : req.method == "GET";
        if (!method_ok)
            rep = json_reply(405, json::object{{"detail", "Method Not Allowed"}});
        else if (auto denied = check_auth(req))
            rep = *denied;
        else
            rep = route == "submit" ? submit(req, body) : by_id(req);
    } else {
        rep = json_reply(404, json::object{{"detail", "Not Found"}});
    }
    rep.delay_ms += delay;
    if (!note.empty())
        rep.note = note;
    co_return rep;
}

void fake::replied(const fake_request& req, const fake_reply& rep) {
    if (req.log_seq < 0)
        return;  // control requests are neither logged nor printed
    requests_.answered(req, rep);
    std::cerr << "fake_musicgpt: " << req.method << " " << req.target << " -> "
              << (rep.act == fake_reply::action::respond
                      ? std::to_string(rep.status)
                      : (rep.act == fake_reply::action::reset ? "RESET" : "CLOSED"))
              << (rep.note.empty() ? "" : " [" + rep.note + "]") << "\n";
}

std::optional<fake_reply> fake::check_auth(const fake_request& req) const {
    auto key = req.header("authorization");
    if (!key || trim(*key).empty())
        return json_reply(401, json::object{{"error", "Missing API key"}});
    // MusicGPT takes the key raw; "Bearer <key>" is just a wrong key.
    if (starts_with_ci(*key, "bearer ") || (!s_.api_key.empty() && *key != s_.api_key))
        return json_reply(401, json::object{{"error", "Invalid API key"}});
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// POST /api/public/v1/extend

fake_reply fake::submit(const fake_request& req, const parsed_body& body) {
    struct input {
        const body_field* part = nullptr;
        const json::value* value = nullptr;
    };
    std::map<std::string, input> in;
    switch (body.what) {
        case parsed_body::kind::json: {
            if (!body.error.empty()) {
                json::array d;
                json::object e;
                e["loc"] = json::array{"body", 0};
                e["msg"] = "Expecting value: line 1 column 1 (char 0)";
                e["type"] = "value_error.jsondecode";
                d.push_back(std::move(e));
                return detail_422(std::move(d));
            }
            if (!body.json.is_object())
                return detail_422(
                    json::array{error_item("", "value is not a valid dict", "type_error.dict")});
            for (const auto& [k, v] : body.json.as_object())
                in[std::string(k)].value = &v;
            break;
        }
        case parsed_body::kind::multipart:
        case parsed_body::kind::form:
            if (!body.error.empty())
                return json_reply(400,
                                  json::object{{"detail", "There was an error parsing the body"}});
            for (const auto& f : body.fields)
                in[f.name].part = &f;  // the last of a repeated field wins
            break;
        default:
            break;
    }

    json::array errors;
    // Text of a field; nullopt when absent (an empty form value counts as absent, like FastAPI).
    auto text = [&](const std::string& name) -> std::optional<std::string> {
        auto it = in.find(name);
        if (it == in.end())
            return std::nullopt;
        if (it->second.value) {
            const auto& v = *it->second.value;
            if (v.is_null())
                return std::nullopt;
            if (v.is_string())
                return std::string(v.as_string());
            if (v.is_int64())
                return std::to_string(v.as_int64());
            if (v.is_uint64())
                return std::to_string(v.as_uint64());
            if (v.is_double())
                return shortest(v.as_double());
            errors.push_back(error_item(name, "str type expected", "type_error.str"));
            return std::nullopt;
        }
        const auto* p = it->second.part;
        if (p->is_file()) {
            errors.push_back(error_item(name, "str type expected", "type_error.str"));
            return std::nullopt;
        }
        if (p->data.empty())
            return std::nullopt;
        return p->data;
    };

    // audio_file
    const body_field* file = nullptr;
    const std::size_t errors_before_source = errors.size();
    if (auto it = in.find("audio_file"); it != in.end()) {
        const auto* p = it->second.part;
        if (p && p->is_file()) {
            if (p->data.empty())
                errors.push_back(error_item("audio_file", "audio_file is empty", "value_error"));
            else
                file = p;
        } else if (!(p && p->data.empty()) && !(it->second.value && it->second.value->is_null())) {
            errors.push_back(error_item(
                "audio_file", "Expected UploadFile, received: <class 'str'>", "value_error"));
        }
    }
    // audio_url
    auto audio_url = text("audio_url");
    if (audio_url) {
        auto [msg, type] = url_problem(*audio_url);
        if (!msg.empty()) {
            errors.push_back(error_item("audio_url", msg, type));
            audio_url.reset();
        }
    }
    // A source that was given but refused already has its error; none given at all gets one.
    const bool source_refused = errors.size() > errors_before_source;
    // extend_after
    std::optional<double> extend_after;
    auto ea = in.find("extend_after");
    const bool ea_missing = ea == in.end() || (ea->second.part && !ea->second.part->is_file() &&
                                               ea->second.part->data.empty());
    if (ea_missing) {
        errors.push_back(error_item("extend_after", "field required", "value_error.missing"));
    } else if (ea->second.value && ea->second.value->is_null()) {
        errors.push_back(error_item("extend_after", "none is not an allowed value",
                                    "type_error.none.not_allowed"));
    } else {
        if (ea->second.value) {
            const auto& v = *ea->second.value;
            if (v.is_number())
                extend_after = v.to_number<double>();
            else if (v.is_string())
                extend_after = parse_float(v.as_string());
        } else if (!ea->second.part->is_file()) {
            extend_after = parse_float(ea->second.part->data);
        }
        if (!extend_after) {
            errors.push_back(
                error_item("extend_after", "value is not a valid float", "type_error.float"));
        } else if (*extend_after < 0) {
            errors.push_back(
                error_item("extend_after", "ensure this value is greater than or equal to 0",
                           "value_error.number.not_ge", json::object{{"limit_value", 0}}));
            extend_after.reset();
        }
    }
    auto prompt = text("prompt");
    auto lyrics = text("lyrics");
    if (lyrics && utf8_length(*lyrics) > 2000)
        errors.push_back(error_item("lyrics", "ensure this value has at most 2000 characters",
                                    "value_error.any_str.max_length",
                                    json::object{{"limit_value", 2000}}));
    auto section = text("lyrics_section_to_extend");
    if (section && utf8_length(*section) > 3000)
        errors.push_back(
            error_item("lyrics_section_to_extend", "ensure this value has at most 3000 characters",
                       "value_error.any_str.max_length", json::object{{"limit_value", 3000}}));
    auto gender = text("gender");
    if (gender && *gender != "male" && *gender != "female" && *gender != "neutral")
        errors.push_back(error_item(
            "gender",
            "value is not a valid enumeration member; permitted: 'male', 'female', 'neutral'",
            "type_error.enum",
            json::object{{"enum_values", json::array{"male", "female", "neutral"}}}));
    int num_outputs = 2;
    if (auto it = in.find("num_outputs"); it != in.end()) {
        std::optional<std::int64_t> n;
        bool absent = false;
        if (it->second.value) {
            const auto& v = *it->second.value;
            if (v.is_null())
                absent = true;
            else if (v.is_int64())
                n = v.as_int64();
            else if (v.is_double() && std::floor(v.as_double()) == v.as_double())
                n = static_cast<std::int64_t>(v.as_double());
            else if (v.is_string())
                n = parse_int(v.as_string());
        } else if (!it->second.part->is_file()) {
            absent = it->second.part->data.empty();
            if (!absent)
                n = parse_int(it->second.part->data);
        }
        if (!absent) {
            if (!n)
                errors.push_back(error_item("num_outputs", "value is not a valid integer",
                                            "type_error.integer"));
            else if (*n != 1 && *n != 2)
                errors.push_back(
                    error_item("num_outputs", "num_outputs must be 1 or 2", "value_error"));
            else
                num_outputs = static_cast<int>(*n);
        }
    }
    auto webhook_url = text("webhook_url");
    if (webhook_url) {
        auto [msg, type] = url_problem(*webhook_url);
        if (!msg.empty()) {
            errors.push_back(error_item("webhook_url", msg, type));
            webhook_url.reset();
        }
    }
    if (!file && !audio_url && !source_refused)
        errors.push_back(
            error_item("", "Either audio_file or audio_url must be provided", "value_error"));
    if (!errors.empty())
        return detail_422(std::move(errors));

    // Accepted: a task with one or two conversions.
    task t;
    t.task_id = uuid();
    t.webhook_url = webhook_url.value_or("");
    t.created_steady_ms = steady_ms();
    t.created_unix_ms = unix_ms();
    t.complete_after_ms = s_.complete_after_ms >= 0 ? s_.complete_after_ms : s_.webhook_delay_ms;
    t.fails = s_.task_fails;
    t.fail_message = s_.fail_message;
    t.flag_reason = s_.flag_reason;
    t.source = file ? "file" : "url";
    if (file) {
        t.audio_file["filename"] = *file->filename;
        t.audio_file["content_type"] = file->content_type;
        t.audio_file["size"] = file->data.size();
        t.audio_file["sha256"] = util::sha256_hex(file->data);
    }
    t.audio_url = audio_url.value_or("");
    for (const auto& [name, i] : in) {
        if (i.part && !i.part->is_file())
            t.fields[name] = i.part->data;
        else if (i.value)
            t.fields[name] = *i.value;
    }
    const std::string lyric_text = section ? *section : lyrics.value_or("");
    for (int n = 1; n <= num_outputs; ++n) {
        output o;
        o.index = n;
        o.conversion_id = uuid();
        o.title = make_title(prompt.value_or(""), n);
        o.lyrics = lyric_text;
        o.lyrics_timestamped = make_lyrics_timestamped(lyric_text, *extend_after, n);
        o.duration = assets_.empty() ? 0 : assets_[(n - 1) % assets_.size()].duration;
        o.failed = t.fails || s_.fail_outputs.count(n) > 0;
        o.flagged = s_.flag_outputs.count(n) > 0;
        conversions_[o.conversion_id] = {t.task_id, n};
        t.outputs.push_back(std::move(o));
    }
    if (!t.webhook_url.empty())
        send_webhooks(t);
    if (s_.fetch_audio_url && !t.audio_url.empty())
        net::co_spawn(ioc_, fetch_audio(this, t.task_id, t.audio_url, generation_), net::detached);

    json::object r;  // field order as in the docs' sample
    r["success"] = true;
    r["message"] = "Extend request submitted successfully";
    r["task_id"] = t.task_id;
    for (const auto& o : t.outputs)
        r["conversion_id_" + std::to_string(o.index)] = o.conversion_id;
    r["eta"] = s_.eta;
    r["credit_estimate"] = s_.credits_per_output * num_outputs;
    task_order_.push_back(t.task_id);
    tasks_.emplace(t.task_id, std::move(t));
    return json_reply(200, r);
}

void fake::send_webhooks(const task& t) {
    std::vector<outbound_webhook> items;
    auto make = [&](std::string kind, int output, const json::object& body) {
        outbound_webhook w;
        w.kind = std::move(kind);
        w.task_id = t.task_id;
        w.output = output;
        w.url = t.webhook_url;
        w.body = to_json_text(body);
        w.dropped = s_.drop_all_webhooks || s_.drop_webhooks.count(w.kind) > 0 ||
                    (output > 0 && s_.drop_outputs.count(output) > 0);
        if (s_.malformed_webhooks.count(w.kind)) {
            w.body = w.body.substr(0, w.body.size() / 2);  // cut mid-document
            w.malformed = true;
        }
        items.push_back(std::move(w));
    };
    bool any_ok = false;
    for (const auto& o : t.outputs) {
        json::object a;  // the docs' Extend webhook
        if (o.failed) {
            a["success"] = false;
            a["conversion_type"] = "Extend";
            a["task_id"] = t.task_id;
            a["conversion_id"] = o.conversion_id;
            a["status"] = "FAILED";
            a["status_msg"] = t.fail_message;
            a["is_flagged"] = o.flagged;
            a["reason"] = o.flagged ? t.flag_reason : "";
            make("audio", o.index, a);
            continue;
        }
        any_ok = true;
        a["success"] = true;
        a["conversion_type"] = "Extend";
        a["task_id"] = t.task_id;
        a["conversion_id"] = o.conversion_id;
        a["conversion_path"] = file_url(o.conversion_id + ".mp3");
        a["conversion_path_wav"] = file_url(o.conversion_id + ".wav");
        a["conversion_duration"] = o.duration;
        a["is_flagged"] = o.flagged;
        a["reason"] = o.flagged ? t.flag_reason : "";
        a["lyrics"] = o.lyrics;
        a["lyrics_timestamped"] = json::array();
        a["title"] = o.title;
        make("audio", o.index, a);
        json::object l;
        l["subtype"] = "lyrics_timestamped";
        l["conversion_id"] = o.conversion_id;
        l["lyrics_timestamped"] = o.lyrics_timestamped;
        make("lyrics", o.index, l);
    }
    if (any_ok) {
        json::object c;
        c["subtype"] = "album_cover_generation";
        c["success"] = true;
        c["task_id"] = t.task_id;
        c["image_path"] = file_url(t.task_id + "/cover.png");
        for (const auto& o : t.outputs)
            c["conversion_id_" + std::to_string(o.index)] = o.conversion_id;
        make("cover", 0, c);
    }
    std::mt19937_64 rng(s_.seed ? s_.seed + shuffles_++ : std::random_device{}());
    if (s_.shuffle_webhooks)
        std::shuffle(items.begin(), items.end(), rng);
    // Repeated deliveries come after the originals, in another order.
    std::vector<outbound_webhook> again;
    for (int d = 0; d < s_.duplicate_webhooks; ++d) {
        std::vector<outbound_webhook> copy;
        for (const auto& w : items)
            if (!w.dropped && !w.duplicate) {
                copy.push_back(w);
                copy.back().duplicate = true;
            }
        if (s_.shuffle_webhooks)
            std::shuffle(copy.begin(), copy.end(), rng);
        for (auto& w : copy)
            again.push_back(std::move(w));
    }
    for (auto& w : again)
        items.push_back(std::move(w));
    webhook_options opt;
    opt.max_attempts = s_.webhook_attempts;
    opt.backoff_ms = s_.webhook_backoff_ms;
    webhooks_.schedule(std::move(items), s_.webhook_delay_ms, s_.webhook_gap_ms, opt);
}

net::awaitable<void> fake::fetch_audio(fake* self, std::string task_id, std::string url,
                                       std::uint64_t generation) {
    client_request rq;
    rq.url = url;
    rq.timeout = std::chrono::seconds(30);
    auto res = co_await http_call(std::move(rq));
    if (self->generation_ != generation)
        co_return;
    auto it = self->tasks_.find(task_id);
    if (it == self->tasks_.end())
        co_return;
    json::object f;
    f["ok"] = res.ok;
    f["status"] = res.status;
    if (res.ok) {
        f["size"] = res.body.size();
        f["sha256"] = util::sha256_hex(res.body);
    } else {
        f["error"] = res.error;
    }
    it->second.fetch = std::move(f);
}

// ---------------------------------------------------------------------------------------------
// GET /api/public/v1/byId

std::string fake::status_of(const task& t, bool& done) const {
    const std::int64_t elapsed = steady_ms() - t.created_steady_ms;
    done = elapsed >= t.complete_after_ms;
    if (!s_.status_override.empty())
        return s_.status_override;
    if (!done) {
        const auto n = s_.pending_statuses.size();
        std::size_t i = t.complete_after_ms > 0
                            ? static_cast<std::size_t>(elapsed * static_cast<std::int64_t>(n) /
                                                       t.complete_after_ms)
                            : 0;
        return s_.pending_statuses[std::min(i, n - 1)];
    }
    const bool all_failed =
        std::all_of(t.outputs.begin(), t.outputs.end(), [](const output& o) { return o.failed; });
    return t.fails || all_failed ? s_.failed_status : "COMPLETED";
}

fake_reply fake::by_id(const fake_request& req) {
    auto type = req.query_param("conversionType");
    if (!type || type->empty()) {
        json::object e;
        e["loc"] = json::array{"query", "conversionType"};
        e["msg"] = "field required";
        e["type"] = "value_error.missing";
        return detail_422(json::array{e});
    }
    static const std::set<std::string> known = {"MUSIC_AI",
                                                "TEXT_TO_SPEECH",
                                                "VOICE_CONVERSION",
                                                "COVER",
                                                "EXTRACTION",
                                                "DENOISING",
                                                "DEECHO",
                                                "DEREVERB",
                                                "SOUND_GENERATOR",
                                                "AUDIO_TRANSCRIPTION",
                                                "AUDIO_SPEED_CHANGER",
                                                "AUDIO_MASTERING",
                                                "AUDIO_CUTTER",
                                                "REMIX",
                                                "FILE_CONVERT",
                                                "KEY_BPM_EXTRACTION",
                                                "AUDIO_TO_MIDI",
                                                "EXTEND",
                                                "INPAINT",
                                                "SING_OVER_INSTRUMENTAL",
                                                "LYRICS_GENERATOR",
                                                "STEMS_SEPARATION",
                                                "VOCAL_EXTRACTION"};
    if (!known.count(*type)) {
        json::object e;
        e["loc"] = json::array{"query", "conversionType"};
        e["msg"] = "value is not a valid enumeration member";
        e["type"] = "type_error.enum";
        return detail_422(json::array{e});
    }
    auto task_id = req.query_param("task_id").value_or("");
    auto conversion_id = req.query_param("conversion_id").value_or("");
    if (!task_id.empty() && !conversion_id.empty())
        return json_reply(400, json::object{{"success", false},
                                            {"message",
                                             "Provide either task_id or "
                                             "conversion_id, not both"}});
    if (task_id.empty() && conversion_id.empty()) {
        json::object e;
        e["loc"] = json::array{"query", "task_id"};
        e["msg"] = "either task_id or conversion_id is required";
        e["type"] = "value_error.missing";
        return detail_422(json::array{e});
    }
    if (!conversion_id.empty()) {
        auto c = conversions_.find(conversion_id);
        if (c != conversions_.end())
            task_id = c->second.first;
        else
            task_id.clear();
    }
    auto it = tasks_.find(task_id);
    if (it == tasks_.end() || *type != "EXTEND")
        return json_reply(404, json::object{{"error", "Conversion not found"}});
    const task& t = it->second;

    bool done = false;
    const std::string status = status_of(t, done);
    json::object c;
    c["task_id"] = t.task_id;
    for (const auto& o : t.outputs)
        c["conversion_id_" + std::to_string(o.index)] = o.conversion_id;
    c["status"] = status;
    const bool failed_task =
        done && (t.fails || std::all_of(t.outputs.begin(), t.outputs.end(),
                                        [](const output& o) { return o.failed; }));
    const auto ok_outputs = std::count_if(t.outputs.begin(), t.outputs.end(),
                                          [](const output& o) { return !o.failed; });
    std::string msg;
    if (!done)
        msg = "Conversion in progress";
    else if (failed_task)
        msg = t.fail_message;
    else if (ok_outputs == 2)
        msg = "Both conversions received";
    else if (t.outputs.size() == 1)
        msg = "Conversion received";
    else
        msg = "1 of 2 conversions received";
    c["status_msg"] = msg;
    c["message"] = msg;
    c["conversion_type"] = "EXTEND";
    c["music_style"] = "Pop";
    if (done && !failed_task) {
        for (const auto& o : t.outputs) {
            if (o.failed)
                continue;
            const std::string n = "_" + std::to_string(o.index);
            c["title" + n] = o.title;
            c["conversion_path" + n] = file_url(o.conversion_id + ".mp3");
            c["conversion_path_wav" + n] = file_url(o.conversion_id + ".wav");
            c["conversion_duration" + n] = o.duration;
            c["lyrics" + n] = o.lyrics;
            c["lyrics_timestamped" + n] = o.lyrics_timestamped;
            if (o.flagged) {
                c["is_flagged" + n] = true;
                c["reason" + n] = t.flag_reason;
            }
        }
        c["album_cover_path"] = file_url(t.task_id + "/cover.png");
        c["album_cover_thumbnail"] = file_url(t.task_id + "/cover_thumb.png");
    }
    c["createdAt"] = iso8601(t.created_unix_ms);
    c["updatedAt"] = iso8601(done ? t.created_unix_ms + t.complete_after_ms : unix_ms());
    json::object r;
    r["success"] = true;
    r["conversion"] = std::move(c);
    return json_reply(200, r);
}

// ---------------------------------------------------------------------------------------------
// GET /files/{conversion_id}.mp3|.wav, /files/{task_id}/cover.png|cover_thumb.png

fake_reply fake::file(const fake_request& req) {
    const std::string name = req.path.substr(files_prefix.size());
    auto not_found = [] {
        fake_reply r;
        r.status = 404;
        r.content_type = "application/xml";
        r.body =
            "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist."
            "</Message></Error>";
        return r;
    };
    if (s_.files_gone)
        return not_found();
    auto slash = name.find('/');
    if (slash != std::string::npos) {
        const std::string task_id = name.substr(0, slash);
        const std::string leaf = name.substr(slash + 1);
        if (!tasks_.count(task_id) || (leaf != "cover.png" && leaf != "cover_thumb.png"))
            return not_found();
        fake_reply r;
        r.content_type = "image/png";
        r.body.assign(reinterpret_cast<const char*>(cover_png.data()), cover_png.size());
        return r;
    }
    auto dot = name.rfind('.');
    if (dot == std::string::npos)
        return not_found();
    const std::string id = name.substr(0, dot);
    const std::string ext = name.substr(dot + 1);
    auto c = conversions_.find(id);
    if (c == conversions_.end() || assets_.empty() || (ext != "mp3" && ext != "wav"))
        return not_found();
    const int index = c->second.second;
    const auto& asset = s_.silent_outputs.count(index) && !silent_.wav.empty()
                            ? silent_
                            : assets_[static_cast<std::size_t>(index - 1) % assets_.size()];
    fake_reply r;
    r.content_type = ext == "mp3" ? "audio/mpeg" : "audio/wav";
    r.body = ext == "mp3" ? asset.mp3 : asset.wav;
    if (s_.truncated_outputs.count(index))
        r.body.resize(r.body.size() / 2);  // cut off mid-stream; the header promises it all
    return r;
}

// ---------------------------------------------------------------------------------------------
// GET /_control/tasks

json::object fake::task_json(const task& t) const {
    bool done = false;
    json::object o;
    o["task_id"] = t.task_id;
    o["status"] = status_of(t, done);
    o["done"] = done;
    o["source"] = t.source;
    if (!t.audio_url.empty())
        o["audio_url"] = t.audio_url;
    if (!t.audio_file.empty())
        o["audio_file"] = t.audio_file;
    if (!t.fetch.empty())
        o["audio_url_fetch"] = t.fetch;
    o["fields"] = t.fields;
    o["webhook_url"] = t.webhook_url;
    o["created_at_ms"] = t.created_unix_ms;
    o["complete_after_ms"] = t.complete_after_ms;
    o["fails"] = t.fails;
    json::array outs;
    for (const auto& x : t.outputs) {
        json::object p;
        p["index"] = x.index;
        p["conversion_id"] = x.conversion_id;
        p["failed"] = x.failed;
        p["flagged"] = x.flagged;
        p["title"] = x.title;
        p["duration"] = x.duration;
        p["mp3_url"] = file_url(x.conversion_id + ".mp3");
        p["wav_url"] = file_url(x.conversion_id + ".wav");
        if (!assets_.empty()) {
            const auto& a = assets_[static_cast<std::size_t>(x.index - 1) % assets_.size()];
            p["mp3_sha256"] = util::sha256_hex(a.mp3);
            p["wav_sha256"] = util::sha256_hex(a.wav);
        }
        p["lyrics_timestamped"] = x.lyrics_timestamped;
        outs.push_back(std::move(p));
    }
    o["outputs"] = std::move(outs);
    o["cover_url"] = file_url(t.task_id + "/cover.png");
    return o;
}

std::optional<fake_reply> fake::control_extra(const fake_request& req) {
    if (req.path == "/_control/tasks" && req.method == "GET") {
        json::array a;
        for (const auto& id : task_order_)
            if (auto it = tasks_.find(id); it != tasks_.end())
                a.push_back(task_json(it->second));
        return json_reply(200, json::object{{"tasks", std::move(a)}});
    }
    return std::nullopt;
}

}  // namespace segue::fakes::musicgpt

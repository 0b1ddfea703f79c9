#include "tests/fakes/musicapi/musicapi_fake.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <array>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdlib>
#include <ctime>
#include <fstream>
#include <iostream>
#include <set>
#include <sstream>

#include "gateway/audio/audio.hpp"
#include "gateway/util/crypto.hpp"

namespace segue::fakes::musicapi {

namespace json = boost::json;

namespace {

constexpr std::string_view upload_path = "/api/v1/producer/upload";
constexpr std::string_view create_path = "/api/v1/producer/create";
constexpr std::string_view task_path = "/api/v1/producer/task";  // + "/{task_id}"
constexpr std::string_view credits_path = "/api/v1/get-credits";
constexpr std::string_view files_prefix = "/files/";

constexpr std::string_view credits_message =
    "The remaining credits are not enough. You can buy more one-time credit packs or subscribe.";

// A 1x1 PNG: every clip's cover.
constexpr std::array<unsigned char, 70> cover_png{
    0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x48,
    0x44, 0x52, 0x00, 0x00, 0x00, 0x01, 0x00, 0x00, 0x00, 0x01, 0x08, 0x06, 0x00, 0x00,
    0x00, 0x1f, 0x15, 0xc4, 0x89, 0x00, 0x00, 0x00, 0x0d, 0x49, 0x44, 0x41, 0x54, 0x78,
    0xda, 0x63, 0x64, 0x60, 0xf8, 0x5f, 0x0f, 0x00, 0x02, 0x87, 0x01, 0x80, 0xeb, 0x47,
    0xba, 0x92, 0x00, 0x00, 0x00, 0x00, 0x49, 0x45, 0x4e, 0x44, 0xae, 0x42, 0x60, 0x82};

constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

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

bool starts_with_ci(std::string_view s, std::string_view prefix) {
    if (s.size() < prefix.size())
        return false;
    for (std::size_t i = 0; i < prefix.size(); ++i)
        if (std::tolower(static_cast<unsigned char>(s[i])) !=
            std::tolower(static_cast<unsigned char>(prefix[i])))
            return false;
    return true;
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
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

double round2(double v) {
    return std::round(v * 100.0) / 100.0;
}

// The vendor's error body (INFERRED shape: the docs show only the messages; clients read
// `message || error`).
fake_reply error(int status, std::string_view message) {
    json::object o;
    o["code"] = status;
    o["message"] = message;
    return json_reply(status, o);
}

// The default messages of fault replies in this fake's "code_message" style.
std::string fault_message(int status) {
    switch (status) {
        case 400:
            return "Bad request.";
        case 401:
            return "Invalid API key.";
        case 403:
            return std::string(credits_message);
        case 404:
            return "Not Found.";
        case 429:
            return "Too many requests.";
        case 500:
            return "Internal Server Error.";
        case 502:
            return "Bad Gateway.";
        case 503:
            return "Service Unavailable.";
        case 504:
            return "Task failed due to timeout. Credits were previously refunded.";
        default:
            return "Error " + std::to_string(status) + ".";
    }
}

bool http_url(std::string_view url) {
    std::string_view rest;
    if (starts_with_ci(url, "http://"))
        rest = url.substr(7);
    else if (starts_with_ci(url, "https://"))
        rest = url.substr(8);
    else
        return false;
    auto host = rest.substr(0, rest.find_first_of("/?#"));
    return !host.empty() && host.front() != ':';
}

// The title of an uploaded clip: the URL's file name without extension.
std::string title_from_url(std::string_view url) {
    url = url.substr(0, url.find_first_of("?#"));
    auto slash = url.rfind('/');
    auto name = std::string(slash == std::string_view::npos ? url : url.substr(slash + 1));
    name = url_decode(name);
    if (auto dot = name.rfind('.'); dot != std::string::npos && dot > 0)
        name.resize(dot);
    return name.empty() ? "Uploaded audio" : name;
}

std::string title_from_words(const std::string& text) {
    std::string base;
    int words = 0;
    std::istringstream in(text);
    std::string w;
    while (words < 4 && in >> w) {
        if (!base.empty())
            base += ' ';
        w[0] = static_cast<char>(std::toupper(static_cast<unsigned char>(w[0])));
        base += w;
        ++words;
    }
    return base;
}

std::string content_type_of(std::string_view ext) {
    if (ext == "mp3")
        return "audio/mpeg";
    if (ext == "wav")
        return "audio/wav";
    if (ext == "flac")
        return "audio/flac";
    if (ext == "ogg" || ext == "opus")
        return "audio/ogg";
    if (ext == "aiff")
        return "audio/aiff";
    if (ext == "png")
        return "image/png";
    return "application/octet-stream";
}

// Probes downloaded bytes through a temporary file (libsndfile wants a path).
audio::probe_result probe_bytes(const std::string& bytes) {
    audio::probe_result r;
    char path[] = "/tmp/fake_musicapi_upload.XXXXXX";
    const int fd = mkstemp(path);
    if (fd < 0) {
        r.error = "cannot create a temporary file";
        return r;
    }
    bool written = true;
    for (std::size_t off = 0; off < bytes.size();) {
        const auto n = ::write(fd, bytes.data() + off, bytes.size() - off);
        if (n <= 0) {
            written = false;
            break;
        }
        off += static_cast<std::size_t>(n);
    }
    ::close(fd);
    if (written)
        r = audio::probe(path);
    else
        r.error = "cannot write a temporary file";
    ::unlink(path);
    return r;
}

// Reads "add_clips" / --clip entries.
std::string read_clips(const json::value& v, std::vector<seed_clip>& out) {
    constexpr std::string_view shape =
        R"(add_clips must be an array of {"id":"…","duration":seconds} or "ID:SECONDS")";
    if (!v.is_array())
        return std::string(shape);
    std::vector<seed_clip> list;
    for (const auto& x : v.as_array()) {
        seed_clip c;
        if (x.is_string()) {
            if (auto err = parse_seed_clip(std::string(x.as_string()), c); !err.empty())
                return err;
        } else if (x.is_object()) {
            const auto& o = x.as_object();
            const json::value* id = o.if_contains("id");
            if (!id)
                id = o.if_contains("clip_id");
            const json::value* d = o.if_contains("duration");
            if (!id || !id->is_string() || id->as_string().empty() || !d || !d->is_number() ||
                d->to_number<double>() <= 0)
                return std::string(shape);
            c.id = std::string(id->as_string());
            c.duration = d->to_number<double>();
        } else {
            return std::string(shape);
        }
        list.push_back(std::move(c));
    }
    for (auto& c : list)
        out.push_back(std::move(c));
    return {};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// Settings

std::string parse_seed_clip(const std::string& text, seed_clip& out) {
    auto colon = text.rfind(':');
    if (colon == std::string::npos || colon == 0)
        return "a clip is ID:SECONDS (got '" + text + "')";
    const std::string secs = text.substr(colon + 1);
    double d = 0;
    auto [p, ec] = std::from_chars(secs.data(), secs.data() + secs.size(), d);
    if (ec != std::errc() || p != secs.data() + secs.size() || !(d > 0) || !std::isfinite(d))
        return "a clip is ID:SECONDS with SECONDS > 0 (got '" + text + "')";
    out.id = text.substr(0, colon);
    out.duration = d;
    return {};
}

std::string apply_settings(const json::object& o, settings& target, control_extras& extras) {
    settings s = target;
    control_extras x = extras;
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
        } else if (k == "shape") {
            if (!v.is_string() || (v.as_string() != "newer" && v.as_string() != "legacy"))
                return R"(shape must be "newer" or "legacy")";
            s.shape = std::string(v.as_string());
        } else if (k == "legacy_processing_202") {
            err = bool_of(s.legacy_processing_202);
        } else if (k == "running_after_ms") {
            err = int_of(0, s.running_after_ms);
        } else if (k == "finish_after_ms") {
            err = int_of(0, s.finish_after_ms);
        } else if (k == "never_finish") {
            err = bool_of(s.never_finish);
        } else if (k == "silent_outputs" || k == "truncated_outputs") {
            std::set<int> outs;
            if (!v.is_array())
                return k + " must be an array of clip numbers (1, 2)";
            for (const auto& x : v.as_array()) {
                if (!x.is_int64() || x.as_int64() < 1 || x.as_int64() > 2)
                    return k + " must be an array of clip numbers (1, 2)";
                outs.insert(static_cast<int>(x.as_int64()));
            }
            (k == "silent_outputs" ? s.silent_outputs : s.truncated_outputs) = std::move(outs);
        } else if (k == "files_gone") {
            err = bool_of(s.files_gone);
        } else if (k == "clips") {
            if (!v.is_int64() || v.as_int64() < 1 || v.as_int64() > 2)
                return "clips must be 1 or 2";
            s.clips = static_cast<int>(v.as_int64());
        } else if (k == "outcome") {
            if (!v.is_string() || (v.as_string() != "success" && v.as_string() != "fail"))
                return R"(outcome must be "success" or "fail")";
            s.outcome = std::string(v.as_string());
        } else if (k == "fail_next") {
            if (err = int_of(0, n); err.empty())
                s.fail_next = static_cast<int>(n);
        } else if (k == "fail_reason") {
            err = str_of(s.fail_reason);
        } else if (k == "moderation_marker") {
            err = str_of(s.moderation_marker);
        } else if (k == "extend_cost") {
            err = int_of(0, s.extend_cost);
        } else if (k == "upload_cost") {
            err = int_of(0, s.upload_cost);
        } else if (k == "upload_max_seconds") {
            if (!v.is_number() || v.to_number<double>() < 0)
                return "upload_max_seconds must be a number >= 0 (0: no limit)";
            s.upload_max_seconds = v.to_number<double>();
        } else if (k == "upload_fetch_timeout_ms") {
            err = int_of(1, s.upload_fetch_timeout_ms);
        } else if (k == "upload_lyrics") {
            err = str_of(s.upload_lyrics);
        } else if (k == "webhook_secret") {
            err = str_of(s.webhook_secret);
        } else if (k == "webhook_delay_ms") {
            err = int_of(0, s.webhook_delay_ms);
        } else if (k == "webhook_attempts") {
            if (err = int_of(1, n); err.empty())
                s.webhook_attempts = static_cast<int>(n);
        } else if (k == "webhook_backoff_ms") {
            err = int_of(0, s.webhook_backoff_ms);
        } else if (k == "webhook_duplicates") {
            if (err = int_of(0, n); err.empty())
                s.webhook_duplicates = static_cast<int>(n);
        } else if (k == "webhook_duplicate_same_id") {
            err = bool_of(s.webhook_duplicate_same_id);
        } else if (k == "webhook_bad_signature") {
            err = bool_of(s.webhook_bad_signature);
        } else if (k == "webhook_malformed") {
            err = bool_of(s.webhook_malformed);
        } else if (k == "webhook_drop") {
            err = bool_of(s.webhook_drop);
        } else if (k == "credits") {
            if (err = int_of(0, n); err.empty())
                x.credits = n;
        } else if (k == "add_clips") {
            err = read_clips(v, x.add_clips);
        } else {
            return "unknown control key '" + k + "'";
        }
        if (!err.empty())
            return err;
    }
    target = std::move(s);
    extras = std::move(x);
    return {};
}

json::object settings_json(const settings& s) {
    json::object o;
    o["api_key"] = s.api_key;
    o["base_url"] = s.base_url;
    o["shape"] = s.shape;
    o["legacy_processing_202"] = s.legacy_processing_202;
    o["running_after_ms"] = s.running_after_ms;
    o["finish_after_ms"] = s.finish_after_ms;
    o["never_finish"] = s.never_finish;
    o["clips"] = s.clips;
    o["outcome"] = s.outcome;
    o["fail_next"] = s.fail_next;
    o["fail_reason"] = s.fail_reason;
    o["moderation_marker"] = s.moderation_marker;
    o["extend_cost"] = s.extend_cost;
    o["upload_cost"] = s.upload_cost;
    o["upload_max_seconds"] = s.upload_max_seconds;
    o["upload_fetch_timeout_ms"] = s.upload_fetch_timeout_ms;
    o["upload_lyrics"] = s.upload_lyrics;
    o["webhook_secret"] = s.webhook_secret;
    o["webhook_delay_ms"] = s.webhook_delay_ms;
    o["webhook_attempts"] = s.webhook_attempts;
    o["webhook_backoff_ms"] = s.webhook_backoff_ms;
    o["webhook_duplicates"] = s.webhook_duplicates;
    o["webhook_duplicate_same_id"] = s.webhook_duplicate_same_id;
    o["webhook_bad_signature"] = s.webhook_bad_signature;
    o["webhook_malformed"] = s.webhook_malformed;
    o["webhook_drop"] = s.webhook_drop;
    json::array silent, truncated;
    for (int n : s.silent_outputs)
        silent.emplace_back(n);
    for (int n : s.truncated_outputs)
        truncated.emplace_back(n);
    o["silent_outputs"] = std::move(silent);
    o["truncated_outputs"] = std::move(truncated);
    o["files_gone"] = s.files_gone;
    return o;
}

// ---------------------------------------------------------------------------------------------

fake::fake(net::io_context& ioc, settings initial, std::int64_t credits,
           std::vector<seed_clip> seeds, std::vector<fault_rule> initial_faults,
           std::vector<audio_asset> assets)
    : ioc_(ioc),
      initial_(initial),
      initial_credits_(credits),
      seeds_(std::move(seeds)),
      initial_faults_(std::move(initial_faults)),
      s_(std::move(initial)),
      assets_(std::move(assets)),
      webhooks_(ioc) {
    hooks_.faults = &faults_;
    hooks_.requests = &requests_;
    hooks_.webhooks = &webhooks_;
    hooks_.apply = [this](const json::object& o) { return apply_control(o); };
    hooks_.describe = [this] {
        auto o = settings_json(s_);
        o["credits"] = balance_;  // the balance now (setting it adds a ledger entry)
        return o;
    };
    hooks_.reset = [this] { restore_startup(); };
    hooks_.extra = [this](const fake_request& r) { return control_extra(r); };
    restore_startup();
}

void fake::restore_startup() {
    s_ = initial_;
    faults_.clear();
    for (const auto& r : initial_faults_)
        faults_.add(r);
    tasks_.clear();
    task_order_.clear();
    clips_.clear();
    const auto now = unix_ms();
    for (const auto& sc : seeds_) {
        clip c;
        c.id = sc.id;
        c.title = "Seeded clip " + sc.id;
        c.duration = sc.duration;
        c.source = "seed";
        c.created_unix_ms = now;
        clips_[c.id] = std::move(c);
    }
    balance_ = initial_credits_;
    ledger_ = json::array();
    ledger_seq_ = 1;
    ++generation_;  // running task coroutines stop
}

std::string fake::apply_control(const json::object& o) {
    control_extras x;
    settings copy = s_;
    if (auto err = apply_settings(o, copy, x); !err.empty())
        return err;
    s_ = std::move(copy);
    if (x.credits) {
        balance_ = *x.credits;
        ledger_add("set", *x.credits, "", "", "set by /_control");
    }
    for (const auto& sc : x.add_clips) {
        clip c;
        c.id = sc.id;
        c.title = "Seeded clip " + sc.id;
        c.duration = sc.duration;
        c.source = "seed";
        c.created_unix_ms = unix_ms();
        clips_[c.id] = std::move(c);
    }
    return {};
}

std::string fake::file_url(const std::string& name) const {
    return s_.base_url + std::string(files_prefix) + name;
}

std::string fake::audio_url_of(const clip& c) const {
    return file_url(c.id + "." + (c.source == "upload" ? c.format : std::string("mp3")));
}

void fake::ledger_add(const std::string& kind, std::int64_t amount, const std::string& task_id,
                      const std::string& task_type, const std::string& reason) {
    json::object e;
    e["seq"] = ledger_seq_++;
    e["at_ms"] = unix_ms();
    e["kind"] = kind;
    e["amount"] = amount;
    e["balance"] = balance_;
    e["task_id"] = task_id;
    e["task_type"] = task_type;
    e["reason"] = reason;
    ledger_.push_back(std::move(e));
}

void fake::charge(task& t, std::int64_t amount, const std::string& reason) {
    balance_ -= amount;
    t.cost = amount;
    ledger_add("charge", amount, t.task_id, t.type, reason);
}

void fake::refund(task& t, const std::string& reason) {
    if (t.refunded || t.cost == 0)
        return;
    t.refunded = true;
    balance_ += t.cost;
    ledger_add("refund", t.cost, t.task_id, t.type, reason);
}

// ---------------------------------------------------------------------------------------------

net::awaitable<fake_reply> fake::handle(fake_request& req) {
    if (is_control_path(req.path))
        co_return handle_control(req, hooks_);

    std::string route = "other";
    if (req.path == upload_path)
        route = "upload";
    else if (req.path == create_path)
        route = "create";
    else if (req.path == task_path || req.path.rfind(std::string(task_path) + "/", 0) == 0)
        route = "task";
    else if (req.path == credits_path)
        route = "credits";
    else if (req.path.rfind(files_prefix, 0) == 0)
        route = "files";
    const auto content_type = req.header("content-type").value_or("");
    const parsed_body body = parse_body(content_type, req.body);
    requests_.record(req, body, route);

    std::int64_t delay = 0;
    std::string note;
    if (auto rule = faults_.take(route)) {
        // MusicAPI.ai's error body and messages unless the rule says otherwise.
        if (rule->style == "auto")
            rule->style = "code_message";
        if (rule->style == "code_message" && rule->message.empty() && rule->status)
            rule->message = fault_message(rule->status);
        if (auto rep = faults_.reply_for(*rule)) {
            // "Task failed due to timeout. Credits were previously refunded.": the submit was
            // charged, then refunded, so the balance ends where it was.
            if (rep->act == fake_reply::action::respond && rule->status == 504 &&
                (route == "create" || route == "upload")) {
                task t;  // no task is made: only the ledger sees it
                t.type = route == "create" ? "extend_music" : "upload";
                const auto cost = route == "create" ? s_.extend_cost : s_.upload_cost;
                if (cost > 0 && balance_ >= cost) {
                    charge(t, cost, "submit (504 timeout fault)");
                    refund(t, "504 timeout fault: task failed due to timeout");
                }
            }
            co_return *rep;
        }
        delay = rule->delay_ms;
        note = rule->describe();
    }

    fake_reply rep;
    auto method_is = [&req](std::string_view m) { return req.method == m; };
    if (route == "files") {
        rep =
            (method_is("GET") || method_is("HEAD")) ? file(req) : error(405, "Method Not Allowed.");
    } else if (route == "other") {
        rep = error(404, "Not Found.");
    } else {
        const bool method_ok =
            (route == "upload" || route == "create") ? method_is("POST") : method_is("GET");
        if (!method_ok)
            rep = error(405, "Method Not Allowed.");
        else if (auto denied = check_auth(req))
            rep = *denied;
        else if (route == "upload")
            rep = upload(req, body);
        else if (route == "create")
            rep = create(req, body);
        else if (route == "task")
            rep = get_task(req);
        else
            rep = credits(req);
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
    std::cerr << "fake_musicapi: " << req.method << " " << req.target << " -> "
              << (rep.act == fake_reply::action::respond
                      ? std::to_string(rep.status)
                      : (rep.act == fake_reply::action::reset ? "RESET" : "CLOSED"))
              << (rep.note.empty() ? "" : " [" + rep.note + "]") << "\n";
}

std::optional<fake_reply> fake::check_auth(const fake_request& req) const {
    auto h = req.header("authorization");
    if (!h || trim(*h).empty())
        return error(401, "Authorization header is missing.");
    const auto v = trim(*h);
    if (!starts_with_ci(v, "bearer ") || trim(v.substr(7)).empty())
        return error(401, "Invalid authorization format.");
    const auto token = trim(v.substr(7));
    // INFERRED: the docs list no message for a wrong token.
    if (!s_.api_key.empty() && token != s_.api_key)
        return error(401, "Invalid API key.");
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// POST /api/v1/producer/upload

fake_reply fake::upload(const fake_request& req, const parsed_body& body) {
    if (body.what != parsed_body::kind::json || !body.error.empty() || !body.json.is_object())
        return error(400, "The request body must be a JSON object.");
    const auto& in = body.json.as_object();
    const auto* url = in.if_contains("audio_url");
    if (!url || url->is_null() || (url->is_string() && url->as_string().empty()))
        return error(400, "audio_url is required.");
    if (!url->is_string())
        return error(400, "audio_url must be a string.");
    if (!http_url(url->as_string()))
        return error(400, "audio_url must be a valid http(s) URL.");
    std::string webhook_url, webhook_secret;
    if (const auto* w = in.if_contains("webhook_url"); w && !w->is_null()) {
        if (!w->is_string() || !http_url(w->as_string()))
            return error(400, "webhook_url must be a valid http(s) URL.");
        webhook_url = std::string(w->as_string());
    }
    if (const auto* w = in.if_contains("webhook_secret"); w && !w->is_null()) {
        if (!w->is_string())
            return error(400, "webhook_secret must be a string.");
        webhook_secret = std::string(w->as_string());
    }
    if (balance_ < s_.upload_cost)
        return error(403, credits_message);

    task t;
    t.task_id = uuid();
    t.type = "upload";
    t.request = in;
    t.audio_url = std::string(url->as_string());
    t.webhook_url = webhook_url;
    t.webhook_secret = webhook_secret;
    clip c;
    c.id = uuid();
    c.title = title_from_url(t.audio_url);
    c.lyrics = s_.upload_lyrics;
    c.source = "upload";
    c.task_id = t.task_id;
    t.clips.push_back(std::move(c));
    charge(t, s_.upload_cost, "upload");
    const std::string id = t.task_id;
    start(std::move(t));
    return json_reply(200, json::object{{"message", "success"}, {"task_id", id}});
}

// ---------------------------------------------------------------------------------------------
// POST /api/v1/producer/create

fake_reply fake::create(const fake_request& req, const parsed_body& body) {
    if (body.what != parsed_body::kind::json || !body.error.empty() || !body.json.is_object())
        return error(400, "The request body must be a JSON object.");
    const auto& in = body.json.as_object();
    const auto* tt = in.if_contains("task_type");
    if (!tt || tt->is_null())
        return error(400, "task_type is required.");
    if (!tt->is_string())
        return error(400, "task_type must be a string.");
    const std::string task_type(tt->as_string());
    // VERIFIED: removed with the move to Lyria 3 Pro (the message is INFERRED).
    static const std::set<std::string> gone = {"music_variation", "swap_music_vocals",
                                               "swap_music_sound"};
    if (gone.count(task_type))
        return error(410,
                     "task_type '" + task_type + "' has been removed and is no longer available.");
    if (task_type == "create_music" || task_type == "replace_music")
        return error(400, "task_type '" + task_type + "' is not implemented by this fake.");
    if (task_type != "extend_music")
        return error(400, "Invalid task_type '" + task_type + "'.");

    // Optional strings; a present non-string is a 400.
    std::string bad;
    auto text = [&](std::string_view name) -> std::optional<std::string> {
        const auto* v = in.if_contains(name);
        if (!v || v->is_null())
            return std::nullopt;
        if (!v->is_string()) {
            if (bad.empty())
                bad = std::string(name) + " must be a string.";
            return std::nullopt;
        }
        return std::string(v->as_string());
    };
    auto number = [&](std::string_view name) -> std::optional<double> {
        const auto* v = in.if_contains(name);
        if (!v || v->is_null())
            return std::nullopt;
        if (!v->is_number()) {
            if (bad.empty())
                bad = std::string(name) + " must be a number.";
            return std::nullopt;
        }
        return v->to_number<double>();
    };

    const auto clip_id = text("clip_id");
    if (!bad.empty())
        return error(400, bad);
    if (!clip_id || clip_id->empty())
        return error(400, "clip_id is required.");
    // starts_at, or the legacy `starts`.
    const bool has_starts_at = in.contains("starts_at") && !in.at("starts_at").is_null();
    const auto starts_at = number(has_starts_at ? "starts_at" : "starts");
    const auto length = number("length");
    const auto instruction = text("instruction");
    auto lyrics = text("lyrics");
    if (!lyrics)
        lyrics = text("lyrics_text");  // legacy name
    const auto title = text("title");
    const auto tags = text("tags");
    text("mv");  // type-checked only; echoed from the request
    const auto webhook_url = text("webhook_url");
    const auto webhook_secret = text("webhook_secret");
    if (!bad.empty())
        return error(400, bad);
    auto src = clips_.find(*clip_id);
    if (src == clips_.end())
        return error(400, "clip_id '" + *clip_id + "' not found.");
    const double clip_duration = src->second.duration;
    const char* starts_name = has_starts_at ? "starts_at" : "starts";
    if (starts_at && *starts_at < 0)
        return error(400, std::string(starts_name) + " must be greater than or equal to 0.");
    if (starts_at && *starts_at > clip_duration)
        return error(400, std::string(starts_name) + " (" + shortest(*starts_at) +
                              ") is beyond the clip's duration (" + shortest(clip_duration) +
                              " s).");
    if (length && !(*length > 0))
        return error(400, "length must be greater than 0.");
    if (webhook_url && !http_url(*webhook_url))
        return error(400, "webhook_url must be a valid http(s) URL.");

    // Moderation (VERIFIED message shape; the trigger is this fake's marker).
    if (lyrics && !s_.moderation_marker.empty()) {
        const std::string hay = lower(*lyrics);
        auto at = hay.find(lower(s_.moderation_marker));
        if (at != std::string::npos) {
            auto line_start = lyrics->rfind('\n', at);
            line_start = line_start == std::string::npos ? 0 : line_start + 1;
            auto line_end = lyrics->find('\n', at);
            std::string excerpt(
                trim(std::string_view(*lyrics).substr(line_start, line_end - line_start)));
            if (excerpt.size() > 80)
                excerpt = excerpt.substr(0, 80);
            return error(403, "The lyrics contain copyrighted content: '" + excerpt + "'");
        }
    }
    if (balance_ < s_.extend_cost)
        return error(403, credits_message);

    task t;
    t.task_id = uuid();
    t.type = "extend_music";
    t.request = in;
    t.webhook_url = webhook_url.value_or("");
    t.webhook_secret = webhook_secret.value_or("");
    t.source_clip = *clip_id;
    t.starts_at = starts_at.value_or(clip_duration);  // INFERRED: absent -> the clip's end
    t.length = length.value_or(30);
    if (s_.fail_next > 0) {
        --s_.fail_next;
        t.fails = true;
    } else {
        t.fails = s_.outcome == "fail";
    }
    std::string base_title = title.value_or("");
    if (base_title.empty())
        base_title = title_from_words(instruction.value_or(""));
    if (base_title.empty())
        base_title = src->second.title + " (Extended)";
    for (int n = 1; n <= s_.clips; ++n) {
        clip c;
        c.id = uuid();
        c.title = n > 1 ? base_title + " (Take " + std::to_string(n) + ")" : base_title;
        c.lyrics = lyrics && !lyrics->empty() ? *lyrics : "[Instrumental]";
        c.tags = tags.value_or("");
        c.prompt = instruction.value_or("");
        c.source = "extend";
        c.task_id = t.task_id;
        c.asset = n - 1;
        c.duration =
            assets_.empty() ? t.starts_at + t.length : assets_[(n - 1) % assets_.size()].duration;
        t.clips.push_back(std::move(c));
    }
    charge(t, s_.extend_cost, "extend_music");
    const std::string id = t.task_id;
    start(std::move(t));
    return json_reply(200, json::object{{"message", "success"}, {"task_id", id}});
}

// ---------------------------------------------------------------------------------------------
// The task life cycle: PENDING -> RUNNING on a timer, then SUCCESS | FAILED once finish_after_ms
// passed (and, for uploads, the download and probe are over).

void fake::start(task t) {
    t.created_steady_ms = steady_ms();
    t.created_unix_ms = unix_ms();
    t.running_after_ms = s_.running_after_ms;
    t.finish_after_ms = s_.finish_after_ms;
    t.never_finish = s_.never_finish;
    const std::string id = t.task_id;
    task_order_.push_back(id);
    tasks_.emplace(id, std::move(t));
    net::co_spawn(ioc_, run_task(this, id, generation_), net::detached);
}

net::awaitable<void> fake::run_task(fake* self, std::string task_id, std::uint64_t generation) {
    auto find = [self, &task_id, generation]() -> task* {
        if (self->generation_ != generation)
            return nullptr;
        auto it = self->tasks_.find(task_id);
        return it == self->tasks_.end() ? nullptr : &it->second;
    };
    task* t = find();
    if (!t)
        co_return;
    if (t->type == "upload") {
        client_request rq;
        rq.url = t->audio_url;
        rq.timeout = std::chrono::milliseconds(self->s_.upload_fetch_timeout_ms);
        rq.max_body_bytes = 200ull * 1024 * 1024;
        const double max_seconds = self->s_.upload_max_seconds;
        auto res = co_await http_call(std::move(rq));
        if (!(t = find()))
            co_return;
        json::object d;
        d["ok"] = res.ok;
        d["status"] = res.status;
        if (!res.ok) {
            d["error"] = res.error;
            t->problem = "could not download audio_url (" + res.error + ")";
        } else {
            d["size"] = res.body.size();
            d["sha256"] = util::sha256_hex(res.body);
            if (res.status < 200 || res.status > 299) {
                t->problem =
                    "could not download audio_url (HTTP " + std::to_string(res.status) + ")";
            } else {
                auto p = probe_bytes(res.body);
                if (!p.ok) {
                    d["error"] = p.error;
                    t->problem = "the file is not a supported audio file";
                } else {
                    d["format"] = p.format;
                    d["duration"] = p.duration_seconds;
                    d["sample_rate"] = p.sample_rate;
                    d["channels"] = p.channels;
                    if (max_seconds > 0 && p.duration_seconds > max_seconds) {
                        t->problem = "the audio is longer than " + shortest(max_seconds) + " s";
                    } else {
                        auto& c = t->clips.front();
                        c.duration = round2(p.duration_seconds);
                        c.format = p.format.empty() ? "bin" : p.format;
                        c.bytes = std::move(res.body);
                    }
                }
            }
        }
        t->download = std::move(d);
        t->downloaded = true;
    }
    if (t->never_finish)
        co_return;
    const std::int64_t left = t->created_steady_ms + t->finish_after_ms - steady_ms();
    if (left > 0) {
        net::steady_timer timer(self->ioc_, std::chrono::milliseconds(left));
        co_await timer.async_wait(use_tuple);
        if (!(t = find()))
            co_return;
    }
    if (t->type == "upload")
        self->finish(*t, t->problem.empty(),
                     "Upload failed: " + t->problem + ". Credits have been refunded.");
    else
        self->finish(
            *t, !t->fails,
            "Generation failed: " + self->s_.fail_reason + ". Credits have been refunded.");
}

void fake::finish(task& t, bool success, const std::string& message) {
    t.final_status = success ? "SUCCESS" : "FAILED";
    t.finished_unix_ms = unix_ms();
    if (success) {
        for (auto& c : t.clips) {
            c.created_unix_ms = t.finished_unix_ms;
            clip copy = c;
            copy.bytes = std::move(c.bytes);  // an upload's file: kept once, by the clip
            clips_[copy.id] = std::move(copy);
        }
    } else {
        t.message = message;
        refund(t, t.type == "upload" ? "upload failed" : "generation failed");
    }
    if (!t.webhook_url.empty())
        send_webhook(t);
}

std::string fake::status_of(const task& t) const {
    if (!t.final_status.empty())
        return t.final_status;
    return steady_ms() - t.created_steady_ms < t.running_after_ms ? "PENDING" : "RUNNING";
}

// ---------------------------------------------------------------------------------------------
// Signed webhooks (docs.musicapi.ai/webhook-guide)

void fake::send_webhook(task& t) {
    const bool ok = t.final_status == "SUCCESS";
    json::object payload;
    payload["code"] = 200;
    payload["task_id"] = t.task_id;
    if (!ok)
        payload["message"] = t.message;
    json::array data;
    for (const auto& c : t.clips) {
        json::object d;  // the guide's example, `duration` as a string
        d["clip_id"] = c.id;
        d["state"] = ok ? "succeeded" : "failed";
        d["title"] = c.title;
        d["tags"] = c.tags;
        d["lyrics"] = c.lyrics;
        d["image_url"] = ok ? file_url(c.id + ".png") : "";
        d["audio_url"] = ok ? audio_url_of(c) : "";
        d["wav_url"] =
            ok && (c.source != "upload" || c.format == "wav") ? file_url(c.id + ".wav") : "";
        d["video_url"] = "";
        d["created_at"] = iso8601(t.finished_unix_ms);
        d["gpt_description_prompt"] = c.prompt;
        d["duration"] = ok ? shortest(round2(c.duration)) : "";
        d["mv"] = t.request.contains("mv") && t.request.at("mv").is_string()
                      ? json::value(t.request.at("mv"))
                      : json::value("lyria-3-pro");
        if (!ok)
            d["message"] = t.message;
        data.push_back(std::move(d));
    }
    payload["data"] = std::move(data);

    std::string body = to_json_text(payload);
    if (s_.webhook_malformed)
        body = body.substr(0, body.size() / 2);  // cut mid-document, signed as sent
    const std::string timestamp = std::to_string(unix_ms() / 1000);
    const std::string secret = t.webhook_secret.empty() ? s_.webhook_secret : t.webhook_secret;
    const std::string key = s_.webhook_bad_signature ? secret + "-wrong" : secret;
    const std::string signature =
        "sha256=" + util::hex_encode(util::hmac_sha256(key, timestamp + "." + body));
    const std::string event = ok ? "song.completed" : "song.failed";

    auto make = [&](const std::string& id, bool duplicate) {
        outbound_webhook w;
        w.kind = event;
        w.task_id = t.task_id;
        w.url = t.webhook_url;
        w.body = body;
        w.headers = {{"X-Webhook-Id", id},
                     {"Idempotency-Key", id},
                     {"X-Webhook-Event", event},
                     {"X-Webhook-Timestamp", timestamp},
                     {"X-Webhook-Signature", signature}};
        w.duplicate = duplicate;
        w.malformed = s_.webhook_malformed;
        w.dropped = s_.webhook_drop;
        return w;
    };
    const std::string first_id = "whk_" + util::random_hex(12);
    std::vector<outbound_webhook> items{make(first_id, false)};
    json::array ids{first_id};
    if (!s_.webhook_drop)
        for (int i = 0; i < s_.webhook_duplicates; ++i) {
            const std::string id =
                s_.webhook_duplicate_same_id ? first_id : "whk_" + util::random_hex(12);
            items.push_back(make(id, true));
            ids.push_back(json::value(id));
        }
    json::object info;
    info["ids"] = std::move(ids);
    info["event"] = event;
    info["timestamp"] = timestamp;
    info["signature"] = signature;
    info["secret_source"] = t.webhook_secret.empty() ? "default" : "request";
    info["bad_signature"] = s_.webhook_bad_signature;
    info["malformed"] = s_.webhook_malformed;
    info["dropped"] = s_.webhook_drop;
    info["body"] = body;
    t.webhook = std::move(info);

    webhook_options opt;
    opt.max_attempts = s_.webhook_attempts;
    opt.backoff_ms = s_.webhook_backoff_ms;
    webhooks_.schedule(std::move(items), s_.webhook_delay_ms, 0, opt);
}

// ---------------------------------------------------------------------------------------------
// GET /api/v1/producer/task/{task_id}

json::object fake::clip_json(const task& t, const clip& c, const std::string& state) const {
    const bool ok = state == "succeeded";
    const std::string audio = ok ? audio_url_of(c) : "";
    const std::string wav =
        ok && (c.source != "upload" || c.format == "wav") ? file_url(c.id + ".wav") : "";
    const std::string image = ok ? file_url(c.id + ".png") : "";
    json::object d;
    d["clip_id"] = c.id;
    if (t.type == "upload")
        d["id"] = c.id;
    if (s_.shape == "legacy") {
        d["title"] = c.title;
        d["sound"] = c.prompt;
        d["lyrics"] = c.lyrics;
        d["image_url"] = image;
        d["audio_url"] = audio;
        d["video_url"] = "";
        d["created_at"] = iso8601(ok ? t.finished_unix_ms : t.created_unix_ms);
        d["mv"] = t.request.contains("mv") && t.request.at("mv").is_string()
                      ? json::value(t.request.at("mv"))
                      : json::value("lyria-3-pro");
        d["seed"] = std::to_string(std::hash<std::string>{}(c.id) % 4294967296ull);
        d["duration"] = ok ? round2(c.duration) : 0.0;
    } else {
        d["audio_url"] = audio;
        d["wav_url"] = wav;
        d["image_url"] = image;
        d["duration"] = ok ? round2(c.duration) : 0.0;
        d["title"] = c.title;
        d["lyrics"] = c.lyrics;
    }
    d["state"] = state;
    if (t.type == "upload")
        d["isFlagged"] = false;
    return d;
}

fake_reply fake::get_task(const fake_request& req) {
    std::string id =
        req.path.size() > task_path.size() ? req.path.substr(task_path.size() + 1) : std::string();
    id = url_decode(id);
    if (id.empty())
        return error(400, "missing task id.");
    auto it = tasks_.find(id);
    if (it == tasks_.end())
        return error(400, "task not found.");
    const task& t = it->second;
    const std::string status = status_of(t);
    const bool processing = status == "PENDING" || status == "RUNNING";
    if (processing && s_.shape == "legacy" && s_.legacy_processing_202) {
        json::object p;
        p["code"] = 202;
        p["type"] = "processing";
        p["error"] = status == "PENDING" ? "Task is pending." : "Task is still processing.";
        return json_reply(202, p);
    }
    std::string state = "succeeded";
    std::string message = "success";
    if (status == "PENDING") {
        state = "pending";
        message = "Task is pending.";
    } else if (status == "RUNNING") {
        state = "running";
        message = "Task is running.";
    } else if (status == "FAILED") {
        state = "failed";
        message = t.message;
    }
    json::object r;
    r["code"] = 200;
    if (s_.shape != "legacy")
        r["status"] = status;
    r["message"] = message;
    json::array data;
    for (const auto& c : t.clips)
        data.push_back(clip_json(t, c, state));
    r["data"] = std::move(data);
    return json_reply(200, r);
}

// ---------------------------------------------------------------------------------------------
// GET /api/v1/get-credits. INFERRED shape: the docs list the endpoint, not its body.

fake_reply fake::credits(const fake_request&) {
    return json_reply(200, json::object{{"code", 200}, {"credits", balance_}});
}

// ---------------------------------------------------------------------------------------------
// GET /files/{clip}.mp3|.wav|.png; uploads: /files/{clip}.{probed format}

fake_reply fake::file(const fake_request& req) {
    const std::string name = req.path.substr(files_prefix.size());
    auto dot = name.rfind('.');
    auto not_found = [] {
        fake_reply r;
        r.status = 404;
        r.content_type = "application/xml";
        r.body =
            "<Error><Code>NoSuchKey</Code><Message>The specified key does not exist."
            "</Message></Error>";
        return r;
    };
    if (dot == std::string::npos || s_.files_gone)
        return not_found();
    const std::string id = name.substr(0, dot);
    const std::string ext = name.substr(dot + 1);
    auto it = clips_.find(id);
    if (it == clips_.end())
        return not_found();
    const clip& c = it->second;
    fake_reply r;
    r.content_type = content_type_of(ext);
    if (ext == "png") {
        r.body.assign(reinterpret_cast<const char*>(cover_png.data()), cover_png.size());
        return r;
    }
    if (c.source == "upload") {
        if (ext != c.format)
            return not_found();
        r.body = c.bytes;
        return r;
    }
    if (assets_.empty() || (ext != "mp3" && ext != "wav"))
        return not_found();
    const int number = c.asset + 1;  // the clip's place in its extend (1, 2)
    const bool silent = c.source == "extend" && s_.silent_outputs.count(number) > 0;
    const auto& a = silent && !silent_.wav.empty()
                        ? silent_
                        : assets_[static_cast<std::size_t>(c.asset) % assets_.size()];
    r.body = ext == "mp3" ? a.mp3 : a.wav;
    if (c.source == "extend" && s_.truncated_outputs.count(number))
        r.body.resize(r.body.size() / 2);  // cut off mid-stream; the header promises it all
    return r;
}

// ---------------------------------------------------------------------------------------------
// /_control/tasks, /_control/ledger, /_control/clips, /_control/uploads

json::object fake::task_json(const task& t) const {
    json::object o;
    o["task_id"] = t.task_id;
    o["type"] = t.type;
    o["status"] = status_of(t);
    o["message"] = t.message;
    o["created_at_ms"] = t.created_unix_ms;
    o["finished_at_ms"] = t.finished_unix_ms;
    o["running_after_ms"] = t.running_after_ms;
    o["finish_after_ms"] = t.finish_after_ms;
    o["never_finish"] = t.never_finish;
    o["fails"] = t.fails;
    o["cost"] = t.cost;
    o["refunded"] = t.refunded;
    o["request"] = t.request;
    o["webhook_url"] = t.webhook_url;
    o["webhook"] = t.webhook;
    if (t.type == "upload") {
        o["audio_url"] = t.audio_url;
        o["downloaded"] = t.downloaded;
        o["download"] = t.download;
        o["problem"] = t.problem;
    } else {
        o["source_clip"] = t.source_clip;
        o["starts_at"] = t.starts_at;
        o["length"] = t.length;
    }
    json::array clips;
    for (const auto& c : t.clips) {
        json::object p;
        p["clip_id"] = c.id;
        p["title"] = c.title;
        p["lyrics"] = c.lyrics;
        p["duration"] = c.duration;
        p["audio_url"] = audio_url_of(c);
        if (c.source == "upload") {
            p["format"] = c.format;  // the bytes' size and sha256 are in "download"
        } else {
            p["wav_url"] = file_url(c.id + ".wav");
            if (!assets_.empty()) {
                const auto& a = assets_[static_cast<std::size_t>(c.asset) % assets_.size()];
                p["mp3_sha256"] = util::sha256_hex(a.mp3);
                p["wav_sha256"] = util::sha256_hex(a.wav);
            }
        }
        clips.push_back(std::move(p));
    }
    o["clips"] = std::move(clips);
    return o;
}

std::optional<fake_reply> fake::control_extra(const fake_request& req) {
    if (req.method != "GET")
        return std::nullopt;
    if (req.path == "/_control/tasks") {
        const auto only = req.query_param("task_id").value_or("");
        json::array a;
        for (const auto& id : task_order_)
            if (auto it = tasks_.find(id); it != tasks_.end() && (only.empty() || only == id))
                a.push_back(task_json(it->second));
        return json_reply(200, json::object{{"tasks", std::move(a)}});
    }
    if (req.path == "/_control/uploads") {
        json::array a;
        for (const auto& id : task_order_) {
            auto it = tasks_.find(id);
            if (it == tasks_.end() || it->second.type != "upload")
                continue;
            const task& t = it->second;
            json::object u;
            u["task_id"] = t.task_id;
            u["status"] = status_of(t);
            u["audio_url"] = t.audio_url;
            u["clip_id"] = t.clips.front().id;
            u["downloaded"] = t.downloaded;
            u["download"] = t.download;
            u["problem"] = t.problem;
            a.push_back(std::move(u));
        }
        return json_reply(200, json::object{{"uploads", std::move(a)}});
    }
    if (req.path == "/_control/ledger") {
        std::int64_t charged = 0, refunded = 0;
        for (const auto& e : ledger_) {
            const auto& o = e.as_object();
            if (o.at("kind") == "charge")
                charged += o.at("amount").as_int64();
            else if (o.at("kind") == "refund")
                refunded += o.at("amount").as_int64();
        }
        json::object o;
        o["credits"] = balance_;
        o["start_credits"] = initial_credits_;
        o["charged"] = charged;
        o["refunded"] = refunded;
        o["ledger"] = ledger_;
        return json_reply(200, o);
    }
    if (req.path == "/_control/clips") {
        json::array a;
        for (const auto& [id, c] : clips_) {
            json::object p;
            p["clip_id"] = id;
            p["source"] = c.source;
            p["task_id"] = c.task_id;
            p["title"] = c.title;
            p["duration"] = c.duration;
            p["audio_url"] = audio_url_of(c);
            a.push_back(std::move(p));
        }
        return json_reply(200, json::object{{"clips", std::move(a)}});
    }
    return std::nullopt;
}

}  // namespace segue::fakes::musicapi

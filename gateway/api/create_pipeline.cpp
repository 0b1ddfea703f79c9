#include "gateway/api/create_pipeline.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/this_coro.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <span>
#include <stdexcept>

#include "gateway/api/common.hpp"
#include "gateway/api/validate.hpp"
#include "gateway/config/settings.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/ledger.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/multipart.hpp"
#include "gateway/http/range.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/net/url_guard.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/store/blob_store.hpp"
#include "gateway/store/db.hpp"
#include "gateway/util/crypto.hpp"
#include "gateway/util/json_keys.hpp"
#include "gateway/util/json_text.hpp"
#include "gateway/util/text.hpp"
#include "gateway/util/unavailable.hpp"
#include "gateway/util/utf8.hpp"

namespace segue::api::create {

namespace json = boost::json;
namespace fs = std::filesystem;
using boost::asio::awaitable;

namespace {

constexpr std::size_t max_form_field_bytes = 64 * 1024;
constexpr std::size_t read_chunk = 256 * 1024;
constexpr std::size_t spool_write_bytes = 1024 * 1024;

refusal refuse(error_kind kind, std::string reason, std::string detail,
               std::vector<field_error> errors = {}) {
    return {kind, std::move(reason), std::move(detail), std::move(errors)};
}

}  // namespace

// ---------------------------------------------------------------------------------------------
// read: the header and the spool

outcome<std::optional<std::string>> read_idempotency_key(std::optional<std::string_view> header) {
    if (!header)
        return std::optional<std::string>();
    if (!valid_idempotency_key(*header))
        return refuse(error_kind::bad_request, "bad_idempotency_key",
                      "Idempotency-Key must be 1-255 visible ASCII characters");
    return std::optional<std::string>(std::string(*header));
}

spool_file::spool_file(runtime::blocking_pool& blocking, std::string path)
    : blocking_(blocking), path_(std::move(path)) {}

spool_file::~spool_file() {
    if (fd_ >= 0)
        ::close(fd_);
    if (!keep_ && opened_) {
        std::error_code ec;
        fs::remove(path_, ec);
    }
}

awaitable<bool> spool_file::open() {
    bool ok = false;
    co_await blocking_.run([&] {
        std::error_code ec;
        fs::create_directories(fs::path(path_).parent_path(), ec);
        fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        ok = fd_ >= 0;
        if (!ok)
            error_ = errno;
    });
    opened_ = ok;
    co_return ok;
}

awaitable<bool> spool_file::flush(std::string& pending) {
    if (pending.empty())
        co_return true;
    bool ok = true;
    co_await blocking_.run([&] {
        const char* p = pending.data();
        std::size_t left = pending.size();
        while (left > 0) {
            ssize_t n = ::write(fd_, p, left);
            if (n < 0) {
                if (errno == EINTR)
                    continue;
                error_ = errno;
                ok = false;
                return;
            }
            p += n;
            left -= static_cast<std::size_t>(n);
        }
    });
    size_ += pending.size();
    pending.clear();
    co_return ok;
}

awaitable<bool> spool_file::close() {
    bool ok = true;
    co_await blocking_.run([&] {
        ok = ::close(fd_) == 0;
        if (!ok)
            error_ = errno;
        fd_ = -1;
    });
    co_return ok;
}

// ---------------------------------------------------------------------------------------------
// read: the form

namespace {

// What the multipart callbacks collect: text fields in memory, the file's bytes in `pending`
// until they are spooled.
struct form_collector {
    std::uint64_t max_upload_bytes = 0;
    json::object fields;
    std::string current_field;
    std::string field_value;
    bool in_file = false;
    bool have_file = false;
    bool too_large = false;
    std::string pending;  // file bytes parsed from the current chunk, not yet written
    std::optional<std::string> form_error;
    std::string form_error_field;  // the field form_error is about
    util::sha256_stream sha;
    std::uint64_t file_bytes = 0;
    std::string upload_name;

    bool begin(const http::part_info& p) {
        if (p.filename || p.name == "audio_file") {
            if (p.name != "audio_file") {
                form_error = "unexpected file field '" + p.name + "' (only audio_file)";
                form_error_field = p.name;
                return false;
            }
            if (have_file) {
                form_error = "audio_file given twice";
                form_error_field = p.name;
                return false;
            }
            have_file = in_file = true;
            upload_name = util::sanitize_utf8(p.filename.value_or(""));
            return true;
        }
        if (fields.contains(p.name)) {
            form_error = "field '" + p.name + "' given twice";
            form_error_field = p.name;
            return false;
        }
        current_field = p.name;
        field_value.clear();
        return true;
    }
    bool data(std::string_view d) {
        if (in_file) {
            file_bytes += d.size();
            if (file_bytes > max_upload_bytes) {
                too_large = true;
                return false;
            }
            sha.update(d);
            pending.append(d);
            return true;
        }
        if (field_value.size() + d.size() > max_form_field_bytes) {
            form_error = "field '" + current_field + "' is too large (a text field takes at most " +
                         std::to_string(max_form_field_bytes) + " bytes)";
            form_error_field = current_field;
            return false;
        }
        field_value.append(d);
        return true;
    }
    bool end() {
        if (in_file)
            in_file = false;
        else
            fields[current_field] = field_value;
        return true;
    }
};

refusal body_read_failure(http::body_chunk::failure f) {
    if (f == http::body_chunk::failure::too_large)
        return refuse(error_kind::payload_too_large, "too_large",
                      "request body exceeds the upload limit (api.max_upload_bytes) and 64 KiB "
                      "for the form's other fields");
    if (f == http::body_chunk::failure::timeout)
        return refuse(error_kind::request_timeout, "timeout", "upload stalled");
    return refuse(error_kind::bad_request, "malformed", "malformed request body");
}

refusal form_failure(const form_collector& f, http::multipart_error err) {
    if (f.too_large)
        return refuse(error_kind::payload_too_large, "too_large",
                      "upload exceeds " + std::to_string(f.max_upload_bytes) +
                          " bytes (api.max_upload_bytes)");
    if (f.form_error && !f.form_error_field.empty())
        return refuse(error_kind::bad_request, "malformed", *f.form_error,
                      {{f.form_error_field, *f.form_error}});
    return refuse(
        error_kind::bad_request, "malformed",
        f.form_error.value_or("malformed multipart body: " + std::string(http::to_string(err))));
}

// A full disk is the 507 (the client may try again later: handlers add Retry-After); anything
// else is ours.
refusal spool_failure(const upload& up) {
    const int err = up.spool ? up.spool->error() : 0;
    if (err == ENOSPC || err == EDQUOT)
        return refuse(error_kind::insufficient_storage, "disk_full",
                      "the data volume is full: the upload cannot be stored now");
    // Ours, and the operator's to fix (a read-only or unwritable storage.blob_dir): the log
    // says what failed, where; the client gets the 500 only.
    log::error("upload not spooled",
               {{"file_id", up.file_id},
                {"path", up.spool ? up.spool->path() : std::string()},
                {"error", err ? std::string(std::strerror(err)) : std::string("unknown")}});
    return refuse(error_kind::internal, "spool_error", "cannot store the upload");
}

// Opens the upload's spool file (a new file id) unless it is open already.
awaitable<bool> ensure_spool(upload& up, const read_env& env) {
    if (up.spool)
        co_return true;
    up.file_id = util::sortable_id("file_");
    up.spool =
        std::make_unique<spool_file>(env.blocking, (fs::path(env.spool_dir) / up.file_id).string());
    co_return co_await up.spool->open();
}

// Writes the collected file bytes to the spool (opened on first use).
awaitable<bool> spool_pending(form_collector& f, upload& up, const read_env& env) {
    if (!co_await ensure_spool(up, env))
        co_return false;
    const auto n = static_cast<double>(f.pending.size());
    env.spool_bytes.inc(n);
    const bool ok = co_await up.spool->flush(f.pending);
    env.spool_bytes.dec(n);
    co_return ok;
}

// Streams the body through the parser; file bytes go to the spool in large writes (each one
// is a hop to the blocking pool), never all in memory.
awaitable<std::optional<refusal>> stream_form(http::context& ctx, std::string_view boundary,
                                              form_collector& f, upload& up, const read_env& env) {
    http::multipart_parser parser(
        std::string(boundary),
        {.on_part_begin = [&](const http::part_info& p) { return f.begin(p); },
         .on_part_data = [&](std::string_view d) { return f.data(d); },
         .on_part_end = [&]() { return f.end(); }});
    std::vector<char> buf(read_chunk);
    for (;;) {
        auto c = co_await ctx.read_body(std::span<char>(buf.data(), buf.size()));
        if (c.error != http::body_chunk::failure::none)
            co_return body_read_failure(c.error);
        auto err = parser.feed(std::string_view(buf.data(), c.size));
        const bool flush_now =
            f.pending.size() >= spool_write_bytes || c.done || err != http::multipart_error::none;
        if (!f.pending.empty() && flush_now && !co_await spool_pending(f, up, env))
            co_return spool_failure(up);
        if (err != http::multipart_error::none)
            co_return form_failure(f, err);
        if (c.done) {
            auto fin = parser.finish();
            if (fin != http::multipart_error::none)
                co_return refuse(error_kind::bad_request, "malformed",
                                 "malformed multipart body: " + std::string(http::to_string(fin)));
            co_return std::nullopt;
        }
    }
}

awaitable<outcome<submission>> read_form(http::context& ctx, std::string_view boundary,
                                         const read_env& env) {
    // The file is bounded as it streams (form_collector); this refuses early what cannot fit.
    if (ctx.content_length() && *ctx.content_length() > env.max_upload_bytes + form_slack_bytes)
        co_return refuse(error_kind::payload_too_large, "too_large",
                         "upload exceeds " + std::to_string(env.max_upload_bytes) +
                             " bytes (api.max_upload_bytes)");
    form_collector f;
    f.max_upload_bytes = env.max_upload_bytes;
    upload up;
    if (auto r = co_await stream_form(ctx, boundary, f, up, env))
        co_return std::move(*r);
    submission s;
    s.from_form = true;
    s.fields = std::move(f.fields);
    // An empty file part is still a source (refused as not decodable when probed).
    if (f.have_file && !co_await ensure_spool(up, env))
        co_return spool_failure(up);
    if (up.spool) {
        if (!co_await up.spool->close())
            co_return spool_failure(up);
        up.name = std::move(f.upload_name);
        up.sha256 = f.sha.hex_digest();
        env.upload_bytes.inc(static_cast<double>(up.spool->size()));
        s.file = std::move(up);
    }
    co_return s;
}

// ---------------------------------------------------------------------------------------------
// read: JSON

// The body, up to `limit` bytes.
awaitable<outcome<std::string>> read_limited(http::context& ctx, std::uint64_t limit) {
    std::string body;
    std::array<char, 16 * 1024> buf;
    for (;;) {
        auto c = co_await ctx.read_body(buf);
        if (c.error == http::body_chunk::failure::too_large)
            co_return refuse(error_kind::payload_too_large, "malformed", "request body too large");
        if (c.error == http::body_chunk::failure::timeout)
            co_return refuse(error_kind::request_timeout, "malformed",
                             "request body not received in time");
        if (c.error != http::body_chunk::failure::none)
            co_return refuse(error_kind::bad_request, "malformed", "malformed request body");
        body.append(buf.data(), c.size);
        if (body.size() > limit)
            co_return refuse(
                error_kind::payload_too_large, "malformed",
                "JSON body exceeds " + std::to_string(limit) + " bytes (api.max_json_bytes)");
        if (c.done)
            co_return body;
    }
}

awaitable<outcome<submission>> read_json(http::context& ctx, const read_env& env) {
    if (ctx.content_length() && *ctx.content_length() > env.max_json_bytes)
        co_return refuse(error_kind::payload_too_large, "too_large",
                         "JSON body exceeds " + std::to_string(env.max_json_bytes) +
                             " bytes (api.max_json_bytes)");
    auto body = co_await read_limited(ctx, env.max_json_bytes);
    if (auto* r = std::get_if<refusal>(&body))
        co_return std::move(*r);
    boost::system::error_code ec;
    // Invalid UTF-8 inside strings is let through the parser so that validation can name the
    // field (422) instead of refusing the whole body as malformed.
    json::parse_options opts;
    opts.allow_invalid_utf8 = true;
    auto v = json::parse(std::get<std::string>(body), ec, {}, opts);
    if (ec || !v.is_object())
        co_return refuse(
            error_kind::bad_request, "malformed",
            ec ? "body is not valid JSON: " + ec.message() : "body must be a JSON object");
    // As in the form encodings: a field given twice is ambiguous, not "the last one wins".
    if (auto twice = util::duplicate_json_key(std::get<std::string>(body)))
        co_return refuse(error_kind::bad_request, "malformed", "field '" + *twice + "' given twice",
                         {{*twice, "given twice"}});
    submission s;
    s.fields = std::move(v.as_object());
    co_return s;
}

// application/x-www-form-urlencoded (what Python's requests sends for `data=` without files):
// text fields only, as a multipart form's are.
awaitable<outcome<submission>> read_urlencoded(http::context& ctx, const read_env& env) {
    if (ctx.content_length() && *ctx.content_length() > env.max_json_bytes)
        co_return refuse(error_kind::payload_too_large, "too_large",
                         "form body exceeds " + std::to_string(env.max_json_bytes) +
                             " bytes (api.max_json_bytes)");
    auto body = co_await read_limited(ctx, env.max_json_bytes);
    if (auto* r = std::get_if<refusal>(&body))
        co_return std::move(*r);
    submission s;
    s.from_form = true;
    std::string_view rest = std::get<std::string>(body);
    while (!rest.empty()) {
        const auto amp = rest.find('&');
        std::string pair(rest.substr(0, amp));
        rest = amp == std::string_view::npos ? std::string_view() : rest.substr(amp + 1);
        if (pair.empty())
            continue;
        std::replace(pair.begin(), pair.end(), '+', ' ');  // form encoding: '+' is a space
        const auto eq = pair.find('=');
        auto name = percent_decode(std::string_view(pair).substr(0, eq));
        auto value = percent_decode(
            eq == std::string::npos ? std::string_view() : std::string_view(pair).substr(eq + 1));
        if (!name || !value)
            co_return refuse(error_kind::bad_request, "malformed",
                             "malformed form body: a bad %-escape");
        if (s.fields.contains(*name))
            co_return refuse(error_kind::bad_request, "malformed",
                             "field '" + *name + "' given twice", {{*name, "given twice"}});
        s.fields[*name] = *value;
    }
    co_return s;
}

}  // namespace

awaitable<outcome<submission>> read_submission(http::context& ctx, const read_env& env) {
    const std::string content_type(ctx.header("Content-Type").value_or(""));
    if (auto boundary = http::multipart_boundary(content_type))
        co_return co_await read_form(ctx, *boundary, env);
    // multipart/form-data whose boundary is missing, empty or malformed (the type alone decides,
    // whatever its parameters).
    const auto type =
        http::trim_ows(std::string_view(content_type).substr(0, content_type.find(';')));
    if (util::iequals(type, "multipart/form-data"))
        co_return refuse(error_kind::bad_request, "malformed",
                         "multipart/form-data needs one boundary parameter of 1 to 70 characters "
                         "(RFC 2046), e.g. multipart/form-data; boundary=x1y2z3");
    if (http::media_type_is(content_type, "application/json"))
        co_return co_await read_json(ctx, env);
    if (http::media_type_is(content_type, "application/x-www-form-urlencoded"))
        co_return co_await read_urlencoded(ctx, env);
    co_return refuse(error_kind::unsupported_media_type, "media_type",
                     "send multipart/form-data (with audio_file), "
                     "application/x-www-form-urlencoded or application/json");
}

// ---------------------------------------------------------------------------------------------
// validate

namespace {

// The request's route: the one it names, else the configured default route, else the
// one-provider chain [api.default_provider]. A named route also decides regeneration.
core::route route_of(core::extend_request& req, const config::settings& s) {
    core::route r;
    const std::string name = req.route.value_or(s.routing.default_route);
    if (auto it = s.routing.routes.find(name); !name.empty() && it != s.routing.routes.end()) {
        r.name = name;
        for (const auto& e : it->second.chain)
            r.chain.push_back({e.provider, e.weight});
        req.route_regenerate = it->second.regenerate;
    } else {
        r.name = "default";
        r.chain.push_back({s.api.default_provider, 0});
    }
    return r;
}

}  // namespace

field_error unroutable(const core::extend_request& req, const std::string& why) {
    std::string field = req.source == core::source_kind::clip ? "clip"
                        : req.provider                        ? "provider"
                        : req.route                           ? "route"
                                                              : "provider";
    const bool unnamed = !req.provider && !req.route;
    if (why.find("outputs") != std::string::npos)
        field = "num_outputs";
    else if (why.find("length") != std::string::npos)
        field = "length";
    else if (unnamed && why.find("file sources") != std::string::npos)
        field = "audio_file";
    else if (unnamed && why.find("url sources") != std::string::npos)
        field = "audio_url";
    return {field, why};
}

checked validate_submission(const submission& s, const validate_env& env) {
    validation_input in;
    in.fields = &s.fields;
    in.from_form = s.from_form;
    in.text_numbers = s.text_numbers;
    in.has_file = s.file.has_value();
    in.provider_exists = env.provider_exists;
    const auto& settings = env.settings;
    in.route_exists = [&settings](std::string_view n) {
        return settings.routing.routes.count(std::string(n)) > 0;
    };
    auto v = validate_extend_request(in);
    checked c{std::move(v.request), std::move(v.errors)};
    if (!c.errors.empty())
        return c;
    // The providers that can take this request, in failover order (the first drawn by weight).
    std::string why;
    const auto route = route_of(c.request, settings);
    auto wants = core::make_routing_request(c.request);
    wants.public_url = !settings.api.public_base_url.empty();
    c.request.route_chain = core::plan_route(route, wants, env.capabilities, env.draw, &why);
    if (c.request.route_chain.empty()) {
        c.errors.push_back(unroutable(c.request, why));
        c.unroutable = true;
    }
    return c;
}

awaitable<void> guard_urls(checked& c, std::shared_ptr<const net::url_policy> policy) {
    if (!policy)
        co_return;
    const auto& req = c.request;
    std::vector<std::pair<std::string, std::string>> urls;
    if (req.source == core::source_kind::url && !req.audio_url.empty())
        urls.emplace_back("audio_url", req.audio_url);
    if (req.webhook_url && !req.webhook_url->empty())
        urls.emplace_back("webhook_url", *req.webhook_url);
    for (const auto& [field, url] : urls) {
        // A URL whose field is wrong already is named once; the others are guarded even when
        // other fields are wrong, so every bad field is named at once.
        if (std::any_of(c.errors.begin(), c.errors.end(),
                        [&f = field](const field_error& e) { return e.field == f; }))
            continue;
        auto why = net::check_url_syntax(url, *policy);
        if (!why)
            why = co_await net::check_url(co_await boost::asio::this_coro::executor, url, policy,
                                          std::chrono::milliseconds(300),
                                          /*refuse_unresolvable=*/false);
        if (why)
            c.errors.push_back({field, "refused: " + *why});
    }
}

void require_webhook_secret(checked& c, const config::settings& settings, std::string_view tenant) {
    if (!c.request.webhook_url)
        return;
    auto t = std::find_if(settings.tenants.begin(), settings.tenants.end(),
                          [&](const config::tenant_settings& x) { return x.name == tenant; });
    if (t == settings.tenants.end() || t->webhook_secrets.empty())
        c.errors.push_back({"webhook_url",
                            "deliveries are signed, and this tenant has no webhook secret "
                            "configured (tenants[].webhook_secrets)"});
}

std::optional<refusal> invalid_fields(const checked& c) {
    if (c.errors.empty())
        return std::nullopt;
    std::string detail = std::to_string(c.errors.size()) + " invalid field(s): ";
    for (std::size_t i = 0; i < c.errors.size(); ++i)
        detail += (i ? ", " : "") + c.errors[i].field;
    return refuse(error_kind::validation_failed, "validation", detail, c.errors);
}

// ---------------------------------------------------------------------------------------------
// prepare the source

awaitable<audio::probe_result> probe_upload(const upload& up, runtime::blocking_pool& blocking) {
    audio::probe_result probe;
    const std::string path = up.spool->path();
    co_await blocking.run([&] { probe = audio::probe(path); });
    co_return probe;
}

std::optional<refusal> accept_probe(const audio::probe_result& probe, upload& up,
                                    core::extend_request& req) {
    if (!probe.ok)
        return refuse(error_kind::unprocessable_audio, "audio", "audio_file: " + probe.error,
                      {{"audio_file", probe.error}});
    if (req.extend_after > probe.duration_seconds) {
        char secs[32];
        std::snprintf(secs, sizeof secs, "%.3f", probe.duration_seconds);
        std::string m = "is beyond the end of the song (" + std::string(secs) + " s)";
        return refuse(error_kind::unprocessable_audio, "audio", "extend_after " + m,
                      {{"extend_after", m}});
    }
    up.content_type = std::string(audio::content_type_for_format(probe.format));
    req.audio_file_id = up.file_id;
    req.audio_filename = up.name;
    req.source_duration = probe.duration_seconds;
    req.source_sample_rate = probe.sample_rate;
    req.source_channels = probe.channels;
    return std::nullopt;
}

awaitable<std::optional<refusal>> store_upload(upload& up, store::blob_store& blobs,
                                               runtime::blocking_pool& blocking) {
    std::optional<store::blob_result<std::uint64_t>> put;
    const std::string key = upload_key(up.file_id);
    const std::string path = up.spool->path();
    co_await blocking.run([&] { put = blobs.put(key, path, store::put_mode::take); });
    if (!*put) {
        // The blob store's database out of reach or not answering (blobs: postgres) is an
        // outage, as the task store's is: 503 with Retry-After, nothing kept. Anything else
        // (the disk) is the gateway's failure.
        const bool outage = put->error().code == store::blob_errc::backend;
        log::write(outage ? log::level::warn : log::level::error, "upload not stored",
                   {{"file_id", up.file_id},
                    {"backend", std::string(blobs.backend())},
                    {"error", put->error().message}});
        if (outage)
            throw util::unavailable_error("the database is unreachable for now; try again",
                                          store::outage_retry_after_s());
        co_return refuse(error_kind::internal, "blob_error", "cannot store the upload");
    }
    up.spool->keep();  // the store has it now
    up.stored = true;
    co_return std::nullopt;
}

std::string upload_key(std::string_view file_id) {
    return "uploads/" + std::string(file_id);
}

// ---------------------------------------------------------------------------------------------
// admit

std::string request_hash(const core::extend_request& req, std::string_view upload_sha256) {
    auto canon = req;
    canon.audio_file_id.clear();
    canon.route_chain.clear();  // drawn by weight: not part of what the client sent
    canon.hold_milli = 0;
    std::string text = core::request_fingerprint(canon) + "|" + std::string(upload_sha256);
    // A drop-in shape's webhook format and secret are part of what its client sent (another
    // webhook_secret is another request); appended only when set, so a /v1 fingerprint stays
    // what it was.
    if (!req.webhook_format.empty() || !req.webhook_format_secret.empty())
        text += "|" + req.webhook_format + "|" + req.webhook_format_secret;
    return util::sha256_hex(text);
}

namespace {

// The credits held at submit: the route's first provider's price for every output.
std::optional<store::ledger_row> hold_entry(const admission& a, const config::settings& settings,
                                            store::millis now) {
    const auto& req = a.request;
    if (req.hold_milli <= 0)
        return std::nullopt;
    store::ledger_row h;
    h.tenant = a.tenant;
    h.task_id = a.task.id;
    h.kind = "hold";
    h.amount_milli = req.hold_milli;
    h.provider = req.route_chain.front();
    h.note = std::to_string(req.num_outputs) + " output(s) at " +
             core::format_credits(core::provider_price_milli(settings, req.route_chain.front()));
    h.created_at = now;
    return h;
}

store::file_row upload_entry(const admission& a, const upload& up, store::millis now) {
    store::file_row f;
    f.id = up.file_id;
    f.tenant = a.tenant;
    f.task_id = a.task.id;
    f.kind = "upload";
    f.content_type = up.content_type;
    f.path = upload_key(up.file_id);
    f.size = static_cast<std::int64_t>(up.spool ? up.spool->size() : 0);
    f.sha256 = up.sha256;
    f.created_at = now;
    return f;
}

}  // namespace

admission plan_admission(const core::extend_request& req, std::string_view tenant,
                         const std::optional<std::string>& idempotency_key, const upload* up,
                         const config::settings& settings, store::millis now) {
    admission a;
    a.request = req;
    a.request.hold_milli =
        core::estimate_hold_milli(settings, req.route_chain.front(), req.num_outputs);
    a.tenant = std::string(tenant);
    for (const auto& t : settings.tenants)
        if (t.name == tenant)
            a.grant_milli = core::credits_to_milli(t.credits).value_or(0);
    auto& task = a.task;
    task.id = util::sortable_id("ext_");
    task.tenant = a.tenant;
    task.status = std::string(core::to_string(core::task_status::queued));
    task.provider = req.route_chain.front();
    task.request_json = core::request_to_json(a.request);
    task.num_outputs = req.num_outputs;
    task.idempotency_key = idempotency_key.value_or("");
    task.created_at = task.updated_at = now;
    for (int i = 1; i <= req.num_outputs; ++i)
        a.outputs.push_back(
            {task.id, i, std::string(core::to_string(core::output_status::pending)), "{}", now});
    a.response_body = util::json_text(core::task_document(task, a.outputs, {}));
    a.events = core::engine::event_context_of(a.request);
    a.idempotency_key = idempotency_key;
    if (idempotency_key)
        a.request_hash = request_hash(a.request, up ? up->sha256 : "");
    a.hold = hold_entry(a, settings, now);
    if (up)
        a.file = upload_entry(a, *up, now);
    return a;
}

idempotency_verdict judge_idempotency(const store::idempotency_row& prior,
                                      std::string_view request_hash, store::millis now,
                                      store::millis retention) {
    if (prior.created_at < now - retention)
        return idempotency_verdict::expired;
    return prior.request_hash == request_hash ? idempotency_verdict::replay
                                              : idempotency_verdict::conflict;
}

admitted admit(store::transaction& tx, const admission& a, store::millis now,
               store::millis retention, core::engine::handoff* h) {
    admitted out;
    if (a.idempotency_key) {
        // The key stays locked until commit (store.hpp): another create with it, on any
        // replica, waits here and then finds this one's record.
        if (auto prior = tx.get_idempotency(a.tenant, *a.idempotency_key)) {
            switch (judge_idempotency(*prior, a.request_hash, now, retention)) {
                case idempotency_verdict::expired:
                    tx.delete_idempotency_before(now - retention);
                    break;
                case idempotency_verdict::replay:
                    out.what = admitted::kind::replay;
                    out.prior = *prior;
                    return out;
                case idempotency_verdict::conflict:
                    out.what = admitted::kind::conflict;
                    out.prior = *prior;
                    return out;
            }
        }
    }
    tx.ensure_grant(a.tenant, a.grant_milli, now);
    if (a.hold) {
        // Reserve-or-refuse, atomic against every other writer (store.hpp).
        const auto r = tx.hold_credits(*a.hold);
        if (!r.held) {
            out.what = admitted::kind::insufficient;
            out.available_milli = r.before.available;
            return out;
        }
    }
    core::engine::create_task(tx, a.task, &a.events, h);
    if (a.file)
        tx.insert_file(*a.file);
    if (a.idempotency_key) {
        store::idempotency_row r;
        r.tenant = a.tenant;
        r.key = *a.idempotency_key;
        r.request_hash = a.request_hash;
        r.task_id = a.task.id;
        r.response_status = 202;
        r.response_body = a.response_body;
        r.created_at = now;
        // Never a second task for one key: if the store broke its contract, the unit (this
        // task and its hold) rolls back rather than commit.
        if (!tx.insert_idempotency(r))
            throw std::logic_error("admit: idempotency key recorded by another writer meanwhile");
    }
    return out;
}

std::optional<refusal> refused_admission(const admitted& result, const admission& a) {
    switch (result.what) {
        case admitted::kind::insufficient:
            return refuse(error_kind::payment_required, "insufficient_credits",
                          "this extension holds " + core::format_credits(a.request.hold_milli) +
                              " credits and " + core::format_credits(result.available_milli) +
                              " are available (GET /v1/credits)");
        case admitted::kind::conflict:
            return refuse(error_kind::conflict, "idempotency_conflict",
                          "Idempotency-Key was used with a different request");
        case admitted::kind::created:
        case admitted::kind::replay:
            return std::nullopt;
    }
    return std::nullopt;
}

awaitable<void> discard_upload(const upload& up, store::blob_store& blobs,
                               runtime::blocking_pool& blocking) {
    if (!up.stored)
        co_return;
    std::optional<store::blob_result<bool>> removed;
    const std::string key = upload_key(up.file_id);
    co_await blocking.run([&] { removed = blobs.remove(key); });
    if (!*removed)
        log::warn("an unused upload was not removed",
                  {{"file_id", up.file_id}, {"error", removed->error().message}});
}

}  // namespace segue::api::create

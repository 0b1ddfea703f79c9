#include "gateway/api/extensions.hpp"

#include <fcntl.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <array>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstring>
#include <filesystem>
#include <map>
#include <memory>
#include <random>

#include "gateway/api/auth.hpp"
#include "gateway/api/common.hpp"
#include "gateway/api/problem.hpp"
#include "gateway/api/validate.hpp"
#include "gateway/audio/audio.hpp"
#include "gateway/core/engine.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/ledger.hpp"
#include "gateway/core/routing.hpp"
#include "gateway/core/signed_url.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/multipart.hpp"
#include "gateway/http/router.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/net/url_guard.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/store/db.hpp"
#include "gateway/util/crypto.hpp"
#include "gateway/util/json_text.hpp"
#include "gateway/util/utf8.hpp"
#include "providers/provider.hpp"
#include "providers/registry.hpp"

namespace segue::api {
namespace {

namespace net = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using net::awaitable;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

constexpr std::size_t max_form_field_bytes = 64 * 1024;
constexpr std::size_t read_chunk = 256 * 1024;
constexpr std::size_t spool_write_bytes = 1024 * 1024;

bool accepts_event_stream(http::context& ctx) {
    auto a = ctx.header("Accept");
    return a && a->find("text/event-stream") != std::string_view::npos;
}

bool valid_idempotency_key(std::string_view k) {
    if (k.empty() || k.size() > 255)
        return false;
    for (unsigned char c : k)
        if (c < 0x21 || c > 0x7e)
            return false;
    return true;
}

// An upload being spooled to disk. Removed on destruction unless kept.
class spool_file {
  public:
    spool_file(runtime::blocking_pool& blocking, std::string path)
        : blocking_(blocking), path_(std::move(path)) {}
    ~spool_file() {
        if (fd_ >= 0)
            ::close(fd_);
        if (!keep_ && opened_) {
            std::error_code ec;
            fs::remove(path_, ec);
        }
    }
    awaitable<bool> open() {
        bool ok = false;
        co_await blocking_.run([&] {
            std::error_code ec;
            fs::create_directories(fs::path(path_).parent_path(), ec);
            fd_ = ::open(path_.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
            ok = fd_ >= 0;
        });
        opened_ = ok;
        co_return ok;
    }
    // Writes what is pending off the IO thread.
    awaitable<bool> flush(std::string& pending) {
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
    awaitable<bool> close() {
        bool ok = true;
        co_await blocking_.run([&] {
            // Durable before the task that points at it is.
            if (::fsync(fd_) != 0)
                ok = false;
            if (::close(fd_) != 0)
                ok = false;
            fd_ = -1;
        });
        co_return ok;
    }
    void keep() { keep_ = true; }
    const std::string& path() const { return path_; }
    std::uint64_t size() const { return size_; }

  private:
    runtime::blocking_pool& blocking_;
    std::string path_;
    int fd_ = -1;
    bool opened_ = false;
    bool keep_ = false;
    std::uint64_t size_ = 0;
};

struct handlers : std::enable_shared_from_this<handlers> {
    explicit handlers(const api_deps& d)
        : deps(d),
          created(d.metrics.counter_family("segue_tasks_created_total",
                                           "Tasks accepted, by provider.", {"provider"})),
          rejected(d.metrics.counter_family("segue_api_rejected_total",
                                            "Requests refused by the API, by reason.", {"reason"})),
          upload_bytes(d.metrics.make_counter("segue_upload_bytes_total",
                                              "Audio bytes received in uploads.")),
          spool_bytes(d.metrics.make_gauge("segue_spool_bytes",
                                           "Bytes of uploads being spooled right now.")),
          sse_clients(
              d.metrics.make_gauge("segue_sse_clients", "Open Server-Sent Events streams.")) {}

    // --- auth ---
    std::optional<std::string> tenant_of(http::context& ctx) {
        auto t = authenticate(ctx, deps.auth);
        if (!t)
            rejected.with({"unauthorized"}).inc();
        return t;
    }

    void refuse(http::context& ctx, error_kind kind, std::string_view reason, std::string detail,
                std::vector<field_error> errors = {}) {
        rejected.with({reason}).inc();
        set_problem(ctx.res(), kind, detail, ctx.path(), errors);
    }

    // The failover chain for a request (see core/routing.hpp); empty with `why` if none.
    std::vector<std::string> plan_for(core::extend_request& req, std::string* why) {
        const auto& s = deps.settings;
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
        thread_local std::mt19937_64 rng{std::random_device{}()};
        const double u = std::uniform_real_distribution<double>(0.0, 1.0)(rng);
        return core::plan_route(
            r, core::make_routing_request(req),
            [this](std::string_view n) -> const providers::capabilities* {
                auto* p = deps.providers.find(n);
                return p ? &p->caps() : nullptr;
            },
            u, why);
    }

    awaitable<void> create(http::context& ctx);
    awaitable<void> providers(http::context& ctx) {
        auto self = shared_from_this();
        if (!tenant_of(ctx))
            co_return;
        ctx.res().status = 200;
        ctx.res().content_type = "application/json";
        ctx.res().body = deps.engine.providers_json();
    }
    awaitable<void> get(http::context& ctx);
    awaitable<void> events(http::context& ctx);
    awaitable<void> cancel(http::context& ctx);
    awaitable<void> file(http::context& ctx);
    awaitable<void> list(http::context& ctx);
    awaitable<void> provider_webhook(http::context& ctx);

    api_deps deps;
    metrics::family<metrics::counter>& created;
    metrics::family<metrics::counter>& rejected;
    metrics::counter& upload_bytes;
    metrics::gauge& spool_bytes;
    metrics::gauge& sse_clients;
};

// Reads a request body up to `limit` bytes. nullopt (and the problem set) on failure.
awaitable<std::optional<std::string>> read_limited(http::context& ctx, std::uint64_t limit) {
    std::string body;
    std::array<char, 16 * 1024> buf;
    for (;;) {
        auto c = co_await ctx.read_body(buf);
        if (c.error != http::body_chunk::failure::none) {
            if (c.error == http::body_chunk::failure::too_large)
                set_problem(ctx.res(), error_kind::payload_too_large, "request body too large");
            else if (c.error == http::body_chunk::failure::timeout)
                set_problem(ctx.res(), error_kind::request_timeout,
                            "request body not received in time");
            else
                set_problem(ctx.res(), error_kind::bad_request, "malformed request body");
            co_return std::nullopt;
        }
        body.append(buf.data(), c.size);
        if (body.size() > limit) {
            set_problem(ctx.res(), error_kind::payload_too_large,
                        "JSON body exceeds " + std::to_string(limit) + " bytes");
            co_return std::nullopt;
        }
        if (c.done)
            co_return body;
    }
}

awaitable<void> handlers::create(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant)
        co_return;
    const auto& settings = deps.settings;

    std::optional<std::string> idem_key;
    if (auto k = ctx.header("Idempotency-Key")) {
        if (!valid_idempotency_key(*k)) {
            refuse(ctx, error_kind::bad_request, "bad_idempotency_key",
                   "Idempotency-Key must be 1-255 visible ASCII characters");
            co_return;
        }
        idem_key = std::string(*k);
    }

    const std::string content_type(ctx.header("Content-Type").value_or(""));
    json::object fields;
    bool from_form = false;
    std::unique_ptr<spool_file> spool;
    std::string upload_name;
    std::string upload_sha;
    std::string upload_content_type = "application/octet-stream";  // as probed, below
    std::string file_id;

    if (auto boundary = http::multipart_boundary(content_type)) {
        from_form = true;
        if (ctx.content_length() && *ctx.content_length() > settings.api.max_upload_bytes) {
            refuse(ctx, error_kind::payload_too_large, "too_large",
                   "upload exceeds " + std::to_string(settings.api.max_upload_bytes) + " bytes");
            co_return;
        }
        // Parse as the body streams in; file bytes go to the spool, never all in memory.
        std::string current_field;
        bool in_file = false;
        bool have_file = false;
        std::string field_value;
        std::string pending;  // file bytes parsed from the current chunk, not yet written
        std::optional<std::string> form_error;
        util::sha256_stream sha;
        std::uint64_t file_bytes = 0;
        bool too_large = false;
        http::multipart_parser parser(
            *boundary, {.on_part_begin =
                            [&](const http::part_info& p) {
                                if (p.filename || p.name == "audio_file") {
                                    if (p.name != "audio_file") {
                                        form_error = "unexpected file field '" + p.name +
                                                     "' (only audio_file)";
                                        return false;
                                    }
                                    if (have_file) {
                                        form_error = "audio_file given twice";
                                        return false;
                                    }
                                    have_file = in_file = true;
                                    // Informational only: kept, but as valid text.
                                    upload_name = util::sanitize_utf8(p.filename.value_or(""));
                                    return true;
                                }
                                if (fields.contains(p.name)) {
                                    form_error = "field '" + p.name + "' given twice";
                                    return false;
                                }
                                current_field = p.name;
                                field_value.clear();
                                return true;
                            },
                        .on_part_data =
                            [&](std::string_view d) {
                                if (in_file) {
                                    file_bytes += d.size();
                                    if (file_bytes > settings.api.max_upload_bytes) {
                                        too_large = true;
                                        return false;
                                    }
                                    sha.update(d);
                                    pending.append(d);
                                    return true;
                                }
                                if (field_value.size() + d.size() > max_form_field_bytes) {
                                    form_error = "field '" + current_field + "' is too large";
                                    return false;
                                }
                                field_value.append(d);
                                return true;
                            },
                        .on_part_end =
                            [&]() {
                                if (in_file)
                                    in_file = false;
                                else
                                    fields[current_field] = field_value;
                                return true;
                            }});
        std::vector<char> buf(read_chunk);
        bool failed = false;
        for (;;) {
            auto c = co_await ctx.read_body(std::span<char>(buf.data(), buf.size()));
            if (c.error != http::body_chunk::failure::none) {
                if (c.error == http::body_chunk::failure::too_large)
                    refuse(ctx, error_kind::payload_too_large, "too_large", "upload too large");
                else if (c.error == http::body_chunk::failure::timeout)
                    refuse(ctx, error_kind::request_timeout, "timeout", "upload stalled");
                else
                    refuse(ctx, error_kind::bad_request, "malformed", "malformed request body");
                failed = true;
                break;
            }
            auto err = parser.feed(std::string_view(buf.data(), c.size));
            // Spool in large writes: each one is a hop to the blocking pool.
            const bool flush_now =
                pending.size() >= spool_write_bytes || c.done || err != http::multipart_error::none;
            if (!pending.empty() && flush_now) {
                if (!spool) {
                    file_id = util::sortable_id("file_");
                    spool = std::make_unique<spool_file>(
                        deps.blocking,
                        (fs::path(settings.storage.blob_dir) / "uploads" / file_id).string());
                    if (!co_await spool->open()) {
                        refuse(ctx, error_kind::internal, "spool_error", "cannot store the upload");
                        failed = true;
                        break;
                    }
                }
                spool_bytes.inc(static_cast<double>(pending.size()));
                auto n = pending.size();
                bool ok = co_await spool->flush(pending);
                spool_bytes.dec(static_cast<double>(n));
                if (!ok) {
                    refuse(ctx, error_kind::internal, "spool_error", "cannot store the upload");
                    failed = true;
                    break;
                }
            }
            if (err != http::multipart_error::none) {
                if (too_large)
                    refuse(ctx, error_kind::payload_too_large, "too_large",
                           "audio_file exceeds " + std::to_string(settings.api.max_upload_bytes) +
                               " bytes");
                else
                    refuse(ctx, error_kind::bad_request, "malformed",
                           form_error.value_or("malformed multipart body: " +
                                               std::string(http::to_string(err))));
                failed = true;
                break;
            }
            if (c.done) {
                auto fin = parser.finish();
                if (fin != http::multipart_error::none) {
                    refuse(ctx, error_kind::bad_request, "malformed",
                           "malformed multipart body: " + std::string(http::to_string(fin)));
                    failed = true;
                }
                break;
            }
        }
        if (failed)
            co_return;
        if (have_file && !spool) {
            // An empty file part: still a source, refused as not decodable below.
            file_id = util::sortable_id("file_");
            spool = std::make_unique<spool_file>(
                deps.blocking,
                (fs::path(settings.storage.blob_dir) / "uploads" / file_id).string());
            if (!co_await spool->open()) {
                refuse(ctx, error_kind::internal, "spool_error", "cannot store the upload");
                co_return;
            }
        }
        if (spool) {
            if (!co_await spool->close()) {
                refuse(ctx, error_kind::internal, "spool_error", "cannot store the upload");
                co_return;
            }
            upload_sha = sha.hex_digest();
            upload_bytes.inc(static_cast<double>(spool->size()));
        }
    } else if (content_type.rfind("application/json", 0) == 0) {
        if (ctx.content_length() && *ctx.content_length() > settings.api.max_json_bytes) {
            refuse(ctx, error_kind::payload_too_large, "too_large",
                   "JSON body exceeds " + std::to_string(settings.api.max_json_bytes) + " bytes");
            co_return;
        }
        auto body = co_await read_limited(ctx, settings.api.max_json_bytes);
        if (!body) {
            rejected.with({"malformed"}).inc();
            co_return;
        }
        boost::system::error_code ec;
        // Invalid UTF-8 inside strings is let through the parser so that validation can name
        // the field (422) instead of refusing the whole body as malformed.
        json::parse_options opts;
        opts.allow_invalid_utf8 = true;
        auto v = json::parse(*body, ec, {}, opts);
        if (ec || !v.is_object()) {
            refuse(ctx, error_kind::bad_request, "malformed",
                   ec ? "body is not valid JSON: " + ec.message() : "body must be a JSON object");
            co_return;
        }
        fields = std::move(v.as_object());
    } else {
        refuse(ctx, error_kind::unsupported_media_type, "media_type",
               "send multipart/form-data (with audio_file) or application/json");
        co_return;
    }

    validation_input in;
    in.fields = &fields;
    in.from_form = from_form;
    in.has_file = static_cast<bool>(spool);
    in.provider_exists = [this](std::string_view n) { return deps.providers.find(n) != nullptr; };
    in.route_exists = [&settings](std::string_view n) {
        return settings.routing.routes.count(std::string(n)) > 0;
    };
    auto v = validate_extend_request(in);
    auto& req = v.request;

    // Routing: the providers that can take this request, in failover order (the first drawn
    // by weight). None: the request cannot be served here (422 naming what is in the way).
    if (v.errors.empty()) {
        std::string why;
        req.route_chain = plan_for(req, &why);
        if (req.route_chain.empty()) {
            std::string field = req.source == core::source_kind::clip ? "clip"
                                : req.provider                        ? "provider"
                                : req.route                           ? "route"
                                                                      : "provider";
            if (why.find("outputs") != std::string::npos)
                field = "num_outputs";
            else if (why.find("length") != std::string::npos)
                field = "length";
            else if (!req.provider && !req.route && why.find("file sources") != std::string::npos)
                field = "audio_file";
            else if (!req.provider && !req.route && why.find("url sources") != std::string::npos)
                field = "audio_url";
            v.errors.push_back({field, why});
        }
    }
    // The URL guard, now rather than when the URL is used: a refused URL is the client's error
    // (422 naming the field), before any task exists. Syntax first (no DNS), then the
    // resolved addresses, bounded tightly: a slow or failing resolver must not hold the
    // submit (measured: a flaky resolver made 3 s waits), and every later use checks again.
    if (v.errors.empty() && deps.url_policy) {
        std::vector<std::pair<std::string, std::string>> urls;
        if (req.source == core::source_kind::url)
            urls.emplace_back("audio_url", req.audio_url);
        if (req.webhook_url)
            urls.emplace_back("webhook_url", *req.webhook_url);
        for (const auto& [field, url] : urls) {
            auto why = segue::net::check_url_syntax(url, *deps.url_policy);
            if (!why)
                why =
                    co_await segue::net::check_url(co_await net::this_coro::executor, url,
                                                   deps.url_policy, std::chrono::milliseconds(300),
                                                   /*refuse_unresolvable=*/false);
            if (why)
                v.errors.push_back({field, "refused: " + *why});
        }
    }
    if (req.webhook_url) {
        auto t = std::find_if(settings.tenants.begin(), settings.tenants.end(),
                              [&](const config::tenant_settings& x) { return x.name == *tenant; });
        if (t == settings.tenants.end() || t->webhook_secrets.empty())
            v.errors.push_back({"webhook_url",
                                "deliveries are signed, and this tenant has no "
                                "webhook secret configured "
                                "(tenants[].webhook_secrets)"});
    }
    if (!v.errors.empty()) {
        std::string detail = std::to_string(v.errors.size()) + " invalid field(s): ";
        for (std::size_t i = 0; i < v.errors.size(); ++i)
            detail += (i ? ", " : "") + v.errors[i].field;
        refuse(ctx, error_kind::validation_failed, "validation", detail, v.errors);
        co_return;
    }

    if (spool) {
        audio::probe_result probe;
        const std::string path = spool->path();
        co_await deps.blocking.run([&] { probe = audio::probe(path); });
        if (!probe.ok) {
            refuse(ctx, error_kind::unprocessable_audio, "audio", "audio_file: " + probe.error,
                   {{"audio_file", probe.error}});
            co_return;
        }
        if (req.extend_after > probe.duration_seconds) {
            std::string m =
                "is beyond the end of the song (" + std::to_string(probe.duration_seconds) + " s)";
            refuse(ctx, error_kind::unprocessable_audio, "audio", "extend_after " + m,
                   {{"extend_after", m}});
            co_return;
        }
        upload_content_type = std::string(audio::content_type_for_format(probe.format));
        req.audio_file_id = file_id;
        req.audio_filename = upload_name;
        req.source_duration = probe.duration_seconds;
        req.source_sample_rate = probe.sample_rate;
        req.source_channels = probe.channels;
    }

    // Credits: the route's first provider's price for every output is held at submit.
    req.hold_milli = core::estimate_hold_milli(settings, req.route_chain.front(), req.num_outputs);
    std::int64_t grant_milli = 0;
    for (const auto& t : settings.tenants)
        if (t.name == *tenant)
            grant_milli = core::credits_to_milli(t.credits).value_or(0);

    // The task as it will be stored, and the 202 it answers (also kept for idempotent replays).
    const auto now = core::now_ms();
    store::task_row task;
    task.id = util::sortable_id("ext_");
    task.tenant = *tenant;
    task.status = std::string(core::to_string(core::task_status::queued));
    task.provider = req.route_chain.front();
    task.request_json = core::request_to_json(req);
    task.num_outputs = req.num_outputs;
    task.idempotency_key = idem_key.value_or("");
    task.created_at = task.updated_at = now;
    std::vector<store::output_row> outs;
    for (int i = 1; i <= req.num_outputs; ++i)
        outs.push_back(
            {task.id, i, std::string(core::to_string(core::output_status::pending)), "{}", now});
    const std::string response_body = util::json_text(core::task_document(task, outs, {}));
    const auto events = core::engine::event_context_of(req);

    std::string request_hash;
    if (idem_key) {
        auto canon = req;
        canon.audio_file_id.clear();
        canon.route_chain.clear();  // drawn by weight: not part of what the client sent
        canon.hold_milli = 0;
        request_hash = util::sha256_hex(core::request_fingerprint(canon) + "|" + upload_sha);
    }

    enum class outcome { created, replay, conflict, insufficient } result = outcome::created;
    std::int64_t available_milli = 0;
    store::idempotency_row existing;
    const auto retention = static_cast<store::millis>(settings.api.idempotency_retention.count());
    co_await deps.db.write([&](store::transaction& tx) {
        if (idem_key) {
            auto prior = tx.get_idempotency(*tenant, *idem_key);
            if (prior && prior->created_at < now - retention) {
                tx.delete_idempotency_before(now - retention);
                prior.reset();
            }
            if (prior) {
                existing = *prior;
                result = prior->request_hash == request_hash ? outcome::replay : outcome::conflict;
                return;
            }
        }
        // The balance check and the hold in one transaction (one writer): two submits can never
        // both spend the same credits.
        tx.ensure_grant(*tenant, grant_milli, now);
        if (req.hold_milli > 0) {
            auto totals = tx.ledger_totals(*tenant);
            if (totals.available < req.hold_milli) {
                available_milli = totals.available;
                result = outcome::insufficient;
                return;
            }
        }
        core::engine::create_task(tx, task, &events);
        if (req.hold_milli > 0) {
            store::ledger_row h;
            h.tenant = *tenant;
            h.task_id = task.id;
            h.kind = "hold";
            h.amount_milli = req.hold_milli;
            h.provider = req.route_chain.front();
            h.note =
                std::to_string(req.num_outputs) + " output(s) at " +
                core::format_credits(core::provider_price_milli(settings, req.route_chain.front()));
            h.created_at = now;
            tx.add_ledger_entry(h);
        }
        if (spool) {
            store::file_row f;
            f.id = file_id;
            f.tenant = *tenant;
            f.task_id = task.id;
            f.kind = "upload";
            f.content_type = upload_content_type;
            f.path = (fs::path("uploads") / file_id).string();
            f.size = static_cast<std::int64_t>(spool->size());
            f.sha256 = upload_sha;
            f.created_at = now;
            tx.insert_file(f);
        }
        if (idem_key) {
            store::idempotency_row r;
            r.tenant = *tenant;
            r.key = *idem_key;
            r.request_hash = request_hash;
            r.task_id = task.id;
            r.response_status = 202;
            r.response_body = response_body;
            r.created_at = now;
            tx.insert_idempotency(r);
        }
    });
    if (result == outcome::insufficient) {
        refuse(ctx, error_kind::payment_required, "insufficient_credits",
               "this extension holds " + core::format_credits(req.hold_milli) + " credits and " +
                   core::format_credits(available_milli) + " are available (GET /v1/credits)");
        co_return;
    }
    if (result == outcome::conflict) {
        refuse(ctx, error_kind::conflict, "idempotency_conflict",
               "Idempotency-Key was used with a different request");
        co_return;
    }
    if (result == outcome::replay) {
        ctx.res().status = existing.response_status;
        ctx.res().content_type = "application/json";
        ctx.res().body = existing.response_body;
        ctx.res().set_header("Location", "/v1/extensions/" + existing.task_id);
        ctx.res().set_header("Idempotent-Replayed", "true");
        co_return;
    }
    if (spool)
        spool->keep();
    deps.engine.notify();
    created.with({req.route_chain.front()}).inc();
    if (req.hold_milli > 0)
        deps.metrics
            .counter_family("segue_credits_total",
                            "Credits held at submit, captured by ready outputs and refunded "
                            "(released) when outputs failed or were canceled.",
                            {"tenant", "provider", "kind"})
            .with({*tenant, req.route_chain.front(), "held"})
            .inc(core::milli_to_credits(req.hold_milli));
    ctx.res().status = 202;
    ctx.res().content_type = "application/json";
    ctx.res().body = response_body;
    ctx.res().set_header("Location", "/v1/extensions/" + task.id);
    log::info("task created", {{"task_id", task.id},
                               {"tenant", *tenant},
                               {"provider", req.route_chain.front()},
                               {"request_id", ctx.request_id()}});
}

awaitable<void> handlers::get(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant)
        co_return;
    const std::string id(ctx.param("id"));
    std::optional<store::task_row> t;
    std::vector<store::output_row> outs;
    std::vector<store::attempt_row> atts;
    co_await deps.db.read([&](store::transaction& tx) {
        t = tx.get_task(id);
        if (!t || t->tenant != *tenant)
            return;
        outs = tx.get_outputs(id);
        atts = tx.get_attempts(id);
    });
    // Another tenant's task answers exactly like a missing one.
    if (!t || t->tenant != *tenant) {
        set_problem(ctx.res(), error_kind::not_found, "no such extension", ctx.path());
        co_return;
    }
    json_response(ctx, 200, core::task_document(*t, outs, atts));
    ctx.res().set_header("ETag", "\"" + std::to_string(t->version) + "\"");
}

awaitable<void> handlers::list(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant)
        co_return;
    auto limit = int_param(ctx, "limit", 20, 1, 100);
    if (!limit)
        co_return;
    std::optional<std::string> before_param;
    if (!text_param(ctx, "before", before_param))
        co_return;
    const std::string before = before_param.value_or("");
    std::vector<store::task_row> rows;
    co_await deps.db.read(
        [&](store::transaction& tx) { rows = tx.list_tasks(*tenant, *limit + 1, before); });
    json::array data;
    const bool more = static_cast<int>(rows.size()) > *limit;
    for (int i = 0; i < static_cast<int>(rows.size()) && i < *limit; ++i) {
        json::object o;
        o["id"] = rows[i].id;
        o["status"] = rows[i].status;
        o["provider"] = rows[i].provider;
        o["created_at"] = core::iso8601(rows[i].created_at);
        data.emplace_back(std::move(o));
    }
    json::object body;
    body["data"] = std::move(data);
    body["has_more"] = more;
    json_response(ctx, 200, body);
}

awaitable<void> handlers::events(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant)
        co_return;
    const std::string id(ctx.param("id"));
    std::int64_t after = 0;
    std::optional<std::string> a;
    if (!text_param(ctx, "after", a))
        co_return;
    if (a) {
        auto n = parse_int(*a);
        if (!n || *n < 0) {
            set_problem(ctx.res(), error_kind::bad_request, "after must be a sequence number",
                        ctx.path(), {{"after", "must be an integer >= 0"}});
            co_return;
        }
        after = *n;
    }
    const bool sse = accepts_event_stream(ctx);
    if (sse) {
        // Reconnecting EventSource clients send the last id they saw.
        if (auto last = ctx.header("Last-Event-ID")) {
            if (auto n = parse_int(*last); n && *n >= 0)
                after = std::max(after, *n);
        }
    }
    auto limit_param = int_param(ctx, "limit", 100, 1, 1000);
    if (!limit_param)
        co_return;
    const int limit = *limit_param;

    std::optional<store::task_row> t;
    std::vector<store::event_row> evs;
    co_await deps.db.read([&](store::transaction& tx) {
        t = tx.get_task(id);
        if (t && t->tenant == *tenant)
            evs = tx.get_events(id, after, limit + 1);
    });
    if (!t || t->tenant != *tenant) {
        set_problem(ctx.res(), error_kind::not_found, "no such extension", ctx.path());
        co_return;
    }

    if (!sse) {
        json::array data;
        const bool more = static_cast<int>(evs.size()) > limit;
        std::int64_t last = after;
        for (int i = 0; i < static_cast<int>(evs.size()) && i < limit; ++i) {
            data.emplace_back(core::event_document(evs[i]));
            last = evs[i].seq;
        }
        json::object body;
        body["data"] = std::move(data);
        body["has_more"] = more;
        body["next_after"] = last;
        json_response(ctx, 200, body);
        co_return;
    }

    // Server-Sent Events: the log from `after`, then live until the task is final.
    ctx.res().set_header("X-Accel-Buffering", "no");  // nginx-style proxies must not buffer
    if (!co_await ctx.begin_stream(200, "text/event-stream"))
        co_return;
    sse_clients.inc();
    struct gauge_guard {
        metrics::gauge& g;
        ~gauge_guard() { g.dec(); }
    } guard{sse_clients};
    if (!co_await ctx.write_stream("retry: 1000\n\n"))
        co_return;
    net::steady_timer timer(co_await net::this_coro::executor);
    auto last_write = std::chrono::steady_clock::now();
    for (;;) {
        for (const auto& e : evs) {
            std::string frame = "id: " + std::to_string(e.seq) + "\nevent: " + e.type +
                                "\ndata: " + util::json_text(core::event_document(e)) + "\n\n";
            if (!co_await ctx.write_stream(frame))
                co_return;
            after = e.seq;
            last_write = std::chrono::steady_clock::now();
        }
        const bool final_state = core::is_terminal(
            core::parse_task_status(t->status).value_or(core::task_status::failed));
        if (final_state && evs.empty())
            co_return;  // everything up to the final event was sent
        if (ctx.draining())
            co_return;
        if (evs.empty()) {
            if (std::chrono::steady_clock::now() - last_write > std::chrono::seconds(15)) {
                if (!co_await ctx.write_stream(": keep-alive\n\n"))
                    co_return;
                last_write = std::chrono::steady_clock::now();
            }
            timer.expires_after(std::chrono::milliseconds(200));
            co_await timer.async_wait(use_tuple);
        }
        evs.clear();
        co_await deps.db.read([&](store::transaction& tx) {
            t = tx.get_task(id);
            evs = tx.get_events(id, after, 100);
        });
        if (!t)
            co_return;
    }
}

awaitable<void> handlers::cancel(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant)
        co_return;
    const std::string id(ctx.param("id"));
    auto outcome = co_await deps.engine.cancel(id, *tenant);
    if (outcome == core::engine::cancel_outcome::not_found) {
        set_problem(ctx.res(), error_kind::not_found, "no such extension", ctx.path());
        co_return;
    }
    std::optional<store::task_row> t;
    std::vector<store::output_row> outs;
    std::vector<store::attempt_row> atts;
    co_await deps.db.read([&](store::transaction& tx) {
        t = tx.get_task(id);
        outs = tx.get_outputs(id);
        atts = tx.get_attempts(id);
    });
    if (outcome == core::engine::cancel_outcome::already_final) {
        set_problem(ctx.res(), error_kind::conflict,
                    "the extension is already " + (t ? t->status : std::string("final")),
                    ctx.path());
        co_return;
    }
    json_response(ctx, 200, core::task_document(*t, outs, atts));
}

awaitable<void> handlers::file(http::context& ctx) {
    auto self = shared_from_this();
    const std::string id(ctx.param("id"));
    // A signed, expiring URL (handed to a provider that fetches the upload itself) stands in for
    // the API key; anything else authenticates as usual.
    std::optional<std::string> tenant;
    std::optional<std::string> sig;
    std::optional<std::string> expires;
    if (!text_param(ctx, "sig", sig) || !text_param(ctx, "expires", expires))
        co_return;
    if (sig && expires) {
        const auto now_s = std::chrono::duration_cast<std::chrono::seconds>(
                               std::chrono::system_clock::now().time_since_epoch())
                               .count();
        if (!core::verify_file_signature(deps.settings.api.url_signing_key, id, *expires, *sig,
                                         now_s)) {
            set_problem(ctx.res(), error_kind::not_found, "no such file, or the link expired",
                        ctx.path());
            co_return;
        }
    } else {
        tenant = tenant_of(ctx);
        if (!tenant)
            co_return;
    }
    std::optional<store::file_row> f;
    co_await deps.db.read([&](store::transaction& tx) { f = tx.get_file(id); });
    if (!f || (tenant && f->tenant != *tenant)) {
        set_problem(ctx.res(), error_kind::not_found, "no such file", ctx.path());
        co_return;
    }
    const std::string path = (fs::path(deps.settings.storage.blob_dir) / f->path).string();
    int fd = -1;
    std::uint64_t size = 0;
    co_await deps.blocking.run([&] {
        fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd >= 0) {
            std::error_code ec;
            size = fs::file_size(path, ec);
        }
    });
    if (fd < 0) {
        log::error("file missing from blob store", {{"file_id", id}, {"path", path}});
        set_problem(ctx.res(), error_kind::internal, "the file cannot be read", ctx.path());
        co_return;
    }
    struct fd_guard {
        int fd;
        ~fd_guard() { ::close(fd); }
    } guard{fd};
    ctx.res().set_header("Cache-Control", "private, max-age=3600");
    if (!co_await ctx.begin_stream(200, f->content_type, size))
        co_return;
    if (ctx.method() == "HEAD")
        co_return;
    std::string buf;
    std::uint64_t sent = 0;
    while (sent < size) {
        ssize_t n = 0;
        co_await deps.blocking.run([&] {
            buf.resize(read_chunk);
            n = ::read(fd, buf.data(), buf.size());
        });
        if (n <= 0)
            break;
        if (!co_await ctx.write_stream(std::string_view(buf.data(), static_cast<std::size_t>(n))))
            break;
        sent += static_cast<std::uint64_t>(n);
    }
}

awaitable<void> handlers::provider_webhook(http::context& ctx) {
    auto self = shared_from_this();
    // No API key here: the unguessable per-attempt token in the path is the credential.
    // Only a configured provider's name goes further: the engine labels metrics with it, and
    // this route is open to anyone, so any other name would be a new series per request.
    const std::string name(ctx.param("name"));
    if (deps.providers.find(name) == nullptr) {
        // The same answer as an unknown token (which configured providers exist is not told to
        // an outsider); the instance is left out: the path holds the token.
        set_problem(ctx.res(), error_kind::not_found, "unknown webhook");
        co_return;
    }
    providers::inbound_webhook hook;
    hook.body = ctx.body();
    hook.headers = ctx.headers();
    std::string error;
    auto outcome = co_await deps.engine.handle_webhook(name, std::string(ctx.param("token")),
                                                       std::move(hook), &error);
    switch (outcome) {
        case core::engine::webhook_outcome::applied:
        case core::engine::webhook_outcome::ignored:
            json_response(ctx, 200, json::object{{"received", true}});
            break;
        case core::engine::webhook_outcome::unknown_token:
            // The instance is left out: it would echo the token into logs and responses.
            set_problem(ctx.res(), error_kind::not_found, "unknown webhook");
            break;
        case core::engine::webhook_outcome::rejected:
            set_problem(ctx.res(), error_kind::bad_request, "webhook payload refused: " + error);
            break;
    }
}

}  // namespace

void add_extension_routes(http::router& routes, const api_deps& deps) {
    auto h = std::make_shared<handlers>(deps);
    const auto& s = deps.settings;
    const std::uint64_t max_body =
        std::max<std::uint64_t>(s.api.max_upload_bytes, s.api.max_json_bytes) +
        64 * 1024;  // multipart framing and text fields
    routes.add("POST", "/v1/extensions", [h](http::context& c) { return h->create(c); },
               {.body = http::body_mode::streamed, .max_body_bytes = max_body});
    routes.add("GET", "/v1/extensions", [h](http::context& c) { return h->list(c); });
    routes.add("GET", "/v1/extensions/{id}", [h](http::context& c) { return h->get(c); });
    routes.add("GET", "/v1/extensions/{id}/events", [h](http::context& c) { return h->events(c); });
    routes.add("POST", "/v1/extensions/{id}/cancel",
               [h](http::context& c) { return h->cancel(c); });
    routes.add("GET", "/v1/files/{id}", [h](http::context& c) { return h->file(c); });
    routes.add("GET", "/v1/providers", [h](http::context& c) { return h->providers(c); });
    routes.add("POST", "/v1/providers/{name}/webhooks/{token}",
               [h](http::context& c) { return h->provider_webhook(c); });
}

}  // namespace segue::api

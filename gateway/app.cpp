#include "gateway/app.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>

#include <fcntl.h>
#include <unistd.h>

#include <cerrno>
#include <csignal>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <stdexcept>
#include <thread>
#include <vector>

#include "gateway/api/auth.hpp"
#include "gateway/api/compat.hpp"
#include "gateway/api/console.hpp"
#include "gateway/api/create_flow.hpp"
#include "gateway/api/credits.hpp"
#include "gateway/api/deliveries.hpp"
#include "gateway/api/extensions.hpp"
#include "gateway/api/system.hpp"
#include "gateway/core/disk_watch.hpp"
#include "gateway/core/engine.hpp"
#include "gateway/core/ledger.hpp"
#include "gateway/core/reaper.hpp"
#include "gateway/events/dispatcher.hpp"
#include "gateway/events/event_hub.hpp"
#include "gateway/events/webhook_format.hpp"
#include "gateway/http/router.hpp"
#include "gateway/http/server.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/process.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/net/address_policy.hpp"
#include "gateway/net/dns.hpp"
#include "gateway/net/http_client.hpp"
#include "gateway/net/url_guard.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/runtime/io_pool.hpp"
#include "gateway/store/blob_store.hpp"
#include "gateway/store/db.hpp"
#include "gateway/store/open_store.hpp"
#include "gateway/store/run_sync.hpp"
#include "gateway/util/crypto.hpp"
#include "providers/builtin.hpp"
#include "providers/descriptor.hpp"
#include "providers/registry.hpp"
#include "segue/version.hpp"

namespace segue {
namespace {

// A key short enough to guess is little better than none. Said once at start, not refused: a
// demo's or a test's key may be short on purpose. The keys themselves are never logged.
constexpr std::size_t guessable_key_chars = 16;

void warn_of_short_keys(const config::settings& s) {
    const char* what =
        "an API key shorter than 16 characters is easy to guess: use 32 or more "
        "random characters";
    for (const auto& t : s.tenants)
        for (std::size_t i = 0; i < t.api_keys.size(); ++i)
            if (t.api_keys[i].size() < guessable_key_chars)
                log::warn(what,
                          {{"tenant", t.name},
                           {"key", "tenants[" + t.name + "].api_keys[" + std::to_string(i) + "]"},
                           {"length", static_cast<std::int64_t>(t.api_keys[i].size())}});
    const auto& admin = s.credits.admin_key;
    if (!admin.empty() && admin.size() < guessable_key_chars)
        log::warn(what, {{"key", "credits.admin_key"},
                         {"length", static_cast<std::int64_t>(admin.size())}});
}

// A directory the process cannot write (a read-only volume, wrong ownership, chattr +i) would
// fail every upload with a 500 later: refused at start-up instead, naming the setting.
void check_writable(const std::string& dir) {
    const auto probe =
        std::filesystem::path(dir) / (".segue-write-check-" + std::to_string(::getpid()));
    const int fd = ::open(probe.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
    if (fd < 0)
        throw std::runtime_error("storage.blob_dir " + dir +
                                 " is not writable: " + std::strerror(errno));
    ::close(fd);
    ::unlink(probe.c_str());
}

namespace asio = boost::asio;

int io_thread_count(const config::settings& s) {
    if (s.server.io_threads > 0)
        return s.server.io_threads;
    unsigned n = std::thread::hardware_concurrency();
    return n == 0 ? 1 : static_cast<int>(n);
}

// Written to a temporary file and renamed, so a reader never sees a half-written port.
void write_port_file(const std::string& path, std::uint16_t port) {
    const std::string tmp = path + ".tmp";
    {
        std::ofstream out(tmp, std::ios::trunc);
        out << port << "\n";
        if (!out)
            throw std::runtime_error("cannot write port file " + tmp);
    }
    std::filesystem::rename(tmp, path);
}

log::level to_log_level(config::log_level l) {
    switch (l) {
        case config::log_level::debug:
            return log::level::debug;
        case config::log_level::info:
            return log::level::info;
        case config::log_level::warn:
            return log::level::warn;
        case config::log_level::error:
            return log::level::error;
    }
    return log::level::info;
}

}  // namespace

struct app::impl {
    explicit impl(config::settings s)
        : settings(std::move(s)),
          threads(io_thread_count(settings)),
          pool(threads),
          blocking(settings.engine.workers),
          api_blocking(std::max(2, threads)),
          auth(settings.tenants) {}
    // Coroutines still suspended (requests cut by the drain deadline) hold references to the
    // members below the pool: unwind them first, not when the pool goes, after those members.
    ~impl() { pool.shutdown(); }

    config::settings settings;
    int threads;
    runtime::io_pool pool;
    runtime::blocking_pool blocking;  // the engine's: audio processing, outputs' files
    // The API's (spooling and storing uploads, serving files, measuring free space): a request
    // never queues behind the engine's audio work (measured: with both on one pool, creates
    // waited ~30 ms for a statvfs behind the sandbox's DSP, and the API took 887/s, not 4,424/s).
    runtime::blocking_pool api_blocking;
    metrics::registry metrics;
    api::authenticator auth;
    std::unique_ptr<store::store> store;
    std::unique_ptr<store::db> db;       // the API's (write_lane::requests)
    std::unique_ptr<store::db> work_db;  // the engine's and the dispatcher's (write_lane::work)
    std::unique_ptr<store::blob_store> blobs;
    std::shared_ptr<net::dns_resolver> resolver;
    std::unique_ptr<net::http_client> http;
    std::unique_ptr<net::http_client> fetch;
    std::shared_ptr<const net::url_policy> url_policy;
    std::unique_ptr<providers::registry> providers;
    std::unique_ptr<core::engine> engine;
    std::unique_ptr<net::http_client> webhook_client;
    events::webhook_formats webhook_formats;  // filled by drop-in APIs before the dispatcher runs
    std::unique_ptr<events::dispatcher> dispatcher;
    std::unique_ptr<core::reaper> reaper;          // retention (work lane)
    std::unique_ptr<core::disk_watch> disk_watch;  // disk metrics
    events::event_hub hub;
    http::router routes;
    std::unique_ptr<http::server> server;
};

// The log's queue: ~16,000 access lines, a few seconds of a stalled reader at full load.
constexpr std::size_t log_queue_bytes = std::size_t{4} << 20;

// A secret kept in the store (store::transaction::ensure_secret): `fresh` if none was stored
// yet, else the stored one. At start-up: waits for the commit.
static std::string stored_secret(store::store& s, const std::string& name,
                                 const std::string& fresh) {
    std::string value;
    store::run_sync(s, true, [&](store::transaction& tx) {
        value = tx.ensure_secret(name, fresh, tx.clock_ms());
    });
    return value;
}

// tenants[].credits is the tenant's initial grant, made once (at its first create or credits
// call) and never changed after: a config that later says otherwise is logged at start, with
// what was granted and how to add more, instead of being silently without effect.
static void warn_of_changed_grants(store::store& s,
                                   const std::vector<config::tenant_settings>& ts) {
    std::vector<std::pair<std::string, std::int64_t>> configured;
    for (const auto& t : ts)  // 0 included: lowered to nothing after a grant, it is said too
        if (auto milli = core::credits_to_milli(t.credits))
            configured.emplace_back(t.name, *milli);
    if (configured.empty())
        return;
    std::vector<std::optional<store::ledger_row>> granted(configured.size());
    try {
        store::run_sync(s, false, [&](store::transaction& tx) {
            for (std::size_t i = 0; i < configured.size(); ++i)
                granted[i] = tx.find_ledger_entry(configured[i].first, "", 0, "grant", "initial");
        });
    } catch (const std::exception& e) {  // a diagnosis only: never a reason not to start
        log::warn("the tenants' initial grants could not be read to compare with the config",
                  {{"error", e.what()}});
        return;
    }
    for (std::size_t i = 0; i < configured.size(); ++i)
        if (granted[i] && granted[i]->amount_milli != configured[i].second)
            log::warn(
                "tenants[].credits differs from the initial grant already made, which is "
                "made once: the setting has no effect; top up with POST "
                "/v1/admin/credits",
                {{"tenant", configured[i].first},
                 {"configured", core::format_credits(configured[i].second)},
                 {"granted", core::format_credits(granted[i]->amount_milli)}});
}

namespace {

// The store's own counters, read at each scrape (atomic loads: no store work). The SQLite ones
// say whether its syncer and checkpointer do their work: a checkpointer that copied nothing for
// months once went unseen for want of them (bench/README.md 6p).
void add_store_metrics(metrics::registry& m, const store::store& s, bool sqlite) {
    m.add_collector([&s, sqlite](metrics::text_writer& w) {
        const auto st = s.stats();
        struct series {
            const char* name;
            const char* help;
            std::uint64_t value;
            bool gauge = false;
        };
        std::vector<series> out = {
            {"segue_store_commits_total",
             "Write transactions committed (with group commit, one holds many units).", st.commits},
            {"segue_store_units_total", "Units of write work committed.", st.units}};
        if (sqlite) {
            out.push_back({"segue_store_syncs_total",
                           "fdatasyncs of the SQLite WAL (one makes every group committed since "
                           "the last durable; none with storage.sync_full false).",
                           st.syncs});
            out.push_back({"segue_store_checkpoints_total",
                           "Background checkpoints that copied SQLite WAL frames into the "
                           "database file.",
                           st.checkpoints});
            out.push_back({"segue_store_wal_pages",
                           "The SQLite WAL's size in pages after the last commit (checkpoints "
                           "start it over).",
                           st.wal_pages, true});
            out.push_back({"segue_store_read_waits_total",
                           "Reads that waited for a sync, so as to see only durable commits.",
                           st.read_waits});
        } else {
            out.push_back({"segue_store_conflicts_total",
                           "Units aborted by a deadlock or a serialization failure and run again.",
                           st.conflicts});
            out.push_back({"segue_store_put_off_total",
                           "Units put off to the next batch rather than wait for a lock another "
                           "replica's batch holds.",
                           st.put_off});
        }
        for (const auto& x : out)
            if (x.gauge)
                w.write_gauge(x.name, x.help, static_cast<double>(x.value));
            else
                w.write_counter(x.name, x.help, static_cast<double>(x.value));
        w.write_gauge("segue_store_reachable",
                      "1 while the store reaches its database, 0 while it does not (PostgreSQL: "
                      "a connect failed and no connect or unit has succeeded since): the API "
                      "then refuses requests with 503 and /readyz says why.",
                      s.unreachable().empty() ? 1.0 : 0.0);
    });
}

}  // namespace

const providers::descriptor_list& builtin_providers() {
    return providers::builtin();
}

app::app(config::settings settings, const providers::descriptor_list& provider_kinds)
    : impl_(std::make_unique<impl>(std::move(settings))) {
    auto& d = *impl_;
    log::set_level(to_log_level(d.settings.log.level));
    metrics::register_process_metrics(d.metrics);
    d.metrics.add_collector([](metrics::text_writer& w) {
        w.write_counter("segue_log_lines_dropped_total",
                        "Log lines dropped because the log's reader fell behind by more than "
                        "the queue holds.",
                        static_cast<double>(log::dropped_lines()));
    });
    d.metrics
        .gauge_family("segue_build_info", "Build version and revision; always 1.",
                      {"version", "revision"})
        .with({build::version, build::revision})
        .set(1);
    // Not ready while draining, and while the store cannot reach its database: a load balancer
    // then sends the requests to a replica that can serve them (the API refuses them meanwhile,
    // store::db fail_fast).
    api::add_system_routes(d.routes, d.metrics, [&d]() -> std::string {
        if (!d.server || !d.server->ready())
            return "shutting down";
        if (d.store && !d.store->unreachable().empty())
            return "the database is unreachable: " + d.store->unreachable();
        return {};
    });
    api::add_console_routes(d.routes);

    // Durable state first: nothing is accepted before the store is open and migrated.
    {
        std::error_code ec;
        std::filesystem::create_directories(d.settings.storage.blob_dir, ec);
        if (ec)
            throw std::runtime_error("storage.blob_dir " + d.settings.storage.blob_dir +
                                     " cannot be created: " + ec.message());
    }
    check_writable(d.settings.storage.blob_dir);
    try {
        d.store = store::open_store(d.settings.storage);
    } catch (const std::exception& e) {
        // The setting to look at: the SQLite file, or the PostgreSQL URL (never printed).
        throw std::runtime_error(
            (d.settings.storage.engine == config::storage_engine::postgres
                 ? std::string("storage.postgres.url: ")
                 : "storage.sqlite_path " + d.settings.storage.sqlite_path + ": ") +
            e.what());
    }
    add_store_metrics(d.metrics, *d.store,
                      d.settings.storage.engine == config::storage_engine::sqlite);
    warn_of_changed_grants(*d.store, d.settings.tenants);
    if (d.settings.api.url_signing_key.empty()) {
        // Made once and kept in the store: links already handed out (7-day links, the upload
        // URLs providers fetch) outlive a restart, and every replica sharing the store signs
        // and checks with the same key. Read here, before anything copies the settings.
        d.settings.api.url_signing_key =
            stored_secret(*d.store, "url_signing_key", util::random_hex(32));
    }
    d.db = std::make_unique<store::db>(*d.store, d.metrics, store::write_lane::requests,
                                       /*fail_fast=*/true,
                                       std::chrono::duration_cast<std::chrono::milliseconds>(
                                           d.settings.storage.postgres.request_wait));
    d.work_db = std::make_unique<store::db>(*d.store, d.metrics, store::write_lane::work);
    store::blob_options bo;
    bo.backend = d.settings.storage.blobs == config::blob_backend::postgres
                     ? store::blob_backend::postgres
                     : store::blob_backend::directory;
    bo.dir = d.settings.storage.blob_dir;
    bo.pg_url = d.settings.storage.postgres.url;
    // At least the blob store's own default: a put of a key waits for another put of it.
    bo.pg_statement_timeout_ms =
        std::max(bo.pg_statement_timeout_ms,
                 static_cast<int>(std::chrono::duration_cast<std::chrono::milliseconds>(
                                      d.settings.storage.postgres.statement_timeout)
                                      .count()));
    d.blobs = store::open_blob_store(bo);
    d.providers = providers::make_registry(provider_kinds, d.settings);
    // Routes may only name providers that are enabled here.
    if (!d.providers->find(d.settings.api.default_provider))
        throw std::runtime_error("api.default_provider '" + d.settings.api.default_provider +
                                 "' is not an enabled provider");
    for (const auto& [name, route] : d.settings.routing.routes)
        for (const auto& e : route.chain)
            if (!d.providers->find(e.provider))
                throw std::runtime_error("routing.routes." + name + ": provider '" + e.provider +
                                         "' is not enabled");
    // One resolver for every outbound call: lookups concurrent, answers cached (dns.hpp).
    d.resolver = std::make_shared<net::dns_resolver>(net::dns_options{
        .threads = d.settings.dns.threads,
        .ttl = std::chrono::duration_cast<std::chrono::milliseconds>(d.settings.dns.cache_ttl),
        .max_entries = static_cast<std::size_t>(d.settings.dns.cache_entries)});
    net::client_options co;
    co.resolver = d.resolver;
    co.connect_timeout = d.settings.upstream.connect_timeout;
    co.request_timeout = d.settings.upstream.request_timeout;
    co.max_response_bytes = d.settings.upstream.max_response_bytes;
    co.max_idle_per_host = d.settings.upstream.max_idle_per_host;
    co.allow_plain_http = d.settings.upstream.allow_plain_http;
    co.ca_file = d.settings.upstream.ca_file;
    co.run_blocking = [&d](std::function<void()> fn) { return d.blocking.run(std::move(fn)); };
    d.http = std::make_unique<net::http_client>(d.pool.main(), co, d.metrics);
    // User-given URLs get their own client: plain http allowed, but only public addresses
    // (checked on the resolved addresses, which are the ones connected to), unless allow-listed.
    {
        auto policy = std::make_shared<net::url_policy>();
        policy->allow = net::cidr_list(d.settings.fetch.allow_cidrs);
        policy->allowed_ports.assign(d.settings.fetch.allowed_ports.begin(),
                                     d.settings.fetch.allowed_ports.end());
        policy->allow_http = true;
        policy->resolver = d.resolver;
        d.url_policy = std::move(policy);
    }
    net::client_options fo = co;
    fo.allow_plain_http = true;
    fo.request_timeout = d.settings.fetch.timeout;
    fo.check_endpoints = net::make_endpoint_check(d.url_policy);
    d.fetch = std::make_unique<net::http_client>(d.pool.main(), fo, d.metrics);
    d.engine = std::make_unique<core::engine>(d.pool.main(), *d.work_db, *d.blobs, *d.providers,
                                              d.blocking, d.settings, d.metrics, d.http.get(),
                                              d.fetch.get(), d.url_policy);
    // Webhook deliveries: the same guard as fetches; one attempt per send, never a redirect.
    net::client_options wo = fo;
    wo.request_timeout = d.settings.webhooks.timeout;
    // Only a delivery's status counts: a body over this is left unread (request::status_only).
    wo.max_response_bytes = 64 * 1024;
    wo.max_idle_per_host = static_cast<std::size_t>(d.settings.webhooks.concurrency);
    d.webhook_client = std::make_unique<net::http_client>(d.pool.main(), wo, d.metrics);
    d.dispatcher = std::make_unique<events::dispatcher>(
        d.pool.main(), *d.work_db, d.settings, d.metrics, *d.webhook_client, &d.webhook_formats);
    d.reaper = std::make_unique<core::reaper>(d.pool.main(), *d.work_db, *d.blobs, d.blocking,
                                              d.settings, d.metrics);
    d.disk_watch =
        std::make_unique<core::disk_watch>(d.pool.main(), *d.db, d.blocking, d.settings, d.metrics);
    // Commits wake who waits for them: the dispatcher (deliveries due), the engine (jobs
    // scheduled by another replica: this one's own are notified directly), SSE streams (events).
    d.store->set_commit_listener([disp = d.dispatcher.get(), eng = d.engine.get(),
                                  hub = &d.hub](const store::commit_notice& n) {
        if (n.outbox || n.all)
            disp->notify();
        if (n.remote && (n.jobs || n.all))
            eng->notify();
        if (n.all)
            hub->publish_all();
        else if (!n.event_tasks.empty())
            hub->publish(n.event_tasks);
    });
    d.engine->set_event_hub(&d.hub);  // an early provider webhook waits for its task's events
    const api::api_deps api{d.settings,
                            *d.db,
                            *d.blobs,
                            *d.engine,
                            *d.providers,
                            d.api_blocking,
                            d.auth,
                            d.metrics,
                            d.url_policy,
                            d.hub,
                            api::create::make_flow_state()};
    api::add_extension_routes(d.routes, api);
    // Drop-in APIs in providers' own shapes (providers/<name>/compat/).
    std::string drop_ins;
    for (const auto* kind : provider_kinds)
        if (kind->compat) {
            api::compat_host host{d.routes, api, d.webhook_formats};
            kind->compat(host);
            drop_ins += (drop_ins.empty() ? "" : ", ") + std::string(kind->name);
        }
    // Their clients are handed file links to fetch, and without a base URL those are relative:
    // a client written for the provider's absolute URLs cannot use them as they are.
    // Info, not a warning: the single-node default (no base URL) is a supported setup.
    if (!drop_ins.empty() && d.settings.api.public_base_url.empty())
        log::info(
            "api.public_base_url is not set: the drop-in APIs hand out relative file links "
            "(/v1/files/…, signed), which their clients must resolve against this "
            "gateway's address themselves",
            {{"drop_in", drop_ins}});
    api::add_delivery_routes(d.routes, {*d.db, d.auth});
    api::add_credit_routes(d.routes,
                           {*d.db, d.auth, d.settings.credits.admin_key,
                            [&d](std::string_view tenant) -> std::int64_t {
                                for (const auto& t : d.settings.tenants)
                                    if (t.name == tenant)
                                        return core::credits_to_milli(t.credits).value_or(0);
                                return 0;
                            },
                            [&d](std::string_view tenant) {
                                for (const auto& t : d.settings.tenants)
                                    if (t.name == tenant)
                                        return true;
                                return false;
                            }});
    if (d.auth.tenant_count() == 0)
        log::warn("no tenants configured: every /v1 request will be refused (401)");
    warn_of_short_keys(d.settings);
    d.server = std::make_unique<http::server>(d.pool, d.settings, d.routes, d.metrics);
}

app::~app() = default;

int app::run(const run_options& options) {
    auto& d = *impl_;
    // A log reader that went away (segue | head) is the log's loss, not the process's: a write
    // to its pipe fails with EPIPE instead of killing the gateway with SIGPIPE mid-request.
    // (Sockets are written with MSG_NOSIGNAL already.)
    std::signal(SIGPIPE, SIG_IGN);
    // From here log lines leave through a writer thread: no IO thread waits on a slow reader
    // of stdout. Its destruction, on every way out of run(), writes what is queued (for up to
    // 2 s: see log::async_writer).
    log::async_writer log_writer(log_queue_bytes);
    d.server->start();
    d.engine->start();
    d.dispatcher->start();
    d.reaper->start();
    d.disk_watch->start();
    log::info("listening", {{"address", d.server->local_address()},
                            {"port", static_cast<unsigned>(d.server->port())},
                            {"io_threads", d.threads},
                            {"version", build::version}});
    const std::string port_file =
        options.port_file.empty() ? d.settings.server.port_file : options.port_file;
    if (!port_file.empty())
        write_port_file(port_file, d.server->port());

    int exit_code = 0;
    // SIGHUP too (a closed terminal, a log rotation's postrotate): drained like the others
    // rather than ended on the spot by its default action.
    asio::signal_set signals(d.pool.main(), SIGTERM, SIGINT, SIGHUP);
    signals.async_wait([&](const boost::system::error_code& ec, int sig) {
        if (ec)
            return;
        log::info("shutdown requested",
                  {{"signal", sig}, {"connections", d.server->active_connections()}});
        // A second signal during the drain stops at once.
        signals.async_wait([&](const boost::system::error_code& ec2, int) {
            if (ec2)
                return;
            log::warn("second signal: stopping without waiting for the drain");
            d.pool.stop();
        });
        d.reaper->stop();
        d.disk_watch->stop();
        // HTTP drains while the engine finishes its running jobs; then everything stops.
        auto pending = std::make_shared<int>(3);
        auto finish = [&d, &signals, pending] {
            if (--*pending > 0)
                return;
            signals.cancel();
            d.pool.stop();
        };
        d.server->shutdown([finish](bool clean) {
            log::info("drained", {{"clean", clean}});
            finish();
        });
        asio::co_spawn(d.pool.main(), d.engine->stop(d.settings.server.drain_timeout),
                       [finish](std::exception_ptr) { finish(); });
        asio::co_spawn(d.pool.main(), d.dispatcher->stop(d.settings.server.drain_timeout),
                       [finish](std::exception_ptr) { finish(); });
    });

    d.pool.run();
    d.api_blocking.stop();
    d.blocking.stop();
    d.store->close();
    log::info("stopped");
    return exit_code;
}

}  // namespace segue

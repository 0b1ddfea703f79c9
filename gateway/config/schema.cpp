// THE list of settings. Each one is declared here exactly once: YAML name, C++ field,
// description, default, bounds. Loading, validation, `--check-config` output and the Markdown
// reference (config/README.md, `segue --config-docs`) are all generated from this.
//
// Adding a setting: add the field (with the same default) to settings.hpp, add one
// declaration below, then regenerate config/README.md (see its intro).

#include <cctype>
#include <cerrno>
#include <chrono>
#include <cstring>
#include <fstream>
#include <iterator>
#include <map>
#include <optional>
#include <set>

#include "gateway/config/provider_config.hpp"
#include "gateway/config/schema.hpp"
#include "gateway/events/signer.hpp"
#include "gateway/net/address_policy.hpp"
#include "gateway/util/crypto.hpp"

namespace segue::config {
namespace {

using namespace std::chrono_literals;

object_schema<server_settings> server_schema() {
    object_schema<server_settings> s;
    s.field("listen", &server_settings::listen,
            "Address to accept connections on: host:port or [IPv6]:port. A host name is resolved "
            "once at start-up. Port 0 picks a free port (see port_file).")
        .def("127.0.0.1:8080")
        .check("host:port", detail::check_host_port);
    s.field("io_threads", &server_settings::io_threads,
            "Threads running the network event loop; 0 means one per CPU core.")
        .def(0)
        .range(0, 256);
    s.field("max_connections", &server_settings::max_connections,
            "Open client connections above which new ones are refused until some close.")
        .def(10000)
        .range(1, 1000000);
    s.field(
         "shutdown_delay", &server_settings::shutdown_delay,
         "On SIGTERM/SIGINT/SIGHUP: readiness turns false at once, but new connections are still "
         "accepted this long so load balancers stop routing here first (Kubernetes: a few "
         "seconds). Then the listener closes and the drain starts.")
        .def(0s)
        .range(0s, 5min);
    s.field("drain_timeout", &server_settings::drain_timeout,
            "On SIGTERM/SIGINT/SIGHUP: how long in-flight requests may take to finish before the "
            "remaining connections are closed.")
        .def(20s)
        .range(0s, 10min);
    s.field("drain_first_request_wait", &server_settings::drain_first_request_wait,
            "On SIGTERM/SIGINT/SIGHUP, once the listener has closed: how long a connection that "
            "has not "
            "sent its first request may take to send it (a proxy that connected just before the "
            "close is writing it). It is answered if the request comes in time, closed if not.")
        .def(1s)
        .range(0s, 1min);
    s.field("port_file", &server_settings::port_file,
            "If set, the bound port is written to this file once listening (useful with port 0). "
            "The --port-file flag overrides it.")
        .def("");
    return s;
}

object_schema<limits_settings> limits_schema() {
    object_schema<limits_settings> s;
    s.field("max_header_bytes", &limits_settings::max_header_bytes,
            "Largest request line plus headers; larger requests get 431.")
        .byte_size()
        .def(16 * KiB)
        .range(1 * KiB, 1 * MiB);
    s.field("max_body_bytes", &limits_settings::max_body_bytes,
            "Largest request body of the routes without a limit of their own; larger requests "
            "get 413. Creates have their own: api.max_upload_bytes (multipart) and "
            "api.max_json_bytes (JSON or form-encoded).")
        .byte_size()
        .def(1 * MiB)
        .range(0, 1 * GiB);
    s.field("header_timeout", &limits_settings::header_timeout,
            "Time a client has to send the complete request line and headers.")
        .def(10s)
        .range(100ms, 10min);
    s.field("idle_timeout", &limits_settings::idle_timeout,
            "Time a keep-alive connection may sit idle between requests before it is closed.")
        .def(60s)
        .range(100ms, 1h);
    s.field("body_read_timeout", &limits_settings::body_read_timeout,
            "Longest wait for each read of a request body: a client that stalls longer is cut "
            "off (slowloris). A large upload may take longer in total while data keeps flowing.")
        .def(15s)
        .range(100ms, 1h);
    s.field("write_timeout", &limits_settings::write_timeout,
            "Time allowed for writing one complete response to a client.")
        .def(30s)
        .range(100ms, 1h);
    s.field("max_requests_per_connection", &limits_settings::max_requests_per_connection,
            "Requests served on one keep-alive connection before it is closed (the last "
            "response says Connection: close); 0 means unlimited.")
        .def(0)
        .range(0, 1000000000);
    return s;
}

object_schema<log_settings> log_schema() {
    object_schema<log_settings> s;
    s.field("level", &log_settings::level,
            "Least severe level logged; less severe messages are dropped.")
        .values({{"debug", log_level::debug},
                 {"info", log_level::info},
                 {"warn", log_level::warn},
                 {"error", log_level::error}})
        .def(log_level::info);
    s.field("access", &log_settings::access,
            "Write one access-log line per request (at info: none below log.level info).")
        .def(true);
    return s;
}

bool is_hex_sha256_key(const std::string& k) {
    if (k.rfind("sha256:", 0) != 0)
        return true;  // a plain key
    if (k.size() != 7 + 64)
        return false;
    for (char c : k.substr(7))
        if (!std::isxdigit(static_cast<unsigned char>(c)))
            return false;
    return true;
}

object_schema<tenant_settings> tenant_schema() {
    object_schema<tenant_settings> t;
    t.field("name", &tenant_settings::name,
            "Tenant name: owns its tasks, files and credits; never sees another tenant's.")
        .required();
    t.field("api_keys", &tenant_settings::api_keys,
            "API keys (Authorization: Bearer <key>). A key is either the key itself or "
            "\"sha256:<64 hex digits>\", its SHA-256, so the config need not hold it. Use "
            "${VAR} to read keys from the environment.")
        .secret();
    t.field("webhook_secrets", &tenant_settings::webhook_secrets,
            "Standard Webhooks signing secrets (\"whsec_\" + base64 of 24 to 64 random bytes) "
            "for this tenant's webhook deliveries. Every delivery is signed with each one, so "
            "during a rotation list the new secret first and drop the old one once receivers "
            "have switched. A task with a webhook_url needs one. Use ${VAR}.")
        .secret();
    t.field("credits", &tenant_settings::credits,
            "Initial credit grant, written to the tenant's ledger once; top-ups come from "
            "POST /v1/admin/credits. Changed after the grant was made, it has no effect, and "
            "the start logs a warning saying so.")
        .def(1000.0)
        .range(0.0, 1e12);
    t.validate([](const tenant_settings& x) -> std::optional<std::string> {
        // Each message names the entry (a key's value is never quoted: it is a secret).
        for (std::size_t i = 0; i < x.webhook_secrets.size(); ++i) {
            std::string key, error;
            if (!events::parse_secret(x.webhook_secrets[i], key, error))
                return "webhook_secrets[" + std::to_string(i) + "]: " + error;
        }
        if (x.api_keys.empty())
            return "a tenant needs at least one api key";
        for (std::size_t i = 0; i < x.api_keys.size(); ++i) {
            const auto& k = x.api_keys[i];
            if (k.empty())
                return "api_keys[" + std::to_string(i) + "]: must not be empty";
            if (!is_hex_sha256_key(k))
                return "api_keys[" + std::to_string(i) + "]: a sha256: key must be 64 hex digits";
        }
        return std::nullopt;
    });
    return t;
}

object_schema<postgres_settings> postgres_schema() {
    object_schema<postgres_settings> s;
    s.field("url", &postgres_settings::url,
            "libpq connection URL (postgresql://user:password@host:5432/db?sslmode=require, or "
            "postgresql:///db?host=/run/postgresql for a socket). Usually ${VAR} from a Secret.")
        .secret()
        .def(std::string())
        // The shape only (libpq reads it when the store opens): a value that is neither form
        // is a mistake --check-config can name, rather than a start-up that fails after it.
        // The value is a secret: the message never quotes it.
        .check("empty, a postgresql:// URL, or key=value pairs",
               [](const std::string& u) -> std::optional<std::string> {
                   if (u.empty() || u.starts_with("postgresql://") || u.starts_with("postgres://"))
                       return std::nullopt;
                   const auto first = u.find_first_not_of(" \t");
                   const auto eq = u.find('=');
                   if (first != std::string::npos && eq != std::string::npos && eq > first &&
                       u.find_first_of(" \t", first) > eq)
                       return std::nullopt;  // host=... dbname=...
                   return "must be a postgresql:// URL or libpq key=value pairs (host=... "
                          "dbname=...)";
               });
    s.field("pool_size", &postgres_settings::pool_size,
            "Store connections per process: two run write units (one for the API's, one for "
            "the engine's and the dispatcher's), each grouping many into one commit; the rest "
            "run reads. One more listens for other replicas' commits, and the blob store "
            "(storage.blobs: postgres) opens up to 4 of its own on demand.")
        .def(8)
        .range(3, 200);
    s.field("statement_timeout", &postgres_settings::statement_timeout,
            "Longest a statement may run (PostgreSQL statement_timeout; the blob store's "
            "sessions use at least 60s); a unit that exceeds it fails instead of holding "
            "locks. A connection that gets no answer for this + 10 s is given up as lost (the "
            "server stopped answering).")
        .def(5s)
        .range(100ms, 10min);
    s.field("connect_wait", &postgres_settings::connect_wait,
            "At start, how long to keep trying to reach the database (it restarts, or starts "
            "with the replicas) before giving up with exit status 1; 0s gives up at once.")
        .def(30s)
        .range(0s, 10min);
    s.field("request_wait", &postgres_settings::request_wait,
            "Longest an API request waits for the database in the queue (it is out of reach, "
            "or stopped answering and is not yet known to be out of reach): then it is "
            "answered 503 unavailable with Retry-After, and nothing of it was done. A request "
            "already sent to the database ends as the database ends it (a connection that "
            "gets no answer for statement_timeout + 10 s is given up as lost).")
        .def(10s)
        .range(1s, 10min);
    s.field("replica_timeout", &postgres_settings::replica_timeout,
            "A replica shows the others it is alive every third of this; one that has not for "
            "this long is taken for dead, and the jobs and webhook deliveries it had claimed are "
            "claimed by the others at once, instead of when their leases (engine.lease, "
            "webhooks.lease) end. A replica that stalled (or lost the database) longer than "
            "this finds its claims taken: the fence refuses its writes, and an upstream call "
            "it had sent is reconciled, never sent again blindly.")
        .def(15s)
        .range(1s, 10min);
    return s;
}

object_schema<storage_settings> storage_schema() {
    object_schema<storage_settings> s;
    s.field("engine", &storage_settings::engine,
            "Where durable state lives: sqlite (embedded, one process; the default) or postgres "
            "(shared by several replicas).")
        .values({{"sqlite", storage_engine::sqlite}, {"postgres", storage_engine::postgres}})
        .def(storage_engine::sqlite);
    s.object("postgres", &storage_settings::postgres, postgres_schema(),
             "The PostgreSQL database (storage.engine: postgres, storage.blobs: postgres).");
    s.field("sqlite_path", &storage_settings::sqlite_path,
            "SQLite database file (created, with its directory, if missing).")
        .def("var/segue.db");
    s.field("sqlite_lock_wait", &storage_settings::sqlite_lock_wait,
            "SQLite serves one process: the database is locked while a segue (or segue migrate) "
            "has it open. Another process opening it waits this long for the holder to exit (a "
            "restart while the old process still drains), then gives up with exit status 1, "
            "naming the holder's pid; 0s gives up at once.")
        .def(30s)
        .range(0s, 10min);
    s.field("blob_dir", &storage_settings::blob_dir,
            "Directory for files: with `blobs: directory` the files themselves (a volume shared "
            "by every replica when several run); with any backend, uploads being received, "
            "providers' scratch files and local copies of stored files.")
        .def("var/blobs");
    s.field("blobs", &storage_settings::blobs,
            "Where files (uploads, generated audio) live: `directory` keeps them under blob_dir "
            "(a volume shared by every replica when several run); `postgres` keeps them in "
            "PostgreSQL in 1 MiB rows, so replicas share nothing but the database (blob_dir then "
            "holds only the spool, scratch files and a cache of local copies).")
        .values({{"directory", blob_backend::directory}, {"postgres", blob_backend::postgres}})
        .def(blob_backend::directory);
    s.field("sync_full", &storage_settings::sync_full,
            "fsync every commit, so a task is on disk before its 202 leaves. Turning it off "
            "risks losing the last commits on power loss (not on a crash of the process).")
        .def(true);
    s.field("cache_size", &storage_settings::cache_size,
            "SQLite page cache of the writing connection (the reading one keeps SQLite's 2 MB). "
            "Filled as the database is used, not at start. Smaller costs throughput under load: "
            "the writer then re-reads index pages from the OS on every commit.")
        .byte_size()
        .def(16ull * MiB)
        .range(1 * MiB, 4ull * GiB);
    s.field("min_free_bytes", &storage_settings::min_free_bytes,
            "Free space kept on the data volume (blob_dir's file system, and the SQLite "
            "database's): below it new uploads (multipart files and audio_url sources) get 507 "
            "with Retry-After, while everything already accepted goes on; they are taken again "
            "as soon as space returns. 0 = never refuse.")
        .byte_size()
        .def(256ull * MiB)
        .range(0, 1024ull * GiB);
    s.field("disk_check_interval", &storage_settings::disk_check_interval,
            "How often the disk metrics (segue_disk_free_bytes, segue_blob_bytes, "
            "segue_database_bytes) are measured.")
        .def(10s)
        .range(100ms, 10min);
    s.validate([](const storage_settings& st) -> std::optional<std::string> {
        if (st.engine == storage_engine::postgres && st.postgres.url.empty())
            return "engine postgres needs postgres.url (a libpq connection URL)";
        if (st.blobs == blob_backend::postgres && st.postgres.url.empty())
            return "blobs: postgres needs postgres.url (a libpq connection URL)";
        return std::nullopt;
    });
    return s;
}

object_schema<api_settings> api_schema() {
    object_schema<api_settings> s;
    s.field("max_upload_bytes", &api_settings::max_upload_bytes,
            "Largest multipart upload to POST /v1/extensions (the audio file is streamed to "
            "disk, never held in memory); larger uploads get 413.")
        .byte_size()
        .def(512ull * MiB)
        .range(1 * MiB, 64ull * GiB);
    s.field("max_json_bytes", &api_settings::max_json_bytes,
            "Largest JSON (or form-encoded) body of a create: POST /v1/extensions, the "
            "MusicGPT drop-in's extend without a file, MusicAPI's create; larger bodies get "
            "413.")
        .byte_size()
        .def(256 * KiB)
        .range(1 * KiB, 64 * MiB);
    s.field("idempotency_retention", &api_settings::idempotency_retention,
            "How long an Idempotency-Key is remembered.")
        .def(24h)
        .range(1min, 24h * 30);
    s.field("public_base_url", &api_settings::public_base_url,
            "Base URL clients reach this gateway at (e.g. https://segue.example.com), used for "
            "absolute file URLs in tasks and events. Empty: URLs are relative (/v1/files/...).")
        .def("")
        .check(
            "empty, or an http(s) base URL",
            [](const std::string& u) -> std::optional<std::string> {
                if (u.empty())
                    return std::nullopt;
                const auto scheme = u.find("://");
                const auto s = scheme == std::string::npos ? std::string() : u.substr(0, scheme);
                if (s != "http" && s != "https")
                    return "must be an http:// or https:// URL (clients and providers fetch files "
                           "from it)";
                if (u.find_first_of("?#", scheme + 3) != std::string::npos || u.back() == '/' ||
                    u.size() == scheme + 3)
                    return "must be a base URL like https://segue.example.com (a host, no trailing "
                           "slash, query or fragment)";
                return std::nullopt;
            });
    s.field("default_provider", &api_settings::default_provider,
            "Provider used when a request names neither provider nor route.")
        .def("sandbox");
    s.field("url_signing_key", &api_settings::url_signing_key,
            "Key of the expiring signed file URLs: the `*_signed_url` links in task JSON, "
            "POST /v1/files/{id}/links, and the upload URLs providers fetch. Empty: the "
            "gateway makes one at its first start and keeps it in the store (table secrets), "
            "so links outlive a restart and every replica sharing the store checks them alike. "
            "Set it (use ${VAR}) to keep it out of the database; changing it invalidates the "
            "links handed out. At least 16 characters (e.g. `openssl rand -hex 32`): anyone "
            "who guesses it can sign links to every file.")
        .secret()
        .def("")
        .check("empty, or at least 16 characters",
               [](const std::string& k) -> std::optional<std::string> {
                   if (k.empty() || k.size() >= 16)
                       return std::nullopt;
                   return "must be at least 16 characters (it has " + std::to_string(k.size()) +
                          "): anyone who guesses it can sign links to every file; use e.g. "
                          "openssl rand -hex 32";
               });
    s.field("signed_url_lifetime", &api_settings::signed_url_lifetime,
            "Lifetime of the signed file links (`*_signed_url`) in task JSON, which work without "
            "an API key (an <audio src>, a shared link). Rounded up to a step of at most an "
            "hour so a link stays the same across reads for a while. POST "
            "/v1/files/{id}/links makes one with another lifetime.")
        .def(1h)
        .range(1min, 24h * 7);
    s.field("sse_keep_alive", &api_settings::sse_keep_alive,
            "How often an idle Server-Sent Events stream sends a comment line, so proxies and "
            "clients keep it open (events themselves are pushed the moment they commit).")
        .def(15s)
        .range(1s, 10min);
    s.field("cors_allow_origins", &api_settings::cors_allow_origins,
            "Web origins (scheme://host[:port], e.g. https://app.example.com) whose pages may "
            "call the API from the browser with an API key (CORS: preflights answered, "
            "Access-Control-Allow-Origin set); \"*\" allows any. Empty: none, as a key "
            "belongs on a server. File URLs (/v1/files/...) answer every origin regardless: "
            "a signed link is its own credential, and a page's <audio crossorigin> or fetch() "
            "of it needs CORS.");
    s.validate([](const api_settings& a) -> std::optional<std::string> {
        for (std::size_t i = 0; i < a.cors_allow_origins.size(); ++i) {
            const auto& o = a.cors_allow_origins[i];
            if (o == "*")
                continue;
            const auto scheme = o.find("://");
            const auto sch = scheme == std::string::npos ? std::string() : o.substr(0, scheme);
            if ((sch != "http" && sch != "https") || o.size() == scheme + 3 ||
                o.find_first_of("/?#", scheme + 3) != std::string::npos)
                return "cors_allow_origins[" + std::to_string(i) + "]: '" + o +
                       "' is not an origin (scheme://host[:port], no path or trailing slash, "
                       "e.g. https://app.example.com), nor \"*\"";
        }
        return std::nullopt;
    });
    return s;
}

object_schema<retention_settings> retention_schema() {
    object_schema<retention_settings> s;
    constexpr auto forever = 24h * 3650;
    s.field("uploads", &retention_settings::uploads,
            "How long a source upload is kept after it was uploaded (once its task is final). "
            "0 = forever.")
        .def(24h * 7)
        .range(0ms, forever);
    s.field("outputs", &retention_settings::outputs,
            "How long a produced file (audio, cover) is kept after it was made (once its task "
            "is final). 0 = forever.")
        .def(24h * 30)
        .range(0ms, forever);
    s.field("tasks", &retention_settings::tasks,
            "How long a final task is kept after its last change, with its events, attempts, "
            "webhook deliveries and files (never while a delivery is still being retried). The "
            "credit ledger keeps its entries. 0 = forever.")
        .def(24h * 90)
        .range(0ms, forever);
    s.field("tombstones", &retention_settings::tombstones,
            "How long a deleted file is remembered, so GET /v1/files/{id} answers 410 "
            "file_expired rather than 404; never less than its task is kept. 0 = forever.")
        .def(24h * 90)
        .range(0ms, forever);
    s.field("interval", &retention_settings::interval,
            "How often the reaper runs (on every replica; their batches never take the same "
            "rows).")
        .def(1min)
        .range(100ms, 1h);
    s.field("batch", &retention_settings::batch,
            "Rows per reaper transaction: small, so a batch never holds the writer long.")
        .def(100)
        .range(1, 10000);
    return s;
}

// A lease is renewed every lease/3 while its work runs; a renewal is a store write that needs
// time to commit under load. Below 1.5 s (a renewal every 500 ms, due 1 s before expiry) a busy
// store could let a live lease expire, and the work would run twice: the leases' minimum.
constexpr std::chrono::milliseconds min_lease{1500};

object_schema<engine_settings> engine_schema() {
    object_schema<engine_settings> s;
    s.field("workers", &engine_settings::workers,
            "Threads for the engine's blocking work (audio processing, outputs' files), off "
            "the IO threads. The API's own blocking work (uploads, file serving, free-space "
            "checks) has threads of its own, as many as the IO threads (at least 2), so a "
            "request never waits behind audio processing.")
        .def(2)
        .range(1, 64);
    s.field("poll_interval", &engine_settings::poll_interval,
            "How often the task engine looks for due jobs written by other replicas (its own "
            "jobs wake it at once).")
        .def(500ms)
        .range(10ms, 1min);
    s.field("lease", &engine_settings::lease,
            "How long a claimed job is reserved; a replica that dies leaves leases that expire "
            "after this. A running job's lease is renewed every lease/3 (the heartbeat), so a "
            "provider call may take longer than the lease. At least 1500ms: a renewal needs "
            "time to commit.")
        .def(2min)
        .range(min_lease, 1h);
    s.field("batch", &engine_settings::batch,
            "Jobs run at once by this replica (submits and the other jobs each hold at most "
            "three quarters of it). A job waiting for its provider holds no thread, so this is "
            "not the bound on provider calls: breakers.max_concurrency is.")
        .def(256)
        .range(1, 1000);
    s.field("max_job_failures", &engine_settings::max_job_failures,
            "Failed runs in a row (the job threw, or its lease expired unreleased) after which "
            "a job fails its task with error code `internal`, releasing its held credits.")
        .def(5)
        .range(1, 100);
    return s;
}

object_schema<webhooks_settings> webhooks_schema() {
    using namespace std::chrono;
    object_schema<webhooks_settings> s;
    s.field("retry_schedule", &webhooks_settings::retry_schedule,
            "Delays before each retry of a delivery that did not get a 2xx; after the last one "
            "the delivery is dead (GET /v1/deliveries?status=dead, then redeliver). The default "
            "is the Standard Webhooks schedule: about 28 hours in all.")
        .def({5s, 5min, 30min, 2h, 5h, 10h, 10h})
        .range(0s, 48h);
    s.field("jitter", &webhooks_settings::jitter,
            "Fraction of each retry delay that is randomized (spreads retries of many "
            "deliveries to one endpoint).")
        .def(0.1)
        .range(0.0, 1.0);
    s.field("timeout", &webhooks_settings::timeout,
            "Deadline of one delivery attempt (connect to end of response).")
        .def(15s)
        .range(100ms, 5min);
    s.field("max_retry_after", &webhooks_settings::max_retry_after,
            "A receiver's Retry-After (on 429 or 503) is honoured up to this; longer values are "
            "capped. It only ever lengthens the scheduled delay.")
        .def(1h)
        .range(0s, 48h);
    s.field("concurrency", &webhooks_settings::concurrency,
            "Deliveries in flight at once per replica.")
        .def(64)
        .range(1, 10000);
    s.field("batch", &webhooks_settings::batch, "Deliveries claimed from the store per round.")
        .def(64)
        .range(1, 10000);
    s.field("lease", &webhooks_settings::lease,
            "How long a claimed delivery is reserved for this replica; longer than timeout, so "
            "a live replica's delivery is never sent twice at once. At least 1500ms, as "
            "engine.lease.")
        .def(1min)
        .range(min_lease, 1h);
    s.validate([](const webhooks_settings& w) -> std::optional<std::string> {
        if (w.lease <= w.timeout)
            return "lease must be longer than timeout";
        return std::nullopt;
    });
    return s;
}

object_schema<route_entry_settings> route_entry_schema() {
    object_schema<route_entry_settings> s;
    s.field("provider", &route_entry_settings::provider, "A provider name.").required();
    s.field("weight", &route_entry_settings::weight,
            "Share of first picks: the first provider of a task is drawn by weight among the "
            "entries that have one; without any weight the chain's first entry goes first. The "
            "rest follow in chain order.")
        .def(0.0)
        .range(0.0, 1000000.0);
    return s;
}

object_schema<route_settings> route_schema() {
    object_schema<route_settings> s;
    s.list("chain", &route_settings::chain, route_entry_schema(),
           "Providers in failover order. Providers lacking what a request needs (its source "
           "kind, length, two outputs) are skipped; clip sources stay on the clip's provider.");
    s.field("regenerate", &route_settings::regenerate,
            "A task that fails at a provider after being accepted (a failed webhook or poll) is "
            "generated again at the next provider, when its error class fails over "
            "(retry.<class>.failover: by default transient, rate_limited, quota and credential; "
            "a rejection or an unknown failure stays final). Off: only failures before "
            "acceptance fail over.")
        .def(false);
    s.validate([](const route_settings& r) -> std::optional<std::string> {
        if (r.chain.empty())
            return "a route needs at least one provider in its chain";
        return std::nullopt;
    });
    return s;
}

object_schema<routing_settings> routing_schema() {
    object_schema<routing_settings> s;
    s.field("default_route", &routing_settings::default_route,
            "Route for requests that name neither provider nor route; empty: the one-provider "
            "chain [api.default_provider].")
        .def("");
    s.map("routes", &routing_settings::routes, route_schema(),
          "Named routes a request may pick with `route`.");
    s.validate([](const routing_settings& r) -> std::optional<std::string> {
        if (!r.default_route.empty() && !r.routes.count(r.default_route))
            return "default_route '" + r.default_route + "' is not one of the routes";
        return std::nullopt;
    });
    return s;
}

object_schema<class_retry_settings> class_retry_schema(const class_retry_settings& d) {
    object_schema<class_retry_settings> s;
    s.field("max_attempts", &class_retry_settings::max_attempts,
            "Attempts at one provider after a failure of this class, the first included.")
        .def(d.max_attempts)
        .range(1, 100);
    s.field("failover", &class_retry_settings::failover,
            "Once attempts at a provider are used up, move on to the route's next provider "
            "(only while no provider has accepted the task).")
        .def(d.failover);
    s.field("initial", &class_retry_settings::initial, "First delay before a retry.")
        .def(d.initial)
        .range(0s, 1h);
    s.field("max", &class_retry_settings::max, "Longest delay before a retry.")
        .def(d.max)
        .range(0s, 6h);
    s.field("multiplier", &class_retry_settings::multiplier, "Growth of the delay per retry.")
        .def(d.multiplier)
        .range(1.0, 10.0);
    s.field("jitter", &class_retry_settings::jitter, "Randomized fraction of each delay.")
        .def(d.jitter)
        .range(0.0, 1.0);
    s.validate([](const class_retry_settings& c) -> std::optional<std::string> {
        if (c.max < c.initial)
            return "max must be at least initial (the first delay would be cut to max)";
        return std::nullopt;
    });
    return s;
}

object_schema<retry_settings> retry_schema() {
    const retry_settings d;
    object_schema<retry_settings> s;
    s.field("attempt_budget", &retry_settings::attempt_budget,
            "Attempts per task over all providers (a refusal by an open circuit, which sends "
            "nothing, is not one); then the task fails.")
        .def(d.attempt_budget)
        .range(1, 100);
    s.field("deadline", &retry_settings::deadline,
            "No retry or failover starts later than this after the task was created.")
        .def(d.deadline)
        .range(1s, 48h);
    s.field("attempt_deadline", &retry_settings::attempt_deadline,
            "An attempt a provider accepted and has not finished this long after it was "
            "submitted fails with upstream_deadline (class transient), polled or not: its "
            "unmade outputs fail and what they held is released, and its callbacks after that "
            "change nothing. It is made again only on a route with regenerate: true, like any "
            "failure after acceptance, and only within retry.deadline. Every provider; "
            "MusicAPI's upload and extend together are also bounded by "
            "providers.musicapi.deadline.")
        .def(d.attempt_deadline)
        .range(1s, 48h);
    s.object("transient", &retry_settings::transient, class_retry_schema(d.transient),
             "5xx, timeouts, resets: retried, then failed over.");
    s.object("rate_limited", &retry_settings::rate_limited, class_retry_schema(d.rate_limited),
             "429: retried after Retry-After or the backoff, whichever is longer.");
    s.object("quota", &retry_settings::quota, class_retry_schema(d.quota),
             "The provider account is out of credits: failed over at once.");
    s.object("credential", &retry_settings::credential, class_retry_schema(d.credential),
             "The provider refused our key: failed over at once.");
    s.object("rejected", &retry_settings::rejected, class_retry_schema(d.rejected),
             "The provider refused the request itself (validation, moderation): not retried.");
    s.object("unknown", &retry_settings::unknown, class_retry_schema(d.unknown),
             "Anything unclassified: not retried.");
    return s;
}

object_schema<breaker_settings> breaker_schema() {
    object_schema<breaker_settings> s;
    s.field("consecutive_failures", &breaker_settings::consecutive_failures,
            "Consecutive failed calls (transient or rate limited) that open a provider's circuit.")
        .def(5)
        .range(1, 1000);
    s.field("failure_ratio", &breaker_settings::failure_ratio,
            "Failure ratio over `window` that opens the circuit, once min_requests calls were "
            "made in it.")
        .def(0.5)
        .range(0.0, 1.0);
    s.field("min_requests", &breaker_settings::min_requests,
            "Calls in the window before the ratio counts.")
        .def(10)
        .range(1, 100000);
    s.field("window", &breaker_settings::window, "Sliding window of the failure ratio.")
        .def(60s)
        .range(1s, 1h);
    s.field("open", &breaker_settings::open,
            "How long an opened circuit refuses calls before a probe; doubled at each re-open.")
        .def(30s)
        .range(100ms, 1h);
    s.field("max_open", &breaker_settings::max_open, "Longest open period.")
        .def(10min)
        .range(100ms, 24h);
    s.field("half_open_probes", &breaker_settings::half_open_probes,
            "Calls let through after the open period; success closes the circuit.")
        .def(1)
        .range(1, 100);
    s.field("max_concurrency", &breaker_settings::max_concurrency,
            "Calls in flight per provider and replica; 0: unlimited.")
        .def(0)
        .range(0, 100000);
    s.validate([](const breaker_settings& b) -> std::optional<std::string> {
        if (b.max_open < b.open)
            return "max_open must be at least open";
        return std::nullopt;
    });
    return s;
}

object_schema<credits_settings> credits_schema() {
    object_schema<credits_settings> s;
    s.field("admin_key", &credits_settings::admin_key,
            "Bearer key of POST /v1/admin/credits (top-ups); empty disables it. Use ${VAR}.")
        .secret()
        .def("");
    return s;
}

// `providers:`: a mapping from provider names to their own blocks, each loaded, rendered and
// documented by that provider's schema (from the catalog the wiring passes in). Every known
// provider gets an entry, its defaults when the file has no block for it.
class providers_member final : public member<settings> {
  public:
    providers_member(provider_catalog catalog)
        : member<settings>("providers", "Provider plugins and their settings."),
          catalog_(std::move(catalog)) {}

    void apply_default(settings& target) const override {
        target.providers.clear();
        for (const auto& p : catalog_)
            target.providers[p->name()] = p->defaults();
    }
    void load(const yaml_node& node, settings& target, detail::load_context& ctx,
              const std::string& path) const override {
        if (node.type == yaml_node::kind::null)
            return;
        if (node.type != yaml_node::kind::mapping) {
            ctx.error(node.line, path,
                      "expected a mapping of provider names to settings, got " +
                          std::string(detail::node_with_article(node.type)));
            return;
        }
        std::map<std::string, int> seen;
        for (const auto& entry : node.entries) {
            const std::string item_path = detail::join_key(path, entry.key);
            if (auto [it, fresh] = seen.emplace(entry.key, entry.line); !fresh) {
                ctx.error(entry.line, item_path,
                          "duplicate key (first set on line " + std::to_string(it->second) + ")");
                continue;
            }
            const provider_schema* schema = find(entry.key);
            if (!schema) {
                ctx.error(entry.line, item_path, unknown_message(entry.key));
                continue;
            }
            target.providers[entry.key] = schema->load(entry.value, ctx, item_path);
        }
    }
    yaml_node render(const settings& source, bool redact) const override {
        yaml_node n;
        n.type = yaml_node::kind::mapping;
        for (const auto& p : catalog_) {
            auto it = source.providers.find(p->name());
            const auto value =
                it != source.providers.end() && it->second ? it->second : p->defaults();
            n.entries.push_back({p->name(), 0, p->render(*value, redact)});
        }
        return n;
    }
    void document(const std::string& parent, std::size_t, detail::doc_writer& docs) const override {
        for (const auto& p : catalog_) {
            const std::string path = detail::join_key(detail::join_key(parent, name_), p->name());
            p->document(path, docs.begin(path, p->description()), docs);
        }
    }
    void self_check(const std::string& parent, std::vector<std::string>& problems) const override {
        for (const auto& p : catalog_) {
            const std::string path = detail::join_key(detail::join_key(parent, name_), p->name());
            if (p->description().empty())
                problems.push_back(path + ": no description");
            p->self_check(path, problems);
        }
    }

  private:
    const provider_schema* find(std::string_view name) const {
        for (const auto& p : catalog_)
            if (p->name() == name)
                return p.get();
        return nullptr;
    }
    std::string unknown_message(std::string_view name) const {
        std::vector<std::string> names;
        for (const auto& p : catalog_)
            names.push_back(p->name());
        std::string out = "unknown provider";
        if (auto guess = detail::closest(name, names))
            out += " (did you mean " + detail::quote(*guess) + "?)";
        if (names.empty())
            return out + "; no providers are known";
        out += "; known providers: ";
        for (std::size_t i = 0; i < names.size(); ++i)
            out += (i ? ", " : "") + names[i];
        return out;
    }

    provider_catalog catalog_;
};

object_schema<upstream_settings> upstream_schema() {
    object_schema<upstream_settings> s;
    s.field("connect_timeout", &upstream_settings::connect_timeout,
            "Resolve + connect + TLS handshake of a new upstream connection.")
        .def(5s)
        .range(100ms, 5min);
    s.field("request_timeout", &upstream_settings::request_timeout,
            "Default deadline of one upstream exchange (providers set their own per call).")
        .def(30s)
        .range(100ms, 1h);
    s.field("max_response_bytes", &upstream_settings::max_response_bytes,
            "Largest upstream response body held in memory.")
        .byte_size()
        .def(8 * MiB)
        .range(1 * KiB, 1 * GiB);
    s.field("max_idle_per_host", &upstream_settings::max_idle_per_host,
            "Keep-alive connections kept per upstream host.")
        .def(8)
        .range(0, 1024);
    s.field("allow_plain_http", &upstream_settings::allow_plain_http,
            "Allow http:// upstreams (local fakes, tests). Production upstreams use https with "
            "certificate verification.")
        .def(false);
    s.field("ca_file", &upstream_settings::ca_file,
            "Extra trusted CA bundle (PEM) for upstream TLS, besides the system store.")
        .def("")
        .check("empty, or a readable PEM file",
               [](const std::string& path) -> std::optional<std::string> {
                   if (path.empty())
                       return std::nullopt;
                   std::ifstream in(path, std::ios::binary);
                   if (!in)
                       return "cannot read " + path + ": " + std::strerror(errno);
                   std::string text((std::istreambuf_iterator<char>(in)),
                                    std::istreambuf_iterator<char>());
                   if (text.find("-----BEGIN CERTIFICATE-----") == std::string::npos)
                       return path + " holds no PEM certificate (-----BEGIN CERTIFICATE-----)";
                   return std::nullopt;
               });
    return s;
}

object_schema<fetch_settings> fetch_schema() {
    object_schema<fetch_settings> s;
    s.field("allow_cidrs", &fetch_settings::allow_cidrs,
            "Addresses user-given URLs (audio_url) may reach although they are not public "
            "(loopback, private, link-local, ...), as CIDRs, e.g. 127.0.0.1/32 for tests. "
            "Everything else non-public is refused after resolving, before connecting.");
    s.field("allowed_ports", &fetch_settings::allowed_ports,
            "Ports user-given URLs (audio_url, webhook_url) and provider output URLs the mirror "
            "downloads may name; an empty list allows any.")
        .def({80, 443})
        .range(1, 65535);
    s.field("timeout", &fetch_settings::timeout, "Deadline of one audio_url download.")
        .def(2min)
        .range(1s, 1h);
    s.validate([](const fetch_settings& f) -> std::optional<std::string> {
        // One at a time, so the message names the entry.
        for (std::size_t i = 0; i < f.allow_cidrs.size(); ++i) {
            try {
                net::cidr_list check({f.allow_cidrs[i]});
            } catch (const std::exception& e) {
                return "allow_cidrs[" + std::to_string(i) + "]: " + e.what() +
                       " (an address, or address/prefix length: 10.0.0.0/8, ::1/128)";
            }
        }
        return std::nullopt;
    });
    return s;
}

object_schema<dns_settings> dns_schema() {
    object_schema<dns_settings> s;
    s.field("threads", &dns_settings::threads,
            "Host name lookups that may run at once (each on its own thread: getaddrinfo "
            "blocks); concurrent lookups of one name share one.")
        .def(4)
        .range(1, 64);
    s.field("cache_ttl", &dns_settings::cache_ttl,
            "How long a resolved name is reused. The system resolver does not report the "
            "records' own TTL, so this is the longest a changed record goes unnoticed; 0 turns "
            "the cache off. Failures are never cached.")
        .def(30s)
        .range(0s, 1h);
    s.field("cache_entries", &dns_settings::cache_entries,
            "Names kept in the cache at most (the soonest to expire makes room).")
        .def(4096)
        .range(1, 1000000);
    return s;
}

object_schema<mirror_settings> mirror_schema() {
    object_schema<mirror_settings> s;
    s.field("enabled", &mirror_settings::enabled,
            "Copy every output a provider reports by URL (audio in each format, cover image) "
            "into the blob store before the output is ready, so tasks and events carry the "
            "gateway's own /v1/files URLs (the provider's stays as provider_url).")
        .def(true);
    s.field("max_bytes", &mirror_settings::max_bytes,
            "Largest file mirrored; a larger one is not retried (the mirror fails).")
        .byte_size()
        .def(512ull * MiB)
        .range(1 * KiB, 64ull * GiB);
    s.field("timeout", &mirror_settings::timeout, "Deadline of one download of one file.")
        .def(2min)
        .range(1s, 1h);
    s.field("deadline", &mirror_settings::deadline,
            "How long, from the provider's report, an output's mirror is retried before it "
            "counts as failed; no retry starts after the task's retry.deadline either.")
        .def(10min)
        .range(1s, 24h);
    s.field("initial_backoff", &mirror_settings::initial_backoff,
            "Wait before the first retry of a failed mirror; doubles per retry, with jitter.")
        .def(1s)
        .range(10ms, 10min);
    s.field("max_backoff", &mirror_settings::max_backoff, "Longest wait between retries.")
        .def(30s)
        .range(10ms, 1h);
    s.validate([](const mirror_settings& m) -> std::optional<std::string> {
        if (m.max_backoff < m.initial_backoff)
            return "max_backoff must be at least initial_backoff";
        return std::nullopt;
    });
    s.field("fail_output", &mirror_settings::fail_output,
            "What a mirror that never succeeds does: false (default) makes the output ready "
            "anyway, its URLs the provider's, flagged mirror_failed; true fails the output "
            "(its credits are refunded).")
        .def(false);
    return s;
}

object_schema<outputs_settings> outputs_schema() {
    object_schema<outputs_settings> s;
    s.object("mirror", &outputs_settings::mirror, mirror_schema(),
             "Mirroring provider outputs into the blob store.");
    s.field("verify", &outputs_settings::verify,
            "Decode every output and report its duration, format, peak, loudness and flags "
            "(silent, truncated, duration_mismatch, splice_discontinuity) in the output's "
            "`verification`.")
        .def(true);
    return s;
}

object_schema<settings> make_settings_schema(provider_catalog providers) {
    object_schema<settings> root;
    root.object("server", &settings::server, server_schema(), "The HTTP listener.");
    root.object("limits", &settings::limits, limits_schema(),
                "Per-request and per-connection limits that protect the gateway from slow or "
                "oversized clients.");
    root.object("log", &settings::log, log_schema(), "Logging.");
    root.list("tenants", &settings::tenants, tenant_schema(),
              "Tenants and their API keys. Without any, every /v1 request is refused (401).");
    root.object("storage", &settings::storage, storage_schema(), "Durable state and files.");
    root.object("api", &settings::api, api_schema(), "The public extend API.");
    root.object("engine", &settings::engine, engine_schema(),
                "The task engine: claims due jobs (submit, poll) from the store.");
    root.add_member(std::make_unique<providers_member>(std::move(providers)));
    root.object("upstream", &settings::upstream, upstream_schema(),
                "The HTTP client for provider APIs.");
    root.object("fetch", &settings::fetch, fetch_schema(),
                "User-given URLs and URLs followed for providers: audio_url downloads, webhook "
                "deliveries, provider outputs the mirror downloads (SSRF guard).");
    root.object("dns", &settings::dns, dns_schema(),
                "Host name resolution of every outbound call: concurrent lookups, a bounded "
                "cache.");
    root.object("routing", &settings::routing, routing_schema(),
                "Which providers a task goes to, in which order.");
    root.object("retry", &settings::retry, retry_schema(),
                "Retries and failover of provider failures, by error class.");
    root.object("breakers", &settings::breakers, breaker_schema(),
                "Per-provider circuit breakers and concurrency limits (the same settings for "
                "every provider).");
    root.object("credits", &settings::credits, credits_schema(), "The credit ledger.");
    root.object("outputs", &settings::outputs, outputs_schema(),
                "Provider outputs: mirrored into the blob store and verified.");
    root.object("webhooks", &settings::webhooks, webhooks_schema(),
                "Signed event delivery to each task's webhook_url (Standard Webhooks), from the "
                "outbox.");
    root.object("retention", &settings::retention, retention_schema(),
                "How long files, tasks and tombstones are kept; the reaper deletes what is "
                "older in small batches. Idempotency keys are deleted once older than "
                "api.idempotency_retention (the window in which a key replays).");
    // Rules across sections: what start-up would refuse, --check-config refuses too; every
    // problem at once, each at its own line.
    root.validate_each([](const settings& s) {
        object_schema<settings>::located_problems out;
        auto enabled = [&](const std::string& name) {
            auto it = s.providers.find(name);
            return it != s.providers.end() && it->second && it->second->enabled();
        };
        auto why = [&](const std::string& name) {
            return s.providers.count(name) ? "' is not enabled (providers." + name + ".enabled)"
                                           : std::string("' is not a known provider");
        };
        if (!enabled(s.api.default_provider))
            out.emplace_back("api.default_provider",
                             "'" + s.api.default_provider + why(s.api.default_provider));
        for (const auto& [name, route] : s.routing.routes)
            for (std::size_t i = 0; i < route.chain.size(); ++i)
                if (const auto& p = route.chain[i].provider; !enabled(p))
                    out.emplace_back(
                        "routing.routes." + name + ".chain[" + std::to_string(i) + "].provider",
                        "'" + p + why(p));
        // One key, one tenant: a key listed twice would authenticate as whichever came first.
        // Names compare without case, as people read them.
        std::map<std::string, std::string> owner;  // key (as its SHA-256) -> tenant
        std::map<std::string, std::string> names;  // lower-cased name -> as written
        for (std::size_t i = 0; i < s.tenants.size(); ++i) {
            const auto& t = s.tenants[i];
            const std::string at = "tenants[" + std::to_string(i) + "]";
            std::string lower = t.name;
            for (auto& c : lower)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            if (t.name.empty())
                out.emplace_back(at + ".name", "a tenant needs a name");
            else if (auto [it, fresh] = names.emplace(lower, t.name); !fresh)
                out.emplace_back(at + ".name", "'" + t.name + "' is already the name of tenant '" +
                                                   it->second + "'");
            for (std::size_t k = 0; k < t.api_keys.size(); ++k) {
                const auto& key = t.api_keys[k];
                std::string digest =
                    key.rfind("sha256:", 0) == 0 ? key.substr(7) : util::sha256_hex(key);
                for (auto& c : digest)
                    c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
                if (auto [it, fresh] = owner.emplace(digest, t.name); !fresh)
                    out.emplace_back(
                        at + ".api_keys[" + std::to_string(k) + "]",
                        "this key is also " + (it->second == t.name
                                                   ? std::string("listed before for it")
                                                   : "a key of tenant '" + it->second + "'"));
            }
        }
        // An enabled provider reached by plain http while upstream.allow_plain_http is off:
        // every one of its tasks would fail at once (upstream_misconfigured).
        for (const auto& [name, p] : s.providers)
            if (p && p->enabled() && !s.upstream.allow_plain_http &&
                p->upstream_url().rfind("http://", 0) == 0)
                out.emplace_back("providers." + name + ".base_url",
                                 "plain http is refused (upstream.allow_plain_http: false): use "
                                 "https, or allow plain http for a test setup");
        // The same provider twice in one chain is a typo (a failover to itself).
        for (const auto& [name, route] : s.routing.routes) {
            std::set<std::string> seen;
            for (std::size_t i = 0; i < route.chain.size(); ++i)
                if (!seen.insert(route.chain[i].provider).second)
                    out.emplace_back(
                        "routing.routes." + name + ".chain[" + std::to_string(i) + "].provider",
                        "'" + route.chain[i].provider + "' is already in this chain");
        }
        return out;
    });
    return root;
}

}  // namespace

object_schema<settings> settings_schema(const provider_catalog& providers) {
    return make_settings_schema(providers);
}

}  // namespace segue::config

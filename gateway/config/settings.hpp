#pragma once
// The typed settings of the whole gateway. Each field is declared (name, description, default,
// bounds) exactly once, in gateway/config/schema.cpp; the defaults written here must match it
// (a unit test checks that a default-constructed Settings equals the schema's defaults).

#include <chrono>
#include <cstdint>
#include <map>
#include <memory>
#include <string>
#include <vector>

namespace segue::config {

using duration = std::chrono::milliseconds;

enum class log_level { debug, info, warn, error };

// Where file bytes live (gateway/store/blob_store.hpp).
enum class blob_backend { directory, postgres };

struct server_settings {
    std::string listen = "127.0.0.1:8080";  // host:port, [v6]:port; port 0 = pick one
    int io_threads = 0;                     // 0 = number of cores
    int max_connections = 10000;
    // After SIGTERM: keep accepting (readiness false) this long so load balancers deregister us.
    duration shutdown_delay = std::chrono::seconds(0);
    duration drain_timeout = std::chrono::seconds(20);
    // After the listener closes: how long a connection may take to send its first request.
    duration drain_first_request_wait = std::chrono::seconds(1);
    std::string port_file;  // if set, the bound port is written here once listening
};

struct limits_settings {
    std::uint64_t max_header_bytes = 16 * 1024;
    std::uint64_t max_body_bytes = 1024 * 1024;
    duration header_timeout = std::chrono::seconds(10);
    duration idle_timeout = std::chrono::seconds(60);
    duration body_read_timeout = std::chrono::seconds(15);
    duration write_timeout = std::chrono::seconds(30);
    int max_requests_per_connection = 0;  // 0 = unlimited
};

struct log_settings {
    log_level level = log_level::info;
    bool access = true;
};

struct tenant_settings {
    std::string name;
    // Plain keys, or "sha256:<64 hex>" (the SHA-256 of the key) so configs need not hold them.
    std::vector<std::string> api_keys;
    // Standard Webhooks secrets ("whsec_" + base64) signing this tenant's webhook deliveries;
    // during a rotation list the new one first: every delivery is signed with each.
    std::vector<std::string> webhook_secrets;
    double credits = 1000;  // initial grant
};

enum class storage_engine { sqlite, postgres };

struct postgres_settings {
    std::string url;    // libpq connection URL; secret (it may hold a password)
    int pool_size = 8;  // store connections per process: 2 write (a lane each), the rest read
    duration statement_timeout = std::chrono::seconds(5);
    duration connect_wait = std::chrono::seconds(30);     // at start: how long to wait for it
    duration request_wait = std::chrono::seconds(10);     // an API request's unit, queued, at most
    duration replica_timeout = std::chrono::seconds(15);  // unseen this long: dead, leases freed
};

struct storage_settings {
    storage_engine engine = storage_engine::sqlite;
    postgres_settings postgres;
    std::string sqlite_path = "var/segue.db";
    duration sqlite_lock_wait = std::chrono::seconds(30);  // for another process to let it go
    std::string blob_dir = "var/blobs";              // files (directory backend), spool, scratch
    blob_backend blobs = blob_backend::directory;    // where files live (blob_dir: scratch, cache)
    bool sync_full = true;                           // fsync every commit
    std::uint64_t cache_size = 16ull * 1024 * 1024;  // SQLite page cache of the writer
    // Below this many free bytes on blob_dir's (or the database's) file system new uploads get
    // 507; 0 = never refuse.
    std::uint64_t min_free_bytes = 256ull * 1024 * 1024;
    duration disk_check_interval = std::chrono::seconds(10);  // disk metrics sampled this often
};

// How long things are kept (gateway/core/reaper.hpp); 0 = forever.
struct retention_settings {
    duration uploads = std::chrono::hours(24 * 7);      // source files, from their upload
    duration outputs = std::chrono::hours(24 * 30);     // produced files, from when they were made
    duration tasks = std::chrono::hours(24 * 90);       // final tasks, from their last change
    duration tombstones = std::chrono::hours(24 * 90);  // "expired" answers for deleted files
    duration interval = std::chrono::minutes(1);
    int batch = 100;
};

struct api_settings {
    std::uint64_t max_upload_bytes = 512ull * 1024 * 1024;
    std::uint64_t max_json_bytes = 256 * 1024;
    duration idempotency_retention = std::chrono::hours(24);
    std::string public_base_url;  // absolute file URLs in tasks and events; "" = relative
    std::string default_provider = "sandbox";
    std::string url_signing_key;                           // secret; "" = random per process
    duration signed_url_lifetime = std::chrono::hours(1);  // signed file links in task JSON
    duration sse_keep_alive = std::chrono::seconds(15);    // comment line on an idle SSE stream
    // Web origins whose pages may call the API with a key (CORS); "*" any. /v1/files always.
    std::vector<std::string> cors_allow_origins;
};

struct engine_settings {
    int workers = 2;  // threads for blocking work (audio, files)
    duration poll_interval = std::chrono::milliseconds(500);
    duration lease = std::chrono::minutes(2);
    int batch = 256;
    int max_job_failures = 5;  // failed runs in a row before a job fails its task (internal)
};

// Each provider's own settings block (providers.<name>), parsed by the provider's descriptor
// (gateway/config/provider_config.hpp); the gateway sees only `enabled` and `price`. Loading
// fills in every known provider, with its defaults when the file has no block for it.
class provider_config;
using providers_settings = std::map<std::string, std::shared_ptr<const provider_config>>;

// Outbound webhooks (Standard Webhooks) from the outbox.
struct webhooks_settings {
    std::vector<duration> retry_schedule = {std::chrono::seconds(5),  std::chrono::minutes(5),
                                            std::chrono::minutes(30), std::chrono::hours(2),
                                            std::chrono::hours(5),    std::chrono::hours(10),
                                            std::chrono::hours(10)};
    double jitter = 0.1;
    duration timeout = std::chrono::seconds(15);
    duration max_retry_after = std::chrono::hours(1);
    int concurrency = 64;
    int batch = 64;
    duration lease = std::chrono::minutes(1);
};

// Fetching user-given URLs (audio_url): only public addresses, unless allow-listed.
struct fetch_settings {
    std::vector<std::string> allow_cidrs;        // e.g. 127.0.0.1/32 in tests
    std::vector<int> allowed_ports = {80, 443};  // empty = any port
    duration timeout = std::chrono::minutes(2);
};

// Host name resolution for every outbound call (gateway/net/dns.hpp).
struct dns_settings {
    int threads = 4;                                // lookups at once
    duration cache_ttl = std::chrono::seconds(30);  // 0: no cache
    int cache_entries = 4096;
};

// The client every provider call goes through.
struct upstream_settings {
    duration connect_timeout = std::chrono::seconds(5);
    duration request_timeout = std::chrono::seconds(30);
    std::uint64_t max_response_bytes = 8 * 1024 * 1024;
    std::size_t max_idle_per_host = 8;
    bool allow_plain_http = false;  // http:// upstreams (tests and local fakes only)
    std::string ca_file;            // extra trusted CA bundle (PEM)
};

struct route_entry_settings {
    std::string provider;
    double weight = 0;  // > 0: a candidate for the first pick
};

struct route_settings {
    std::vector<route_entry_settings> chain;
    bool regenerate = false;  // a task that failed after acceptance may be made again elsewhere
};

struct routing_settings {
    std::string default_route;  // "" = the one-provider chain [api.default_provider]
    std::map<std::string, route_settings> routes;
};

struct class_retry_settings {
    int max_attempts = 1;  // at one provider, the first try included
    bool failover = true;
    duration initial = std::chrono::seconds(1);
    duration max = std::chrono::seconds(30);
    double multiplier = 2;
    double jitter = 0.5;
};

struct retry_settings {
    int attempt_budget = 6;
    duration deadline = std::chrono::minutes(30);
    duration attempt_deadline = std::chrono::minutes(30);  // an accepted attempt, from its submit
    class_retry_settings transient{3, true, std::chrono::seconds(1), std::chrono::seconds(30),
                                   2, 0.5};
    class_retry_settings rate_limited{4, true, std::chrono::seconds(2), std::chrono::seconds(60),
                                      2, 0.5};
    class_retry_settings quota{1, true, std::chrono::seconds(1), std::chrono::seconds(30), 2, 0.5};
    class_retry_settings credential{1, true, std::chrono::seconds(1), std::chrono::seconds(30),
                                    2, 0.5};
    class_retry_settings rejected{1, false, std::chrono::seconds(1), std::chrono::seconds(30),
                                  2, 0.5};
    class_retry_settings unknown{1, false, std::chrono::seconds(1), std::chrono::seconds(30),
                                 2, 0.5};
};

struct breaker_settings {
    int consecutive_failures = 5;
    double failure_ratio = 0.5;
    int min_requests = 10;
    duration window = std::chrono::seconds(60);
    duration open = std::chrono::seconds(30);
    duration max_open = std::chrono::minutes(10);
    int half_open_probes = 1;
    int max_concurrency = 0;  // calls in flight per provider per replica; 0 = unlimited
};

// Outputs a provider reports by URL are mirrored into the blob store (core/mirror.hpp).
struct mirror_settings {
    bool enabled = true;
    std::uint64_t max_bytes = 512ull * 1024 * 1024;  // one file
    duration timeout = std::chrono::minutes(2);      // one download
    duration deadline = std::chrono::minutes(10);    // from the report, retries included
    duration initial_backoff = std::chrono::seconds(1);
    duration max_backoff = std::chrono::seconds(30);
    bool fail_output = false;  // a mirror that never succeeds fails its output (else: ready,
                               // served from provider_url, with mirror_failed)
};

struct outputs_settings {
    mirror_settings mirror;
    bool verify = true;  // decode every output and report what it holds (audio/verify.hpp)
};

struct credits_settings {
    std::string admin_key;  // secret; "" = POST /v1/admin/credits disabled
};

struct settings {
    server_settings server;
    limits_settings limits;
    log_settings log;
    std::vector<tenant_settings> tenants;
    storage_settings storage;
    api_settings api;
    engine_settings engine;
    providers_settings providers;
    upstream_settings upstream;
    fetch_settings fetch;
    dns_settings dns;
    webhooks_settings webhooks;
    routing_settings routing;
    retry_settings retry;
    breaker_settings breakers;
    credits_settings credits;
    retention_settings retention;
    outputs_settings outputs;
};

}  // namespace segue::config

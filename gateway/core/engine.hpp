#pragma once
// The task engine: claims due jobs (submit, poll) from the store under a lease, drives each
// task through its provider, and applies the provider's normalized updates to the task, its
// outputs and attempts, appending the events of every change in the same transaction.
// Any replica may run any job; a replica that dies leaves leases that expire.

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <memory>
#include <string>

#include "gateway/config/settings.hpp"
#include "gateway/store/store.hpp"

namespace boost::asio {
class io_context;
}
namespace boost::json {
class object;
}
namespace segue::metrics {
class registry;
}
namespace segue::runtime {
class blocking_pool;
}
namespace segue::store {
class db;
class blob_store;
}  // namespace segue::store
namespace segue::net {
class http_client;
struct url_policy;
}  // namespace segue::net
namespace segue::providers {
class registry;
struct inbound_webhook;
}  // namespace segue::providers

namespace segue::core {

struct extend_request;

class engine {
  public:
    // Uploads are read from `blobs` (a local copy for the provider), and files providers
    // produce are put there.
    engine(boost::asio::io_context& ioc, store::db& db, store::blob_store& blobs,
           providers::registry& providers, runtime::blocking_pool& blocking,
           const config::settings& settings, metrics::registry& metrics,
           net::http_client* http = nullptr, net::http_client* fetch = nullptr,
           std::shared_ptr<const net::url_policy> url_policy = {});
    ~engine();
    engine(const engine&) = delete;
    engine& operator=(const engine&) = delete;

    void start();
    // A job was scheduled by this process: look for due work now. Thread-safe.
    void notify();
    // Stops claiming new jobs and waits (up to `deadline`) for running ones. Their leases
    // expire on their own if they do not finish.
    boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline);

    enum class webhook_outcome { applied, ignored, unknown_token, rejected };
    // An inbound provider webhook on /v1/providers/{provider}/webhooks/{token}: finds the
    // attempt by its callback token, lets the provider transform the payload and applies it.
    // Unknown tokens change nothing. `error` says why a payload was rejected.
    boost::asio::awaitable<webhook_outcome> handle_webhook(std::string provider, std::string token,
                                                           providers::inbound_webhook hook,
                                                           std::string* error);

    enum class cancel_outcome { canceled, not_found, already_final };
    // Cancels a task of `tenant`: status canceled, extension.canceled, jobs removed.
    boost::asio::awaitable<cancel_outcome> cancel(const std::string& task_id,
                                                  const std::string& tenant);

    // Writes a new task inside the caller's transaction: the task row (queued), its pending
    // outputs, the extension.queued event and the submit job. The caller commits it (with its
    // idempotency record), then calls notify().
    // `ctx`, when given, is event_context_of(the task's request), made before the
    // transaction; otherwise the stored request JSON is parsed inside it.
    struct event_context;
    static void create_task(store::transaction& tx, const store::task_row& task,
                            const event_context* ctx = nullptr);

    // What each event of a task takes from its request: the metadata it carries and the
    // webhook_url it is delivered to. Parsing the request for it costs more than writing the
    // event, so callers on the create path build it once, outside the store's writer.
    struct event_context {
        std::string metadata_json;  // the request's metadata object as JSON text, "" if none
        std::string webhook_url;    // "" if none
    };
    static event_context event_context_of(const std::string& request_json);
    static event_context event_context_of(const extend_request& req);  // no parsing

    // Appends an event of `type` for `task` with `data` (task_id, status, provider and the
    // request's metadata are added) and, when the task has a webhook_url, its delivery row.
    static store::event_row append_event(store::transaction& tx, const store::task_row& task,
                                         std::string_view type, boost::json::object data,
                                         const event_context* ctx = nullptr);

    // The providers, their capabilities, price and circuit breaker state, as a JSON array
    // (GET /v1/providers).
    std::string providers_json() const;

    struct impl;

  private:
    std::shared_ptr<impl> impl_;
};

}  // namespace segue::core

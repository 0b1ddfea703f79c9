#pragma once
// The task engine: claims due jobs (submit, poll) from the store under a lease, drives each
// task through its provider, and applies the provider's normalized updates to the task, its
// outputs and attempts, appending the events of every change in the same transaction.
// Any replica may run any job; a replica that dies leaves leases that expire.

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>

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
namespace segue::events {
class event_hub;
}

namespace segue::core {

struct extend_request;
class circuit_breaker;

class engine {
  public:
    struct impl;
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
    // Before start(): the hub that wakes an inbound webhook waiting for its submit's answer
    // (handle_webhook) when the task's next events commit. Without one, it reads on a timer.
    void set_event_hub(events::event_hub* hub);
    // Stops claiming new jobs and waits (up to `deadline`) for running ones. Their leases
    // expire on their own if they do not finish.
    boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline);

    enum class webhook_outcome { applied, ignored, unknown_token, rejected };
    // How long an inbound webhook that names what its attempt does not know yet (it overtook
    // the submit's answer) waits for the attempt to learn it before it is refused.
    static constexpr std::chrono::milliseconds early_webhook_wait{3000};
    // An inbound provider webhook on /v1/providers/{provider}/webhooks/{token}: finds the
    // attempt by its callback token, lets the provider transform the payload and applies it.
    // Unknown tokens change nothing. `error` says why a payload was rejected.
    boost::asio::awaitable<webhook_outcome> handle_webhook(std::string provider, std::string token,
                                                           providers::inbound_webhook hook,
                                                           std::string* error);

    // finished: every output was ready already, so nothing was canceled; the task stopped
    // waiting for what its provider sends on its own (lyrics, a cover) and finished as it
    // would have at its attempt's deadline (succeeded; or, while its own cover is still being
    // copied, when that copy ends).
    enum class cancel_outcome { canceled, not_found, already_final, finished };
    // Cancels a task of `tenant`: status canceled, each output not yet ready canceled, with
    // an extension.output.failed of its own (error "the task was canceled"), then
    // extension.canceled; jobs removed.
    boost::asio::awaitable<cancel_outcome> cancel(const std::string& task_id,
                                                  const std::string& tenant);

    // A new task's submit job handed to this process's engine in memory: reserve() a slot
    // before the create's transaction, give the handoff to create_task (the job is written
    // leased to this engine, until the store's clock + engine.lease, fence 1), and after the
    // commit hand_off() it with the task row: it runs at once (no claim round, no re-read),
    // renewed, excluded from this process's claims and stopped like any claimed job. A crash
    // in between leaves a lease that expires; then any replica claims the job. A handoff not
    // handed off (the transaction failed, or created nothing) frees its slot when destroyed.
    //
    // When the task's provider can take a call now (a slot of its circuit breaker, taken by
    // reserve()), create_task also writes the first attempt's intent ("submitting", its
    // callback token's hash) in the create's transaction: the create's commit is then the one
    // durable write before the provider call, and the handed-off job sends at once. A crash
    // after that commit leaves an attempt that may or may not have reached the provider: it is
    // reconciled like any interrupted submit (never resubmitted blindly). Without the slot (an
    // open circuit, max_concurrency reached) the job writes its intent itself once it has one.
    // A claimed submit job gets the same from its claim: when a slot is free, the claim's
    // commit writes its intent (engine.cpp, claim_intent).
    class handoff {
      public:
        handoff() = default;
        handoff(handoff&& o) noexcept;
        handoff& operator=(handoff&& o) noexcept;
        ~handoff();
        explicit operator bool() const { return engine_ != nullptr; }

      private:
        friend class engine;
        std::shared_ptr<engine::impl> engine_;
        std::string owner_;
        store::millis lease_ms_ = 0;
        std::int64_t job_id_ = 0;  // set by create_task
        // The provider call's slot in the breaker of `provider_` (released unless handed off).
        circuit_breaker* slot_ = nullptr;
        std::string provider_;
        std::string callback_token_;                // plain; the attempt row holds its SHA-256
        std::optional<store::attempt_row> intent_;  // attempt 1, when create_task wrote it
    };
    // Empty when the engine is at its limit (running + reserved >= engine.batch) or stopping:
    // the create then writes the job unleased (due now) and calls notify(). `provider` is the
    // one the create routes the task to (its task row's provider). Thread-safe.
    handoff reserve(std::string_view provider);
    // After the create's commit: runs the handed-off submit job of `task` (as written by
    // create_task). Does nothing for an empty handoff or one whose create wrote no job.
    // Thread-safe.
    void hand_off(handoff h, const store::task_row& task);

    // Writes a new task inside the caller's transaction: the task row (queued), its pending
    // outputs, the extension.queued event and the submit job. The caller commits it (with its
    // idempotency record), then calls hand_off() when it reserved a handoff (`h`), notify()
    // otherwise.
    // `ctx`, when given, is event_context_of(the task's request), made before the
    // transaction; otherwise the stored request JSON is parsed inside it.
    struct event_context;
    static void create_task(store::transaction& tx, const store::task_row& task,
                            const event_context* ctx = nullptr, handoff* h = nullptr);

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

  private:
    std::shared_ptr<impl> impl_;
};

}  // namespace segue::core

#pragma once
// Webhook delivery from the outbox (Standard Webhooks, https://www.standardwebhooks.com).
//
// Every event of a task with a webhook_url has a delivery row, written in the same transaction
// as the event (core::engine::append_event). The dispatcher claims due deliveries under a lease
// (several replicas never send one delivery at the same time; a dead replica's leases expire),
// POSTs {"type", "timestamp", "data"} signed with the tenant's secrets, and records the outcome:
//   2xx                  delivered
//   410                  dead, and every pending delivery of the tenant to that URL with it; new
//                        ones are created dead until a redelivery (the receiver said "stop")
//   anything else        retried after webhooks.retry_schedule[attempt] (+- jitter; a 429/503
//   (3xx never followed, Retry-After lengthens it up to webhooks.max_retry_after); dead after
//   4xx, 5xx, timeout,   the last one (GET /v1/deliveries?status=dead, then redeliver)
//   refused address)
// A task's events reach one endpoint in seq order: only the head of each (task, url) queue is
// claimable (store::transaction::claim_deliveries). Different tasks never wait for each other.

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>

#include "gateway/config/settings.hpp"

namespace boost::asio {
class io_context;
}
namespace segue::metrics {
class registry;
}
namespace segue::store {
class db;
struct delivery_row;
}  // namespace segue::store
namespace segue::net {
class http_client;
}

namespace segue::events {

class webhook_formats;

// The delay before retry number `attempts` (1 = the first retry) with `unit_random` in [0, 1)
// spreading it by +-jitter; nullopt once the schedule is exhausted (the delivery is dead). A
// Retry-After (ms) only ever lengthens the delay, up to max_retry_after.
std::optional<std::int64_t> retry_delay_ms(const config::webhooks_settings& w, int attempts,
                                           double unit_random,
                                           std::optional<std::int64_t> retry_after_ms = {});

// The JSON body of a delivery: {"type", "timestamp" (RFC 3339, when the event happened),
// "data" (the event's data plus its "event_id" and "seq")}.
std::string delivery_body(const store::delivery_row& d);

class dispatcher {
  public:
    // `client` sends the deliveries; it must carry the URL guard (check_endpoints) and must
    // outlive the dispatcher's run. `formats` (optional, outliving the run): the delivery formats
    // a task may name (webhook_format.hpp); a task naming none, or one not registered here,
    // gets Segue's own body.
    dispatcher(boost::asio::io_context& ioc, store::db& db, const config::settings& settings,
               metrics::registry& metrics, net::http_client& client,
               const webhook_formats* formats = nullptr);
    ~dispatcher();
    dispatcher(const dispatcher&) = delete;
    dispatcher& operator=(const dispatcher&) = delete;

    void start();
    // A delivery became due in this process (the store's outbox listener). Thread-safe.
    void notify();
    // Stops claiming and waits (up to `deadline`) for deliveries in flight; leases of the rest
    // expire and another replica (or the next start) sends them.
    boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline);

    struct impl;

  private:
    std::shared_ptr<impl> impl_;
};

}  // namespace segue::events

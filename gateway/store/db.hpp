#pragma once
// Awaitable access to the store for coroutines on IO threads: the unit of work runs on a store
// thread, the coroutine resumes on its own executor once it is committed (or rolled back).

#include <boost/asio/awaitable.hpp>

#include <chrono>

#include "gateway/store/store.hpp"

namespace segue::metrics {
class registry;
class histogram;
class counter;
}  // namespace segue::metrics

namespace segue::store {

// The Retry-After (seconds) for a client refused because the database is out of reach or too
// busy: about 5 s, spread per answer (3..7) so refused clients do not come back together.
int outage_retry_after_s();

class db {
  public:
    // Writes go to `lane` (store.hpp): the API's db is requests, the engine's and the
    // dispatcher's is work.
    // `fail_fast` (the API's): while the store cannot reach its database (store::unreachable),
    // a unit is refused at once with util::unavailable_error, before it is queued, instead of
    // waiting for the database with its client: the server answers 503 with Retry-After, and
    // nothing was done. The engine's units wait: their results must not be dropped.
    // `give_up_after` (the API's; 0 = never): a unit still queued that long after it was
    // submitted, the database out of reach or its writer stuck, is not run, and fails as
    // fail_fast's refusal does (503 with Retry-After; store::submit_write_by), so a request
    // that came just before an outage was noticed is not held until the database is back.
    db(store& s, metrics::registry& m, write_lane lane = write_lane::requests,
       bool fail_fast = false,
       std::chrono::milliseconds give_up_after = std::chrono::milliseconds::zero());
    // Rethrows the unit's exception (after rollback) or a store_error.
    boost::asio::awaitable<void> write(store::unit fn);
    boost::asio::awaitable<void> read(store::unit fn);
    // As write, the unit queued before every unit waiting in the lane (store::submit_write_first):
    // the lease workers' liveness beats and lease renewals, never held up by a backlog of work.
    // Not for an API request: it has no give-up time.
    boost::asio::awaitable<void> write_first(store::unit fn);
    // What `fail_fast` does before each unit, for a request whose work goes through another
    // handle (a cancel is the engine's): throws util::unavailable_error while the database is
    // out of reach; does nothing on a handle without `fail_fast`.
    void refuse_if_unreachable();
    store& raw() noexcept { return store_; }

  private:
    enum class op { read, write, write_first };
    boost::asio::awaitable<void> run(op kind, store::unit fn);
    store& store_;
    write_lane lane_;
    bool fail_fast_;
    std::chrono::milliseconds give_up_after_;
    metrics::histogram& write_latency_;
    metrics::histogram& read_latency_;
    metrics::counter& write_errors_;
    metrics::counter& read_errors_;
};

}  // namespace segue::store

#pragma once
// One claim loop for all work that lives in the store as rows with a due time and a lease:
// the engine's jobs and the dispatcher's webhook deliveries.
//
//   claim    due rows under a fenced lease (store::lease_ref): every claim bumps the row's
//            fencing token, and every write of a claim names it, so a claim whose lease expired
//            and was taken again (by another replica, or by this very process) writes nothing
//   run      each claimed row as its own coroutine on the worker's io_context
//   renew    the leases of running work on a heartbeat (every lease/3), so a slow provider call
//            never lets its lease expire under it; a renewal that finds the lease gone marks
//            the work `lost` (it should stop before any further upstream call), unless the
//            work released the row itself (`released`: it is only finishing). Renewals (and
//            liveness beats) are queued before the work waiting in the store's lane
//            (db::write_first): a backlog of writes does not outlast a lease or the liveness
//            timeout, only the group in flight is waited for
//   exclude  the rows this process is running from its own claims: even if a renewal failed,
//            one process never runs the same row twice at once
//   wake     at once on notify() (thread-safe), or at the next due time, or every
//            poll_interval for work written by other replicas
//   adopt    work this process leased to itself while writing it (a hand-off: reserve() a
//            slot first, then adopt() the row once its lease is committed): it runs at once,
//            renewed, excluded and stopped like claimed work, without a claim round
//   lanes    optionally, work of different kinds in lanes (timing::lanes), each holding at
//            most timing::lane_cap of the slots: a lane whose work is slow (e.g. queued for
//            blocking threads) leaves the rest to the others, so it never starves them
//   liveness optionally (timing::liveness, for replicas sharing a store), shows the owner is
//            alive every liveness/3 and frees the leases of owners that stopped showing it
//            for `liveness` (store::transaction::free_dead_owners): a killed replica's work is
//            taken up after about `liveness`, not after its leases' full length. A worker
//            judges others only once its own beats have kept their pace for a whole
//            `liveness`: after a stall (of it, or of the store, which every replica then
//            missed its beats through alike) each other replica gets that long to show
//            itself again, and so does everyone at the worker's start. A worker
//            that finds it was taken for dead renews its running leases at once, so work
//            whose row was claimed again is marked lost before its next upstream call.
//
// Everything but notify() runs on the io_context given at construction, which must be run by
// one thread (runtime::io_pool's contexts are): the worker's state needs no locks.

#include <boost/asio/awaitable.hpp>

#include <atomic>
#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <utility>
#include <vector>

#include "gateway/store/store.hpp"

namespace boost::asio {
class io_context;
}
namespace segue::store {
class db;
}
namespace segue::metrics {
class registry;
}

namespace segue::core {

// What running work knows of its lease. Owned by the worker; valid while the work runs.
struct lease_state {
    std::string id;          // the row's id (jobs: the number as text)
    std::int64_t fence = 0;  // the claim's fencing token
    bool lost = false;       // a renewal found the lease gone: every write of this claim will
                             // be refused, so stop before anything irreversible
    // When the lease ends by the store's clock, as of the claim or the last renewal seen to
    // commit; 0 when unknown. A write refused before this time was refused by a claim that
    // should not exist (two claims of one live lease); after it, the lease had expired.
    store::millis until = 0;
    // With liveness (replicas sharing a store), a lease also ends when its owner is taken for
    // dead. `alive_until`: when the owner's last liveness beat seen to commit lets others take
    // it for dead (0: unknown, or no liveness); before it, no one can. `owner_freed`: a beat
    // since the claim found the owner taken for dead (its leases freed, maybe claimed again).
    // Set by the worker on its io_context, as `until` is.
    store::millis alive_until = 0;
    bool owner_freed = false;
    int lane = 0;  // item::lane
    // The work let go of its row itself (completed, rescheduled or failed it: the store sets
    // this through store::lease_ref::released). A renewal that no longer finds the row is then
    // no loss: the work is only finishing. Mutable: the work holds its state as const.
    mutable std::atomic<bool> released{false};

    // True when a write refused at `at` (the store's clock) may be explained by the lease's end:
    // `until` passed, or the owner may have been taken for dead. False means two claims of
    // one live lease: a bug.
    bool may_have_ended_by(store::millis at) const {
        return until <= 0 || at > until || owner_freed || (alive_until > 0 && at > alive_until);
    }
};

class lease_worker {
  public:
    using held = std::vector<std::pair<std::string, std::int64_t>>;  // (id, fence)

    struct item {
        std::string id;
        std::int64_t fence = 0;
        store::millis until = 0;  // the lease's end by the store's clock, if known
        int lane = 0;             // < timing::lanes
        std::function<boost::asio::awaitable<void>(std::shared_ptr<const lease_state>)> run;
    };

    struct hooks {
        std::string name;  // for logs ("engine", "dispatcher")
        // Inside a write unit: claims up to `limit` due rows (not in `exclude`) for `owner`
        // until now + lease_ms, of which at most lane_limits[i] in lane i (one entry per lane,
        // each <= limit). When it finds fewer than `limit`, it sets `next_due` to the earliest
        // time more work becomes claimable (if any).
        std::function<std::vector<item>(
            store::transaction& tx, const std::string& owner, store::millis now,
            store::millis lease_ms, int limit, const std::vector<int>& lane_limits,
            const std::vector<std::string>& exclude, std::optional<store::millis>& next_due)>
            claim;
        // Inside a write unit: extends the leases `owner` still holds to `until`; returns the
        // ids it no longer holds.
        std::function<std::vector<std::string>(store::transaction& tx, const std::string& owner,
                                               const held& leases, store::millis until)>
            renew;
        // How many more rows may be claimed now, given how many run (default: batch - running).
        std::function<int(int running)> slots;
        // Before each claim round (e.g. refresh gauges). Optional.
        std::function<boost::asio::awaitable<void>()> before_claim;
        // After the number of running rows changed (e.g. a gauge). Optional.
        std::function<void(int running)> on_running;
        // A renewal found a lease gone. Optional (for a metric; it is logged either way).
        std::function<void(const std::string& id)> on_lost;
        // A liveness beat took owners for dead and freed their leases. Optional (for metrics:
        // count_freed_leases; it is logged either way).
        std::function<void(const store::transaction::freed_leases&)> on_freed;
    };

    struct timing {
        std::chrono::milliseconds lease{120'000};
        std::chrono::milliseconds poll_interval{500};
        // How often running leases are renewed; 0: lease / 3.
        std::chrono::milliseconds heartbeat{0};
        // Slots reserve() leaves to claim rounds: a flood of hand-offs never starves the rows
        // that only a claim runs (e.g. polls, retries, work of other replicas).
        int keep_for_claims = 0;
        // Lanes of work (item::lane), 1 to max_lanes; with lane_cap > 0, no lane holds more
        // than lane_cap slots (running and reserved), so every other lane keeps the rest.
        int lanes = 1;
        int lane_cap = 0;
        // An owner that has not shown it is alive for this long is taken for dead, and its
        // leases are freed; 0: no liveness beat (one process per store, as SQLite).
        std::chrono::milliseconds liveness{0};
    };
    static constexpr int max_lanes = 2;

    lease_worker(boost::asio::io_context& ioc, store::db& db, std::string owner, timing t, hooks h);
    ~lease_worker();
    lease_worker(const lease_worker&) = delete;
    lease_worker& operator=(const lease_worker&) = delete;

    void start();
    // Work became due in this process: claim now. Thread-safe.
    void notify();
    // A slot for a hand-off in `lane`, if running + reserved work is below the limit
    // (hooks::slots) less timing::keep_for_claims, and the lane below timing::lane_cap.
    // Thread-safe. A reservation ends with adopt() (of an item of the same lane) or
    // unreserve(lane); claim rounds leave its slot free meanwhile.
    bool reserve(int lane = 0);
    void unreserve(int lane = 0);
    // Runs `it` (a row this process leased to itself, committed) at once on the worker's
    // io_context, as if claimed. Ends a reservation. Thread-safe. reserve() refuses once stop()
    // began; a row reserved before is still run (stop() waits for it like running work).
    void adopt(item it);
    // Stops claiming, waits (up to `deadline`) for running work while still renewing its
    // leases, then stops renewing (the leases of what still runs expire on their own).
    boost::asio::awaitable<void> stop(std::chrono::milliseconds deadline);

    struct impl;

  private:
    std::shared_ptr<impl> impl_;
};

// hooks::renew for work that is rows of the jobs table (ids are job ids as text): renews them
// with store::transaction::renew_jobs.
std::vector<std::string> renew_job_leases(store::transaction& tx, const std::string& owner,
                                          const lease_worker::held& leases, store::millis until);

// hooks::on_freed counting into `m`: segue_lease_owners_freed_total (owners forgotten: an
// engine's or a dispatcher's, two per replica; a replica that stopped gracefully is forgotten
// too, holding nothing) and segue_leases_freed_total{kind="job"|"delivery"} (work taken up).
// Either worker of a replica may free a dead replica's job and delivery leases: each is counted
// once, by the one that freed it.
std::function<void(const store::transaction::freed_leases&)> count_freed_leases(
    metrics::registry& m);

}  // namespace segue::core

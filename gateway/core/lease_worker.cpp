#include "gateway/core/lease_worker.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <algorithm>
#include <array>
#include <atomic>
#include <limits>
#include <map>

#include "gateway/core/json.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/store/db.hpp"

namespace segue::core {

namespace asio = boost::asio;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

struct lease_worker::impl : std::enable_shared_from_this<lease_worker::impl> {
    impl(asio::io_context& io, store::db& d, std::string o, timing t, hooks h)
        : ioc(io),
          db(d),
          owner(std::move(o)),
          time(t),
          hk(std::move(h)),
          timer(io),
          beat_timer(io),
          live_timer(io) {
        if (time.heartbeat.count() <= 0)
            time.heartbeat = std::max(std::chrono::milliseconds(1), time.lease / 3);
        time.lanes = std::clamp(time.lanes, 1, max_lanes);
    }

    // Slots lane `l` may still take under timing::lane_cap (its running and reserved work).
    int lane_room(int l) const {
        if (time.lane_cap <= 0)
            return std::numeric_limits<int>::max();
        return time.lane_cap - lane_running[l].load() - lane_reserved[l].load();
    }

    asio::awaitable<void> loop();
    asio::awaitable<void> heartbeat();
    asio::awaitable<void> liveness();
    void spawn(item it);
    void wake_now() {
        wake = true;
        timer.cancel();
    }

    asio::io_context& ioc;
    store::db& db;
    const std::string owner;
    timing time;
    hooks hk;
    asio::steady_timer timer;
    asio::steady_timer beat_timer;
    asio::steady_timer live_timer;
    // The store's clock at this worker's last liveness beat that committed (0 before the
    // first), and at the first of the beats since then that kept their pace (see liveness()).
    store::millis last_alive = 0;
    store::millis pace_since = 0;
    bool started = false;
    bool stopping = false;
    bool beating = true;
    bool wake = false;
    std::map<std::string, std::shared_ptr<lease_state>> running;
    // For reserve() on other threads: running.size() as of the last change, and the slots
    // reserved for hand-offs not adopted yet.
    std::atomic<int> running_count{0};
    std::atomic<int> reserved{0};
    // The same per lane.
    std::array<std::atomic<int>, max_lanes> lane_running{};
    std::array<std::atomic<int>, max_lanes> lane_reserved{};
    std::atomic<bool> stopped{false};
};

void lease_worker::impl::spawn(item it) {
    auto self = shared_from_this();
    auto st = std::make_shared<lease_state>();
    st->id = it.id;
    st->fence = it.fence;
    st->until = it.until;
    st->alive_until = last_alive > 0 && time.liveness.count() > 0
                          ? last_alive + static_cast<store::millis>(time.liveness.count())
                          : 0;
    st->lane = std::clamp(it.lane, 0, time.lanes - 1);
    if (auto i = running.find(it.id); i != running.end())
        lane_running[i->second->lane].fetch_sub(1);  // an older claim's entry, replaced
    running[it.id] = st;
    lane_running[st->lane].fetch_add(1);
    running_count.store(static_cast<int>(running.size()));
    if (hk.on_running)
        hk.on_running(static_cast<int>(running.size()));
    auto run = std::move(it.run);
    asio::co_spawn(ioc, run(st), [self, st](std::exception_ptr e) {
        // Only this claim's entry: a newer claim of the same id (after this one was lost and
        // the row came back) has its own.
        if (auto i = self->running.find(st->id); i != self->running.end() && i->second == st) {
            self->running.erase(i);
            self->lane_running[st->lane].fetch_sub(1);
        }
        self->running_count.store(static_cast<int>(self->running.size()));
        if (self->hk.on_running)
            self->hk.on_running(static_cast<int>(self->running.size()));
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& ex) {
                log::error("leased work crashed",
                           {{"worker", self->hk.name}, {"id", st->id}, {"error", ex.what()}});
            }
        }
        // A slot is free (and, for deliveries, the next of a queue may be its head now).
        self->wake_now();
    });
}

asio::awaitable<void> lease_worker::impl::loop() {
    auto self = shared_from_this();
    while (!stopping) {
        wake = false;
        if (hk.before_claim)
            co_await hk.before_claim();
        // Reserved slots are taken: their rows arrive by adopt().
        const int now_running = static_cast<int>(running.size()) + reserved.load();
        int slots = hk.slots ? hk.slots(now_running) : 0;
        // Each lane gets what is free of the slots, up to its own room; a full lane takes none.
        std::vector<int> lane_limits(static_cast<std::size_t>(time.lanes));
        long room = 0;
        for (int l = 0; l < time.lanes; ++l) {
            lane_limits[static_cast<std::size_t>(l)] =
                std::clamp(lane_room(l), 0, std::max(slots, 0));
            room += lane_limits[static_cast<std::size_t>(l)];
        }
        slots = static_cast<int>(std::min<long>(slots, room));
        std::vector<item> claimed;
        std::optional<store::millis> next_due;
        const auto now = now_ms();
        if (slots > 0) {
            std::vector<std::string> exclude;
            exclude.reserve(running.size());
            for (const auto& [id, st] : running)
                exclude.push_back(id);
            try {
                const auto lease = static_cast<store::millis>(time.lease.count());
                co_await db.write([&](store::transaction& tx) {
                    // Lease times by the store's clock (the database's, shared by replicas);
                    // the due time it reports is turned into ours by the same offset.
                    const auto store_now = tx.clock_ms();
                    claimed = hk.claim(tx, owner, store_now, lease, slots, lane_limits, exclude,
                                       next_due);
                    if (next_due)
                        *next_due += now - store_now;
                });
            } catch (const std::exception& e) {
                // Nothing of it committed (or its outcome is unknown): its rows are not ours,
                // and what a run of the unit built for them goes (e.g. breaker slots).
                claimed.clear();
                log::error("claiming leased work failed",
                           {{"worker", hk.name}, {"error", e.what()}});
            }
        }
        const bool full = !claimed.empty() && static_cast<int>(claimed.size()) == slots;
        for (auto& it : claimed)
            spawn(std::move(it));
        if (stopping)
            break;
        if (full || wake)
            continue;
        auto wait = time.poll_interval;
        // A due time already past after a claim round can only be our own running work (the
        // claim excluded it): waiting for it would spin.
        if (next_due && *next_due > now && slots > 0)
            wait = std::min(wait, std::chrono::milliseconds(*next_due - now_ms()));
        if (wait.count() < 0)
            wait = std::chrono::milliseconds(0);
        timer.expires_after(wait);
        co_await timer.async_wait(use_tuple);
    }
}

asio::awaitable<void> lease_worker::impl::heartbeat() {
    auto self = shared_from_this();
    while (beating) {
        beat_timer.expires_after(time.heartbeat);
        co_await beat_timer.async_wait(use_tuple);
        if (!beating)
            break;
        held leases;
        for (const auto& [id, st] : running)
            if (!st->lost && !st->released.load())
                leases.emplace_back(id, st->fence);
        if (leases.empty())
            continue;
        std::vector<std::string> lost;
        store::millis until = 0;
        try {
            const auto lease = static_cast<store::millis>(time.lease.count());
            // Before the work waiting in the lane: a backlog longer than the lease must not let
            // the leases of running work expire.
            co_await db.write_first([&](store::transaction& tx) {
                until = tx.clock_ms() + lease;
                lost = hk.renew(tx, owner, leases, until);
            });
        } catch (const std::exception& e) {
            // The next beat tries again; the lease lasts until `lease` after the last renewal.
            log::error("renewing leases failed", {{"worker", hk.name}, {"error", e.what()}});
            continue;
        }
        // The renewed leases now end at `until`: those of the same claims still running.
        for (const auto& [id, fence] : leases) {
            auto i = running.find(id);
            if (i != running.end() && i->second->fence == fence &&
                std::find(lost.begin(), lost.end(), id) == lost.end())
                i->second->until = std::max(i->second->until, until);
        }
        for (const auto& id : lost) {
            auto i = running.find(id);
            if (i == running.end())
                continue;  // finished meanwhile (it completed or released the row itself)
            // Renewals are only sent for claims that were running when the beat started, and
            // those are still the entries here unless they finished: a finished claim's row may
            // be gone, which is not a loss.
            const bool same = std::any_of(leases.begin(), leases.end(), [&](const auto& l) {
                return l.first == id && l.second == i->second->fence;
            });
            if (!same || i->second->lost || i->second->released.load())
                continue;
            i->second->lost = true;
            log::warn("lease lost while its work runs; its writes will be refused",
                      {{"worker", hk.name}, {"id", id}});
            if (hk.on_lost)
                hk.on_lost(id);
        }
    }
}

asio::awaitable<void> lease_worker::impl::liveness() {
    auto self = shared_from_this();
    const auto live = static_cast<store::millis>(time.liveness.count());
    const auto every = std::max(std::chrono::milliseconds(1), time.liveness / 3);
    while (beating) {
        store::transaction::freed_leases freed;
        bool known = true;
        // As of the last beat that committed: a unit the store runs again (its batch aborted)
        // judges by them too, not by its own first run.
        const store::millis prev = last_alive;
        const store::millis since = pace_since;
        store::millis beat_at = 0, pace_from = 0;
        try {
            // Before the work waiting in the lane: a replica whose lane is backed up for longer
            // than `live` is busy, not dead.
            co_await db.write_first([&](store::transaction& tx) {
                const auto now = tx.clock_ms();
                beat_at = now;
                known = tx.mark_owner_alive(owner, now + live);
                // A beat more than two beats after the last one ends a stall of this worker or
                // of the store, which the others may have shared: each of them gets a whole
                // `live` after it to show itself before this worker judges anyone (so does
                // everyone at this worker's start).
                const bool in_pace = prev != 0 && now - prev <= 2 * every.count();
                pace_from = in_pace ? since : now;
                freed = in_pace && now - pace_from >= live ? tx.free_dead_owners(now)
                                                           : decltype(freed){};
            });
            last_alive = beat_at;
            pace_since = pace_from;
            for (auto& [id, st] : running) {
                st->alive_until = beat_at + live;
                if (!known && prev != 0)
                    st->owner_freed = true;
            }
        } catch (const std::exception& e) {
            // Nothing committed (or unknown): the next beat tries again; it comes more than
            // two beats after the last committed one, so judging waits a whole timeout again.
            freed = {};
            known = true;
            log::error("showing this replica alive failed",
                       {{"worker", hk.name}, {"error", e.what()}});
        }
        if (!known && prev != 0) {
            log::warn(
                "another replica took this one for dead (it had not shown it is alive for "
                "replica_timeout) and freed its leases: work it still runs is fenced off",
                {{"worker", hk.name}, {"owner", owner}, {"replica_timeout_ms", live}});
            // Renew now rather than at the next heartbeat: the work whose rows were claimed
            // again learns it is lost before any further upstream call, and the rest keeps
            // its leases (freed, not yet claimed).
            beat_timer.cancel();
        }
        if (!freed.owners.empty()) {
            std::string owners;
            for (const auto& o : freed.owners)
                owners += (owners.empty() ? "" : ",") + o;
            // A replica that stopped gracefully also stops beating, having handed back its
            // work: forgotten with no lease freed, which is no news. Leases freed are.
            const bool took_work = freed.jobs > 0 || freed.deliveries > 0;
            log::write(took_work ? log::level::warn : log::level::info,
                       took_work ? "replicas stopped showing they are alive: their leases are freed"
                                 : "replicas stopped showing they are alive, holding no leases: "
                                   "forgotten (stopped, or died idle)",
                       {{"worker", hk.name},
                        {"owners", owners},
                        {"jobs", freed.jobs},
                        {"deliveries", freed.deliveries},
                        {"replica_timeout_ms", live}});
            if (hk.on_freed)
                hk.on_freed(freed);
            if (freed.jobs > 0 || freed.deliveries > 0)
                wake_now();
        }
        if (!beating)
            break;
        live_timer.expires_after(every);
        co_await live_timer.async_wait(use_tuple);
    }
}

lease_worker::lease_worker(asio::io_context& ioc, store::db& db, std::string owner, timing t,
                           hooks h)
    : impl_(std::make_shared<impl>(ioc, db, std::move(owner), t, std::move(h))) {}

lease_worker::~lease_worker() = default;

namespace {
asio::awaitable<void> run_loop(std::shared_ptr<lease_worker::impl> self) {
    co_await self->loop();
}
asio::awaitable<void> run_heartbeat(std::shared_ptr<lease_worker::impl> self) {
    co_await self->heartbeat();
}
asio::awaitable<void> run_liveness(std::shared_ptr<lease_worker::impl> self) {
    co_await self->liveness();
}
}  // namespace

void lease_worker::start() {
    auto self = impl_;
    asio::post(self->ioc, [self] {
        if (self->started)
            return;
        self->started = true;
        asio::co_spawn(self->ioc, run_loop(self), asio::detached);
        asio::co_spawn(self->ioc, run_heartbeat(self), asio::detached);
        if (self->time.liveness.count() > 0)
            asio::co_spawn(self->ioc, run_liveness(self), asio::detached);
    });
}

void lease_worker::notify() {
    auto self = impl_;
    asio::post(self->ioc, [self] { self->wake_now(); });
}

bool lease_worker::reserve(int lane) {
    auto& s = *impl_;
    if (s.stopped.load() || !s.hk.slots)
        return false;
    lane = std::clamp(lane, 0, s.time.lanes - 1);
    // The lane's slot first, then the total's; each undone if the other is refused.
    int lr = s.lane_reserved[lane].load();
    do {
        if (s.time.lane_cap > 0 && s.lane_running[lane].load() + lr >= s.time.lane_cap)
            return false;
    } while (!s.lane_reserved[lane].compare_exchange_weak(lr, lr + 1));
    int r = s.reserved.load();
    do {
        if (s.hk.slots(s.running_count.load() + r) <= s.time.keep_for_claims) {
            s.lane_reserved[lane].fetch_sub(1);
            return false;
        }
    } while (!s.reserved.compare_exchange_weak(r, r + 1));
    return true;
}

void lease_worker::unreserve(int lane) {
    auto& s = *impl_;
    s.lane_reserved[std::clamp(lane, 0, s.time.lanes - 1)].fetch_sub(1);
    s.reserved.fetch_sub(1);
}

void lease_worker::adopt(item it) {
    auto self = impl_;
    asio::post(self->ioc, [self, it = std::move(it)]() mutable {
        // Even while stopping: stop() waits for it with the rest of the running work (a create
        // that reserved before the stop began commits during the drain), or, once stop() gave
        // up, it runs unrenewed like work that was running then.
        // Claim rounds only take rows whose lease is free or expired: this one's is neither
        // until it is renewed no more, so no claim (here or elsewhere) can have taken it.
        // Counted as running (spawn) before its reservation ends, never as neither.
        const int lane = std::clamp(it.lane, 0, self->time.lanes - 1);
        self->spawn(std::move(it));
        self->lane_reserved[lane].fetch_sub(1);
        self->reserved.fetch_sub(1);
    });
}

asio::awaitable<void> lease_worker::stop(std::chrono::milliseconds deadline) {
    auto self = impl_;
    self->stopping = true;
    self->stopped.store(true);
    self->timer.cancel();
    asio::steady_timer t(self->ioc);
    const auto until = std::chrono::steady_clock::now() + deadline;
    while (!self->running.empty() && std::chrono::steady_clock::now() < until) {
        t.expires_after(std::chrono::milliseconds(20));
        co_await t.async_wait(use_tuple);
    }
    if (!self->running.empty())
        log::warn("stopped with work still running; its leases will expire",
                  {{"worker", self->hk.name}, {"running", static_cast<int>(self->running.size())}});
    self->beating = false;
    self->beat_timer.cancel();
    self->live_timer.cancel();
}

std::vector<std::string> renew_job_leases(store::transaction& tx, const std::string& owner,
                                          const lease_worker::held& leases, store::millis until) {
    std::vector<std::pair<std::int64_t, std::int64_t>> ids;
    ids.reserve(leases.size());
    for (const auto& [id, fence] : leases)
        ids.emplace_back(std::stoll(id), fence);
    std::vector<std::string> lost;
    for (auto id : tx.renew_jobs(owner, ids, until))
        lost.push_back(std::to_string(id));
    return lost;
}

std::function<void(const store::transaction::freed_leases&)> count_freed_leases(
    metrics::registry& m) {
    auto& owners =
        m.counter_family("segue_lease_owners_freed_total",
                         "Lease owners (a replica's engine or dispatcher) forgotten for not "
                         "showing they were alive for storage.postgres.replica_timeout: "
                         "replicas that died, and replicas that stopped (a graceful stop "
                         "hands its work back first: see segue_leases_freed_total).",
                         {})
            .with({});
    auto& leases = m.counter_family("segue_leases_freed_total",
                                    "Leases of jobs and webhook deliveries freed because their "
                                    "owner was taken for dead: work another replica took up.",
                                    {"kind"});
    auto& jobs = leases.with({"job"});
    auto& deliveries = leases.with({"delivery"});
    return [&owners, &jobs, &deliveries](const store::transaction::freed_leases& f) {
        owners.inc(static_cast<double>(f.owners.size()));
        jobs.inc(f.jobs);
        deliveries.inc(f.deliveries);
    };
}

}  // namespace segue::core

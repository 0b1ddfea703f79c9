// The shared lease worker (core::lease_worker) over the real SQLite store: work slower than its
// lease keeps it while the heartbeat renews it (another replica never takes it), and without
// renewals the other replica takes it while the first one's writes are fenced off.
// LeaseWorkerReplicas: replicas on PostgreSQL with the liveness beat: a killed replica's work is
// taken up after about the liveness timeout, long before its lease ends; a store that stalls
// every replica alike makes none of them take the others for dead; a replica taken for dead
// while alive learns within a beat which of its running work was claimed again.

#include <gtest/gtest.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <iostream>
#include <memory>
#include <thread>

#include "gateway/core/lease_worker.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/runtime/io_pool.hpp"
#include "gateway/store/db.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"
#include "tests/support/store_sync.hpp"

using namespace std::chrono_literals;
namespace net = boost::asio;
using segue::core::lease_state;
using segue::core::lease_worker;

namespace {

net::awaitable<void> stop_worker(lease_worker* w) {
    co_await w->stop(2s);
}

class LeaseWorker;

// Polls `cond` every 10 ms until it holds or `limit` passes.
bool wait_for(const std::function<bool()>& cond, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
        if (cond())
            return true;
        std::this_thread::sleep_for(10ms);
    }
    return cond();
}

// A claim hook's body: claims up to `limit` jobs for `who` (none of `exclude`), each an item
// whose work is `run_of(job)`; `next_due` when it found fewer.
template <typename RunOf>
std::vector<lease_worker::item> claim_items(segue::store::transaction& tx, const std::string& who,
                                            segue::store::millis now, segue::store::millis lease_ms,
                                            int limit, const std::vector<std::string>& exclude,
                                            std::optional<segue::store::millis>& next_due,
                                            RunOf run_of) {
    std::vector<std::int64_t> ids;
    for (const auto& id : exclude)
        ids.push_back(std::stoll(id));
    auto jobs = tx.claim_jobs(who, now, lease_ms, limit, ids);
    if (static_cast<int>(jobs.size()) < limit)
        next_due = tx.next_job_due();
    std::vector<lease_worker::item> items;
    for (const auto& j : jobs) {
        lease_worker::item it;
        it.id = std::to_string(j.id);
        it.fence = j.attempts;
        it.until = j.lease_until;
        it.run = run_of(j);
        items.push_back(std::move(it));
    }
    return items;
}
// The work of one claim: a coroutine with its arguments by value (a capturing lambda coroutine
// would outlive its captures).
net::awaitable<void> slow_work(LeaseWorker* t, segue::store::job_row j, std::string who,
                               std::chrono::milliseconds work,
                               std::shared_ptr<const lease_state> l);

// Releases its row first (completes the job with its claim's lease), then goes on for `work`
// (what a run does after its last write: metrics, wake-ups, the next await).
net::awaitable<void> release_then_linger(LeaseWorker* t, segue::store::job_row j, std::string who,
                                         std::chrono::milliseconds work,
                                         std::shared_ptr<const lease_state> l);

// Lane work: a submit ends at once; any other job takes `work`. Counts what runs at once.
net::awaitable<void> lane_work(LeaseWorker* t, segue::store::job_row j, std::string who,
                               std::chrono::milliseconds work,
                               std::shared_ptr<const lease_state> l);

class LeaseWorker : public ::testing::Test {
  public:
    friend net::awaitable<void> lane_work(LeaseWorker*, segue::store::job_row, std::string,
                                          std::chrono::milliseconds,
                                          std::shared_ptr<const lease_state>);
    friend net::awaitable<void> slow_work(LeaseWorker*, segue::store::job_row, std::string,
                                          std::chrono::milliseconds,
                                          std::shared_ptr<const lease_state>);
    friend net::awaitable<void> release_then_linger(LeaseWorker*, segue::store::job_row,
                                                    std::string, std::chrono::milliseconds,
                                                    std::shared_ptr<const lease_state>);

  protected:
  protected:
    void SetUp() override {
        store_ = segue::store::open_sqlite({.path = dir_.file("segue.db")});
        db_ = std::make_unique<segue::store::db>(*store_, metrics_);
        pool_ = std::make_unique<segue::runtime::io_pool>(1);
    }
    void TearDown() override {
        for (auto& w : workers_) {
            std::promise<void> stopped;
            net::co_spawn(pool_->main(), stop_worker(w.get()),
                          [&](std::exception_ptr) { stopped.set_value(); });
            stopped.get_future().wait_for(5s);
        }
        pool_->stop();
        if (thread_.joinable())
            thread_.join();
        workers_.clear();
        store_->close();
    }

    // A worker named `owner` whose work sleeps `work` and then completes the job with its
    // claim's fence, recording whether the store still took the write.
    lease_worker& add_worker(const std::string& owner, std::chrono::milliseconds lease,
                             std::chrono::milliseconds heartbeat, std::chrono::milliseconds work,
                             bool release_first = false) {
        lease_worker::hooks h;
        h.name = owner;
        h.claim = [this, work, owner, release_first](
                      segue::store::transaction& tx, const std::string& who,
                      segue::store::millis now, segue::store::millis lease_ms, int limit,
                      const std::vector<int>& /*one lane*/, const std::vector<std::string>& exclude,
                      std::optional<segue::store::millis>& next_due) {
            return claim_items(
                tx, who, now, lease_ms, limit, exclude, next_due,
                [this, work, who, release_first](const segue::store::job_row& j) {
                    return [this, j, work, who,
                            release_first](std::shared_ptr<const lease_state> l) {
                        return release_first ? release_then_linger(this, j, who, work, std::move(l))
                                             : slow_work(this, j, who, work, std::move(l));
                    };
                });
        };
        h.renew = [this](segue::store::transaction& tx, const std::string& who,
                         const lease_worker::held& held, segue::store::millis until) {
            renewals_++;
            return segue::core::renew_job_leases(tx, who, held, until);
        };
        h.slots = [](int running) { return 4 - running; };
        h.on_lost = [this](const std::string&) { on_lost_++; };
        lease_worker::timing t;
        t.lease = lease;
        t.poll_interval = 20ms;
        t.heartbeat = heartbeat;
        workers_.push_back(
            std::make_unique<lease_worker>(pool_->main(), *db_, owner, t, std::move(h)));
        return *workers_.back();
    }
    // Four slots in two lanes (0: submit jobs, 1: the others) of at most `lane_cap` each,
    // claimed lane by lane as the engine does.
    lease_worker& add_lane_worker(const std::string& owner, int lane_cap,
                                  std::chrono::milliseconds slow_work) {
        lease_worker::hooks h;
        h.name = owner;
        h.claim = [this, slow_work](segue::store::transaction& tx, const std::string& who,
                                    segue::store::millis now, segue::store::millis lease_ms,
                                    int limit, const std::vector<int>& lane_limits,
                                    const std::vector<std::string>& exclude,
                                    std::optional<segue::store::millis>& next_due) {
            std::vector<std::int64_t> ids;
            for (const auto& id : exclude)
                ids.push_back(std::stoll(id));
            std::vector<lease_worker::item> items;
            for (int lane = 0; lane < 2; ++lane) {
                const int want = std::min(lane_limits[static_cast<std::size_t>(lane)],
                                          limit - static_cast<int>(items.size()));
                if (want <= 0)
                    continue;
                for (const auto& j : tx.claim_jobs(who, now, lease_ms, want, ids,
                                                   lane == 0 ? segue::store::job_lane::submit
                                                             : segue::store::job_lane::other)) {
                    lease_worker::item it;
                    it.id = std::to_string(j.id);
                    it.fence = j.attempts;
                    it.lane = lane;
                    it.run = [this, j, who, slow_work](std::shared_ptr<const lease_state> l) {
                        return lane_work(this, j, who, slow_work, std::move(l));
                    };
                    items.push_back(std::move(it));
                }
            }
            if (static_cast<int>(items.size()) < limit)
                next_due = tx.next_job_due();
            return items;
        };
        h.renew = segue::core::renew_job_leases;
        h.slots = [](int running) { return 4 - running; };
        lease_worker::timing t;
        t.lease = 5s;
        t.poll_interval = 20ms;
        t.lanes = 2;
        t.lane_cap = lane_cap;
        workers_.push_back(
            std::make_unique<lease_worker>(pool_->main(), *db_, owner, t, std::move(h)));
        return *workers_.back();
    }
    void schedule_kind(const std::string& kind, segue::store::millis due) {
        std::promise<void> done;
        store_->submit_write(
            [&](segue::store::transaction& tx) {
                tx.schedule_job({0, kind, "ext_lw", "", due, "", 0, 0}, false);
            },
            [&](std::exception_ptr) { done.set_value(); });
        done.get_future().wait();
    }
    void schedule_job() {
        std::promise<void> done;
        store_->submit_write(
            [](segue::store::transaction& tx) {
                tx.schedule_job({0, "submit", "ext_lw", "", 0, "", 0, 0}, false);
            },
            [&](std::exception_ptr) { done.set_value(); });
        done.get_future().wait();
    }
    void run() {
        for (auto& w : workers_)
            w->start();
        thread_ = std::thread([this] { pool_->run(); });
    }

    segue::test::temp_dir dir_;
    segue::metrics::registry metrics_;
    std::unique_ptr<segue::store::store> store_;
    std::unique_ptr<segue::store::db> db_;
    std::unique_ptr<segue::runtime::io_pool> pool_;
    std::vector<std::unique_ptr<lease_worker>> workers_;
    std::thread thread_;
    // Touched on the one IO thread, read by the test thread: atomics.
    std::map<std::string, std::atomic<int>> runs_by_{};
    std::atomic<int> completed_{0}, refused_{0}, lost_seen_{0}, renewals_{0}, on_lost_{0},
        finished_{0};
    // lane_work: slow jobs running now and at most at once; submits done.
    std::atomic<int> slow_running_{0}, slow_max_{0}, submits_done_{0};
    // slow_work's lease_state::until when it starts and when it ends (by the store's clock).
    std::atomic<std::int64_t> until_at_start_{0}, until_at_end_{0};
};

net::awaitable<void> slow_work(LeaseWorker* t, segue::store::job_row j, std::string who,
                               std::chrono::milliseconds work,
                               std::shared_ptr<const lease_state> l) {
    t->runs_by_[who]++;
    t->until_at_start_ = l->until;
    net::steady_timer timer(co_await net::this_coro::executor);
    timer.expires_after(work);
    co_await timer.async_wait(net::as_tuple(net::use_awaitable));
    t->until_at_end_ = l->until;
    bool held = false;
    co_await t->db_->write([&](segue::store::transaction& tx) {
        held = tx.complete_job({j.id, who, j.attempts});
    });
    (held ? t->completed_ : t->refused_)++;
    if (l->lost)
        t->lost_seen_++;
    t->finished_++;
}

net::awaitable<void> release_then_linger(LeaseWorker* t, segue::store::job_row j, std::string who,
                                         std::chrono::milliseconds work,
                                         std::shared_ptr<const lease_state> l) {
    t->runs_by_[who]++;
    bool held = false;
    co_await t->db_->write([&](segue::store::transaction& tx) {
        held = tx.complete_job({j.id, who, j.attempts, &l->released});
    });
    (held ? t->completed_ : t->refused_)++;
    net::steady_timer timer(co_await net::this_coro::executor);
    timer.expires_after(work);
    co_await timer.async_wait(net::as_tuple(net::use_awaitable));
    if (l->lost)
        t->lost_seen_++;
    t->finished_++;
}

net::awaitable<void> lane_work(LeaseWorker* t, segue::store::job_row j, std::string who,
                               std::chrono::milliseconds work, std::shared_ptr<const lease_state>) {
    const bool submit = j.kind == "submit";
    if (!submit) {
        const int now = ++t->slow_running_;
        for (int m = t->slow_max_.load(); now > m && !t->slow_max_.compare_exchange_weak(m, now);)
            ;
        net::steady_timer timer(co_await net::this_coro::executor);
        timer.expires_after(work);
        co_await timer.async_wait(net::as_tuple(net::use_awaitable));
    }
    co_await t->db_->write([&](segue::store::transaction& tx) {
        tx.complete_job({j.id, who, j.attempts});
    });
    if (submit)
        t->submits_done_++;
    else
        t->slow_running_--;
}

}  // namespace

// Four slots, lanes of at most three. Six slow jobs are due before a submit: they take three
// slots, and the submit runs at once in the slot left to its lane. (With one lane, the slow
// jobs took all four slots and the submit waited for the first of them to end.)
TEST_F(LeaseWorker, ALaneOfSlowWorkLeavesTheOtherLaneItsSlots) {
    for (int i = 0; i < 6; ++i)
        schedule_kind("poll", 0);
    schedule_kind("submit", 1);
    add_lane_worker("a", /*lane_cap=*/3, /*slow_work=*/3s);
    run();
    ASSERT_TRUE(wait_for([&] { return submits_done_ == 1; }, 2s))
        << "the submit waited behind the slow lane";
    EXPECT_EQ(slow_running_, 3);
    EXPECT_EQ(slow_max_, 3) << "the slow lane held more than its cap";
}

// A hand-off reserves in its lane: refused when the lane is at its cap even with slots free
// overall, taken in the other lane, and refused once all slots are taken.
TEST_F(LeaseWorker, AReservationCountsInItsLane) {
    for (int i = 0; i < 3; ++i)
        schedule_kind("poll", 0);
    auto& w = add_lane_worker("a", /*lane_cap=*/3, /*slow_work=*/3s);
    run();
    ASSERT_TRUE(wait_for([&] { return slow_running_ == 3; }, 2s));
    EXPECT_FALSE(w.reserve(1)) << "lane 1 is at its cap";
    EXPECT_TRUE(w.reserve(0));
    EXPECT_FALSE(w.reserve(0)) << "all four slots are taken";
    w.unreserve(0);
    EXPECT_TRUE(w.reserve(0)) << "an ended reservation frees its slot";
    w.unreserve(0);
}

// Work four times longer than its lease: the heartbeat keeps the lease, so neither this worker
// nor another one runs the job again, and the work's fenced write at the end is accepted.
TEST_F(LeaseWorker, HeartbeatKeepsALeaseLongerThanTheWork) {
    runs_by_["a"] = 0;
    runs_by_["b"] = 0;
    schedule_job();
    // The work outlasts the lease, so only renewals keep it; the lease outlasts a few missed
    // beats, so a loaded machine (a ctest -j4 beside a TSAN run) does not lose it: 300 ms did.
    add_worker("a", 700ms, 100ms, 1800ms);
    run();
    ASSERT_TRUE(wait_for([&] { return runs_by_["a"] == 1; }, 2s));
    add_worker("b", 700ms, 100ms, 1800ms).start();  // a second replica, later
    ASSERT_TRUE(wait_for([&] { return completed_ + refused_ == 1; }, 5s));
    EXPECT_EQ(completed_, 1);
    EXPECT_EQ(refused_, 0);
    EXPECT_EQ(runs_by_["a"], 1);
    EXPECT_EQ(runs_by_["b"], 0) << "the other replica took a live lease";
    EXPECT_GE(renewals_, 3);
    EXPECT_EQ(lost_seen_, 0);
    // The work knows when its lease ends: the claim's end, moved on by every renewal.
    EXPECT_GT(until_at_start_, 0);
    EXPECT_GE(until_at_end_, until_at_start_ + 600) << "renewals did not move the lease's end";
}

// Without renewals (a heartbeat slower than the lease) the lease expires under the work: this
// worker does not run its own job again (it is excluded), another replica takes it, and the
// first claim's write is refused by its fence; its lease shows as lost.
TEST_F(LeaseWorker, AnExpiredLeaseGoesToAnotherReplicaAndTheOldClaimIsFenced) {
    runs_by_["a"] = 0;
    runs_by_["b"] = 0;
    schedule_job();
    add_worker("a", 300ms, 600ms, 1200ms);
    run();
    ASSERT_TRUE(wait_for([&] { return runs_by_["a"] == 1; }, 2s));
    add_worker("b", 300ms, 100ms, 100ms).start();
    ASSERT_TRUE(wait_for([&] { return completed_ + refused_ == 2; }, 5s));
    EXPECT_EQ(runs_by_["a"], 1) << "a process ran its own running job twice";
    EXPECT_EQ(runs_by_["b"], 1);
    EXPECT_EQ(completed_, 1);  // b's
    EXPECT_EQ(refused_, 1);    // a's stale claim
    EXPECT_EQ(lost_seen_, 1);  // a's heartbeat found it gone before the work ended
}

// Work that completed its own job and is still finishing when a heartbeat comes: its row is
// gone because it released it, which is no lost lease (no `lost`, no on_lost, no warning);
// released rows are not renewed at all.
TEST_F(LeaseWorker, WorkThatReleasedItsRowIsNotLostWhileItFinishes) {
    runs_by_["a"] = 0;
    schedule_job();
    add_worker("a", 300ms, 50ms, 600ms, /*release_first=*/true);
    run();
    ASSERT_TRUE(wait_for([&] { return completed_ == 1; }, 2s));
    const int renewals_then = renewals_;
    // Several heartbeats while the work lingers.
    ASSERT_TRUE(wait_for([&] { return finished_ == 1; }, 3s));
    EXPECT_EQ(runs_by_["a"], 1);
    EXPECT_EQ(on_lost_, 0) << "a released row was reported as a lost lease";
    EXPECT_EQ(lost_seen_, 0);
    EXPECT_LE(renewals_, renewals_then + 1);  // at most one beat already under way
}

// The same work whose row someone else removed (a cancel deletes the task's jobs) while it
// runs, before it wrote anything: that is a lost lease.
TEST_F(LeaseWorker, WorkWhoseRowIsRemovedByOthersIsLost) {
    runs_by_["a"] = 0;
    schedule_job();
    add_worker("a", 300ms, 50ms, 600ms);
    run();
    ASSERT_TRUE(wait_for([&] { return runs_by_["a"] == 1; }, 2s));
    std::promise<void> removed;
    store_->submit_write([](segue::store::transaction& tx) { tx.delete_jobs_for_task("ext_lw"); },
                         [&](std::exception_ptr) { removed.set_value(); });
    removed.get_future().wait();
    ASSERT_TRUE(wait_for([&] { return completed_ + refused_ == 1; }, 3s));
    EXPECT_EQ(on_lost_, 1);
    EXPECT_EQ(lost_seen_, 1);
    EXPECT_EQ(refused_, 1);
}

namespace {

// Replicas on one PostgreSQL database: each its own store (connections), db, IO thread and
// lease worker, as separate processes would have. The work holds its job until `work` ends,
// then completes it with its claim's fence. One job at a time each.
class LeaseWorkerReplicas : public ::testing::Test {
  protected:
    struct replica {
        std::string name;
        std::unique_ptr<segue::store::store> store;
        std::unique_ptr<segue::store::db> db;
        std::unique_ptr<segue::runtime::io_pool> pool;
        std::unique_ptr<lease_worker> worker;
        std::thread thread;
        bool killed = false;
        std::atomic<int> runs{0}, completed{0}, refused{0}, lost{0};
        segue::metrics::registry metrics;          // what it freed (count_freed_leases)
        std::shared_ptr<const lease_state> state;  // of its job, once it runs
    };

    void TearDown() override {
        for (auto& r : replicas_)
            if (!r->killed)
                stop(*r);
        // The store first: its pending units complete into the (stopped) io_contexts. Then
        // the coroutines a killed replica left suspended go with its io_context, before what
        // they refer to.
        for (auto& r : replicas_)
            r->store->close();
        for (auto& r : replicas_) {
            r->worker.reset();
            r->pool.reset();
            r->db.reset();
        }
    }

    replica& add(const std::string& url, const std::string& name, std::chrono::milliseconds lease,
                 std::chrono::milliseconds liveness, std::chrono::milliseconds work) {
        auto r = std::make_unique<replica>();
        r->name = name;
        segue::store::postgres_options o;
        o.url = url;
        o.statement_timeout_ms = 1000;  // a frozen server's answers are waited for 11 s
        r->store = segue::store::open_postgres(o);
        r->db = std::make_unique<segue::store::db>(*r->store, metrics_);
        r->pool = std::make_unique<segue::runtime::io_pool>(1);
        replica* self = r.get();
        lease_worker::hooks h;
        h.name = name;
        h.claim = [self, work](segue::store::transaction& tx, const std::string& who,
                               segue::store::millis now, segue::store::millis lease_ms, int limit,
                               const std::vector<int>&, const std::vector<std::string>& exclude,
                               std::optional<segue::store::millis>& next_due) {
            return claim_items(tx, who, now, lease_ms, limit, exclude, next_due,
                               [self, who, work](const segue::store::job_row& j) {
                                   return [self, j, who,
                                           work](std::shared_ptr<const lease_state> l) {
                                       return hold_then_complete(self, j, who, work, std::move(l));
                                   };
                               });
        };
        h.renew = segue::core::renew_job_leases;
        h.slots = [](int running) { return 1 - running; };  // one job each
        h.on_lost = [self](const std::string&) { self->lost++; };
        h.on_freed = segue::core::count_freed_leases(self->metrics);
        lease_worker::timing t;
        t.lease = lease;
        t.poll_interval = 50ms;
        t.liveness = liveness;
        r->worker = std::make_unique<lease_worker>(r->pool->main(), *r->db, name, t, std::move(h));
        replicas_.push_back(std::move(r));
        return *replicas_.back();
    }
    static void start(replica& r) {
        r.worker->start();
        r.thread = std::thread([&r] { r.pool->run(); });
    }
    // As a SIGTERM: the worker stops (its work handed back or finished), then its IO thread.
    static void stop(replica& r) {
        std::promise<void> stopped;
        net::co_spawn(r.pool->main(), stop_worker(r.worker.get()),
                      [&](std::exception_ptr) { stopped.set_value(); });
        stopped.get_future().wait_for(5s);
        r.pool->stop();
        r.thread.join();
        r.killed = true;  // TearDown: nothing left to stop
    }
    // As a SIGKILL: its IO thread ends where it is (no stop, no further beat or renewal, and
    // its work never ends); its connections stay open, as a frozen pod's would.
    static void kill(replica& r) {
        r.pool->stop();
        r.thread.join();
        r.killed = true;
    }
    // A burst on r's lane: 1,200 units of 5 ms queued at once (about 6 s of work); true once
    // they all ran (within 40 s).
    static bool back_up_and_drain(replica& r) {
        constexpr int backlog = 1200;
        std::atomic<int> drained{0};
        for (int i = 0; i < backlog; ++i)
            r.store->submit_write(
                [](segue::store::transaction&) { std::this_thread::sleep_for(5ms); },
                [&drained](std::exception_ptr) { drained++; });
        return wait_for([&] { return drained == backlog; }, 40s);
    }
    // What r counted of the owners it forgot and the leases it freed.
    static void expect_freed(replica& r, double owners, double jobs, double deliveries) {
        const auto counted = r.metrics.serialize();
        EXPECT_EQ(segue::test::metric_value(counted, "segue_lease_owners_freed_total"), owners)
            << counted;
        EXPECT_EQ(segue::test::metric_value(counted, "segue_leases_freed_total{kind=\"job\"}"),
                  jobs);
        EXPECT_EQ(segue::test::metric_value(counted, "segue_leases_freed_total{kind=\"delivery\"}"),
                  deliveries);
    }
    static void schedule(segue::store::store& s, const std::string& task) {
        segue::test::sync_write(s, [&](segue::store::transaction& tx) {
            tx.schedule_job({0, "submit", task, "", 0, "", 0, 0}, false);
        });
    }

    static net::awaitable<void> hold_then_complete(replica* r, segue::store::job_row j,
                                                   std::string who, std::chrono::milliseconds work,
                                                   std::shared_ptr<const lease_state> l) {
        r->state = l;
        r->runs++;
        net::steady_timer timer(co_await net::this_coro::executor);
        timer.expires_after(work);
        co_await timer.async_wait(net::as_tuple(net::use_awaitable));
        bool held = false;
        co_await r->db->write([&](segue::store::transaction& tx) {
            held = tx.complete_job({j.id, who, j.attempts});
        });
        (held ? r->completed : r->refused)++;
    }

    segue::metrics::registry metrics_;
    // A private server (to freeze) outlives TearDown's close of the stores on it.
    std::unique_ptr<segue::test::pg_private_server> private_pg_;
    // The shared server's schema, dropped only after TearDown stopped every worker on it (as a
    // local of the test body it went first, and the workers' last claims logged errors).
    std::unique_ptr<segue::test::pg_schema> schema_;
    const std::string& shared_url() {
        if (!schema_)
            schema_ = std::make_unique<segue::test::pg_schema>();
        return schema_->url();
    }
    std::vector<std::unique_ptr<replica>> replicas_;
};

}  // namespace

// A's lease is 60 s; A is killed while its work runs. B, alive, frees A's lease once A has not
// shown it is alive for the liveness timeout (2 s) and runs the job: within a few seconds, not
// a minute. (2 s, not less: a loaded machine, a TSAN build beside ctest -j4, can hold a live
// replica's beat back for a second.)
TEST_F(LeaseWorkerReplicas, AKilledReplicasWorkIsTakenUpAfterTheLivenessTimeoutNotItsLease) {
    auto& a = add(shared_url(), "a", 60s, 2s, /*work=*/10min);
    auto& b = add(shared_url(), "b", 60s, 2s, /*work=*/0ms);
    schedule(*a.store, "ext_killed");
    start(a);
    ASSERT_TRUE(wait_for([&] { return a.runs == 1; }, 5s));
    start(b);
    std::this_thread::sleep_for(2500ms);  // both beat; B leaves A's job alone
    EXPECT_EQ(b.runs, 0) << "B took a live replica's job";
    kill(a);
    const auto killed_at = std::chrono::steady_clock::now();
    ASSERT_TRUE(wait_for([&] { return b.completed == 1; }, 20s))
        << "B never took the job of the killed replica (its lease is 60 s)";
    const auto took = std::chrono::steady_clock::now() - killed_at;
    EXPECT_LT(took, 12s) << "not the liveness timeout's doing";
    EXPECT_EQ(b.runs, 1);
    EXPECT_EQ(b.refused, 0);
    expect_freed(b, 1, 1, 0);
    std::cout << "[ info ] taken up "
              << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
              << " ms after the kill (liveness 2 s, lease 60 s)\n";
}

// A replica that stops gracefully stops beating too, with its work handed back: the others
// forget it when its timeout runs out, freeing no lease, and say so at info (the alert on
// taken-up work, SegueReplicasTakenForDead, watches the leases).
TEST_F(LeaseWorkerReplicas, AReplicaThatStoppedIsForgottenWithoutTakingWork) {
    auto& a = add(shared_url(), "a", 60s, 2s, /*work=*/0ms);
    auto& b = add(shared_url(), "b", 60s, 2s, /*work=*/0ms);
    start(a);
    start(b);
    std::this_thread::sleep_for(2500ms);  // both beat; B judges from now on
    stop(a);
    ASSERT_TRUE(wait_for(
        [&] {
            return segue::test::metric_value(b.metrics.serialize(),
                                             "segue_lease_owners_freed_total") >= 1;
        },
        10s))
        << "B never forgot the stopped replica";
    expect_freed(b, 1, 0, 0);
}

// Every replica stalls alike (the database frozen for 5 s, 2.5 liveness timeouts), and one of
// them, B, comes back 1.5 s after the others (its writer was held: a busy store, a slow pod).
// The others judge no one until their own beats have kept their pace for a whole timeout after
// the stall, so B shows itself in time and no one takes its work. (Judging at their first beat
// in pace after the stall, C freed B's lease and ran its job a second time.)
TEST_F(LeaseWorkerReplicas, AStallOfTheDatabaseMakesNoReplicaTakeTheOthersForDead) {
    private_pg_ = std::make_unique<segue::test::pg_private_server>();
    auto& pg = *private_pg_;
    auto& a = add(pg.url(), "a", 60s, 2s, /*work=*/14s);
    auto& b = add(pg.url(), "b", 60s, 2s, /*work=*/14s);
    auto& c = add(pg.url(), "c", 60s, 2s, /*work=*/0ms);  // no job of its own: it would take B's
    schedule(*a.store, "ext_a");
    schedule(*a.store, "ext_b");
    start(a);
    ASSERT_TRUE(wait_for([&] { return a.runs == 1; }, 5s));
    start(b);
    ASSERT_TRUE(wait_for([&] { return b.runs == 1; }, 5s));
    start(c);
    std::this_thread::sleep_for(2500ms);  // C's beats have kept their pace for a timeout

    // B's writer held from just before the freeze until 1.5 s after it.
    std::promise<void> entered, release;
    auto released = release.get_future().share();
    b.store->submit_write(
        [&entered, released](segue::store::transaction&) {
            entered.set_value();
            released.wait();
        },
        nullptr);
    entered.get_future().wait();
    pg.freeze();
    std::this_thread::sleep_for(5s);  // answers are waited for 11 s (statement_timeout 1 s)
    pg.thaw();
    std::this_thread::sleep_for(1500ms);
    release.set_value();

    ASSERT_TRUE(
        wait_for([&] { return a.completed + a.refused + b.completed + b.refused == 2; }, 25s));
    EXPECT_EQ(c.runs, 0) << "C took B for dead and ran its job";
    EXPECT_EQ(a.runs + b.runs + c.runs, 2);
    EXPECT_EQ(a.lost + b.lost, 0);
    EXPECT_EQ(a.refused + b.refused, 0);
}

// A replica whose lane is backed up for longer than the liveness timeout (a burst: 1,200 units
// of 5 ms queued at once, about 6 s of work) is busy, not dead: its liveness beats and
// renewals go before the waiting work (db::write_first), and no other replica takes its job.
// (With its beats queued behind the backlog, B freed A's lease after 2 s and ran the job again.)
TEST_F(LeaseWorkerReplicas, AReplicaWhoseLaneIsBackedUpIsNotTakenForDead) {
    auto& a = add(shared_url(), "a", 60s, 2s, /*work=*/10s);
    auto& b = add(shared_url(), "b", 60s, 2s, /*work=*/0ms);
    schedule(*a.store, "ext_busy");
    start(a);
    ASSERT_TRUE(wait_for([&] { return a.runs == 1; }, 5s));
    start(b);
    std::this_thread::sleep_for(2500ms);  // B's beats have kept their pace for a timeout
    const auto queued_at = std::chrono::steady_clock::now();
    ASSERT_TRUE(back_up_and_drain(a));
    const auto took = std::chrono::steady_clock::now() - queued_at;
    ASSERT_TRUE(wait_for([&] { return a.completed + a.refused == 1; }, 20s));
    EXPECT_EQ(b.runs, 0) << "B took A for dead while A's lane was backed up";
    EXPECT_EQ(a.completed, 1);
    EXPECT_EQ(a.lost, 0);
    EXPECT_GT(took, 3s) << "the backlog was not longer than the liveness timeout";
    std::cout << "[ info ] the backlog took "
              << std::chrono::duration_cast<std::chrono::milliseconds>(took).count()
              << " ms to drain (liveness 2 s)\n";
}

// The same burst against the leases themselves (3 s, renewed every second; no liveness): the
// renewals go before the waiting work, so the lease of A's running job never expires and B,
// claiming every 50 ms, never gets it. (Queued behind the backlog, the lease expired and B
// ran the job again; A's work was then lost.)
TEST_F(LeaseWorkerReplicas, LeasesAreRenewedThroughABackedUpLane) {
    auto& a = add(shared_url(), "a", 3s, 0ms, /*work=*/9s);
    auto& b = add(shared_url(), "b", 3s, 0ms, /*work=*/0ms);
    schedule(*a.store, "ext_renewed");
    start(a);
    ASSERT_TRUE(wait_for([&] { return a.runs == 1; }, 5s));
    start(b);
    ASSERT_TRUE(back_up_and_drain(a));
    ASSERT_TRUE(wait_for([&] { return a.completed + a.refused == 1; }, 20s));
    EXPECT_EQ(b.runs, 0) << "A's lease expired while A's lane was backed up";
    EXPECT_EQ(a.completed, 1);
    EXPECT_EQ(a.lost, 0);
}

// A replica taken for dead while it was alive (stalled; here, its row deleted and its lease
// freed as a sweep does, then its job claimed by another): its next liveness beat finds its row
// gone and renews at once, so the running work learns within a beat that its lease is lost,
// not at the next heartbeat (lease/3: 20 s here).
TEST_F(LeaseWorkerReplicas, AReplicaTakenForDeadLearnsItsWorkIsLostWithinABeat) {
    auto& a = add(shared_url(), "a", 60s, 900ms, /*work=*/10s);
    schedule(*a.store, "ext_taken");
    start(a);
    ASSERT_TRUE(wait_for([&] { return a.runs == 1; }, 5s));
    std::this_thread::sleep_for(700ms);  // a few beats
    std::vector<segue::store::job_row> taken;
    segue::test::sync_write(*a.store, [&](segue::store::transaction& tx) {
        const auto now = tx.clock_ms();
        const auto freed = tx.free_dead_owners(now + 600'000);  // as if a were 10 min late
        ASSERT_EQ(freed.owners, std::vector<std::string>{"a"});
        taken = tx.claim_jobs("b", now, 60'000, 10);
    });
    ASSERT_EQ(taken.size(), 1u);
    const auto claimed_at = std::chrono::steady_clock::now();
    ASSERT_TRUE(wait_for([&] { return a.lost == 1; }, 5s))
        << "the lost lease was not noticed before the next heartbeat";
    EXPECT_LT(std::chrono::steady_clock::now() - claimed_at, 3s);
    // A write refused now, inside the lease's 60 s, is explained by the owner's death (the
    // dispatcher logs it as such, not as two claims of one live lease).
    // (alive_until is not read here: A's beats still write it on A's thread.)
    EXPECT_TRUE(a.state->owner_freed);
    EXPECT_TRUE(a.state->may_have_ended_by(a.state->until - 1));
}

// What a write refused at a time can be explained by: the lease's end, or (with liveness) its
// owner taken for dead, known or not yet known (after its last beat's promise ran out).
TEST(LeaseState, AWriteRefusedInsideItsLeaseIsExplainedOnlyByTheOwnersDeath) {
    lease_state st;
    st.until = 60'000;
    EXPECT_FALSE(st.may_have_ended_by(59'000));  // no liveness: two claims of one live lease
    EXPECT_TRUE(st.may_have_ended_by(60'001));   // expired
    st.alive_until = 30'000;                     // the last beat's promise
    EXPECT_FALSE(st.may_have_ended_by(29'000));
    EXPECT_TRUE(st.may_have_ended_by(31'000));  // others may have taken it for dead
    st.alive_until = 90'000;
    st.owner_freed = true;  // a beat found it taken for dead
    EXPECT_TRUE(st.may_have_ended_by(29'000));
    lease_state unknown;  // until unknown (0): anything goes
    EXPECT_TRUE(unknown.may_have_ended_by(1));
}

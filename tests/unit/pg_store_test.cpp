// The PostgreSQL engine where it differs from SQLite: several writers and several processes on
// one database. Two (or more) stores opened on one schema stand for replicas: each has its own
// connections, writers and listener, exactly as two segue processes would.

#include <gtest/gtest.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdio>
#include <future>
#include <latch>
#include <mutex>
#include <set>
#include <string>
#include <thread>
#include <vector>

#include "gateway/store/pg_connection.hpp"
#include "gateway/store/store.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/store_sync.hpp"

namespace st = segue::store;

namespace {

using segue::test::run_sync;

st::task_row task(const std::string& id) {
    st::task_row t;
    t.id = id;
    t.tenant = "tenant_a";
    t.status = "queued";
    t.num_outputs = 1;
    t.created_at = 1000;
    t.updated_at = 1000;
    return t;
}

class PgStoreTest : public ::testing::Test {
  protected:
    // Two writers per store (not the gateway's one) to exercise conflicts inside one process too.
    // `options`: more of libpq's options=, percent-encoded, after the schema's search_path.
    std::unique_ptr<st::store> open(int writers = 2, const std::string& options = "") {
        st::postgres_options o;
        o.url = schema_.url() + options;
        o.writers = writers;
        o.readers = 2;
        return st::open_postgres(o);
    }
    segue::test::pg_schema schema_;
};

// Runs `per_thread` write units from each of `threads` threads on each store at once.
void hammer(std::vector<st::store*> stores, int threads, int per_thread,
            std::function<void(st::transaction&, int store, int n)> unit) {
    std::vector<std::thread> ts;
    for (int si = 0; si < static_cast<int>(stores.size()); ++si)
        for (int t = 0; t < threads; ++t)
            ts.emplace_back([&, si, t] {
                for (int i = 0; i < per_thread; ++i)
                    run_sync(
                        *stores[static_cast<std::size_t>(si)], true,
                        [&, si, n = t * per_thread + i](st::transaction& tx) { unit(tx, si, n); });
            });
    for (auto& t : ts)
        t.join();
}

}  // namespace

TEST_F(PgStoreTest, ReplicasStartingAtOnceMigrateOnce) {
    std::vector<std::future<std::unique_ptr<st::store>>> opening;
    for (int i = 0; i < 4; ++i)
        opening.push_back(std::async(std::launch::async, [this] { return open(); }));
    std::vector<std::unique_ptr<st::store>> stores;
    for (auto& f : opening)
        stores.push_back(f.get());
    EXPECT_EQ(segue::test::pg_exec(schema_.url(), "SELECT COUNT(*) FROM schema_migrations"),
              std::to_string(st::postgres_schema_version()));
    EXPECT_EQ(st::migrate_postgres(schema_.url()), st::postgres_schema_version());
}

TEST_F(PgStoreTest, EventSequencesStayGaplessAcrossReplicas) {
    auto a = open(), b = open();
    run_sync(*a, true, [](st::transaction& tx) { tx.insert_task(task("ext_seq")); });
    hammer({a.get(), b.get()}, 4, 25, [](st::transaction& tx, int, int) {
        tx.get_task("ext_seq");  // as a transition does: the task first
        tx.append_event({"", "ext_seq", "tenant_a", 0, "task.progress", "{}", 0});
    });
    std::vector<st::event_row> evs;
    run_sync(*a, false, [&](st::transaction& tx) { evs = tx.get_events("ext_seq", 0, 1000); });
    ASSERT_EQ(evs.size(), 200u);
    for (std::size_t i = 0; i < evs.size(); ++i)
        EXPECT_EQ(evs[i].seq, static_cast<std::int64_t>(i + 1));
}

TEST_F(PgStoreTest, CreditHoldsNeverOverdrawAcrossReplicas) {
    auto a = open(), b = open();
    run_sync(*a, true, [](st::transaction& tx) { tx.ensure_grant("tenant_a", 50'000, 1); });
    std::atomic<int> held{0};
    // 2 stores x 4 threads x 20 = 160 attempts at 1,000 each against 50,000: exactly 50 win.
    hammer({a.get(), b.get()}, 4, 20, [&](st::transaction& tx, int si, int n) {
        st::ledger_row h;
        h.tenant = "tenant_a";
        h.task_id = "ext_" + std::to_string(si) + "_" + std::to_string(n);
        h.kind = "hold";
        h.amount_milli = 1000;
        if (tx.hold_credits(h).held)
            held.fetch_add(1);
    });
    EXPECT_EQ(held.load(), 50);
    run_sync(*b, false, [](st::transaction& tx) {
        const auto t = tx.ledger_totals("tenant_a");
        EXPECT_EQ(t.held, 50'000);
        EXPECT_EQ(t.available, 0);
    });
}

TEST_F(PgStoreTest, UniqueJobsAndIdempotencyKeysStayUniqueAcrossReplicas) {
    auto a = open(), b = open();
    run_sync(*a, true, [](st::transaction& tx) { tx.insert_task(task("ext_u")); });
    std::atomic<int> inserted{0};
    hammer({a.get(), b.get()}, 4, 10, [&](st::transaction& tx, int, int n) {
        tx.schedule_job({0, "poll", "ext_u", "", 1000 + n, "", 0, 0}, true);
        if (tx.insert_idempotency({"tenant_a", "key-1", "hash", "ext_u", 202, "{}", 1}))
            inserted.fetch_add(1);
    });
    EXPECT_EQ(inserted.load(), 1);
    EXPECT_EQ(
        segue::test::pg_exec(schema_.url(), "SELECT COUNT(*) FROM jobs WHERE task_id = 'ext_u'"),
        "1");
}

// The create path looks a key up, creates the task, then records the key. Replica A has looked
// and found nothing; replica B looking meanwhile must wait for A's commit and find A's record
// (before the fix B found nothing too, and both created a task for one key).
TEST_F(PgStoreTest, AKeyLookedUpInAWriteUnitIsHeldUntilCommit) {
    auto a = open(), b = open();
    std::promise<void> looked;
    auto a_unit = std::async(std::launch::async, [&] {
        run_sync(*a, true, [&](st::transaction& tx) {
            EXPECT_FALSE(tx.get_idempotency("tenant_a", "key-1"));
            looked.set_value();
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
            EXPECT_TRUE(
                tx.insert_idempotency({"tenant_a", "key-1", "hash", "ext_a", 202, "{}", 1}));
        });
    });
    looked.get_future().wait();
    std::optional<st::idempotency_row> seen;
    const auto t0 = std::chrono::steady_clock::now();
    run_sync(*b, true,
             [&](st::transaction& tx) { seen = tx.get_idempotency("tenant_a", "key-1"); });
    const auto waited = std::chrono::steady_clock::now() - t0;
    a_unit.get();
    ASSERT_TRUE(seen) << "B did not wait for A's record of the key";
    EXPECT_EQ(seen->task_id, "ext_a");
    EXPECT_GE(waited, std::chrono::milliseconds(150));
    // Another key, or a read unit, does not wait.
    run_sync(*b, true,
             [](st::transaction& tx) { EXPECT_FALSE(tx.get_idempotency("tenant_a", "k2")); });
    run_sync(*b, false,
             [](st::transaction& tx) { EXPECT_TRUE(tx.get_idempotency("tenant_a", "key-1")); });
}

// Writes whose answers a unit does not read are pipelined (sent without waiting): an error of
// one still fails its own unit, before the unit's next answer or at its end, and only that unit
// (rolled back to its savepoint) in a batch whose other units commit.
TEST_F(PgStoreTest, APipelinedWriteThatFailsFailsItsUnitAlone) {
    auto s = open(1);
    run_sync(*s, true, [](st::transaction& tx) { tx.insert_task(task("ext_dup")); });
    // The writer is held while the units queue, so they run in one batch.
    std::promise<void> entered, release;
    auto release_f = release.get_future().share();
    s->submit_write(
        [&](st::transaction&) {
            entered.set_value();
            release_f.wait();
        },
        nullptr);
    entered.get_future().wait();
    auto submit = [&](st::store::unit fn) {
        auto p = std::make_shared<std::promise<std::exception_ptr>>();
        auto f = p->get_future();
        s->submit_write(std::move(fn), [p](std::exception_ptr e) { p->set_value(e); });
        return f;
    };
    bool read_threw = false;
    auto a = submit([](st::transaction& tx) {
        tx.insert_task(task("ext_a"));
        tx.upsert_output({"ext_a", 1, "pending", "{}", 1000});
    });
    // The duplicate's error comes with the next answer the unit waits for (get_task)...
    auto b = submit([&](st::transaction& tx) {
        tx.upsert_output({"ext_dup", 1, "changed", "{}", 1000});
        tx.insert_task(task("ext_dup"));
        tx.upsert_attempt({"ext_dup", 1, "p", "", "", "submitting", "", "", 1, 0});
        try {
            tx.get_task("ext_dup");
        } catch (const st::store_error&) {
            read_threw = true;
            throw;
        }
    });
    // ... or at the unit's end.
    auto c = submit([](st::transaction& tx) {
        tx.upsert_attempt({"ext_a", 1, "p", "", "", "submitting", "", "", 1, 0});
        tx.insert_task(task("ext_dup"));
    });
    auto d = submit([](st::transaction& tx) {
        tx.insert_task(task("ext_d"));
        tx.append_event({"", "ext_d", "tenant_a", 0, "task.created", "{}", 0});
    });
    release.set_value();
    EXPECT_EQ(a.get(), nullptr);
    EXPECT_NE(b.get(), nullptr);
    EXPECT_TRUE(read_threw);
    EXPECT_NE(c.get(), nullptr);
    EXPECT_EQ(d.get(), nullptr);
    run_sync(*s, false, [](st::transaction& tx) {
        EXPECT_EQ(tx.get_outputs("ext_a").size(), 1u);
        EXPECT_TRUE(tx.get_attempts("ext_a").empty());   // c rolled back
        EXPECT_TRUE(tx.get_outputs("ext_dup").empty());  // b rolled back
        EXPECT_TRUE(tx.get_attempts("ext_dup").empty());
        EXPECT_EQ(tx.get_events("ext_d", 0, 10).size(), 1u);
    });
    // The connection is still usable, and statements first prepared in a failed pipeline
    // (skipped there) are prepared again.
    run_sync(*s, true, [](st::transaction& tx) {
        tx.upsert_attempt({"ext_d", 1, "p", "", "", "submitting", "", "", 1, 0});
    });
    run_sync(*s, false,
             [](st::transaction& tx) { EXPECT_EQ(tx.get_attempts("ext_d").size(), 1u); });
}

TEST_F(PgStoreTest, ClaimsNeverHandOneJobToTwoReplicas) {
    auto a = open(), b = open();
    run_sync(*a, true, [](st::transaction& tx) {
        for (int i = 0; i < 200; ++i)
            tx.schedule_job({0, "submit", "ext_" + std::to_string(i), "", 1, "", 0, 0}, false);
    });
    std::mutex m;
    std::multiset<std::int64_t> claimed;
    std::vector<std::thread> ts;
    for (auto* s : {a.get(), b.get()})
        for (int t = 0; t < 3; ++t)
            ts.emplace_back([&, s, t] {
                const std::string owner = "w" + std::to_string(t) + "@" +
                                          std::to_string(reinterpret_cast<std::uintptr_t>(s));
                for (;;) {
                    std::vector<st::job_row> got;
                    run_sync(*s, true, [&](st::transaction& tx) {
                        got = tx.claim_jobs(owner, tx.clock_ms(), 60'000, 7);
                    });
                    if (got.empty())
                        return;
                    std::lock_guard lk(m);
                    for (const auto& j : got)
                        claimed.insert(j.id);
                }
            });
    for (auto& t : ts)
        t.join();
    EXPECT_EQ(claimed.size(), 200u);
    EXPECT_EQ(std::set<std::int64_t>(claimed.begin(), claimed.end()).size(), 200u);
}

TEST_F(PgStoreTest, ADeadlockedUnitRunsAgainAndBothCommit) {
    auto a = open(), b = open();
    run_sync(*a, true, [](st::transaction& tx) {
        tx.insert_task(task("ext_x"));
        tx.insert_task(task("ext_y"));
    });
    // a locks x then y, b locks y then x, each pausing in between: PostgreSQL aborts one of
    // them (deadlock_timeout, 1 s by default); the store runs it again and both commit.
    std::atomic<int> runs{0};
    auto crosser = [&](const char* first, const char* second) {
        return [&, first, second](st::transaction& tx) {
            runs.fetch_add(1);
            auto t = tx.get_task(first);
            std::this_thread::sleep_for(std::chrono::milliseconds(300));
            tx.get_task(second);
            t->status = "running";
            tx.update_task(*t);
        };
    };
    auto fa =
        std::async(std::launch::async, [&] { run_sync(*a, true, crosser("ext_x", "ext_y")); });
    auto fb =
        std::async(std::launch::async, [&] { run_sync(*b, true, crosser("ext_y", "ext_x")); });
    EXPECT_NO_THROW(fa.get());
    EXPECT_NO_THROW(fb.get());
    EXPECT_GE(runs.load(), 3);  // one of the two ran twice
    run_sync(*a, false, [](st::transaction& tx) {
        EXPECT_EQ(tx.get_task("ext_x")->status, "running");
        EXPECT_EQ(tx.get_task("ext_y")->status, "running");
    });
}

// Group commit across replicas: a batch holds the locks of all its units until it commits. Two
// replicas' batches whose units take two tenants' accounts in opposite orders (any two tenants,
// any two replicas: every credit change locks its tenant's account) form a cycle that only
// PostgreSQL's deadlock detection broke, after deadlock_timeout (1 s), and rolling back only the
// victim unit left its batch holding the rest, so the next unit deadlocked again: the writers of
// three replicas stalled for seconds, leases expired, work ran twice. Only a batch's first unit
// may wait for a lock: a later one that waits gives up at once and runs again in the next batch.
TEST_F(PgStoreTest, CrossingBatchesOnTwoReplicasNeitherWaitsForDeadlockDetection) {
    // deadlock_timeout 10 s on these connections (the tests' role is the server's superuser):
    // waiting for the detection would then take 10 s, far above anything a loaded machine makes
    // of the way that does not wait (it once took over 800 ms beside a TSAN run).
    const std::string slow_detection = "%20-cdeadlock_timeout%3D10s";
    auto a = open(1, slow_detection), b = open(1, slow_detection);
    run_sync(*a, true, [](st::transaction& tx) {
        tx.ensure_grant("alpha", 1000, 1);
        tx.ensure_grant("beta", 1000, 1);
    });
    std::atomic<int> second_runs{0};
    std::promise<void> go;
    std::shared_future<void> gate = go.get_future().share();
    std::latch both_locked(2);
    // On each replica: a unit holding the writer until the gate opens, then two units queued
    // behind it (one batch): the first locks one account and waits until the other replica's
    // first has locked the other, the second wants the account the other replica holds.
    auto batch = [&](st::store& s, std::string first, std::string second) {
        std::vector<std::future<void>> done;
        auto submit = [&](st::store::unit fn) {
            auto p = std::make_shared<std::promise<void>>();
            done.push_back(p->get_future());
            s.submit_write(std::move(fn), [p](std::exception_ptr e) {
                if (e)
                    p->set_exception(e);
                else
                    p->set_value();
            });
        };
        // The other two are queued only once the writer is inside this one, so they are
        // taken together as the next batch (queued earlier, the writer might have taken the
        // first with this one and left the second to a batch of its own: no crossing).
        auto entered = std::make_shared<std::promise<void>>();
        auto inside = entered->get_future();
        submit([gate, entered](st::transaction&) {
            entered->set_value();
            gate.wait();
        });
        inside.wait();
        submit([first, &both_locked](st::transaction& tx) {
            tx.ledger_totals(first);
            both_locked.arrive_and_wait();
        });
        submit([&, second](st::transaction& tx) {
            second_runs.fetch_add(1);
            tx.ledger_totals(second);
        });
        return done;
    };
    auto on_a = batch(*a, "alpha", "beta");
    auto on_b = batch(*b, "beta", "alpha");
    std::this_thread::sleep_for(std::chrono::milliseconds(100));  // both queued behind the gate
    const auto t0 = std::chrono::steady_clock::now();
    go.set_value();
    for (auto* done : {&on_a, &on_b})
        for (auto& f : *done)
            EXPECT_NO_THROW(f.get());
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_LT(took, std::chrono::seconds(5)) << "the batches waited for deadlock detection";
    // A second unit gave up and ran again (or both did: the other may get its lock as soon as
    // the first's batch commits).
    EXPECT_GE(second_runs.load(), 3);
    EXPECT_GE(a->stats().put_off + b->stats().put_off, 1u);
}

TEST_F(PgStoreTest, OtherReplicasHearOfCommitsWithinMilliseconds) {
    auto a = open(), b = open();
    std::mutex m;
    std::condition_variable cv;
    std::vector<st::commit_notice> heard;
    b->set_commit_listener([&](const st::commit_notice& n) {
        std::lock_guard lk(m);
        if (n.remote)
            heard.push_back(n);
        cv.notify_all();
    });
    const auto t0 = std::chrono::steady_clock::now();
    run_sync(*a, true, [](st::transaction& tx) {
        tx.insert_task(task("ext_l"));
        tx.append_event({"", "ext_l", "tenant_a", 0, "task.created", "{}", 0});
        st::delivery_row d;
        d.id = "dlv_1";
        d.event_id = "evt_x";
        d.task_id = "ext_l";
        d.tenant = "tenant_a";
        d.seq = 1;
        d.url = "http://r/";
        d.status = "pending";
        d.next_at = d.event_at = d.created_at = d.updated_at = 1;
        tx.insert_delivery(d);
    });
    std::unique_lock lk(m);
    ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(5), [&] { return !heard.empty(); }));
    const auto took = std::chrono::steady_clock::now() - t0;
    EXPECT_LT(took, std::chrono::milliseconds(500));
    EXPECT_EQ(heard[0].event_tasks, std::vector<std::string>{"ext_l"});
    EXPECT_TRUE(heard[0].outbox);
    // Its own commits are not heard as remote.
    heard.clear();
    lk.unlock();
    run_sync(*b, true, [](st::transaction& tx) {
        tx.append_event({"", "ext_l", "tenant_a", 0, "task.queued", "{}", 0});
    });
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    lk.lock();
    EXPECT_TRUE(heard.empty());
}

TEST_F(PgStoreTest, ABadUrlFailsTheOpenWithLibpqsReason) {
    st::postgres_options o;
    o.url = "postgresql:///nope?host=/nonexistent-dir&connect_timeout=2";
    try {
        st::open_postgres(o);
        FAIL() << "opened";
    } catch (const st::store_error& e) {
        EXPECT_NE(std::string(e.what()).find("cannot connect"), std::string::npos) << e.what();
    }
}

TEST_F(PgStoreTest, NotificationsTypicallyArriveWithinMilliseconds) {
    auto a = open(1), b = open(1);
    run_sync(*a, true, [](st::transaction& tx) { tx.insert_task(task("ext_lat")); });
    std::mutex m;
    std::condition_variable cv;
    int heard = 0;
    b->set_commit_listener([&](const st::commit_notice& n) {
        if (!n.remote)
            return;
        std::lock_guard lk(m);
        ++heard;
        cv.notify_all();
    });
    std::vector<double> ms;
    for (int i = 0; i < 20; ++i) {
        const int before = [&] {
            std::lock_guard lk(m);
            return heard;
        }();
        const auto t0 = std::chrono::steady_clock::now();
        run_sync(*a, true, [](st::transaction& tx) {
            tx.append_event({"", "ext_lat", "tenant_a", 0, "task.progress", "{}", 0});
        });
        std::unique_lock lk(m);
        ASSERT_TRUE(cv.wait_for(lk, std::chrono::seconds(5), [&] { return heard > before; }));
        ms.push_back(
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - t0)
                .count());
    }
    std::sort(ms.begin(), ms.end());
    std::printf("commit to the other store's listener: median %.1f ms, max %.1f ms (20 commits)\n",
                ms[ms.size() / 2], ms.back());
    // From submitting the write (commit included) to the other store's listener: the median
    // well under the 100 ms an SSE client on another replica may wait at most.
    EXPECT_LT(ms[ms.size() / 2], 100.0)
        << "median " << ms[ms.size() / 2] << " ms, max " << ms.back();
}

// Retention on two replicas at once: a batch that holds its rows (uncommitted) is skipped by the
// other replica's batch, which takes the rest at once instead of waiting; together they take
// every row exactly once.
// The gauges' counter rows (files and their bytes, deliveries by status) are shared by every
// writer: a writer takes a shard no other open transaction holds, so it never waits for another's
// commit, whatever their backend pids. Here another session holds every existing shard row: the
// writes still go through at once (on new shard rows), and the totals stay exact.
TEST_F(PgStoreTest, CounterShardsHeldByOthersNeverMakeAWriterWait) {
    auto a = open(1);
    st::pg::connection holder(schema_.url(), 0, "shard-holder");
    // Every shard a session could call its own exists (a zero row), so holding them all holds
    // the writer's too.
    holder.exec(
        "INSERT INTO file_totals (shard, n, bytes) SELECT g, 0, 0 FROM generate_series(0, 15) g "
        "ON CONFLICT DO NOTHING");
    holder.exec(
        "INSERT INTO delivery_counts (status, shard, n) SELECT 'pending', g, 0 FROM "
        "generate_series(0, 15) g ON CONFLICT DO NOTHING");
    holder.exec("BEGIN");
    holder.exec("SELECT shard FROM file_totals FOR UPDATE");
    holder.exec("SELECT shard FROM delivery_counts FOR UPDATE");
    const auto start = std::chrono::steady_clock::now();
    run_sync(*a, true, [](st::transaction& tx) {
        tx.insert_task(task("ext_shards"));
        for (int i = 0; i < 3; ++i)
            tx.insert_file({"file_s" + std::to_string(i), "tenant_a", "ext_shards", "output",
                            "audio/wav", "outputs/s" + std::to_string(i), 100, "", 100});
        st::delivery_row d;
        d.id = "dlv_s";
        d.event_id = "evt_s";
        d.task_id = "ext_shards";
        d.tenant = "tenant_a";
        d.seq = 1;
        d.url = "http://r/";
        d.status = "pending";
        d.next_at = d.event_at = d.created_at = d.updated_at = 1;
        tx.insert_delivery(d);
    });
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(1));
    holder.exec("COMMIT");
    run_sync(*a, false, [](st::transaction& tx) {
        const auto t = tx.totals();
        EXPECT_EQ(t.files, 3);
        EXPECT_EQ(t.file_bytes, 300);
        EXPECT_EQ(tx.summarize_deliveries().pending, 1);
    });
    a->close();
}

TEST_F(PgStoreTest, ReapingReplicasTakeDifferentRowsAndNeverWaitForEachOther) {
    auto a = open(1);
    auto b = open(1);
    run_sync(*a, true, [](st::transaction& tx) {
        for (int i = 0; i < 4; ++i) {
            auto t = task("ext_" + std::to_string(i));
            t.status = "succeeded";
            tx.insert_task(t);
            tx.insert_file({"file_" + std::to_string(i), "tenant_a", t.id, "output", "audio/wav",
                            "outputs/" + t.id, 1, "", 100});
        }
    });
    for (const auto& step :
         std::vector<std::pair<std::string, std::function<int(st::transaction&, int)>>>{
             {"files", [](st::transaction&tx,
                          int limit) { return tx.expire_files("output", 2000, 3000, limit); }},
             {"tasks",
              [](st::transaction&tx, int limit) { return tx.reap_tasks(2000, 3000, limit); }}}) {
        const std::string& what = step.first;
        const auto& stage = step.second;
        std::promise<int> entered;
        std::promise<void> release;
        auto release_f = release.get_future().share();
        std::promise<void> done;
        a->submit_write(
            [&](st::transaction& tx) {
                entered.set_value(stage(tx, 2));
                release_f.wait();
            },
            [&](std::exception_ptr) { done.set_value(); });
        EXPECT_EQ(entered.get_future().get(), 2) << what;
        const auto start = std::chrono::steady_clock::now();
        int taken = 0;
        run_sync(*b, true, [&](st::transaction& tx) { taken = stage(tx, 10); });
        const auto waited = std::chrono::steady_clock::now() - start;
        EXPECT_EQ(taken, 2) << what;  // the two the other replica does not hold
        EXPECT_LT(waited, std::chrono::seconds(1)) << what;
        release.set_value();
        done.get_future().wait();
        run_sync(*b, true, [&](st::transaction& tx) { EXPECT_EQ(stage(tx, 10), 0) << what; });
    }
    run_sync(*a, false, [](st::transaction& tx) {
        for (int i = 0; i < 4; ++i) {
            EXPECT_FALSE(tx.get_task("ext_" + std::to_string(i)));
            EXPECT_TRUE(tx.get_file_tombstone("file_" + std::to_string(i)));
        }
    });
    a->close();
    b->close();
}

// A store's session commits synchronously whatever the server says (the test server runs with
// synchronous_commit off): a COMMIT the gateway acts on (a provider call, a 202) is not taken back
// by a crash of the database (found by a black-box run: a second generation at a provider).
TEST_F(PgStoreTest, SessionsCommitSynchronouslyWhateverTheServersDefault) {
    st::pg::connection session(schema_.url() + "&options=-csynchronous_commit%3Doff", 0,
                               "sync-check");
    EXPECT_EQ(session.query("SHOW synchronous_commit", {}).text(0, 0), "on");
}

namespace {

// The value libpq uses for `keyword` on `c` ("" if none).
std::string setting(PGconn* c, std::string_view keyword) {
    std::string value;
    PQconninfoOption* options = PQconninfo(c);
    for (PQconninfoOption* o = options; o && o->keyword; ++o)
        if (keyword == o->keyword && o->val)
            value = o->val;
    PQconninfoFree(options);
    return value;
}

}  // namespace

// Every connection the store opens gives up on a database that stops answering (libpq's own
// default is to wait for ever), and a URL that sets one of those settings keeps its own.
TEST_F(PgStoreTest, ConnectionsGetTimeoutsAndKeepalivesUnlessTheUrlSetsThem) {
    PGconn* c = st::pg::open_connection(schema_.url());
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
    for (const auto& d : st::pg::connection_defaults)
        EXPECT_EQ(setting(c, d.keyword), d.value) << d.keyword;
    PQfinish(c);

    c = st::pg::open_connection(schema_.url() + "&connect_timeout=2&keepalives_idle=7");
    ASSERT_EQ(PQstatus(c), CONNECTION_OK) << PQerrorMessage(c);
    EXPECT_EQ(setting(c, "connect_timeout"), "2");
    EXPECT_EQ(setting(c, "keepalives_idle"), "7");
    EXPECT_EQ(setting(c, "tcp_user_timeout"), "30000");
    EXPECT_EQ(setting(c, "search_path"), "");  // not a libpq setting: the URL's options stay
    EXPECT_NE(setting(c, "options").find("search_path"), std::string::npos);
    PQfinish(c);
}

// PostgreSQL stops answering without closing anything (every process SIGSTOPped: a frozen VM,
// a server stuck on its disk). Nothing fails, answers just never come. The store gives a
// connection up after statement_timeout + 10 s without an answer and a connect after 5 s
// (connect_timeout); a unit someone waits for (submit_*_by) that is still queued at its time
// is failed unrun with a busy store_error, while the engine's units wait and commit after the
// thaw. What was given up left nothing behind. Without the answer timeout the units' writer
// waits for the frozen server for ever, and the request with it.
TEST(PgFrozenServer, UnitsAClientWaitsForAreGivenUpUnrunAndTheRestCommitAfterTheThaw) {
    segue::test::pg_private_server pg;
    st::postgres_options o;
    o.url = pg.url();
    o.statement_timeout_ms = 500;  // answers given up after 10.5 s
    o.readers = 1;
    auto s = st::open_postgres(o);
    segue::test::sync_write(*s, [](st::transaction& tx) { tx.insert_task(task("ext_before")); });

    pg.freeze();
    const auto start = st::store::clock::now();
    std::promise<std::exception_ptr> write_given_up, read_given_up, engine_done;
    s->submit_write_by([](st::transaction& tx) { tx.insert_task(task("ext_request")); },
                       [&](std::exception_ptr e) { write_given_up.set_value(e); },
                       st::write_lane::requests, start + std::chrono::seconds(1));
    s->submit_read_by([](st::transaction& tx) { tx.get_task("ext_before"); },
                      [&](std::exception_ptr e) { read_given_up.set_value(e); },
                      start + std::chrono::seconds(1));
    s->submit_write([](st::transaction& tx) { tx.insert_task(task("ext_engine")); },
                    [&](std::exception_ptr e) { engine_done.set_value(e); }, st::write_lane::work);

    auto busy = [](std::future<std::exception_ptr>& f) -> ::testing::AssertionResult {
        if (f.wait_for(std::chrono::seconds(40)) != std::future_status::ready)
            return ::testing::AssertionFailure() << "still held after 40 s";
        const auto e = f.get();
        if (!e)
            return ::testing::AssertionFailure() << "it ran (no error)";
        try {
            std::rethrow_exception(e);
        } catch (const st::store_error& err) {
            if (!err.busy())
                return ::testing::AssertionFailure() << "not busy: " << err.what();
            return ::testing::AssertionSuccess() << err.what();
        } catch (...) {
            return ::testing::AssertionFailure() << "not a store_error";
        }
    };
    auto write_future = write_given_up.get_future();
    auto read_future = read_given_up.get_future();
    EXPECT_TRUE(busy(write_future));
    EXPECT_TRUE(busy(read_future));
    // The writer gave up on its connection after 10.5 s; the queue then failed the unit at
    // once. Not 40 s: bounded by the timeouts, not by the freeze.
    EXPECT_LT(st::store::clock::now() - start, std::chrono::seconds(25));
    auto engine_future = engine_done.get_future();
    EXPECT_EQ(engine_future.wait_for(std::chrono::milliseconds(0)), std::future_status::timeout)
        << "the engine's unit must wait for the database, not fail";
    // Known out of reach by now (a connect timed out), and said so.
    for (int i = 0; i < 100 && s->unreachable().empty(); ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
    EXPECT_FALSE(s->unreachable().empty());

    pg.thaw();
    ASSERT_EQ(engine_future.wait_for(std::chrono::seconds(30)), std::future_status::ready);
    EXPECT_EQ(engine_future.get(), nullptr);
    EXPECT_TRUE(s->unreachable().empty());
    segue::test::sync_read(*s, [](st::transaction& tx) {
        EXPECT_TRUE(tx.get_task("ext_before"));
        EXPECT_TRUE(tx.get_task("ext_engine"));
        EXPECT_FALSE(tx.get_task("ext_request")) << "a unit given up unrun took effect";
    });
    s->close();
}

// A pipeline's answers come when the server reaches its sync, after all of its statements ran:
// thirteen statements of 0.9 s each, every one within a 1 s statement_timeout, are answered
// after 11.7 s, past one statement's answer bound (11 s), and that is not a lost connection.
TEST_F(PgStoreTest, APipelineOfSlowStatementsIsNotTakenForALostConnection) {
    st::pg::connection c(schema_.url(), 1000, "slow-pipeline");
    for (int i = 0; i < 13; ++i)
        c.send("SELECT pg_sleep(0.9)");
    EXPECT_NO_THROW(c.sync());
    EXPECT_TRUE(c.ok());
}

// The server's side of a session this process gave up on ends too, with its locks: idle in a
// transaction past the answer bound, or unheard from over TCP.
TEST_F(PgStoreTest, SessionsEndOnTheServersSideWhenTheirClientIsGone) {
    st::pg::connection c(schema_.url(), 5000, "session-check");
    EXPECT_EQ(c.query("SHOW idle_in_transaction_session_timeout", {}).text(0, 0), "15s");
    EXPECT_EQ(c.query("SHOW statement_timeout", {}).text(0, 0), "5s");
}

// A statement bigger than a stopped server's socket takes (here 8 MiB on its unix socket) is
// not a send that waits for ever: the connection gives up within the answer bound and is lost.
// Blocking libpq sends would hold the caller (a writer, a blob put) until the thaw.
TEST(PgFrozenServer, ASendTheServerDoesNotTakeIsGivenUpOn) {
    segue::test::pg_private_server pg;
    st::pg::connection c(pg.url(), 500, "big-send");  // answers and sends: 10.5 s
    const std::string big(8 << 20, 'x');
    pg.freeze();
    auto sent = std::async(std::launch::async, [&]() -> std::string {
        try {
            c.query("SELECT length($1)", {big});
            return "answered";
        } catch (const st::pg::pg_error& e) {
            return e.connection_lost() ? std::string("lost: ") + e.what() : e.what();
        }
    });
    if (sent.wait_for(std::chrono::seconds(40)) != std::future_status::ready) {
        pg.thaw();
        FAIL() << "the send waited for the stopped server (40 s)";
    }
    const std::string outcome = sent.get();
    EXPECT_EQ(outcome.rfind("lost: ", 0), 0u) << outcome;
    EXPECT_NE(outcome.find("could not send"), std::string::npos) << outcome;
    EXPECT_FALSE(c.ok());
}

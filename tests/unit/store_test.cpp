// The durable store. StoreEngineTest runs every operation's contract against both engines
// (SQLite: a fresh database file in a temporary directory; PostgreSQL: a fresh schema in the test
// server of scripts/pg.sh); StoreTest covers what only the SQLite engine has (its migrations,
// group commit on one writer, the syncer, checkpoints). PostgreSQL's own (several writers and
// processes on one database, LISTEN/NOTIFY, conflicts) are in pg_store_test.cpp.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <sqlite3.h>
#include <stdlib.h>
#include <sys/file.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <exception>
#include <filesystem>
#include <functional>
#include <future>
#include <map>
#include <mutex>
#include <optional>
#include <set>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gateway/store/store.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/store_sync.hpp"

namespace segue::store::detail {
std::span<const char* const> sqlite_migrations();  // sqlite_schema.cpp
}

namespace st = segue::store;
namespace fs = std::filesystem;

namespace {

class temp_dir {
  public:
    temp_dir() {
        std::string tmpl = (fs::temp_directory_path() / "segue_store_test_XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr)
            throw std::runtime_error("mkdtemp failed");
        path_ = tmpl;
    }
    ~temp_dir() {
        std::error_code ec;
        fs::remove_all(path_, ec);
    }
    const fs::path& path() const { return path_; }

  private:
    fs::path path_;
};

using segue::test::run_sync;
using segue::test::sync_read;
using segue::test::sync_write;

// Counts completions; wait() returns once `n` arrived.
class countdown {
  public:
    explicit countdown(int n) : left_(n) {}
    void arrive() {
        std::lock_guard lk(m_);
        if (--left_ == 0)
            cv_.notify_all();
    }
    void wait() {
        std::unique_lock lk(m_);
        cv_.wait(lk, [&] { return left_ <= 0; });
    }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    int left_;
};

st::task_row make_task(const std::string& id, const std::string& tenant = "tenant_a",
                       st::millis created_at = 1000) {
    st::task_row t;
    t.id = id;
    t.tenant = tenant;
    t.status = "queued";
    t.request_json = R"({"audio":"file_1"})";
    t.num_outputs = 2;
    t.created_at = created_at;
    t.updated_at = created_at;
    return t;
}

// tenant_a's task `id` in `status`, made and last changed at `at`.
st::task_row task_in_status(const std::string& id, const std::string& status, st::millis at) {
    auto t = make_task(id, "tenant_a", at);
    t.status = status;
    return t;
}

// Runs `sql` on a separate raw connection and returns the first column of each row as text.
std::vector<std::string> raw_query(const std::string& path, const std::string& sql) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READWRITE, nullptr) != SQLITE_OK) {
        sqlite3_close(db);
        throw std::runtime_error("raw open failed");
    }
    std::vector<std::string> rows;
    auto cb = [](void* arg, int n, char** v, char**) -> int {
        static_cast<std::vector<std::string>*>(arg)->push_back(n > 0 && v[0] ? v[0] : "");
        return 0;
    };
    char* err = nullptr;
    const int rc = sqlite3_exec(db, sql.c_str(), cb, &rows, &err);
    std::string msg = err ? err : "";
    sqlite3_free(err);
    sqlite3_close(db);
    if (rc != SQLITE_OK)
        throw std::runtime_error("raw query failed: " + msg);
    return rows;
}

class StoreTest : public ::testing::Test {
  protected:
    std::string db_path() const { return (dir_.path() / "segue.db").string(); }

    std::unique_ptr<st::store> open(bool synchronous_full = true, int max_batch = 256) {
        st::sqlite_options o;
        o.path = db_path();
        o.synchronous_full = synchronous_full;
        o.max_batch = max_batch;
        return st::open_sqlite(o);
    }

    temp_dir dir_;
};

// Both engines, by name.
class StoreEngineTest : public ::testing::TestWithParam<std::string> {
  protected:
    bool postgres() const { return GetParam() == "postgres"; }

    std::unique_ptr<st::store> open(bool synchronous_full = true, int max_batch = 256) {
        if (postgres()) {
            if (!schema_)
                schema_ = std::make_unique<segue::test::pg_schema>();
            st::postgres_options o;
            o.url = schema_->url();
            o.max_batch = max_batch;
            return st::open_postgres(o);
        }
        st::sqlite_options o;
        o.path = (dir_.path() / "segue.db").string();
        o.synchronous_full = synchronous_full;
        o.max_batch = max_batch;
        return st::open_sqlite(o);
    }

    temp_dir dir_;
    std::unique_ptr<segue::test::pg_schema> schema_;
};

INSTANTIATE_TEST_SUITE_P(Engines, StoreEngineTest, ::testing::Values("sqlite", "postgres"),
                         [](const auto& info) { return info.param; });

// A unit that blocks the writer until released, so the units queued meanwhile form one group.
class writer_gate {
  public:
    void hold(st::store& s) {
        auto entered_f = entered_.get_future();
        s.submit_write(
            [this](st::transaction&) {
                entered_.set_value();
                release_f_.wait();
            },
            nullptr);
        entered_f.wait();
    }
    void release() { release_.set_value(); }

  private:
    std::promise<void> entered_;  // a member: it must outlive the unit's set_value call
    std::promise<void> release_;
    std::shared_future<void> release_f_ = release_.get_future().share();
};

// A completion that keeps the message of the store_error a unit failed with.
st::store::completion store_error_into(std::string& what) {
    return [&what](std::exception_ptr e) {
        try {
            if (e)
                std::rethrow_exception(e);
        } catch (const st::store_error& err) {
            what = err.what();
        }
    };
}

}  // namespace

TEST_F(StoreTest, MigrationsCreateSchemaAndReopenIsNoop) {
    ASSERT_GE(st::sqlite_schema_version(), 1);
    open()->close();

    const auto tables =
        raw_query(db_path(), "SELECT name FROM sqlite_master WHERE type = 'table' ORDER BY name");
    for (const char* want : {"attempts", "events", "files", "idempotency", "jobs", "outputs",
                             "schema_migrations", "tasks"})
        EXPECT_NE(std::find(tables.begin(), tables.end(), want), tables.end()) << want;
    EXPECT_EQ(raw_query(db_path(), "PRAGMA journal_mode"), std::vector<std::string>{"wal"});

    const auto versions = raw_query(db_path(), "SELECT version FROM schema_migrations");
    ASSERT_EQ(versions.size(), static_cast<std::size_t>(st::sqlite_schema_version()));
    const auto applied = raw_query(db_path(), "SELECT applied_at FROM schema_migrations");
    EXPECT_GT(std::stoll(applied.front()), 1'600'000'000'000LL);  // Unix ms

    // Reopening applies nothing (same rows, same applied_at) and the data survives.
    {
        auto s = open();
        sync_write(*s, [](st::transaction& tx) { tx.insert_task(make_task("ext_a")); });
    }
    EXPECT_EQ(raw_query(db_path(), "SELECT applied_at FROM schema_migrations"), applied);
    {
        auto s = open();
        bool found = false;
        sync_read(*s, [&](st::transaction& tx) { found = tx.get_task("ext_a").has_value(); });
        EXPECT_TRUE(found);
    }

    // A database written by newer code is refused.
    raw_query(db_path(), "INSERT INTO schema_migrations VALUES (" +
                             std::to_string(st::sqlite_schema_version() + 1) + ", 0)");
    EXPECT_THROW(open(), st::store_error);
}

// Migration 4 rebuilds events, outputs and attempts WITHOUT ROWID: a database written by the
// schema before it keeps every row, and the rebuilt tables work as before.
TEST_F(StoreTest, Migration4KeepsTheRowsOfAVersion3Database) {
    ASSERT_GE(st::sqlite_schema_version(), 4);
    {
        sqlite3* db = nullptr;
        ASSERT_EQ(sqlite3_open_v2(db_path().c_str(), &db,
                                  SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE, nullptr),
                  SQLITE_OK);
        sqlite3_close(db);
    }
    const auto migrations = segue::store::detail::sqlite_migrations();
    std::string v3 =
        "PRAGMA journal_mode = WAL; CREATE TABLE schema_migrations (version INTEGER PRIMARY KEY, "
        "applied_at INTEGER NOT NULL);";
    for (int i = 0; i < 3; ++i)
        v3 += std::string(migrations[static_cast<std::size_t>(i)]) +
              "; INSERT INTO schema_migrations VALUES (" + std::to_string(i + 1) + ", 1);";
    v3 += R"sql(
INSERT INTO tasks (id, tenant, status, num_outputs, created_at, updated_at)
    VALUES ('ext_old', 'tenant_a', 'running', 2, 1, 1);
INSERT INTO events (id, task_id, tenant, seq, type, data_json, created_at) VALUES
    ('evt_1', 'ext_old', 'tenant_a', 1, 'extension.queued', '{}', 1),
    ('evt_2', 'ext_old', 'tenant_a', 2, 'extension.submitted', '{"a":1}', 2);
INSERT INTO outputs (task_id, idx, status, data_json, updated_at) VALUES
    ('ext_old', 1, 'ready', '{"u":1}', 3), ('ext_old', 2, 'pending', '{}', 3);
INSERT INTO attempts (task_id, number, provider, callback_token, status, started_at)
    VALUES ('ext_old', 1, 'sandbox', 'tok_hash', 'running', 2);
)sql";
    raw_query(db_path(), v3);

    auto s = open();
    EXPECT_EQ(raw_query(db_path(), "SELECT MAX(version) FROM schema_migrations"),
              std::vector<std::string>{std::to_string(st::sqlite_schema_version())});
    for (const char* table : {"events", "outputs", "attempts"}) {
        const auto sql = raw_query(
            db_path(), std::string("SELECT sql FROM sqlite_master WHERE name = '") + table + "'");
        ASSERT_EQ(sql.size(), 1u) << table;
        EXPECT_NE(sql[0].find("WITHOUT ROWID"), std::string::npos) << sql[0];
    }
    sync_read(*s, [](st::transaction& tx) {
        const auto evs = tx.get_events("ext_old", 0, 10);
        ASSERT_EQ(evs.size(), 2u);
        EXPECT_EQ(evs[0].id, "evt_1");
        EXPECT_EQ(evs[1].data_json, R"({"a":1})");
        const auto outs = tx.get_outputs("ext_old");
        ASSERT_EQ(outs.size(), 2u);
        EXPECT_EQ(outs[0].data_json, R"({"u":1})");
        const auto att = tx.find_attempt_by_token("tok_hash");
        ASSERT_TRUE(att);
        EXPECT_EQ(att->provider, "sandbox");
    });
    // Writing goes on where the old rows end; deleting a task still cascades.
    sync_write(*s, [](st::transaction& tx) {
        EXPECT_EQ(tx.append_event({"", "ext_old", "tenant_a", 0, "extension.running", "{}", 0}).seq,
                  3);
        tx.upsert_output({"ext_old", 2, "ready", "{}", 4});
    });
    s->close();
    raw_query(db_path(), "PRAGMA foreign_keys = ON; DELETE FROM tasks WHERE id = 'ext_old'");
    EXPECT_EQ(raw_query(db_path(), "SELECT COUNT(*) FROM events"), std::vector<std::string>{"0"});
    EXPECT_EQ(raw_query(db_path(), "SELECT COUNT(*) FROM outputs"), std::vector<std::string>{"0"});
    EXPECT_EQ(raw_query(db_path(), "SELECT COUNT(*) FROM attempts"), std::vector<std::string>{"0"});
}

TEST_F(StoreTest, OpenRejectsMemoryAndBadPaths) {
    st::sqlite_options o;
    o.path = ":memory:";
    EXPECT_THROW(st::open_sqlite(o), st::store_error);
    o.path = (dir_.path() / "missing_dir" / "x.db").string();
    EXPECT_THROW(st::open_sqlite(o), st::store_error);
}

// The key of signed file URLs, when none is configured, is such a secret: links handed out
// before a restart, or by another replica, must still check.
TEST_P(StoreEngineTest, ASecretIsTheFirstWritersAcrossWritersReopensAndStores) {
    std::string first, again, other;
    {
        auto s = open();
        run_sync(*s, true, [&](st::transaction& tx) {
            first = tx.ensure_secret("url_signing_key", "one", 1000);
            again = tx.ensure_secret("url_signing_key", "two", 2000);
            other = tx.ensure_secret("another", "three", 3000);
        });
        s->close();
    }
    EXPECT_EQ(first, "one");
    EXPECT_EQ(again, "one");
    EXPECT_EQ(other, "three");

    // Reopened (a restart), and with a second store on the same database (PostgreSQL: another
    // replica), every writer racing with its own fresh value: all get the one stored first.
    std::vector<std::unique_ptr<st::store>> stores;
    stores.push_back(open());
    if (postgres())
        stores.push_back(open());
    std::vector<std::string> got(8);
    std::vector<std::thread> ts;
    for (std::size_t i = 0; i < got.size(); ++i)
        ts.emplace_back([&, i] {
            run_sync(*stores[i % stores.size()], true, [&](st::transaction& tx) {
                got[i] = tx.ensure_secret("url_signing_key", "fresh-" + std::to_string(i), 4000);
                got[i] += "|" + tx.ensure_secret("race", "r" + std::to_string(i), 4000);
            });
        });
    for (auto& t : ts)
        t.join();
    const std::string race_winner = got[0].substr(got[0].find('|') + 1);
    EXPECT_EQ(race_winner.rfind('r', 0), 0u) << got[0];
    for (const auto& g : got)
        EXPECT_EQ(g, "one|" + race_winner);
    for (auto& s : stores)
        s->close();
}

TEST_P(StoreEngineTest, TasksInsertGetUpdateAndList) {
    auto s = open();
    sync_write(*s, [](st::transaction& tx) { tx.insert_task(make_task("ext_1")); });

    std::optional<st::task_row> got;
    sync_read(*s, [&](st::transaction& tx) { got = tx.get_task("ext_1"); });
    ASSERT_TRUE(got);
    EXPECT_EQ(got->tenant, "tenant_a");
    EXPECT_EQ(got->status, "queued");
    EXPECT_EQ(got->request_json, R"({"audio":"file_1"})");
    EXPECT_EQ(got->error_json, "");
    EXPECT_EQ(got->num_outputs, 2);
    EXPECT_EQ(got->version, 0);

    std::int64_t v1 = 0, v2 = 0, missing = -1;
    sync_write(*s, [&](st::transaction& tx) {
        auto t = *tx.get_task("ext_1");
        t.status = "running";
        t.provider = "alpha";
        t.updated_at = 2000;
        v1 = tx.update_task(t);
        t.error_json = R"({"code":"x"})";
        v2 = tx.update_task(t);
        missing = tx.update_task(make_task("ext_nope"));
    });
    EXPECT_EQ(v1, 1);
    EXPECT_EQ(v2, 2);
    EXPECT_EQ(missing, 0);
    sync_read(*s, [&](st::transaction& tx) { got = tx.get_task("ext_1"); });
    EXPECT_EQ(got->status, "running");
    EXPECT_EQ(got->provider, "alpha");
    EXPECT_EQ(got->error_json, R"({"code":"x"})");
    EXPECT_EQ(got->updated_at, 2000);
    EXPECT_EQ(got->version, 2);
    sync_read(*s, [&](st::transaction& tx) { EXPECT_FALSE(tx.get_task("ext_nope")); });

    // Duplicate ids fail the unit.
    EXPECT_THROW(sync_write(*s, [](st::transaction& tx) { tx.insert_task(make_task("ext_1")); }),
                 st::store_error);

    // Paging: newest first, (created_at, id) keyset, per tenant.
    sync_write(*s, [](st::transaction& tx) {
        for (int i = 2; i <= 6; ++i)
            tx.insert_task(make_task("ext_p" + std::to_string(i), "tenant_p", 100 * i));
        tx.insert_task(make_task("ext_p6b", "tenant_p", 600));  // same created_at as ext_p6
        tx.insert_task(make_task("ext_other", "tenant_q", 650));
    });
    auto ids = [](const std::vector<st::task_row>& v) {
        std::vector<std::string> out;
        for (const auto& t : v)
            out.push_back(t.id);
        return out;
    };
    std::vector<st::task_row> page;
    sync_read(*s, [&](st::transaction& tx) { page = tx.list_tasks("tenant_p", 3, ""); });
    EXPECT_EQ(ids(page), (std::vector<std::string>{"ext_p6b", "ext_p6", "ext_p5"}));
    sync_read(*s, [&](st::transaction& tx) { page = tx.list_tasks("tenant_p", 3, "ext_p5"); });
    EXPECT_EQ(ids(page), (std::vector<std::string>{"ext_p4", "ext_p3", "ext_p2"}));
    sync_read(*s, [&](st::transaction& tx) { page = tx.list_tasks("tenant_p", 3, "ext_p6b"); });
    EXPECT_EQ(ids(page), (std::vector<std::string>{"ext_p6", "ext_p5", "ext_p4"}));
    sync_read(*s, [&](st::transaction& tx) { page = tx.list_tasks("tenant_p", 3, "ext_p2"); });
    EXPECT_TRUE(page.empty());
    // A cursor from another tenant (or unknown) yields nothing rather than leaking.
    sync_read(*s, [&](st::transaction& tx) { page = tx.list_tasks("tenant_p", 3, "ext_other"); });
    EXPECT_TRUE(page.empty());
    sync_read(*s, [&](st::transaction& tx) { page = tx.list_tasks("tenant_q", 10, ""); });
    EXPECT_EQ(ids(page), (std::vector<std::string>{"ext_other"}));
}

TEST_P(StoreEngineTest, OutputsAndAttemptsUpsertAndTokenLookup) {
    auto s = open();
    sync_write(*s, [](st::transaction& tx) {
        tx.insert_task(make_task("ext_1"));
        tx.insert_task(make_task("ext_2"));
        tx.upsert_output({"ext_1", 2, "pending", "", 10});
        tx.upsert_output({"ext_1", 1, "pending", "", 10});
        tx.upsert_output({"ext_1", 1, "ready", R"({"url":"u1"})", 20});  // update in place
        tx.upsert_attempt({"ext_1", 1, "alpha", "", "tok_1", "submitting", "", "", 100, 0});
        tx.upsert_attempt({"ext_1", 1, "alpha", "p-1", "tok_1", "accepted", "", "{}", 100, 0, 150});
        tx.upsert_attempt({"ext_1", 2, "beta", "", "", "submitting", "", "", 200, 0});
        tx.upsert_attempt({"ext_2", 1, "beta", "", "tok_2", "failed", R"({"e":1})", "", 1, 2});
    });

    std::vector<st::output_row> outs;
    std::vector<st::attempt_row> atts;
    std::optional<st::attempt_row> by1, by2, by_empty, by_none;
    sync_read(*s, [&](st::transaction& tx) {
        outs = tx.get_outputs("ext_1");
        atts = tx.get_attempts("ext_1");
        by1 = tx.find_attempt_by_token("tok_1");
        by2 = tx.find_attempt_by_token("tok_2");
        by_empty = tx.find_attempt_by_token("");
        by_none = tx.find_attempt_by_token("tok_");
    });
    ASSERT_EQ(outs.size(), 2u);
    EXPECT_EQ(outs[0].index, 1);
    EXPECT_EQ(outs[0].status, "ready");
    EXPECT_EQ(outs[0].data_json, R"({"url":"u1"})");
    EXPECT_EQ(outs[0].updated_at, 20);
    EXPECT_EQ(outs[1].index, 2);
    EXPECT_EQ(outs[1].status, "pending");

    ASSERT_EQ(atts.size(), 2u);
    EXPECT_EQ(atts[0].number, 1);
    EXPECT_EQ(atts[0].provider_task_id, "p-1");
    EXPECT_EQ(atts[0].status, "accepted");
    EXPECT_EQ(atts[0].state_json, "{}");
    EXPECT_EQ(atts[0].seen_at, 150);
    EXPECT_EQ(atts[1].number, 2);
    EXPECT_EQ(atts[1].seen_at, 0);
    EXPECT_EQ(atts[1].provider, "beta");

    ASSERT_TRUE(by1);
    EXPECT_EQ(by1->task_id, "ext_1");
    EXPECT_EQ(by1->number, 1);
    EXPECT_EQ(by1->seen_at, 150);
    ASSERT_TRUE(by2);
    EXPECT_EQ(by2->task_id, "ext_2");
    EXPECT_EQ(by2->error_json, R"({"e":1})");
    EXPECT_EQ(by2->finished_at, 2);
    EXPECT_FALSE(by_empty);  // "" means "no token", even though attempt 2 has ""
    EXPECT_FALSE(by_none);   // exact match only

    // Children of a missing task violate the foreign key: the unit fails.
    EXPECT_THROW(sync_write(*s,
                            [](st::transaction& tx) {
                                tx.upsert_output({"ext_missing", 1, "pending", "", 1});
                            }),
                 st::store_error);
}

TEST_P(StoreEngineTest, EventsConsecutiveSeqsUnderConcurrentWriters) {
    auto s = open();
    const std::vector<std::string> tasks = {"ext_e0", "ext_e1", "ext_e2"};
    sync_write(*s, [&](st::transaction& tx) {
        for (const auto& id : tasks)
            tx.insert_task(make_task(id));
    });

    constexpr int threads = 4, per_thread = 200;
    countdown left(threads * per_thread);
    std::atomic<int> failures{0};
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                const std::string task = tasks[(t * per_thread + i) % tasks.size()];
                s->submit_write(
                    [task, t, i](st::transaction& tx) {
                        st::event_row e;
                        e.task_id = task;
                        e.tenant = "tenant_a";
                        e.type = "task.progress";
                        e.data_json =
                            "{\"t\":" + std::to_string(t) + ",\"i\":" + std::to_string(i) + "}";
                        const auto out = tx.append_event(e);
                        if (out.seq < 1 || out.id.empty() || out.created_at == 0)
                            throw std::runtime_error("append_event did not fill the row");
                    },
                    [&](std::exception_ptr e) {
                        if (e)
                            ++failures;
                        left.arrive();
                    });
            }
        });
    }
    for (auto& th : pool)
        th.join();
    left.wait();
    EXPECT_EQ(failures.load(), 0);

    std::set<std::string> ids;
    std::size_t total = 0;
    for (const auto& task : tasks) {
        std::vector<st::event_row> events;
        sync_read(*s, [&](st::transaction& tx) { events = tx.get_events(task, 0, 10'000); });
        total += events.size();
        for (std::size_t k = 0; k < events.size(); ++k) {
            ASSERT_EQ(events[k].seq, static_cast<std::int64_t>(k + 1)) << task;
            EXPECT_EQ(events[k].task_id, task);
            EXPECT_EQ(events[k].id.size(), 4u + 26u);
            EXPECT_EQ(events[k].id.rfind("evt_", 0), 0u);
            ids.insert(events[k].id);
        }
    }
    EXPECT_EQ(total, static_cast<std::size_t>(threads * per_thread));
    EXPECT_EQ(ids.size(), total);

    // after_seq and limit; a caller-chosen id and created_at are kept.
    std::vector<st::event_row> tail;
    st::event_row kept;
    sync_write(*s, [&](st::transaction& tx) {
        kept = tx.append_event({"evt_custom", "ext_e0", "tenant_a", 0, "task.done", "{}", 42});
    });
    EXPECT_EQ(kept.id, "evt_custom");
    EXPECT_EQ(kept.created_at, 42);
    sync_read(*s, [&](st::transaction& tx) { tail = tx.get_events("ext_e0", kept.seq - 3, 2); });
    ASSERT_EQ(tail.size(), 2u);
    EXPECT_EQ(tail[0].seq, kept.seq - 2);
    EXPECT_EQ(tail[1].seq, kept.seq - 1);
    sync_read(*s, [&](st::transaction& tx) { tail = tx.get_events("ext_e0", kept.seq - 1, 10); });
    ASSERT_EQ(tail.size(), 1u);
    EXPECT_EQ(tail[0].id, "evt_custom");
    EXPECT_EQ(tail[0].type, "task.done");
}

TEST_F(StoreTest, GroupFailingUnitRollsBackAlone) {
    auto s = open();
    writer_gate gate;
    gate.hold(*s);  // the next three units queue up behind it and run as one group
    const auto before = s->stats();

    std::promise<std::exception_ptr> ra, rb, rc;
    auto fa = ra.get_future(), fb = rb.get_future(), fc = rc.get_future();
    s->submit_write([](st::transaction& tx) { tx.insert_task(make_task("ext_a")); },
                    [&](std::exception_ptr e) { ra.set_value(e); });
    s->submit_write(
        [](st::transaction& tx) {
            tx.insert_task(make_task("ext_b"));
            st::event_row e{"", "ext_b", "tenant_a", 0, "task.created", "{}", 0};
            tx.append_event(e);
            throw std::runtime_error("unit b gives up");
        },
        [&](std::exception_ptr e) { rb.set_value(e); });
    s->submit_write(
        [](st::transaction& tx) {
            tx.insert_task(make_task("ext_c"));
            tx.append_event({"", "ext_c", "tenant_a", 0, "task.created", "{}", 0});
        },
        [&](std::exception_ptr e) { rc.set_value(e); });
    gate.release();

    EXPECT_EQ(fa.get(), nullptr);
    const auto eb = fb.get();
    ASSERT_NE(eb, nullptr);
    try {
        std::rethrow_exception(eb);
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "unit b gives up");  // the unit's own exception, unchanged
    }
    EXPECT_EQ(fc.get(), nullptr);

    const auto after = s->stats();
    // The gate's own group (1 unit) committed meanwhile; a, (b), c shared one more commit and b
    // was not committed.
    EXPECT_EQ(after.commits - before.commits, 1u + 1u);
    EXPECT_EQ(after.units - before.units, 1u + 2u);

    sync_read(*s, [](st::transaction& tx) {
        EXPECT_TRUE(tx.get_task("ext_a"));
        EXPECT_FALSE(tx.get_task("ext_b"));
        EXPECT_TRUE(tx.get_events("ext_b", 0, 10).empty());
        EXPECT_TRUE(tx.get_task("ext_c"));
        EXPECT_EQ(tx.get_events("ext_c", 0, 10).size(), 1u);
    });
}

TEST_F(StoreTest, CompletionRunsAfterCommit) {
    auto s = open();
    std::promise<void> done;
    auto done_f = done.get_future();
    bool seen_by_reader = false;
    std::vector<std::string> seen_raw;
    s->submit_write(
        [](st::transaction& tx) { tx.insert_task(make_task("ext_vis")); },
        [&](std::exception_ptr e) {
            ASSERT_EQ(e, nullptr);
            // Committed: another connection sees it...
            seen_raw = raw_query(db_path(), "SELECT id FROM tasks");
            // ...and so does a read submitted from the completion.
            s->submit_read(
                [&](st::transaction& tx) { seen_by_reader = tx.get_task("ext_vis").has_value(); },
                [&](std::exception_ptr) { done.set_value(); });
        });
    ASSERT_EQ(done_f.wait_for(std::chrono::seconds(10)), std::future_status::ready);
    EXPECT_TRUE(seen_by_reader);
    EXPECT_EQ(seen_raw, std::vector<std::string>{"ext_vis"});
}

TEST_F(StoreTest, GroupCommitBatches) {
    auto s = open();
    constexpr int n = 500;
    countdown left(n);
    std::atomic<int> failures{0};
    for (int i = 0; i < n; ++i)
        s->submit_write(
            [i](st::transaction& tx) { tx.insert_task(make_task("ext_g" + std::to_string(i))); },
            [&](std::exception_ptr e) {
                if (e)
                    ++failures;
                left.arrive();
            });
    left.wait();
    EXPECT_EQ(failures.load(), 0);
    const auto stats = s->stats();
    std::printf("[ store ] group commit: %llu units in %llu commits\n",
                static_cast<unsigned long long>(stats.units),
                static_cast<unsigned long long>(stats.commits));
    EXPECT_EQ(stats.units, static_cast<std::uint64_t>(n));
    EXPECT_LT(stats.commits, stats.units);
}

// With synchronous_full the WAL is fsynced by a syncer thread, once for every group committed
// since its last sync, before those groups' completions run; completions keep the order of
// the submissions.
TEST_F(StoreTest, SyncerCompletesInSubmissionOrderAfterOneSyncPerBatch) {
    for (bool full : {true, false}) {
        SCOPED_TRACE(full ? "synchronous_full" : "no sync");
        auto s = open(full);
        constexpr int n = 300;
        countdown left(n);
        std::mutex m;
        std::vector<int> order;
        for (int i = 0; i < n; ++i)
            s->submit_write(
                [i, full](st::transaction& tx) {
                    tx.insert_task(
                        make_task("ext_o" + std::to_string(full) + "_" + std::to_string(i)));
                },
                [&, i, full](std::exception_ptr e) {
                    EXPECT_FALSE(e);
                    // Durable before completed: the sync covering this unit already happened.
                    if (full)
                        EXPECT_GT(s->stats().syncs, 0u);
                    {
                        std::lock_guard lk(m);
                        order.push_back(i);
                    }
                    left.arrive();
                });
        left.wait();
        std::vector<int> expected(n);
        for (int i = 0; i < n; ++i)
            expected[i] = i;
        EXPECT_EQ(order, expected);
        const auto stats = s->stats();
        std::printf("[ store ] %s: %llu units, %llu commits, %llu syncs\n",
                    full ? "full" : "normal", static_cast<unsigned long long>(stats.units),
                    static_cast<unsigned long long>(stats.commits),
                    static_cast<unsigned long long>(stats.syncs));
        if (full) {
            EXPECT_GT(stats.syncs, 0u);
            EXPECT_LE(stats.syncs, stats.commits);
        } else {
            EXPECT_EQ(stats.syncs, 0u);
        }
    }
}

namespace {

// Holds the syncer at its next fdatasync of the WAL (sqlite_options::before_sync) until
// released; the held sync then happens, or fails.
class sync_gate {
  public:
    std::function<void()> hook() {
        return [this] {
            std::unique_lock lk(m_);
            if (!armed_)
                return;
            armed_ = false;
            held_ = true;
            cv_.notify_all();
            cv_.wait(lk, [&] { return released_; });
            held_ = false;
            if (fail_)
                throw std::runtime_error("injected fdatasync failure");
        };
    }
    void arm() {
        std::lock_guard lk(m_);
        armed_ = true;
        released_ = false;
    }
    // True once the syncer is held (a committed group waits for its sync).
    bool wait_held() {
        std::unique_lock lk(m_);
        return cv_.wait_for(lk, std::chrono::seconds(10), [&] { return held_; });
    }
    void release(bool fail = false) {
        {
            std::lock_guard lk(m_);
            fail_ = fail;
            released_ = true;
        }
        cv_.notify_all();
    }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    bool armed_ = false, held_ = false, released_ = true, fail_ = false;
};

// Releases the gate when it goes out of scope, so a failed assertion cannot leave close() (in
// the store's destructor) waiting for a held sync. Declare it after the store.
struct release_on_exit {
    sync_gate& gate;
    ~release_on_exit() { gate.release(); }
};

template <typename T>
bool ready_within(std::future<T>& f, std::chrono::milliseconds d) {
    return f.wait_for(d) == std::future_status::ready;
}

std::string store_error_of(std::exception_ptr e) {
    if (!e)
        return "";
    try {
        std::rethrow_exception(e);
    } catch (const st::store_error& err) {
        return err.what();
    } catch (...) {
        return "not a store_error";
    }
}

}  // namespace

// A read must not show a commit before it is durable: a GET or an SSE stream could otherwise
// show an event that a power loss right after would undo. The syncer is held after a group's
// COMMIT: the group is visible to any WAL reader, yet the store's reads wait for its sync.
TEST_F(StoreTest, ReadsSeeOnlyDurableCommits) {
    sync_gate gate;
    st::sqlite_options o;
    o.path = db_path();
    o.before_sync = gate.hook();
    auto s = st::open_sqlite(o);
    release_on_exit guard{gate};

    sync_write(*s, [](st::transaction& tx) { tx.insert_task(make_task("ext_before")); });
    // Nothing pending: reads run at once, without waiting (the cheap path: two atomic loads).
    for (int i = 0; i < 20; ++i)
        sync_read(*s, [](st::transaction& tx) { EXPECT_TRUE(tx.get_task("ext_before")); });
    EXPECT_EQ(s->stats().read_waits, 0u);

    gate.arm();
    std::promise<std::exception_ptr> written;
    auto written_f = written.get_future();
    s->submit_write([](st::transaction& tx) { tx.insert_task(make_task("ext_held")); },
                    [&](std::exception_ptr e) { written.set_value(e); });
    ASSERT_TRUE(gate.wait_held());  // committed; its fdatasync is held
    // Committed: another connection already sees it...
    EXPECT_EQ(raw_query(db_path(), "SELECT COUNT(*) FROM tasks WHERE id = 'ext_held'"),
              std::vector<std::string>{"1"});
    // ...but the store's reads wait for the sync (reads of older rows too: their snapshot
    // holds the new commit).
    std::promise<bool> seen, old_seen;
    auto seen_f = seen.get_future();
    auto old_seen_f = old_seen.get_future();
    s->submit_read(
        [&](st::transaction& tx) { seen.set_value(tx.get_task("ext_held").has_value()); }, nullptr);
    s->submit_read(
        [&](st::transaction& tx) { old_seen.set_value(tx.get_task("ext_before").has_value()); },
        nullptr);
    EXPECT_FALSE(ready_within(seen_f, std::chrono::milliseconds(300)));
    EXPECT_FALSE(ready_within(old_seen_f, std::chrono::milliseconds(0)));
    EXPECT_FALSE(ready_within(written_f, std::chrono::milliseconds(0)));

    gate.release();
    ASSERT_TRUE(ready_within(seen_f, std::chrono::seconds(10)));
    EXPECT_TRUE(seen_f.get());
    ASSERT_TRUE(ready_within(old_seen_f, std::chrono::seconds(10)));
    EXPECT_TRUE(old_seen_f.get());
    ASSERT_TRUE(ready_within(written_f, std::chrono::seconds(10)));
    EXPECT_EQ(written_f.get(), nullptr);
    EXPECT_EQ(s->stats().read_waits, 1u);  // the second read found the sync done

    // Synced: cheap again.
    sync_read(*s, [](st::transaction& tx) { EXPECT_TRUE(tx.get_task("ext_held")); });
    EXPECT_EQ(s->stats().read_waits, 1u);
}

// A read waiting for a sync that fails fails with store_error (never hangs, never shows the
// commit); so do later reads: their snapshots hold that commit, which will never be durable.
TEST_F(StoreTest, ReadWaitingForAFailedSyncFails) {
    sync_gate gate;
    st::sqlite_options o;
    o.path = db_path();
    o.before_sync = gate.hook();
    auto s = st::open_sqlite(o);
    release_on_exit guard{gate};

    sync_write(*s, [](st::transaction& tx) { tx.insert_task(make_task("ext_ok")); });
    gate.arm();
    std::promise<std::exception_ptr> written, read;
    auto written_f = written.get_future();
    auto read_f = read.get_future();
    s->submit_write([](st::transaction& tx) { tx.insert_task(make_task("ext_lost")); },
                    [&](std::exception_ptr e) { written.set_value(e); });
    ASSERT_TRUE(gate.wait_held());
    bool ran = false;
    s->submit_read([&](st::transaction& tx) { ran = tx.get_task("ext_lost").has_value(); },
                   [&](std::exception_ptr e) { read.set_value(e); });
    // Waiting for the held sync.
    for (int i = 0; i < 1000 && s->stats().read_waits == 0; ++i)
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    ASSERT_EQ(s->stats().read_waits, 1u);

    gate.release(/*fail=*/true);
    ASSERT_TRUE(ready_within(read_f, std::chrono::seconds(10)));
    EXPECT_NE(store_error_of(read_f.get()).find("fsync"), std::string::npos);
    EXPECT_FALSE(ran);
    ASSERT_TRUE(ready_within(written_f, std::chrono::seconds(10)));
    EXPECT_NE(store_error_of(written_f.get()).find("fsync"), std::string::npos);

    std::promise<std::exception_ptr> later;
    auto later_f = later.get_future();
    s->submit_read([](st::transaction& tx) { tx.get_task("ext_ok"); },
                   [&](std::exception_ptr e) { later.set_value(e); });
    ASSERT_TRUE(ready_within(later_f, std::chrono::seconds(10)));
    EXPECT_NE(store_error_of(later_f.get()).find("fsync"), std::string::npos);
}

// A write unit that changes nothing (a claim round that finds no due job, every 100 ms per
// worker even when idle) commits without appending a WAL frame, so it costs no fdatasync;
// the next unit that changes a row is synced as before, and a failed sync still fails it.
TEST_F(StoreTest, AWriteThatChangesNothingIsNotSynced) {
    sync_gate gate;
    st::sqlite_options o;
    o.path = db_path();
    o.synchronous_full = true;
    o.before_sync = gate.hook();
    auto s = st::open_sqlite(o);
    release_on_exit guard{gate};

    sync_write(*s, [](st::transaction& tx) { tx.insert_task(make_task("ext_first")); });
    const auto synced = s->stats().syncs;
    ASSERT_GT(synced, 0u);
    const auto commits = s->stats().commits;
    for (int i = 0; i < 20; ++i)
        sync_write(*s, [](st::transaction& tx) {
            EXPECT_TRUE(tx.get_task("ext_first"));
            EXPECT_TRUE(tx.claim_jobs("w", tx.clock_ms(), 1000, 8, {}).empty());
        });
    EXPECT_EQ(s->stats().commits, commits + 20);
    EXPECT_EQ(s->stats().syncs, synced);

    // A change after them is synced, and its completion waits for that sync.
    gate.arm();
    std::promise<std::exception_ptr> written;
    auto written_f = written.get_future();
    s->submit_write([](st::transaction& tx) { tx.insert_task(make_task("ext_second")); },
                    [&](std::exception_ptr e) { written.set_value(e); });
    ASSERT_TRUE(gate.wait_held());
    EXPECT_FALSE(ready_within(written_f, std::chrono::milliseconds(100)));
    gate.release(/*fail=*/true);
    ASSERT_TRUE(ready_within(written_f, std::chrono::seconds(10)));
    EXPECT_NE(store_error_of(written_f.get()).find("fsync"), std::string::npos);
}

// After a failed fdatasync of the WAL nothing since the last good sync can be trusted to be on
// disk: writes are refused, and the WAL is neither checkpointed nor deleted at close (SQLite
// would copy frames read back from the disk into the database), and its shared index goes, so
// the next open recovers from the WAL itself. Every acknowledged write is found there.
TEST_F(StoreTest, AfterAFailedSyncTheWalIsLeftForTheNextStartToRecover) {
    std::atomic<bool> fail{false};
    st::sqlite_options o;
    o.path = db_path();
    o.synchronous_full = true;
    o.checkpoint_pages = 16;  // background checkpoints and tails run before the failure
    o.before_sync = [&] {
        if (fail.load())
            throw std::runtime_error("injected");
    };
    auto s = st::open_sqlite(o);
    const std::string big(8 * 1024, 'x');
    auto write_one = [&](int i) {
        std::promise<std::exception_ptr> p;
        auto f = p.get_future();
        s->submit_write(
            [&, i](st::transaction& tx) {
                auto t = make_task("ext_d" + std::to_string(i));
                t.request_json = big;
                tx.insert_task(t);
            },
            [&](std::exception_ptr e) { p.set_value(e); });
        return f.get();
    };
    int acknowledged = 0;
    for (; acknowledged < 200; ++acknowledged)
        ASSERT_FALSE(write_one(acknowledged));
    ASSERT_GT(s->stats().checkpoints, 0u);
    fail = true;
    for (int i = acknowledged; i < acknowledged + 5; ++i) {
        const auto e = write_one(i);
        ASSERT_TRUE(e);
        EXPECT_NE(store_error_of(e).find("fsync"), std::string::npos);
    }
    s->close();
    s.reset();
    ASSERT_TRUE(fs::exists(db_path() + "-wal"));
    EXPECT_GT(fs::file_size(db_path() + "-wal"), 0u);
    EXPECT_FALSE(fs::exists(db_path() + "-shm"));
    auto again = open();
    std::int64_t count = 0;
    sync_read(*again, [&](st::transaction& tx) {
        count = static_cast<std::int64_t>(tx.list_tasks("tenant_a", 5000, "").size());
        for (int i = 0; i < acknowledged; ++i)
            if (!tx.get_task("ext_d" + std::to_string(i)))
                ADD_FAILURE() << "ext_d" << i << " was acknowledged and is gone";
    });
    EXPECT_GE(count, acknowledged);
}

// Reads interleaved with a stream of writes all succeed and see every write completed before
// them (with synchronous_full some wait for a sync, as many as the timing makes); without
// synchronous_full (no fsync at all) reads never wait.
TEST_P(StoreEngineTest, ReadsInterleavedWithWrites) {
    for (bool full : {true, false}) {
        SCOPED_TRACE(full ? "synchronous_full" : "no sync");
        temp_dir dir;
        st::sqlite_options o;
        o.path = (dir.path() / "segue.db").string();
        o.synchronous_full = full;
        o.max_batch = 4;  // many small groups, so that reads meet pending syncs
        auto s = st::open_sqlite(o);
        constexpr int n = 400;
        countdown left(2 * n);
        std::atomic<int> failures{0}, completed{0}, missing{0};
        for (int i = 0; i < n; ++i)
            s->submit_write(
                [i](st::transaction& tx) {
                    tx.insert_task(make_task("ext_i" + std::to_string(i)));
                },
                [&](std::exception_ptr e) {
                    if (e)
                        ++failures;
                    ++completed;
                    left.arrive();
                });
        for (int i = 0; i < n; ++i) {
            // Completions run in submission order: writes 0 .. done_before-1 are done, so in
            // the read's snapshot.
            const int done_before = completed.load();
            s->submit_read(
                [&, done_before](st::transaction& tx) {
                    for (int k = 0; k < done_before; ++k)
                        if (!tx.get_task("ext_i" + std::to_string(k)))
                            ++missing;
                },
                [&](std::exception_ptr e) {
                    if (e)
                        ++failures;
                    left.arrive();
                });
        }
        left.wait();
        EXPECT_EQ(failures.load(), 0);
        EXPECT_EQ(missing.load(), 0);
        const auto stats = s->stats();
        std::printf("[ store ] %s: %d reads, %llu waited for a sync\n", full ? "full" : "normal", n,
                    static_cast<unsigned long long>(stats.read_waits));
        if (!full)
            EXPECT_EQ(stats.read_waits, 0u);
    }
}

TEST_F(StoreTest, GroupRespectsMaxBatch) {
    auto s = open(true, 4);
    writer_gate gate;
    gate.hold(*s);
    const auto before = s->stats();
    countdown left(10);
    for (int i = 0; i < 10; ++i)
        s->submit_write(
            [i](st::transaction& tx) { tx.insert_task(make_task("ext_m" + std::to_string(i))); },
            [&](std::exception_ptr) { left.arrive(); });
    gate.release();
    left.wait();
    const auto after = s->stats();
    EXPECT_EQ(after.units - before.units, 1u + 10u);     // the gate's unit, then ours
    EXPECT_EQ(after.commits - before.commits, 1u + 3u);  // the gate's group, then 4 + 4 + 2
}

// Checkpoints run in the background (and are finished by the writer between groups): the WAL
// is copied into the database file and starts over, so it stays small however much is written.
// The count is of background checkpoints that copied frames: until 2026-12-06 the
// checkpointer's connection had never read the database, so SQLite treated it as not in WAL
// mode and each of its checkpoints did nothing, and the writer's tail did all the copying.
TEST_F(StoreTest, BackgroundCheckpointsKeepTheWalSmall) {
    st::sqlite_options o;
    o.path = db_path();
    o.synchronous_full = false;  // the checkpoints are the same; the test is faster
    o.checkpoint_pages = 64;     // 256 KiB
    auto s = st::open_sqlite(o);
    const std::string big(8 * 1024, 'x');
    constexpr int waves = 40, per_wave = 50;  // 2,000 tasks, > 16 MB of rows
    std::uintmax_t largest_wal = 0;
    for (int w = 0; w < waves; ++w) {
        countdown left(per_wave);
        std::atomic<int> failures{0};
        for (int i = 0; i < per_wave; ++i)
            s->submit_write(
                [&, id = "ext_w" + std::to_string(w * per_wave + i)](st::transaction& tx) {
                    auto t = make_task(id);
                    t.request_json = big;
                    tx.insert_task(t);
                },
                [&](std::exception_ptr e) {
                    if (e)
                        ++failures;
                    left.arrive();
                });
        left.wait();
        ASSERT_EQ(failures.load(), 0);
        std::error_code ec;
        largest_wal = std::max(largest_wal, std::filesystem::file_size(db_path() + "-wal", ec));
    }
    const auto stats = s->stats();
    std::printf("[ store ] %llu checkpoints, largest WAL %ju bytes\n",
                static_cast<unsigned long long>(stats.checkpoints), largest_wal);
    EXPECT_GT(stats.checkpoints, 0u);
    // Without checkpoints the WAL would hold all of it (> 16 MB).
    EXPECT_LT(largest_wal, 4u * 1024 * 1024);
    std::int64_t count = 0;
    sync_read(*s, [&](st::transaction& tx) {
        count = static_cast<std::int64_t>(tx.list_tasks("tenant_a", 5000, "").size());
    });
    EXPECT_EQ(count, waves * per_wave);
    s->close();
    // Reopened from the database file (the WAL is gone after a clean close): all there.
    auto again = open();
    sync_read(*again, [&](st::transaction& tx) {
        count = static_cast<std::int64_t>(tx.list_tasks("tenant_a", 5000, "").size());
    });
    EXPECT_EQ(count, waves * per_wave);
}

// Bad input changes nothing: a sqlite_path naming a file that is not a database is refused,
// the file is untouched (a one-byte file too, which SQLite alone would overwrite), and a lock
// file made for the attempt is gone again.
TEST_F(StoreTest, AFileThatIsNotADatabaseIsRefusedAndNothingIsLeftBesideIt) {
    const std::string path = db_path();
    {
        std::FILE* f = std::fopen(path.c_str(), "wb");
        ASSERT_NE(f, nullptr);
        std::fputs("these are somebody's notes, not a database\n", f);
        std::fclose(f);
    }
    const auto size = fs::file_size(path);
    st::sqlite_options o;
    o.path = path;
    EXPECT_THROW(st::open_sqlite(o), st::store_error);
    EXPECT_EQ(fs::file_size(path), size);
    EXPECT_FALSE(fs::exists(path + ".lock"));
    EXPECT_FALSE(fs::exists(path + "-wal"));
    // A lock file that was there before (another store's) is left where it was.
    fs::remove(path);
    auto s = st::open_sqlite(o);
    s->close();
    s.reset();
    ASSERT_TRUE(fs::exists(path + ".lock"));
    {
        std::FILE* f = std::fopen((path + "x").c_str(), "wb");
        std::fputs("x", f);  // one byte: SQLite alone would take it for an empty database
        std::fclose(f);
    }
    fs::rename(path + "x", path);
    EXPECT_THROW(st::open_sqlite(o), st::store_error);
    EXPECT_EQ(fs::file_size(path), 1u);
    EXPECT_TRUE(fs::exists(path + ".lock"));
}

// The lock is held on the file the path names: if the lock file is removed while a store waits
// for it (a failed open removes the one it made), the waiter locks the file made after, not the
// removed one, so two processes never both think they hold the database.
TEST_F(StoreTest, AWaiterWhoseLockFileWasRemovedLocksTheOneThereNow) {
    const std::string lock_path = db_path() + ".lock";
    const int held = ::open(lock_path.c_str(), O_RDWR | O_CREAT | O_CLOEXEC, 0644);
    ASSERT_GE(held, 0);
    ASSERT_EQ(::flock(held, LOCK_EX | LOCK_NB), 0);  // another process's, as far as it knows
    st::sqlite_options o;
    o.path = db_path();
    o.lock_wait_ms = 10'000;
    auto opened = std::async(std::launch::async, [&] { return st::open_sqlite(o); });
    // Let it open the file and start waiting, then take the file away and let go.
    std::this_thread::sleep_for(std::chrono::milliseconds(300));
    ASSERT_EQ(opened.wait_for(std::chrono::seconds(0)), std::future_status::timeout);
    ASSERT_EQ(::unlink(lock_path.c_str()), 0);
    ::close(held);
    auto s = opened.get();
    // The store holds the lock of the file at the path: nobody else can take it.
    ASSERT_TRUE(fs::exists(lock_path));
    const int probe = ::open(lock_path.c_str(), O_RDWR | O_CLOEXEC);
    ASSERT_GE(probe, 0);
    EXPECT_NE(::flock(probe, LOCK_EX | LOCK_NB), 0);
    EXPECT_EQ(errno, EWOULDBLOCK);
    ::close(probe);
    s->close();
}

TEST_P(StoreEngineTest, ReadUnitsCannotWrite) {
    auto s = open();
    EXPECT_THROW(sync_read(*s, [](st::transaction& tx) { tx.insert_task(make_task("ext_r")); }),
                 st::store_error);
    // The reader keeps working after a failed unit.
    sync_read(*s, [](st::transaction& tx) { EXPECT_FALSE(tx.get_task("ext_r")); });
}

// A submit job written already leased to `owner` for `lease_for` ms (an engine's hand-off to
// itself, as create_task writes it).
st::job_row leased_submit(const std::string& task, const std::string& owner, st::millis lease_for) {
    st::job_row j;
    j.kind = "submit";
    j.task_id = task;
    j.due_at = 1;
    j.lease_owner = owner;
    j.attempts = 1;
    j.lease_for = lease_for;
    return j;
}

// A job written leased (an engine's hand-off to itself): its lease runs from the store's own
// clock (PostgreSQL's, for every replica alike), taken by the insert: no claim takes it before
// the lease ends, any claim after.
TEST_P(StoreEngineTest, AJobLeasedAtInsertTakesItsLeaseFromTheStoresClock) {
    auto s = open();
    st::millis before = 0, after = 0;
    sync_write(*s, [&](st::transaction& tx) {
        before = tx.clock_ms();
        tx.schedule_job(leased_submit("ext_h", "w1", 60'000), false);
        after = tx.clock_ms();
    });
    std::vector<st::job_row> got;
    sync_write(*s,
               [&](st::transaction& tx) { got = tx.claim_jobs("w2", before + 59'000, 100, 10); });
    EXPECT_TRUE(got.empty());  // still leased to w1
    sync_write(*s,
               [&](st::transaction& tx) { got = tx.claim_jobs("w2", after + 60'001, 100, 10); });
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].lease_owner, "w2");
    EXPECT_EQ(got[0].attempts, 2);  // the insert's lease was the first claim
}

TEST_P(StoreEngineTest, JobsClaimLeaseExpiryAndOwnership) {
    auto s = open();
    std::int64_t id = 0;
    sync_write(*s, [&](st::transaction& tx) {
        id = tx.schedule_job({0, "poll", "ext_1", R"({"n":1})", 1000, "", 0, 0}, false);
    });
    ASSERT_GT(id, 0);

    std::vector<st::job_row> got;
    auto claim = [&](const char* owner, st::millis now, st::millis lease, int limit = 10) {
        sync_write(*s, [&](st::transaction& tx) { got = tx.claim_jobs(owner, now, lease, limit); });
        return got;
    };
    EXPECT_TRUE(claim("w1", 999, 100).empty());  // not due yet

    got = claim("w1", 1000, 100);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].id, id);
    EXPECT_EQ(got[0].kind, "poll");
    EXPECT_EQ(got[0].task_id, "ext_1");
    EXPECT_EQ(got[0].payload_json, R"({"n":1})");
    EXPECT_EQ(got[0].lease_owner, "w1");
    EXPECT_EQ(got[0].lease_until, 1100);
    EXPECT_EQ(got[0].attempts, 1);

    EXPECT_TRUE(claim("w2", 1099, 100).empty());  // leased

    bool ok = true;
    sync_write(*s, [&](st::transaction& tx) { ok = tx.complete_job({id, "w2", 1}); });
    EXPECT_FALSE(ok);
    sync_write(*s, [&](st::transaction& tx) { ok = tx.reschedule_job({id, "w2", 1}, 5, ""); });
    EXPECT_FALSE(ok);
    sync_write(*s, [&](st::transaction& tx) { ok = tx.complete_job({id, "", 1}); });
    EXPECT_FALSE(ok);

    // The lease expires: someone else may take it.
    got = claim("w2", 1100, 100);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].lease_owner, "w2");
    EXPECT_EQ(got[0].attempts, 2);

    sync_write(*s, [&](st::transaction& tx) { ok = tx.complete_job({id, "w1", 1}); });
    EXPECT_FALSE(ok);  // w1 lost it
    sync_write(*s, [&](st::transaction& tx) {
        ok = tx.reschedule_job({id, "w2", 2}, 3000, R"({"n":2})");
    });
    EXPECT_TRUE(ok);
    EXPECT_TRUE(claim("w3", 2999, 100).empty());
    got = claim("w3", 3000, 50);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].payload_json, R"({"n":2})");
    EXPECT_EQ(got[0].attempts, 3);
    sync_write(*s, [&](st::transaction& tx) { ok = tx.complete_job({id, "w3", 3}); });
    EXPECT_TRUE(ok);
    EXPECT_TRUE(claim("w3", 1'000'000, 50).empty());  // deleted

    // Oldest due first, limit respected.
    sync_write(*s, [&](st::transaction& tx) {
        for (st::millis due : {500, 100, 300, 200, 400})
            tx.schedule_job({0, "submit", "ext_" + std::to_string(due), "", due, "", 0, 0}, false);
    });
    got = claim("w1", 1000, 10, 3);
    ASSERT_EQ(got.size(), 3u);
    EXPECT_EQ(got[0].due_at, 100);
    EXPECT_EQ(got[1].due_at, 200);
    EXPECT_EQ(got[2].due_at, 300);
    got = claim("w2", 1000, 10, 10);
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].due_at, 400);
    EXPECT_EQ(got[1].due_at, 500);

    // An empty owner is a bug in the caller: the unit fails.
    EXPECT_THROW(sync_write(*s, [](st::transaction& tx) { tx.claim_jobs("", 1, 1, 1); }),
                 std::invalid_argument);
}

// The fencing token: a claim whose lease expired and was claimed again, even by the same owner
// (one process, one owner id), can write nothing more; the new claim can. Renewals keep a lease
// alive, exclusions keep a process from taking its own running job, and a lease that expired
// unreleased counts as a failed run.
// Lanes: a submit claim takes only submit jobs, an `other` claim every other kind, each oldest
// due first with its own limit; `any` takes both.
TEST_P(StoreEngineTest, JobsClaimedByLane) {
    auto s = open();
    sync_write(*s, [&](st::transaction& tx) {
        tx.schedule_job({0, "poll", "ext_1", "", 100, "", 0, 0}, false);
        tx.schedule_job({0, "submit", "ext_2", "", 200, "", 0, 0}, false);
        tx.schedule_job({0, "mirror", "ext_1", "", 300, "", 0, 0}, false);
        tx.schedule_job({0, "submit", "ext_3", "", 400, "", 0, 0}, false);
        tx.schedule_job({0, "poll", "ext_4", "", 500, "", 0, 0}, false);
    });
    auto claim = [&](st::job_lane lane, int limit) {
        std::vector<std::string> got;
        sync_write(*s, [&](st::transaction& tx) {
            for (const auto& j : tx.claim_jobs("w", 1000, 100, limit, {}, lane))
                got.push_back(j.kind + ":" + j.task_id);
        });
        return got;
    };
    EXPECT_EQ(claim(st::job_lane::submit, 1), (std::vector<std::string>{"submit:ext_2"}));
    EXPECT_EQ(claim(st::job_lane::other, 2),
              (std::vector<std::string>{"poll:ext_1", "mirror:ext_1"}));
    EXPECT_EQ(claim(st::job_lane::submit, 10), (std::vector<std::string>{"submit:ext_3"}));
    EXPECT_TRUE(claim(st::job_lane::submit, 10).empty());
    EXPECT_EQ(claim(st::job_lane::any, 10), (std::vector<std::string>{"poll:ext_4"}));
}

TEST_P(StoreEngineTest, JobsFencedLeasesRenewalExclusionAndFailures) {
    auto s = open();
    std::int64_t id = 0;
    sync_write(*s, [&](st::transaction& tx) {
        id = tx.schedule_job({0, "submit", "ext_f", "", 0, "", 0, 0}, false);
    });
    std::vector<st::job_row> got;
    auto claim = [&](st::millis now, std::vector<std::int64_t> exclude = {}) {
        sync_write(*s,
                   [&](st::transaction& tx) { got = tx.claim_jobs("w1", now, 100, 10, exclude); });
        return got;
    };
    ASSERT_EQ(claim(0).size(), 1u);
    const std::int64_t first = got[0].attempts;
    EXPECT_EQ(got[0].failures, 0);

    // Renewed before expiry: not claimable at the old expiry.
    std::vector<std::int64_t> lost;
    sync_write(*s, [&](st::transaction& tx) { lost = tx.renew_jobs("w1", {{id, first}}, 250); });
    EXPECT_TRUE(lost.empty());
    EXPECT_TRUE(claim(150).empty());

    // Expired: the same owner's own running job is excluded...
    EXPECT_TRUE(claim(300, {id}).empty());
    // ...but claimed again without the exclusion (a restarted process), with a new fence and a
    // failed run counted.
    ASSERT_EQ(claim(300).size(), 1u);
    const std::int64_t second = got[0].attempts;
    EXPECT_GT(second, first);
    EXPECT_EQ(got[0].failures, 1);

    bool ok = true;
    sync_write(*s, [&](st::transaction& tx) { ok = tx.reschedule_job({id, "w1", first}, 0, ""); });
    EXPECT_FALSE(ok);  // the stale claim is refused although the owner matches
    sync_write(*s, [&](st::transaction& tx) { ok = tx.complete_job({id, "w1", first}); });
    EXPECT_FALSE(ok);
    sync_write(*s, [&](st::transaction& tx) { ok = tx.fail_job({id, "w1", first}, 0); });
    EXPECT_FALSE(ok);
    sync_write(*s, [&](st::transaction& tx) {
        lost = tx.renew_jobs("w1", {{id, first}, {id, second}}, 1000);
    });
    ASSERT_EQ(lost.size(), 1u);  // only the stale one
    EXPECT_EQ(lost[0], id);

    // A failed run: released, due again, failures counted; a good run resets them.
    sync_write(*s, [&](st::transaction& tx) { ok = tx.fail_job({id, "w1", second}, 500); });
    EXPECT_TRUE(ok);
    EXPECT_TRUE(claim(499).empty());
    ASSERT_EQ(claim(500).size(), 1u);
    EXPECT_EQ(got[0].failures, 2);
    const std::int64_t third = got[0].attempts;
    sync_write(*s, [&](st::transaction& tx) {
        ok = tx.reschedule_job({id, "w1", third}, 600, "");
    });
    EXPECT_TRUE(ok);
    ASSERT_EQ(claim(600).size(), 1u);
    EXPECT_EQ(got[0].failures, 0);
    sync_write(*s, [&](st::transaction& tx) { ok = tx.complete_job({id, "w1", got[0].attempts}); });
    EXPECT_TRUE(ok);
}

TEST_P(StoreEngineTest, JobsUniqueSchedulingAndNextDue) {
    auto s = open();
    std::optional<st::millis> next;
    sync_read(*s, [&](st::transaction& tx) { next = tx.next_job_due(); });
    EXPECT_FALSE(next);

    std::int64_t a = 0, b = 0, c = 0, d = 0;
    sync_write(*s, [&](st::transaction& tx) {
        a = tx.schedule_job({0, "poll", "ext_1", "p1", 5000, "", 0, 0}, true);
        b = tx.schedule_job({0, "poll", "ext_1", "p2", 7000, "", 0, 0}, true);  // moves a
        c = tx.schedule_job({0, "submit", "ext_1", "", 9000, "", 0, 0}, true);  // other kind
        d = tx.schedule_job({0, "poll", "ext_2", "", 8000, "", 0, 0}, true);    // other task
    });
    EXPECT_EQ(a, b);
    EXPECT_NE(a, c);
    EXPECT_NE(a, d);
    sync_read(*s, [&](st::transaction& tx) { next = tx.next_job_due(); });
    EXPECT_EQ(next, 7000);

    // Moving earlier works too, and a leased job's lease is cleared by re-scheduling.
    std::vector<st::job_row> got;
    sync_write(*s, [&](st::transaction& tx) { got = tx.claim_jobs("w1", 7000, 60'000, 1); });
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].id, a);
    EXPECT_EQ(got[0].payload_json, "p2");
    sync_read(*s, [&](st::transaction& tx) { next = tx.next_job_due(); });
    EXPECT_EQ(next, 8000);  // the leased one counts at its lease expiry (67000)

    sync_write(*s, [&](st::transaction& tx) {
        EXPECT_EQ(tx.schedule_job({0, "poll", "ext_1", "p3", 6500, "", 0, 0}, true), a);
    });
    bool ok = true;
    sync_write(*s, [&](st::transaction& tx) { ok = tx.complete_job({a, "w1", 1}); });
    EXPECT_FALSE(ok);  // the lease was cleared
    sync_read(*s, [&](st::transaction& tx) { next = tx.next_job_due(); });
    EXPECT_EQ(next, 6500);

    // Only leased jobs left: the earliest lease expiry.
    sync_write(*s, [&](st::transaction& tx) { got = tx.claim_jobs("w1", 10'000, 1000, 10); });
    EXPECT_EQ(got.size(), 3u);
    sync_read(*s, [&](st::transaction& tx) { next = tx.next_job_due(); });
    EXPECT_EQ(next, 11'000);

    // Without `unique`, a second job of the same (kind, task) is added.
    sync_write(*s, [&](st::transaction& tx) {
        EXPECT_NE(tx.schedule_job({0, "poll", "ext_1", "", 1, "", 0, 0}, false), a);
    });
    sync_read(*s, [&](st::transaction& tx) { next = tx.next_job_due(); });
    EXPECT_EQ(next, 1);

    // delete_jobs_for_task removes all of a task's jobs (and only those).
    sync_write(*s, [&](st::transaction& tx) {
        tx.schedule_job({0, "sweep", "", "", 20'000, "", 0, 0}, false);
        tx.delete_jobs_for_task("ext_1");
        tx.delete_jobs_for_task("");  // no-op, never "all task-less jobs"
    });
    sync_write(*s, [&](st::transaction& tx) { got = tx.claim_jobs("w9", 100'000, 10, 10); });
    ASSERT_EQ(got.size(), 2u);
    EXPECT_EQ(got[0].task_id, "ext_2");
    EXPECT_EQ(got[1].kind, "sweep");
}

// What mirror jobs (core/mirror.hpp) rely on: several jobs of one kind per task side by side
// (one per output), each claimed alone, rescheduled with its retry count in a new payload, and
// the mirrored file's row keeping its size and SHA-256.
TEST_P(StoreEngineTest, MirrorJobsPerOutputKeepTheirPayloadAcrossRetries) {
    auto s = open();
    std::int64_t one = 0, two = 0;
    sync_write(*s, [&](st::transaction& tx) {
        one = tx.schedule_job({0, "mirror", "ext_m", R"({"index":1,"tries":0})", 100, "", 0, 0},
                              false);
        two = tx.schedule_job({0, "mirror", "ext_m", R"({"index":2,"tries":0})", 100, "", 0, 0},
                              false);
    });
    ASSERT_NE(one, two);
    std::vector<st::job_row> got;
    sync_write(*s, [&](st::transaction& tx) { got = tx.claim_jobs("w1", 100, 1000, 1); });
    ASSERT_EQ(got.size(), 1u);
    const auto first = got[0];
    // The other output's job is claimable meanwhile (by anyone, this process excluded or not).
    sync_write(*s,
               [&](st::transaction& tx) { got = tx.claim_jobs("w2", 100, 1000, 10, {first.id}); });
    ASSERT_EQ(got.size(), 1u);
    EXPECT_NE(got[0].id, first.id);
    // A failed download: due again later, the retry count in the payload.
    bool ok = false;
    sync_write(*s, [&](st::transaction& tx) {
        ok = tx.reschedule_job({first.id, "w1", first.attempts}, 600,
                               R"({"index":1,"tries":1,"last_error":"mp3: HTTP 503"})");
    });
    ASSERT_TRUE(ok);
    sync_write(*s, [&](st::transaction& tx) { got = tx.claim_jobs("w3", 599, 1000, 10); });
    EXPECT_TRUE(got.empty());
    sync_write(*s, [&](st::transaction& tx) { got = tx.claim_jobs("w3", 600, 1000, 10); });
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].id, first.id);
    EXPECT_EQ(got[0].payload_json, R"({"index":1,"tries":1,"last_error":"mp3: HTTP 503"})");
    EXPECT_EQ(got[0].failures, 0);  // a retry is not a crashed run
    // Done: the file row and the job's completion commit together.
    st::file_row f;
    f.id = "file_m1";
    f.tenant = "t";
    f.task_id = "ext_m";
    f.kind = "output";
    f.content_type = "audio/mpeg";
    f.path = "outputs/ext_m/file_m1-output-1.mp3";
    f.size = 123456;
    f.sha256 = std::string(64, 'e');
    f.created_at = 700;
    sync_write(*s, [&](st::transaction& tx) {
        ASSERT_TRUE(tx.complete_job({first.id, "w3", got[0].attempts}));
        tx.insert_file(f);
    });
    std::optional<st::file_row> back;
    sync_read(*s, [&](st::transaction& tx) { back = tx.get_file("file_m1"); });
    ASSERT_TRUE(back);
    EXPECT_EQ(back->size, 123456);
    EXPECT_EQ(back->sha256, f.sha256);
    EXPECT_EQ(back->path, f.path);
}

TEST_P(StoreEngineTest, IdempotencyInsertConflictAndExpiry) {
    auto s = open();
    bool first = false, second = true;
    sync_write(*s, [&](st::transaction& tx) {
        first =
            tx.insert_idempotency({"t1", "k1", "hash1", "ext_1", 202, R"({"id":"ext_1"})", 100});
        second = tx.insert_idempotency({"t1", "k1", "hash2", "ext_2", 202, "{}", 150});
        tx.insert_idempotency({"t2", "k1", "hash3", "ext_3", 202, "{}", 200});  // other tenant
        tx.insert_idempotency({"t1", "k2", "hash4", "ext_4", 400, "{}", 300});
    });
    EXPECT_TRUE(first);
    EXPECT_FALSE(second);

    std::optional<st::idempotency_row> r;
    sync_read(*s, [&](st::transaction& tx) { r = tx.get_idempotency("t1", "k1"); });
    ASSERT_TRUE(r);
    EXPECT_EQ(r->request_hash, "hash1");  // the conflicting insert wrote nothing
    EXPECT_EQ(r->task_id, "ext_1");
    EXPECT_EQ(r->response_status, 202);
    EXPECT_EQ(r->response_body, R"({"id":"ext_1"})");
    EXPECT_EQ(r->created_at, 100);
    sync_read(*s, [&](st::transaction& tx) { EXPECT_FALSE(tx.get_idempotency("t3", "k1")); });

    int deleted = -1;
    sync_write(*s, [&](st::transaction& tx) { deleted = tx.delete_idempotency_before(250); });
    EXPECT_EQ(deleted, 2);
    sync_read(*s, [&](st::transaction& tx) {
        EXPECT_FALSE(tx.get_idempotency("t1", "k1"));
        EXPECT_FALSE(tx.get_idempotency("t2", "k1"));
        EXPECT_TRUE(tx.get_idempotency("t1", "k2"));
    });
}

TEST_P(StoreEngineTest, FilesInsertAndGet) {
    auto s = open();
    const st::file_row f{"file_1",       "t1",  "",         "upload", "audio/wav",
                         "ab/cd/file_1", 12345, "e3b0c442", 77};
    sync_write(*s, [&](st::transaction& tx) { tx.insert_file(f); });
    std::optional<st::file_row> got;
    sync_read(*s, [&](st::transaction& tx) { got = tx.get_file("file_1"); });
    ASSERT_TRUE(got);
    EXPECT_EQ(got->tenant, "t1");
    EXPECT_EQ(got->task_id, "");
    EXPECT_EQ(got->kind, "upload");
    EXPECT_EQ(got->content_type, "audio/wav");
    EXPECT_EQ(got->path, "ab/cd/file_1");
    EXPECT_EQ(got->size, 12345);
    EXPECT_EQ(got->sha256, "e3b0c442");
    EXPECT_EQ(got->created_at, 77);
    sync_read(*s, [&](st::transaction& tx) { EXPECT_FALSE(tx.get_file("file_2")); });
    EXPECT_THROW(sync_write(*s, [&](st::transaction& tx) { tx.insert_file(f); }), st::store_error);
}

TEST_P(StoreEngineTest, DurabilityAcrossReopen) {
    {
        auto s = open();
        sync_write(*s, [](st::transaction& tx) {
            tx.insert_task(make_task("ext_d"));
            tx.upsert_output({"ext_d", 1, "ready", "{}", 5});
            tx.append_event({"", "ext_d", "tenant_a", 0, "task.created", "{}", 0});
            tx.schedule_job({0, "poll", "ext_d", "", 10, "", 0, 0}, true);
            tx.insert_idempotency({"tenant_a", "k", "h", "ext_d", 202, "{}", 1});
        });
        s->close();
        s->close();  // idempotent
    }
    auto s = open();
    sync_read(*s, [](st::transaction& tx) {
        EXPECT_TRUE(tx.get_task("ext_d"));
        EXPECT_EQ(tx.get_outputs("ext_d").size(), 1u);
        EXPECT_EQ(tx.get_events("ext_d", 0, 10).size(), 1u);
        EXPECT_EQ(tx.next_job_due(), 10);
        EXPECT_TRUE(tx.get_idempotency("tenant_a", "k"));
    });
    // Sequences continue after a reopen.
    sync_write(*s, [](st::transaction& tx) {
        EXPECT_EQ(tx.append_event({"", "ext_d", "tenant_a", 0, "task.done", "{}", 0}).seq, 2);
    });
}

namespace {

// One task creation as the gateway does it: task, its outputs, the first event, the submit job
// and the idempotency record, in one unit.
st::store::unit creation_unit(int n) {
    return [n](st::transaction& tx) {
        const std::string id = "ext_perf" + std::to_string(n);
        tx.insert_task(make_task(id, "tenant_perf", 1'700'000'000'000 + n));
        tx.upsert_output({id, 1, "pending", "", 1});
        tx.upsert_output({id, 2, "pending", "", 1});
        tx.append_event({"", id, "tenant_perf", 0, "task.created", R"({"status":"queued"})", 0});
        tx.schedule_job({0, "submit", id, "", 1, "", 0, 0}, true);
        tx.insert_idempotency({"tenant_perf", "key" + std::to_string(n),
                               "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef",
                               id, 202, R"({"id":")" + id + "\"}", 1});
    };
}

}  // namespace

TEST_F(StoreTest, PerfTaskCreationThroughput) {
    for (bool full : {true, false}) {
        temp_dir dir;
        st::sqlite_options o;
        o.path = (dir.path() / "perf.db").string();
        o.synchronous_full = full;
        auto s = st::open_sqlite(o);

        constexpr int threads = 4, per_thread = 2500, total = threads * per_thread;
        countdown left(total);
        std::atomic<int> failures{0};
        const auto t0 = std::chrono::steady_clock::now();
        std::vector<std::thread> pool;
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&, t] {
                for (int i = 0; i < per_thread; ++i)
                    s->submit_write(creation_unit(t * per_thread + i), [&](std::exception_ptr e) {
                        if (e)
                            ++failures;
                        left.arrive();
                    });
            });
        for (auto& th : pool)
            th.join();
        left.wait();
        const double secs =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t0).count();
        EXPECT_EQ(failures.load(), 0);
        const auto stats = s->stats();
        EXPECT_EQ(stats.units, static_cast<std::uint64_t>(total));
        std::printf(
            "[ store ] synchronous=%s: %d creation units from %d threads in %.3f s = %.0f "
            "units/s, %llu commits (%.1f units/commit)\n",
            full ? "FULL" : "NORMAL", total, threads, secs, total / secs,
            static_cast<unsigned long long>(stats.commits),
            static_cast<unsigned long long>(stats.commits) > 0
                ? static_cast<double>(stats.units) / static_cast<double>(stats.commits)
                : 0.0);

        // Closed loop (each thread waits for its commit before the next unit): the worst case
        // for group commit, bounded by the fsync latency.
        constexpr int closed_per_thread = 100;
        const auto before = s->stats();
        const auto t1 = std::chrono::steady_clock::now();
        pool.clear();
        for (int t = 0; t < threads; ++t)
            pool.emplace_back([&, t] {
                for (int i = 0; i < closed_per_thread; ++i)
                    sync_write(*s, creation_unit(total + t * closed_per_thread + i));
            });
        for (auto& th : pool)
            th.join();
        const double secs1 =
            std::chrono::duration<double>(std::chrono::steady_clock::now() - t1).count();
        const auto after = s->stats();
        std::printf(
            "[ store ] synchronous=%s closed loop: %d units (%d threads, 1 in flight each) in "
            "%.3f s = %.0f units/s, %llu commits\n",
            full ? "FULL" : "NORMAL", threads * closed_per_thread, threads, secs1,
            threads * closed_per_thread / secs1,
            static_cast<unsigned long long>(after.commits - before.commits));
    }
}

namespace {

// Appends an event to `task` and its delivery to `url`, due at `due`.
st::delivery_row add_delivery(st::transaction& tx, const std::string& task, const std::string& url,
                              st::millis due, const std::string& tenant = "tenant_a",
                              const std::string& status = "pending") {
    st::event_row e;
    e.task_id = task;
    e.tenant = tenant;
    e.type = "extension.progress";
    e.data_json = R"({"n":1})";
    e.created_at = due;
    auto row = tx.append_event(e);
    st::delivery_row d;
    d.id = "dlv_" + task + "_" + std::to_string(row.seq) + "_" + url;
    d.event_id = row.id;
    d.task_id = task;
    d.tenant = tenant;
    d.seq = row.seq;
    d.url = url;
    d.status = status;
    d.next_at = due;
    d.event_at = d.created_at = d.updated_at = due;
    tx.insert_delivery(d);
    return d;
}

}  // namespace

// SQLite is one process's store: a lease found in it at open is a dead process's, so its work
// is claimable at once (counted as a failed run, like any lease that ended unreleased), not
// when the lease would have run out.
TEST_F(StoreTest, LeasesOfAProcessThatIsGoneAreFreeAtOpen) {
    st::millis now = 0;
    {
        auto s = open();
        sync_write(*s, [&](st::transaction& tx) {
            now = tx.clock_ms();
            tx.schedule_job(leased_submit("ext_dead", "killed", 600'000), false);
            tx.insert_task(make_task("ext_dead"));
            add_delivery(tx, "ext_dead", "http://r/a", 1000);
        });
        std::vector<st::delivery_row> claimed;
        sync_write(*s, [&](st::transaction& tx) {
            claimed = tx.claim_deliveries("killed", now, 600'000, 10);
        });
        ASSERT_EQ(claimed.size(), 1u);
        std::vector<st::job_row> got;
        sync_write(*s, [&](st::transaction& tx) { got = tx.claim_jobs("other", now, 1000, 10); });
        EXPECT_TRUE(got.empty()) << "leased for 10 minutes";
        s->close();
    }
    auto s = open();
    std::vector<st::job_row> jobs;
    std::vector<st::delivery_row> deliveries;
    sync_write(*s, [&](st::transaction& tx) {
        jobs = tx.claim_jobs("next", tx.clock_ms(), 1000, 10);
        deliveries = tx.claim_deliveries("next", tx.clock_ms(), 1000, 10);
    });
    ASSERT_EQ(jobs.size(), 1u);
    EXPECT_EQ(jobs[0].lease_owner, "next");
    EXPECT_EQ(jobs[0].attempts, 2);
    EXPECT_EQ(deliveries.size(), 1u);
}

// PostgreSQL: an owner that stopped showing it is alive (a killed replica) has its leases freed
// for the next claim, counted as a failed run as after an expiry; live owners, and owners never
// seen (a replica older than the liveness beat), keep theirs. SQLite: nothing to do (its open
// frees a dead process's leases, above).
TEST_P(StoreEngineTest, LeasesOfAnOwnerNoLongerAliveAreFreedForTheNextClaim) {
    auto s = open();
    st::millis now = 0;
    sync_write(*s, [&](st::transaction& tx) {
        now = tx.clock_ms();
        for (const char* t : {"ext_dead", "ext_live", "ext_old"})
            tx.insert_task(make_task(t));
        tx.schedule_job(leased_submit("ext_dead", "dead", 600'000), false);
        tx.schedule_job(leased_submit("ext_live", "live", 600'000), false);
        tx.schedule_job(leased_submit("ext_old", "unseen", 600'000), false);
        add_delivery(tx, "ext_dead", "http://r/a", 1000);
        add_delivery(tx, "ext_live", "http://r/b", 1000);
        add_delivery(tx, "ext_dead", "http://r/c", 1000, "tenant_a", "delivered");
    });
    std::vector<st::delivery_row> held;
    sync_write(*s, [&](st::transaction& tx) {
        for (const char* o : {"dead", "live"}) {
            auto got = tx.claim_deliveries(o, now, 600'000, 1);
            held.insert(held.end(), got.begin(), got.end());
        }
        EXPECT_EQ(tx.mark_owner_alive("dead", now + 1000), !postgres()) << "a first beat";
        tx.mark_owner_alive("live", now + 1000);
        EXPECT_TRUE(tx.mark_owner_alive("live", now + 5000)) << "a later beat moves it on";
    });
    ASSERT_EQ(held.size(), 2u);

    st::transaction::freed_leases early, freed, again;
    sync_write(*s, [&](st::transaction& tx) { early = tx.free_dead_owners(now + 999); });
    EXPECT_TRUE(early.owners.empty()) << "alive until now + 1000";
    sync_write(*s, [&](st::transaction& tx) { freed = tx.free_dead_owners(now + 1000); });
    sync_write(*s, [&](st::transaction& tx) { again = tx.free_dead_owners(now + 1000); });
    EXPECT_TRUE(again.owners.empty()) << "a dead owner is forgotten once freed";

    std::vector<st::job_row> jobs;
    std::vector<st::delivery_row> deliveries;
    sync_write(*s, [&](st::transaction& tx) {
        jobs = tx.claim_jobs("next", now + 1000, 1000, 10);
        deliveries = tx.claim_deliveries("next", now + 1000, 1000, 10);
    });
    if (!postgres()) {
        EXPECT_TRUE(freed.owners.empty());
        EXPECT_TRUE(jobs.empty());
        EXPECT_TRUE(deliveries.empty());
        return;
    }
    EXPECT_EQ(freed.owners, std::vector<std::string>{"dead"});
    EXPECT_EQ(freed.jobs, 1);
    EXPECT_EQ(freed.deliveries, 1) << "the delivered one holds no lease";
    ASSERT_EQ(jobs.size(), 1u);
    EXPECT_EQ(jobs[0].task_id, "ext_dead");
    EXPECT_EQ(jobs[0].failures, 1) << "the dead owner's run counts as failed";
    EXPECT_EQ(jobs[0].attempts, 2) << "a new fence";
    ASSERT_EQ(deliveries.size(), 1u);
    EXPECT_EQ(deliveries[0].task_id, "ext_dead");
    EXPECT_EQ(deliveries[0].url, "http://r/a");

    // The dead owner's writes are refused now (fence); the live one's still work.
    bool dead_renewed = true, live_renewed = false;
    sync_write(*s, [&](st::transaction& tx) {
        for (const auto& d : held) {
            const bool ok =
                tx.renew_deliveries(d.lease_owner, {{d.id, d.lease_fence}}, now + 60'000).empty();
            (d.lease_owner == "dead" ? dead_renewed : live_renewed) = ok;
        }
    });
    EXPECT_FALSE(dead_renewed);
    EXPECT_TRUE(live_renewed);
    // A freed owner that beats again (it had only stalled) learns it was taken for dead.
    sync_write(*s, [&](st::transaction& tx) {
        EXPECT_FALSE(tx.mark_owner_alive("dead", now + 2000));
        EXPECT_TRUE(tx.mark_owner_alive("live", now + 6000));
    });
}

TEST_P(StoreEngineTest, DeliveriesClaimOnlyTheHeadOfEachTaskQueue) {
    auto s = open();
    std::vector<st::delivery_row> a, b;
    sync_write(*s, [&](st::transaction& tx) {
        tx.insert_task(make_task("ext_a"));
        tx.insert_task(make_task("ext_b"));
        for (int i = 0; i < 3; ++i)
            a.push_back(add_delivery(tx, "ext_a", "http://r/a", 1000 + i));
        b.push_back(add_delivery(tx, "ext_b", "http://r/b", 1000));
    });
    std::vector<st::delivery_row> got;
    auto claim = [&](const char* owner, st::millis now, int limit = 10) {
        sync_write(*s,
                   [&](st::transaction& tx) { got = tx.claim_deliveries(owner, now, 500, limit); });
        return got;
    };
    got = claim("d1", 2000);
    ASSERT_EQ(got.size(), 2u);  // ext_a's seq 1 and ext_b's seq 1; ext_a's 2 and 3 wait
    std::set<std::string> ids{got[0].id, got[1].id};
    EXPECT_TRUE(ids.count(a[0].id));
    EXPECT_TRUE(ids.count(b[0].id));
    for (const auto& d : got) {
        EXPECT_EQ(d.event_type, "extension.progress");
        EXPECT_EQ(d.event_data_json, R"({"n":1})");
        EXPECT_EQ(d.lease_owner, "d1");
    }
    EXPECT_TRUE(claim("d2", 2000).empty());  // leased, and the rest wait behind them

    // The head of ext_a fails and is rescheduled for later: the queue still waits for it.
    auto head = a[0];
    head.lease_fence = 1;  // the claim's fencing token
    head.status = "pending";
    head.attempts = 1;
    head.next_at = 5000;
    head.last_status = 500;
    head.last_error = "HTTP 500";
    head.updated_at = 2001;
    bool held = false;
    sync_write(*s, [&](st::transaction& tx) { held = tx.finish_delivery(head, "d1"); });
    EXPECT_TRUE(held);
    EXPECT_TRUE(claim("d2", 2100).empty());
    std::optional<st::millis> due;
    sync_read(*s, [&](st::transaction& tx) { due = tx.next_delivery_due(); });
    ASSERT_TRUE(due);  // ext_b's lease (2500); ext_a's waiting seq 2 does not count
    EXPECT_EQ(*due, 2500);

    // Delivered at 5000: seq 2 becomes the head.
    got = claim("d2", 5000);
    ASSERT_EQ(got.size(), 2u);  // ext_a's head again and ext_b's expired lease
    head = got[0].task_id == "ext_a" ? got[0] : got[1];
    EXPECT_EQ(head.id, a[0].id);
    EXPECT_EQ(head.attempts, 1);
    head.status = "delivered";
    head.delivered_at = 5001;
    sync_write(*s, [&](st::transaction& tx) { held = tx.finish_delivery(head, "d1"); });
    EXPECT_FALSE(held);  // d1 lost the lease to d2
    sync_write(*s, [&](st::transaction& tx) { held = tx.finish_delivery(head, "d2"); });
    EXPECT_TRUE(held);
    got = claim("d3", 5002);
    ASSERT_EQ(got.size(), 1u);
    EXPECT_EQ(got[0].id, a[1].id);
}

// Deliveries are fenced like jobs: a stale claim of the same owner writes nothing; a process's
// own deliveries in flight are never claimed again by it; renewals keep a lease.
TEST_P(StoreEngineTest, DeliveriesFencedLeasesRenewalAndExclusion) {
    auto s = open();
    st::delivery_row d;
    sync_write(*s, [&](st::transaction& tx) {
        tx.insert_task(make_task("ext_a"));
        d = add_delivery(tx, "ext_a", "http://r/a", 1000);
    });
    std::vector<st::delivery_row> got;
    auto claim = [&](st::millis now, std::vector<std::string> exclude = {}) {
        sync_write(*s, [&](st::transaction& tx) {
            got = tx.claim_deliveries("d1", now, 500, 10, exclude);
        });
        return got;
    };
    ASSERT_EQ(claim(1000).size(), 1u);
    auto first = got[0];
    std::vector<std::string> lost;
    sync_write(*s, [&](st::transaction& tx) {
        lost = tx.renew_deliveries("d1", {{first.id, first.lease_fence}}, 2000);
    });
    EXPECT_TRUE(lost.empty());
    EXPECT_TRUE(claim(1600).empty());          // renewed to 2000
    EXPECT_TRUE(claim(2000, {d.id}).empty());  // expired, but in flight here
    ASSERT_EQ(claim(2000).size(), 1u);
    auto second = got[0];
    EXPECT_GT(second.lease_fence, first.lease_fence);
    first.status = "delivered";
    first.delivered_at = 2001;
    bool held = true;
    sync_write(*s, [&](st::transaction& tx) { held = tx.finish_delivery(first, "d1"); });
    EXPECT_FALSE(held);  // same owner, stale claim
    sync_write(*s, [&](st::transaction& tx) {
        lost = tx.renew_deliveries("d1", {{first.id, first.lease_fence}}, 9000);
    });
    EXPECT_EQ(lost.size(), 1u);
    second.status = "delivered";
    second.delivered_at = 2002;
    sync_write(*s, [&](st::transaction& tx) { held = tx.finish_delivery(second, "d1"); });
    EXPECT_TRUE(held);
}

TEST_P(StoreEngineTest, DeliveriesListRedeliverGoneAndSummary) {
    auto s = open();
    std::vector<st::delivery_row> d;
    sync_write(*s, [&](st::transaction& tx) {
        tx.insert_task(make_task("ext_a"));
        tx.insert_task(make_task("ext_c", "tenant_b"));
        d.push_back(add_delivery(tx, "ext_a", "http://r/a", 1000));
        d.push_back(add_delivery(tx, "ext_a", "http://r/a", 1001));
        d.push_back(add_delivery(tx, "ext_a", "http://r/other", 1002));
        d.push_back(add_delivery(tx, "ext_c", "http://r/a", 1003, "tenant_b"));
    });
    int killed = 0;
    sync_write(*s, [&](st::transaction& tx) {
        killed = tx.kill_deliveries_to("tenant_a", "http://r/a", "410 Gone", 2000);
        tx.set_endpoint_gone("tenant_a", "http://r/a", true, 2000);
    });
    EXPECT_EQ(killed, 2);  // not tenant_b's, not the other URL's
    std::vector<st::delivery_row> rows;
    bool gone_a = false, gone_b = false;
    st::delivery_summary sum;
    sync_read(*s, [&](st::transaction& tx) {
        rows = tx.list_deliveries("tenant_a", "dead", "", 10, "");
        gone_a = tx.endpoint_gone("tenant_a", "http://r/a");
        gone_b = tx.endpoint_gone("tenant_b", "http://r/a");
        sum = tx.summarize_deliveries();
    });
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[0].id, d[1].id);  // newest first
    EXPECT_EQ(rows[0].last_error, "410 Gone");
    EXPECT_TRUE(gone_a);
    EXPECT_FALSE(gone_b);
    EXPECT_EQ(sum.pending, 2);
    EXPECT_EQ(sum.dead, 2);
    ASSERT_TRUE(sum.oldest_pending_event_at);
    EXPECT_EQ(*sum.oldest_pending_event_at, 1002);

    // Paging and filters.
    sync_read(*s,
              [&](st::transaction& tx) { rows = tx.list_deliveries("tenant_a", "", "", 2, ""); });
    ASSERT_EQ(rows.size(), 2u);
    EXPECT_EQ(rows[0].id, d[2].id);
    sync_read(*s, [&](st::transaction& tx) {
        rows = tx.list_deliveries("tenant_a", "", "", 10, rows[1].id);
    });
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows[0].id, d[0].id);
    sync_read(*s, [&](st::transaction& tx) {
        rows = tx.list_deliveries("tenant_b", "", "ext_a", 10, "");
    });
    EXPECT_TRUE(rows.empty());

    // Redeliver: pending again, fresh schedule, due now.
    bool ok = false;
    std::optional<st::delivery_row> after;
    sync_write(*s, [&](st::transaction& tx) {
        ok = tx.redeliver(d[0].id, 3000);
        after = tx.get_delivery(d[0].id);
    });
    EXPECT_TRUE(ok);
    ASSERT_TRUE(after);
    EXPECT_EQ(after->status, "pending");
    EXPECT_EQ(after->attempts, 0);
    EXPECT_EQ(after->next_at, 3000);
    // Pending already (a redeliver raced it, and a claim may hold it): no change, no reset of
    // its lease.
    std::vector<st::delivery_row> claimed;
    sync_write(*s, [&](st::transaction& tx) { claimed = tx.claim_deliveries("o", 3000, 500, 10); });
    ASSERT_TRUE(std::any_of(claimed.begin(), claimed.end(),
                            [&](const st::delivery_row& r) { return r.id == d[0].id; }));
    sync_write(*s, [&](st::transaction& tx) {
        ok = tx.redeliver(d[0].id, 4000);
        after = tx.get_delivery(d[0].id);
    });
    EXPECT_FALSE(ok);
    ASSERT_TRUE(after);
    EXPECT_EQ(after->next_at, 3000);
    EXPECT_EQ(after->lease_owner, "o");
}

// The summary's counts are kept as deliveries are written (not counted by a scan): they must
// follow every change of status, and agree with a count of the rows.
TEST_P(StoreEngineTest, DeliverySummaryFollowsEveryChangeOfStatus) {
    auto s = open();
    std::vector<st::delivery_row> d;
    sync_write(*s, [&](st::transaction& tx) {
        tx.insert_task(make_task("ext_a"));
        for (int i = 0; i < 5; ++i)
            d.push_back(add_delivery(tx, "ext_a", "http://r/" + std::to_string(i), 1000 + i));
    });
    auto summary = [&] {
        st::delivery_summary sum;
        sync_read(*s, [&](st::transaction& tx) { sum = tx.summarize_deliveries(); });
        return sum;
    };
    auto sum = summary();
    EXPECT_EQ(sum.pending, 5);
    EXPECT_EQ(sum.dead, 0);
    EXPECT_EQ(sum.oldest_pending_event_at.value_or(0), 1000);

    // Delivered (the oldest), dead (by a 410), pending again (redelivered).
    std::vector<st::delivery_row> got;
    sync_write(*s, [&](st::transaction& tx) { got = tx.claim_deliveries("o", 5000, 500, 10); });
    ASSERT_FALSE(got.empty());
    auto first = std::find_if(got.begin(), got.end(), [&](auto& r) { return r.id == d[0].id; });
    ASSERT_NE(first, got.end());
    first->status = "delivered";
    first->delivered_at = 5001;
    bool held = false;
    sync_write(*s, [&](st::transaction& tx) { held = tx.finish_delivery(*first, "o"); });
    ASSERT_TRUE(held);
    int killed = 0;
    sync_write(*s, [&](st::transaction& tx) {
        killed = tx.kill_deliveries_to("tenant_a", "http://r/1", "410 Gone", 6000);
        killed += tx.kill_deliveries_to("tenant_a", "http://r/2", "410 Gone", 6000);
    });
    EXPECT_EQ(killed, 2);
    sum = summary();
    EXPECT_EQ(sum.pending, 2);
    EXPECT_EQ(sum.dead, 2);
    EXPECT_EQ(sum.oldest_pending_event_at.value_or(0), 1003);
    bool ok = false;
    sync_write(*s, [&](st::transaction& tx) { ok = tx.redeliver(d[1].id, 7000); });
    EXPECT_TRUE(ok);
    sum = summary();
    EXPECT_EQ(sum.pending, 3);
    EXPECT_EQ(sum.dead, 1);
    EXPECT_EQ(sum.oldest_pending_event_at.value_or(0), 1001);
    // The same numbers as counting the rows.
    std::vector<st::delivery_row> pending, dead;
    sync_read(*s, [&](st::transaction& tx) {
        pending = tx.list_deliveries("tenant_a", "pending", "", 100, "");
        dead = tx.list_deliveries("tenant_a", "dead", "", 100, "");
    });
    EXPECT_EQ(static_cast<std::int64_t>(pending.size()), sum.pending);
    EXPECT_EQ(static_cast<std::int64_t>(dead.size()), sum.dead);
}

TEST_P(StoreEngineTest, OutboxListenerRunsAfterCommitsThatMadeDeliveriesDue) {
    auto s = open();
    std::atomic<int> calls{0};
    s->set_commit_listener([&](const st::commit_notice& n) {
        if (n.outbox && !n.remote)
            calls.fetch_add(1);
    });
    sync_write(*s, [&](st::transaction& tx) { tx.insert_task(make_task("ext_a")); });
    EXPECT_EQ(calls.load(), 0);
    sync_write(*s, [&](st::transaction& tx) { add_delivery(tx, "ext_a", "http://r/a", 1); });
    EXPECT_EQ(calls.load(), 1);
}

TEST_P(StoreEngineTest, AFailingUnitRollsBackAloneAndTheOthersCommit) {
    auto s = open();
    std::promise<std::exception_ptr> ra, rb, rc;
    auto fa = ra.get_future(), fb = rb.get_future(), fc = rc.get_future();
    s->submit_write([](st::transaction& tx) { tx.insert_task(make_task("ext_a")); },
                    [&](std::exception_ptr e) { ra.set_value(e); });
    s->submit_write(
        [](st::transaction& tx) {
            tx.insert_task(make_task("ext_b"));
            tx.append_event({"", "ext_b", "tenant_a", 0, "task.created", "{}", 0});
            throw std::runtime_error("unit b gives up");
        },
        [&](std::exception_ptr e) { rb.set_value(e); });
    s->submit_write(
        [](st::transaction& tx) {
            tx.insert_task(make_task("ext_c"));
            tx.append_event({"", "ext_c", "tenant_a", 0, "task.created", "{}", 0});
        },
        [&](std::exception_ptr e) { rc.set_value(e); });
    EXPECT_EQ(fa.get(), nullptr);
    const auto eb = fb.get();
    ASSERT_NE(eb, nullptr);
    try {
        std::rethrow_exception(eb);
    } catch (const std::runtime_error& e) {
        EXPECT_STREQ(e.what(), "unit b gives up");
    }
    EXPECT_EQ(fc.get(), nullptr);
    // A unit that breaks a statement (duplicate key) also fails alone.
    EXPECT_THROW(sync_write(*s, [](st::transaction& tx) { tx.insert_task(make_task("ext_a")); }),
                 st::store_error);
    sync_write(*s, [](st::transaction& tx) { tx.insert_task(make_task("ext_d")); });
    sync_read(*s, [](st::transaction& tx) {
        EXPECT_TRUE(tx.get_task("ext_a"));
        EXPECT_FALSE(tx.get_task("ext_b"));
        EXPECT_TRUE(tx.get_events("ext_b", 0, 10).empty());
        EXPECT_EQ(tx.get_events("ext_c", 0, 10).size(), 1u);
        EXPECT_TRUE(tx.get_task("ext_d"));
    });
}

TEST_P(StoreEngineTest, CloseFinishesQueuedWritesThenRejects) {
    auto s = open();
    constexpr int n = 50;
    std::atomic<int> ok{0};
    for (int i = 0; i < n; ++i)
        s->submit_write(
            [i](st::transaction& tx) { tx.insert_task(make_task("ext_c" + std::to_string(i))); },
            [&](std::exception_ptr e) {
                if (!e)
                    ++ok;
            });
    s->close();
    EXPECT_EQ(ok.load(), n);
    std::string what;
    s->submit_write([](st::transaction&) {}, store_error_into(what));
    EXPECT_EQ(what, "store closed");
    s.reset();
    auto again = open();
    sync_read(*again, [](st::transaction& tx) {
        EXPECT_EQ(tx.list_tasks("tenant_a", 100, "").size(), static_cast<std::size_t>(n));
    });
}

// submit_write_first: the unit runs before the units waiting in its lane (after the group in
// flight), and is refused like any other once the store is closed.
TEST_P(StoreEngineTest, AUnitSubmittedFirstRunsBeforeTheUnitsWaitingInItsLane) {
    auto s = open();
    writer_gate gate;
    gate.hold(*s);  // the lane's writer busy: what comes next waits
    std::mutex m;
    std::vector<std::string> order;
    std::atomic<int> done{0};
    auto record = [&](std::string what) {
        return [&, what](st::transaction&) {
            std::lock_guard lk(m);
            order.push_back(what);
        };
    };
    auto count = [&](std::exception_ptr e) {
        EXPECT_FALSE(e);
        ++done;
    };
    for (int i = 0; i < 3; ++i)
        s->submit_write(record("w" + std::to_string(i)), count, st::write_lane::requests);
    s->submit_write_first(record("first"), count, st::write_lane::requests);
    s->submit_write_first(record("firster"), count, st::write_lane::requests);
    gate.release();
    const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
    while (done < 5 && std::chrono::steady_clock::now() < deadline)
        std::this_thread::sleep_for(std::chrono::milliseconds(5));
    ASSERT_EQ(done.load(), 5);
    EXPECT_EQ(order, (std::vector<std::string>{"firster", "first", "w0", "w1", "w2"}));
    s->close();
    std::string what;
    s->submit_write_first([](st::transaction&) {}, store_error_into(what), st::write_lane::work);
    EXPECT_EQ(what, "store closed");
}

TEST_P(StoreEngineTest, HoldCreditsReservesOrRefuses) {
    auto s = open();
    auto hold = [](const std::string& task, std::int64_t amount) {
        st::ledger_row h;
        h.tenant = "tenant_a";
        h.task_id = task;
        h.kind = "hold";
        h.amount_milli = amount;
        return h;
    };
    sync_write(*s, [&](st::transaction& tx) {
        EXPECT_TRUE(tx.ensure_grant("tenant_a", 1000, 1));
        const auto r1 = tx.hold_credits(hold("ext_1", 600));
        EXPECT_TRUE(r1.held);
        EXPECT_EQ(r1.before.available, 1000);
        const auto r2 = tx.hold_credits(hold("ext_2", 600));
        EXPECT_FALSE(r2.held);
        EXPECT_EQ(r2.before.available, 400);
        EXPECT_TRUE(tx.hold_credits(hold("ext_3", 400)).held);
    });
    sync_read(*s, [](st::transaction& tx) {
        const auto b = tx.ledger_totals("tenant_a");
        EXPECT_EQ(b.held, 1000);
        EXPECT_EQ(b.available, 0);
        EXPECT_EQ(tx.ledger_for_task("ext_2").hold, 0);
    });
}

TEST_P(StoreEngineTest, ClockIsNearThisMachinesClock) {
    auto s = open();
    st::millis db = 0;
    sync_write(*s, [&](st::transaction& tx) { db = tx.clock_ms(); });
    const auto here = std::chrono::duration_cast<std::chrono::milliseconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count();
    EXPECT_LT(std::abs(here - db), 5000);  // same machine: the same clock, give or take
}

TEST_P(StoreEngineTest, CommitNoticesNameWhatChanged) {
    auto s = open();
    std::mutex m;
    std::vector<st::commit_notice> seen;
    s->set_commit_listener([&](const st::commit_notice& n) {
        std::lock_guard lk(m);
        if (!n.remote)
            seen.push_back(n);
    });
    sync_write(*s, [&](st::transaction& tx) {
        tx.insert_task(make_task("ext_n1"));
        tx.insert_task(make_task("ext_n2"));
        tx.append_event({"", "ext_n2", "tenant_a", 0, "task.created", "{}", 0});
        tx.append_event({"", "ext_n1", "tenant_a", 0, "task.created", "{}", 0});
        tx.append_event({"", "ext_n1", "tenant_a", 0, "task.queued", "{}", 0});
        tx.schedule_job({0, "submit", "ext_n1", "", 1, "", 0, 0}, true);
    });
    sync_write(*s, [&](st::transaction& tx) { tx.get_task("ext_n1"); });  // changes nothing
    std::lock_guard lk(m);
    ASSERT_EQ(seen.size(), 1u);
    EXPECT_EQ(seen[0].event_tasks, (std::vector<std::string>{"ext_n1", "ext_n2"}));
    EXPECT_TRUE(seen[0].jobs);
    EXPECT_FALSE(seen[0].outbox);
}

// Retention: each batch takes only what its lifetime allows, leaves tombstones for the files it
// deletes, and touches nothing else (running tasks, newer tasks, tasks with deliveries still to
// make, the ledger).
TEST_P(StoreEngineTest, RetentionBatchesDeleteOnlyWhatExpiredAndLeaveTombstones) {
    auto s = open();
    const auto task = task_in_status;
    auto file = [](const std::string& id, const std::string& task_id, const std::string& kind,
                   st::millis at) {
        return st::file_row{id, "tenant_a", task_id, kind, "audio/wav", kind + "s/" + id,
                            10, "",         at};
    };
    sync_write(*s, [&](st::transaction& tx) {
        tx.insert_task(task("ext_old", "succeeded", 1000));
        tx.insert_task(task("ext_running", "running", 1000));
        tx.insert_task(task("ext_new", "succeeded", 5000));
        tx.insert_task(task("ext_undelivered", "failed", 1000));
        tx.insert_task(task("ext_delivered", "canceled", 1000));
        tx.insert_file(file("file_up_old", "ext_old", "upload", 100));
        tx.insert_file(file("file_out_old", "ext_old", "output", 100));
        tx.insert_file(file("file_out_running", "ext_running", "output", 100));
        tx.insert_file(file("file_out_new", "ext_new", "output", 4000));
        tx.upsert_output({"ext_old", 1, "ready", "{}", 1000});
        tx.upsert_attempt({"ext_old", 1, "sandbox", "p1", "", "succeeded", "", "", 1000, 1000});
        tx.append_event({"", "ext_old", "tenant_a", 0, "extension.succeeded", "{}", 1000});
        tx.schedule_job({0, "cleanup", "ext_old", "", 1000, "", 0, 0, 0}, false);
        tx.add_ledger_entry({0, "tenant_a", "ext_old", 0, "hold", "", 2000, "sandbox", "", 1000});
        add_delivery(tx, "ext_undelivered", "http://r/u", 1000);
        add_delivery(tx, "ext_delivered", "http://r/d", 1000);
        tx.insert_task(task("ext_spare", "queued", 1000));  // old, but not final
        tx.insert_idempotency({"tenant_a", "k1", "h", "ext_old", 202, "{}", 100});
        tx.insert_idempotency({"tenant_a", "k2", "h", "ext_new", 202, "{}", 200});
        tx.insert_idempotency({"tenant_a", "k3", "h", "ext_new", 202, "{}", 300});
    });
    // The delivered one is delivered (finish_delivery needs a claim: mark it through one).
    sync_write(*s, [&](st::transaction& tx) {
        for (auto& d : tx.claim_deliveries("w", 1000, 1000, 10, {}))
            if (d.task_id == "ext_delivered") {
                d.status = "delivered";
                d.delivered_at = 1001;
                ASSERT_TRUE(tx.finish_delivery(d, "w"));
            }
    });

    // Outputs made before 2000, of final tasks only, one per batch.
    int n = -1;
    sync_write(*s, [&](st::transaction& tx) { n = tx.expire_files("output", 2000, 9000, 1); });
    EXPECT_EQ(n, 1);
    sync_write(*s, [&](st::transaction& tx) { n = tx.expire_files("output", 2000, 9000, 1); });
    EXPECT_EQ(n, 0);
    sync_read(*s, [&](st::transaction& tx) {
        EXPECT_FALSE(tx.get_file("file_out_old"));
        EXPECT_TRUE(tx.get_file("file_out_running"));
        EXPECT_TRUE(tx.get_file("file_out_new"));
        EXPECT_TRUE(tx.get_file("file_up_old"));
        auto t = tx.get_file_tombstone("file_out_old");
        ASSERT_TRUE(t);
        EXPECT_EQ(t->tenant, "tenant_a");
        EXPECT_EQ(t->task_id, "ext_old");
        EXPECT_EQ(t->kind, "output");
        EXPECT_EQ(t->path, "outputs/file_out_old");
        EXPECT_EQ(t->deleted_at, 9000);
        EXPECT_FALSE(t->purged);
        EXPECT_FALSE(tx.get_file_tombstone("file_out_new"));
    });

    // Final tasks finished before 2000 without a pending delivery, with everything of theirs.
    sync_write(*s, [&](st::transaction& tx) { n = tx.reap_tasks(2000, 9100, 10); });
    EXPECT_EQ(n, 2);
    sync_read(*s, [&](st::transaction& tx) {
        EXPECT_FALSE(tx.get_task("ext_old"));
        EXPECT_FALSE(tx.get_task("ext_delivered"));
        EXPECT_TRUE(tx.get_task("ext_running"));
        EXPECT_TRUE(tx.get_task("ext_new"));
        EXPECT_TRUE(tx.get_task("ext_undelivered"));
        EXPECT_TRUE(tx.get_task("ext_spare"));
        EXPECT_TRUE(tx.get_outputs("ext_old").empty());
        EXPECT_TRUE(tx.get_attempts("ext_old").empty());
        EXPECT_TRUE(tx.get_events("ext_old", 0, 10).empty());
        EXPECT_EQ(tx.get_events("ext_undelivered", 0, 10).size(), 1u);
        EXPECT_TRUE(tx.list_deliveries("tenant_a", "", "ext_delivered", 10, "").empty());
        EXPECT_EQ(tx.list_deliveries("tenant_a", "", "ext_undelivered", 10, "").size(), 1u);
        EXPECT_FALSE(tx.get_file("file_up_old"));
        auto t = tx.get_file_tombstone("file_up_old");
        ASSERT_TRUE(t);
        EXPECT_EQ(t->deleted_at, 9100);
        EXPECT_EQ(tx.get_file_tombstone("file_out_old")->deleted_at, 9000);  // kept as it was
        EXPECT_EQ(tx.ledger_for_task("ext_old").hold, 2000);                 // the books stay
        EXPECT_TRUE(tx.get_idempotency("tenant_a", "k1"));  // keys expire on their own
    });
    // The job of the reaped task went with it: nothing is due.
    sync_write(*s, [&](st::transaction& tx) {
        for (const auto& j : tx.claim_jobs("w", 100000, 1000, 10, {}))
            EXPECT_NE(j.task_id, "ext_old");
    });

    // Purging: leased, so a second claimant finds nothing until the lease runs out.
    std::vector<st::file_tombstone_row> claimed;
    sync_write(*s, [&](st::transaction& tx) { claimed = tx.claim_purges(9200, 1000, 10); });
    ASSERT_EQ(claimed.size(), 2u);
    sync_write(*s,
               [&](st::transaction& tx) { EXPECT_TRUE(tx.claim_purges(9300, 1000, 10).empty()); });
    sync_write(*s, [&](st::transaction& tx) { claimed = tx.claim_purges(10300, 1000, 1); });
    ASSERT_EQ(claimed.size(), 1u);
    sync_write(*s, [&](st::transaction& tx) {
        tx.mark_purged({"file_up_old", "file_out_old"});
        EXPECT_TRUE(tx.claim_purges(50000, 1000, 10).empty());
    });
    sync_read(*s, [&](st::transaction& tx) {
        EXPECT_TRUE(tx.get_file_tombstone("file_up_old")->purged);
    });

    // Tombstones expire in their turn (purged ones only), in batches.
    sync_write(*s, [&](st::transaction& tx) { n = tx.delete_tombstones_before(9050, 10); });
    EXPECT_EQ(n, 1);  // deleted at 9000
    sync_write(*s, [&](st::transaction& tx) { n = tx.delete_tombstones_before(20000, 10); });
    EXPECT_EQ(n, 1);
    sync_read(*s, [&](st::transaction& tx) { EXPECT_FALSE(tx.get_file_tombstone("file_up_old")); });

    // A tombstone is kept as long as its task, whatever the cutoff: the task's document shows
    // the file expired and GET /v1/files/{id} says 410, not 404, for the task's whole life.
    sync_write(*s, [&](st::transaction& tx) {
        EXPECT_EQ(tx.expire_files("output", 4500, 21000, 10), 1);  // ext_new's output
    });
    sync_write(*s, [&](st::transaction& tx) {
        auto c = tx.claim_purges(21000, 1000, 10);
        ASSERT_EQ(c.size(), 1u);
        tx.mark_purged({c[0].id});
    });
    sync_write(*s, [&](st::transaction& tx) { n = tx.delete_tombstones_before(99999, 10); });
    EXPECT_EQ(n, 0);
    sync_read(*s, [&](st::transaction& tx) { EXPECT_TRUE(tx.get_file_tombstone("file_out_new")); });
    sync_write(*s, [&](st::transaction& tx) { n = tx.reap_tasks(6000, 30000, 10); });
    EXPECT_EQ(n, 1);  // ext_new
    sync_write(*s, [&](st::transaction& tx) { n = tx.delete_tombstones_before(99999, 10); });
    EXPECT_EQ(n, 1);

    // Idempotency keys, oldest first, `limit` at a time.
    sync_write(*s, [&](st::transaction& tx) { n = tx.delete_idempotency_batch(250, 1); });
    EXPECT_EQ(n, 1);
    sync_read(*s, [&](st::transaction& tx) {
        EXPECT_FALSE(tx.get_idempotency("tenant_a", "k1"));
        EXPECT_TRUE(tx.get_idempotency("tenant_a", "k2"));
    });
    sync_write(*s, [&](st::transaction& tx) { n = tx.delete_idempotency_batch(250, 10); });
    EXPECT_EQ(n, 1);
    sync_read(*s, [&](st::transaction& tx) { EXPECT_TRUE(tx.get_idempotency("tenant_a", "k3")); });
}

TEST_P(StoreEngineTest, TotalsCountFilesTheirBytesAndTheDatabase) {
    auto s = open();
    st::storage_totals t;
    sync_read(*s, [&](st::transaction& tx) { t = tx.totals(); });
    EXPECT_EQ(t.files, 0);
    EXPECT_EQ(t.file_bytes, 0);
    EXPECT_GT(t.database_bytes, 0);
    sync_write(*s, [&](st::transaction& tx) {
        tx.insert_file({"file_1", "t", "", "upload", "audio/wav", "uploads/file_1", 10, "", 1});
        tx.insert_file({"file_2", "t", "", "output", "audio/wav", "outputs/file_2", 32, "", 1});
    });
    sync_read(*s, [&](st::transaction& tx) { t = tx.totals(); });
    EXPECT_EQ(t.files, 2);
    EXPECT_EQ(t.file_bytes, 42);
}

// Tasks not ended with no job, unchanged since before the cutoff, oldest first: what the
// reaper reports as lost work. A job of any kind or lease keeps a task out; so do final
// statuses and recent changes.
TEST_P(StoreEngineTest, TasksWithoutWorkAreTheUnendedOnesWithNoJob) {
    auto s = open();
    const auto task = task_in_status;
    sync_write(*s, [&](st::transaction& tx) {
        tx.insert_task(task("ext_lost_running", "running", 1000));
        tx.insert_task(task("ext_lost_queued", "queued", 1500));
        tx.insert_task(task("ext_lost_submitted", "submitted", 2000));
        tx.insert_task(task("ext_polled", "running", 1000));
        tx.insert_task(task("ext_leased", "submitted", 1000));
        tx.insert_task(task("ext_mirroring", "running", 1000));
        tx.insert_task(task("ext_recent", "running", 9000));
        tx.insert_task(task("ext_done", "succeeded", 1000));
        tx.insert_task(task("ext_canceled", "canceled", 1000));
        tx.schedule_job({0, "poll", "ext_polled", "", 99'999, "", 0, 0, 0}, false);
        tx.schedule_job({0, "submit", "ext_leased", "", 1000, "", 0, 0, 0}, false);
        tx.schedule_job({0, "mirror", "ext_mirroring", R"({"output":1})", 1000, "", 0, 0, 0},
                        false);
    });
    sync_write(*s, [&](st::transaction& tx) {
        ASSERT_EQ(tx.claim_jobs("w", 1000, 60'000, 10).size(), 2u);  // leased, still a job
    });
    std::vector<std::string> ids;
    sync_read(*s, [&](st::transaction& tx) { ids = tx.tasks_without_work(5000, 10); });
    EXPECT_EQ(ids, (std::vector<std::string>{"ext_lost_running", "ext_lost_queued",
                                             "ext_lost_submitted"}));
    sync_read(*s, [&](st::transaction& tx) { ids = tx.tasks_without_work(5000, 1); });
    EXPECT_EQ(ids, (std::vector<std::string>{"ext_lost_running"}));
    sync_read(*s, [&](st::transaction& tx) { ids = tx.tasks_without_work(1000, 10); });
    EXPECT_TRUE(ids.empty());
}

// A reaper batch is one write unit: it must stay short, or every submission queued behind it
// waits. 1,000 final tasks, each as a real one leaves them (2 outputs, an attempt, 8 events, a
// delivered webhook per event, 3 files), reaped 100 at a time; the slowest batch is printed
// and bounded generously (the figure is in the README).
TEST_P(StoreEngineTest, RetentionBatchOfAHundredTasksStaysShort) {
    auto s = open();
    constexpr int tasks = 1000;
    for (int chunk = 0; chunk < tasks / 100; ++chunk)
        sync_write(*s, [&](st::transaction& tx) {
            for (int i = chunk * 100; i < (chunk + 1) * 100; ++i) {
                const std::string id = "ext_" + std::to_string(i);
                auto t = make_task(id, "tenant_a", 1000);
                t.status = "succeeded";
                tx.insert_task(t);
                tx.upsert_output({id, 1, "ready", R"({"audio":{}})", 1000});
                tx.upsert_output({id, 2, "ready", R"({"audio":{}})", 1000});
                tx.upsert_attempt({id, 1, "sandbox", "p", "", "succeeded", "", "", 1000, 1000});
                for (int e = 0; e < 8; ++e)  // delivered: the tasks may go
                    add_delivery(tx, id, "http://r/x", 1000, "tenant_a", "delivered");
                int k = 0;
                for (const char* kind : {"upload", "output", "output"}) {
                    const std::string fid = "file_" + std::to_string(i) + "_" + std::to_string(k++);
                    tx.insert_file({fid, "tenant_a", id, kind, "audio/wav", "x/" + fid, 1, "", 1});
                }
            }
        });
    double slowest_ms = 0;
    int reaped = 0;
    for (;;) {
        int n = 0;
        const auto start = std::chrono::steady_clock::now();
        sync_write(*s, [&](st::transaction& tx) { n = tx.reap_tasks(5000, 6000, 100); });
        const double ms =
            std::chrono::duration<double, std::milli>(std::chrono::steady_clock::now() - start)
                .count();
        if (n == 0)
            break;
        slowest_ms = std::max(slowest_ms, ms);
        reaped += n;
    }
    EXPECT_EQ(reaped, tasks);
    std::printf(
        "[ measure  ] %s: reaping 100 tasks (with 800 events, 800 deliveries, 300 files) "
        "per unit, slowest unit %.1f ms\n",
        GetParam().c_str(), slowest_ms);
    // No bound on the time here: speed targets live in bench/, and a loaded CI machine is slow.
}

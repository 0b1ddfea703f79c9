// Every statement either store engine runs is planned with an index on the tables that grow
// with use (issue 19: queries stay O(page) as tables grow). The plans are asked of the engines
// themselves, on the schema their migrations build, for the very SQL text they run (sql_of):
//   SQLite      EXPLAIN QUERY PLAN; a "SCAN <table>" without an index is a full scan
//   PostgreSQL  EXPLAIN of the generic plan (plan_cache_mode = force_generic_plan, so the
//               parameters' values play no part) with enable_seqscan off, so an empty table
//               is not scanned just because it is small: a "Seq Scan" left means no index can
//               serve the statement
// A statement that may scan says why below; a new one that scans fails here with its plan.

#include <gtest/gtest.h>

#include <filesystem>
#include <map>
#include <regex>
#include <set>
#include <string>
#include <vector>

#include "gateway/store/pg_connection.hpp"
#include "gateway/store/pg_sql.hpp"
#include "gateway/store/sqlite_connection.hpp"
#include "gateway/store/sqlite_sql.hpp"
#include "tests/support/pg.hpp"

namespace segue::store::sqlite {
void migrate(connection& c);  // sqlite_schema.cpp
}
namespace segue::store::pg {
void migrate(connection& c);  // pg_schema.cpp
}

namespace {

using namespace segue;
namespace fs = std::filesystem;

// The tables whose rows grow with tasks, events, deliveries and files. Tables of one row per
// status, account or endpoint (delivery_counts, ledger_accounts, gone_endpoints) stay small.
const std::set<std::string> growing = {"tasks",       "outputs",        "attempts", "events",
                                       "jobs",        "deliveries",     "ledger",   "files",
                                       "idempotency", "file_tombstones"};

// Statements allowed to scan a growing table, each with its reason.
const std::map<std::string, std::string> sqlite_may_scan = {
    // None today: storage_totals reads the files' sizes, kept in an index (files_size).
};

std::string sqlite_plan(store::sqlite::connection& c, const char* sql) {
    sqlite3_stmt* s = nullptr;
    const std::string text = std::string("EXPLAIN QUERY PLAN ") + sql;
    if (sqlite3_prepare_v2(c.get(), text.c_str(), -1, &s, nullptr) != SQLITE_OK)
        throw std::runtime_error(std::string("prepare: ") + sqlite3_errmsg(c.get()) + ": " + sql);
    std::string plan;
    while (sqlite3_step(s) == SQLITE_ROW)
        plan += std::string(reinterpret_cast<const char*>(sqlite3_column_text(s, 3))) + "\n";
    sqlite3_finalize(s);
    return plan;
}

// The growing tables a plan reads without an index: "SCAN tasks" (not "SCAN tasks USING
// [COVERING] INDEX ...").
std::set<std::string> sqlite_full_scans(const std::string& plan) {
    std::set<std::string> out;
    static const std::regex scan(R"(SCAN (\w+)( AS \w+)?( USING (COVERING )?INDEX)?)");
    for (std::sregex_iterator it(plan.begin(), plan.end(), scan), end; it != end; ++it)
        if (!(*it)[3].matched && growing.count((*it)[1].str()))
            out.insert((*it)[1].str());
    return out;
}

}  // namespace

TEST(QueryPlans, SqliteStatementsUseIndexesOnGrowingTables) {
    const auto dir = fs::temp_directory_path() / ("segue-plans-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    {
        store::sqlite::connection c((dir / "plans.db").string(), 1000);
        store::sqlite::migrate(c);
        // With statistics, as a database in use has them after ANALYZE (none: the planner
        // still has to find an index for every WHERE and ORDER BY).
        int checked = 0;
        for (int i = 0; i < static_cast<int>(store::sqlite::q::count_); ++i) {
            const auto which = static_cast<store::sqlite::q>(i);
            const std::string sql = store::sqlite::sql_of(which);
            if (sql.rfind("BEGIN", 0) == 0 || sql == "COMMIT" || sql == "ROLLBACK" ||
                sql.find("SAVEPOINT") != std::string::npos || sql.rfind("RELEASE", 0) == 0 ||
                sql.rfind("ROLLBACK TO", 0) == 0 || sql.rfind("PRAGMA", 0) == 0)
                continue;
            const auto plan = sqlite_plan(c, sql.c_str());
            const auto scans = sqlite_full_scans(plan);
            ++checked;
            if (!scans.empty() && !sqlite_may_scan.count(sql))
                ADD_FAILURE() << "statement #" << i << " scans " << *scans.begin()
                              << " without an index\n  " << sql << "\nplan:\n"
                              << plan;
        }
        EXPECT_GT(checked, 60);
    }
    fs::remove_all(dir);
}

TEST(QueryPlans, TheSqliteCheckSeesAFullScan) {
    // The check itself can fail: a query on an unindexed column is reported.
    const auto dir = fs::temp_directory_path() / ("segue-plans-neg-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    {
        store::sqlite::connection c((dir / "plans.db").string(), 1000);
        store::sqlite::migrate(c);
        EXPECT_EQ(sqlite_full_scans(sqlite_plan(c, "SELECT id FROM tasks WHERE request_json = ?1")),
                  std::set<std::string>{"tasks"});
        EXPECT_TRUE(
            sqlite_full_scans(sqlite_plan(c, "SELECT id FROM tasks WHERE id = ?1")).empty());
    }
    fs::remove_all(dir);
}

namespace {

// The growing tables a PostgreSQL plan reads sequentially ("Seq Scan on tasks").
std::set<std::string> pg_seq_scans(const std::string& plan) {
    std::set<std::string> out;
    static const std::regex scan(R"(Seq Scan on (\w+))");
    for (std::sregex_iterator it(plan.begin(), plan.end(), scan), end; it != end; ++it)
        if (growing.count((*it)[1].str()))
            out.insert((*it)[1].str());
    return out;
}

std::string pg_plan(store::pg::connection& c, const std::string& sql, int i) {
    const std::string name = "plan_" + std::to_string(i);
    c.exec(("PREPARE " + name + " AS " + sql).c_str());
    // Every parameter NULL: a generic plan does not look at them.
    auto n = c.query(
        "SELECT cardinality(parameter_types) FROM pg_prepared_statements WHERE name = $1", {name});
    const int params = n.rows() ? n.i32(0, 0) : 0;
    std::string args;
    for (int p = 0; p < params; ++p)
        args += (p ? ", NULL" : "NULL");
    const std::string explain =
        "EXPLAIN EXECUTE " + name + (params ? "(" + args + ")" : std::string());
    auto r = c.query(explain.c_str(), {});
    std::string plan;
    for (int row = 0; row < r.rows(); ++row)
        plan += r.text(row, 0) + "\n";
    c.exec(("DEALLOCATE " + name).c_str());
    return plan;
}

}  // namespace

TEST(QueryPlans, PostgresStatementsUseIndexesOnGrowingTables) {
    test::pg_schema schema;
    store::pg::connection c(schema.url(), 0, "segue-plan-test");
    store::pg::migrate(c);
    c.exec("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off");
    int checked = 0;
    for (int i = 0; i < static_cast<int>(store::pg::q::count_); ++i) {
        const std::string sql = store::pg::sql_of(static_cast<store::pg::q>(i));
        const bool reads_a_table = sql.find("FROM ") != std::string::npos ||
                                   sql.find("UPDATE ") != std::string::npos ||
                                   sql.find("DELETE ") != std::string::npos;
        if (sql.rfind("SELECT pg_notify", 0) == 0 || !reads_a_table)
            continue;  // the clock, NOTIFY, plain INSERTs: no table is read
        const auto plan = pg_plan(c, sql, i);
        const auto scans = pg_seq_scans(plan);
        ++checked;
        if (!scans.empty())
            ADD_FAILURE() << "statement #" << i << " scans " << *scans.begin()
                          << " without an index\n  " << sql << "\nplan:\n"
                          << plan;
    }
    EXPECT_GT(checked, 40);
    // The check itself can fail.
    EXPECT_EQ(pg_seq_scans(pg_plan(c, "SELECT id FROM tasks WHERE request_json = $1", 9999)),
              std::set<std::string>{"tasks"});
}

// Each lane's claim reads its own partial index: a backlog of submits is never walked by the
// claims of polls, nor the other way round (an index on due_at alone would walk it).
TEST(QueryPlans, EachJobLaneIsClaimedByItsOwnIndex) {
    const auto dir =
        fs::temp_directory_path() / ("segue-plans-lanes-" + std::to_string(::getpid()));
    fs::create_directories(dir);
    {
        store::sqlite::connection c((dir / "plans.db").string(), 1000);
        store::sqlite::migrate(c);
        const auto submit =
            sqlite_plan(c, store::sqlite::sql_of(store::sqlite::q::claim_submit_jobs));
        const auto other =
            sqlite_plan(c, store::sqlite::sql_of(store::sqlite::q::claim_other_jobs));
        EXPECT_NE(submit.find("jobs_lane_due"), std::string::npos) << submit;
        EXPECT_NE(other.find("jobs_lane_due"), std::string::npos) << other;
        // And no statement that binds a job's kind is prepared again at each run (as SQLite
        // does when a bound value may match a partial index's WHERE): update_unique_job run
        // with two kinds.
        auto* st = c.prepared(store::sqlite::q::update_unique_job);
        for (const char* kind : {"submit", "poll", "submit"}) {
            sqlite3_bind_text(st, 1, kind, -1, SQLITE_STATIC);
            sqlite3_bind_text(st, 2, "ext_x", -1, SQLITE_STATIC);
            while (sqlite3_step(st) == SQLITE_ROW) {
            }
            sqlite3_reset(st);
        }
        EXPECT_EQ(sqlite3_stmt_status(st, SQLITE_STMTSTATUS_REPREPARE, 0), 0);
    }
    fs::remove_all(dir);
    test::pg_schema schema;
    store::pg::connection c(schema.url(), 0, "segue-plan-test");
    store::pg::migrate(c);
    c.exec("SET plan_cache_mode = force_generic_plan; SET enable_seqscan = off");
    const auto submit = pg_plan(c, store::pg::sql_of(store::pg::q::claim_submit_jobs), 1);
    const auto other = pg_plan(c, store::pg::sql_of(store::pg::q::claim_other_jobs), 2);
    EXPECT_NE(submit.find("jobs_due_submit"), std::string::npos) << submit;
    EXPECT_NE(other.find("jobs_due_other"), std::string::npos) << other;
}

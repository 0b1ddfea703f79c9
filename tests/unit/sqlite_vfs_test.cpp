// The SQLite engine's VFS (gateway/store/sqlite_vfs.cpp): a commit's WAL frames reach the file in
// one write, and nothing SQLite could read, sync or publish is ever held back: other connections
// (through descriptors of their own) see a commit at once, a process that exits right after a
// commit keeps it, one killed inside a transaction leaves nothing of it, and transactions larger
// than the buffer, rolled back after spilling, or rewriting a frame in place stay intact.

#include <gtest/gtest.h>
#include <sqlite3.h>
#include <sys/wait.h>
#include <unistd.h>

#include <cstdint>
#include <filesystem>
#include <string>

#include "gateway/store/sqlite_connection.hpp"
#include "tests/support/process.hpp"

namespace sq = segue::store::sqlite;

namespace {

// A connection as the store opens them (the VFS), in WAL mode with the store's settings.
sq::connection open_wal(const std::string& path) {
    sq::connection c(path, 1000);
    EXPECT_EQ(c.query_text("PRAGMA journal_mode = WAL"), "wal");
    c.exec("PRAGMA synchronous = NORMAL");
    return c;
}

// open_wal() on a new database holding the one table the tests fill.
sq::connection open_new(const std::string& path) {
    auto c = open_wal(path);
    c.exec("CREATE TABLE t (id INTEGER PRIMARY KEY, v BLOB)");
    return c;
}

// Through SQLite's default VFS: what any other process reading the files would find.
std::int64_t count_plainly(const std::string& path, const char* sql = "SELECT count(*) FROM t") {
    sqlite3* db = nullptr;
    EXPECT_EQ(sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr), SQLITE_OK);
    sqlite3_stmt* st = nullptr;
    EXPECT_EQ(sqlite3_prepare_v2(db, sql, -1, &st, nullptr), SQLITE_OK) << sqlite3_errmsg(db);
    std::int64_t n = -1;
    if (sqlite3_step(st) == SQLITE_ROW)
        n = sqlite3_column_int64(st, 0);
    sqlite3_finalize(st);
    sqlite3_close(db);
    return n;
}

std::string integrity(sq::connection& c) {
    return c.query_text("PRAGMA integrity_check");
}

// `rows` rows of ~`bytes` each, in one transaction.
void insert_rows(sq::connection& c, int first, int rows, int bytes) {
    const std::string sql =
        "WITH RECURSIVE s(x) AS (SELECT " + std::to_string(first) +
        " UNION ALL SELECT x + 1 FROM s WHERE x < " + std::to_string(first + rows - 1) +
        ") INSERT INTO t (id, v) SELECT x, randomblob(" + std::to_string(bytes) + ") FROM s";
    c.exec(sql.c_str());
}

}  // namespace

TEST(SqliteWalVfs, TheStoresConnectionsUseIt) {
    ASSERT_NE(sq::wal_coalescing_vfs(), nullptr);
    segue::test::temp_dir dir;
    auto c = open_wal(dir.file("a.db"));
    sqlite3_vfs* vfs = nullptr;
    ASSERT_EQ(sqlite3_file_control(c.get(), "main", SQLITE_FCNTL_VFS_POINTER, &vfs), SQLITE_OK);
    ASSERT_NE(vfs, nullptr);
    EXPECT_STREQ(vfs->zName, sq::wal_coalescing_vfs());
}

TEST(SqliteWalVfs, ACommitReachesTheWalInOneWriteAndIsVisibleAtOnce) {
    segue::test::temp_dir dir;
    const auto path = dir.file("a.db");
    auto c = open_new(path);
    const auto wal_before = std::filesystem::file_size(path + "-wal");

    // ~20 pages: 40 write calls from SQLite (a header and a page per frame).
    const auto before = sq::wal_writes_so_far();
    c.exec("BEGIN");
    insert_rows(c, 1, 20, 3000);
    c.exec("COMMIT");
    const auto after = sq::wal_writes_so_far();
    EXPECT_GE(after.writes - before.writes, 40u);
    EXPECT_EQ(after.flushes - before.flushes, 1u);

    // The bytes are in the file, and another connection on its own descriptor reads them.
    EXPECT_GE(std::filesystem::file_size(path + "-wal"), wal_before + 20 * 4096);
    EXPECT_EQ(count_plainly(path), 20);
    EXPECT_EQ(integrity(c), "ok");
}

TEST(SqliteWalVfs, TransactionsLargerThanTheBufferRolledBackOrRewrittenInPlaceStayIntact) {
    segue::test::temp_dir dir;
    const auto path = dir.file("a.db");
    auto c = open_new(path);
    c.exec("PRAGMA cache_size = 16");  // a small cache: large transactions spill frames early

    // 3 MiB in one commit: more than the buffer (1 MiB), in writes below the default VFS's
    // 128 KiB limit.
    c.exec("BEGIN");
    insert_rows(c, 1, 1000, 3000);
    c.exec("COMMIT");
    EXPECT_EQ(count_plainly(path), 1000);

    // Spilled frames of a transaction that rolls back, then a commit over the same offsets.
    c.exec("BEGIN");
    insert_rows(c, 5000, 500, 3000);
    c.exec("ROLLBACK");
    c.exec("BEGIN");
    insert_rows(c, 2000, 10, 100);
    c.exec("COMMIT");
    EXPECT_EQ(count_plainly(path), 1010);
    EXPECT_EQ(count_plainly(path, "SELECT count(*) FROM t WHERE id >= 5000"), 0);

    // Pages written, spilled, and written again in one transaction: SQLite rewrites their
    // frames in place, out of the buffer's order.
    const auto before = sq::wal_writes_so_far();
    c.exec("BEGIN");
    for (int round = 0; round < 3; ++round)
        c.exec(("UPDATE t SET v = randomblob(2900 + " + std::to_string(round) + ") WHERE id <= 600")
                   .c_str());
    c.exec("UPDATE t SET v = x'01' WHERE id = 1");
    c.exec("COMMIT");
    EXPECT_GT(sq::wal_writes_so_far().flushes - before.flushes, 1u);
    EXPECT_EQ(count_plainly(path, "SELECT length(v) FROM t WHERE id = 2"), 2902);
    EXPECT_EQ(count_plainly(path, "SELECT length(v) FROM t WHERE id = 1"), 1);
    EXPECT_EQ(integrity(c), "ok");

    // A checkpoint, then the WAL starts over at offset 0 (its header written again).
    c.query_text("PRAGMA wal_checkpoint(TRUNCATE)");
    c.exec("BEGIN");
    insert_rows(c, 3000, 5, 100);
    c.exec("COMMIT");
    EXPECT_EQ(count_plainly(path), 1015);
    EXPECT_EQ(integrity(c), "ok");
}

// A child process commits, then ends at once (no close, no destructor: as if killed right after
// its COMMIT returned); another ends inside a transaction whose frames are only partly written.
TEST(SqliteWalVfs, AProcessEndingRightAfterACommitKeepsItOneEndingInsideATransactionLeavesNothing) {
    segue::test::temp_dir dir;
    const auto path = dir.file("a.db");
    open_new(path);
    const auto run_child = [&](bool commit) {
        const pid_t pid = ::fork();
        if (pid == 0) {
            try {
                auto c = open_wal(path);
                c.exec("PRAGMA cache_size = 16");  // frames spill: some written, some buffered
                c.exec("BEGIN");
                insert_rows(c, commit ? 1 : 100, commit ? 30 : 600, commit ? 2000 : 3000);
                if (commit)
                    c.exec("COMMIT");
            } catch (...) {
                ::_exit(2);
            }
            ::_exit(0);
        }
        int status = 0;
        ::waitpid(pid, &status, 0);
        return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
    };
    ASSERT_EQ(run_child(true), 0);
    EXPECT_EQ(count_plainly(path), 30);
    ASSERT_EQ(run_child(false), 0);
    EXPECT_EQ(count_plainly(path), 30);
    auto c = open_wal(path);
    EXPECT_EQ(integrity(c), "ok");
}

// Internal to the SQLite engine (included only by gateway/store/sqlite_*.cpp): one connection
// with its statement cache, one use of a cached statement (binding and reading), and the small
// helpers the queries share.
//
// Statements are prepared once per connection (lazily, SQLITE_PREPARE_PERSISTENT) and reset after
// every use by an RAII guard, so the hot path never parses SQL.

#pragma once

#include <sqlite3.h>

#include <array>
#include <cstddef>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/store/sqlite_sql.hpp"
#include "gateway/store/store.hpp"

namespace segue::store::sqlite {

millis now_ms();

struct db_closer {
    // close_v2: safe even if a statement were still alive (it becomes a zombie until finalized).
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct stmt_finalizer {
    void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;
using stmt_ptr = std::unique_ptr<sqlite3_stmt, stmt_finalizer>;

// The VFS every connection opens with: SQLite's default one, with the writes to a WAL coalesced
// into one write per commit (sqlite_vfs.cpp). nullptr if it could not be registered (the default
// VFS is used then).
const char* wal_coalescing_vfs();
// Process-wide counts, for tests: write calls SQLite made on WAL files, and the writes that
// reached the files for them.
struct wal_write_counts {
    std::uint64_t writes = 0;
    std::uint64_t flushes = 0;
};
wal_write_counts wal_writes_so_far() noexcept;

// Throws a store_error naming `what` and the connection's last error.
[[noreturn]] void fail(sqlite3* db, std::string_view what);

// One sqlite3 connection and its statement cache. Used by one thread only.
class connection {
  public:
    connection(const std::string& path, int busy_timeout_ms);

    sqlite3* get() const noexcept { return db_.get(); }

    sqlite3_stmt* prepared(q which) {
        auto& slot = stmts_[static_cast<std::size_t>(which)];
        if (!slot) {
            sqlite3_stmt* s = nullptr;
            const char* sql = sql_of(which);
            if (sqlite3_prepare_v3(db_.get(), sql, -1, SQLITE_PREPARE_PERSISTENT, &s, nullptr) !=
                SQLITE_OK)
                fail(db_.get(), std::string("prepare: ") + sql);
            slot.reset(s);
        }
        return slot.get();
    }

    // Runs SQL text that is not on the hot path (PRAGMAs, migrations); may hold many statements.
    void exec(const char* sql);

    // First column of the first row as text ("" if none), for PRAGMAs that answer.
    std::string query_text(const char* sql);

    bool in_transaction() const noexcept { return sqlite3_get_autocommit(db_.get()) == 0; }

  private:
    db_ptr db_;  // declared first: destroyed after the statements
    std::array<stmt_ptr, static_cast<std::size_t>(q::count_)> stmts_;
};

// One use of a cached statement: bind, step, read; reset and unbind on scope exit (also when a
// unit throws), so the next use starts clean and no read cursor outlives the use.
class statement {
  public:
    statement(connection& c, q which) : db_(c.get()), s_(c.prepared(which)) {}
    ~statement() {
        sqlite3_reset(s_);
        sqlite3_clear_bindings(s_);
    }
    statement(const statement&) = delete;
    statement& operator=(const statement&) = delete;

    // SQLITE_STATIC: the bound buffers outlive the statement use (bindings are cleared in the
    // destructor, before the caller's arguments go away), so SQLite need not copy them.
    void bind(int i, std::string_view v) {
        // A null data pointer would bind SQL NULL; "" must stay the empty string.
        const char* p = v.data() != nullptr ? v.data() : "";
        check(sqlite3_bind_text64(s_, i, p, v.size(), SQLITE_STATIC, SQLITE_UTF8), "bind");
    }
    void bind(int i, std::int64_t v) { check(sqlite3_bind_int64(s_, i, v), "bind"); }
    void bind(int i, int v) { bind(i, static_cast<std::int64_t>(v)); }

    template <typename... Args>
    void bind_all(const Args&... args) {
        int i = 0;
        (bind(++i, args), ...);
    }

    // True if a row is available, false when done.
    bool step() {
        const int rc = sqlite3_step(s_);
        if (rc == SQLITE_ROW)
            return true;
        if (rc == SQLITE_DONE)
            return false;
        fail(db_, std::string("step: ") + sqlite3_sql(s_));
    }
    // Runs to completion (for statements whose rows, if any, are not needed).
    void run() {
        while (step()) {
        }
    }
    int changes() const noexcept { return sqlite3_changes(db_); }

    std::string text(int col) const {
        const auto* p = reinterpret_cast<const char*>(sqlite3_column_text(s_, col));
        if (p == nullptr)
            return {};
        return std::string(p, static_cast<std::size_t>(sqlite3_column_bytes(s_, col)));
    }
    std::int64_t i64(int col) const noexcept { return sqlite3_column_int64(s_, col); }
    int i32(int col) const noexcept { return sqlite3_column_int(s_, col); }
    bool is_null(int col) const noexcept { return sqlite3_column_type(s_, col) == SQLITE_NULL; }

  private:
    void check(int rc, const char* what) {
        if (rc != SQLITE_OK)
            fail(db_, what);
    }

    sqlite3* db_;
    sqlite3_stmt* s_;
};

// Runs a cached statement whose rows, if any, are not needed (BEGIN, COMMIT, ...).
void exec_cached(connection& c, q which);

// A JSON array of ids for json_each() (claim exclusions): numbers as numbers, strings quoted
// (ids are the store's own: letters, digits and '_' only, nothing to escape).
std::string ids_json(const std::vector<std::int64_t>& ids);
std::string ids_json(const std::vector<std::string>& ids);

}  // namespace segue::store::sqlite

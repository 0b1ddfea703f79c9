// The SQLite engine of the durable store (see store.hpp for the contract).
//
// Three connections, each owned by exactly one thread (so they are opened NOMUTEX), and a
// fourth thread:
//  - the writer runs queued write units in groups: BEGIN IMMEDIATE, one SAVEPOINT per unit, one
//    COMMIT for the whole group (synchronous=NORMAL: no fsync in it), then hands the group's
//    completions to the syncer and runs the next group;
//  - the syncer (with synchronous_full) fdatasyncs the WAL once for every group committed since
//    its last sync, then runs those completions in commit order: a unit completes only once it
//    is durable, and the disk's latency overlaps the writer's work instead of adding to it;
//  - the checkpointer copies the WAL into the database file (PASSIVE) when it passes
//    checkpoint_pages; the writer finishes each checkpoint between two groups so the WAL starts
//    over (SQLite's automatic checkpoint, inside a commit, is off);
//  - the reader runs read units one at a time, each in its own deferred transaction so it sees a
//    consistent snapshot; WAL lets it proceed while the writer writes. With synchronous_full a
//    read unit only runs once every commit its snapshot may hold is durable (see
//    wait_durable_snapshot): else a GET or an SSE stream could show a commit that a power loss
//    right after would undo.
// Statements are prepared once per connection (lazily, SQLITE_PREPARE_PERSISTENT) and reset after
// every use by an RAII guard, so the hot path never parses SQL.

#include <fcntl.h>
#include <pthread.h>
#include <sqlite3.h>
#include <unistd.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstddef>
#include <cstring>
#include <deque>
#include <limits>
#include <memory>
#include <mutex>
#include <span>
#include <stdexcept>
#include <string>
#include <thread>
#include <utility>
#include <vector>

#include "gateway/log/log.hpp"
#include "gateway/store/store.hpp"
#include "gateway/util/crypto.hpp"

namespace segue::store {

namespace detail {
// sqlite_schema.cpp: the ordered migrations (index 0 is version 1).
std::span<const char* const> sqlite_migrations();
}  // namespace detail

namespace {

millis now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

// SQLite keeps malloc statistics behind a global mutex by default: two lock round trips per
// allocation, for figures segue never reads (measured: ~4 % of the writer thread's CPU). Must
// run before SQLite initializes; a later call is refused (SQLITE_MISUSE) and changes nothing.
void disable_memory_statistics() {
    static const bool once = [] {
        sqlite3_config(SQLITE_CONFIG_MEMSTATUS, 0);
        return true;
    }();
    (void)once;
}

struct db_closer {
    // close_v2: safe even if a statement were still alive (it becomes a zombie until finalized).
    void operator()(sqlite3* db) const noexcept { sqlite3_close_v2(db); }
};
struct stmt_finalizer {
    void operator()(sqlite3_stmt* s) const noexcept { sqlite3_finalize(s); }
};
using db_ptr = std::unique_ptr<sqlite3, db_closer>;
using stmt_ptr = std::unique_ptr<sqlite3_stmt, stmt_finalizer>;

[[noreturn]] void fail(sqlite3* db, std::string_view what) {
    std::string msg = "sqlite: ";
    msg += what;
    msg += ": ";
    msg += db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    if (db != nullptr) {
        msg += " (code ";
        msg += std::to_string(sqlite3_extended_errcode(db));
        msg += ")";
    }
    throw store_error(msg);
}

// Every statement the engine runs. Column lists are macros so the SELECTs and the row readers
// below cannot drift apart (the readers index columns in this order).
#define SEGUE_TASK_COLS                                                                        \
    "id, tenant, status, provider, request_json, error_json, warnings_json, idempotency_key, " \
    "num_outputs, created_at, updated_at, version"
#define SEGUE_OUTPUT_COLS "task_id, idx, status, data_json, updated_at"
#define SEGUE_ATTEMPT_COLS                                                              \
    "task_id, number, provider, provider_task_id, callback_token, status, error_json, " \
    "state_json, started_at, finished_at"
#define SEGUE_EVENT_COLS "id, task_id, tenant, seq, type, data_json, created_at"
#define SEGUE_JOB_COLS \
    "id, kind, task_id, payload_json, due_at, lease_owner, lease_until, attempts, failures"
#define SEGUE_IDEM_COLS \
    "tenant, key, request_hash, task_id, response_status, response_body, created_at"
#define SEGUE_FILE_COLS "id, tenant, task_id, kind, content_type, path, size, sha256, created_at"
#define SEGUE_DELIVERY_COLS                                                                  \
    "id, event_id, task_id, tenant, seq, url, status, attempts, next_at, lease_owner, "      \
    "lease_until, last_status, last_error, event_at, created_at, updated_at, delivered_at, " \
    "lease_fence"
#define SEGUE_LEDGER_COLS \
    "id, tenant, task_id, output, kind, key, amount_milli, provider, note, created_at"

enum class q : int {
    begin_immediate,
    begin_deferred,
    read_snapshot,
    commit,
    rollback,
    savepoint,
    release,
    rollback_to,
    insert_task,
    update_task,
    get_task,
    list_tasks_first,
    list_tasks_before,
    upsert_output,
    get_outputs,
    upsert_attempt,
    get_attempts,
    find_attempt_by_token,
    append_event,
    get_events,
    insert_job,
    update_unique_job,
    claim_jobs,
    complete_job,
    reschedule_job,
    fail_job,
    renew_job,
    delete_jobs_for_task,
    next_due_free,
    next_due_leased,
    get_idempotency,
    insert_idempotency,
    delete_idempotency_before,
    insert_file,
    get_file,
    insert_delivery,
    claim_deliveries,
    get_event_by_id,
    finish_delivery,
    renew_delivery,
    get_delivery,
    list_deliveries,
    redeliver,
    kill_deliveries_to,
    set_endpoint_gone,
    clear_endpoint_gone,
    endpoint_gone,
    next_delivery_free,
    next_delivery_leased,
    summarize_deliveries,
    insert_ledger,
    find_ledger,
    ledger_task_open,
    ledger_account_add,
    ledger_totals,
    ledger_for_task,
    list_ledger,
    count_
};

const char* sql_of(q which) {
    switch (which) {
        case q::begin_immediate:
            return "BEGIN IMMEDIATE";
        case q::begin_deferred:
            return "BEGIN";
        case q::read_snapshot:
            // Reads the database header: inside BEGIN this starts the read transaction, i.e.
            // fixes the WAL snapshot (a "SELECT 1" would not: it reads no table).
            return "PRAGMA schema_version";
        case q::commit:
            return "COMMIT";
        case q::rollback:
            return "ROLLBACK";
        case q::savepoint:
            return "SAVEPOINT u";
        case q::release:
            return "RELEASE u";
        case q::rollback_to:
            return "ROLLBACK TO u";
        case q::insert_task:
            return "INSERT INTO tasks (" SEGUE_TASK_COLS
                   ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12)";
        case q::update_task:
            return "UPDATE tasks SET tenant = ?2, status = ?3, provider = ?4, request_json = ?5, "
                   "error_json = ?6, warnings_json = ?7, idempotency_key = ?8, num_outputs = ?9, "
                   "created_at = ?10, updated_at = ?11, version = version + 1 WHERE id = ?1 "
                   "RETURNING version";
        case q::get_task:
            return "SELECT " SEGUE_TASK_COLS " FROM tasks WHERE id = ?1";
        case q::list_tasks_first:
            return "SELECT " SEGUE_TASK_COLS
                   " FROM tasks WHERE tenant = ?1 "
                   "ORDER BY created_at DESC, id DESC LIMIT ?2";
        case q::list_tasks_before:
            // Keyset paging on (created_at, id): stable under concurrent inserts. An unknown
            // cursor (or one of another tenant) compares with NULL and yields no rows.
            return "SELECT " SEGUE_TASK_COLS
                   " FROM tasks WHERE tenant = ?1 AND (created_at, id) < "
                   "(SELECT created_at, id FROM tasks WHERE id = ?3 AND tenant = ?1) "
                   "ORDER BY created_at DESC, id DESC LIMIT ?2";
        case q::upsert_output:
            return "INSERT INTO outputs (" SEGUE_OUTPUT_COLS
                   ") VALUES (?1, ?2, ?3, ?4, ?5) "
                   "ON CONFLICT (task_id, idx) DO UPDATE SET status = excluded.status, "
                   "data_json = excluded.data_json, updated_at = excluded.updated_at";
        case q::get_outputs:
            return "SELECT " SEGUE_OUTPUT_COLS " FROM outputs WHERE task_id = ?1 ORDER BY idx";
        case q::upsert_attempt:
            return "INSERT INTO attempts (" SEGUE_ATTEMPT_COLS
                   ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10) "
                   "ON CONFLICT (task_id, number) DO UPDATE SET provider = excluded.provider, "
                   "provider_task_id = excluded.provider_task_id, "
                   "callback_token = excluded.callback_token, status = excluded.status, "
                   "error_json = excluded.error_json, state_json = excluded.state_json, "
                   "started_at = excluded.started_at, finished_at = excluded.finished_at";
        case q::get_attempts:
            return "SELECT " SEGUE_ATTEMPT_COLS " FROM attempts WHERE task_id = ?1 ORDER BY number";
        case q::find_attempt_by_token:
            // The `<> ''` term repeats the partial index's WHERE so the planner may use it.
            return "SELECT " SEGUE_ATTEMPT_COLS
                   " FROM attempts "
                   "WHERE callback_token = ?1 AND callback_token <> '' LIMIT 1";
        case q::append_event:
            // seq is computed inside the writing transaction: the single writer (and BEGIN
            // IMMEDIATE) makes it gap- and duplicate-free; the PK would reject a duplicate anyway.
            return "INSERT INTO events (" SEGUE_EVENT_COLS
                   ") "
                   "SELECT ?1, ?2, ?3, COALESCE(MAX(seq), 0) + 1, ?4, ?5, ?6 FROM events "
                   "WHERE task_id = ?2 RETURNING seq";
        case q::get_events:
            return "SELECT " SEGUE_EVENT_COLS
                   " FROM events WHERE task_id = ?1 AND seq > ?2 "
                   "ORDER BY seq LIMIT ?3";
        case q::insert_job:
            return "INSERT INTO jobs (kind, task_id, payload_json, due_at, lease_owner, "
                   "lease_until, attempts) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) RETURNING id";
        case q::update_unique_job:
            // Explicit logic rather than a unique index: non-unique jobs of the same (kind,
            // task_id) may exist. Safe because all writes run on one writer thread.
            return "UPDATE jobs SET due_at = ?3, payload_json = ?4, lease_owner = '', "
                   "lease_until = 0 WHERE id = (SELECT id FROM jobs WHERE task_id = ?2 AND "
                   "kind = ?1 ORDER BY id LIMIT 1) RETURNING id";
        case q::claim_jobs:
            // One statement so it is atomic on its own (and ports to PostgreSQL with
            // FOR UPDATE SKIP LOCKED in the subquery).
            // attempts is the claim's fencing token. A lease that expired unreleased (its
            // holder died or hung) counts as a failed run. ?5 is a JSON array of ids the
            // caller is running itself and must not take again.
            return "UPDATE jobs SET lease_owner = ?1, lease_until = ?2 + ?3, "
                   "attempts = attempts + 1, failures = failures + (lease_owner <> '') "
                   "WHERE id IN (SELECT id FROM jobs WHERE due_at <= ?2 "
                   "AND (lease_owner = '' OR lease_until <= ?2) "
                   "AND id NOT IN (SELECT value FROM json_each(?5)) ORDER BY due_at, id "
                   "LIMIT ?4) RETURNING " SEGUE_JOB_COLS;
        case q::complete_job:
            return "DELETE FROM jobs WHERE id = ?1 AND lease_owner = ?2 AND ?2 <> '' "
                   "AND attempts = ?3";
        case q::reschedule_job:
            return "UPDATE jobs SET due_at = ?4, payload_json = ?5, lease_owner = '', "
                   "lease_until = 0, failures = 0 WHERE id = ?1 AND lease_owner = ?2 "
                   "AND ?2 <> '' AND attempts = ?3";
        case q::fail_job:
            return "UPDATE jobs SET due_at = ?4, lease_owner = '', lease_until = 0, "
                   "failures = failures + 1 WHERE id = ?1 AND lease_owner = ?2 AND ?2 <> '' "
                   "AND attempts = ?3";
        case q::renew_job:
            return "UPDATE jobs SET lease_until = ?4 WHERE id = ?1 AND lease_owner = ?2 "
                   "AND ?2 <> '' AND attempts = ?3";
        case q::delete_jobs_for_task:
            return "DELETE FROM jobs WHERE task_id = ?1";
        case q::next_due_free:
            // Walks jobs_due in order, skipping leased rows (at most the in-flight jobs).
            return "SELECT due_at FROM jobs WHERE lease_owner = '' ORDER BY due_at LIMIT 1";
        case q::next_due_leased:
            // A leased job becomes claimable again when its lease expires.
            return "SELECT MIN(MAX(due_at, lease_until)) FROM jobs WHERE lease_owner <> ''";
        case q::get_idempotency:
            return "SELECT " SEGUE_IDEM_COLS " FROM idempotency WHERE tenant = ?1 AND key = ?2";
        case q::insert_idempotency:
            return "INSERT INTO idempotency (" SEGUE_IDEM_COLS
                   ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7) ON CONFLICT (tenant, key) DO NOTHING";
        case q::delete_idempotency_before:
            return "DELETE FROM idempotency WHERE created_at < ?1";
        case q::insert_file:
            return "INSERT INTO files (" SEGUE_FILE_COLS
                   ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)";
        case q::get_file:
            return "SELECT " SEGUE_FILE_COLS " FROM files WHERE id = ?1";
        case q::insert_delivery:
            return "INSERT INTO deliveries (" SEGUE_DELIVERY_COLS
                   ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, "
                   "?16, ?17, ?18)";
        case q::claim_deliveries:
            // One statement (atomic; on PostgreSQL the subquery gets FOR UPDATE SKIP LOCKED).
            // The NOT EXISTS keeps each (task, url) queue in seq order: only its head is
            // claimable, so a later event waits behind an earlier undelivered one.
            // lease_fence is the claim's fencing token; ?5 a JSON array of ids the caller is
            // sending itself and must not take again.
            return "UPDATE deliveries SET lease_owner = ?1, lease_until = ?2 + ?3, "
                   "lease_fence = lease_fence + 1 "
                   "WHERE id IN (SELECT d.id FROM deliveries d WHERE d.status = 'pending' "
                   "AND d.next_at <= ?2 AND (d.lease_owner = '' OR d.lease_until <= ?2) "
                   "AND d.id NOT IN (SELECT value FROM json_each(?5)) "
                   "AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.task_id = d.task_id "
                   "AND p.url = d.url AND p.status = 'pending' AND p.seq < d.seq) "
                   "ORDER BY d.next_at, d.id LIMIT ?4) RETURNING " SEGUE_DELIVERY_COLS;
        case q::get_event_by_id:
            return "SELECT type, data_json FROM events WHERE id = ?1";
        case q::finish_delivery:
            return "UPDATE deliveries SET status = ?3, attempts = ?4, next_at = ?5, "
                   "last_status = ?6, last_error = ?7, updated_at = ?8, delivered_at = ?9, "
                   "lease_owner = '', lease_until = 0 WHERE id = ?1 AND lease_owner = ?2 "
                   "AND ?2 <> '' AND lease_fence = ?10";
        case q::renew_delivery:
            return "UPDATE deliveries SET lease_until = ?4 WHERE id = ?1 AND lease_owner = ?2 "
                   "AND ?2 <> '' AND lease_fence = ?3 AND status = 'pending'";
        case q::get_delivery:
            return "SELECT " SEGUE_DELIVERY_COLS " FROM deliveries WHERE id = ?1";
        case q::list_deliveries:
            // ?2 status and ?3 task_id filter when not empty; ?5 is a keyset cursor.
            return "SELECT " SEGUE_DELIVERY_COLS
                   " FROM deliveries WHERE tenant = ?1 AND (?2 = '' OR status = ?2) "
                   "AND (?3 = '' OR task_id = ?3) AND (?5 = '' OR (created_at, id) < "
                   "(SELECT created_at, id FROM deliveries WHERE id = ?5 AND tenant = ?1)) "
                   "ORDER BY created_at DESC, id DESC LIMIT ?4";
        case q::redeliver:
            return "UPDATE deliveries SET status = 'pending', attempts = 0, next_at = ?2, "
                   "lease_owner = '', lease_until = 0, updated_at = ?2, delivered_at = 0 "
                   "WHERE id = ?1";
        case q::kill_deliveries_to:
            return "UPDATE deliveries SET status = 'dead', last_error = ?3, updated_at = ?4, "
                   "lease_owner = '', lease_until = 0 WHERE tenant = ?1 AND url = ?2 AND "
                   "status = 'pending'";
        case q::set_endpoint_gone:
            return "INSERT INTO gone_endpoints (tenant, url, created_at) VALUES (?1, ?2, ?3) "
                   "ON CONFLICT (tenant, url) DO NOTHING";
        case q::clear_endpoint_gone:
            return "DELETE FROM gone_endpoints WHERE tenant = ?1 AND url = ?2";
        case q::endpoint_gone:
            return "SELECT 1 FROM gone_endpoints WHERE tenant = ?1 AND url = ?2";
        case q::next_delivery_free:
            // Heads of queues only: a delivery waiting behind an earlier one is not due, however
            // old its next_at (else a retrying head would make the dispatcher spin).
            return "SELECT d.next_at FROM deliveries d WHERE d.status = 'pending' AND "
                   "d.lease_owner = '' AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE "
                   "p.task_id = d.task_id AND p.url = d.url AND p.status = 'pending' AND "
                   "p.seq < d.seq) ORDER BY d.next_at LIMIT 1";
        case q::next_delivery_leased:
            return "SELECT MIN(MAX(next_at, lease_until)) FROM deliveries WHERE "
                   "status = 'pending' AND lease_owner <> ''";
        case q::summarize_deliveries:
            return "SELECT (SELECT COUNT(*) FROM deliveries WHERE status = 'pending'), "
                   "(SELECT COUNT(*) FROM deliveries WHERE status = 'dead'), "
                   "(SELECT MIN(event_at) FROM deliveries WHERE status = 'pending')";
        case q::insert_ledger:
            return "INSERT INTO ledger (tenant, task_id, output, kind, key, amount_milli, "
                   "provider, note, created_at) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9) "
                   "ON CONFLICT (tenant, task_id, output, kind, key) DO NOTHING";
        case q::find_ledger:
            return "SELECT " SEGUE_LEDGER_COLS
                   " FROM ledger WHERE tenant = ?1 AND task_id = ?2 AND output = ?3 AND "
                   "kind = ?4 AND key = ?5";
        case q::ledger_task_open:
            // What a task's holds still cover after its captures and releases (may be < 0).
            return "SELECT COALESCE(SUM(CASE kind WHEN 'hold' THEN amount_milli "
                   "ELSE -amount_milli END), 0) FROM ledger WHERE tenant = ?1 AND task_id = ?2";
        case q::ledger_account_add:
            return "INSERT INTO ledger_accounts (tenant, granted, captured, held, updated_at) "
                   "VALUES (?1, ?2, ?3, ?4, ?5) ON CONFLICT (tenant) DO UPDATE SET "
                   "granted = granted + excluded.granted, "
                   "captured = captured + excluded.captured, held = held + excluded.held, "
                   "updated_at = excluded.updated_at";
        case q::ledger_totals:
            return "SELECT granted, captured, held FROM ledger_accounts WHERE tenant = ?1";
        case q::ledger_for_task:
            // The `<> ''` term repeats the partial index's WHERE so the planner may use it.
            return "SELECT "
                   "COALESCE(SUM(CASE WHEN kind = 'hold' THEN amount_milli END), 0), "
                   "COALESCE(SUM(CASE WHEN kind = 'capture' THEN amount_milli END), 0), "
                   "COALESCE(SUM(CASE WHEN kind = 'release' THEN amount_milli END), 0) "
                   "FROM ledger WHERE task_id = ?1 AND task_id <> ''";
        case q::list_ledger:
            // ?3 is the keyset cursor (the caller binds INT64_MAX for the first page).
            return "SELECT " SEGUE_LEDGER_COLS
                   " FROM ledger WHERE tenant = ?1 AND id < ?3 ORDER BY id DESC LIMIT ?2";
        case q::count_:
            break;
    }
    throw std::logic_error("sql_of: bad statement id");
}

#undef SEGUE_TASK_COLS
#undef SEGUE_OUTPUT_COLS
#undef SEGUE_ATTEMPT_COLS
#undef SEGUE_EVENT_COLS
#undef SEGUE_JOB_COLS
#undef SEGUE_IDEM_COLS
#undef SEGUE_FILE_COLS
#undef SEGUE_DELIVERY_COLS
#undef SEGUE_LEDGER_COLS

// One sqlite3 connection and its statement cache. Used by one thread only.
class connection {
  public:
    connection(const std::string& path, int busy_timeout_ms) {
        sqlite3* raw = nullptr;
        const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
        const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, nullptr);
        db_.reset(raw);  // owned even on failure: open_v2 may return a handle holding the error
        if (rc != SQLITE_OK)
            fail(raw, "open " + path);
        sqlite3_extended_result_codes(raw, 1);
        if (sqlite3_busy_timeout(raw, std::max(0, busy_timeout_ms)) != SQLITE_OK)
            fail(raw, "busy_timeout");
    }

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
    void exec(const char* sql) {
        char* err = nullptr;
        if (sqlite3_exec(db_.get(), sql, nullptr, nullptr, &err) != SQLITE_OK) {
            std::string msg = err != nullptr ? err : sqlite3_errmsg(db_.get());
            sqlite3_free(err);
            throw store_error("sqlite: exec failed: " + msg);
        }
    }

    // First column of the first row as text ("" if none), for PRAGMAs that answer.
    std::string query_text(const char* sql) {
        std::string out;
        auto cb = [](void* arg, int n, char** values, char**) -> int {
            if (n > 0 && values[0] != nullptr)
                *static_cast<std::string*>(arg) = values[0];
            return 0;
        };
        char* err = nullptr;
        if (sqlite3_exec(db_.get(), sql, cb, &out, &err) != SQLITE_OK) {
            std::string msg = err != nullptr ? err : sqlite3_errmsg(db_.get());
            sqlite3_free(err);
            throw store_error("sqlite: " + std::string(sql) + ": " + msg);
        }
        return out;
    }

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

void exec_cached(connection& c, q which) {
    statement st(c, which);
    st.run();
}

task_row read_task(const statement& s) {
    task_row t;
    t.id = s.text(0);
    t.tenant = s.text(1);
    t.status = s.text(2);
    t.provider = s.text(3);
    t.request_json = s.text(4);
    t.error_json = s.text(5);
    t.warnings_json = s.text(6);
    t.idempotency_key = s.text(7);
    t.num_outputs = s.i32(8);
    t.created_at = s.i64(9);
    t.updated_at = s.i64(10);
    t.version = s.i64(11);
    return t;
}

// A JSON array of ids for json_each() (claim exclusions): numbers as numbers, strings quoted
// (ids are the store's own: letters, digits and '_' only, nothing to escape).
std::string ids_json(const std::vector<std::int64_t>& ids) {
    std::string out = "[";
    for (auto id : ids) {
        if (out.size() > 1)
            out.push_back(',');
        out += std::to_string(id);
    }
    out.push_back(']');
    return out;
}
std::string ids_json(const std::vector<std::string>& ids) {
    std::string out = "[";
    for (const auto& id : ids) {
        if (out.size() > 1)
            out.push_back(',');
        out.push_back('"');
        for (char c : id)
            if (c != '"' && c != '\\' && static_cast<unsigned char>(c) >= 0x20)
                out.push_back(c);
        out.push_back('"');
    }
    out.push_back(']');
    return out;
}

output_row read_output(const statement& s) {
    output_row o;
    o.task_id = s.text(0);
    o.index = s.i32(1);
    o.status = s.text(2);
    o.data_json = s.text(3);
    o.updated_at = s.i64(4);
    return o;
}

attempt_row read_attempt(const statement& s) {
    attempt_row a;
    a.task_id = s.text(0);
    a.number = s.i32(1);
    a.provider = s.text(2);
    a.provider_task_id = s.text(3);
    a.callback_token = s.text(4);
    a.status = s.text(5);
    a.error_json = s.text(6);
    a.state_json = s.text(7);
    a.started_at = s.i64(8);
    a.finished_at = s.i64(9);
    return a;
}

event_row read_event(const statement& s) {
    event_row e;
    e.id = s.text(0);
    e.task_id = s.text(1);
    e.tenant = s.text(2);
    e.seq = s.i64(3);
    e.type = s.text(4);
    e.data_json = s.text(5);
    e.created_at = s.i64(6);
    return e;
}

job_row read_job(const statement& s) {
    job_row j;
    j.id = s.i64(0);
    j.kind = s.text(1);
    j.task_id = s.text(2);
    j.payload_json = s.text(3);
    j.due_at = s.i64(4);
    j.lease_owner = s.text(5);
    j.lease_until = s.i64(6);
    j.attempts = s.i32(7);
    j.failures = s.i32(8);
    return j;
}

idempotency_row read_idempotency(const statement& s) {
    idempotency_row r;
    r.tenant = s.text(0);
    r.key = s.text(1);
    r.request_hash = s.text(2);
    r.task_id = s.text(3);
    r.response_status = s.i32(4);
    r.response_body = s.text(5);
    r.created_at = s.i64(6);
    return r;
}

file_row read_file(const statement& s) {
    file_row f;
    f.id = s.text(0);
    f.tenant = s.text(1);
    f.task_id = s.text(2);
    f.kind = s.text(3);
    f.content_type = s.text(4);
    f.path = s.text(5);
    f.size = s.i64(6);
    f.sha256 = s.text(7);
    f.created_at = s.i64(8);
    return f;
}

delivery_row read_delivery(const statement& s) {
    delivery_row d;
    d.id = s.text(0);
    d.event_id = s.text(1);
    d.task_id = s.text(2);
    d.tenant = s.text(3);
    d.seq = s.i64(4);
    d.url = s.text(5);
    d.status = s.text(6);
    d.attempts = s.i32(7);
    d.next_at = s.i64(8);
    d.lease_owner = s.text(9);
    d.lease_until = s.i64(10);
    d.last_status = s.i32(11);
    d.last_error = s.text(12);
    d.event_at = s.i64(13);
    d.created_at = s.i64(14);
    d.updated_at = s.i64(15);
    d.delivered_at = s.i64(16);
    d.lease_fence = s.i64(17);
    return d;
}

ledger_row read_ledger(const statement& s) {
    ledger_row e;
    e.id = s.i64(0);
    e.tenant = s.text(1);
    e.task_id = s.text(2);
    e.output = s.i32(3);
    e.kind = s.text(4);
    e.key = s.text(5);
    e.amount_milli = s.i64(6);
    e.provider = s.text(7);
    e.note = s.text(8);
    e.created_at = s.i64(9);
    return e;
}

// Refuses entries that would corrupt the totals (the schema's CHECKs catch less, and later).
void check_ledger_entry(const ledger_row& e) {
    const bool task_kind = e.kind == "hold" || e.kind == "capture" || e.kind == "release";
    const bool tenant_kind = e.kind == "grant" || e.kind == "topup";
    if (!task_kind && !tenant_kind)
        throw std::invalid_argument("add_ledger_entry: unknown kind '" + e.kind + "'");
    if (e.amount_milli < 0)
        throw std::invalid_argument("add_ledger_entry: negative amount");
    if (e.tenant.empty())
        throw std::invalid_argument("add_ledger_entry: empty tenant");
    if (task_kind && e.task_id.empty())
        throw std::invalid_argument("add_ledger_entry: a " + e.kind + " needs a task_id");
    if (tenant_kind && (!e.task_id.empty() || e.output != 0))
        throw std::invalid_argument("add_ledger_entry: a " + e.kind + " is not about a task");
    if (e.output < 0)
        throw std::invalid_argument("add_ledger_entry: negative output index");
}

// The operations over one connection. The caller (writer or reader loop) owns the
// BEGIN/SAVEPOINT/COMMIT around them.
class sqlite_transaction final : public transaction {
  public:
    explicit sqlite_transaction(connection& c) : c_(c) {}

    void insert_task(const task_row& t) override {
        statement st(c_, q::insert_task);
        st.bind_all(t.id, t.tenant, t.status, t.provider, t.request_json, t.error_json,
                    t.warnings_json, t.idempotency_key, t.num_outputs, t.created_at, t.updated_at,
                    t.version);
        st.run();
    }

    // Returns 0 when no task has that id (versions start at the inserted value and only grow,
    // so 0 is never a post-update version for a task inserted with version >= 0).
    std::int64_t update_task(const task_row& t) override {
        statement st(c_, q::update_task);
        st.bind_all(t.id, t.tenant, t.status, t.provider, t.request_json, t.error_json,
                    t.warnings_json, t.idempotency_key, t.num_outputs, t.created_at, t.updated_at);
        if (!st.step())
            return 0;
        const std::int64_t version = st.i64(0);
        st.run();
        return version;
    }

    std::optional<task_row> get_task(std::string_view id) override {
        statement st(c_, q::get_task);
        st.bind_all(id);
        if (!st.step())
            return std::nullopt;
        return read_task(st);
    }

    std::vector<task_row> list_tasks(std::string_view tenant, int limit,
                                     std::string_view before_id) override {
        std::vector<task_row> out;
        if (limit <= 0)
            return out;
        statement st(c_, before_id.empty() ? q::list_tasks_first : q::list_tasks_before);
        st.bind(1, tenant);
        st.bind(2, limit);
        if (!before_id.empty())
            st.bind(3, before_id);
        while (st.step())
            out.push_back(read_task(st));
        return out;
    }

    void upsert_output(const output_row& o) override {
        statement st(c_, q::upsert_output);
        st.bind_all(o.task_id, o.index, o.status, o.data_json, o.updated_at);
        st.run();
    }

    std::vector<output_row> get_outputs(std::string_view task_id) override {
        statement st(c_, q::get_outputs);
        st.bind_all(task_id);
        std::vector<output_row> out;
        while (st.step())
            out.push_back(read_output(st));
        return out;
    }

    void upsert_attempt(const attempt_row& a) override {
        statement st(c_, q::upsert_attempt);
        st.bind_all(a.task_id, a.number, a.provider, a.provider_task_id, a.callback_token, a.status,
                    a.error_json, a.state_json, a.started_at, a.finished_at);
        st.run();
    }

    std::vector<attempt_row> get_attempts(std::string_view task_id) override {
        statement st(c_, q::get_attempts);
        st.bind_all(task_id);
        std::vector<attempt_row> out;
        while (st.step())
            out.push_back(read_attempt(st));
        return out;
    }

    std::optional<attempt_row> find_attempt_by_token(std::string_view token) override {
        if (token.empty())  // "" means "no token": never matches
            return std::nullopt;
        statement st(c_, q::find_attempt_by_token);
        st.bind_all(token);
        if (!st.step())
            return std::nullopt;
        return read_attempt(st);
    }

    event_row append_event(event_row e) override {
        if (e.id.empty())
            // Event ids double as webhook ids: globally unique without coordination (80
            // random bits), and time-ordered so the events table's id index grows at its edge.
            e.id = util::sortable_id("evt_");
        if (e.created_at == 0)
            e.created_at = now_ms();
        statement st(c_, q::append_event);
        st.bind_all(e.id, e.task_id, e.tenant, e.type, e.data_json, e.created_at);
        if (!st.step())
            throw store_error("append_event: no row returned");
        e.seq = st.i64(0);
        st.run();
        return e;
    }

    std::vector<event_row> get_events(std::string_view task_id, std::int64_t after_seq,
                                      int limit) override {
        std::vector<event_row> out;
        if (limit <= 0)
            return out;
        statement st(c_, q::get_events);
        st.bind_all(task_id, after_seq, limit);
        while (st.step())
            out.push_back(read_event(st));
        return out;
    }

    std::int64_t schedule_job(const job_row& j, bool unique) override {
        if (unique) {
            statement st(c_, q::update_unique_job);
            st.bind_all(j.kind, j.task_id, j.due_at, j.payload_json);
            if (st.step()) {
                const std::int64_t id = st.i64(0);
                st.run();
                return id;
            }
        }
        statement st(c_, q::insert_job);
        st.bind_all(j.kind, j.task_id, j.payload_json, j.due_at, j.lease_owner, j.lease_until,
                    j.attempts);
        if (!st.step())
            throw store_error("schedule_job: no id returned");
        const std::int64_t id = st.i64(0);
        st.run();
        return id;
    }

    // Renews each (id, fence) lease `owner` still holds until `until`; returns the ids it no
    // longer holds (expired and claimed again, completed elsewhere, or deleted).
    template <typename Id>
    std::vector<Id> renew(q query, std::string_view owner,
                          const std::vector<std::pair<Id, std::int64_t>>& leases, millis until) {
        std::vector<Id> lost;
        for (const auto& [id, fence] : leases) {
            statement st(c_, query);
            st.bind_all(id, owner, fence, until);
            st.run();
            if (st.changes() == 0)
                lost.push_back(id);
        }
        return lost;
    }

    std::vector<job_row> claim_jobs(std::string_view owner, millis now, millis lease_ms, int limit,
                                    const std::vector<std::int64_t>& exclude) override {
        // An empty owner would be indistinguishable from "not leased".
        if (owner.empty())
            throw std::invalid_argument("claim_jobs: empty lease owner");
        std::vector<job_row> out;
        if (limit <= 0)
            return out;
        const std::string excluded = ids_json(exclude);  // bound without a copy: keep it alive
        statement st(c_, q::claim_jobs);
        st.bind_all(owner, now, lease_ms, limit, excluded);
        while (st.step())
            out.push_back(read_job(st));
        // RETURNING gives no order guarantee; callers get oldest due first.
        std::sort(out.begin(), out.end(), [](const job_row& a, const job_row& b) {
            return a.due_at != b.due_at ? a.due_at < b.due_at : a.id < b.id;
        });
        return out;
    }

    bool complete_job(const lease_ref& l) override {
        statement st(c_, q::complete_job);
        st.bind_all(l.id, l.owner, l.fence);
        st.run();
        return st.changes() > 0;
    }

    bool reschedule_job(const lease_ref& l, millis due_at, std::string_view payload_json) override {
        statement st(c_, q::reschedule_job);
        st.bind_all(l.id, l.owner, l.fence, due_at, payload_json);
        st.run();
        return st.changes() > 0;
    }

    bool fail_job(const lease_ref& l, millis due_at) override {
        statement st(c_, q::fail_job);
        st.bind_all(l.id, l.owner, l.fence, due_at);
        st.run();
        return st.changes() > 0;
    }

    std::vector<std::int64_t> renew_jobs(
        std::string_view owner, const std::vector<std::pair<std::int64_t, std::int64_t>>& leases,
        millis until) override {
        return renew(q::renew_job, owner, leases, until);
    }

    void delete_jobs_for_task(std::string_view task_id) override {
        // "" marks jobs that are not about a task; deleting all of them is never what a caller
        // with an empty task id means.
        if (task_id.empty())
            return;
        statement st(c_, q::delete_jobs_for_task);
        st.bind_all(task_id);
        st.run();
    }

    std::optional<millis> next_job_due() override {
        std::optional<millis> best;
        {
            statement st(c_, q::next_due_free);
            if (st.step())
                best = st.i64(0);
        }
        statement st(c_, q::next_due_leased);
        if (st.step() && !st.is_null(0)) {
            const millis leased = st.i64(0);
            if (!best || leased < *best)
                best = leased;
        }
        return best;
    }

    std::optional<idempotency_row> get_idempotency(std::string_view tenant,
                                                   std::string_view key) override {
        statement st(c_, q::get_idempotency);
        st.bind_all(tenant, key);
        if (!st.step())
            return std::nullopt;
        return read_idempotency(st);
    }

    bool insert_idempotency(const idempotency_row& r) override {
        statement st(c_, q::insert_idempotency);
        st.bind_all(r.tenant, r.key, r.request_hash, r.task_id, r.response_status, r.response_body,
                    r.created_at);
        st.run();
        return st.changes() > 0;
    }

    int delete_idempotency_before(millis cutoff) override {
        statement st(c_, q::delete_idempotency_before);
        st.bind_all(cutoff);
        st.run();
        return st.changes();
    }

    void insert_file(const file_row& f) override {
        statement st(c_, q::insert_file);
        st.bind_all(f.id, f.tenant, f.task_id, f.kind, f.content_type, f.path, f.size, f.sha256,
                    f.created_at);
        st.run();
    }

    std::optional<file_row> get_file(std::string_view id) override {
        statement st(c_, q::get_file);
        st.bind_all(id);
        if (!st.step())
            return std::nullopt;
        return read_file(st);
    }

    void insert_delivery(const delivery_row& d) override {
        outbox_written = true;
        statement st(c_, q::insert_delivery);
        st.bind_all(d.id, d.event_id, d.task_id, d.tenant, d.seq, d.url, d.status, d.attempts,
                    d.next_at, d.lease_owner, d.lease_until, d.last_status, d.last_error,
                    d.event_at, d.created_at, d.updated_at, d.delivered_at, d.lease_fence);
        st.run();
    }

    std::vector<delivery_row> claim_deliveries(std::string_view owner, millis now, millis lease_ms,
                                               int limit,
                                               const std::vector<std::string>& exclude) override {
        if (owner.empty())
            throw std::invalid_argument("claim_deliveries: empty lease owner");
        std::vector<delivery_row> out;
        if (limit <= 0)
            return out;
        {
            const std::string excluded = ids_json(exclude);  // bound without a copy
            statement st(c_, q::claim_deliveries);
            st.bind_all(owner, now, lease_ms, limit, excluded);
            while (st.step())
                out.push_back(read_delivery(st));
        }
        for (auto& d : out) {
            statement ev(c_, q::get_event_by_id);
            ev.bind_all(d.event_id);
            if (ev.step()) {
                d.event_type = ev.text(0);
                d.event_data_json = ev.text(1);
            }
        }
        std::sort(out.begin(), out.end(), [](const delivery_row& a, const delivery_row& b) {
            return a.next_at != b.next_at ? a.next_at < b.next_at : a.id < b.id;
        });
        return out;
    }

    bool finish_delivery(const delivery_row& d, std::string_view owner) override {
        statement st(c_, q::finish_delivery);
        st.bind_all(d.id, owner, d.status, d.attempts, d.next_at, d.last_status, d.last_error,
                    d.updated_at, d.delivered_at, d.lease_fence);
        st.run();
        return st.changes() > 0;
    }

    std::vector<std::string> renew_deliveries(
        std::string_view owner, const std::vector<std::pair<std::string, std::int64_t>>& leases,
        millis until) override {
        return renew(q::renew_delivery, owner, leases, until);
    }

    std::optional<delivery_row> get_delivery(std::string_view id) override {
        statement st(c_, q::get_delivery);
        st.bind_all(id);
        if (!st.step())
            return std::nullopt;
        return read_delivery(st);
    }

    std::vector<delivery_row> list_deliveries(std::string_view tenant, std::string_view status,
                                              std::string_view task_id, int limit,
                                              std::string_view before_id) override {
        statement st(c_, q::list_deliveries);
        st.bind_all(tenant, status, task_id, limit, before_id);
        std::vector<delivery_row> out;
        while (st.step())
            out.push_back(read_delivery(st));
        return out;
    }

    bool redeliver(std::string_view id, millis now) override {
        outbox_written = true;
        statement st(c_, q::redeliver);
        st.bind_all(id, now);
        st.run();
        return st.changes() > 0;
    }

    int kill_deliveries_to(std::string_view tenant, std::string_view url, std::string_view reason,
                           millis now) override {
        statement st(c_, q::kill_deliveries_to);
        st.bind_all(tenant, url, reason, now);
        st.run();
        return st.changes();
    }

    void set_endpoint_gone(std::string_view tenant, std::string_view url, bool gone,
                           millis now) override {
        if (gone) {
            statement st(c_, q::set_endpoint_gone);
            st.bind_all(tenant, url, now);
            st.run();
        } else {
            statement st(c_, q::clear_endpoint_gone);
            st.bind_all(tenant, url);
            st.run();
        }
    }

    bool endpoint_gone(std::string_view tenant, std::string_view url) override {
        statement st(c_, q::endpoint_gone);
        st.bind_all(tenant, url);
        return st.step();
    }

    std::optional<millis> next_delivery_due() override {
        std::optional<millis> best;
        {
            statement st(c_, q::next_delivery_free);
            if (st.step())
                best = st.i64(0);
        }
        statement st(c_, q::next_delivery_leased);
        if (st.step() && !st.is_null(0)) {
            const millis leased = st.i64(0);
            if (!best || leased < *best)
                best = leased;
        }
        return best;
    }

    delivery_summary summarize_deliveries() override {
        statement st(c_, q::summarize_deliveries);
        delivery_summary out;
        if (st.step()) {
            out.pending = st.i64(0);
            out.dead = st.i64(1);
            if (!st.is_null(2))
                out.oldest_pending_event_at = st.i64(2);
        }
        return out;
    }

    bool add_ledger_entry(const ledger_row& e) override {
        check_ledger_entry(e);
        const millis at = e.created_at != 0 ? e.created_at : now_ms();
        {
            statement st(c_, q::insert_ledger);
            st.bind_all(e.tenant, e.task_id, e.output, e.kind, e.key, e.amount_milli, e.provider,
                        e.note, at);
            st.run();
            if (st.changes() == 0)
                return false;
        }
        // Keep the tenant's running totals (same transaction: they commit or roll back with
        // the entry).
        std::int64_t granted = 0, captured = 0, held = 0;
        if (e.kind == "grant" || e.kind == "topup") {
            granted = e.amount_milli;
        } else {
            if (e.kind == "capture")
                captured = e.amount_milli;
            statement st(c_, q::ledger_task_open);
            st.bind_all(e.tenant, e.task_id);
            const std::int64_t after = st.step() ? st.i64(0) : 0;
            const std::int64_t before =
                e.kind == "hold" ? after - e.amount_milli : after + e.amount_milli;
            held = std::max<std::int64_t>(0, after) - std::max<std::int64_t>(0, before);
        }
        statement st(c_, q::ledger_account_add);
        st.bind_all(e.tenant, granted, captured, held, at);
        st.run();
        return true;
    }

    std::optional<ledger_row> find_ledger_entry(std::string_view tenant, std::string_view task_id,
                                                int output, std::string_view kind,
                                                std::string_view key) override {
        statement st(c_, q::find_ledger);
        st.bind_all(tenant, task_id, output, kind, key);
        if (!st.step())
            return std::nullopt;
        return read_ledger(st);
    }

    ledger_balance ledger_totals(std::string_view tenant) override {
        statement st(c_, q::ledger_totals);
        st.bind_all(tenant);
        ledger_balance b;
        if (st.step()) {
            b.granted = st.i64(0);
            b.captured = st.i64(1);
            b.held = st.i64(2);
        }
        b.balance = b.granted - b.captured;
        b.available = b.balance - b.held;
        return b;
    }

    task_ledger ledger_for_task(std::string_view task_id) override {
        task_ledger t;
        if (task_id.empty())  // "" marks grants and top-ups, which are no task's
            return t;
        statement st(c_, q::ledger_for_task);
        st.bind_all(task_id);
        if (st.step()) {
            t.hold = st.i64(0);
            t.captured = st.i64(1);
            t.released = st.i64(2);
        }
        return t;
    }

    std::vector<ledger_row> list_ledger(std::string_view tenant, int limit,
                                        std::int64_t before_id) override {
        std::vector<ledger_row> out;
        if (limit <= 0)
            return out;
        statement st(c_, q::list_ledger);
        st.bind_all(tenant, limit,
                    before_id > 0 ? before_id : std::numeric_limits<std::int64_t>::max());
        while (st.step())
            out.push_back(read_ledger(st));
        return out;
    }

    bool ensure_grant(std::string_view tenant, std::int64_t amount_milli, millis now) override {
        if (amount_milli <= 0)
            return false;
        // Look first: the common case (already granted) then writes nothing at all, not even
        // the AUTOINCREMENT counter that an ignored INSERT still advances.
        if (find_ledger_entry(tenant, "", 0, "grant", "initial"))
            return false;
        ledger_row e;
        e.tenant = std::string(tenant);
        e.kind = "grant";
        e.key = "initial";
        e.amount_milli = amount_milli;
        e.note = "initial grant";
        e.created_at = now;
        return add_ledger_entry(e);
    }

    // Set when a unit made a delivery due: the store tells the outbox listener after commit.
    bool outbox_written = false;

  private:
    connection& c_;
};

// Applies the migrations the database has not seen yet, each in its own IMMEDIATE transaction
// (the version is re-read inside it, so two processes opening the same file cannot both apply
// one).
void migrate(connection& c) {
    c.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
        "applied_at INTEGER NOT NULL)");
    const auto migrations = detail::sqlite_migrations();
    const auto known = static_cast<std::int64_t>(migrations.size());
    for (;;) {
        c.exec("BEGIN IMMEDIATE");
        try {
            const std::int64_t current =
                std::stoll("0" + c.query_text("SELECT MAX(version) FROM schema_migrations"));
            if (current > known)
                throw store_error("sqlite: database schema version " + std::to_string(current) +
                                  " is newer than this build supports (" + std::to_string(known) +
                                  "); refusing to open it");
            if (current == known) {
                c.exec("COMMIT");
                return;
            }
            const std::int64_t version = current + 1;
            c.exec(migrations[static_cast<std::size_t>(version - 1)]);
            c.exec(("INSERT INTO schema_migrations (version, applied_at) VALUES (" +
                    std::to_string(version) + ", " + std::to_string(now_ms()) + ")")
                       .c_str());
            c.exec("COMMIT");
            log::info("store migration applied", {{"version", version}});
        } catch (...) {
            if (c.in_transaction())
                sqlite3_exec(c.get(), "ROLLBACK", nullptr, nullptr, nullptr);
            throw;
        }
    }
}

// At most 15 characters (the kernel's limit).
void name_thread(const char* name) noexcept {
    ::pthread_setname_np(::pthread_self(), name);
}

void call_done(const store::completion& done, std::exception_ptr err) noexcept {
    if (!done)
        return;
    try {
        done(std::move(err));
    } catch (const std::exception& e) {
        // A throwing completion must not kill the store thread (and with it every later write).
        log::error("store completion threw", {{"error", e.what()}});
    } catch (...) {
        log::error("store completion threw", {{"error", "unknown exception"}});
    }
}

class sqlite_store final : public store {
  public:
    explicit sqlite_store(const sqlite_options& o)
        : max_batch_(static_cast<std::size_t>(std::max(1, o.max_batch))),
          sync_wal_(o.synchronous_full),
          before_sync_(o.before_sync) {
        if (o.path.empty() || o.path == ":memory:" || o.path.starts_with("file::memory:"))
            throw store_error("sqlite: a database file path is required (WAL needs a file)");

        disable_memory_statistics();
        writer_db_ = std::make_unique<connection>(o.path, o.busy_timeout_ms);
        const std::string mode = writer_db_->query_text("PRAGMA journal_mode = WAL");
        if (mode != "wal")
            throw store_error("sqlite: could not enable WAL (journal_mode is '" + mode + "')");
        // NORMAL: COMMIT does not fsync. With synchronous_full the syncer thread makes each
        // commit durable (fdatasync of the WAL) before its completions run, while the writer
        // already runs the next group: see sync_loop.
        writer_db_->exec("PRAGMA synchronous = NORMAL");
        writer_db_->exec("PRAGMA foreign_keys = ON");
        // Savepoint journals stay in memory instead of spilling to /var/tmp files (measured:
        // ~1.2 temp files created and deleted per task without it).
        writer_db_->exec("PRAGMA temp_store = MEMORY");
        // A restarted WAL is cut back to this size (it is reused, not shrunk, otherwise).
        writer_db_->exec("PRAGMA journal_size_limit = 67108864");
        // Negative: in KiB rather than pages.
        const std::string cache = "PRAGMA cache_size = -" + std::to_string(std::max<std::uint64_t>(
                                                                1, o.writer_cache_bytes / 1024));
        writer_db_->exec(cache.c_str());
        migrate(*writer_db_);

        // Opened after the migrations so it never sees a half-built schema.
        reader_db_ = std::make_unique<connection>(o.path, o.busy_timeout_ms);
        reader_db_->exec("PRAGMA foreign_keys = ON");
        reader_db_->exec("PRAGMA query_only = ON");  // read units cannot write, by construction

        // Checkpoints (WAL -> database file) run on their own connection and thread, see
        // checkpoint_loop. The hook replaces SQLite's automatic checkpoint, which would copy
        // ~1,000 pages and fsync twice inside a commit of the writer: measured, that stall was
        // the whole tail of the submit latency (bench/submit.sh p99 12 ms -> 5.8 ms without it).
        checkpoint_db_ = std::make_unique<connection>(o.path, o.busy_timeout_ms);
        checkpoint_pages_ = std::max(1, o.checkpoint_pages);
        sqlite3_wal_hook(writer_db_->get(), &sqlite_store::on_wal_commit, this);

        if (o.synchronous_full) {
            // The WAL exists now (the connections above read the database). fdatasync on any
            // descriptor of a file flushes that file; SQLite keeps the WAL's inode until the
            // last connection closes (a restarted WAL is rewritten or truncated in place).
            const std::string wal = o.path + "-wal";
            wal_fd_ = ::open(wal.c_str(), O_RDONLY | O_CLOEXEC);
            if (wal_fd_ < 0)
                throw store_error("sqlite: cannot open " + wal +
                                  " to sync it: " + std::strerror(errno));
            // Frames a killed predecessor committed but never synced are still in the page
            // cache, and readable: make them durable before anything reads them.
            if (::fdatasync(wal_fd_) != 0) {
                const std::string err = std::strerror(errno);
                close_wal_fd();
                throw store_error("sqlite: cannot sync " + wal + ": " + err);
            }
        }

        // Named for ps -L, top -H, perf and the benchmarks (which read each one's CPU time).
        syncer_ = std::thread([this] {
            name_thread("store-sync");
            sync_loop();
        });
        try {
            writer_ = std::thread([this] {
                name_thread("store-writer");
                writer_loop();
            });
            reader_ = std::thread([this] {
                name_thread("store-reader");
                reader_loop();
            });
            checkpointer_ = std::thread([this] {
                name_thread("store-checkpoint");
                checkpoint_loop();
            });
        } catch (...) {
            stop_queue(writes_);
            stop_queue(reads_);
            stop_checkpointer();
            if (writer_.joinable())
                writer_.join();
            stop_syncer();
            syncer_.join();
            if (reader_.joinable())
                reader_.join();
            close_wal_fd();
            throw;
        }
        // Kept apart from the std::thread objects, which join() modifies.
        writer_id_ = writer_.get_id();
        reader_id_ = reader_.get_id();
        syncer_id_ = syncer_.get_id();
    }

    ~sqlite_store() override { close(); }

    void submit_write(unit fn, completion done) override {
        submit(writes_, std::move(fn), std::move(done));
    }
    void submit_read(unit fn, completion done) override {
        submit(reads_, std::move(fn), std::move(done));
    }

    void close() override {
        stop_queue(writes_);
        stop_queue(reads_);
        // From a completion (a store thread) we cannot join ourselves: the loops still drain
        // and exit, and the destructor joins.
        const auto self = std::this_thread::get_id();
        if (self == writer_id_ || self == reader_id_ || self == syncer_id_)
            return;
        std::lock_guard lk(close_mutex_);
        if (writer_.joinable())
            writer_.join();
        // After the writer: its last groups still get synced and completed.
        stop_syncer();
        if (syncer_.joinable())
            syncer_.join();
        close_wal_fd();
        if (reader_.joinable())
            reader_.join();
        stop_checkpointer();
        if (checkpointer_.joinable())
            checkpointer_.join();
        checkpoint_db_.reset();
        reader_db_.reset();
        writer_db_.reset();  // the last connection to close checkpoints and removes the WAL
    }

    void set_outbox_listener(std::function<void()> fn) override {
        std::lock_guard lk(listener_mutex_);
        outbox_listener_ = std::move(fn);
    }

    store_stats stats() const override {
        return store_stats{commits_.load(std::memory_order_relaxed),
                           units_.load(std::memory_order_relaxed),
                           checkpoints_.load(std::memory_order_relaxed),
                           wal_pages_.load(std::memory_order_relaxed),
                           syncs_.load(std::memory_order_relaxed),
                           read_waits_.load(std::memory_order_relaxed)};
    }

  private:
    struct item {
        unit fn;
        completion done;
    };
    struct pending_done {
        completion done;
        std::exception_ptr err;
    };
    struct synced_group {
        bool committed = false;  // needs the sync before its completions
        std::uint64_t seq = 0;   // its commit sequence number (0: no COMMIT was attempted)
        bool outbox = false;     // made a delivery due: tell the outbox listener
        std::vector<pending_done> dones;
    };
    struct work_queue {
        std::mutex m;
        std::condition_variable cv;
        std::deque<item> items;
        bool stopping = false;
    };

    static void stop_queue(work_queue& wq) {
        {
            std::lock_guard lk(wq.m);
            wq.stopping = true;
        }
        wq.cv.notify_all();
    }

    static void submit(work_queue& wq, unit fn, completion done) {
        {
            std::lock_guard lk(wq.m);
            if (!wq.stopping) {
                wq.items.push_back(item{std::move(fn), std::move(done)});
                wq.cv.notify_one();
                return;
            }
        }
        call_done(done, std::make_exception_ptr(store_error("store closed")));
    }

    // Waits for work and moves up to `max` items into `out`; false once stopped and drained.
    static bool take(work_queue& wq, std::vector<item>& out, std::size_t max) {
        std::unique_lock lk(wq.m);
        wq.cv.wait(lk, [&] { return !wq.items.empty() || wq.stopping; });
        if (wq.items.empty())
            return false;
        const std::size_t n = std::min(max, wq.items.size());
        for (std::size_t i = 0; i < n; ++i) {
            out.push_back(std::move(wq.items.front()));
            wq.items.pop_front();
        }
        return true;
    }

    void writer_loop() {
        std::vector<item> batch;
        batch.reserve(std::min<std::size_t>(max_batch_, 1024));
        while (take(writes_, batch, max_batch_)) {
            std::span<item> rest(batch);
            while (!rest.empty())
                rest = rest.subspan(run_group(rest));
            batch.clear();
            if (finish_checkpoint_.exchange(false, std::memory_order_acq_rel))
                checkpoint_tail();
        }
    }

    // Called by SQLite on the writer thread after each commit, with the WAL's size in pages.
    static int on_wal_commit(void* self, sqlite3*, const char*, int pages) {
        auto& s = *static_cast<sqlite_store*>(self);
        s.wal_pages_.store(static_cast<std::uint64_t>(pages), std::memory_order_relaxed);
        if (pages >= s.checkpoint_pages_) {
            {
                std::lock_guard lk(s.checkpoint_mutex_);
                s.checkpoint_due_ = true;
            }
            s.checkpoint_cv_.notify_one();
        }
        return SQLITE_OK;
    }

    // The bulk of each checkpoint, off the writer: a PASSIVE checkpoint copies the WAL's frames
    // into the database file (and fsyncs both) without taking the write lock, so commits go on
    // meanwhile. It cannot catch up with a writer that keeps appending, and SQLite only starts
    // the WAL over once a checkpoint has copied every frame; so the writer then finishes it
    // itself between two groups (checkpoint_tail), when only the frames of the last moments
    // are left to copy.
    void checkpoint_loop() {
        std::unique_lock lk(checkpoint_mutex_);
        for (;;) {
            checkpoint_cv_.wait(lk, [&] { return checkpoint_due_ || checkpoint_stop_; });
            if (checkpoint_stop_)
                return;
            checkpoint_due_ = false;
            lk.unlock();
            int log_pages = 0, copied = 0;
            const int rc = sqlite3_wal_checkpoint_v2(
                checkpoint_db_->get(), nullptr, SQLITE_CHECKPOINT_PASSIVE, &log_pages, &copied);
            if (rc == SQLITE_OK) {
                checkpoints_.fetch_add(1, std::memory_order_relaxed);
                finish_checkpoint_.store(true, std::memory_order_release);
            } else if (rc != SQLITE_BUSY && rc != SQLITE_LOCKED) {
                log::warn("store checkpoint failed",
                          {{"error", sqlite3_errmsg(checkpoint_db_->get())}});
            }
            lk.lock();
        }
    }

    // On the writer, between groups: copies what the background checkpoint left (the frames
    // committed while it ran), so that the next transaction starts the WAL over.
    void checkpoint_tail() {
        int log_pages = 0, copied = 0;
        const int rc = sqlite3_wal_checkpoint_v2(writer_db_->get(), nullptr,
                                                 SQLITE_CHECKPOINT_PASSIVE, &log_pages, &copied);
        if (rc != SQLITE_OK && rc != SQLITE_BUSY && rc != SQLITE_LOCKED)
            log::warn("store checkpoint failed", {{"error", sqlite3_errmsg(writer_db_->get())}});
    }

    void stop_checkpointer() {
        {
            std::lock_guard lk(checkpoint_mutex_);
            checkpoint_stop_ = true;
        }
        checkpoint_cv_.notify_all();
    }

    // Runs units of `items` in one transaction and completes them; returns how many it
    // consumed (all of them, unless SQLite aborted the whole transaction mid-way: the rest then
    // go to a fresh transaction).
    std::size_t run_group(std::span<item> items) {
        connection& c = *writer_db_;
        sqlite_transaction txn(c);
        std::vector<std::exception_ptr> errs(items.size());
        if (sync_failed_.load(std::memory_order_acquire)) {
            // Completed through the syncer too, so completions keep their order.
            synced_group g;
            for (auto& it : items)
                g.dones.push_back({std::move(it.done), sync_failure()});
            to_syncer(std::move(g));
            return items.size();
        }

        try {
            if (c.in_transaction())  // a failed ROLLBACK earlier must not wedge every group
                exec_cached(c, q::rollback);
            exec_cached(c, q::begin_immediate);
        } catch (...) {
            const auto err = std::current_exception();
            synced_group g;
            for (auto& it : items)
                g.dones.push_back({std::move(it.done), err});
            to_syncer(std::move(g));
            return items.size();
        }

        std::size_t ran = 0;
        bool lost = false;  // the whole transaction is gone (SQLite rolled it back)
        for (; ran < items.size() && !lost; ++ran) {
            try {
                exec_cached(c, q::savepoint);
            } catch (...) {
                errs[ran] = std::current_exception();
                lost = true;
                break;
            }
            try {
                items[ran].fn(txn);
                exec_cached(c, q::release);
            } catch (...) {
                errs[ran] = std::current_exception();
                // Some errors (I/O, disk full, ...) make SQLite roll back the whole transaction,
                // which also undid the earlier units of this group.
                if (!c.in_transaction()) {
                    lost = true;
                    break;
                }
                try {
                    exec_cached(c, q::rollback_to);
                    exec_cached(c, q::release);
                } catch (...) {
                    lost = true;
                    break;
                }
            }
        }

        std::exception_ptr group_err;
        std::uint64_t seq = 0;
        if (lost) {
            group_err = std::make_exception_ptr(
                store_error("sqlite: transaction aborted by a failing unit; nothing committed"));
            ++ran;  // the unit that broke the transaction is consumed (it has its error)
        } else {
            // Published before the COMMIT makes the group visible to readers: see
            // wait_durable_snapshot for why not after.
            seq = ++commit_seq_;
            committing_.store(seq, std::memory_order_seq_cst);
            try {
                exec_cached(c, q::commit);
            } catch (...) {
                group_err = std::current_exception();  // a store_error from statement::step
            }
        }
        if (group_err && c.in_transaction()) {
            try {
                exec_cached(c, q::rollback);
            } catch (...) {
                // Nothing more to do: the connection reports the state on the next BEGIN.
            }
        }

        if (!group_err) {
            std::uint64_t ok = 0;
            for (std::size_t i = 0; i < ran; ++i)
                ok += errs[i] ? 0 : 1;
            commits_.fetch_add(1, std::memory_order_relaxed);
            units_.fetch_add(ok, std::memory_order_relaxed);
        }
        // Completions only after COMMIT (the group's data is visible to any read submitted from
        // a completion) and, with synchronous_full, after the syncer made it durable. A unit
        // that failed on its own keeps its own exception; every unit that would have committed
        // gets the group's store_error.
        synced_group g;
        g.committed = !group_err;
        g.seq = seq;
        g.outbox = !group_err && txn.outbox_written;
        g.dones.reserve(ran);
        for (std::size_t i = 0; i < ran; ++i)
            g.dones.push_back({std::move(items[i].done), errs[i] ? errs[i] : group_err});
        to_syncer(std::move(g));
        return ran;
    }

    // Every group's completions go through the syncer, failed groups' too, so that completions
    // keep the order of the units.
    void to_syncer(synced_group g) {
        {
            std::lock_guard lk(sync_mutex_);
            sync_queue_.push_back(std::move(g));
        }
        sync_cv_.notify_one();
    }

    // Completes committed groups in commit order. With synchronous_full, first one fdatasync
    // of the WAL for every group committed since the last one: meanwhile the writer runs the
    // next groups instead of waiting for the disk (measured: the writer spent ~a third of its
    // time in fsync). A failed sync fails the units it covered and every later write: after a
    // failed fsync the kernel may have dropped the dirty pages, so nothing written since can be
    // trusted to be on disk (the process must restart).
    void sync_loop() {
        std::vector<synced_group> groups;
        for (;;) {
            {
                std::unique_lock lk(sync_mutex_);
                sync_cv_.wait(lk, [&] { return !sync_queue_.empty() || sync_stop_; });
                if (sync_queue_.empty()) {
                    lk.unlock();
                    {
                        std::lock_guard dlk(durable_mutex_);
                        sync_exited_ = true;
                    }
                    durable_cv_.notify_all();
                    return;
                }
                groups.swap(sync_queue_);
            }
            bool any_commit = false, outbox = false;
            std::uint64_t top = 0;  // the highest commit sequence number these groups hold
            for (const auto& g : groups) {
                // A failed COMMIT too: its number counts as durable only after a sync.
                any_commit = any_commit || g.committed || g.seq != 0;
                outbox = outbox || g.outbox;
                top = std::max(top, g.seq);
            }
            std::exception_ptr sync_err;
            if (any_commit && wal_fd_ >= 0) {
                if (sync_failed_.load(std::memory_order_acquire)) {
                    sync_err = sync_failure();
                } else if (const std::string why = sync_wal(); !why.empty()) {
                    log::error("store: fdatasync of the WAL failed; refusing further writes",
                               {{"error", why}});
                    sync_failed_.store(true, std::memory_order_release);
                    sync_err = sync_failure();
                } else {
                    syncs_.fetch_add(1, std::memory_order_relaxed);
                }
            }
            // Before the completions: a read submitted from one must see its write.
            if (sync_err)
                wake_readers();  // a read waiting for these groups fails
            else if (top != 0)
                publish_durable(top);
            if (outbox && !sync_err) {
                std::function<void()> listener;
                {
                    std::lock_guard lk(listener_mutex_);
                    listener = outbox_listener_;
                }
                if (listener)
                    listener();
            }
            for (auto& g : groups)
                for (auto& d : g.dones)
                    call_done(d.done, d.err ? d.err : (g.committed ? sync_err : nullptr));
            groups.clear();
        }
    }

    // The fdatasync of the WAL (after the test hook): "" on success, else why it failed.
    std::string sync_wal() {
        try {
            if (before_sync_)
                before_sync_();
        } catch (const std::exception& e) {
            return std::string("before_sync: ") + e.what();
        } catch (...) {
            return "before_sync threw";
        }
        if (::fdatasync(wal_fd_) != 0)
            return std::strerror(errno);
        return {};
    }

    // Every commit up to `seq` is durable.
    void publish_durable(std::uint64_t seq) {
        {
            std::lock_guard lk(durable_mutex_);
            durable_.store(seq, std::memory_order_release);
        }
        durable_cv_.notify_all();
    }

    // Wakes a reader waiting in wait_durable_snapshot to look at sync_failed_ / sync_exited_.
    void wake_readers() {
        { std::lock_guard lk(durable_mutex_); }  // no lost wakeup: its predicate reads under it
        durable_cv_.notify_all();
    }

    static std::exception_ptr sync_failure() {
        return std::make_exception_ptr(
            store_error("sqlite: an fsync of the WAL failed: writes are not durable; restart"));
    }

    void stop_syncer() {
        {
            std::lock_guard lk(sync_mutex_);
            sync_stop_ = true;
        }
        sync_cv_.notify_all();
    }

    void close_wal_fd() {
        if (wal_fd_ >= 0)
            ::close(wal_fd_);
        wal_fd_ = -1;
    }

    // Starts the read transaction just begun on `c` and returns once everything its snapshot
    // holds is durable. The order of the steps is what makes that true:
    //  1. The writer publishes a group's commit sequence number k (committing_) before its
    //     COMMIT; the COMMIT makes the group visible to new snapshots when it writes the WAL
    //     index header, inside the COMMIT. So "k published" happens before "k visible".
    //  2. Here the snapshot is fixed first (read_snapshot starts the read transaction, which
    //     reads that header), then committing_ is read: c. If the snapshot holds group k, this
    //     thread read the header after k's COMMIT wrote it, hence after k was published, so
    //     c >= k. (SQLite puts a full memory barrier next to each write and read of the shared
    //     header, and committing_ is seq_cst, so the publication is seen.)
    //  3. Waiting until durable_ >= c (set by the syncer after the fdatasync that covers c)
    //     thus covers every group in the snapshot; c may also be a group not in it (published,
    //     COMMIT not yet done): then the read waits for one group more than it needs.
    // Either other order is wrong: reading committing_ before fixing the snapshot lets groups
    // committed in between into the snapshot unsynced; publishing after the COMMIT lets a
    // snapshot taken between the two hold a group newer than c.
    // The snapshot stays open while it waits (for one fsync at most), which only delays a WAL
    // restart. Throws store_error if the sync fails (nothing after it will become durable) or
    // the syncer has stopped.
    void wait_durable_snapshot(connection& c) {
        exec_cached(c, q::read_snapshot);
        const std::uint64_t need = committing_.load(std::memory_order_seq_cst);
        if (durable_.load(std::memory_order_acquire) >= need)
            return;  // nothing pending: no lock, no wait
        read_waits_.fetch_add(1, std::memory_order_relaxed);
        std::unique_lock lk(durable_mutex_);
        durable_cv_.wait(lk, [&] {
            return durable_.load(std::memory_order_acquire) >= need ||
                   sync_failed_.load(std::memory_order_acquire) || sync_exited_;
        });
        if (durable_.load(std::memory_order_acquire) >= need)
            return;
        if (sync_failed_.load(std::memory_order_acquire))
            std::rethrow_exception(sync_failure());
        throw store_error("sqlite: store closed before a read's data was durable");
    }

    void reader_loop() {
        connection& c = *reader_db_;
        sqlite_transaction txn(c);
        std::vector<item> one;
        while (take(reads_, one, 1)) {
            std::exception_ptr err;
            try {
                // Deferred: the snapshot starts at the first read and holds until COMMIT.
                exec_cached(c, q::begin_deferred);
                if (sync_wal_)
                    wait_durable_snapshot(c);
                one.front().fn(txn);
                exec_cached(c, q::commit);
            } catch (...) {
                err = std::current_exception();
                if (c.in_transaction()) {
                    try {
                        exec_cached(c, q::rollback);
                    } catch (...) {
                    }
                }
            }
            call_done(one.front().done, err);
            one.clear();
        }
    }

    const std::size_t max_batch_;
    const bool sync_wal_;  // synchronous_full: the syncer fdatasyncs, reads wait for it
    const std::function<void()> before_sync_;
    std::mutex listener_mutex_;
    std::function<void()> outbox_listener_;
    std::unique_ptr<connection> writer_db_;
    std::unique_ptr<connection> reader_db_;
    std::unique_ptr<connection> checkpoint_db_;
    int checkpoint_pages_ = 1000;
    std::mutex checkpoint_mutex_;
    std::condition_variable checkpoint_cv_;
    bool checkpoint_due_ = false;
    bool checkpoint_stop_ = false;
    std::atomic<bool> finish_checkpoint_{false};
    std::atomic<std::uint64_t> checkpoints_{0};
    int wal_fd_ = -1;  // the WAL, for the syncer's fdatasync; -1 without synchronous_full
    std::mutex sync_mutex_;
    std::condition_variable sync_cv_;
    std::vector<synced_group> sync_queue_;
    bool sync_stop_ = false;
    std::atomic<bool> sync_failed_{false};
    std::atomic<std::uint64_t> syncs_{0};
    // Commit sequence numbers: the writer numbers each group's COMMIT (commit_seq_, its own),
    // publishes the number before the COMMIT (committing_), and the syncer publishes the highest
    // number a successful fdatasync covered (durable_). See wait_durable_snapshot.
    std::uint64_t commit_seq_ = 0;
    std::atomic<std::uint64_t> committing_{0};
    std::atomic<std::uint64_t> durable_{0};
    std::mutex durable_mutex_;
    std::condition_variable durable_cv_;
    bool sync_exited_ = false;  // under durable_mutex_
    std::atomic<std::uint64_t> read_waits_{0};
    std::atomic<std::uint64_t> wal_pages_{0};
    work_queue writes_;
    work_queue reads_;
    std::atomic<std::uint64_t> commits_{0};
    std::atomic<std::uint64_t> units_{0};
    std::mutex close_mutex_;
    std::thread writer_;
    std::thread reader_;
    std::thread checkpointer_;
    std::thread syncer_;
    std::thread::id syncer_id_;
    std::thread::id writer_id_;
    std::thread::id reader_id_;
};

}  // namespace

std::unique_ptr<store> open_sqlite(const sqlite_options& options) {
    return std::make_unique<sqlite_store>(options);
}

}  // namespace segue::store

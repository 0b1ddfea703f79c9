// The SQLite schema as an ordered list of migrations. Migration N (1-based) is applied once, in
// its own transaction, and recorded in schema_migrations(version = N). Never edit a migration
// that has shipped: append a new one (databases in the field already ran the old text).
//
// Column names map 1:1 to the row structs in store.hpp (outputs.idx is output_row::index, which
// is an SQL keyword). Text columns that the structs model as "" for "none" are NOT NULL DEFAULT
// '' rather than NULL, so the engine never has to translate. Tables are STRICT so a type slip
// in a binding is an error instead of a silently coerced value.

#include <sqlite3.h>

#include <span>
#include <string>

#include "gateway/log/log.hpp"
#include "gateway/store/sqlite_connection.hpp"
#include "gateway/store/store.hpp"

namespace segue::store::detail {

namespace {

constexpr const char* migrations[] = {
    // 1: the initial schema.
    R"sql(
CREATE TABLE tasks (
    id              TEXT    NOT NULL PRIMARY KEY,
    tenant          TEXT    NOT NULL,
    status          TEXT    NOT NULL,
    provider        TEXT    NOT NULL DEFAULT '',
    request_json    TEXT    NOT NULL DEFAULT '',
    error_json      TEXT    NOT NULL DEFAULT '',
    warnings_json   TEXT    NOT NULL DEFAULT '',
    idempotency_key TEXT    NOT NULL DEFAULT '',
    num_outputs     INTEGER NOT NULL DEFAULT 0,
    created_at      INTEGER NOT NULL,
    updated_at      INTEGER NOT NULL,
    version         INTEGER NOT NULL DEFAULT 0
) STRICT;
-- list_tasks: newest first per tenant, (created_at, id) keyset paging.
CREATE INDEX tasks_tenant_created ON tasks (tenant, created_at, id);

CREATE TABLE outputs (
    task_id    TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    data_json  TEXT    NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, idx)
) STRICT;

CREATE TABLE attempts (
    task_id          TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    number           INTEGER NOT NULL,
    provider         TEXT    NOT NULL,
    provider_task_id TEXT    NOT NULL DEFAULT '',
    callback_token   TEXT    NOT NULL DEFAULT '',
    status           TEXT    NOT NULL,
    error_json       TEXT    NOT NULL DEFAULT '',
    state_json       TEXT    NOT NULL DEFAULT '',
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, number)
) STRICT;
-- Webhook lookup by token; partial because most attempts of polling providers have none.
CREATE INDEX attempts_callback_token ON attempts (callback_token) WHERE callback_token <> '';

CREATE TABLE events (
    id         TEXT    NOT NULL UNIQUE,
    task_id    TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    tenant     TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    type       TEXT    NOT NULL,
    data_json  TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
) STRICT;

-- Pending work only: a job is deleted when completed, so this table stays small.
CREATE TABLE jobs (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    kind         TEXT    NOT NULL,
    task_id      TEXT    NOT NULL DEFAULT '',
    payload_json TEXT    NOT NULL DEFAULT '',
    due_at       INTEGER NOT NULL,
    lease_owner  TEXT    NOT NULL DEFAULT '',
    lease_until  INTEGER NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0
) STRICT;
-- claim_jobs: oldest due first.
CREATE INDEX jobs_due ON jobs (due_at);
-- Unique scheduling per (kind, task_id) and delete_jobs_for_task.
CREATE INDEX jobs_task_kind ON jobs (task_id, kind);
-- next_job_due: leased jobs become due again at lease expiry.
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE lease_owner <> '';

CREATE TABLE idempotency (
    tenant          TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    request_hash    TEXT    NOT NULL,
    task_id         TEXT    NOT NULL DEFAULT '',
    response_status INTEGER NOT NULL DEFAULT 0,
    response_body   TEXT    NOT NULL DEFAULT '',
    created_at      INTEGER NOT NULL,
    PRIMARY KEY (tenant, key)
) STRICT;
-- delete_idempotency_before (expiry sweep).
CREATE INDEX idempotency_created ON idempotency (created_at);

CREATE TABLE files (
    id           TEXT    NOT NULL PRIMARY KEY,
    tenant       TEXT    NOT NULL,
    task_id      TEXT    NOT NULL DEFAULT '',
    kind         TEXT    NOT NULL,
    content_type TEXT    NOT NULL DEFAULT '',
    path         TEXT    NOT NULL,
    size         INTEGER NOT NULL DEFAULT 0,
    sha256       TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL
) STRICT;
)sql",
    // 2: the webhook outbox.
    R"sql(
CREATE TABLE deliveries (
    id           TEXT    NOT NULL PRIMARY KEY,
    event_id     TEXT    NOT NULL,
    task_id      TEXT    NOT NULL,
    tenant       TEXT    NOT NULL,
    seq          INTEGER NOT NULL,
    url          TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      INTEGER NOT NULL DEFAULT 0,
    lease_owner  TEXT    NOT NULL DEFAULT '',
    lease_until  INTEGER NOT NULL DEFAULT 0,
    last_status  INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT    NOT NULL DEFAULT '',
    event_at     INTEGER NOT NULL,
    created_at   INTEGER NOT NULL,
    updated_at   INTEGER NOT NULL,
    delivered_at INTEGER NOT NULL DEFAULT 0
) STRICT;
-- claim_deliveries / next_delivery_due: only pending rows, by due time.
CREATE INDEX deliveries_due ON deliveries (next_at) WHERE status = 'pending';
-- The head-of-line test: earlier pending deliveries of the same task and URL.
CREATE INDEX deliveries_queue ON deliveries (task_id, url, seq) WHERE status = 'pending';
-- list_deliveries: a tenant's, newest first, optionally by status.
CREATE INDEX deliveries_tenant ON deliveries (tenant, created_at, id);
CREATE INDEX deliveries_tenant_status ON deliveries (tenant, status, created_at, id);
CREATE INDEX deliveries_to ON deliveries (tenant, url) WHERE status = 'pending';

-- Endpoints that answered 410 Gone: no more attempts until a redelivery.
CREATE TABLE gone_endpoints (
    tenant     TEXT    NOT NULL,
    url        TEXT    NOT NULL,
    created_at INTEGER NOT NULL,
    PRIMARY KEY (tenant, url)
) STRICT;
)sql",
    // 3: the credit ledger (append-only; amounts in integer milli-credits).
    R"sql(
CREATE TABLE ledger (
    id           INTEGER PRIMARY KEY AUTOINCREMENT,
    tenant       TEXT    NOT NULL,
    task_id      TEXT    NOT NULL DEFAULT '',
    output       INTEGER NOT NULL DEFAULT 0,
    kind         TEXT    NOT NULL
                 CHECK (kind IN ('grant', 'topup', 'hold', 'capture', 'release')),
    key          TEXT    NOT NULL DEFAULT '',
    amount_milli INTEGER NOT NULL CHECK (amount_milli >= 0),
    provider     TEXT    NOT NULL DEFAULT '',
    note         TEXT    NOT NULL DEFAULT '',
    created_at   INTEGER NOT NULL,
    -- At most one entry per key: a capture or release written twice counts once. Its index
    -- also serves the per-task sum that keeps ledger_accounts.held.
    UNIQUE (tenant, task_id, output, kind, key)
) STRICT;
-- list_ledger: a tenant's entries, newest first (keyset paging on id).
CREATE INDEX ledger_tenant ON ledger (tenant, id);
-- ledger_for_task.
CREATE INDEX ledger_task ON ledger (task_id, kind) WHERE task_id <> '';

-- Each tenant's running totals, kept by the store in the transaction that appends an entry (the
-- ledger is never updated or deleted, so they cannot drift): reading a balance is one row, not a
-- scan of every entry the tenant ever had. held is the sum over tasks of max(0, holds - captures
-- - releases).
CREATE TABLE ledger_accounts (
    tenant     TEXT    NOT NULL PRIMARY KEY,
    granted    INTEGER NOT NULL DEFAULT 0,
    captured   INTEGER NOT NULL DEFAULT 0,
    held       INTEGER NOT NULL DEFAULT 0,
    updated_at INTEGER NOT NULL
) STRICT;
)sql",
    // 4: the tables written on every state change keyed by their primary key alone (WITHOUT
    // ROWID): one B-tree insert per row instead of two (the rowid table and the key's index).
    // Each is a child of tasks only, so it can be rebuilt with its foreign key in place.
    R"sql(
CREATE TABLE events_v4 (
    id         TEXT    NOT NULL UNIQUE,
    task_id    TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    tenant     TEXT    NOT NULL,
    seq        INTEGER NOT NULL,
    type       TEXT    NOT NULL,
    data_json  TEXT    NOT NULL DEFAULT '',
    created_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, seq)
) STRICT, WITHOUT ROWID;
INSERT INTO events_v4 (id, task_id, tenant, seq, type, data_json, created_at)
    SELECT id, task_id, tenant, seq, type, data_json, created_at FROM events;
DROP TABLE events;
ALTER TABLE events_v4 RENAME TO events;

CREATE TABLE outputs_v4 (
    task_id    TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    data_json  TEXT    NOT NULL DEFAULT '',
    updated_at INTEGER NOT NULL,
    PRIMARY KEY (task_id, idx)
) STRICT, WITHOUT ROWID;
INSERT INTO outputs_v4 (task_id, idx, status, data_json, updated_at)
    SELECT task_id, idx, status, data_json, updated_at FROM outputs;
DROP TABLE outputs;
ALTER TABLE outputs_v4 RENAME TO outputs;

CREATE TABLE attempts_v4 (
    task_id          TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    number           INTEGER NOT NULL,
    provider         TEXT    NOT NULL,
    provider_task_id TEXT    NOT NULL DEFAULT '',
    callback_token   TEXT    NOT NULL DEFAULT '',
    status           TEXT    NOT NULL,
    error_json       TEXT    NOT NULL DEFAULT '',
    state_json       TEXT    NOT NULL DEFAULT '',
    started_at       INTEGER NOT NULL,
    finished_at      INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, number)
) STRICT, WITHOUT ROWID;
INSERT INTO attempts_v4 (task_id, number, provider, provider_task_id, callback_token, status,
                         error_json, state_json, started_at, finished_at)
    SELECT task_id, number, provider, provider_task_id, callback_token, status, error_json,
           state_json, started_at, finished_at FROM attempts;
DROP TABLE attempts;
ALTER TABLE attempts_v4 RENAME TO attempts;
CREATE INDEX attempts_callback_token ON attempts (callback_token) WHERE callback_token <> '';
)sql",
    // 5: fenced leases and bounded poison jobs. jobs.attempts (bumped by every claim) is a
    // job claim's fencing token; deliveries get their own (their attempts restart at a
    // redelivery). jobs.failures counts the failed runs since the last good one.
    R"sql(
ALTER TABLE jobs ADD COLUMN failures INTEGER NOT NULL DEFAULT 0;
ALTER TABLE deliveries ADD COLUMN lease_fence INTEGER NOT NULL DEFAULT 0;
)sql",
    // 6: retention (gateway/core/reaper.hpp). A deleted file leaves a tombstone: GET answers
    // 410 rather than 404, and its blob's removal (after the commit) is leased and retried until
    // done. The indexes let each of the reaper's batches walk to its few rows and stop:
    // files by age per kind; final tasks by their last update (partial: running tasks, the
    // ones written all the time, are not in it); deliveries and files by task for the deletes.
    R"sql(
CREATE TABLE file_tombstones (
    id         TEXT    NOT NULL PRIMARY KEY,
    tenant     TEXT    NOT NULL,
    task_id    TEXT    NOT NULL DEFAULT '',
    kind       TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    size       INTEGER NOT NULL DEFAULT 0,
    deleted_at INTEGER NOT NULL,
    purge_at   INTEGER NOT NULL DEFAULT 0,
    purged     INTEGER NOT NULL DEFAULT 0
) STRICT;
CREATE INDEX file_tombstones_purge ON file_tombstones (purge_at) WHERE purged = 0;
CREATE INDEX file_tombstones_deleted ON file_tombstones (deleted_at) WHERE purged = 1;
CREATE INDEX files_kind_created ON files (kind, created_at);
CREATE INDEX files_task ON files (task_id);
CREATE INDEX tasks_finished ON tasks (updated_at)
    WHERE status IN ('succeeded', 'partially_succeeded', 'failed', 'canceled');
CREATE INDEX deliveries_task ON deliveries (task_id);
)sql",
    // 7: the dispatcher's gauges without scans. Deliveries are counted by status as they are
    // written (triggers, so no write path can forget), instead of COUNT(*) over a table that
    // grows by a row per event and webhook; the oldest pending one is found by index.
    R"sql(
CREATE TABLE delivery_counts (
    status TEXT    NOT NULL PRIMARY KEY,
    n      INTEGER NOT NULL
) STRICT;
INSERT INTO delivery_counts (status, n) SELECT status, COUNT(*) FROM deliveries GROUP BY status;
CREATE TRIGGER deliveries_count_insert AFTER INSERT ON deliveries BEGIN
    INSERT INTO delivery_counts (status, n) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER deliveries_count_update AFTER UPDATE OF status ON deliveries
    WHEN OLD.status <> NEW.status BEGIN
    UPDATE delivery_counts SET n = n - 1 WHERE status = OLD.status;
    INSERT INTO delivery_counts (status, n) VALUES (NEW.status, 1)
        ON CONFLICT (status) DO UPDATE SET n = n + 1;
END;
CREATE TRIGGER deliveries_count_delete AFTER DELETE ON deliveries BEGIN
    UPDATE delivery_counts SET n = n - 1 WHERE status = OLD.status;
END;
CREATE INDEX deliveries_pending_event ON deliveries (event_at) WHERE status = 'pending';
)sql",
    // 8: the storage gauges (files and their bytes) kept by triggers as files are written and
    // deleted, not summed over the files table on every scrape.
    R"sql(
CREATE TABLE file_totals (
    id    INTEGER NOT NULL PRIMARY KEY CHECK (id = 0),
    n     INTEGER NOT NULL,
    bytes INTEGER NOT NULL
) STRICT;
INSERT INTO file_totals (id, n, bytes) SELECT 0, COUNT(*), COALESCE(SUM(size), 0) FROM files;
CREATE TRIGGER files_total_insert AFTER INSERT ON files BEGIN
    UPDATE file_totals SET n = n + 1, bytes = bytes + NEW.size WHERE id = 0;
END;
CREATE TRIGGER files_total_update AFTER UPDATE OF size ON files BEGIN
    UPDATE file_totals SET bytes = bytes - OLD.size + NEW.size WHERE id = 0;
END;
CREATE TRIGGER files_total_delete AFTER DELETE ON files BEGIN
    UPDATE file_totals SET n = n - 1, bytes = bytes - OLD.size WHERE id = 0;
END;
)sql",
    // 9: the engine claims submits and other jobs in lanes of their own (store::job_lane), each
    // oldest due first by the lane's part of this index: a backlog of one lane is never scanned
    // by the other's claims. An index on an expression, not two partial indexes: a statement
    // that binds `kind` (update_unique_job) would be prepared again at every run, because
    // SQLite tests whether a bound value matches a partial index's WHERE.
    R"sql(
CREATE INDEX jobs_lane_due ON jobs ((kind = 'submit'), due_at, id);
)sql",
    // 10: when a callback first proved the provider has an attempt (store::attempt_row::seen_at).
    R"sql(
ALTER TABLE attempts ADD COLUMN seen_at INTEGER NOT NULL DEFAULT 0;
)sql",
    // 11: secrets the gateway makes for itself (store::transaction::ensure_secret), such as the
    // key of signed file URLs when api.url_signing_key is empty: they outlive a restart.
    R"sql(
CREATE TABLE secrets (
    name       TEXT NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at INTEGER NOT NULL
) STRICT;
)sql",
    // 12: tasks not ended, by when they last changed (store::transaction::tasks_without_work:
    // the reaper's check for tasks that lost their job).
    R"sql(
CREATE INDEX tasks_unfinished ON tasks (updated_at)
    WHERE status IN ('queued', 'submitted', 'running');
)sql",
};

}  // namespace

// Used by migrate() below (no header because nothing else should apply migrations).
std::span<const char* const> sqlite_migrations() {
    return migrations;
}

}  // namespace segue::store::detail

namespace segue::store::sqlite {

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

}  // namespace segue::store::sqlite

namespace segue::store {

int sqlite_schema_version() {
    return static_cast<int>(std::size(detail::migrations));
}

}  // namespace segue::store

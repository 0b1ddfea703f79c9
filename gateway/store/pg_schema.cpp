// The PostgreSQL schema as an ordered list of migrations, side by side with sqlite_schema.cpp.
// Migration N (1-based) is applied once and recorded in schema_migrations(version = N). Never
// edit a migration that has shipped: append a new one.
//
// Several replicas start at once: each runs migrate(), which takes a session advisory lock
// first, so exactly one applies what is missing while the others wait and then find nothing to
// do. `segue migrate` runs the same function.
//
// Migration 1 is the SQLite schema as of its migration 5, in PostgreSQL's types (BIGINT times,
// BIGSERIAL ids), plus tasks.event_seq: the per-task counter that hands out event sequence
// numbers under the task's row lock.

#include <span>
#include <string>

#include "gateway/log/log.hpp"
#include "gateway/store/pg_connection.hpp"

namespace segue::store::pg {

namespace {

constexpr const char* migrations[] = {
    // 1: the schema.
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
    created_at      BIGINT  NOT NULL,
    updated_at      BIGINT  NOT NULL,
    version         BIGINT  NOT NULL DEFAULT 0,
    event_seq       BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX tasks_tenant_created ON tasks (tenant, created_at, id);

CREATE TABLE outputs (
    task_id    TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    idx        INTEGER NOT NULL,
    status     TEXT    NOT NULL,
    data_json  TEXT    NOT NULL DEFAULT '',
    updated_at BIGINT  NOT NULL,
    PRIMARY KEY (task_id, idx)
);

CREATE TABLE attempts (
    task_id          TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    number           INTEGER NOT NULL,
    provider         TEXT    NOT NULL,
    provider_task_id TEXT    NOT NULL DEFAULT '',
    callback_token   TEXT    NOT NULL DEFAULT '',
    status           TEXT    NOT NULL,
    error_json       TEXT    NOT NULL DEFAULT '',
    state_json       TEXT    NOT NULL DEFAULT '',
    started_at       BIGINT  NOT NULL,
    finished_at      BIGINT  NOT NULL DEFAULT 0,
    PRIMARY KEY (task_id, number)
);
CREATE INDEX attempts_callback_token ON attempts (callback_token) WHERE callback_token <> '';

CREATE TABLE events (
    id         TEXT    NOT NULL UNIQUE,
    task_id    TEXT    NOT NULL REFERENCES tasks (id) ON DELETE CASCADE,
    tenant     TEXT    NOT NULL,
    seq        BIGINT  NOT NULL,
    type       TEXT    NOT NULL,
    data_json  TEXT    NOT NULL DEFAULT '',
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (task_id, seq)
);

CREATE TABLE jobs (
    id           BIGSERIAL PRIMARY KEY,
    kind         TEXT    NOT NULL,
    task_id      TEXT    NOT NULL DEFAULT '',
    payload_json TEXT    NOT NULL DEFAULT '',
    due_at       BIGINT  NOT NULL,
    lease_owner  TEXT    NOT NULL DEFAULT '',
    lease_until  BIGINT  NOT NULL DEFAULT 0,
    attempts     INTEGER NOT NULL DEFAULT 0,
    failures     INTEGER NOT NULL DEFAULT 0
);
-- claim_jobs: ORDER BY due_at, id LIMIT n walks this index and stops.
CREATE INDEX jobs_due ON jobs (due_at, id);
CREATE INDEX jobs_task_kind ON jobs (task_id, kind);
CREATE INDEX jobs_leased ON jobs (lease_until) WHERE lease_owner <> '';

CREATE TABLE idempotency (
    tenant          TEXT    NOT NULL,
    key             TEXT    NOT NULL,
    request_hash    TEXT    NOT NULL,
    task_id         TEXT    NOT NULL DEFAULT '',
    response_status INTEGER NOT NULL DEFAULT 0,
    response_body   TEXT    NOT NULL DEFAULT '',
    created_at      BIGINT  NOT NULL,
    PRIMARY KEY (tenant, key)
);
CREATE INDEX idempotency_created ON idempotency (created_at);

CREATE TABLE files (
    id           TEXT    NOT NULL PRIMARY KEY,
    tenant       TEXT    NOT NULL,
    task_id      TEXT    NOT NULL DEFAULT '',
    kind         TEXT    NOT NULL,
    content_type TEXT    NOT NULL DEFAULT '',
    path         TEXT    NOT NULL,
    size         BIGINT  NOT NULL DEFAULT 0,
    sha256       TEXT    NOT NULL DEFAULT '',
    created_at   BIGINT  NOT NULL
);

CREATE TABLE deliveries (
    id           TEXT    NOT NULL PRIMARY KEY,
    event_id     TEXT    NOT NULL,
    task_id      TEXT    NOT NULL,
    tenant       TEXT    NOT NULL,
    seq          BIGINT  NOT NULL,
    url          TEXT    NOT NULL,
    status       TEXT    NOT NULL,
    attempts     INTEGER NOT NULL DEFAULT 0,
    next_at      BIGINT  NOT NULL DEFAULT 0,
    lease_owner  TEXT    NOT NULL DEFAULT '',
    lease_until  BIGINT  NOT NULL DEFAULT 0,
    last_status  INTEGER NOT NULL DEFAULT 0,
    last_error   TEXT    NOT NULL DEFAULT '',
    event_at     BIGINT  NOT NULL,
    created_at   BIGINT  NOT NULL,
    updated_at   BIGINT  NOT NULL,
    delivered_at BIGINT  NOT NULL DEFAULT 0,
    lease_fence  BIGINT  NOT NULL DEFAULT 0
);
CREATE INDEX deliveries_due ON deliveries (next_at, id) WHERE status = 'pending';
CREATE INDEX deliveries_queue ON deliveries (task_id, url, seq) WHERE status = 'pending';
CREATE INDEX deliveries_tenant ON deliveries (tenant, created_at, id);
CREATE INDEX deliveries_tenant_status ON deliveries (tenant, status, created_at, id);
CREATE INDEX deliveries_to ON deliveries (tenant, url) WHERE status = 'pending';

CREATE TABLE gone_endpoints (
    tenant     TEXT    NOT NULL,
    url        TEXT    NOT NULL,
    created_at BIGINT  NOT NULL,
    PRIMARY KEY (tenant, url)
);

CREATE TABLE ledger (
    id           BIGSERIAL PRIMARY KEY,
    tenant       TEXT    NOT NULL,
    task_id      TEXT    NOT NULL DEFAULT '',
    output       INTEGER NOT NULL DEFAULT 0,
    kind         TEXT    NOT NULL
                 CHECK (kind IN ('grant', 'topup', 'hold', 'capture', 'release')),
    key          TEXT    NOT NULL DEFAULT '',
    amount_milli BIGINT  NOT NULL CHECK (amount_milli >= 0),
    provider     TEXT    NOT NULL DEFAULT '',
    note         TEXT    NOT NULL DEFAULT '',
    created_at   BIGINT  NOT NULL,
    UNIQUE (tenant, task_id, output, kind, key)
);
CREATE INDEX ledger_tenant ON ledger (tenant, id);
CREATE INDEX ledger_task ON ledger (task_id, kind) WHERE task_id <> '';

CREATE TABLE ledger_accounts (
    tenant     TEXT    NOT NULL PRIMARY KEY,
    granted    BIGINT  NOT NULL DEFAULT 0,
    captured   BIGINT  NOT NULL DEFAULT 0,
    held       BIGINT  NOT NULL DEFAULT 0,
    updated_at BIGINT  NOT NULL
);
)sql",
    // 2: retention, as SQLite's migration 6 (gateway/core/reaper.hpp).
    R"sql(
CREATE TABLE file_tombstones (
    id         TEXT    NOT NULL PRIMARY KEY,
    tenant     TEXT    NOT NULL,
    task_id    TEXT    NOT NULL DEFAULT '',
    kind       TEXT    NOT NULL,
    path       TEXT    NOT NULL,
    size       BIGINT  NOT NULL DEFAULT 0,
    deleted_at BIGINT  NOT NULL,
    purge_at   BIGINT  NOT NULL DEFAULT 0,
    purged     INTEGER NOT NULL DEFAULT 0
);
CREATE INDEX file_tombstones_purge ON file_tombstones (purge_at) WHERE purged = 0;
CREATE INDEX file_tombstones_deleted ON file_tombstones (deleted_at) WHERE purged = 1;
CREATE INDEX files_kind_created ON files (kind, created_at);
CREATE INDEX files_task ON files (task_id);
CREATE INDEX tasks_finished ON tasks (updated_at)
    WHERE status IN ('succeeded', 'partially_succeeded', 'failed', 'canceled');
CREATE INDEX deliveries_task ON deliveries (task_id);
)sql",
    // 3: the dispatcher's gauges without scans (as SQLite's migration 7). Deliveries are counted
    // by status as they are written, by a trigger; each writer session adds to its own shard
    // row (backend pid % 16), so concurrent writers do not queue on one counter row.
    R"sql(
CREATE TABLE delivery_counts (
    status TEXT    NOT NULL,
    shard  INTEGER NOT NULL,
    n      BIGINT  NOT NULL,
    PRIMARY KEY (status, shard)
);
INSERT INTO delivery_counts (status, shard, n)
    SELECT status, 0, COUNT(*) FROM deliveries GROUP BY status;
CREATE FUNCTION deliveries_count() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.status <> NEW.status) THEN
        INSERT INTO delivery_counts (status, shard, n)
            VALUES (OLD.status, pg_backend_pid() % 16, -1)
            ON CONFLICT (status, shard) DO UPDATE SET n = delivery_counts.n - 1;
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND OLD.status <> NEW.status) THEN
        INSERT INTO delivery_counts (status, shard, n)
            VALUES (NEW.status, pg_backend_pid() % 16, 1)
            ON CONFLICT (status, shard) DO UPDATE SET n = delivery_counts.n + 1;
    END IF;
    RETURN NULL;
END
$f$;
CREATE TRIGGER deliveries_count AFTER INSERT OR UPDATE OF status OR DELETE ON deliveries
    FOR EACH ROW EXECUTE FUNCTION deliveries_count();
CREATE INDEX deliveries_pending_event ON deliveries (event_at) WHERE status = 'pending';
)sql",
    // 4: the storage gauges (files and their bytes) kept by a trigger, sharded like
    // delivery_counts (as SQLite's migration 8), not summed over the files table per scrape.
    R"sql(
CREATE TABLE file_totals (
    shard INTEGER NOT NULL PRIMARY KEY,
    n     BIGINT  NOT NULL,
    bytes BIGINT  NOT NULL
);
INSERT INTO file_totals (shard, n, bytes) SELECT 0, COUNT(*), COALESCE(SUM(size), 0) FROM files;
CREATE FUNCTION files_total() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    dn BIGINT := 0;
    db BIGINT := 0;
BEGIN
    IF TG_OP = 'INSERT' THEN
        dn := 1; db := NEW.size;
    ELSIF TG_OP = 'DELETE' THEN
        dn := -1; db := -OLD.size;
    ELSE
        db := NEW.size - OLD.size;
    END IF;
    INSERT INTO file_totals (shard, n, bytes) VALUES (pg_backend_pid() % 16, dn, db)
        ON CONFLICT (shard) DO UPDATE
        SET n = file_totals.n + EXCLUDED.n, bytes = file_totals.bytes + EXCLUDED.bytes;
    RETURN NULL;
END
$f$;
CREATE TRIGGER files_total AFTER INSERT OR UPDATE OF size OR DELETE ON files
    FOR EACH ROW EXECUTE FUNCTION files_total();
)sql",
    // 5: a counter shard is one no other open transaction holds. Migrations 3 and 4 added to the
    // row of backend pid % 16: two sessions whose pids meet modulo 16 queued on one row, so a
    // writer waited for another's commit (and a test replica holding a unit open waited for
    // ever). Now the trigger takes the session's own shard if it is free, else any free one
    // (FOR UPDATE SKIP LOCKED: never waits), and only when all are held by other transactions
    // adds a new shard row (rows grow to the peak number of concurrent writers, no further).
    R"sql(
INSERT INTO file_totals (shard, n, bytes) SELECT g, 0, 0 FROM generate_series(0, 15) g
    ON CONFLICT (shard) DO NOTHING;
INSERT INTO delivery_counts (status, shard, n)
    SELECT s, g, 0 FROM unnest(ARRAY['pending', 'delivered', 'dead']) s, generate_series(0, 15) g
    ON CONFLICT (status, shard) DO NOTHING;
CREATE OR REPLACE FUNCTION files_total() RETURNS trigger LANGUAGE plpgsql AS $f$
DECLARE
    dn BIGINT := 0;
    db BIGINT := 0;
    s  INTEGER;
BEGIN
    IF TG_OP = 'INSERT' THEN
        dn := 1; db := NEW.size;
    ELSIF TG_OP = 'DELETE' THEN
        dn := -1; db := -OLD.size;
    ELSE
        db := NEW.size - OLD.size;
    END IF;
    SELECT shard INTO s FROM file_totals ORDER BY shard <> pg_backend_pid() % 16, shard
        LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF s IS NULL THEN
        INSERT INTO file_totals (shard, n, bytes)
            VALUES (16 + floor(random() * 2000000000)::integer, dn, db)
            ON CONFLICT (shard) DO UPDATE
            SET n = file_totals.n + EXCLUDED.n, bytes = file_totals.bytes + EXCLUDED.bytes;
    ELSE
        UPDATE file_totals SET n = n + dn, bytes = bytes + db WHERE shard = s;
    END IF;
    RETURN NULL;
END
$f$;
CREATE FUNCTION delivery_count_add(st TEXT, d BIGINT) RETURNS void LANGUAGE plpgsql AS $f$
DECLARE
    s INTEGER;
BEGIN
    SELECT shard INTO s FROM delivery_counts WHERE status = st
        ORDER BY shard <> pg_backend_pid() % 16, shard LIMIT 1 FOR UPDATE SKIP LOCKED;
    IF s IS NULL THEN
        INSERT INTO delivery_counts (status, shard, n)
            VALUES (st, 16 + floor(random() * 2000000000)::integer, d)
            ON CONFLICT (status, shard) DO UPDATE SET n = delivery_counts.n + EXCLUDED.n;
    ELSE
        UPDATE delivery_counts SET n = n + d WHERE status = st AND shard = s;
    END IF;
END
$f$;
CREATE OR REPLACE FUNCTION deliveries_count() RETURNS trigger LANGUAGE plpgsql AS $f$
BEGIN
    IF TG_OP = 'DELETE' OR (TG_OP = 'UPDATE' AND OLD.status <> NEW.status) THEN
        PERFORM delivery_count_add(OLD.status, -1);
    END IF;
    IF TG_OP = 'INSERT' OR (TG_OP = 'UPDATE' AND OLD.status <> NEW.status) THEN
        PERFORM delivery_count_add(NEW.status, 1);
    END IF;
    RETURN NULL;
END
$f$;
)sql",
    // 6: the engine's job lanes, as SQLite's migration 9.
    R"sql(
CREATE INDEX jobs_due_submit ON jobs (due_at, id) WHERE kind = 'submit';
CREATE INDEX jobs_due_other ON jobs (due_at, id) WHERE kind <> 'submit';
)sql",
    // 7: as SQLite's migration 10 (store::attempt_row::seen_at).
    R"sql(
ALTER TABLE attempts ADD COLUMN seen_at BIGINT NOT NULL DEFAULT 0;
)sql",
    // 8: as SQLite's migration 11 (store::transaction::ensure_secret): shared by every replica.
    R"sql(
CREATE TABLE secrets (
    name       TEXT NOT NULL PRIMARY KEY,
    value      TEXT NOT NULL,
    created_at BIGINT NOT NULL
);
)sql",
    // 9: as SQLite's migration 12 (store::transaction::tasks_without_work).
    R"sql(
CREATE INDEX tasks_unfinished ON tasks (updated_at)
    WHERE status IN ('queued', 'submitted', 'running');
)sql",
    // 10: lease owners' liveness (store::transaction::free_dead_owners), PostgreSQL's alone:
    // SQLite has one process. No index on deliveries.lease_owner: a claim changes no indexed
    // column, so PostgreSQL can update the row in place (HOT) without touching any of its
    // eight indexes; freeing a dead owner's deliveries (rare) reads the pending ones instead.
    R"sql(
CREATE TABLE lease_owners (
    owner       TEXT   NOT NULL PRIMARY KEY,
    alive_until BIGINT NOT NULL
);
)sql",
};

// Any 64-bit constant, the same in every replica and every `segue migrate`.
constexpr const char* lock_key = "7365677565";  // "segue" in hex digits

}  // namespace

void migrate(connection& c) {
    c.exec(("SELECT pg_advisory_lock(" + std::string(lock_key) + ")").c_str());
    struct unlock {
        connection& c;
        ~unlock() {
            try {
                c.exec(("SELECT pg_advisory_unlock(" + std::string(lock_key) + ")").c_str());
            } catch (...) {
                // The session's end releases it too.
            }
        }
    } guard{c};
    c.exec(
        "CREATE TABLE IF NOT EXISTS schema_migrations (version INTEGER PRIMARY KEY, "
        "applied_at BIGINT NOT NULL)");
    const auto known = static_cast<std::int64_t>(std::size(migrations));
    for (;;) {
        auto r = c.query("SELECT COALESCE(MAX(version), 0) FROM schema_migrations", {});
        const std::int64_t current = r.i64(0, 0);
        if (current > known)
            throw store_error("postgres: database schema version " + std::to_string(current) +
                              " is newer than this build supports (" + std::to_string(known) +
                              "); refusing to use it");
        if (current == known)
            return;
        const std::int64_t version = current + 1;
        c.exec("BEGIN");
        try {
            c.exec(migrations[static_cast<std::size_t>(version - 1)]);
            c.query(
                "INSERT INTO schema_migrations (version, applied_at) VALUES ($1, "
                "(extract(epoch FROM clock_timestamp()) * 1000)::bigint)",
                {version});
            c.exec("COMMIT");
        } catch (...) {
            try {
                c.exec("ROLLBACK");
            } catch (...) {
            }
            throw;
        }
        log::info("store migration applied", {{"engine", "postgres"}, {"version", version}});
    }
}

}  // namespace segue::store::pg

namespace segue::store {

int postgres_schema_version() {
    return static_cast<int>(std::size(pg::migrations));
}

}  // namespace segue::store

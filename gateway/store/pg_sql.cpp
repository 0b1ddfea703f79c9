// The SQL text of every statement the PostgreSQL engine runs. Pure text: no statement is run
// here (pg_connection.cpp prepares and runs them). Side by side with sqlite_sql.cpp: the same
// operations, with PostgreSQL's means of concurrency where several writers (connections and
// replicas) meet: row locks (FOR UPDATE), SKIP LOCKED claims, per-task sequence counters and
// advisory locks, none of which SQLite's single writer needs.
//
// Parameters are untyped text: casts ($2::bigint) say what they are where the SQL alone does
// not.

#include "gateway/store/pg_sql.hpp"

#include <stdexcept>

#include "gateway/store/columns.hpp"

namespace segue::store::pg {

// SKIP LOCKED: replicas claiming at once take different rows instead of waiting for each other.
// attempts is the claim's fencing token; a lease that expired unreleased counts as a failed run.
// $5: ids the caller runs itself.
#define SEGUE_PG_CLAIM_JOBS(lane)                                               \
    "UPDATE jobs SET lease_owner = $1, lease_until = $2::bigint + $3::bigint, " \
    "attempts = attempts + 1, "                                                 \
    "failures = failures + CASE WHEN lease_owner <> '' THEN 1 ELSE 0 END "      \
    "WHERE id IN (SELECT id FROM jobs WHERE due_at <= $2::bigint " lane         \
    "AND (lease_owner = '' OR lease_until <= $2::bigint) "                      \
    "AND NOT (id = ANY ($5::bigint[])) ORDER BY due_at, id LIMIT $4 "           \
    "FOR UPDATE SKIP LOCKED) RETURNING " SEGUE_JOB_COLS

const char* sql_of(q which) {
    switch (which) {
        case q::clock:
            // The database's clock: lease times come from here, so replicas whose clocks
            // disagree still agree on who holds a lease.
            return "SELECT (extract(epoch FROM clock_timestamp()) * 1000)::bigint";
        case q::notify:
            return "SELECT pg_notify($1, $2)";
        case q::insert_task:
            return "INSERT INTO tasks (" SEGUE_TASK_COLS
                   ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)";
        case q::update_task:
            return "UPDATE tasks SET tenant = $2, status = $3, provider = $4, request_json = $5, "
                   "error_json = $6, warnings_json = $7, idempotency_key = $8, num_outputs = $9, "
                   "created_at = $10, updated_at = $11, version = version + 1 WHERE id = $1 "
                   "RETURNING version";
        case q::get_task:
            return "SELECT " SEGUE_TASK_COLS " FROM tasks WHERE id = $1";
        case q::get_task_locked:
            // In a write unit: the task's row stays locked until commit, so two units working on
            // one task (a webhook on one replica, a poll on another) run one after the other.
            return "SELECT " SEGUE_TASK_COLS " FROM tasks WHERE id = $1 FOR UPDATE";
        case q::get_task_if_unlocked:
            return "SELECT " SEGUE_TASK_COLS " FROM tasks WHERE id = $1 FOR UPDATE SKIP LOCKED";
        case q::list_tasks_first:
            return "SELECT " SEGUE_TASK_COLS
                   " FROM tasks WHERE tenant = $1 ORDER BY created_at DESC, id DESC LIMIT $2";
        case q::list_tasks_before:
            return "SELECT " SEGUE_TASK_COLS
                   " FROM tasks WHERE tenant = $1 AND (created_at, id) < "
                   "(SELECT created_at, id FROM tasks WHERE id = $3 AND tenant = $1) "
                   "ORDER BY created_at DESC, id DESC LIMIT $2";
        case q::upsert_output:
            return "INSERT INTO outputs (" SEGUE_OUTPUT_COLS
                   ") VALUES ($1, $2, $3, $4, $5) "
                   "ON CONFLICT (task_id, idx) DO UPDATE SET status = excluded.status, "
                   "data_json = excluded.data_json, updated_at = excluded.updated_at";
        case q::get_outputs:
            return "SELECT " SEGUE_OUTPUT_COLS " FROM outputs WHERE task_id = $1 ORDER BY idx";
        case q::delete_output:
            return "DELETE FROM outputs WHERE task_id = $1 AND idx = $2";
        case q::upsert_attempt:
            return "INSERT INTO attempts (" SEGUE_ATTEMPT_COLS
                   ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, "
                   "$11) "
                   "ON CONFLICT (task_id, number) DO UPDATE SET provider = excluded.provider, "
                   "provider_task_id = excluded.provider_task_id, "
                   "callback_token = excluded.callback_token, status = excluded.status, "
                   "error_json = excluded.error_json, state_json = excluded.state_json, "
                   "started_at = excluded.started_at, finished_at = excluded.finished_at, "
                   "seen_at = excluded.seen_at";
        case q::get_attempts:
            return "SELECT " SEGUE_ATTEMPT_COLS " FROM attempts WHERE task_id = $1 ORDER BY number";
        case q::find_attempt_by_token:
            return "SELECT " SEGUE_ATTEMPT_COLS
                   " FROM attempts WHERE callback_token = $1 AND callback_token <> '' LIMIT 1";
        case q::append_event:
            // The task's counter hands out the next seq: its row lock orders concurrent appends
            // (MAX(seq) + 1 would give two writers the same number).
            return "WITH s AS (UPDATE tasks SET event_seq = event_seq + 1 WHERE id = $2 "
                   "RETURNING event_seq) INSERT INTO events (" SEGUE_EVENT_COLS
                   ") SELECT $1, $2, $3, s.event_seq, $4, $5, $6 FROM s RETURNING seq";
        case q::insert_task_event:
            // A new task with its first event (seq 1, the counter set to match): one statement
            // where insert_task and append_event wrote the task's row twice. The event's foreign
            // key is checked at the end of the statement, when the task is there.
            return "WITH t AS (INSERT INTO tasks (" SEGUE_TASK_COLS
                   ", event_seq) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, 1) "
                   "RETURNING id) INSERT INTO events (" SEGUE_EVENT_COLS
                   ") SELECT $13, t.id, $14, 1, $15, $16, $17 FROM t RETURNING seq";
        case q::get_events:
            return "SELECT " SEGUE_EVENT_COLS
                   " FROM events WHERE task_id = $1 AND seq > $2 ORDER BY seq LIMIT $3";
        case q::lock_job_key:
            // Scheduling a unique job is update-else-insert: the advisory lock on its (kind,
            // task) makes that atomic across writers without a unique index (non-unique jobs of
            // the same kind and task may exist). Released at commit.
            return "SELECT pg_advisory_xact_lock(hashtextextended($1, 7))";
        case q::insert_job:
            // $8 > 0: leased from the database's clock (as q::clock) for $8 ms.
            return "INSERT INTO jobs (kind, task_id, payload_json, due_at, lease_owner, "
                   "lease_until, attempts) VALUES ($1, $2, $3, $4, $5, CASE WHEN $8::bigint > 0 "
                   "THEN (extract(epoch FROM clock_timestamp()) * 1000)::bigint + $8::bigint "
                   "ELSE $6::bigint END, $7) RETURNING id";
        case q::upsert_unique_job:
            // Under the key's advisory lock (lock_job_key, a statement of its own so this one's
            // snapshot sees what the previous holder committed): move the job if it exists,
            // else add it.
            return "WITH u AS (UPDATE jobs SET due_at = $3, payload_json = $4, lease_owner = '', "
                   "lease_until = 0 WHERE id = (SELECT id FROM jobs WHERE task_id = $2 AND "
                   "kind = $1 ORDER BY id LIMIT 1) RETURNING id), "
                   "i AS (INSERT INTO jobs (kind, task_id, payload_json, due_at) SELECT $1, $2, "
                   "$4, $3 WHERE NOT EXISTS (SELECT 1 FROM u) RETURNING id) "
                   "SELECT id FROM u UNION ALL SELECT id FROM i";
        case q::claim_jobs:
            return SEGUE_PG_CLAIM_JOBS("");
        case q::claim_submit_jobs:
            // One lane (store::job_lane), by a literal kind test that matches the lane's
            // partial index (migration 6).
            return SEGUE_PG_CLAIM_JOBS("AND kind = 'submit' ");
        case q::claim_other_jobs:
            return SEGUE_PG_CLAIM_JOBS("AND kind <> 'submit' ");
        case q::complete_job:
            return "DELETE FROM jobs WHERE id = $1 AND lease_owner = $2::text AND $2::text <> '' "
                   "AND attempts = $3";
        case q::reschedule_job:
            return "UPDATE jobs SET due_at = $4, payload_json = $5, lease_owner = '', "
                   "lease_until = 0, failures = 0 WHERE id = $1 AND lease_owner = $2::text "
                   "AND $2::text <> '' AND attempts = $3";
        case q::fail_job:
            return "UPDATE jobs SET due_at = $4, lease_owner = '', lease_until = 0, "
                   "failures = failures + 1 WHERE id = $1 AND lease_owner = $2::text "
                   "AND $2::text <> '' AND attempts = $3";
        case q::renew_job:
            return "UPDATE jobs SET lease_until = $4 WHERE id = $1 AND lease_owner = $2::text "
                   "AND $2::text <> '' AND attempts = $3";
        case q::delete_jobs_for_task:
            return "DELETE FROM jobs WHERE task_id = $1";
        case q::next_job_due:
            return "SELECT LEAST((SELECT due_at FROM jobs WHERE lease_owner = '' "
                   "ORDER BY due_at LIMIT 1), (SELECT MIN(GREATEST(due_at, lease_until)) "
                   "FROM jobs WHERE lease_owner <> ''))";
        case q::lock_idempotency_key:
            // Read-then-insert of a key (admit: look the key up, create the task, record the
            // key) made atomic across writers: a second writer of the key waits here for the
            // first's commit, then reads its row. A row lock cannot do it: the row does not
            // exist yet. Released at commit.
            return "SELECT pg_advisory_xact_lock(hashtextextended($1, 11))";
        case q::get_idempotency:
            return "SELECT " SEGUE_IDEM_COLS " FROM idempotency WHERE tenant = $1 AND key = $2";
        case q::insert_idempotency:
            // A concurrent insert of the same key waits for the other's commit, then does
            // nothing: insert-or-find-the-existing, never two.
            return "INSERT INTO idempotency (" SEGUE_IDEM_COLS
                   ") VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT (tenant, key) DO NOTHING";
        case q::delete_idempotency_before:
            return "DELETE FROM idempotency WHERE created_at < $1";
        case q::insert_file:
            return "INSERT INTO files (" SEGUE_FILE_COLS
                   ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
        case q::get_file:
            return "SELECT " SEGUE_FILE_COLS " FROM files WHERE id = $1";
        case q::get_file_tombstone:
            return "SELECT " SEGUE_TOMBSTONE_COLS " FROM file_tombstones WHERE id = $1";
        // Retention (pg_retention.cpp). Every batch takes its rows FOR UPDATE SKIP LOCKED:
        // replicas reaping at once take different rows and never wait for one another (or for
        // a unit that holds a task). $1 of the by-task statements is a text[] of task ids.
        case q::expire_files:
            // One statement: pick (locked), delete, and leave tombstones (deleted_at = $3).
            return "WITH doomed AS (SELECT f.id FROM files f JOIN tasks t ON t.id = f.task_id "
                   "WHERE f.kind = $1 AND f.created_at < $2::bigint AND t.status "
                   "IN " SEGUE_FINAL_STATUSES
                   " ORDER BY f.created_at LIMIT $4::int "
                   "FOR UPDATE OF f SKIP LOCKED), "
                   "gone AS (DELETE FROM files WHERE id IN (SELECT id FROM doomed) "
                   "RETURNING id, tenant, task_id, kind, path, size) "
                   "INSERT INTO file_tombstones (id, tenant, task_id, kind, path, size, "
                   "deleted_at) SELECT id, tenant, task_id, kind, path, size, $3::bigint "
                   "FROM gone ON CONFLICT (id) DO NOTHING";
        case q::pick_finished_tasks:
            // The task rows stay locked until commit: a unit about one of them (which locks it
            // first, get_task) waits and then finds it gone.
            return "SELECT id FROM tasks t WHERE status IN " SEGUE_FINAL_STATUSES
                   " AND updated_at < $1::bigint AND NOT EXISTS (SELECT 1 FROM deliveries d "
                   "WHERE d.task_id = t.id AND d.status = 'pending') ORDER BY updated_at "
                   "LIMIT $2::int FOR UPDATE SKIP LOCKED";
        case q::tasks_without_work:
            return "SELECT id FROM tasks t WHERE status IN " SEGUE_UNFINISHED_STATUSES
                   " AND updated_at < $1::bigint AND NOT EXISTS (SELECT 1 FROM jobs j "
                   "WHERE j.task_id = t.id) ORDER BY updated_at LIMIT $2::int";
        case q::tombstone_task_files:
            return "INSERT INTO file_tombstones (id, tenant, task_id, kind, path, size, "
                   "deleted_at) SELECT id, tenant, task_id, kind, path, size, $2::bigint "
                   "FROM files WHERE task_id = ANY($1::text[]) ON CONFLICT (id) DO NOTHING";
        case q::delete_task_files:
            return "DELETE FROM files WHERE task_id = ANY($1::text[])";
        case q::delete_task_deliveries:
            return "DELETE FROM deliveries WHERE task_id = ANY($1::text[])";
        case q::delete_task_jobs:
            return "DELETE FROM jobs WHERE task_id = ANY($1::text[])";
        case q::delete_tasks:
            // Outputs, attempts and events go with them (ON DELETE CASCADE).
            return "DELETE FROM tasks WHERE id = ANY($1::text[])";
        case q::claim_purges:
            return "UPDATE file_tombstones SET purge_at = $1::bigint + $2::bigint WHERE id IN "
                   "(SELECT id FROM file_tombstones WHERE purged = 0 AND purge_at <= $1::bigint "
                   "ORDER BY purge_at LIMIT $3::int FOR UPDATE SKIP LOCKED) "
                   "RETURNING " SEGUE_TOMBSTONE_COLS;
        case q::mark_purged:
            return "UPDATE file_tombstones SET purged = 1 WHERE id = ANY($1::text[])";
        case q::delete_tombstones_before:
            // Never while its task lives: its document and GET /v1/files/{id} say 410.
            return "DELETE FROM file_tombstones WHERE id IN (SELECT f.id FROM file_tombstones f "
                   "WHERE f.purged = 1 AND f.deleted_at < $1::bigint AND NOT EXISTS (SELECT 1 "
                   "FROM tasks t WHERE t.id = f.task_id) ORDER BY f.deleted_at "
                   "LIMIT $2::int FOR UPDATE OF f SKIP LOCKED)";
        case q::delete_idempotency_batch:
            return "DELETE FROM idempotency WHERE (tenant, key) IN (SELECT tenant, key FROM "
                   "idempotency WHERE created_at < $1::bigint ORDER BY created_at "
                   "LIMIT $2::int FOR UPDATE SKIP LOCKED)";
        case q::storage_totals:
            // Totals kept by a trigger (migrations 4 and 5): 16 shard rows, more only while more
            // writers than that are open at once.
            return "SELECT COALESCE(SUM(n), 0)::bigint, COALESCE(SUM(bytes), 0)::bigint, "
                   "pg_database_size(current_database()) FROM file_totals";
        case q::insert_delivery:
            return "INSERT INTO deliveries (" SEGUE_DELIVERY_COLS
                   ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14, $15, "
                   "$16, $17, $18)";
        case q::claim_deliveries:
            // As claim_jobs, only the head of each (task, url) queue, and the event joined in
            // (type, data) so a claim is one round trip.
            // A row still owned was claimed and never finished: its send may have gone out
            // (a crash, a stall past the lease), so it counts as an attempt.
            return "WITH c AS (UPDATE deliveries SET lease_owner = $1, "
                   "lease_until = $2::bigint + $3::bigint, lease_fence = lease_fence + 1, "
                   "attempts = attempts + CASE WHEN lease_owner <> '' THEN 1 ELSE 0 END "
                   "WHERE id IN (SELECT d.id FROM deliveries d WHERE d.status = 'pending' "
                   "AND d.next_at <= $2::bigint AND (d.lease_owner = '' OR "
                   "d.lease_until <= $2::bigint) AND NOT (d.id = ANY ($5::text[])) "
                   "AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE p.task_id = d.task_id "
                   "AND p.url = d.url AND p.status = 'pending' AND p.seq < d.seq) "
                   "ORDER BY d.next_at, d.id LIMIT $4 FOR UPDATE OF d SKIP LOCKED) "
                   "RETURNING " SEGUE_DELIVERY_COLS
                   ") SELECT c.*, COALESCE(e.type, ''), COALESCE(e.data_json, '') FROM c "
                   "LEFT JOIN events e ON e.id = c.event_id ORDER BY c.next_at, c.id";
        case q::finish_delivery:
            return "UPDATE deliveries SET status = $3, attempts = $4, next_at = $5, "
                   "last_status = $6, last_error = $7, updated_at = $8, delivered_at = $9, "
                   "lease_owner = '', lease_until = 0 WHERE id = $1 AND lease_owner = $2::text "
                   "AND $2::text <> '' AND lease_fence = $10";
        case q::renew_delivery:
            return "UPDATE deliveries SET lease_until = $4 WHERE id = $1 AND "
                   "lease_owner = $2::text AND $2::text <> '' AND lease_fence = $3 AND "
                   "status = 'pending'";
        case q::get_delivery:
            return "SELECT " SEGUE_DELIVERY_COLS " FROM deliveries WHERE id = $1";
        case q::list_deliveries:
            return "SELECT " SEGUE_DELIVERY_COLS
                   " FROM deliveries WHERE tenant = $1 AND ($2::text = '' OR status = $2) "
                   "AND ($3::text = '' OR task_id = $3) AND ($5::text = '' OR "
                   "(created_at, id) < (SELECT created_at, id FROM deliveries WHERE id = $5 AND "
                   "tenant = $1)) ORDER BY created_at DESC, id DESC LIMIT $4";
        case q::redeliver:
            return "UPDATE deliveries SET status = 'pending', attempts = 0, next_at = $2, "
                   "lease_owner = '', lease_until = 0, updated_at = $2, delivered_at = 0 "
                   "WHERE id = $1 AND status <> 'pending'";
        case q::kill_deliveries_to:
            return "UPDATE deliveries SET status = 'dead', last_error = $3, updated_at = $4, "
                   "lease_owner = '', lease_until = 0 WHERE tenant = $1 AND url = $2 AND "
                   "status = 'pending'";
        case q::set_endpoint_gone:
            return "INSERT INTO gone_endpoints (tenant, url, created_at) VALUES ($1, $2, $3) "
                   "ON CONFLICT (tenant, url) DO NOTHING";
        case q::clear_endpoint_gone:
            return "DELETE FROM gone_endpoints WHERE tenant = $1 AND url = $2";
        case q::endpoint_gone:
            return "SELECT 1 FROM gone_endpoints WHERE tenant = $1 AND url = $2";
        case q::next_delivery_due:
            return "SELECT LEAST((SELECT d.next_at FROM deliveries d WHERE d.status = 'pending' "
                   "AND d.lease_owner = '' AND NOT EXISTS (SELECT 1 FROM deliveries p WHERE "
                   "p.task_id = d.task_id AND p.url = d.url AND p.status = 'pending' AND "
                   "p.seq < d.seq) ORDER BY d.next_at LIMIT 1), "
                   "(SELECT MIN(GREATEST(next_at, lease_until)) FROM deliveries WHERE "
                   "status = 'pending' AND lease_owner <> ''))";
        case q::summarize_deliveries:
            // Counts kept by triggers (migration 3); MIN by the partial index on event_at.
            return "SELECT (SELECT COALESCE(SUM(n), 0) FROM delivery_counts WHERE "
                   "status = 'pending'), (SELECT COALESCE(SUM(n), 0) FROM delivery_counts "
                   "WHERE status = 'dead'), "
                   "(SELECT MIN(event_at) FROM deliveries WHERE status = 'pending')";
        case q::lock_account:
            // The tenant's totals row, created if missing and locked until commit: every ledger
            // write and every reservation of a tenant goes through it, one at a time, so a
            // balance check and the hold it allows are atomic.
            return "INSERT INTO ledger_accounts (tenant, updated_at) VALUES ($1, $2) "
                   "ON CONFLICT (tenant) DO UPDATE SET tenant = excluded.tenant "
                   "RETURNING granted, captured, held";
        case q::ledger_append:
            // Appends the entry (nothing if its unique key exists: no row returned) and moves the
            // tenant's totals in the same statement. The task's open amount after the entry is
            // the sum of its earlier entries (this statement's snapshot does not hold the new
            // one) plus $10, the entry's own change (+hold, -capture, -release); held moves by
            // max(0, after) - max(0, before). The caller locked the account row first
            // (lock_account), so no other writer moves these sums meanwhile.
            return "WITH ins AS (INSERT INTO ledger (tenant, task_id, output, kind, key, "
                   "amount_milli, provider, note, created_at) VALUES ($1, $2, $3, $4, $5, $6, $7, "
                   "$8, $9) ON CONFLICT (tenant, task_id, output, kind, key) DO NOTHING "
                   "RETURNING 1), "
                   "o AS (SELECT COALESCE(SUM(CASE kind WHEN 'hold' THEN amount_milli ELSE "
                   "-amount_milli END), 0) + $10::bigint AS after FROM ledger WHERE tenant = $1 "
                   "AND task_id = $2 AND $2::text <> '') "
                   "UPDATE ledger_accounts SET granted = granted + $11::bigint, "
                   "captured = captured + $12::bigint, held = held + GREATEST(0, o.after) - "
                   "GREATEST(0, o.after - $10::bigint), updated_at = $9 FROM o "
                   "WHERE ledger_accounts.tenant = $1 AND EXISTS (SELECT 1 FROM ins) RETURNING 1";
        case q::find_ledger:
            return "SELECT " SEGUE_LEDGER_COLS
                   " FROM ledger WHERE tenant = $1 AND task_id = $2 AND output = $3 AND "
                   "kind = $4 AND key = $5";
        case q::ledger_totals:
            return "SELECT granted, captured, held FROM ledger_accounts WHERE tenant = $1";
        case q::ledger_for_task:
            return "SELECT "
                   "COALESCE(SUM(CASE WHEN kind = 'hold' THEN amount_milli END), 0), "
                   "COALESCE(SUM(CASE WHEN kind = 'capture' THEN amount_milli END), 0), "
                   "COALESCE(SUM(CASE WHEN kind = 'release' THEN amount_milli END), 0) "
                   "FROM ledger WHERE task_id = $1 AND task_id <> ''";
        case q::ledger_of_task:
            // A write unit's ledger_for_task: the task's entries themselves (a handful), so the
            // unit's lookups of them (find_ledger_entry) need no statement of their own.
            return "SELECT " SEGUE_LEDGER_COLS " FROM ledger WHERE task_id = $1 AND task_id <> ''";
        case q::list_ledger:
            return "SELECT " SEGUE_LEDGER_COLS
                   " FROM ledger WHERE tenant = $1 AND id < $3 ORDER BY id DESC LIMIT $2";
        // Secrets (pg_idempotency.cpp).
        case q::insert_secret:
            return "INSERT INTO secrets (name, value, created_at) VALUES ($1, $2, $3::bigint) "
                   "ON CONFLICT (name) DO NOTHING";
        case q::get_secret:
            return "SELECT value FROM secrets WHERE name = $1";
        // Lease owners' liveness (pg_jobs.cpp).
        case q::mark_owner_alive:
            return "INSERT INTO lease_owners (owner, alive_until) VALUES ($1, $2::bigint) "
                   "ON CONFLICT (owner) DO UPDATE SET alive_until = EXCLUDED.alive_until "
                   // xmax is 0 in a row the statement inserted, set in one it updated.
                   "RETURNING xmax = 0";
        case q::forget_dead_owners:
            return "DELETE FROM lease_owners WHERE alive_until <= $1::bigint RETURNING owner";
        // The owner stays: the next claim counts the run as failed, as after an expiry.
        case q::free_jobs_of:
            return "UPDATE jobs SET lease_until = 0 WHERE lease_owner = ANY ($1::text[]) "
                   "AND lease_owner <> '' AND lease_until > 0";
        case q::free_deliveries_of:
            return "UPDATE deliveries SET lease_until = 0 WHERE lease_owner = ANY ($1::text[]) "
                   "AND lease_owner <> '' AND lease_until > 0 AND status = 'pending'";
        case q::count_:
            break;
    }
    throw std::logic_error("pg sql_of: bad statement id");
}

}  // namespace segue::store::pg

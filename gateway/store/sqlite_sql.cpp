// The SQL text of every statement the SQLite engine runs, and the row readers that go with the
// column lists. Pure text: no statement is run here (see sqlite_connection.hpp for that).

#include "gateway/store/sqlite_sql.hpp"

#include <stdexcept>

#include "gateway/store/columns.hpp"
#include "gateway/store/sqlite_connection.hpp"

namespace segue::store::sqlite {

#define SEGUE_SQLITE_CLAIM_JOBS(lane)                                      \
    "UPDATE jobs SET lease_owner = ?1, lease_until = ?2 + ?3, "            \
    "attempts = attempts + 1, failures = failures + (lease_owner <> '') "  \
    "WHERE id IN (SELECT id FROM jobs WHERE due_at <= ?2 " lane            \
    "AND (lease_owner = '' OR lease_until <= ?2) "                         \
    "AND id NOT IN (SELECT value FROM json_each(?5)) ORDER BY due_at, id " \
    "LIMIT ?4) RETURNING " SEGUE_JOB_COLS

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
        case q::delete_output:
            return "DELETE FROM outputs WHERE task_id = ?1 AND idx = ?2";
        case q::upsert_attempt:
            return "INSERT INTO attempts (" SEGUE_ATTEMPT_COLS
                   ") VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, "
                   "?11) "
                   "ON CONFLICT (task_id, number) DO UPDATE SET provider = excluded.provider, "
                   "provider_task_id = excluded.provider_task_id, "
                   "callback_token = excluded.callback_token, status = excluded.status, "
                   "error_json = excluded.error_json, state_json = excluded.state_json, "
                   "started_at = excluded.started_at, finished_at = excluded.finished_at, "
                   "seen_at = excluded.seen_at";
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
            return SEGUE_SQLITE_CLAIM_JOBS("");
        case q::claim_submit_jobs:
            // One lane (store::job_lane): the lane's part of jobs_lane_due (migration 9), by
            // the very expression it indexes.
            return SEGUE_SQLITE_CLAIM_JOBS("AND (kind = 'submit') = 1 ");
        case q::claim_other_jobs:
            return SEGUE_SQLITE_CLAIM_JOBS("AND (kind = 'submit') = 0 ");
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
        case q::get_file_tombstone:
            return "SELECT " SEGUE_TOMBSTONE_COLS " FROM file_tombstones WHERE id = ?1";
        // Retention (sqlite_retention.cpp). ?1 of the by-id statements is a JSON array of ids.
        case q::pick_expired_files:
            // files_kind_created walks the kind's oldest files; a file of a task still running
            // (rare: lifetimes are days, deadlines minutes) is passed over.
            return "SELECT f.id FROM files f JOIN tasks t ON t.id = f.task_id "
                   "WHERE f.kind = ?1 AND f.created_at < ?2 AND t.status IN " SEGUE_FINAL_STATUSES
                   " ORDER BY f.created_at LIMIT ?3";
        case q::tombstone_files:
            return "INSERT INTO file_tombstones (id, tenant, task_id, kind, path, size, "
                   "deleted_at) SELECT id, tenant, task_id, kind, path, size, ?2 FROM files "
                   "WHERE id IN (SELECT value FROM json_each(?1)) ON CONFLICT (id) DO NOTHING";
        case q::delete_files:
            return "DELETE FROM files WHERE id IN (SELECT value FROM json_each(?1))";
        case q::pick_finished_tasks:
            // tasks_finished (partial index: the IN list must be the index's, word for word).
            return "SELECT id FROM tasks t WHERE status IN " SEGUE_FINAL_STATUSES
                   " AND updated_at < ?1 AND NOT EXISTS (SELECT 1 FROM deliveries d "
                   "WHERE d.task_id = t.id AND d.status = 'pending') ORDER BY updated_at LIMIT ?2";
        case q::tasks_without_work:
            // tasks_unfinished (partial index: the IN list must be the index's, word for word);
            // each task's jobs by jobs_task_kind.
            return "SELECT id FROM tasks t WHERE status IN " SEGUE_UNFINISHED_STATUSES
                   " AND updated_at < ?1 AND NOT EXISTS (SELECT 1 FROM jobs j "
                   "WHERE j.task_id = t.id) ORDER BY updated_at LIMIT ?2";
        case q::tombstone_task_files:
            return "INSERT INTO file_tombstones (id, tenant, task_id, kind, path, size, "
                   "deleted_at) SELECT id, tenant, task_id, kind, path, size, ?2 FROM files "
                   "WHERE task_id IN (SELECT value FROM json_each(?1)) "
                   "ON CONFLICT (id) DO NOTHING";
        case q::delete_task_files:
            return "DELETE FROM files WHERE task_id IN (SELECT value FROM json_each(?1))";
        case q::delete_task_deliveries:
            return "DELETE FROM deliveries WHERE task_id IN (SELECT value FROM json_each(?1))";
        case q::delete_task_jobs:
            return "DELETE FROM jobs WHERE task_id IN (SELECT value FROM json_each(?1))";
        case q::delete_tasks:
            // Outputs, attempts and events go with them (ON DELETE CASCADE).
            return "DELETE FROM tasks WHERE id IN (SELECT value FROM json_each(?1))";
        case q::claim_purges:
            return "UPDATE file_tombstones SET purge_at = ?1 + ?2 WHERE id IN (SELECT id FROM "
                   "file_tombstones WHERE purged = 0 AND purge_at <= ?1 ORDER BY purge_at "
                   "LIMIT ?3) RETURNING " SEGUE_TOMBSTONE_COLS;
        case q::mark_purged:
            return "UPDATE file_tombstones SET purged = 1 "
                   "WHERE id IN (SELECT value FROM json_each(?1))";
        case q::delete_tombstones_before:
            // Never while its task lives: its document and GET /v1/files/{id} say 410.
            return "DELETE FROM file_tombstones WHERE id IN (SELECT f.id FROM file_tombstones f "
                   "WHERE f.purged = 1 AND f.deleted_at < ?1 AND NOT EXISTS (SELECT 1 FROM "
                   "tasks t WHERE t.id = f.task_id) ORDER BY f.deleted_at LIMIT ?2)";
        case q::delete_idempotency_batch:
            return "DELETE FROM idempotency WHERE rowid IN (SELECT rowid FROM idempotency "
                   "WHERE created_at < ?1 ORDER BY created_at LIMIT ?2)";
        case q::storage_totals:
            // Totals kept by triggers (migration 8).
            return "SELECT n, bytes, (SELECT page_count * page_size "
                   "FROM pragma_page_count(), pragma_page_size()) FROM file_totals WHERE id = 0";
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
            // A row still owned was claimed and never finished: its send may have gone out
            // (a crash, a stall past the lease), so it counts as an attempt.
            return "UPDATE deliveries SET lease_owner = ?1, lease_until = ?2 + ?3, "
                   "lease_fence = lease_fence + 1, attempts = attempts + (lease_owner <> '') "
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
                   "WHERE id = ?1 AND status <> 'pending'";
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
            // Counts kept by triggers (migration 7); MIN by the partial index on event_at.
            return "SELECT (SELECT COALESCE(SUM(n), 0) FROM delivery_counts WHERE "
                   "status = 'pending'), (SELECT COALESCE(SUM(n), 0) FROM delivery_counts "
                   "WHERE status = 'dead'), "
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
        // Secrets (sqlite_idempotency.cpp).
        case q::insert_secret:
            return "INSERT INTO secrets (name, value, created_at) VALUES (?1, ?2, ?3) "
                   "ON CONFLICT (name) DO NOTHING";
        case q::get_secret:
            return "SELECT value FROM secrets WHERE name = ?1";
        case q::count_:
            break;
    }
    throw std::logic_error("sql_of: bad statement id");
}

}  // namespace segue::store::sqlite

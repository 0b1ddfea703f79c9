// The column lists of every table, in the order the row readers of both engines read them
// (sqlite_sql.cpp, pg_sql.cpp): SELECTs and readers cannot drift apart. Macros so they splice
// into SQL string literals. Include only from an engine's SQL file.

#pragma once

#define SEGUE_TASK_COLS                                                                        \
    "id, tenant, status, provider, request_json, error_json, warnings_json, idempotency_key, " \
    "num_outputs, created_at, updated_at, version"
#define SEGUE_OUTPUT_COLS "task_id, idx, status, data_json, updated_at"
#define SEGUE_ATTEMPT_COLS                                                              \
    "task_id, number, provider, provider_task_id, callback_token, status, error_json, " \
    "state_json, started_at, finished_at, seen_at"
#define SEGUE_EVENT_COLS "id, task_id, tenant, seq, type, data_json, created_at"
#define SEGUE_JOB_COLS \
    "id, kind, task_id, payload_json, due_at, lease_owner, lease_until, attempts, failures"
#define SEGUE_IDEM_COLS \
    "tenant, key, request_hash, task_id, response_status, response_body, created_at"
#define SEGUE_FILE_COLS "id, tenant, task_id, kind, content_type, path, size, sha256, created_at"
// The final task statuses, as the partial index tasks_finished lists them (both engines).
#define SEGUE_FINAL_STATUSES "('succeeded', 'partially_succeeded', 'failed', 'canceled')"
// The others, as the partial index tasks_unfinished lists them (both engines).
#define SEGUE_UNFINISHED_STATUSES "('queued', 'submitted', 'running')"
#define SEGUE_TOMBSTONE_COLS "id, tenant, task_id, kind, path, size, deleted_at, purge_at, purged"
#define SEGUE_DELIVERY_COLS                                                                  \
    "id, event_id, task_id, tenant, seq, url, status, attempts, next_at, lease_owner, "      \
    "lease_until, last_status, last_error, event_at, created_at, updated_at, delivered_at, " \
    "lease_fence"
#define SEGUE_LEDGER_COLS \
    "id, tenant, task_id, output, kind, key, amount_milli, provider, note, created_at"

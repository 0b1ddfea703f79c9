// Internal to the PostgreSQL engine (included only by gateway/store/pg_*.cpp): the statements
// it runs, by id (the SQL text is in pg_sql.cpp; the SQLite engine's are in sqlite_sql.cpp).

#pragma once

namespace segue::store::pg {

enum class q : int {
    clock,
    notify,
    insert_task,
    update_task,
    get_task,
    get_task_locked,
    list_tasks_first,
    list_tasks_before,
    upsert_output,
    get_outputs,
    upsert_attempt,
    get_attempts,
    find_attempt_by_token,
    append_event,
    get_events,
    lock_job_key,
    insert_job,
    upsert_unique_job,
    claim_jobs,
    complete_job,
    reschedule_job,
    fail_job,
    renew_job,
    delete_jobs_for_task,
    next_job_due,
    lock_idempotency_key,
    get_idempotency,
    insert_idempotency,
    delete_idempotency_before,
    insert_file,
    get_file,
    insert_delivery,
    claim_deliveries,
    finish_delivery,
    renew_delivery,
    get_delivery,
    list_deliveries,
    redeliver,
    kill_deliveries_to,
    set_endpoint_gone,
    clear_endpoint_gone,
    endpoint_gone,
    next_delivery_due,
    summarize_deliveries,
    lock_account,
    ledger_append,
    find_ledger,
    ledger_totals,
    ledger_for_task,
    list_ledger,
    count_
};

const char* sql_of(q which);

}  // namespace segue::store::pg

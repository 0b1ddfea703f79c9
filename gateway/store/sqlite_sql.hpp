// Internal to the SQLite engine (included only by gateway/store/sqlite_*.cpp): the statements
// it runs, by id, and the readers that turn a result row into a store row.

#pragma once

#include "gateway/store/store.hpp"

namespace segue::store::sqlite {

class statement;

// Every statement the engine runs (the SQL text is in sqlite_sql.cpp).
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

const char* sql_of(q which);

// Row readers: each reads the columns of its table's column list (sqlite_sql.cpp), in order.
task_row read_task(const statement& s);
output_row read_output(const statement& s);
attempt_row read_attempt(const statement& s);
event_row read_event(const statement& s);
job_row read_job(const statement& s);
idempotency_row read_idempotency(const statement& s);
file_row read_file(const statement& s);
delivery_row read_delivery(const statement& s);
ledger_row read_ledger(const statement& s);

}  // namespace segue::store::sqlite

// Internal to the SQLite engine (included only by gateway/store/sqlite_*.cpp): the statements
// it runs, by id, and the readers that turn a result row into a store row.

#pragma once

#include "gateway/store/row_readers.hpp"
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
    delete_output,
    upsert_attempt,
    get_attempts,
    find_attempt_by_token,
    append_event,
    get_events,
    insert_job,
    update_unique_job,
    claim_jobs,
    claim_submit_jobs,
    claim_other_jobs,
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
    get_file_tombstone,
    pick_expired_files,
    tombstone_files,
    delete_files,
    pick_finished_tasks,
    tasks_without_work,
    tombstone_task_files,
    delete_task_files,
    delete_task_deliveries,
    delete_task_jobs,
    delete_tasks,
    claim_purges,
    mark_purged,
    delete_tombstones_before,
    delete_idempotency_batch,
    storage_totals,
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
    insert_secret,
    get_secret,
    count_
};

const char* sql_of(q which);

// Row readers (row_readers.hpp): each reads its table's column list (columns.hpp), in order.
using detail::read_attempt;
using detail::read_delivery;
using detail::read_event;
using detail::read_file;
using detail::read_idempotency;
using detail::read_job;
using detail::read_ledger;
using detail::read_output;
using detail::read_task;
using detail::read_tombstone;

}  // namespace segue::store::sqlite

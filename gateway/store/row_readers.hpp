// The row readers of both engines: each turns one result row, whose columns are its table's
// column list (columns.hpp) in order, into a store row. `Row` is the engine's row accessor:
// text(i), i64(i), i32(i) of column i (sqlite::statement, pg::row).

#pragma once

#include "gateway/store/store.hpp"

namespace segue::store::detail {

// Shared by both engines' ledgers (store.cpp).
// Throws std::invalid_argument for an entry that would corrupt the totals.
void check_ledger_entry(const ledger_row& e);
// How an appended entry moves the tenant's totals; `task_open_after` is the task's holds minus
// captures and releases including `e` (unused for grants and top-ups).
struct account_change {
    std::int64_t granted = 0, captured = 0, held = 0;
};
account_change account_delta(const ledger_row& e, std::int64_t task_open_after);

// The claim statement of a job lane, in either engine's statement ids (`Q`: sqlite::q, pg::q).
template <typename Q>
Q claim_jobs_query(job_lane lane) {
    switch (lane) {
        case job_lane::submit:
            return Q::claim_submit_jobs;
        case job_lane::other:
            return Q::claim_other_jobs;
        case job_lane::any:
            break;
    }
    return Q::claim_jobs;
}

template <typename Row>
task_row read_task(const Row& s) {
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

template <typename Row>
output_row read_output(const Row& s) {
    output_row o;
    o.task_id = s.text(0);
    o.index = s.i32(1);
    o.status = s.text(2);
    o.data_json = s.text(3);
    o.updated_at = s.i64(4);
    return o;
}

template <typename Row>
attempt_row read_attempt(const Row& s) {
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
    a.seen_at = s.i64(10);
    return a;
}

template <typename Row>
event_row read_event(const Row& s) {
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

template <typename Row>
job_row read_job(const Row& s) {
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

template <typename Row>
idempotency_row read_idempotency(const Row& s) {
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

template <typename Row>
file_tombstone_row read_tombstone(const Row& s) {
    file_tombstone_row f;
    f.id = s.text(0);
    f.tenant = s.text(1);
    f.task_id = s.text(2);
    f.kind = s.text(3);
    f.path = s.text(4);
    f.size = s.i64(5);
    f.deleted_at = s.i64(6);
    f.purge_at = s.i64(7);
    f.purged = s.i32(8) != 0;
    return f;
}

template <typename Row>
file_row read_file(const Row& s) {
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

template <typename Row>
delivery_row read_delivery(const Row& s) {
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

template <typename Row>
ledger_row read_ledger(const Row& s) {
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

}  // namespace segue::store::detail

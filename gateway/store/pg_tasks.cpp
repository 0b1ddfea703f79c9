// The PostgreSQL engine: tasks, their outputs and attempts, and the event log (side by side with
// sqlite_tasks.cpp).

#include <chrono>

#include "gateway/store/pg_transaction.hpp"
#include "gateway/store/row_readers.hpp"
#include "gateway/util/crypto.hpp"

namespace segue::store::pg {

millis now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

millis pg_transaction::clock_ms() {
    return c_.run(q::clock, {}).i64(0, 0);
}

// Writes whose answer nobody reads are sent without waiting (connection::send): their errors
// come with the unit's next answer, before it commits.
void pg_transaction::insert_task(const task_row& t) {
    if (writer_) {
        send_new_task();
        new_task_ = t;  // sent with its first event, or before the unit's next statement
        return;
    }
    c_.send(q::insert_task,
            {t.id, t.tenant, t.status, t.provider, t.request_json, t.error_json, t.warnings_json,
             t.idempotency_key, t.num_outputs, t.created_at, t.updated_at, t.version});
}

void pg_transaction::send_new_task() {
    if (!new_task_)
        return;
    const task_row t = std::move(*new_task_);
    new_task_.reset();
    c_.c.send(q::insert_task,
              {t.id, t.tenant, t.status, t.provider, t.request_json, t.error_json, t.warnings_json,
               t.idempotency_key, t.num_outputs, t.created_at, t.updated_at, t.version});
    for (const auto& o : new_outputs_)
        c_.c.send(q::upsert_output, {o.task_id, o.index, o.status, o.data_json, o.updated_at});
    new_outputs_.clear();
}

std::int64_t pg_transaction::update_task(const task_row& t) {
    auto r = c_.run(q::update_task, {t.id, t.tenant, t.status, t.provider, t.request_json,
                                     t.error_json, t.warnings_json, t.idempotency_key,
                                     t.num_outputs, t.created_at, t.updated_at});
    return r.rows() ? r.i64(0, 0) : 0;
}

std::optional<task_row> pg_transaction::get_task(std::string_view id) {
    auto r = c_.run(writer_ ? q::get_task_locked : q::get_task, {id});
    if (!r.rows())
        return std::nullopt;
    return detail::read_task(row{r, 0});
}

std::optional<task_row> pg_transaction::get_task_if_unlocked(std::string_view id) {
    if (!writer_)
        return get_task(id);
    auto r = c_.run(q::get_task_if_unlocked, {id});
    if (!r.rows())
        return std::nullopt;
    return detail::read_task(row{r, 0});
}

std::vector<task_row> pg_transaction::list_tasks(std::string_view tenant, int limit,
                                                 std::string_view before_id) {
    std::vector<task_row> out;
    if (limit <= 0)
        return out;
    auto r = before_id.empty() ? c_.run(q::list_tasks_first, {tenant, limit})
                               : c_.run(q::list_tasks_before, {tenant, limit, before_id});
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(detail::read_task(row{r, i}));
    return out;
}

void pg_transaction::upsert_output(const output_row& o) {
    if (new_task_ && new_task_->id == o.task_id) {
        new_outputs_.push_back(o);
        return;
    }
    c_.send(q::upsert_output, {o.task_id, o.index, o.status, o.data_json, o.updated_at});
}

void pg_transaction::delete_output(std::string_view task_id, int index) {
    if (new_task_ && new_task_->id == task_id) {  // not written yet: forget it
        std::erase_if(new_outputs_, [&](const output_row& o) { return o.index == index; });
        return;
    }
    c_.send(q::delete_output, {task_id, index});
}

std::vector<output_row> pg_transaction::get_outputs(std::string_view task_id) {
    auto r = c_.run(q::get_outputs, {task_id});
    std::vector<output_row> out;
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(detail::read_output(row{r, i}));
    return out;
}

void pg_transaction::upsert_attempt(const attempt_row& a) {
    c_.send(q::upsert_attempt,
            {a.task_id, a.number, a.provider, a.provider_task_id, a.callback_token, a.status,
             a.error_json, a.state_json, a.started_at, a.finished_at, a.seen_at});
}

std::vector<attempt_row> pg_transaction::get_attempts(std::string_view task_id) {
    auto r = c_.run(q::get_attempts, {task_id});
    std::vector<attempt_row> out;
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(detail::read_attempt(row{r, i}));
    return out;
}

std::optional<attempt_row> pg_transaction::find_attempt_by_token(std::string_view token) {
    if (token.empty())
        return std::nullopt;
    auto r = c_.run(q::find_attempt_by_token, {token});
    if (!r.rows())
        return std::nullopt;
    return detail::read_attempt(row{r, 0});
}

event_row pg_transaction::append_event(event_row e) {
    if (e.id.empty())
        e.id = util::sortable_id("evt_");
    if (e.created_at == 0)
        e.created_at = now_ms();
    if (new_task_ && new_task_->id == e.task_id) {
        // The new task's first event: both in one statement, then its outputs.
        const task_row t = std::move(*new_task_);
        new_task_.reset();
        auto outputs = std::move(new_outputs_);
        new_outputs_.clear();
        auto r =
            c_.c.run(q::insert_task_event,
                     {t.id, t.tenant, t.status, t.provider, t.request_json, t.error_json,
                      t.warnings_json, t.idempotency_key, t.num_outputs, t.created_at, t.updated_at,
                      t.version, e.id, e.tenant, e.type, e.data_json, e.created_at});
        for (const auto& o : outputs)
            c_.c.send(q::upsert_output, {o.task_id, o.index, o.status, o.data_json, o.updated_at});
        e.seq = r.i64(0, 0);
        notice.event_tasks.push_back(e.task_id);
        return e;
    }
    auto r =
        c_.run(q::append_event, {e.id, e.task_id, e.tenant, e.type, e.data_json, e.created_at});
    if (!r.rows())
        throw store_error("append_event: no task " + e.task_id);
    e.seq = r.i64(0, 0);
    notice.event_tasks.push_back(e.task_id);
    return e;
}

std::vector<event_row> pg_transaction::get_events(std::string_view task_id, std::int64_t after_seq,
                                                  int limit) {
    std::vector<event_row> out;
    if (limit <= 0)
        return out;
    auto r = c_.run(q::get_events, {task_id, after_seq, limit});
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(detail::read_event(row{r, i}));
    return out;
}

}  // namespace segue::store::pg

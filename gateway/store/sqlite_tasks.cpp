// The SQLite engine: tasks, their outputs and attempts, and the event log.

#include "gateway/store/sqlite_transaction.hpp"

#include "gateway/util/crypto.hpp"

namespace segue::store::sqlite {

void sqlite_transaction::insert_task(const task_row& t) {
    statement st(c_, q::insert_task);
    st.bind_all(t.id, t.tenant, t.status, t.provider, t.request_json, t.error_json, t.warnings_json,
                t.idempotency_key, t.num_outputs, t.created_at, t.updated_at, t.version);
    st.run();
}

// Returns 0 when no task has that id (versions start at the inserted value and only grow,
// so 0 is never a post-update version for a task inserted with version >= 0).
std::int64_t sqlite_transaction::update_task(const task_row& t) {
    statement st(c_, q::update_task);
    st.bind_all(t.id, t.tenant, t.status, t.provider, t.request_json, t.error_json, t.warnings_json,
                t.idempotency_key, t.num_outputs, t.created_at, t.updated_at);
    if (!st.step())
        return 0;
    const std::int64_t version = st.i64(0);
    st.run();
    return version;
}

std::optional<task_row> sqlite_transaction::get_task(std::string_view id) {
    statement st(c_, q::get_task);
    st.bind_all(id);
    if (!st.step())
        return std::nullopt;
    return read_task(st);
}

std::vector<task_row> sqlite_transaction::list_tasks(std::string_view tenant, int limit,
                                                     std::string_view before_id) {
    std::vector<task_row> out;
    if (limit <= 0)
        return out;
    statement st(c_, before_id.empty() ? q::list_tasks_first : q::list_tasks_before);
    st.bind(1, tenant);
    st.bind(2, limit);
    if (!before_id.empty())
        st.bind(3, before_id);
    while (st.step())
        out.push_back(read_task(st));
    return out;
}

void sqlite_transaction::upsert_output(const output_row& o) {
    statement st(c_, q::upsert_output);
    st.bind_all(o.task_id, o.index, o.status, o.data_json, o.updated_at);
    st.run();
}

void sqlite_transaction::delete_output(std::string_view task_id, int index) {
    statement st(c_, q::delete_output);
    st.bind_all(task_id, index);
    st.run();
}

std::vector<output_row> sqlite_transaction::get_outputs(std::string_view task_id) {
    statement st(c_, q::get_outputs);
    st.bind_all(task_id);
    std::vector<output_row> out;
    while (st.step())
        out.push_back(read_output(st));
    return out;
}

void sqlite_transaction::upsert_attempt(const attempt_row& a) {
    statement st(c_, q::upsert_attempt);
    st.bind_all(a.task_id, a.number, a.provider, a.provider_task_id, a.callback_token, a.status,
                a.error_json, a.state_json, a.started_at, a.finished_at, a.seen_at);
    st.run();
}

std::vector<attempt_row> sqlite_transaction::get_attempts(std::string_view task_id) {
    statement st(c_, q::get_attempts);
    st.bind_all(task_id);
    std::vector<attempt_row> out;
    while (st.step())
        out.push_back(read_attempt(st));
    return out;
}

std::optional<attempt_row> sqlite_transaction::find_attempt_by_token(std::string_view token) {
    if (token.empty())  // "" means "no token": never matches
        return std::nullopt;
    statement st(c_, q::find_attempt_by_token);
    st.bind_all(token);
    if (!st.step())
        return std::nullopt;
    return read_attempt(st);
}

event_row sqlite_transaction::append_event(event_row e) {
    if (e.id.empty())
        // Event ids double as webhook ids: globally unique without coordination (80
        // random bits), and time-ordered so the events table's id index grows at its edge.
        e.id = util::sortable_id("evt_");
    if (e.created_at == 0)
        e.created_at = now_ms();
    statement st(c_, q::append_event);
    st.bind_all(e.id, e.task_id, e.tenant, e.type, e.data_json, e.created_at);
    if (!st.step())
        throw store_error("append_event: no row returned");
    e.seq = st.i64(0);
    st.run();
    notice.event_tasks.push_back(e.task_id);
    return e;
}

std::vector<event_row> sqlite_transaction::get_events(std::string_view task_id,
                                                      std::int64_t after_seq, int limit) {
    std::vector<event_row> out;
    if (limit <= 0)
        return out;
    statement st(c_, q::get_events);
    st.bind_all(task_id, after_seq, limit);
    while (st.step())
        out.push_back(read_event(st));
    return out;
}

}  // namespace segue::store::sqlite

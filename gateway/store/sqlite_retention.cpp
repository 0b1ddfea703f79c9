// The SQLite engine: retention (what gateway/core/reaper.hpp deletes) and file tombstones.
// One writer: a batch needs no row locks, only its LIMIT.

#include "gateway/store/sqlite_transaction.hpp"

namespace segue::store::sqlite {

namespace {

std::vector<std::string> ids_of(statement& st) {
    std::vector<std::string> ids;
    while (st.step())
        ids.push_back(st.text(0));
    return ids;
}

// Runs a by-ids statement (?1 the JSON array, then `more`); the rows it changed.
template <typename... Args>
int run_for(connection& c, q which, const std::string& ids, const Args&... more) {
    statement st(c, which);
    st.bind_all(ids, more...);
    st.run();
    return st.changes();
}

}  // namespace

std::optional<file_tombstone_row> sqlite_transaction::get_file_tombstone(std::string_view id) {
    statement st(c_, q::get_file_tombstone);
    st.bind_all(id);
    if (!st.step())
        return std::nullopt;
    return read_tombstone(st);
}

int sqlite_transaction::expire_files(std::string_view kind, millis created_before, millis now,
                                     int limit) {
    std::vector<std::string> ids;
    {
        statement st(c_, q::pick_expired_files);
        st.bind_all(kind, created_before, limit);
        ids = ids_of(st);
    }
    if (ids.empty())
        return 0;
    const std::string json = ids_json(ids);
    run_for(c_, q::tombstone_files, json, now);
    return run_for(c_, q::delete_files, json);
}

int sqlite_transaction::reap_tasks(millis finished_before, millis now, int limit) {
    std::vector<std::string> ids;
    {
        statement st(c_, q::pick_finished_tasks);
        st.bind_all(finished_before, limit);
        ids = ids_of(st);
    }
    if (ids.empty())
        return 0;
    const std::string json = ids_json(ids);
    run_for(c_, q::tombstone_task_files, json, now);
    run_for(c_, q::delete_task_files, json);
    run_for(c_, q::delete_task_deliveries, json);
    run_for(c_, q::delete_task_jobs, json);
    return run_for(c_, q::delete_tasks, json);
}

std::vector<std::string> sqlite_transaction::tasks_without_work(millis untouched_before,
                                                                int limit) {
    statement st(c_, q::tasks_without_work);
    st.bind_all(untouched_before, limit);
    return ids_of(st);
}

std::vector<file_tombstone_row> sqlite_transaction::claim_purges(millis now, millis lease_ms,
                                                                 int limit) {
    std::vector<file_tombstone_row> out;
    statement st(c_, q::claim_purges);
    st.bind_all(now, lease_ms, limit);
    while (st.step())
        out.push_back(read_tombstone(st));
    return out;
}

void sqlite_transaction::mark_purged(const std::vector<std::string>& ids) {
    if (!ids.empty())
        run_for(c_, q::mark_purged, ids_json(ids));
}

int sqlite_transaction::delete_tombstones_before(millis cutoff, int limit) {
    statement st(c_, q::delete_tombstones_before);
    st.bind_all(cutoff, limit);
    st.run();
    return st.changes();
}

int sqlite_transaction::delete_idempotency_batch(millis cutoff, int limit) {
    statement st(c_, q::delete_idempotency_batch);
    st.bind_all(cutoff, limit);
    st.run();
    return st.changes();
}

storage_totals sqlite_transaction::totals() {
    statement st(c_, q::storage_totals);
    storage_totals t;
    if (st.step()) {
        t.files = st.i64(0);
        t.file_bytes = st.i64(1);
        t.database_bytes = st.i64(2);
    }
    return t;
}

}  // namespace segue::store::sqlite

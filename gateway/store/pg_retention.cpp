// The PostgreSQL engine: retention (what gateway/core/reaper.hpp deletes) and file tombstones,
// side by side with sqlite_retention.cpp. Batches lock their rows with SKIP LOCKED (pg_sql.cpp).

#include "gateway/store/pg_transaction.hpp"
#include "gateway/store/row_readers.hpp"

namespace segue::store::pg {

std::optional<file_tombstone_row> pg_transaction::get_file_tombstone(std::string_view id) {
    auto r = c_.run(q::get_file_tombstone, {id});
    if (!r.rows())
        return std::nullopt;
    return detail::read_tombstone(row{r, 0});
}

int pg_transaction::expire_files(std::string_view kind, millis created_before, millis now,
                                 int limit) {
    return static_cast<int>(c_.run(q::expire_files, {kind, created_before, now, limit}).affected());
}

int pg_transaction::reap_tasks(millis finished_before, millis now, int limit) {
    auto picked = c_.run(q::pick_finished_tasks, {finished_before, limit});
    std::vector<std::string> ids;
    for (int i = 0; i < picked.rows(); ++i)
        ids.push_back(picked.text(i, 0));
    if (ids.empty())
        return 0;
    const std::string arr = array_text(ids);
    c_.send(q::tombstone_task_files, {arr, now});
    c_.send(q::delete_task_files, {arr});
    c_.send(q::delete_task_deliveries, {arr});
    c_.send(q::delete_task_jobs, {arr});
    return static_cast<int>(c_.run(q::delete_tasks, {arr}).affected());
}

std::vector<std::string> pg_transaction::tasks_without_work(millis untouched_before, int limit) {
    auto r = c_.run(q::tasks_without_work, {untouched_before, limit});
    std::vector<std::string> ids;
    for (int i = 0; i < r.rows(); ++i)
        ids.push_back(r.text(i, 0));
    return ids;
}

std::vector<file_tombstone_row> pg_transaction::claim_purges(millis now, millis lease_ms,
                                                             int limit) {
    auto r = c_.run(q::claim_purges, {now, lease_ms, limit});
    std::vector<file_tombstone_row> out;
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(detail::read_tombstone(row{r, i}));
    return out;
}

void pg_transaction::mark_purged(const std::vector<std::string>& ids) {
    if (!ids.empty())
        c_.run(q::mark_purged, {array_text(ids)});
}

int pg_transaction::delete_tombstones_before(millis cutoff, int limit) {
    return static_cast<int>(c_.run(q::delete_tombstones_before, {cutoff, limit}).affected());
}

int pg_transaction::delete_idempotency_batch(millis cutoff, int limit) {
    return static_cast<int>(c_.run(q::delete_idempotency_batch, {cutoff, limit}).affected());
}

storage_totals pg_transaction::totals() {
    auto r = c_.run(q::storage_totals, {});
    storage_totals t;
    if (r.rows()) {
        t.files = r.i64(0, 0);
        t.file_bytes = r.i64(0, 1);
        t.database_bytes = r.i64(0, 2);
    }
    return t;
}

}  // namespace segue::store::pg

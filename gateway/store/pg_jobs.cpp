// The PostgreSQL engine: jobs, claimed under fenced leases with SKIP LOCKED (side by side with
// sqlite_jobs.cpp).

#include <algorithm>
#include <stdexcept>

#include "gateway/store/pg_transaction.hpp"
#include "gateway/store/row_readers.hpp"

namespace segue::store::pg {

std::int64_t pg_transaction::schedule_job(const job_row& j, bool unique) {
    // A job leased at insert (an engine's hand-off to itself) is no one else's to claim.
    if (j.lease_owner.empty())
        notice.jobs = true;
    if (unique) {
        // Sent with the upsert, which runs after the lock is taken (pg_sql.cpp).
        c_.send(q::lock_job_key, {j.kind + "/" + j.task_id});
        return c_.run(q::upsert_unique_job, {j.kind, j.task_id, j.due_at, j.payload_json})
            .i64(0, 0);
    }
    auto r = c_.run(q::insert_job, {j.kind, j.task_id, j.payload_json, j.due_at, j.lease_owner,
                                    j.lease_until, j.attempts, j.lease_for});
    return r.i64(0, 0);
}

std::vector<job_row> pg_transaction::claim_jobs(std::string_view owner, millis now, millis lease_ms,
                                                int limit, const std::vector<std::int64_t>& exclude,
                                                job_lane lane) {
    if (owner.empty())
        throw std::invalid_argument("claim_jobs: empty lease owner");
    std::vector<job_row> out;
    if (limit <= 0)
        return out;
    auto r = c_.run(detail::claim_jobs_query<q>(lane),
                    {owner, now, lease_ms, limit, array_text(exclude)});
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(detail::read_job(row{r, i}));
    std::sort(out.begin(), out.end(), [](const job_row& a, const job_row& b) {
        return a.due_at != b.due_at ? a.due_at < b.due_at : a.id < b.id;
    });
    return out;
}

bool pg_transaction::complete_job(const lease_ref& l) {
    return mark_released(l, c_.run(q::complete_job, {l.id, l.owner, l.fence}).affected() > 0);
}

bool pg_transaction::reschedule_job(const lease_ref& l, millis due_at,
                                    std::string_view payload_json) {
    notice.jobs = true;
    return mark_released(
        l,
        c_.run(q::reschedule_job, {l.id, l.owner, l.fence, due_at, payload_json}).affected() > 0);
}

bool pg_transaction::fail_job(const lease_ref& l, millis due_at) {
    return mark_released(l, c_.run(q::fail_job, {l.id, l.owner, l.fence, due_at}).affected() > 0);
}

std::vector<std::int64_t> pg_transaction::renew_jobs(
    std::string_view owner, const std::vector<std::pair<std::int64_t, std::int64_t>>& leases,
    millis until) {
    return renew(q::renew_job, owner, leases, until);
}

void pg_transaction::delete_jobs_for_task(std::string_view task_id) {
    if (task_id.empty())
        return;
    c_.send(q::delete_jobs_for_task, {task_id});
}

std::optional<millis> pg_transaction::next_job_due() {
    auto r = c_.run(q::next_job_due, {});
    if (!r.rows() || r.is_null(0, 0))
        return std::nullopt;
    return r.i64(0, 0);
}

bool pg_transaction::mark_owner_alive(std::string_view owner, millis until) {
    auto r = c_.run(q::mark_owner_alive, {owner, until});
    return r.rows() == 1 && r.text(0, 0) == "f";  // not inserted: it was known
}

transaction::freed_leases pg_transaction::free_dead_owners(millis now) {
    freed_leases out;
    auto r = c_.run(q::forget_dead_owners, {now});
    for (int i = 0; i < r.rows(); ++i)
        out.owners.push_back(r.text(i, 0));
    if (out.owners.empty())
        return out;
    const std::string owners = array_text(out.owners);
    out.jobs = static_cast<int>(c_.run(q::free_jobs_of, {owners}).affected());
    out.deliveries = static_cast<int>(c_.run(q::free_deliveries_of, {owners}).affected());
    return out;
}

}  // namespace segue::store::pg

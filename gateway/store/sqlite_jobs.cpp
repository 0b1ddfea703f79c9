// The SQLite engine: jobs, claimed under fenced leases (see store.hpp).

#include "gateway/store/sqlite_transaction.hpp"

#include <algorithm>
#include <stdexcept>

namespace segue::store::sqlite {

std::int64_t sqlite_transaction::schedule_job(const job_row& j, bool unique) {
    // A job leased at insert (an engine's hand-off to itself) is no one else's to claim.
    if (j.lease_owner.empty())
        notice.jobs = true;
    if (unique) {
        statement st(c_, q::update_unique_job);
        st.bind_all(j.kind, j.task_id, j.due_at, j.payload_json);
        if (st.step()) {
            const std::int64_t id = st.i64(0);
            st.run();
            return id;
        }
    }
    statement st(c_, q::insert_job);
    st.bind_all(j.kind, j.task_id, j.payload_json, j.due_at, j.lease_owner,
                j.lease_for > 0 ? clock_ms() + j.lease_for : j.lease_until, j.attempts);
    if (!st.step())
        throw store_error("schedule_job: no id returned");
    const std::int64_t id = st.i64(0);
    st.run();
    return id;
}

std::vector<job_row> sqlite_transaction::claim_jobs(std::string_view owner, millis now,
                                                    millis lease_ms, int limit,
                                                    const std::vector<std::int64_t>& exclude,
                                                    job_lane lane) {
    // An empty owner would be indistinguishable from "not leased".
    if (owner.empty())
        throw std::invalid_argument("claim_jobs: empty lease owner");
    std::vector<job_row> out;
    if (limit <= 0)
        return out;
    const std::string excluded = ids_json(exclude);  // bound without a copy: keep it alive
    statement st(c_, detail::claim_jobs_query<q>(lane));
    st.bind_all(owner, now, lease_ms, limit, excluded);
    while (st.step())
        out.push_back(read_job(st));
    // RETURNING gives no order guarantee; callers get oldest due first.
    std::sort(out.begin(), out.end(), [](const job_row& a, const job_row& b) {
        return a.due_at != b.due_at ? a.due_at < b.due_at : a.id < b.id;
    });
    return out;
}

bool sqlite_transaction::complete_job(const lease_ref& l) {
    statement st(c_, q::complete_job);
    st.bind_all(l.id, l.owner, l.fence);
    st.run();
    return mark_released(l, st.changes() > 0);
}

bool sqlite_transaction::reschedule_job(const lease_ref& l, millis due_at,
                                        std::string_view payload_json) {
    statement st(c_, q::reschedule_job);
    st.bind_all(l.id, l.owner, l.fence, due_at, payload_json);
    st.run();
    return mark_released(l, st.changes() > 0);
}

bool sqlite_transaction::fail_job(const lease_ref& l, millis due_at) {
    statement st(c_, q::fail_job);
    st.bind_all(l.id, l.owner, l.fence, due_at);
    st.run();
    return mark_released(l, st.changes() > 0);
}

std::vector<std::int64_t> sqlite_transaction::renew_jobs(
    std::string_view owner, const std::vector<std::pair<std::int64_t, std::int64_t>>& leases,
    millis until) {
    return renew(q::renew_job, owner, leases, until);
}

void sqlite_transaction::delete_jobs_for_task(std::string_view task_id) {
    // "" marks jobs that are not about a task; deleting all of them is never what a caller
    // with an empty task id means.
    if (task_id.empty())
        return;
    statement st(c_, q::delete_jobs_for_task);
    st.bind_all(task_id);
    st.run();
}

std::optional<millis> sqlite_transaction::next_job_due() {
    std::optional<millis> best;
    {
        statement st(c_, q::next_due_free);
        if (st.step())
            best = st.i64(0);
    }
    statement st(c_, q::next_due_leased);
    if (st.step() && !st.is_null(0)) {
        const millis leased = st.i64(0);
        if (!best || leased < *best)
            best = leased;
    }
    return best;
}

}  // namespace segue::store::sqlite

// The PostgreSQL engine: the credits ledger and the per-tenant running totals (side by side with
// sqlite_ledger.cpp). Every write of a tenant's entries, and every balance read in a write unit,
// first locks the tenant's totals row: the running totals (held in particular, which sums per
// task) are computed from a state no other writer is changing meanwhile.

#include <limits>

#include "gateway/store/pg_transaction.hpp"
#include "gateway/store/row_readers.hpp"

namespace segue::store::pg {

ledger_balance pg_transaction::lock_account(std::string_view tenant, millis now) {
    auto r = c_.run(q::lock_account, {tenant, now});
    locked_accounts_.emplace(tenant);
    ledger_balance b;
    b.granted = r.i64(0, 0);
    b.captured = r.i64(0, 1);
    b.held = r.i64(0, 2);
    b.balance = b.granted - b.captured;
    b.available = b.balance - b.held;
    return b;
}

bool pg_transaction::add_ledger_entry(const ledger_row& e) {
    detail::check_ledger_entry(e);
    const millis at = e.created_at != 0 ? e.created_at : now_ms();
    if (!locked_accounts_.contains(e.tenant))
        lock_account(e.tenant, at);
    // The entry and the totals it moves in one statement (pg_sql.cpp, ledger_append): how the
    // task's open amount changes with this entry.
    std::int64_t change = 0;
    if (e.kind == "hold")
        change = e.amount_milli;
    else if (e.kind == "capture" || e.kind == "release")
        change = -e.amount_milli;
    const auto d = detail::account_delta(e, 0);
    return c_.run(q::ledger_append, {e.tenant, e.task_id, e.output, e.kind, e.key, e.amount_milli,
                                     e.provider, e.note, at, change, d.granted, d.captured})
               .rows() > 0;
}

std::optional<ledger_row> pg_transaction::find_ledger_entry(std::string_view tenant,
                                                            std::string_view task_id, int output,
                                                            std::string_view kind,
                                                            std::string_view key) {
    auto r = c_.run(q::find_ledger, {tenant, task_id, output, kind, key});
    if (!r.rows())
        return std::nullopt;
    return detail::read_ledger(row{r, 0});
}

ledger_balance pg_transaction::ledger_totals(std::string_view tenant) {
    if (writer_)
        return lock_account(tenant, now_ms());
    auto r = c_.run(q::ledger_totals, {tenant});
    ledger_balance b;
    if (r.rows()) {
        b.granted = r.i64(0, 0);
        b.captured = r.i64(0, 1);
        b.held = r.i64(0, 2);
    }
    b.balance = b.granted - b.captured;
    b.available = b.balance - b.held;
    return b;
}

task_ledger pg_transaction::ledger_for_task(std::string_view task_id) {
    task_ledger t;
    if (task_id.empty())
        return t;
    auto r = c_.run(q::ledger_for_task, {task_id});
    if (r.rows()) {
        t.hold = r.i64(0, 0);
        t.captured = r.i64(0, 1);
        t.released = r.i64(0, 2);
    }
    return t;
}

std::vector<ledger_row> pg_transaction::list_ledger(std::string_view tenant, int limit,
                                                    std::int64_t before_id) {
    std::vector<ledger_row> out;
    if (limit <= 0)
        return out;
    auto r = c_.run(
        q::list_ledger,
        {tenant, limit, before_id > 0 ? before_id : std::numeric_limits<std::int64_t>::max()});
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(detail::read_ledger(row{r, i}));
    return out;
}

}  // namespace segue::store::pg

// The PostgreSQL engine: the credits ledger and the per-tenant running totals (side by side with
// sqlite_ledger.cpp). Every write of a tenant's entries, and every balance read in a write unit,
// first locks the tenant's totals row: the running totals (held in particular, which sums per
// task) are computed from a state no other writer is changing meanwhile.

#include <limits>

#include "gateway/store/pg_transaction.hpp"
#include "gateway/store/row_readers.hpp"

namespace segue::store::pg {

namespace {

ledger_balance balance_of(const result& r) {
    ledger_balance b;
    b.granted = r.i64(0, 0);
    b.captured = r.i64(0, 1);
    b.held = r.i64(0, 2);
    b.balance = b.granted - b.captured;
    b.available = b.balance - b.held;
    return b;
}

}  // namespace

ledger_balance pg_transaction::lock_account(std::string_view tenant, millis now) {
    if (auto it = locked_accounts_.find(tenant); it != locked_accounts_.end() && it->second)
        return *it->second;
    const auto b = balance_of(c_.run(q::lock_account, {tenant, now}));
    locked_accounts_.insert_or_assign(std::string(tenant), b);
    return b;
}

hold_result pg_transaction::hold_credits(const ledger_row& hold) {
    if (!writer_)
        return transaction::hold_credits(hold);
    hold_result out;
    out.before = ledger_totals(hold.tenant);  // the account locked
    if (out.before.available < hold.amount_milli)
        return out;
    // Whether it was new is not needed (the same hold existing is as good): sent without
    // waiting, its error (if any) comes with the unit's next answer.
    append_entry(hold, false);
    out.held = true;
    return out;
}

bool pg_transaction::add_ledger_entry(const ledger_row& e) {
    return append_entry(e, true);
}

bool pg_transaction::append_entry(const ledger_row& e, bool wait) {
    detail::check_ledger_entry(e);
    const millis at = e.created_at != 0 ? e.created_at : now_ms();
    if (!locked_accounts_.contains(e.tenant))
        lock_account(e.tenant, at);
    locked_accounts_[e.tenant].reset();  // this entry moves the totals
    task_entries_.erase(e.task_id);      // and adds to the task's entries
    // The entry and the totals it moves in one statement (pg_sql.cpp, ledger_append): how the
    // task's open amount changes with this entry.
    std::int64_t change = 0;
    if (e.kind == "hold")
        change = e.amount_milli;
    else if (e.kind == "capture" || e.kind == "release")
        change = -e.amount_milli;
    const auto d = detail::account_delta(e, 0);
    const std::initializer_list<param> params = {e.tenant, e.task_id,      e.output,   e.kind,
                                                 e.key,    e.amount_milli, e.provider, e.note,
                                                 at,       change,         d.granted,  d.captured};
    if (!wait) {
        c_.send(q::ledger_append, params);
        return true;
    }
    return c_.run(q::ledger_append, params).rows() > 0;
}

std::optional<ledger_row> pg_transaction::find_ledger_entry(std::string_view tenant,
                                                            std::string_view task_id, int output,
                                                            std::string_view kind,
                                                            std::string_view key) {
    if (auto it = task_entries_.find(task_id); it != task_entries_.end()) {
        for (const auto& e : it->second)
            if (e.tenant == tenant && e.output == output && e.kind == kind && e.key == key)
                return e;
        return std::nullopt;
    }
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
    if (writer_) {
        auto r = c_.run(q::ledger_of_task, {task_id});
        auto& entries = task_entries_[std::string(task_id)];
        entries.clear();
        for (int i = 0; i < r.rows(); ++i) {
            entries.push_back(detail::read_ledger(row{r, i}));
            const auto& e = entries.back();
            if (e.kind == "hold")
                t.hold += e.amount_milli;
            else if (e.kind == "capture")
                t.captured += e.amount_milli;
            else if (e.kind == "release")
                t.released += e.amount_milli;
        }
        return t;
    }
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

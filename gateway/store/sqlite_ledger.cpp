// The SQLite engine: the credits ledger and the per-tenant running totals.

#include "gateway/store/sqlite_transaction.hpp"

#include <algorithm>
#include <limits>
#include <stdexcept>

namespace segue::store::sqlite {

bool sqlite_transaction::add_ledger_entry(const ledger_row& e) {
    detail::check_ledger_entry(e);
    const millis at = e.created_at != 0 ? e.created_at : now_ms();
    {
        statement st(c_, q::insert_ledger);
        st.bind_all(e.tenant, e.task_id, e.output, e.kind, e.key, e.amount_milli, e.provider,
                    e.note, at);
        st.run();
        if (st.changes() == 0)
            return false;
    }
    // Keep the tenant's running totals (same transaction: they commit or roll back with
    // the entry).
    std::int64_t open_after = 0;
    if (e.kind != "grant" && e.kind != "topup") {
        statement st(c_, q::ledger_task_open);
        st.bind_all(e.tenant, e.task_id);
        open_after = st.step() ? st.i64(0) : 0;
    }
    const auto d = detail::account_delta(e, open_after);
    statement st(c_, q::ledger_account_add);
    st.bind_all(e.tenant, d.granted, d.captured, d.held, at);
    st.run();
    return true;
}

std::optional<ledger_row> sqlite_transaction::find_ledger_entry(std::string_view tenant,
                                                                std::string_view task_id,
                                                                int output, std::string_view kind,
                                                                std::string_view key) {
    statement st(c_, q::find_ledger);
    st.bind_all(tenant, task_id, output, kind, key);
    if (!st.step())
        return std::nullopt;
    return read_ledger(st);
}

ledger_balance sqlite_transaction::ledger_totals(std::string_view tenant) {
    statement st(c_, q::ledger_totals);
    st.bind_all(tenant);
    ledger_balance b;
    if (st.step()) {
        b.granted = st.i64(0);
        b.captured = st.i64(1);
        b.held = st.i64(2);
    }
    b.balance = b.granted - b.captured;
    b.available = b.balance - b.held;
    return b;
}

task_ledger sqlite_transaction::ledger_for_task(std::string_view task_id) {
    task_ledger t;
    if (task_id.empty())  // "" marks grants and top-ups, which are no task's
        return t;
    statement st(c_, q::ledger_for_task);
    st.bind_all(task_id);
    if (st.step()) {
        t.hold = st.i64(0);
        t.captured = st.i64(1);
        t.released = st.i64(2);
    }
    return t;
}

std::vector<ledger_row> sqlite_transaction::list_ledger(std::string_view tenant, int limit,
                                                        std::int64_t before_id) {
    std::vector<ledger_row> out;
    if (limit <= 0)
        return out;
    statement st(c_, q::list_ledger);
    st.bind_all(tenant, limit,
                before_id > 0 ? before_id : std::numeric_limits<std::int64_t>::max());
    while (st.step())
        out.push_back(read_ledger(st));
    return out;
}

}  // namespace segue::store::sqlite

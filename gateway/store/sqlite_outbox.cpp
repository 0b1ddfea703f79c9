// The SQLite engine: the webhook outbox (deliveries, claimed under fenced leases) and gone
// endpoints.

#include "gateway/store/sqlite_transaction.hpp"

#include <algorithm>
#include <stdexcept>

namespace segue::store::sqlite {

void sqlite_transaction::insert_delivery(const delivery_row& d) {
    notice.outbox = true;
    statement st(c_, q::insert_delivery);
    st.bind_all(d.id, d.event_id, d.task_id, d.tenant, d.seq, d.url, d.status, d.attempts,
                d.next_at, d.lease_owner, d.lease_until, d.last_status, d.last_error, d.event_at,
                d.created_at, d.updated_at, d.delivered_at, d.lease_fence);
    st.run();
}

std::vector<delivery_row> sqlite_transaction::claim_deliveries(
    std::string_view owner, millis now, millis lease_ms, int limit,
    const std::vector<std::string>& exclude) {
    if (owner.empty())
        throw std::invalid_argument("claim_deliveries: empty lease owner");
    std::vector<delivery_row> out;
    if (limit <= 0)
        return out;
    {
        const std::string excluded = ids_json(exclude);  // bound without a copy
        statement st(c_, q::claim_deliveries);
        st.bind_all(owner, now, lease_ms, limit, excluded);
        while (st.step())
            out.push_back(read_delivery(st));
    }
    for (auto& d : out) {
        statement ev(c_, q::get_event_by_id);
        ev.bind_all(d.event_id);
        if (ev.step()) {
            d.event_type = ev.text(0);
            d.event_data_json = ev.text(1);
        }
    }
    std::sort(out.begin(), out.end(), [](const delivery_row& a, const delivery_row& b) {
        return a.next_at != b.next_at ? a.next_at < b.next_at : a.id < b.id;
    });
    return out;
}

bool sqlite_transaction::finish_delivery(const delivery_row& d, std::string_view owner) {
    statement st(c_, q::finish_delivery);
    st.bind_all(d.id, owner, d.status, d.attempts, d.next_at, d.last_status, d.last_error,
                d.updated_at, d.delivered_at, d.lease_fence);
    st.run();
    return st.changes() > 0;
}

std::vector<std::string> sqlite_transaction::renew_deliveries(
    std::string_view owner, const std::vector<std::pair<std::string, std::int64_t>>& leases,
    millis until) {
    return renew(q::renew_delivery, owner, leases, until);
}

std::optional<delivery_row> sqlite_transaction::get_delivery(std::string_view id) {
    statement st(c_, q::get_delivery);
    st.bind_all(id);
    if (!st.step())
        return std::nullopt;
    return read_delivery(st);
}

std::vector<delivery_row> sqlite_transaction::list_deliveries(std::string_view tenant,
                                                              std::string_view status,
                                                              std::string_view task_id, int limit,
                                                              std::string_view before_id) {
    statement st(c_, q::list_deliveries);
    st.bind_all(tenant, status, task_id, limit, before_id);
    std::vector<delivery_row> out;
    while (st.step())
        out.push_back(read_delivery(st));
    return out;
}

bool sqlite_transaction::redeliver(std::string_view id, millis now) {
    notice.outbox = true;
    statement st(c_, q::redeliver);
    st.bind_all(id, now);
    st.run();
    return st.changes() > 0;
}

int sqlite_transaction::kill_deliveries_to(std::string_view tenant, std::string_view url,
                                           std::string_view reason, millis now) {
    statement st(c_, q::kill_deliveries_to);
    st.bind_all(tenant, url, reason, now);
    st.run();
    return st.changes();
}

void sqlite_transaction::set_endpoint_gone(std::string_view tenant, std::string_view url, bool gone,
                                           millis now) {
    if (gone) {
        statement st(c_, q::set_endpoint_gone);
        st.bind_all(tenant, url, now);
        st.run();
    } else {
        statement st(c_, q::clear_endpoint_gone);
        st.bind_all(tenant, url);
        st.run();
    }
}

bool sqlite_transaction::endpoint_gone(std::string_view tenant, std::string_view url) {
    statement st(c_, q::endpoint_gone);
    st.bind_all(tenant, url);
    return st.step();
}

std::optional<millis> sqlite_transaction::next_delivery_due() {
    std::optional<millis> best;
    {
        statement st(c_, q::next_delivery_free);
        if (st.step())
            best = st.i64(0);
    }
    statement st(c_, q::next_delivery_leased);
    if (st.step() && !st.is_null(0)) {
        const millis leased = st.i64(0);
        if (!best || leased < *best)
            best = leased;
    }
    return best;
}

delivery_summary sqlite_transaction::summarize_deliveries() {
    statement st(c_, q::summarize_deliveries);
    delivery_summary out;
    if (st.step()) {
        out.pending = st.i64(0);
        out.dead = st.i64(1);
        if (!st.is_null(2))
            out.oldest_pending_event_at = st.i64(2);
    }
    return out;
}

}  // namespace segue::store::sqlite

// The PostgreSQL engine: the webhook outbox (deliveries, claimed under fenced leases with SKIP
// LOCKED) and gone endpoints (side by side with sqlite_outbox.cpp).

#include <stdexcept>

#include "gateway/store/pg_transaction.hpp"
#include "gateway/store/row_readers.hpp"

namespace segue::store::pg {

void pg_transaction::insert_delivery(const delivery_row& d) {
    notice.outbox = true;
    c_.send(q::insert_delivery,
            {d.id, d.event_id, d.task_id, d.tenant, d.seq, d.url, d.status, d.attempts, d.next_at,
             d.lease_owner, d.lease_until, d.last_status, d.last_error, d.event_at, d.created_at,
             d.updated_at, d.delivered_at, d.lease_fence});
}

std::vector<delivery_row> pg_transaction::claim_deliveries(
    std::string_view owner, millis now, millis lease_ms, int limit,
    const std::vector<std::string>& exclude) {
    if (owner.empty())
        throw std::invalid_argument("claim_deliveries: empty lease owner");
    std::vector<delivery_row> out;
    if (limit <= 0)
        return out;
    auto r = c_.run(q::claim_deliveries, {owner, now, lease_ms, limit, array_text(exclude)});
    // The delivery's columns, then the event's type and data (pg_sql.cpp).
    constexpr int event_cols = 18;
    for (int i = 0; i < r.rows(); ++i) {
        auto d = detail::read_delivery(row{r, i});
        d.event_type = r.text(i, event_cols);
        d.event_data_json = r.text(i, event_cols + 1);
        out.push_back(std::move(d));
    }
    return out;
}

bool pg_transaction::finish_delivery(const delivery_row& d, std::string_view owner) {
    return c_.run(q::finish_delivery, {d.id, owner, d.status, d.attempts, d.next_at, d.last_status,
                                       d.last_error, d.updated_at, d.delivered_at, d.lease_fence})
               .affected() > 0;
}

std::vector<std::string> pg_transaction::renew_deliveries(
    std::string_view owner, const std::vector<std::pair<std::string, std::int64_t>>& leases,
    millis until) {
    return renew(q::renew_delivery, owner, leases, until);
}

std::optional<delivery_row> pg_transaction::get_delivery(std::string_view id) {
    auto r = c_.run(q::get_delivery, {id});
    if (!r.rows())
        return std::nullopt;
    return detail::read_delivery(row{r, 0});
}

std::vector<delivery_row> pg_transaction::list_deliveries(std::string_view tenant,
                                                          std::string_view status,
                                                          std::string_view task_id, int limit,
                                                          std::string_view before_id) {
    auto r = c_.run(q::list_deliveries, {tenant, status, task_id, limit, before_id});
    std::vector<delivery_row> out;
    for (int i = 0; i < r.rows(); ++i)
        out.push_back(detail::read_delivery(row{r, i}));
    return out;
}

bool pg_transaction::redeliver(std::string_view id, millis now) {
    notice.outbox = true;
    return c_.run(q::redeliver, {id, now}).affected() > 0;
}

int pg_transaction::kill_deliveries_to(std::string_view tenant, std::string_view url,
                                       std::string_view reason, millis now) {
    return static_cast<int>(c_.run(q::kill_deliveries_to, {tenant, url, reason, now}).affected());
}

void pg_transaction::set_endpoint_gone(std::string_view tenant, std::string_view url, bool gone,
                                       millis now) {
    if (gone)
        c_.send(q::set_endpoint_gone, {tenant, url, now});
    else
        c_.send(q::clear_endpoint_gone, {tenant, url});
}

bool pg_transaction::endpoint_gone(std::string_view tenant, std::string_view url) {
    return c_.run(q::endpoint_gone, {tenant, url}).rows() > 0;
}

std::optional<millis> pg_transaction::next_delivery_due() {
    auto r = c_.run(q::next_delivery_due, {});
    if (!r.rows() || r.is_null(0, 0))
        return std::nullopt;
    return r.i64(0, 0);
}

delivery_summary pg_transaction::summarize_deliveries() {
    auto r = c_.run(q::summarize_deliveries, {});
    delivery_summary out;
    if (r.rows()) {
        out.pending = r.i64(0, 0);
        out.dead = r.i64(0, 1);
        if (!r.is_null(0, 2))
            out.oldest_pending_event_at = r.i64(0, 2);
    }
    return out;
}

}  // namespace segue::store::pg

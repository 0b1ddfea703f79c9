// The PostgreSQL engine: idempotency records and stored files (side by side with
// sqlite_idempotency.cpp).

#include "gateway/store/pg_transaction.hpp"
#include "gateway/store/row_readers.hpp"

namespace segue::store::pg {

std::optional<idempotency_row> pg_transaction::get_idempotency(std::string_view tenant,
                                                               std::string_view key) {
    // The lock is sent with the lookup: the server takes it before it runs the lookup (a
    // statement of its own, whose snapshot sees what the previous holder committed).
    if (writer_)  // keys are visible ASCII: the newline cannot be part of one
        c_.send(q::lock_idempotency_key, {std::string(tenant) + "\n" + std::string(key)});
    auto r = c_.run(q::get_idempotency, {tenant, key});
    if (!r.rows())
        return std::nullopt;
    return detail::read_idempotency(row{r, 0});
}

bool pg_transaction::insert_idempotency(const idempotency_row& r) {
    return c_.run(q::insert_idempotency, {r.tenant, r.key, r.request_hash, r.task_id,
                                          r.response_status, r.response_body, r.created_at})
               .affected() > 0;
}

int pg_transaction::delete_idempotency_before(millis cutoff) {
    return static_cast<int>(c_.run(q::delete_idempotency_before, {cutoff}).affected());
}

void pg_transaction::insert_file(const file_row& f) {
    c_.send(q::insert_file, {f.id, f.tenant, f.task_id, f.kind, f.content_type, f.path, f.size,
                             f.sha256, f.created_at});
}

std::optional<file_row> pg_transaction::get_file(std::string_view id) {
    auto r = c_.run(q::get_file, {id});
    if (!r.rows())
        return std::nullopt;
    return detail::read_file(row{r, 0});
}

std::string pg_transaction::ensure_secret(std::string_view name, std::string_view value,
                                          millis now) {
    // A replica inserting at the same moment waits for the other's commit on the key, then
    // inserts nothing; the select (a statement of its own) then sees the winner's value.
    c_.send(q::insert_secret, {name, value, now});
    auto r = c_.run(q::get_secret, {name});
    if (!r.rows())
        throw store_error("postgres: secret " + std::string(name) + " is missing after its insert");
    return r.text(0, 0);
}

}  // namespace segue::store::pg

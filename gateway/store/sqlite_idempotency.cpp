// The SQLite engine: idempotency records and stored files.

#include "gateway/store/sqlite_transaction.hpp"

namespace segue::store::sqlite {

std::optional<idempotency_row> sqlite_transaction::get_idempotency(std::string_view tenant,
                                                                   std::string_view key) {
    statement st(c_, q::get_idempotency);
    st.bind_all(tenant, key);
    if (!st.step())
        return std::nullopt;
    return read_idempotency(st);
}

bool sqlite_transaction::insert_idempotency(const idempotency_row& r) {
    statement st(c_, q::insert_idempotency);
    st.bind_all(r.tenant, r.key, r.request_hash, r.task_id, r.response_status, r.response_body,
                r.created_at);
    st.run();
    return st.changes() > 0;
}

int sqlite_transaction::delete_idempotency_before(millis cutoff) {
    statement st(c_, q::delete_idempotency_before);
    st.bind_all(cutoff);
    st.run();
    return st.changes();
}

void sqlite_transaction::insert_file(const file_row& f) {
    statement st(c_, q::insert_file);
    st.bind_all(f.id, f.tenant, f.task_id, f.kind, f.content_type, f.path, f.size, f.sha256,
                f.created_at);
    st.run();
}

std::optional<file_row> sqlite_transaction::get_file(std::string_view id) {
    statement st(c_, q::get_file);
    st.bind_all(id);
    if (!st.step())
        return std::nullopt;
    return read_file(st);
}

std::string sqlite_transaction::ensure_secret(std::string_view name, std::string_view value,
                                              millis now) {
    {
        statement st(c_, q::insert_secret);
        st.bind_all(name, value, now);
        st.run();
    }
    statement st(c_, q::get_secret);
    st.bind_all(name);
    if (!st.step())
        throw store_error("sqlite: secret " + std::string(name) + " is missing after its insert");
    return st.text(0);
}

}  // namespace segue::store::sqlite

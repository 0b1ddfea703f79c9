// The SQLite engine's connection and its shared helpers (see sqlite_connection.hpp).

#include "gateway/store/sqlite_connection.hpp"

#include <algorithm>
#include <chrono>

namespace segue::store::sqlite {

millis now_ms() {
    using namespace std::chrono;
    return duration_cast<milliseconds>(system_clock::now().time_since_epoch()).count();
}

[[noreturn]] void fail(sqlite3* db, std::string_view what) {
    std::string msg = "sqlite: ";
    msg += what;
    msg += ": ";
    msg += db != nullptr ? sqlite3_errmsg(db) : "out of memory";
    if (db != nullptr) {
        msg += " (code ";
        msg += std::to_string(sqlite3_extended_errcode(db));
        msg += ")";
    }
    throw store_error(msg);
}

connection::connection(const std::string& path, int busy_timeout_ms) {
    sqlite3* raw = nullptr;
    const int flags = SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_NOMUTEX;
    const int rc = sqlite3_open_v2(path.c_str(), &raw, flags, wal_coalescing_vfs());
    db_.reset(raw);  // owned even on failure: open_v2 may return a handle holding the error
    if (rc != SQLITE_OK)
        fail(raw, "open " + path);
    sqlite3_extended_result_codes(raw, 1);
    if (sqlite3_busy_timeout(raw, std::max(0, busy_timeout_ms)) != SQLITE_OK)
        fail(raw, "busy_timeout");
}

void connection::exec(const char* sql) {
    char* err = nullptr;
    if (sqlite3_exec(db_.get(), sql, nullptr, nullptr, &err) != SQLITE_OK) {
        std::string msg = err != nullptr ? err : sqlite3_errmsg(db_.get());
        sqlite3_free(err);
        throw store_error("sqlite: exec failed: " + msg);
    }
}

std::string connection::query_text(const char* sql) {
    std::string out;
    auto cb = [](void* arg, int n, char** values, char**) -> int {
        if (n > 0 && values[0] != nullptr)
            *static_cast<std::string*>(arg) = values[0];
        return 0;
    };
    char* err = nullptr;
    if (sqlite3_exec(db_.get(), sql, cb, &out, &err) != SQLITE_OK) {
        std::string msg = err != nullptr ? err : sqlite3_errmsg(db_.get());
        sqlite3_free(err);
        throw store_error("sqlite: " + std::string(sql) + ": " + msg);
    }
    return out;
}

void exec_cached(connection& c, q which) {
    statement st(c, which);
    st.run();
}

std::string ids_json(const std::vector<std::int64_t>& ids) {
    std::string out = "[";
    for (auto id : ids) {
        if (out.size() > 1)
            out.push_back(',');
        out += std::to_string(id);
    }
    out.push_back(']');
    return out;
}
std::string ids_json(const std::vector<std::string>& ids) {
    std::string out = "[";
    for (const auto& id : ids) {
        if (out.size() > 1)
            out.push_back(',');
        out.push_back('"');
        for (char c : id)
            if (c != '"' && c != '\\' && static_cast<unsigned char>(c) >= 0x20)
                out.push_back(c);
        out.push_back('"');
    }
    out.push_back(']');
    return out;
}

}  // namespace segue::store::sqlite

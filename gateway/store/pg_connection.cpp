#include "gateway/store/pg_connection.hpp"

#include <cstring>

namespace segue::store::pg {

std::int64_t result::affected() const {
    const char* n = PQcmdTuples(r_.get());
    std::int64_t v = 0;
    if (n && *n)
        std::from_chars(n, n + std::strlen(n), v);
    return v;
}

std::int64_t result::i64(int row, int col) const {
    const char* v = PQgetvalue(r_.get(), row, col);
    const int len = PQgetlength(r_.get(), row, col);
    std::int64_t out = 0;
    auto [end, ec] = std::from_chars(v, v + len, out);
    if (ec != std::errc())
        throw store_error("postgres: not an integer: '" + std::string(v, len) + "'");
    return out;
}

connection::connection(const std::string& url, int statement_timeout_ms,
                       std::string_view app_name) {
    c_ = PQconnectdb(url.c_str());
    if (PQstatus(c_) != CONNECTION_OK) {
        std::string msg = PQerrorMessage(c_);
        while (!msg.empty() && msg.back() == '\n')
            msg.pop_back();
        PQfinish(c_);
        c_ = nullptr;
        throw pg_error("postgres: cannot connect: " + msg, "", true);
    }
    // NOTICEs (e.g. "drop cascades to ...") are not errors: never printed on stderr.
    PQsetNoticeProcessor(
        c_, [](void*, const char*) {}, nullptr);
    query(
        "SELECT set_config('statement_timeout', $1, false), set_config('TimeZone', 'UTC', "
        "false), set_config('application_name', $2, false)",
        {std::to_string(statement_timeout_ms), app_name});
}

connection::~connection() {
    if (c_)
        PQfinish(c_);
}

result connection::check(PGresult* r, const char* what) {
    result res(r);
    const auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    std::string msg = r ? PQresultErrorMessage(r) : PQerrorMessage(c_);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
        msg.pop_back();
    const bool lost = PQstatus(c_) != CONNECTION_OK;
    throw pg_error(std::string("postgres: ") + what + ": " + msg, state ? state : "", lost);
}

void connection::exec(const char* sql) {
    check(PQexec(c_, sql), sql);
}

namespace {

struct bound {
    std::vector<std::string> storage;
    std::vector<const char*> values;
    explicit bound(std::initializer_list<param> params) {
        storage.reserve(params.size());
        values.reserve(params.size());
        for (const auto& p : params)
            storage.emplace_back(p.view());
        for (const auto& s : storage)
            values.push_back(s.c_str());
    }
};

}  // namespace

result connection::run(q which, std::initializer_list<param> params) {
    const auto i = static_cast<std::size_t>(which);
    const std::string name = "q" + std::to_string(i);
    if (!prepared_[i]) {
        check(PQprepare(c_, name.c_str(), sql_of(which), 0, nullptr), sql_of(which));
        prepared_[i] = true;
    }
    bound b(params);
    return check(PQexecPrepared(c_, name.c_str(), static_cast<int>(b.values.size()),
                                b.values.data(), nullptr, nullptr, 0),
                 sql_of(which));
}

result connection::query(const char* sql, std::initializer_list<param> params) {
    bound b(params);
    return check(PQexecParams(c_, sql, static_cast<int>(b.values.size()), nullptr, b.values.data(),
                              nullptr, nullptr, 0),
                 sql);
}

std::string array_text(const std::vector<std::int64_t>& ids) {
    std::string out = "{";
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i)
            out += ',';
        out += std::to_string(ids[i]);
    }
    return out + "}";
}

std::string array_text(const std::vector<std::string>& ids) {
    std::string out = "{";
    for (std::size_t i = 0; i < ids.size(); ++i) {
        if (i)
            out += ',';
        out += '"';
        for (char ch : ids[i]) {
            if (ch == '"' || ch == '\\')
                out += '\\';
            out += ch;
        }
        out += '"';
    }
    return out + "}";
}

}  // namespace segue::store::pg

#include "gateway/store/pg_connection.hpp"

#include <poll.h>

#include <cerrno>
#include <chrono>
#include <cstring>
#include <optional>

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

const std::array<connection_setting, 6> connection_defaults = {{
    {"connect_timeout", "5"},
    {"keepalives", "1"},
    {"keepalives_idle", "10"},
    {"keepalives_interval", "5"},
    {"keepalives_count", "3"},
    {"tcp_user_timeout", "30000"},
}};

const std::array<connection_setting, 4> server_keepalives = {{
    {"tcp_keepalives_idle", "10"},
    {"tcp_keepalives_interval", "5"},
    {"tcp_keepalives_count", "3"},
    {"tcp_user_timeout", "30000"},
}};

PGconn* open_connection(const std::string& url) {
    // Keywords are applied in order, and the URL given as dbname (expanded) overrides what came
    // before it: the defaults go first.
    std::array<const char*, connection_defaults.size() + 2> keywords{};
    std::array<const char*, connection_defaults.size() + 2> values{};
    std::size_t n = 0;
    for (const auto& d : connection_defaults) {
        keywords[n] = d.keyword;
        values[n++] = d.value;
    }
    keywords[n] = "dbname";
    values[n++] = url.c_str();
    keywords[n] = nullptr;
    values[n] = nullptr;
    return PQconnectdbParams(keywords.data(), values.data(), 1);
}

connection::connection(const std::string& url, int statement_timeout_ms, std::string_view app_name)
    : answer_timeout_ms_(answer_timeout_ms(statement_timeout_ms)) {
    c_ = open_connection(url);
    if (PQstatus(c_) != CONNECTION_OK) {
        std::string msg = PQerrorMessage(c_);
        while (!msg.empty() && msg.back() == '\n')
            msg.pop_back();
        PQfinish(c_);
        c_ = nullptr;
        throw pg_error("postgres: cannot connect: " + msg, "", true);
    }
    try {
        set_up(statement_timeout_ms, app_name);
    } catch (...) {
        PQfinish(c_);  // no destructor for an object whose constructor threw
        c_ = nullptr;
        throw;
    }
}

void connection::set_up(int statement_timeout_ms, std::string_view app_name) {
    // NOTICEs (e.g. "drop cascades to ...") are not errors: never printed on stderr.
    PQsetNoticeProcessor(
        c_, [](void*, const char*) {}, nullptr);
    // Sends never block: a server that takes nothing more is waited for within the answer
    // timeout too (flush_within), not for ever.
    if (PQsetnonblocking(c_, 1) != 0)
        fail("nonblocking mode");
    // synchronous_commit on, whatever the server's default: a COMMIT that returned is on the
    // database's disk before the gateway acts on it (calls a provider, answers 202). Off, a
    // database crash can take back a commit a provider call followed: a second generation.
    // The server's side of a connection this process gave up on (no answer in time, across a
    // network that lost it) ends too, and with it its transaction's locks: idle in a
    // transaction longer than the answer timeout, or unheard from over TCP (keepalives,
    // unacknowledged data), instead of the server's default of two hours.
    std::string sql =
        "SELECT set_config('statement_timeout', $1, false), set_config('TimeZone', 'UTC', "
        "false), set_config('application_name', $2, false), "
        "set_config('synchronous_commit', 'on', false), "
        "set_config('idle_in_transaction_session_timeout', $3, false)";
    for (const auto& k : server_keepalives)
        sql += std::string(", set_config('") + k.keyword + "', '" + k.value + "', false)";
    query(sql.c_str(),
          {std::to_string(statement_timeout_ms), app_name, std::to_string(answer_timeout_ms_)});
}

connection::~connection() {
    if (c_)
        PQfinish(c_);
}

pg_error connection::error_of(PGresult* r, const char* what) const {
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    std::string msg = r ? PQresultErrorMessage(r) : PQerrorMessage(c_);
    while (!msg.empty() && (msg.back() == '\n' || msg.back() == ' '))
        msg.pop_back();
    const bool lost = PQstatus(c_) != CONNECTION_OK;
    return pg_error(std::string("postgres: ") + what + ": " + msg, state ? state : "", lost);
}

result connection::check(PGresult* r, const char* what) {
    result res(r);
    const auto st = r ? PQresultStatus(r) : PGRES_FATAL_ERROR;
    if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK)
        return res;
    throw error_of(r, what);
}

void connection::fail(const char* what) {
    // A send that failed leaves the pipeline out of step: the connection is not used again.
    broken_ = true;
    pending_.clear();
    throw pg_error(std::string("postgres: ") + what + ": " + PQerrorMessage(c_), "", true);
}

namespace {

using wait_clock = std::chrono::steady_clock;

wait_clock::time_point deadline_in(int ms) {
    return ms > 0 ? wait_clock::now() + std::chrono::milliseconds(ms)
                  : wait_clock::time_point::max();
}

// One wait of at most 100 ms for `events` on the connection's socket, then whatever arrived is
// read (also when poll saw nothing: TLS may hold bytes the socket no longer shows). False when
// the deadline passed, or the socket cannot be polled.
bool wait_a_moment(PGconn* c, short events, wait_clock::time_point until) {
    const auto now = wait_clock::now();
    if (now >= until)
        return false;
    const auto left = std::chrono::duration_cast<std::chrono::milliseconds>(until - now).count();
    pollfd p{PQsocket(c), events, 0};
    if (::poll(&p, 1, static_cast<int>(std::min<std::int64_t>(left, 100))) < 0 && errno != EINTR)
        return false;
    return true;
}

}  // namespace

bool flush_within(PGconn* c, int answer_ms) {
    const auto until = deadline_in(answer_ms);
    for (;;) {
        const int r = PQflush(c);
        if (r <= 0)
            return true;  // all sent; or failed, which the next result reports
        if (!wait_a_moment(c, POLLIN | POLLOUT, until))
            return false;
        if (PQconsumeInput(c) == 0)
            return true;  // lost: the next result reports it
    }
}

bool wait_for_answer(PGconn* c, int answer_ms) {
    const auto until = deadline_in(answer_ms);
    while (PQisBusy(c) == 1) {
        if (!wait_a_moment(c, POLLIN, until))
            return false;
        if (PQconsumeInput(c) == 0)
            return true;  // lost: PQgetResult reports it
    }
    return true;
}

void connection::gave_up(const char* what, const char* doing, int ms) {
    broken_ = true;
    pending_.clear();
    throw pg_error(std::string("postgres: ") + what + ": " + doing + " within " +
                       std::to_string(ms) + " ms (the server, or the way to it, stopped answering)",
                   "", true);
}

void connection::flush(const char* what) {
    if (!flush_within(c_, answer_timeout_ms_))
        gave_up(what, "could not send", answer_timeout_ms_);
}

void connection::await_answer(const char* what, int budget_ms) {
    if (!wait_for_answer(c_, budget_ms))
        gave_up(what, "no answer", budget_ms);
}

PGresult* connection::last_result(const char* what) {
    std::unique_ptr<PGresult, void (*)(PGresult*)> last(nullptr, [](PGresult* r) {
        if (r)
            PQclear(r);
    });
    flush(what);
    for (;;) {
        await_answer(what, answer_timeout_ms_);
        PGresult* r = PQgetResult(c_);
        if (!r)
            break;
        last.reset(r);
        if (PQstatus(c_) == CONNECTION_BAD)
            break;
    }
    return last.release();
}

void connection::exec(const char* sql) {
    if (!pending_.empty()) {
        send(sql);
        drain(false);
        return;
    }
    if (PQsendQuery(c_, sql) != 1)
        fail(sql);
    check(last_result(sql), sql);
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

namespace {

const std::string& name_of(q which) {
    static const auto names = [] {
        std::array<std::string, static_cast<std::size_t>(q::count_)> n;
        for (std::size_t i = 0; i < n.size(); ++i)
            n[i] = "q" + std::to_string(i);
        return n;
    }();
    return names[static_cast<std::size_t>(which)];
}

}  // namespace

result connection::run(q which, std::initializer_list<param> params) {
    if (!pending_.empty()) {
        send(which, params);
        return drain(false);
    }
    const auto i = static_cast<std::size_t>(which);
    const std::string& name = name_of(which);
    if (!prepared_[i]) {
        if (PQsendPrepare(c_, name.c_str(), sql_of(which), 0, nullptr) != 1)
            fail(sql_of(which));
        check(last_result(sql_of(which)), sql_of(which));
        prepared_[i] = true;
    }
    bound b(params);
    if (PQsendQueryPrepared(c_, name.c_str(), static_cast<int>(b.values.size()), b.values.data(),
                            nullptr, nullptr, 0) != 1)
        fail(sql_of(which));
    return check(last_result(sql_of(which)), sql_of(which));
}

result connection::query(const char* sql, std::initializer_list<param> params) {
    sync();
    bound b(params);
    if (PQsendQueryParams(c_, sql, static_cast<int>(b.values.size()), nullptr, b.values.data(),
                          nullptr, nullptr, 0) != 1)
        fail(sql);
    return check(last_result(sql), sql);
}

void connection::enter_pipeline() {
    if (broken_)
        fail("pipeline on a broken connection");
    if (PQpipelineStatus(c_) == PQ_PIPELINE_OFF && PQenterPipelineMode(c_) != 1)
        fail("cannot enter pipeline mode");
}

void connection::send(q which, std::initializer_list<param> params) {
    enter_pipeline();
    const auto i = static_cast<std::size_t>(which);
    const std::string& name = name_of(which);
    if (!prepared_[i]) {
        if (PQsendPrepare(c_, name.c_str(), sql_of(which), 0, nullptr) != 1)
            fail(sql_of(which));
        prepared_[i] = true;
        pending_.push_back({sql_of(which), static_cast<int>(i)});
    }
    bound b(params);
    if (PQsendQueryPrepared(c_, name.c_str(), static_cast<int>(b.values.size()), b.values.data(),
                            nullptr, nullptr, 0) != 1)
        fail(sql_of(which));
    pending_.push_back({sql_of(which)});
    ask_for_answer(sql_of(which));
}

void connection::send(const char* sql) {
    enter_pipeline();
    if (PQsendQueryParams(c_, sql, 0, nullptr, nullptr, nullptr, nullptr, 0) != 1)
        fail(sql);
    pending_.push_back({sql});
    ask_for_answer(sql);
}

void connection::ask_for_answer(const char* what) {
    // The server would hold a pipeline's answers until its sync; asked to flush after each
    // statement, it sends each as it is ready, so every wait for one is bounded by one
    // statement's time (answer_timeout_ms), whatever the pipeline's length.
    if (PQsendFlushRequest(c_) != 1)
        fail(what);
}

void connection::sync() {
    if (!pending_.empty())
        drain(false);
}

void connection::sync_discarding_errors() {
    if (!pending_.empty())
        drain(true);
}

result connection::drain(bool discard_errors) {
    if (PQpipelineSync(c_) != 1)
        fail("pipeline sync");
    flush("pipeline sync");
    result last;
    std::optional<pg_error> first;
    for (const auto& s : pending_) {
        // Each statement's answer: its result(s), then a null.
        bool answered = false;
        for (;;) {
            await_answer(s.what, answer_timeout_ms_);  // per answer: ask_for_answer
            PGresult* r = PQgetResult(c_);
            if (!r)
                break;
            answered = true;
            const auto st = PQresultStatus(r);
            if (st == PGRES_COMMAND_OK || st == PGRES_TUPLES_OK) {
                last = result(r);
                continue;
            }
            // Skipped after an earlier error (PGRES_PIPELINE_ABORTED) or failed.
            if (s.prepared >= 0)
                prepared_[static_cast<std::size_t>(s.prepared)] = false;
            if (st != PGRES_PIPELINE_ABORTED && !first)
                first = error_of(r, s.what);
            PQclear(r);
            last = result();
        }
        if (!answered)
            fail(s.what);  // the connection broke
    }
    await_answer("pipeline sync", answer_timeout_ms_);
    PGresult* r = PQgetResult(c_);
    const bool synced = r && PQresultStatus(r) == PGRES_PIPELINE_SYNC;
    if (r)
        PQclear(r);
    if (!synced || PQexitPipelineMode(c_) != 1)
        fail("pipeline sync");
    pending_.clear();
    if (first && (!discard_errors || first->connection_lost()))
        throw *first;
    return last;
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

// Internal to the PostgreSQL engine (included only by gateway/store/pg_*.cpp): one libpq
// connection, its prepared statements and results.
//
// Statements are prepared on first use per connection (by their q id, see pg_sql.hpp) and run
// with text parameters: every value is bound, never spliced into SQL text.

#pragma once

#include "gateway/store/pg_api.hpp"

#include <algorithm>
#include <array>
#include <charconv>
#include <cstdint>
#include <memory>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/store/pg_sql.hpp"
#include "gateway/store/store.hpp"

namespace segue::store::pg {

// A failed command: libpq's message and the SQLSTATE (five characters, "" if none, e.g. when
// the connection was lost).
class pg_error : public store_error {
  public:
    pg_error(const std::string& what, std::string sqlstate, bool connection_lost)
        : store_error(what), sqlstate_(std::move(sqlstate)), lost_(connection_lost) {}
    const std::string& sqlstate() const noexcept { return sqlstate_; }
    // The server aborted the unit to let another proceed: running it again is safe and
    // likely to succeed (serialization failure, deadlock).
    bool retryable() const noexcept { return sqlstate_ == "40001" || sqlstate_ == "40P01"; }
    // A lock wait ran past lock_timeout (55P03).
    bool lock_timeout() const noexcept { return sqlstate_ == "55P03"; }
    // Canceled (57014: statement_timeout), a lock not available, too many connections (53300),
    // the server starting up (57P03), or the connection lost (a unit that failed so was
    // rolled back: a lost COMMIT's answer is reported as another error, pg_store.cpp).
    bool busy() const noexcept override {
        return lost_ || sqlstate_ == "57014" || sqlstate_ == "55P03" || sqlstate_ == "53300" ||
               sqlstate_ == "57P03";
    }
    bool connection_lost() const noexcept { return lost_; }

  private:
    std::string sqlstate_;
    bool lost_;
};

class result {
  public:
    result() = default;
    explicit result(PGresult* r) : r_(r, PQclear) {}
    int rows() const { return r_ ? PQntuples(r_.get()) : 0; }
    std::int64_t affected() const;  // rows changed by an INSERT/UPDATE/DELETE
    bool is_null(int row, int col) const { return PQgetisnull(r_.get(), row, col) != 0; }
    std::string text(int row, int col) const {
        return std::string(PQgetvalue(r_.get(), row, col),
                           static_cast<std::size_t>(PQgetlength(r_.get(), row, col)));
    }
    std::int64_t i64(int row, int col) const;
    int i32(int row, int col) const { return static_cast<int>(i64(row, col)); }
    bool boolean(int row, int col) const { return PQgetvalue(r_.get(), row, col)[0] == 't'; }

  private:
    std::shared_ptr<PGresult> r_;
};

// One row of a result, for the row readers (row_readers.hpp).
struct row {
    const result& r;
    int i;
    std::string text(int c) const { return r.text(i, c); }
    std::int64_t i64(int c) const { return r.i64(i, c); }
    int i32(int c) const { return r.i32(i, c); }
};

// A parameter in text form; integers are formatted into the object itself.
class param {
  public:
    param(std::string_view s) : s_(s) {}                           // NOLINT: implicit by design
    param(const std::string& s) : s_(s) {}                         // NOLINT
    param(const char* s) : s_(s) {}                                // NOLINT
    param(std::int64_t v) { set(v); }                              // NOLINT
    param(int v) { set(v); }                                       // NOLINT
    param(bool v) : s_(v ? "true" : "false") {}                    // NOLINT
    param(std::uint64_t v) { set(static_cast<std::int64_t>(v)); }  // NOLINT
    std::string_view view() const { return s_; }

  private:
    void set(std::int64_t v) {
        auto [end, ec] = std::to_chars(buf_.data(), buf_.data() + buf_.size(), v);
        s_ = std::string_view(buf_.data(), static_cast<std::size_t>(end - buf_.data()));
    }
    std::array<char, 24> buf_{};
    std::string_view s_;
};

// Opens a libpq connection to `url` (a URL or key=value pairs) with the settings that make a
// database that stops answering an error instead of a wait without end, each applied unless the
// URL sets it itself (connection_defaults). The caller checks PQstatus and PQfinishes it.
PGconn* open_connection(const std::string& url);

// Those settings, libpq's keyword and value, in the order they are given to libpq (before the
// URL, which overrides any of them).
//  - connect_timeout 5: a connect, or a session's start-up, that gets no answer in 5 s fails (a
//    server that is frozen or a host that is gone; libpq's default is to wait for ever, and the
//    kernel's for about two minutes).
//  - keepalives on, after 10 s idle, every 5 s, 3 unanswered probes (TCP only): a host that
//    went away without a word is noticed in about 30 s (Linux ends it at tcp_user_timeout
//    then), not the kernel's two hours.
// They override PGCONNECT_TIMEOUT and a service file's settings (libpq applies those only to
// what is not given): set them in the URL instead.
//  - tcp_user_timeout 30000: data the other end has not acknowledged in 30 s ends the
//    connection (TCP only; the kernel's default retransmits for about 15 minutes).
struct connection_setting {
    const char* keyword;
    const char* value;
};
extern const std::array<connection_setting, 6> connection_defaults;
// The same for the server's side of every session (set at its start, by the store and the blob
// store alike): it probes and gives up on a client gone silent as the client does on it.
extern const std::array<connection_setting, 4> server_keepalives;

// How long a connection waits for an answer before it gives the connection up as lost: the
// server's own statement_timeout cancels a statement long before, so no answer by then means
// the server or the path to it stopped (a frozen VM, a stalled disk under the server, a
// network that drops packets without a reset). 0 (statement_timeout 0: migrations) waits for
// ever.
constexpr int answer_timeout_ms(int statement_timeout_ms) {
    return statement_timeout_ms > 0 ? std::min(statement_timeout_ms, 0x7fffffff - 10'000) + 10'000
                                    : 0;
}

// Waits until libpq can hand out the next result of `c` without blocking (or the connection
// failed, which PQgetResult then reports): true; false when no answer came within `answer_ms`
// (0 waits for ever).
bool wait_for_answer(PGconn* c, int answer_ms);
// For a nonblocking connection: sends what libpq holds for it, reading what the server sends
// meanwhile; true once all is sent (or the connection failed, which the next result reports),
// false if the server took nothing more for `answer_ms` (0 waits for ever).
bool flush_within(PGconn* c, int answer_ms);

class connection {
  public:
    // Connects (throws pg_error) and sets the session up: statement_timeout (0 = none), UTC,
    // application_name. Every wait for an answer is bounded by answer_timeout_ms: one that
    // runs past it throws a pg_error with connection_lost(), and the connection is not used
    // again (whether a statement it was waiting for took effect is unknown, as for any lost
    // connection).
    connection(const std::string& url, int statement_timeout_ms, std::string_view app_name);
    ~connection();
    connection(const connection&) = delete;
    connection& operator=(const connection&) = delete;

    // One or more statements in the simple protocol, no parameters (schema, BEGIN, COMMIT).
    // With statements sent and not yet answered (send): one statement only, sent after them.
    void exec(const char* sql);
    // The prepared statement `which` with these parameters (prepared on first use), after any
    // statements sent before it, in one round trip: the first error among them is thrown.
    result run(q which, std::initializer_list<param> params);
    // An ad-hoc parameterised statement (not prepared): migrations and rare queries.
    result query(const char* sql, std::initializer_list<param> params);

    // Pipelining (libpq pipeline mode): a statement whose answer the caller does not read is
    // sent without waiting for it. The server runs statements in the order sent, each with its
    // own snapshot, exactly as if each had waited; only the answers come later, with the next
    // run, exec or sync, which throws the first error among them (the statements after a
    // failed one are skipped, as a failed statement aborts the transaction anyway).
    void send(q which, std::initializer_list<param> params);
    // Sends one parameterless statement (SAVEPOINT u, BEGIN ...) the same way.
    void send(const char* sql);
    // Waits for the answers of everything sent; throws the first error.
    void sync();
    // As sync, but an error of a statement is dropped (the caller rolls back past it anyway);
    // a lost connection still throws.
    void sync_discarding_errors();
    bool pending() const { return !pending_.empty(); }

    // False once the connection broke, or its pipeline lost step with the server.
    bool ok() const { return !broken_ && PQstatus(c_) == CONNECTION_OK; }
    PGconn* get() const { return c_; }

  private:
    result check(PGresult* r, const char* what);
    // Returns once libpq has an answer (or the connection failed, which PQgetResult then
    // reports); throws, the connection broken, when none came within `budget_ms`.
    void await_answer(const char* what, int budget_ms);
    // Sends what libpq holds; throws, the connection broken, when the server takes nothing
    // more within the answer timeout.
    void flush(const char* what);
    [[noreturn]] void gave_up(const char* what, const char* doing, int ms);
    void ask_for_answer(const char* what);
    void set_up(int statement_timeout_ms, std::string_view app_name);
    // The last result of the command just sent (as PQexec's), each wait bounded.
    PGresult* last_result(const char* what);
    pg_error error_of(PGresult* r, const char* what) const;
    [[noreturn]] void fail(const char* what);
    void enter_pipeline();
    struct sent {
        const char* what;
        int prepared = -1;  // a PQsendPrepare of this statement index (undone if it failed)
    };
    // Sends sync, reads every answer up to it and leaves pipeline mode: the last statement's
    // result, or the first error (thrown unless `discard_errors`).
    result drain(bool discard_errors);
    PGconn* c_ = nullptr;
    std::vector<sent> pending_;  // what was sent and not yet answered, in order
    bool broken_ = false;
    int answer_timeout_ms_ = 0;
    std::array<bool, static_cast<std::size_t>(q::count_)> prepared_{};
};

// A JSON array of ids for `= ANY(...)`: PostgreSQL array text, e.g. {1,2,3} or {"a","b"}.
std::string array_text(const std::vector<std::int64_t>& ids);
std::string array_text(const std::vector<std::string>& ids);

}  // namespace segue::store::pg

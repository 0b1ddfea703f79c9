// The PostgreSQL blob backend: a blob is one `blobs` row (size, SHA-256, chunk size) and its
// bytes in `blob_chunks` rows of chunk_size bytes (1 MiB), so every replica reads every file
// with nothing but the database.
//
// A put writes the chunks and then the blobs row in one transaction: nobody sees a half-written
// blob, and a put over an existing key replaces it atomically (the blobs row is locked first,
// so puts of one key queue up). A read fetches one chunk per statement, on a pooled connection
// held only for that statement (a slow client never holds a connection), and each fetch checks
// that the blob still has the SHA-256 it had when opened: a blob replaced mid-read is an error,
// never a mix of two. Neither direction ever holds more than a chunk in memory. Chunks are
// stored uncompressed (STORAGE EXTERNAL): audio does not compress.
//
// A restarted server leaves every pooled connection dead. An operation whose connection turns
// out to be dead runs once more on a new connection (the dead one is closed, and so are the idle
// ones: they died with it) when nothing of it can have taken effect: a read, or a put or remove
// whose transaction ended before its COMMIT was sent (the server rolled it back). A COMMIT whose
// answer is lost is an error, not redone: it may have committed, and a put or remove run again
// could undo another replica's put of the same key made in between.

#include <fcntl.h>
#include <poll.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>
#include "gateway/store/pg_api.hpp"

#include <algorithm>
#include <array>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <cstring>
#include <mutex>
#include <optional>
#include <utility>
#include <vector>

#include "gateway/log/log.hpp"
#include "gateway/store/blob_internal.hpp"
#include "gateway/store/pg_connection.hpp"
#include "gateway/util/crypto.hpp"

namespace segue::store::blob_detail {
namespace {

// Tables created once, by whichever replica gets there first (an advisory lock serializes
// replicas starting together). Chunks are stored out of line and uncompressed.
constexpr const char* schema_sql = R"sql(
BEGIN;
SELECT pg_advisory_xact_lock(hashtext('segue_blobs'));
CREATE TABLE IF NOT EXISTS blobs (
    key TEXT PRIMARY KEY,
    size BIGINT NOT NULL,
    sha256 TEXT NOT NULL DEFAULT '',
    chunk_size INT NOT NULL,
    created_at BIGINT NOT NULL
);
DO $$
BEGIN
    IF to_regclass('blob_chunks') IS NULL THEN
        CREATE TABLE blob_chunks (
            key TEXT NOT NULL,
            n INT NOT NULL,
            data BYTEA NOT NULL,
            PRIMARY KEY (key, n)
        );
        ALTER TABLE blob_chunks ALTER COLUMN data SET STORAGE EXTERNAL;
    END IF;
END
$$;
COMMIT;
)sql";

struct statement {
    const char* name;
    const char* sql;
    int params;
};

// Prepared on every connection when it is opened.
constexpr std::array statements{
    // Locks the key for this put (a concurrent put of the same key waits here). The row is
    // invisible to others until the commit, which comes after blob_done has filled it in.
    statement{"blob_claim",
              "INSERT INTO blobs (key, size, sha256, chunk_size, created_at) "
              "VALUES ($1, -1, '', 0, 0) ON CONFLICT (key) DO UPDATE SET size = -1",
              1},
    statement{"blob_clear", "DELETE FROM blob_chunks WHERE key = $1", 1},
    statement{"blob_chunk_put", "INSERT INTO blob_chunks (key, n, data) VALUES ($1, $2, $3)", 3},
    statement{"blob_done",
              "UPDATE blobs SET size = $2, sha256 = $3, chunk_size = $4, created_at = $5 "
              "WHERE key = $1",
              5},
    statement{"blob_stat", "SELECT size, sha256, chunk_size FROM blobs WHERE key = $1", 1},
    // One chunk, only while the blob is still the one the reader opened.
    statement{"blob_chunk_get",
              "SELECT c.data FROM blob_chunks c JOIN blobs b ON b.key = c.key "
              "WHERE c.key = $1 AND c.n = $2 AND b.sha256 = $3 AND b.chunk_size = $4",
              4},
    statement{"blob_delete", "DELETE FROM blobs WHERE key = $1", 1},
};

using pg_result = std::unique_ptr<PGresult, void (*)(PGresult*)>;

std::int64_t now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::string trimmed(const char* message) {
    std::string m = message ? message : "";
    while (!m.empty() && (m.back() == '\n' || m.back() == ' '))
        m.pop_back();
    return m;
}

// Waits for the last result of the command just sent on `c` (as PQexec's). If no answer comes
// within `answer_ms` (0: no bound), the socket is shut down: libpq then reports the connection
// lost (CONNECTION_BAD), as after any break, so the callers' handling of a lost connection
// applies (the lease is marked dead; an operation that did nothing runs again on a new one).
PGresult* last_result(PGconn* c, int answer_ms) {
    const auto give_up = [&] {
        log::warn("postgres blob store: no answer in time; the connection is given up",
                  {{"answer_timeout_ms", answer_ms}});
        ::shutdown(PQsocket(c), SHUT_RDWR);
        PQconsumeInput(c);
    };
    if (!pg::flush_within(c, answer_ms))
        give_up();
    PGresult* last = nullptr;
    for (;;) {
        if (PQstatus(c) != CONNECTION_BAD && !pg::wait_for_answer(c, answer_ms))
            give_up();
        PGresult* r = PQgetResult(c);
        if (!r)
            break;
        if (last)
            PQclear(last);
        last = r;
        if (PQstatus(c) == CONNECTION_BAD)
            break;
    }
    return last;
}

blob_result<PGconn*> connect_pg(const std::string& url, int statement_timeout_ms) {
    // The store's settings for a database that stops answering (connect_timeout, keepalives).
    PGconn* c = pg::open_connection(url);
    if (PQstatus(c) != CONNECTION_OK) {
        auto e = make_error(blob_errc::backend, "blob store: cannot connect to PostgreSQL: " +
                                                    trimmed(PQerrorMessage(c)));
        PQfinish(c);
        return e;
    }
    // Notices ("relation already exists, skipping") are not for the log.
    PQsetNoticeProcessor(
        c, [](void*, const char*) {}, nullptr);
    // Sends never block: a chunk (1 MiB) that a stopped server does not take is given up on
    // within the answer timeout too (last_result).
    if (PQsetnonblocking(c, 1) != 0) {
        auto e = make_error(blob_errc::backend, "blob store: cannot set up a PostgreSQL session: " +
                                                    trimmed(PQerrorMessage(c)));
        PQfinish(c);
        return e;
    }
    // A file's chunks are durable before a task commit refers to them (as the store's own
    // sessions, pg_connection.cpp), whatever the server's default; statements are bounded by
    // the store's statement_timeout, and answers by pg::answer_timeout_ms of it.
    // As the store's sessions (pg_connection.cpp): the server's side of a connection given up
    // on ends too, and its locks with it.
    std::string setup = "SET synchronous_commit = on; SET statement_timeout = " +
                        std::to_string(statement_timeout_ms) +
                        "; SET idle_in_transaction_session_timeout = " +
                        std::to_string(pg::answer_timeout_ms(statement_timeout_ms));
    for (const auto& k : pg::server_keepalives)
        setup += std::string("; SET ") + k.keyword + " = " + k.value;
    PGresult* r = PQsendQuery(c, setup.c_str()) == 1
                      ? last_result(c, pg::answer_timeout_ms(statement_timeout_ms))
                      : nullptr;
    const bool ok = PQresultStatus(r) == PGRES_COMMAND_OK;
    PQclear(r);
    if (!ok) {
        auto e = make_error(blob_errc::backend, "blob store: cannot set up a PostgreSQL session: " +
                                                    trimmed(PQerrorMessage(c)));
        PQfinish(c);
        return e;
    }
    return c;
}

// Whether a statement failed because its connection is gone (the server restarted or ended the
// session), not because of the statement: SQLSTATE class 08 (connection exception) and 57P01-03
// (administrator or crash shutdown, cannot connect now) come before the session ends.
bool connection_lost(PGconn* c, const PGresult* r) {
    if (PQstatus(c) == CONNECTION_BAD)
        return true;
    const char* state = r ? PQresultErrorField(r, PG_DIAG_SQLSTATE) : nullptr;
    if (!state)
        return false;
    const std::string_view s(state);
    return s.starts_with("08") || s == "57P01" || s == "57P02" || s == "57P03";
}

// Connections opened on demand up to a limit, reused, dropped when broken. Thread-safe.
class pg_pool {
  public:
    pg_pool(std::string url, int max, int statement_timeout_ms)
        : url_(std::move(url)),
          max_(std::max(1, max)),
          statement_timeout_ms_(statement_timeout_ms) {}
    int answer_ms() const { return pg::answer_timeout_ms(statement_timeout_ms_); }
    ~pg_pool() {
        for (auto* c : idle_)
            PQfinish(c);
    }

    // A connection for one caller; returned to the pool when the lease goes.
    class lease {
      public:
        lease(pg_pool* pool, PGconn* c) : pool_(pool), conn_(c) {}
        lease(lease&& o) noexcept
            : pool_(o.pool_), conn_(std::exchange(o.conn_, nullptr)), dead_(o.dead_) {}
        lease& operator=(lease&&) = delete;
        ~lease() {
            if (conn_)
                pool_->give_back(conn_, dead_);
        }
        PGconn* get() const { return conn_; }
        int answer_ms() const { return pool_->answer_ms(); }
        // The connection is gone: it is closed when given back, with every idle one.
        void mark_dead() { dead_ = true; }

      private:
        pg_pool* pool_;
        PGconn* conn_;
        bool dead_ = false;
    };

    // An idle connection if there is one, else a new one; `fresh` always opens a new one (a
    // retry after a dead connection must not get another connection as old as that one).
    blob_result<lease> acquire(bool fresh = false) {
        PGconn* spare = nullptr;
        {
            std::unique_lock lock(mu_);
            cv_.wait(lock, [&] { return !idle_.empty() || open_ < max_; });
            if (!idle_.empty() && !fresh) {
                PGconn* c = idle_.back();
                idle_.pop_back();
                return lease(this, c);
            }
            if (open_ < max_) {
                ++open_;  // a slot, taken before the (slow) connect outside the lock
            } else {
                spare = idle_.back();  // closed to make room: its slot is the new one's
                idle_.pop_back();
            }
        }
        if (spare)
            PQfinish(spare);
        // A connect that failed a moment ago (the server is down, or frozen: each try then
        // costs connect_timeout) is not tried again by every caller queued behind it: they
        // fail at once with its error, so an upload during an outage is answered in seconds
        // rather than after its turn in a queue of 5 s connects.
        {
            std::lock_guard lock(mu_);
            if (failed_at_ && std::chrono::steady_clock::now() - *failed_at_ < recent_failure) {
                --open_;
                cv_.notify_one();
                return failed_;
            }
        }
        auto c = connect();
        std::lock_guard lock(mu_);
        if (!c) {
            --open_;
            cv_.notify_one();
            failed_at_ = std::chrono::steady_clock::now();
            failed_ = c.error();
            return c.error();
        }
        failed_at_.reset();
        return lease(this, *c);
    }

  private:
    blob_result<PGconn*> connect() {
        auto opened = connect_pg(url_, statement_timeout_ms_);
        if (!opened)
            return opened.error();
        PGconn* c = *opened;
        for (const auto& s : statements) {
            pg_result r(PQsendPrepare(c, s.name, s.sql, s.params, nullptr) == 1
                            ? last_result(c, answer_ms())
                            : nullptr,
                        PQclear);
            if (PQresultStatus(r.get()) != PGRES_COMMAND_OK) {
                auto e =
                    make_error(blob_errc::backend, std::string("blob store: prepare ") + s.name +
                                                       ": " + trimmed(PQerrorMessage(c)));
                PQfinish(c);
                return e;
            }
        }
        return c;
    }

    // A broken connection (or one left inside a transaction) is closed, not reused. A dead one
    // takes the idle ones with it: a restarted server ended them all, and each would cost an
    // operation a failed first try.
    void give_back(PGconn* c, bool dead) {
        const bool reusable =
            !dead && PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) == PQTRANS_IDLE;
        std::vector<PGconn*> closing;
        {
            std::lock_guard lock(mu_);
            if (reusable)
                idle_.push_back(c);
            else
                closing.push_back(c);
            if (dead) {
                closing.insert(closing.end(), idle_.begin(), idle_.end());
                idle_.clear();
            }
            open_ -= static_cast<int>(closing.size());
            cv_.notify_all();
        }
        if (dead)
            log::warn("postgres blob store: a pooled connection was lost; closing the idle ones",
                      {{"closed", closing.size()}});
        for (auto* d : closing)
            PQfinish(d);
    }

    std::string url_;
    int max_;
    int statement_timeout_ms_;
    static constexpr std::chrono::seconds recent_failure{2};
    std::optional<std::chrono::steady_clock::time_point> failed_at_;  // the last failed connect
    blob_error failed_;                                               // and its error
    std::mutex mu_;
    std::condition_variable cv_;
    std::vector<PGconn*> idle_;
    int open_ = 0;  // connections idle or leased
};

// Parameters of one prepared statement: text unless given a length (binary).
struct params {
    std::vector<const char*> values;
    std::vector<int> lengths;
    std::vector<int> formats;
    std::vector<std::string> keep;  // storage for numbers turned into text

    params& text(std::string_view s) {
        keep.emplace_back(s);
        return raw(nullptr, 0, 0);
    }
    params& binary(const char* data, std::size_t size) {
        return raw(data, static_cast<int>(size), 1);
    }

  private:
    params& raw(const char* v, int len, int fmt) {
        values.push_back(v);
        lengths.push_back(len);
        formats.push_back(fmt);
        return *this;
    }

  public:
    // Pointers into `keep` are taken last: the vector may have moved while it grew.
    void fix() {
        std::size_t k = 0;
        for (std::size_t i = 0; i < values.size(); ++i)
            if (formats[i] == 0)
                values[i] = keep[k++].c_str();
    }
};

// Runs a prepared statement on the lease's connection; results in binary when `binary_result`.
pg_result run(pg_pool::lease& conn, const char* name, params& p, bool binary_result = false) {
    p.fix();
    PGconn* c = conn.get();
    if (PQsendQueryPrepared(c, name, static_cast<int>(p.values.size()), p.values.data(),
                            p.lengths.data(), p.formats.data(), binary_result ? 1 : 0) != 1)
        return pg_result(nullptr, PQclear);
    return pg_result(last_result(c, conn.answer_ms()), PQclear);
}

bool ok(const pg_result& r) {
    const auto s = PQresultStatus(r.get());
    return s == PGRES_COMMAND_OK || s == PGRES_TUPLES_OK;
}

blob_error backend_error(std::string_view key, std::string_view step, PGconn* c) {
    return make_error(blob_errc::backend, "blob " + std::string(key) + ": " + std::string(step) +
                                              ": " + trimmed(PQerrorMessage(c)));
}

pg_result exec(PGconn* c, const char* sql, int answer_ms) {
    if (PQsendQuery(c, sql) != 1)
        return pg_result(nullptr, PQclear);
    return pg_result(last_result(c, answer_ms), PQclear);
}
pg_result exec(pg_pool::lease& conn, const char* sql) {
    return exec(conn.get(), sql, conn.answer_ms());
}

// The error of a failed statement of an operation. If the connection was lost it is marked
// dead, and `redo` says whether the operation may run again: `undone` when nothing of it can
// have taken effect (a read, or a transaction whose COMMIT was not sent).
blob_error step_error(pg_pool::lease& conn, const pg_result& r, std::string_view key,
                      std::string_view step, bool& redo, bool undone = true) {
    auto e = backend_error(key, step, conn.get());
    if (connection_lost(conn.get(), r.get())) {
        conn.mark_dead();
        redo = undone;
        if (!undone)
            e.message += " (the connection was lost: whether it took effect is unknown)";
    }
    return e;
}

// Ends the failed transaction of a live connection, so that it can be reused.
void roll_back(pg_pool::lease& conn) {
    PGconn* c = conn.get();
    if (PQstatus(c) == CONNECTION_OK && PQtransactionStatus(c) != PQTRANS_IDLE)
        exec(conn, "ROLLBACK");
}

// Runs `attempt(lease, redo)` on a pooled connection. If it fails with `redo` set (its
// connection was dead, and nothing of it took effect) it runs once more, on a new connection.
template <class F>
auto with_retry(pg_pool& pool, F&& attempt)
    -> decltype(attempt(std::declval<pg_pool::lease&>(), std::declval<bool&>())) {
    for (int n = 0;; ++n) {
        auto conn = pool.acquire(/*fresh=*/n > 0);
        if (!conn)
            return conn.error();
        bool redo = false;
        auto r = attempt(*conn, redo);
        if (r || !redo || n > 0)
            return r;
    }
}

// What blob_stat found.
struct blob_meta {
    std::uint64_t size = 0;
    std::string sha256;
    int chunk_size = 0;
};

class pg_store;

class pg_reader final : public blob_reader {
  public:
    pg_reader(std::shared_ptr<pg_pool> pool, std::string key, blob_meta meta)
        : pool_(std::move(pool)), key_(std::move(key)), meta_(std::move(meta)) {}
    std::uint64_t size() const override { return meta_.size; }
    blob_result<std::size_t> read(std::span<char> into) override {
        if (pos_ >= meta_.size || into.empty())
            return std::size_t{0};
        const auto chunk = static_cast<std::uint64_t>(meta_.chunk_size);
        const auto n = static_cast<int>(pos_ / chunk);
        if (n != current_n_) {
            if (auto f = fetch(n); !f)
                return f.error();
        }
        const auto offset = static_cast<std::size_t>(pos_ - static_cast<std::uint64_t>(n) * chunk);
        const auto length = static_cast<std::size_t>(PQgetlength(current_.get(), 0, 0));
        if (offset >= length)
            return make_error(blob_errc::changed,
                              "blob " + key_ + ": chunk " + std::to_string(n) + " is short");
        const std::size_t take = std::min(into.size(), length - offset);
        std::memcpy(into.data(), PQgetvalue(current_.get(), 0, 0) + offset, take);
        pos_ += take;
        return take;
    }
    blob_result<void> seek(std::uint64_t offset) override {
        if (offset > meta_.size)
            return make_error(blob_errc::io, "blob " + key_ + ": offset beyond the end");
        pos_ = offset;
        return {};
    }

  private:
    blob_result<void> fetch(int n) {
        current_.reset();
        current_n_ = -1;
        auto got =
            with_retry(*pool_, [&](pg_pool::lease& conn, bool& redo) -> blob_result<pg_result> {
                params p;
                p.text(key_)
                    .text(std::to_string(n))
                    .text(meta_.sha256)
                    .text(std::to_string(meta_.chunk_size));
                pg_result r = run(conn, "blob_chunk_get", p, /*binary_result=*/true);
                if (!ok(r))
                    return step_error(conn, r, key_, "read chunk " + std::to_string(n), redo);
                return std::move(r);
            });
        if (!got)
            return got.error();
        if (PQntuples(got->get()) != 1)
            return make_error(blob_errc::changed,
                              "blob " + key_ + " was replaced or removed while being read");
        current_ = std::move(*got);
        current_n_ = n;
        return {};
    }

    std::shared_ptr<pg_pool> pool_;
    std::string key_;
    blob_meta meta_;
    std::uint64_t pos_ = 0;
    pg_result current_{nullptr, PQclear};  // the chunk being read (binary result)
    int current_n_ = -1;
};

class pg_store final : public blob_store {
  public:
    explicit pg_store(const blob_options& o)
        : pool_(
              std::make_shared<pg_pool>(o.pg_url, o.pg_max_connections, o.pg_statement_timeout_ms)),
          chunk_size_(o.chunk_size),
          cache_(o.dir + "/cache", o.cache_ttl) {
        if (chunk_size_ == 0 || chunk_size_ > (64u << 20))
            throw std::runtime_error("blob store: chunk size must be 1 byte to 64 MiB");
        // A connection of its own: the pool's prepare statements on tables made here.
        auto conn = connect_pg(o.pg_url, o.pg_statement_timeout_ms);
        if (!conn)
            throw std::runtime_error(conn.error().message);
        std::unique_ptr<PGconn, void (*)(PGconn*)> c(*conn, PQfinish);
        if (!ok(exec(c.get(), schema_sql, pool_->answer_ms())))
            throw std::runtime_error("blob store: cannot create the blob tables: " +
                                     trimmed(PQerrorMessage(c.get())));
    }

    std::string_view backend() const override { return "postgres"; }

    blob_result<std::uint64_t> put(std::string_view key, const std::string& local,
                                   put_mode mode) override {
        if (auto why = check_blob_key(key); !why.empty())
            return make_error(blob_errc::invalid_key, why);
        const std::string k(key);
        const int fd = ::open(local.c_str(), O_RDONLY | O_CLOEXEC);
        if (fd < 0)
            return errno_error("blob " + k + ": open " + local, errno);
        fd_closer close_fd{fd};
        auto size = with_retry(*pool_, [&](pg_pool::lease& conn, bool& redo) {
            auto r = write_chunks(conn, k, fd, local, redo);
            if (!r)
                roll_back(conn);
            return r;
        });
        if (!size)
            return size;
        if (mode == put_mode::take)
            ::unlink(local.c_str());
        return size;
    }

    blob_result<std::unique_ptr<blob_reader>> open(std::string_view key) override {
        auto meta = stat(key);
        if (!meta)
            return meta.error();
        return std::unique_ptr<blob_reader>(new pg_reader(pool_, std::string(key), *meta));
    }

    blob_result<local_blob> materialize(std::string_view key) override {
        auto meta = stat(key);
        if (!meta)
            return meta.error();
        const std::string k(key);
        // Named by content: the copy of a replaced blob is a different file.
        return cache_.get(meta->sha256, meta->size,
                          [&](const std::string& temp) { return copy_out(k, *meta, temp); });
    }

    blob_result<bool> remove(std::string_view key) override {
        if (auto why = check_blob_key(key); !why.empty())
            return make_error(blob_errc::invalid_key, why);
        const std::string k(key);
        return with_retry(*pool_, [&](pg_pool::lease& conn, bool& redo) -> blob_result<bool> {
            if (auto r = exec(conn, "BEGIN"); !ok(r))
                return step_error(conn, r, k, "begin", redo);
            // The blobs row first: it locks the key against a put running at the same time.
            params p1;
            p1.text(k);
            pg_result deleted = run(conn, "blob_delete", p1);
            if (!ok(deleted)) {
                auto e = step_error(conn, deleted, k, "remove", redo);
                roll_back(conn);
                return e;
            }
            params p2;
            p2.text(k);
            if (auto r = run(conn, "blob_clear", p2); !ok(r)) {
                auto e = step_error(conn, r, k, "remove chunks", redo);
                roll_back(conn);
                return e;
            }
            if (auto r = exec(conn, "COMMIT"); !ok(r)) {
                auto e = step_error(conn, r, k, "commit", redo, /*undone=*/false);
                roll_back(conn);
                return e;
            }
            return std::strtoll(PQcmdTuples(deleted.get()), nullptr, 10) > 0;
        });
    }

  private:
    // The chunks and the blobs row, in one transaction, from the start of the file (a second
    // try reads it again).
    blob_result<std::uint64_t> write_chunks(pg_pool::lease& conn, const std::string& key, int fd,
                                            const std::string& local, bool& redo) {
        if (::lseek(fd, 0, SEEK_SET) < 0)
            return errno_error("blob " + key + ": seek " + local, errno);
        if (auto r = exec(conn, "BEGIN"); !ok(r))
            return step_error(conn, r, key, "begin", redo);
        for (const char* step : {"blob_claim", "blob_clear"}) {
            params p;
            p.text(key);
            if (auto r = run(conn, step, p); !ok(r))
                return step_error(conn, r, key, step, redo);
        }
        std::vector<char> buf(chunk_size_);
        util::sha256_stream sha;
        std::uint64_t total = 0;
        for (int n = 0;; ++n) {
            const long got = read_full(fd, buf.data(), buf.size());
            if (got < 0)
                return errno_error("blob " + key + ": read " + local, errno);
            if (got == 0)
                break;
            sha.update(std::string_view(buf.data(), static_cast<std::size_t>(got)));
            params p;
            p.text(key).text(std::to_string(n)).binary(buf.data(), static_cast<std::size_t>(got));
            if (auto r = run(conn, "blob_chunk_put", p); !ok(r))
                return step_error(conn, r, key, "write chunk " + std::to_string(n), redo);
            total += static_cast<std::uint64_t>(got);
            if (static_cast<std::size_t>(got) < buf.size())
                break;
        }
        params p;
        p.text(key)
            .text(std::to_string(total))
            .text(sha.hex_digest())
            .text(std::to_string(chunk_size_))
            .text(std::to_string(now_ms()));
        if (auto r = run(conn, "blob_done", p); !ok(r))
            return step_error(conn, r, key, "blob_done", redo);
        if (auto r = exec(conn, "COMMIT"); !ok(r))
            return step_error(conn, r, key, "commit", redo, /*undone=*/false);
        return total;
    }

    // The blobs row.
    blob_result<blob_meta> stat(std::string_view key) {
        if (auto why = check_blob_key(key); !why.empty())
            return make_error(blob_errc::invalid_key, why);
        return with_retry(*pool_, [&](pg_pool::lease& conn, bool& redo) -> blob_result<blob_meta> {
            params p;
            p.text(key);
            pg_result r = run(conn, "blob_stat", p);
            if (!ok(r))
                return step_error(conn, r, key, "stat", redo);
            if (PQntuples(r.get()) == 0)
                return make_error(blob_errc::not_found, "blob " + std::string(key) + " not found");
            blob_meta m;
            m.size = std::strtoull(PQgetvalue(r.get(), 0, 0), nullptr, 10);
            m.sha256 = PQgetvalue(r.get(), 0, 1);
            m.chunk_size = std::atoi(PQgetvalue(r.get(), 0, 2));
            // The SHA-256 also names the cached copy: 64 hex digits, nothing else.
            const bool hex = m.sha256.size() == 64 &&
                             m.sha256.find_first_not_of("0123456789abcdef") == std::string::npos;
            if (m.chunk_size <= 0 || !hex)
                return make_error(blob_errc::backend,
                                  "blob " + std::string(key) + " has a malformed blobs row");
            return m;
        });
    }

    // The blob, chunk by chunk, into a new local file.
    blob_result<void> copy_out(const std::string& key, const blob_meta& meta,
                               const std::string& path) {
        const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640);
        if (fd < 0)
            return errno_error("blob " + key + ": create " + path, errno);
        fd_closer close_fd{fd};
        pg_reader reader(pool_, key, meta);
        std::vector<char> buf(chunk_size_);
        for (;;) {
            auto n = reader.read(buf);
            if (!n)
                return n.error();
            if (*n == 0)
                return {};
            if (!write_all(fd, buf.data(), *n))
                return errno_error("blob " + key + ": write " + path, errno);
        }
    }

    std::shared_ptr<pg_pool> pool_;
    std::size_t chunk_size_;
    blob_cache cache_;
};

}  // namespace

std::unique_ptr<blob_store> open_postgres(const blob_options& options) {
    return std::make_unique<pg_store>(options);
}

}  // namespace segue::store::blob_detail

// The PostgreSQL engine of the durable store (see store.hpp for the contract; side by side with
// sqlite_store.cpp).
//
// Threads, each owning one connection:
//  - `writers` writer threads share one queue of write units. Each takes up to max_batch units
//    and runs them in one transaction, each inside its own SAVEPOINT (a unit that throws rolls
//    back alone), then one COMMIT for all: PostgreSQL's group commit does the rest across
//    connections and replicas. Isolation is READ COMMITTED plus explicit row locks where a
//    unit reads before it writes (pg_sql.cpp says which); a unit the server aborts to break a
//    deadlock or a serialization conflict is rolled back to its savepoint and run again in a
//    later batch, which is why units must have no effects outside the transaction. Only a
//    batch's first unit may wait for a lock as long as it takes: a later unit waits holding
//    the locks of the units before it, which another replica's batch may be waiting for while
//    holding the one it wants (two tenants' accounts taken in opposite orders are enough). So
//    later units wait at most later_unit_lock_timeout, then are rolled back to their savepoint
//    and run again at the head of the next batch, where they may wait; a cycle between batches
//    breaks within that timeout instead of PostgreSQL's deadlock_timeout (1 s), and rolling
//    back one victim unit never leaves its batch holding locks the next unit trips over. A lost
//    connection before COMMIT runs the whole batch again on a new connection; a COMMIT whose
//    answer is lost fails its units (the outcome is unknown: the callers' leases and
//    idempotency make a retry safe).
//  - `readers` reader threads run read units, each in a READ ONLY REPEATABLE READ transaction
//    (one consistent snapshot; a commit is visible to every read submitted after its completion
//    ran, because completions run only after COMMIT returned).
//  - one listener (LISTEN on "segue:<schema>"): commits of other processes arrive as
//    notifications, sent by their writers in the committing transaction (so they arrive only if
//    it commits), and are handed to the commit listener marked remote.

#include <poll.h>
#include <pthread.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <condition_variable>
#include <deque>
#include <mutex>
#include <random>
#include <thread>

#include "gateway/log/log.hpp"
#include "gateway/store/pg_transaction.hpp"
#include "gateway/store/store.hpp"
#include "gateway/store/work_queue.hpp"

namespace segue::store {

namespace pg {
void migrate(connection& c);  // pg_schema.cpp
}  // namespace pg

namespace {

using detail::call_done;
using detail::name_thread;
using pg::connection;
using pg::pg_error;
using pg::pg_transaction;

// Notification payloads: "<sender>|<flags>|<task>,<task>,..." where flags has 'o' (a delivery
// became due), 'j' (a job was scheduled). At most ~7.9 KB each (PostgreSQL's limit is 8000).
std::vector<std::string> encode_notice(const std::string& sender, const commit_notice& n) {
    std::string head = sender + "|";
    if (n.outbox)
        head += 'o';
    if (n.jobs)
        head += 'j';
    head += '|';
    std::vector<std::string> out;
    std::string cur = head;
    for (const auto& t : n.event_tasks) {
        if (cur.size() + t.size() + 1 > 7900) {
            out.push_back(std::move(cur));
            cur = head;
        }
        if (cur.size() > head.size())
            cur += ',';
        cur += t;
    }
    out.push_back(std::move(cur));
    return out;
}

// False if the payload is not one of ours or came from `self`.
bool decode_notice(std::string_view payload, std::string_view self, commit_notice& n) {
    const auto a = payload.find('|');
    if (a == std::string_view::npos)
        return false;
    const auto b = payload.find('|', a + 1);
    if (b == std::string_view::npos || payload.substr(0, a) == self)
        return false;
    const auto flags = payload.substr(a + 1, b - a - 1);
    n.outbox = n.outbox || flags.find('o') != std::string_view::npos;
    n.jobs = n.jobs || flags.find('j') != std::string_view::npos;
    auto rest = payload.substr(b + 1);
    while (!rest.empty()) {
        const auto c = rest.find(',');
        n.event_tasks.emplace_back(rest.substr(0, c));
        rest = c == std::string_view::npos ? std::string_view() : rest.substr(c + 1);
    }
    return true;
}

class pg_store final : public store {
  public:
    explicit pg_store(const postgres_options& o) : o_(o) {
        if (o_.url.empty())
            throw store_error("postgres: no connection URL (storage.postgres.url)");
        o_.writers = std::max(1, o_.writers);
        o_.readers = std::max(1, o_.readers);
        o_.max_batch = std::max(1, o_.max_batch);
        std::mt19937_64 rng{std::random_device{}()};
        sender_ = o_.name + "-" + std::to_string(rng() % 1'000'000'000ull);
        {
            connection c(o_.url, o_.statement_timeout_ms, o_.name);
            pg::migrate(c);
            // One channel per schema: deployments (or tests) sharing a database by schema do
            // not wake each other.
            channel_ = ("segue:" + c.query("SELECT current_schema()", {}).text(0, 0)).substr(0, 63);
            char* quoted = PQescapeIdentifier(c.get(), channel_.data(), channel_.size());
            if (!quoted)
                throw store_error("postgres: cannot quote the channel name " + channel_);
            listen_sql_ = std::string("LISTEN ") + quoted;
            PQfreemem(quoted);
        }
        // Connections first, so a bad URL fails the open, not a thread later.
        for (int i = 0; i < o_.writers * lanes; ++i)
            writer_conns_.push_back(connect());
        for (int i = 0; i < o_.readers; ++i)
            reader_conns_.push_back(connect());
        for (int i = 0; i < o_.writers * lanes; ++i)
            threads_.emplace_back([this, i] {
                name_thread(i % lanes == 0 ? "pg-writer" : "pg-writer-work");
                writer_loop(writer_conns_[static_cast<std::size_t>(i)],
                            writes_[static_cast<std::size_t>(i % lanes)]);
            });
        for (int i = 0; i < o_.readers; ++i)
            threads_.emplace_back([this, i] {
                name_thread("pg-reader");
                reader_loop(reader_conns_[static_cast<std::size_t>(i)]);
            });
        threads_.emplace_back([this] {
            name_thread("pg-give-up");
            give_up_loop();
        });
        if (o_.listen) {
            // Listening before the open returns: a commit made after it is heard. If that
            // fails, the threads already running are stopped before the error goes on (a
            // joinable std::thread destroyed would end the process, and open_postgres would
            // never try again).
            try {
                std::unique_ptr<connection> lc = connect();
                lc->exec(listen_sql_.c_str());
                listener_ = std::thread([this, c = std::move(lc)]() mutable {
                    name_thread("pg-listen");
                    listen_loop(std::move(c));
                });
            } catch (...) {
                close();
                throw;
            }
        }
    }

    ~pg_store() override { close(); }

    void submit_write(unit fn, completion done, write_lane lane) override {
        writes_[static_cast<std::size_t>(lane)].submit(std::move(fn), std::move(done));
    }
    void submit_write_first(unit fn, completion done, write_lane lane) override {
        writes_[static_cast<std::size_t>(lane)].submit_first(std::move(fn), std::move(done));
    }
    void submit_read(unit fn, completion done) override {
        reads_.submit(std::move(fn), std::move(done));
    }
    void submit_write_by(unit fn, completion done, write_lane lane,
                         clock::time_point give_up) override {
        writes_[static_cast<std::size_t>(lane)].submit(std::move(fn), std::move(done), give_up);
    }
    void submit_read_by(unit fn, completion done, clock::time_point give_up) override {
        reads_.submit(std::move(fn), std::move(done), give_up);
    }

    void set_commit_listener(std::function<void(const commit_notice&)> fn) override {
        std::lock_guard lk(listener_mutex_);
        commit_listener_ = std::move(fn);
    }

    void close() override {
        for (auto& w : writes_)
            w.stop();
        reads_.stop();
        {
            std::lock_guard lk(give_up_mutex_);
            stopping_.store(true);
        }
        give_up_cv_.notify_all();
        const auto self = std::this_thread::get_id();
        std::lock_guard lk(close_mutex_);
        for (auto& t : threads_)
            if (t.joinable() && t.get_id() != self)
                t.join();
        if (listener_.joinable() && listener_.get_id() != self)
            listener_.join();
    }

    std::string unreachable() const override {
        std::lock_guard lk(reach_mutex_);
        return unreachable_;
    }

    store_stats stats() const override {
        store_stats s;
        s.commits = commits_.load(std::memory_order_relaxed);
        s.units = units_.load(std::memory_order_relaxed);
        s.conflicts = conflicts_.load(std::memory_order_relaxed);
        s.put_off = put_off_.load(std::memory_order_relaxed);
        return s;
    }

  private:
    std::unique_ptr<connection> connect() {
        return std::make_unique<connection>(o_.url, o_.statement_timeout_ms, o_.name);
    }

    // What the last attempt to connect (by any thread) found: "" when it connected. A server
    // out of connection slots (max_connections) is up: the connections the store has work, so
    // neither readiness nor the API's fail-fast turns on that (found by a black-box run: both
    // replicas refused everything while each had working connections).
    void reached(std::string why) {
        if (why.find("too many clients") != std::string::npos ||
            why.find("remaining connection slots are reserved") != std::string::npos)
            return;
        std::lock_guard lk(reach_mutex_);
        unreachable_ = std::move(why);
        out_of_reach_.store(!unreachable_.empty(), std::memory_order_relaxed);
    }
    // A unit that ran on a connection shows the database reachable, whatever another thread's
    // last connect found.
    void worked() {
        if (out_of_reach_.load(std::memory_order_relaxed))
            reached({});
    }

    // A working connection in `c`, reconnecting with backoff while the store is open.
    bool ensure_connected(std::unique_ptr<connection>& c) {
        auto wait = std::chrono::milliseconds(50);
        while (!c || !c->ok()) {
            try {
                c = connect();
                reached({});
                log::info("postgres: reconnected", {});
                return true;
            } catch (const std::exception& e) {
                if (stopping_.load())
                    return false;
                reached(e.what());
                log::warn("postgres: cannot connect; retrying", {{"error", e.what()}});
                std::this_thread::sleep_for(wait);
                wait = std::min(wait * 2, std::chrono::milliseconds(2000));
            }
        }
        return true;
    }

    // A unit the database aborted (deadlock, serialization failure) this many times fails.
    static constexpr int max_tries = 8;
    // How long a unit after a batch's first may wait for a lock before it is put off to the
    // next batch (see the top of this file): long enough for a lock held by a batch that is
    // committing, short against leases and deadlock_timeout.
    static constexpr const char* later_unit_lock_timeout = "SET LOCAL lock_timeout = '50ms'";

    // A writer (and a reader) connects before it takes units, so that while the database is
    // out of reach they wait in the queue, where give_up_loop fails those a client waits for
    // when their time is up, rather than in the hands of a thread that is reconnecting.
    void writer_loop(std::unique_ptr<connection>& c, detail::work_queue& q) {
        std::vector<detail::queued_unit> batch;
        while (q.wait()) {
            ensure_connected(c);  // false only when closing: run_batch fails the batch then
            if (!q.take(batch, static_cast<std::size_t>(o_.max_batch)))
                break;
            run_batch(c, q, batch);
            batch.clear();
        }
    }

    // Every 100 ms, fails the queued units whose give-up time passed (submit_write_by): a
    // request is answered (503) while the database is out of reach, instead of being held until
    // it is back (by when its client has long left, and a task it gave up on would be made).
    static std::exception_ptr gave_up_error() {
        return std::make_exception_ptr(store_gave_up_error(
            "postgres: the unit's time to wait for the database ran out; it was not run"));
    }

    void give_up_loop() {
        const auto err = gave_up_error();
        std::size_t given_up = 0;
        auto last_said = clock::now() - std::chrono::seconds(1);
        std::unique_lock lk(give_up_mutex_);
        while (!stopping_.load()) {
            give_up_cv_.wait_for(lk, std::chrono::milliseconds(100));
            lk.unlock();
            const auto now = clock::now();
            std::size_t n = reads_.give_up_expired(now, err);
            for (auto& w : writes_)
                n += w.give_up_expired(now, err);
            // Said once a second at most (an outage gives up units every round).
            given_up += n;
            if (given_up > 0 && now - last_said >= std::chrono::seconds(1)) {
                log::warn("postgres: units given up unrun, their time spent in the queue",
                          {{"units", static_cast<std::int64_t>(given_up)},
                           {"unreachable", unreachable()}});
                given_up = 0;
                last_said = now;
            }
            lk.lock();
        }
    }

    // Fails (with `err`) the units out of tries, gives up those past their give-up time (a
    // request's), and requeues the others.
    void again_or_fail(detail::work_queue& q, std::vector<detail::queued_unit>& items,
                       const std::exception_ptr& err) {
        std::vector<detail::queued_unit> again;
        const auto now = clock::now();
        for (auto& it : items) {
            if (++it.tries >= max_tries || stopping_.load())
                call_done(it.done, err);
            else if (it.give_up < now)
                call_done(it.done, gave_up_error());
            else
                again.push_back(std::move(it));
        }
        if (!again.empty())
            q.requeue_front(again);
    }

    void run_batch(std::unique_ptr<connection>& c, detail::work_queue& q,
                   std::vector<detail::queued_unit>& items) {
        if (!ensure_connected(c)) {
            for (auto& it : items)
                call_done(it.done, std::make_exception_ptr(store_error("store closed")));
            return;
        }
        enum class outcome { ok, failed, retry, put_off };
        std::vector<outcome> result(items.size(), outcome::ok);
        std::vector<std::exception_ptr> errs(items.size());
        pg_transaction txn(*c, true);
        try {
            // The savepoint of each unit ("RELEASE u", "SAVEPOINT u" between two units;
            // ROLLBACK TO u, which keeps u, after a failed one) is pipelined (connection::send)
            // with the unit's statements, and so are the unit's statements whose answers it
            // does not read: they cost no round trip of their own. The unit ends with a sync,
            // so an error of any of them is the unit's, rolled back to its savepoint as if the
            // statement had waited for its answer.
            c->send("BEGIN");
            c->send("SAVEPOINT u");
            for (std::size_t i = 0; i < items.size(); ++i) {
                if (i == 1 || (i > 0 && result[i - 1] == outcome::ok)) {
                    c->send("RELEASE u");
                    if (i == 1)  // set at the top level, where no ROLLBACK TO u undoes it
                        c->send(later_unit_lock_timeout);
                    c->send("SAVEPOINT u");
                }
                txn.begin_unit();
                try {
                    items[i].fn(txn);
                    txn.end_unit();
                    c->sync();
                } catch (const pg_error& e) {
                    if (e.connection_lost())
                        throw;
                    errs[i] = std::current_exception();
                    if (i > 0 && e.lock_timeout())
                        result[i] = outcome::put_off;  // not a failure: it may wait next time
                    else
                        result[i] = e.retryable() && items[i].tries + 1 < max_tries
                                        ? outcome::retry
                                        : outcome::failed;
                    c->sync_discarding_errors();
                    c->exec("ROLLBACK TO u");
                } catch (...) {
                    errs[i] = std::current_exception();
                    result[i] = outcome::failed;
                    c->sync_discarding_errors();  // what it sent is rolled back with it
                    c->exec("ROLLBACK TO u");
                }
            }
            // The COMMIT waits without limit, like a batch's first unit: a commit that NOTIFYs
            // takes PostgreSQL's notify queue lock and holds it until its WAL is flushed, so
            // under load 50 ms is too short for it and the whole batch failed with an unknown
            // outcome ("canceling statement due to lock timeout" on COMMIT).
            if (items.size() > 1)
                c->send("SET LOCAL lock_timeout = 0");
            merge_notice(txn.notice, {});  // sorts and dedupes event_tasks
            if (!txn.notice.empty())
                for (const auto& payload : encode_notice(sender_, txn.notice))
                    c->send(pg::q::notify, {channel_, payload});
            c->sync();  // COMMIT's answer alone tells whether the batch committed
        } catch (const std::exception& e) {
            // The connection (or the transaction) broke before COMMIT: nothing was committed,
            // so every unit of the batch runs again, on a new connection if needed.
            log::warn("postgres: write batch aborted before commit; running it again",
                      {{"error", e.what()}, {"units", static_cast<std::int64_t>(items.size())}});
            const auto err = std::current_exception();
            if (c->ok())
                try_exec(*c, "ROLLBACK");
            else
                c.reset();
            again_or_fail(q, items, err);
            return;
        }
        try {
            c->exec("COMMIT");
        } catch (const std::exception& e) {
            // The COMMIT's answer is lost: it may or may not have committed.
            log::error("postgres: COMMIT failed; its units' outcome is unknown",
                       {{"error", e.what()}});
            const auto err = std::make_exception_ptr(
                store_error(std::string("postgres: commit outcome unknown: ") + e.what()));
            if (!c->ok())
                c.reset();
            for (std::size_t i = 0; i < items.size(); ++i)
                call_done(items[i].done, result[i] == outcome::ok ? err : errs[i]);
            return;
        }
        commits_.fetch_add(1, std::memory_order_relaxed);
        worked();
        if (!txn.notice.empty())
            tell_listener(txn.notice);  // sorted and unique (before the NOTIFY, above)
        std::vector<detail::queued_unit> again;
        std::uint64_t ok = 0, put_off = 0, conflicts = 0;
        for (std::size_t i = 0; i < items.size(); ++i) {
            switch (result[i]) {
                case outcome::ok:
                    ++ok;
                    call_done(items[i].done, nullptr);
                    break;
                case outcome::failed:
                    call_done(items[i].done, errs[i]);
                    break;
                case outcome::retry:
                    ++conflicts;
                    ++items[i].tries;
                    again.push_back(std::move(items[i]));
                    break;
                case outcome::put_off:
                    ++put_off;
                    again.push_back(std::move(items[i]));
                    break;
            }
        }
        units_.fetch_add(ok, std::memory_order_relaxed);
        put_off_.fetch_add(put_off, std::memory_order_relaxed);
        conflicts_.fetch_add(conflicts, std::memory_order_relaxed);
        if (!again.empty())
            q.requeue_front(again);
    }

    static void try_exec(connection& c, const char* sql) noexcept {
        try {
            c.sync_discarding_errors();
            c.exec(sql);
        } catch (...) {
        }
    }

    void reader_loop(std::unique_ptr<connection>& c) {
        std::vector<detail::queued_unit> one;
        while (reads_.wait()) {
            ensure_connected(c);  // see writer_loop
            if (!reads_.take(one, 1))
                break;
            detail::queued_unit it = std::move(one.front());
            one.clear();
            run_read(c, it);
        }
    }

    // Runs a read, and again on a new connection if its connection was lost (a read is safe
    // to run again; the other readers' connections are likely as dead as this one was, so the
    // retry stays on this thread). If no new connection can be made at once, the read goes back
    // to the queue's front, where it waits for the database (or its give-up time).
    void run_read(std::unique_ptr<connection>& c, detail::queued_unit& it) {
        for (;;) {
            if (!c || !c->ok()) {
                if (stopping_.load()) {
                    call_done(it.done, std::make_exception_ptr(store_error("store closed")));
                    return;
                }
                if (!connect_once(c)) {
                    std::vector<detail::queued_unit> back;
                    back.push_back(std::move(it));
                    reads_.requeue_front(back);
                    return;
                }
            }
            std::exception_ptr err;
            bool lost = false;
            try {
                // Sent with the unit's first statement (connection::send).
                c->send("BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY");
                pg_transaction txn(*c, false);
                it.fn(txn);
                c->exec("COMMIT");
                worked();
            } catch (const pg_error& e) {
                err = std::current_exception();
                lost = e.connection_lost();
            } catch (...) {
                err = std::current_exception();
            }
            if (err && c && c->ok())
                try_exec(*c, "ROLLBACK");
            if (!lost) {
                call_done(it.done, err);
                return;
            }
            c.reset();
            if (it.give_up < clock::now()) {  // a request's time to wait ran out meanwhile
                call_done(it.done, gave_up_error());
                return;
            }
            if (++it.tries >= 3 || stopping_.load()) {
                call_done(it.done, err);
                return;
            }
        }
    }

    // One attempt to connect (no waiting, no retry): ensure_connected's loop is for a thread
    // that holds no unit.
    bool connect_once(std::unique_ptr<connection>& c) {
        try {
            c = connect();
            reached({});
            return true;
        } catch (const std::exception& e) {
            reached(e.what());
            log::warn("postgres: cannot connect; the unit waits in the queue",
                      {{"error", e.what()}});
            return false;
        }
    }

    void tell_listener(const commit_notice& n) {
        std::function<void(const commit_notice&)> fn;
        {
            std::lock_guard lk(listener_mutex_);
            fn = commit_listener_;
        }
        if (!fn)
            return;
        try {
            fn(n);
        } catch (const std::exception& e) {
            log::error("store commit listener threw", {{"error", e.what()}});
        }
    }

    void listen_loop(std::unique_ptr<connection> c) {
        while (!stopping_.load()) {
            if (!c || !c->ok()) {
                c.reset();
                try {
                    c = connect();
                    reached({});
                    c->exec(listen_sql_.c_str());
                } catch (const std::exception& e) {
                    if (!c)
                        reached(e.what());  // the listener notices an outage first
                    c.reset();
                    log::warn("postgres: LISTEN connection failed; retrying",
                              {{"error", e.what()}});
                    for (int i = 0; i < 10 && !stopping_.load(); ++i)
                        std::this_thread::sleep_for(std::chrono::milliseconds(100));
                    continue;
                }
                // Notifications sent while we were away are gone: wake everything.
                commit_notice all;
                all.all = all.outbox = all.jobs = all.remote = true;
                tell_listener(all);
            }
            pollfd p{PQsocket(c->get()), POLLIN, 0};
            const int rc = ::poll(&p, 1, 200);
            if (rc < 0 && errno != EINTR) {
                c.reset();
                continue;
            }
            if (PQconsumeInput(c->get()) == 0) {
                log::warn("postgres: LISTEN connection lost",
                          {{"error", PQerrorMessage(c->get())}});
                c.reset();
                continue;
            }
            commit_notice n;
            bool any = false;
            while (PGnotify* msg = PQnotifies(c->get())) {
                any = decode_notice(msg->extra ? msg->extra : "", sender_, n) || any;
                PQfreemem(msg);
            }
            if (any) {
                commit_notice heard;
                merge_notice(heard, std::move(n));  // sorted and unique
                heard.remote = true;
                tell_listener(heard);
            }
        }
    }

    postgres_options o_;
    std::string sender_;
    std::string channel_;     // the NOTIFY channel of this schema
    std::string listen_sql_;  // LISTEN on it
    std::vector<std::unique_ptr<connection>> writer_conns_;
    std::vector<std::unique_ptr<connection>> reader_conns_;
    std::vector<std::thread> threads_;
    std::thread listener_;
    static constexpr int lanes = 2;  // write_lane::requests, write_lane::work
    std::array<detail::work_queue, lanes> writes_;
    detail::work_queue reads_;
    std::atomic<bool> stopping_{false};
    std::mutex give_up_mutex_;  // give_up_loop's wait (stopping_ is set under it)
    std::condition_variable give_up_cv_;
    mutable std::mutex reach_mutex_;
    std::string unreachable_;                // see store::unreachable
    std::atomic<bool> out_of_reach_{false};  // !unreachable_.empty(), read without the mutex
    std::mutex close_mutex_;
    std::mutex listener_mutex_;
    std::function<void(const commit_notice&)> commit_listener_;
    std::atomic<std::uint64_t> commits_{0};
    std::atomic<std::uint64_t> units_{0};
    std::atomic<std::uint64_t> put_off_{0};
    std::atomic<std::uint64_t> conflicts_{0};
};

}  // namespace

std::unique_ptr<store> open_postgres(const postgres_options& options) {
    const auto until =
        std::chrono::steady_clock::now() + std::chrono::milliseconds(options.connect_wait_ms);
    auto pause = std::chrono::milliseconds(250);
    for (;;) {
        try {
            return std::make_unique<pg_store>(options);
        } catch (const pg_error& e) {
            // Not reached (refused, no such socket, the server starting up or shutting down);
            // anything else (a schema newer than this build, a failed migration) fails at once.
            const auto now = std::chrono::steady_clock::now();
            if (!e.connection_lost())
                throw;
            if (now >= until)  // the database's absence, said as such (not a wrong setting)
                throw pg_error(
                    "no answer from the database within storage.postgres.connect_wait (" +
                        std::to_string(options.connect_wait_ms) + " ms): " + e.what(),
                    e.sqlstate(), true);
            log::warn("postgres: cannot reach the database at start; waiting for it",
                      {{"error", e.what()},
                       {"gives_up_in_ms",
                        static_cast<std::int64_t>(
                            std::chrono::duration_cast<std::chrono::milliseconds>(until - now)
                                .count())}});
            std::this_thread::sleep_for(
                std::min<std::chrono::steady_clock::duration>(pause, until - now));
            pause = std::min(pause * 2, std::chrono::milliseconds(5000));
        }
    }
}

int migrate_postgres(const std::string& url) {
    connection c(url, 0, "segue-migrate");
    pg::migrate(c);
    return postgres_schema_version();
}

}  // namespace segue::store

#include "gateway/core/reaper.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <functional>
#include <string>
#include <vector>

#include "gateway/config/settings.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/store/blob_store.hpp"
#include "gateway/store/db.hpp"

namespace segue::core {

namespace asio = boost::asio;
using asio::awaitable;

namespace {

// How long a claim of tombstones to purge is reserved (their blobs' removal takes far less).
constexpr store::millis purge_lease_ms = 10 * 60 * 1000;

store::millis ms(std::chrono::milliseconds d) {
    return static_cast<store::millis>(d.count());
}

}  // namespace

struct reaper::impl : std::enable_shared_from_this<impl> {
    impl(asio::io_context& ioc, store::db& db, store::blob_store& blobs,
         runtime::blocking_pool& blocking, const config::settings& s, metrics::registry& m)
        : ioc(ioc),
          db(db),
          blobs(blobs),
          blocking(blocking),
          settings(s),
          timer(ioc),
          deleted(m.counter_family("segue_retention_deleted_total",
                                   "What the reaper deleted, by kind (outputs, uploads, tasks, "
                                   "idempotency_keys, blobs, tombstones).",
                                   {"what"})),
          errors(m.make_counter("segue_retention_errors_total",
                                "Reaper rounds or blob removals that failed (retried later).")),
          without_work(m.make_gauge(
              "segue_tasks_without_work",
              "Tasks not ended that have no job and have not changed for 5 minutes, as the "
              "reaper's last round found them (at most 100): nothing will move them; each is "
              "logged. 0 unless a job was lost.")) {}

    // Runs `batch` (one write unit each, given the database clock) until it returns fewer than
    // retention.batch rows or the stage's cap.
    awaitable<int> batches(const char* what,
                           std::function<int(store::transaction&, store::millis)> batch) {
        int total = 0;
        const int limit = settings.retention.batch;
        for (int i = 0; i < max_batches_per_stage && !stopped; ++i) {
            int n = 0;
            co_await db.write([&](store::transaction& tx) { n = batch(tx, tx.clock_ms()); });
            total += n;
            if (n < limit)
                break;
        }
        if (total > 0)
            deleted.with({what}).inc(total);
        co_return total;
    }

    // Removes the blobs of tombstones, a claimed batch at a time.
    awaitable<int> purge() {
        int total = 0;
        const int limit = settings.retention.batch;
        for (int i = 0; i < max_batches_per_stage && !stopped; ++i) {
            std::vector<store::file_tombstone_row> claimed;
            co_await db.write([&](store::transaction& tx) {
                claimed = tx.claim_purges(tx.clock_ms(), purge_lease_ms, limit);
            });
            if (claimed.empty())
                break;
            std::vector<std::string> done;
            co_await blocking.run([&] {
                for (const auto& t : claimed) {
                    auto r = blobs.remove(t.path);
                    if (r || r.error().code == store::blob_errc::not_found) {
                        done.push_back(t.id);
                        continue;
                    }
                    errors.inc();
                    log::warn("an expired file's blob was not removed (retried later)",
                              {{"file_id", t.id}, {"key", t.path}, {"error", r.error().message}});
                }
            });
            co_await db.write([&](store::transaction& tx) { tx.mark_purged(done); });
            total += static_cast<int>(done.size());
            if (static_cast<int>(claimed.size()) < limit)
                break;
        }
        if (total > 0)
            deleted.with({"blobs"}).inc(total);
        co_return total;
    }

    awaitable<reap_counts> round() {
        const auto& r = settings.retention;
        const int limit = r.batch;
        reap_counts c;
        auto expire = [this, limit](const char* what, const char* kind,
                                    std::chrono::milliseconds life) -> awaitable<int> {
            if (life.count() == 0)
                co_return 0;
            co_return co_await batches(what, [=](store::transaction& tx, store::millis now) {
                return tx.expire_files(kind, now - ms(life), now, limit);
            });
        };
        c.outputs = co_await expire("outputs", "output", r.outputs);
        c.uploads = co_await expire("uploads", "upload", r.uploads);
        if (r.tasks.count() > 0)
            c.tasks = co_await batches("tasks", [&](store::transaction& tx, store::millis now) {
                return tx.reap_tasks(now - ms(r.tasks), now, limit);
            });
        const auto keys = settings.api.idempotency_retention;
        c.idempotency_keys =
            co_await batches("idempotency_keys", [&](store::transaction& tx, store::millis now) {
                return tx.delete_idempotency_batch(now - ms(keys), limit);
            });
        c.blobs = co_await purge();
        if (r.tombstones.count() > 0)
            c.tombstones =
                co_await batches("tombstones", [&](store::transaction& tx, store::millis now) {
                    return tx.delete_tombstones_before(now - ms(r.tombstones), limit);
                });
        c.tasks_without_work = co_await check_tasks_without_work();
        if (c.outputs + c.uploads + c.tasks + c.idempotency_keys + c.blobs + c.tombstones > 0)
            log::info("retention round", {{"outputs", c.outputs},
                                          {"uploads", c.uploads},
                                          {"tasks", c.tasks},
                                          {"idempotency_keys", c.idempotency_keys},
                                          {"blobs", c.blobs},
                                          {"tombstones", c.tombstones}});
        co_return c;
    }

    // Tasks that lost their job: reported (gauge, log), not changed. What would move one on
    // depends on where it stopped (a submit, a poll, a mirror), and a wrong guess costs a
    // second generation at the provider; an operator decides (cancel releases its credits).
    awaitable<int> check_tasks_without_work() {
        constexpr int most = 100;
        std::vector<std::string> ids;
        co_await db.read([&](store::transaction& tx) {
            ids = tx.tasks_without_work(tx.clock_ms() - ms(reaper::tasks_without_work_after), most);
        });
        without_work.set(static_cast<double>(ids.size()));
        if (!ids.empty()) {
            std::string some;
            for (std::size_t i = 0; i < ids.size() && i < 10; ++i)
                some += (i ? " " : "") + ids[i];
            log::error("tasks that are not ended have no job: nothing will move them",
                       {{"count", static_cast<int>(ids.size())}, {"task_ids", some}});
        }
        co_return static_cast<int>(ids.size());
    }

    awaitable<void> loop() {
        auto self = shared_from_this();
        while (!stopped) {
            timer.expires_after(settings.retention.interval);
            co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
            if (stopped)
                break;
            try {
                co_await round();
            } catch (const std::exception& e) {
                errors.inc();
                log::warn("retention round failed (tried again next interval)",
                          {{"error", e.what()}});
            }
        }
    }

    asio::io_context& ioc;
    store::db& db;
    store::blob_store& blobs;
    runtime::blocking_pool& blocking;
    const config::settings& settings;
    asio::steady_timer timer;
    std::atomic<bool> stopped{false};
    metrics::family<metrics::counter>& deleted;
    metrics::counter& errors;
    metrics::gauge& without_work;
};

reaper::reaper(asio::io_context& ioc, store::db& db, store::blob_store& blobs,
               runtime::blocking_pool& blocking, const config::settings& settings,
               metrics::registry& metrics)
    : impl_(std::make_shared<impl>(ioc, db, blobs, blocking, settings, metrics)) {}

// A loop still suspended holds its state and ends with its io_context; nothing is posted to
// a context that may be gone.
reaper::~reaper() {
    impl_->stopped = true;
}

void reaper::start() {
    asio::co_spawn(impl_->ioc, impl_->loop(), asio::detached);
}

void reaper::stop() {
    impl_->stopped = true;
    // On the timer's own context: timers are not thread-safe.
    asio::post(impl_->ioc, [i = impl_] { i->timer.cancel(); });
}

awaitable<reap_counts> reaper::run_once() {
    auto self = impl_;
    co_return co_await impl_->round();
}

}  // namespace segue::core

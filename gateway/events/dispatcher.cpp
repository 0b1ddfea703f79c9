#include "gateway/events/dispatcher.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <cmath>
#include <map>
#include <mutex>
#include <random>
#include <vector>

#include "gateway/core/backoff.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/lease_worker.hpp"
#include "gateway/events/signer.hpp"
#include "gateway/events/webhook_format.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/net/http_client.hpp"
#include "gateway/store/db.hpp"
#include "gateway/util/crypto.hpp"
#include "gateway/util/json_text.hpp"

namespace segue::events {

namespace asio = boost::asio;
namespace json = boost::json;

namespace {

store::millis now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

double unit_random() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

// Retry-After on a delivery answer, in either form (delta-seconds or an HTTP-date).
std::optional<std::int64_t> retry_after_of(const segue::net::response& res) {
    auto v = res.header("retry-after");
    if (!v)
        return std::nullopt;
    return core::parse_retry_after(*v, now_ms());
}

std::string status_class(int status) {
    return std::to_string(status / 100) + "xx";
}

}  // namespace

std::optional<std::int64_t> retry_delay_ms(const config::webhooks_settings& w, int attempts,
                                           double unit_random,
                                           std::optional<std::int64_t> retry_after_ms) {
    if (attempts < 1 || attempts > static_cast<int>(w.retry_schedule.size()))
        return std::nullopt;
    const double base = static_cast<double>(w.retry_schedule[attempts - 1].count());
    const double spread = base * w.jitter * (2.0 * unit_random - 1.0);
    auto delay = static_cast<std::int64_t>(std::llround(std::max(0.0, base + spread)));
    if (retry_after_ms && *retry_after_ms > delay)
        delay = std::min<std::int64_t>(*retry_after_ms, w.max_retry_after.count());
    return std::max<std::int64_t>(delay, 0);
}

std::string delivery_body(const store::delivery_row& d) {
    json::object body;
    body["type"] = d.event_type;
    body["timestamp"] = core::iso8601(d.event_at);
    json::object data;
    try {
        auto v = json::parse(d.event_data_json);
        if (v.is_object())
            data = std::move(v.as_object());
    } catch (const std::exception&) {
    }
    data["event_id"] = d.event_id;
    data["seq"] = d.seq;
    body["data"] = std::move(data);
    return util::json_text(body);  // plain decimals, as every API document
}

struct dispatcher::impl : std::enable_shared_from_this<dispatcher::impl> {
    impl(asio::io_context& io, store::db& d, const config::settings& s, metrics::registry& m,
         segue::net::http_client& c, const webhook_formats* f)
        : ioc(io),
          db(d),
          settings(s),
          client(c),
          formats(f),
          owner(util::random_id("dsp_")),
          deliveries(m.counter_family("segue_webhook_deliveries_total",
                                      "Webhook deliveries that reached a final state, by outcome "
                                      "(delivered, dead, gone, not_in_format: the task's "
                                      "delivery format has no callback for the event).",
                                      {"outcome"})),
          attempts(m.counter_family("segue_webhook_attempts_total",
                                    "Webhook delivery attempts, by result (2xx, 3xx, 4xx, 5xx, or "
                                    "the transport failure: timeout, connect, refused_address, "
                                    "...).",
                                    {"result"})),
          leases_expired(m.make_counter(
              "segue_webhook_leases_expired_total",
              "Deliveries sent whose lease had expired before their outcome was recorded (the "
              "store or the process stalled longer than webhooks.lease): another claim sends "
              "them again.")),
          latency(m.histogram_family(
                       "segue_webhook_delivery_latency_seconds",
                       "From the event to its delivery's 2xx answer (retries included).", {},
                       {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 60, 300, 1800,
                        7200, 36000, 108000})
                      .with({})),
          in_flight_gauge(m.make_gauge("segue_webhook_deliveries_in_flight",
                                       "Webhook deliveries being sent by this replica.")),
          count_freed(core::count_freed_leases(m)),
          pending_gauge(m.make_gauge("segue_webhook_deliveries_pending",
                                     "Deliveries waiting to be delivered (all replicas).")),
          dead_gauge(m.make_gauge("segue_webhook_deliveries_dead",
                                  "Dead deliveries (retries exhausted or 410 Gone), until "
                                  "redelivered.")),
          oldest_at(std::make_shared<std::atomic<std::int64_t>>(0)) {
        // The age is taken at each scrape from the oldest waiting event's time, so it keeps
        // growing while the database cannot be read (an outage), rather than freezing at its
        // last value (found by a black-box run): what waited then waits still.
        m.add_collector([at = oldest_at](metrics::text_writer& w) {
            const auto t = at->load(std::memory_order_relaxed);
            w.write_gauge("segue_webhook_oldest_undelivered_age_seconds",
                          "Age of the oldest event still waiting for delivery; 0 when none "
                          "waits.",
                          t > 0 ? std::max<double>(0.0, (now_ms() - t) / 1e3) : 0.0);
        });
        for (const auto& t : s.tenants) {
            std::vector<std::string> ks;
            for (const auto& secret : t.webhook_secrets) {
                std::string key, error;
                if (parse_secret(secret, key, error))
                    ks.push_back(std::move(key));
            }
            keys[t.name] = std::move(ks);
        }
    }

    void make_worker();
    asio::awaitable<void> deliver(store::delivery_row d,
                                  std::shared_ptr<const core::lease_state> l);
    // The body (and extra headers) of the delivery in its task's format; nullopt for Segue's
    // own body. `skip`: the format has no callback for this event. Throws if the task cannot
    // be read (the attempt fails and is retried).
    asio::awaitable<std::optional<formatted>> shape(const store::delivery_row& d, std::int64_t ts,
                                                    bool& skip);
    asio::awaitable<void> refresh_gauges();

    asio::io_context& ioc;
    store::db& db;
    const config::settings& settings;
    segue::net::http_client& client;
    const webhook_formats* formats;
    // Task -> its delivery format ("" for Segue's own): a task's format never changes, so the
    // tasks of the plain shape are read once. Bounded: cleared when full.
    std::mutex format_mutex;
    std::map<std::string, std::string, std::less<>> task_formats;
    std::string owner;
    std::unique_ptr<core::lease_worker> worker;
    std::map<std::string, std::vector<std::string>, std::less<>> keys;  // tenant -> raw keys
    std::chrono::steady_clock::time_point gauges_at{};

    metrics::family<metrics::counter>& deliveries;
    metrics::family<metrics::counter>& attempts;
    metrics::counter& leases_expired;
    metrics::histogram& latency;
    metrics::gauge& in_flight_gauge;
    std::function<void(const store::transaction::freed_leases&)> count_freed;
    metrics::gauge& pending_gauge;
    metrics::gauge& dead_gauge;
    // When the oldest event waiting for delivery happened (Unix ms; 0: none waits), as last read.
    std::shared_ptr<std::atomic<std::int64_t>> oldest_at;
};

dispatcher::dispatcher(asio::io_context& ioc, store::db& db, const config::settings& settings,
                       metrics::registry& metrics, segue::net::http_client& client,
                       const webhook_formats* formats)
    : impl_(std::make_shared<impl>(ioc, db, settings, metrics, client, formats)) {
    impl_->make_worker();
}

dispatcher::~dispatcher() = default;

void dispatcher::impl::make_worker() {
    const auto& w = settings.webhooks;
    core::lease_worker::hooks h;
    h.name = "dispatcher";
    h.claim = [this](store::transaction& tx, const std::string& who, store::millis now,
                     store::millis lease_ms, int limit, const std::vector<int>& /*one lane*/,
                     const std::vector<std::string>& exclude,
                     std::optional<store::millis>& next_due) {
        auto claimed = tx.claim_deliveries(who, now, lease_ms, limit, exclude);
        if (static_cast<int>(claimed.size()) < limit)
            next_due = tx.next_delivery_due();
        std::vector<core::lease_worker::item> items;
        auto self = shared_from_this();
        for (auto& d : claimed) {
            core::lease_worker::item it;
            it.id = d.id;
            it.fence = d.lease_fence;
            it.until = d.lease_until;
            it.run = [self, d](std::shared_ptr<const core::lease_state> l) {
                return self->deliver(d, std::move(l));
            };
            items.push_back(std::move(it));
        }
        return items;
    };
    h.renew = [](store::transaction& tx, const std::string& who,
                 const core::lease_worker::held& held,
                 store::millis until) { return tx.renew_deliveries(who, held, until); };
    h.slots = [this](int running) {
        return std::min(settings.webhooks.batch, settings.webhooks.concurrency - running);
    };
    h.before_claim = [this]() -> asio::awaitable<void> {
        if (std::chrono::steady_clock::now() - gauges_at > std::chrono::seconds(1)) {
            gauges_at = std::chrono::steady_clock::now();
            co_await refresh_gauges();
        }
    };
    h.on_running = [this](int running) { in_flight_gauge.set(running); };
    h.on_freed = count_freed;
    core::lease_worker::timing t;
    t.lease = std::chrono::duration_cast<std::chrono::milliseconds>(w.lease);
    t.poll_interval =
        std::chrono::duration_cast<std::chrono::milliseconds>(settings.engine.poll_interval);
    if (settings.storage.engine == config::storage_engine::postgres)
        t.liveness = std::chrono::duration_cast<std::chrono::milliseconds>(
            settings.storage.postgres.replica_timeout);
    worker = std::make_unique<core::lease_worker>(ioc, db, owner, t, std::move(h));
}

void dispatcher::start() {
    impl_->worker->start();
}

void dispatcher::notify() {
    impl_->worker->notify();
}

asio::awaitable<void> dispatcher::stop(std::chrono::milliseconds deadline) {
    auto self = impl_;
    co_await self->worker->stop(deadline);
}

asio::awaitable<void> dispatcher::impl::refresh_gauges() {
    store::delivery_summary sum;
    try {
        co_await db.read([&](store::transaction& tx) { sum = tx.summarize_deliveries(); });
    } catch (const std::exception& e) {
        log::warn("summarizing deliveries failed", {{"error", e.what()}});
        co_return;
    }
    pending_gauge.set(static_cast<double>(sum.pending));
    dead_gauge.set(static_cast<double>(sum.dead));
    oldest_at->store(sum.oldest_pending_event_at.value_or(0), std::memory_order_relaxed);
}

asio::awaitable<std::optional<formatted>> dispatcher::impl::shape(const store::delivery_row& d,
                                                                  std::int64_t ts, bool& skip) {
    skip = false;
    if (formats == nullptr || formats->empty())
        co_return std::nullopt;
    {
        std::lock_guard lock(format_mutex);
        if (auto it = task_formats.find(d.task_id); it != task_formats.end() && it->second.empty())
            co_return std::nullopt;
    }
    std::optional<store::task_row> task;
    std::vector<store::output_row> outputs;
    core::extend_request req;
    co_await db.read([&](store::transaction& tx) {
        task = tx.get_task(d.task_id);
        if (!task)
            return;
        try {
            req = core::request_from_json(task->request_json);
        } catch (const std::exception&) {
        }
        // Only a shaped delivery needs the outputs (a plain one is decided by the task alone).
        if (!req.webhook_format.empty())
            outputs = tx.get_outputs(d.task_id);
    });
    if (!task)
        co_return std::nullopt;
    {
        std::lock_guard lock(format_mutex);
        if (task_formats.size() >= 4096)
            task_formats.clear();
        task_formats[d.task_id] = req.webhook_format;
    }
    const formatter* f = req.webhook_format.empty() ? nullptr : formats->find(req.webhook_format);
    if (f == nullptr)
        co_return std::nullopt;
    auto out = (*f)(format_input{d, *task, outputs, req, ts});
    skip = !out;
    if (out)
        out->format = req.webhook_format;
    co_return out;
}

asio::awaitable<void> dispatcher::impl::deliver(store::delivery_row d,
                                                std::shared_ptr<const core::lease_state> l) {
    auto self = shared_from_this();
    const auto& w = settings.webhooks;
    const auto started = now_ms();

    std::string error;
    int status = 0;
    std::optional<std::int64_t> retry_after;
    bool gone = false;
    bool ok = false;

    // Every send the schedule allows was made already, the last ones without an outcome: a
    // claim counts a send whose sender crashed or stalled past its lease. Sending again would
    // go past the schedule, and a send that ends the process every time would never stop.
    const bool spent = d.attempts > static_cast<int>(w.retry_schedule.size());

    const std::int64_t ts = started / 1000;
    std::optional<formatted> shaped;
    bool skip = false;
    bool unreadable = false;
    if (!spent) {
        try {
            shaped = co_await shape(d, ts, skip);
        } catch (const std::exception& e) {
            unreadable = true;
            error = std::string("cannot read the task for its delivery format: ") + e.what();
            attempts.with({"store_error"}).inc();
        }
    }
    auto k = keys.find(d.tenant);
    if (spent) {
        error = "not sent again: " + std::to_string(d.attempts) +
                " sends made, all that webhooks.retry_schedule allows (a send whose process "
                "ended or stalled before its outcome was recorded counts)";
    } else if (unreadable) {
    } else if (skip) {
        // The task's format has no callback for this event: nothing to send.
        ok = true;
    } else if (k == keys.end() || k->second.empty()) {
        error = "tenant " + d.tenant + " has no webhook secret configured";
        attempts.with({"no_secret"}).inc();
    } else {
        segue::net::request req;
        req.method = "POST";
        req.url = d.url;
        req.body = shaped ? std::move(shaped->body) : delivery_body(d);
        req.headers = {
            {"Content-Type", "application/json"},
            {"webhook-id", d.event_id},
            {"webhook-timestamp", std::to_string(ts)},
            {"webhook-signature", signature_header(k->second, d.event_id, ts, req.body)},
        };
        if (shaped) {
            // Which shape the body is in: a receiver (or a test) tells them from Segue's events.
            req.headers.emplace_back("Segue-Webhook-Format", std::move(shaped->format));
            for (auto& h : shaped->headers)
                req.headers.push_back(std::move(h));
        }
        req.timeout = std::chrono::duration_cast<std::chrono::milliseconds>(w.timeout);
        req.metrics_host = "webhook";  // bounded label set
        req.status_only = true;        // a 2xx delivers, whatever the body that comes with it
        auto r = co_await client.send(std::move(req));
        if (!r.ok()) {
            error = std::string(segue::net::to_string(r.error)) +
                    (r.message.empty() ? "" : ": " + r.message);
            attempts.with({std::string(segue::net::to_string(r.error))}).inc();
        } else {
            status = r.res.status;
            attempts.with({status_class(status)}).inc();
            if (status / 100 == 2) {
                ok = true;
            } else if (status == 410) {
                gone = true;
                error = "410 Gone: the endpoint asked for no more deliveries";
            } else {
                error = "HTTP " + std::to_string(status) +
                        (status / 100 == 3 ? " (redirects are not followed)" : "");
                if (status == 429 || status == 503)
                    retry_after = retry_after_of(r.res);
            }
        }
    }

    const auto now = now_ms();
    if (!spent) {
        d.attempts += 1;
        d.last_status = status;
    }
    d.updated_at = now;
    std::string outcome;
    if (spent) {
        d.status = "dead";
        d.last_error = error + " (retries exhausted)";
        outcome = "dead";
    } else if (ok) {
        d.status = "delivered";
        d.delivered_at = now;
        d.last_error.clear();
        outcome = "delivered";
        if (skip) {
            d.last_error =
                "not sent: the task's webhook format has no callback for " + d.event_type;
            outcome = "not_in_format";
        }
    } else if (gone) {
        d.status = "dead";
        d.last_error = error;
        outcome = "gone";
    } else if (auto delay = retry_delay_ms(w, d.attempts, unit_random(), retry_after)) {
        d.status = "pending";
        d.next_at = now + *delay;
        d.last_error = error;
    } else {
        d.status = "dead";
        d.last_error = error + " (retries exhausted)";
        outcome = "dead";
    }

    bool held = false;
    int killed = 0;
    store::millis recorded_at = 0;  // by the store's clock, when the record was refused
    std::optional<store::delivery_row> now_row;
    const auto record_started = std::chrono::steady_clock::now();
    // A record the store does not take (the database out of reach or too busy) is tried again
    // while this claim's lease may hold: the send's outcome is known, and recording it spares
    // the receiver a second copy and the task's later events a wait for the lease (1 min).
    const auto give_up = record_started + w.lease;
    for (int tries = 0;; ++tries) {
        const std::chrono::milliseconds wait(
            core::backoff_ceiling_ms(core::store_retry_backoff, tries));
        try {
            co_await db.write([&](store::transaction& tx) {
                killed = 0;
                now_row.reset();
                held = tx.finish_delivery(d, owner);
                if (held)
                    l->released = true;  // no longer renewable: for the heartbeat, not a loss
                if (held && gone) {
                    killed = tx.kill_deliveries_to(
                        d.tenant, d.url, "the endpoint answered 410 Gone to " + d.id, now);
                    tx.set_endpoint_gone(d.tenant, d.url, true, now);
                }
                if (!held) {
                    recorded_at = tx.clock_ms();
                    now_row = tx.get_delivery(d.id);
                }
            });
            break;
        } catch (const std::exception& e) {
            l->released = false;  // not committed: the row is still this claim's to renew
            if (l->lost || std::chrono::steady_clock::now() + wait >= give_up) {
                // The lease expires and the delivery is sent again: at least once.
                log::error("recording a delivery failed; it is sent again when its lease ends",
                           {{"delivery_id", d.id}, {"error", e.what()}});
                co_return;
            }
            log::warn("recording a delivery failed; trying again",
                      {{"delivery_id", d.id}, {"error", e.what()}});
        }
        asio::steady_timer pause(co_await asio::this_coro::executor, wait);
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    }
    if (!held) {
        // Another claim took the row: at least once, the event is (or was) sent again. Only a
        // lease that had ended allows that (it expired, or this replica was taken for dead);
        // one taken while this claim still held it is a bug.
        const std::string now_owner = now_row ? now_row->lease_owner : "";
        const std::int64_t now_fence = now_row ? now_row->lease_fence : 0;
        const std::string now_status = now_row ? now_row->status : "gone";
        // A claim bumps the fence; a kill (a 410 to the same URL) or a redelivery does not.
        const bool claimed_again = now_row && now_fence != d.lease_fence;
        auto level = log::level::info;
        const char* what =
            "delivery's row was changed while it was sent (killed or redelivered); its outcome "
            "is not recorded";
        if (claimed_again && !l->may_have_ended_by(recorded_at)) {
            level = log::level::error;
            what = "delivery taken by another claim while this one's lease still held";
        } else if (claimed_again && recorded_at <= l->until) {
            level = log::level::warn;
            what =
                "delivery claimed by another replica after this one was taken for dead (it had "
                "not shown it is alive for replica_timeout); it may be sent again";
            leases_expired.inc();
        } else if (claimed_again) {
            level = log::level::warn;
            what = "delivery lease expired before its outcome was recorded; it may be sent again";
            leases_expired.inc();
        }
        const auto record_wait = std::chrono::duration_cast<std::chrono::milliseconds>(
            std::chrono::steady_clock::now() - record_started);
        log::write(level, what,
                   {{"delivery_id", d.id},
                    {"event_id", d.event_id},
                    {"fence", d.lease_fence},
                    {"lease_until", l->until},
                    {"alive_until", l->alive_until},
                    {"recorded_at", recorded_at},
                    {"late_ms", l->until > 0 ? recorded_at - l->until : 0},
                    {"sending_ms", now - started},
                    {"record_wait_ms", static_cast<std::int64_t>(record_wait.count())},
                    {"now_owner", now_owner},
                    {"now_fence", now_fence},
                    {"now_status", now_status}});
        co_return;
    }
    if (!outcome.empty())
        deliveries.with({outcome}).inc();
    if (killed > 0)
        deliveries.with({"gone"}).inc(killed);
    if (ok && !skip)
        latency.observe(std::max<double>(0.0, (now - d.event_at) / 1e3));
    // A failure that will be retried is routine (info); one that ends the delivery (dead: the
    // retries ran out, or the endpoint answered 410) loses an event for the tenant until it is
    // redelivered, which an operator wants to see (warn).
    if (const auto lvl = d.status == "dead" ? log::level::warn : log::level::info;
        !ok && log::enabled(lvl))
        log::write(lvl, "webhook delivery failed",
                   {{"delivery_id", d.id},
                    {"task_id", d.task_id},
                    {"event_id", d.event_id},
                    {"attempt", d.attempts},
                    {"status", d.status},
                    {"error", d.last_error}});
}

}  // namespace segue::events

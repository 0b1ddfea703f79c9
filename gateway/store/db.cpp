#include "gateway/store/db.hpp"

#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <random>

#include "gateway/core/backoff.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/util/unavailable.hpp"

namespace segue::store {

namespace asio = boost::asio;

namespace {
// A client refused for an unreachable database asks again after about this: a restart or a
// failover of PostgreSQL takes seconds. Spread per answer (core::spread_retry_after_s: 3..7 s).
constexpr int retry_after_unreachable_s = 5;

}  // namespace

int outage_retry_after_s() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return core::spread_retry_after_s(retry_after_unreachable_s,
                                      std::generate_canonical<double, 53>(rng));
}

db::db(store& s, metrics::registry& m, write_lane lane, bool fail_fast,
       std::chrono::milliseconds give_up_after)
    : store_(s),
      lane_(lane),
      fail_fast_(fail_fast),
      give_up_after_(give_up_after),
      write_latency_(m.histogram_family("segue_store_operation_duration_seconds",
                                        "Store units of work from submit to durable completion.",
                                        {"op"}, metrics::default_latency_buckets())
                         .with({"write"})),
      read_latency_(m.histogram_family("segue_store_operation_duration_seconds",
                                       "Store units of work from submit to durable completion.",
                                       {"op"}, metrics::default_latency_buckets())
                        .with({"read"})),
      write_errors_(m.counter_family("segue_store_errors_total",
                                     "Store units of work that failed and were rolled back.",
                                     {"op"})
                        .with({"write"})),
      read_errors_(m.counter_family("segue_store_errors_total",
                                    "Store units of work that failed and were rolled back.", {"op"})
                       .with({"read"})) {}

asio::awaitable<void> db::write(store::unit fn) {
    return run(op::write, std::move(fn));
}
asio::awaitable<void> db::write_first(store::unit fn) {
    return run(op::write_first, std::move(fn));
}
asio::awaitable<void> db::read(store::unit fn) {
    return run(op::read, std::move(fn));
}

void db::refuse_if_unreachable() {
    // The reason (a host, a socket path) is the operator's: the store logs it, /readyz says it;
    // the client is told only to come back.
    if (fail_fast_ && !store_.unreachable().empty())
        throw util::unavailable_error("the database is unreachable for now; try again",
                                      outage_retry_after_s());
}

asio::awaitable<void> db::run(op kind, store::unit fn) {
    const bool write = kind != op::read;
    try {
        refuse_if_unreachable();
    } catch (const util::unavailable_error&) {
        (write ? write_errors_ : read_errors_).inc();
        throw;
    }
    const auto start = std::chrono::steady_clock::now();
    auto ex = co_await asio::this_coro::executor;
    std::exception_ptr err;
    co_await asio::async_initiate<decltype(asio::use_awaitable), void()>(
        [&](auto handler) {
            using handler_t = decltype(handler);
            auto h = std::make_shared<handler_t>(std::move(handler));
            auto done = [h, ex, &err](std::exception_ptr e) {
                err = e;
                // Resume on the coroutine's own executor, never on the store thread.
                asio::post(ex, [h]() mutable { (*h)(); });
            };
            if (kind == op::write_first) {
                store_.submit_write_first(std::move(fn), std::move(done), lane_);
            } else if (give_up_after_.count() > 0) {
                const auto give_up = store::clock::now() + give_up_after_;
                if (write)
                    store_.submit_write_by(std::move(fn), std::move(done), lane_, give_up);
                else
                    store_.submit_read_by(std::move(fn), std::move(done), give_up);
            } else if (write) {
                store_.submit_write(std::move(fn), std::move(done), lane_);
            } else {
                store_.submit_read(std::move(fn), std::move(done));
            }
        },
        asio::use_awaitable);
    const double secs =
        std::chrono::duration<double>(std::chrono::steady_clock::now() - start).count();
    (write ? write_latency_ : read_latency_).observe(secs);
    if (err) {
        (write ? write_errors_ : read_errors_).inc();
        // A request's unit the database gave up on for its load was rolled back: the client is
        // told to come back (503, Retry-After), not that the gateway failed (500).
        if (fail_fast_) {
            try {
                std::rethrow_exception(err);
            } catch (const store_error& e) {
                if (e.busy())
                    throw util::unavailable_error(
                        store_.unreachable().empty()
                            ? "the database is too busy to answer in time; try again"
                            : "the database is unreachable for now; try again",
                        outage_retry_after_s());
                throw;
            }
        }
        std::rethrow_exception(err);
    }
}

}  // namespace segue::store

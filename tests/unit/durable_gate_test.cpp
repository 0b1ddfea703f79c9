#include "gateway/util/durable_gate.hpp"

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <memory>
#include <optional>
#include <thread>

namespace asio = boost::asio;
using segue::util::durable_gate;
using namespace std::chrono_literals;

namespace {

// Starts a waiter on `ioc`; its answer lands in `out`, and `on` says which thread resumed it.
void wait_on(asio::io_context& ioc, std::shared_ptr<durable_gate> g, std::optional<bool>& out,
             std::thread::id& on) {
    asio::co_spawn(
        ioc,
        [g, &out, &on]() -> asio::awaitable<void> {
            out = co_await g->wait();
            on = std::this_thread::get_id();
        },
        asio::detached);
}

}  // namespace

TEST(DurableGate, WaitersResumeOnTheirOwnExecutorWithTheFirstAnswer) {
    asio::io_context ioc;
    auto g = std::make_shared<durable_gate>();
    std::optional<bool> a, b;
    std::thread::id on_a, on_b;
    wait_on(ioc, g, a, on_a);
    wait_on(ioc, g, b, on_b);
    ioc.run_for(20ms);  // both wait now
    EXPECT_FALSE(a || b);
    EXPECT_FALSE(g->state());

    // Opened from another thread (the store's syncer): the waiters resume on ioc's thread.
    std::thread([g] {
        g->open(true);
        g->open(false);  // the first answer stands
    }).join();
    ioc.restart();
    ioc.run_for(100ms);
    EXPECT_EQ(a, true);
    EXPECT_EQ(b, true);
    EXPECT_EQ(on_a, std::this_thread::get_id());
    EXPECT_EQ(on_b, std::this_thread::get_id());
    EXPECT_EQ(g->state(), true);

    // Once open, a wait answers at once.
    std::optional<bool> c;
    std::thread::id on_c;
    wait_on(ioc, g, c, on_c);
    ioc.restart();
    ioc.run_for(20ms);
    EXPECT_EQ(c, true);
}

TEST(DurableGate, AGateNeverOpenedSaysNoRatherThanLeaveAWaiterHanging) {
    asio::io_context ioc;
    std::optional<bool> a;
    std::thread::id on;
    {
        auto g = std::make_shared<durable_gate>();
        durable_gate* raw = g.get();
        asio::co_spawn(
            ioc, [raw, &a]() -> asio::awaitable<void> { a = co_await raw->wait(); },
            asio::detached);
        ioc.run_for(20ms);
        EXPECT_FALSE(a);
    }  // destroyed unopened
    ioc.restart();
    ioc.run_for(100ms);
    EXPECT_EQ(a, false);
}

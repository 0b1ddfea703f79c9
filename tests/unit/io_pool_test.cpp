// io_pool::shutdown: coroutines left suspended when the pool stops are unwound while their owner
// still exists (app::impl shuts its pool down before its other members go).

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <atomic>
#include <chrono>
#include <future>
#include <memory>
#include <thread>

#include "gateway/runtime/io_pool.hpp"

namespace {

namespace net = boost::asio;
using namespace std::chrono_literals;

// What a suspended request refers to (the server, the metrics): it records unwinding frames.
struct owner {
    std::atomic<int> alive_frames = 0;  // frames on both contexts
    std::atomic<int> unwound_while_alive = 0;
};

struct frame_guard {
    owner* o;
    ~frame_guard() {
        --o->alive_frames;
        ++o->unwound_while_alive;
    }
};

net::awaitable<void> stuck(owner* o, std::promise<void>* started) {
    frame_guard g{o};
    ++o->alive_frames;
    net::steady_timer never(co_await net::this_coro::executor, 24h);
    started->set_value();
    co_await never.async_wait(net::use_awaitable);
}

TEST(IoPool, ShutdownUnwindsSuspendedCoroutinesOnEveryContext) {
    segue::runtime::io_pool pool(2);
    owner o;
    std::promise<void> s0, s1;
    net::co_spawn(pool.at(0), stuck(&o, &s0), net::detached);
    net::co_spawn(pool.at(1), stuck(&o, &s1), net::detached);
    std::thread runner([&] { pool.run(); });
    s0.get_future().wait();
    s1.get_future().wait();
    pool.stop();
    runner.join();
    EXPECT_EQ(o.alive_frames, 2);  // stop() leaves them suspended
    pool.shutdown();
    EXPECT_EQ(o.alive_frames, 0);
    EXPECT_EQ(o.unwound_while_alive, 2);
    // `o` goes before the pool (as app::impl's members do): the pool's destructor finds nothing.
}

}  // namespace

namespace {

// Suspended on one context while owning an I/O object of another.
net::awaitable<void> holds_a_socket_of_context_0(std::shared_ptr<net::ip::tcp::socket> theirs,
                                                 std::promise<void>* started) {
    net::steady_timer never(co_await net::this_coro::executor, 24h);
    started->set_value();
    co_await never.async_wait(net::use_awaitable);
}

}  // namespace

// Without an explicit shutdown(): the destructor destroys every context's handlers before it
// destroys any context. A coroutine on context 1 holding an I/O object of context 0 (a connection
// holding the last reference to the server and its acceptor) is unwound while context 0's
// services still exist; destroying context 0 first was a use after free (ThreadSanitizer found
// it in HttpServer tests that ended with a connection still open).
TEST(IoPool, DestructionUnwindsEveryContextBeforeDestroyingAny) {
    auto pool = std::make_unique<segue::runtime::io_pool>(2);
    std::promise<void> started;
    auto socket = std::make_shared<net::ip::tcp::socket>(pool->at(0));
    socket->open(net::ip::tcp::v4());  // registered with context 0's reactor
    net::co_spawn(pool->at(1), holds_a_socket_of_context_0(std::move(socket), &started),
                  net::detached);
    std::thread t([&] { pool->run(); });
    started.get_future().wait();
    pool->stop();
    t.join();
    pool.reset();
}

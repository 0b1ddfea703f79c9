#include "gateway/runtime/io_pool.hpp"

#include <pthread.h>

#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>

#include <atomic>
#include <string>
#include <thread>

namespace segue::runtime {

namespace asio = boost::asio;

namespace {
// io_context with execution_context::shutdown() public: it destroys every outstanding handler
// (what ~io_context does first) without destroying the services yet.
class context final : public asio::io_context {
  public:
    using asio::execution_context::shutdown;
    using asio::io_context::io_context;
};
}  // namespace

struct io_pool::guards {
    std::vector<asio::executor_work_guard<asio::io_context::executor_type>> work;
};

io_pool::io_pool(int threads) : guards_(std::make_unique<guards>()) {
    if (threads < 1)
        threads = 1;
    for (int i = 0; i < threads; ++i) {
        // Concurrency hint 1: each context is run by exactly one thread.
        contexts_.push_back(std::make_unique<context>(1));
        guards_->work.push_back(asio::make_work_guard(*contexts_.back()));
    }
}

// Every context's outstanding handlers are destroyed before any context is: a suspended
// coroutine on one context may own objects bound to another (a connection on context 1 can hold
// the last reference to the server, whose acceptor lives on context 0), and destroying them
// after context 0's services are gone would be a use after free.
io_pool::~io_pool() {
    shutdown();
}

asio::io_context& io_pool::next() noexcept {
    // Called from the listener only (context 0), so a plain counter is enough.
    auto& c = *contexts_[next_];
    next_ = (next_ + 1) % contexts_.size();
    return c;
}

void io_pool::run() {
    std::vector<std::thread> threads;
    threads.reserve(contexts_.size() - 1);
    for (std::size_t i = 1; i < contexts_.size(); ++i)
        threads.emplace_back([c = contexts_[i].get(), i] {
            const std::string name = "segue-io-" + std::to_string(i);  // <= 15 characters
            ::pthread_setname_np(::pthread_self(), name.c_str());
            c->run();
        });
    contexts_.front()->run();
    for (auto& t : threads)
        t.join();
}

void io_pool::stop() {
    for (auto& g : guards_->work)
        g.reset();
    for (auto& c : contexts_)
        c->stop();
}

void io_pool::shutdown() {
    stop();
    for (auto& c : contexts_)
        static_cast<context&>(*c).shutdown();
}

}  // namespace segue::runtime

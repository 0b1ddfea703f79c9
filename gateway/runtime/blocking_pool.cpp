#include "gateway/runtime/blocking_pool.hpp"

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/thread_pool.hpp>
#include <boost/asio/use_awaitable.hpp>

namespace segue::runtime {

namespace asio = boost::asio;

struct blocking_pool::impl {
    explicit impl(int n) : pool(static_cast<std::size_t>(n < 1 ? 1 : n)) {}
    asio::thread_pool pool;
};

blocking_pool::blocking_pool(int threads) : impl_(std::make_unique<impl>(threads)) {}
blocking_pool::~blocking_pool() {
    stop();
}

namespace {
// A plain function, not a capturing lambda: coroutine parameters live in the frame, while a
// coroutine lambda's captures live in a closure object whose lifetime is easy to get wrong.
asio::awaitable<void> invoke(std::function<void()> fn) {
    fn();
    co_return;
}
}  // namespace

asio::awaitable<void> blocking_pool::run(std::function<void()> fn) {
    // co_spawn onto the pool and await it: the completion comes back to our executor.
    co_await asio::co_spawn(impl_->pool.get_executor(), invoke(std::move(fn)), asio::use_awaitable);
}

void blocking_pool::stop() {
    impl_->pool.join();
}

}  // namespace segue::runtime

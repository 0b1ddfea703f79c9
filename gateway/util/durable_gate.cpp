#include "gateway/util/durable_gate.hpp"

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/async_result.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <memory>
#include <utility>

namespace segue::util {

namespace asio = boost::asio;

durable_gate::~durable_gate() {
    open(false);
}

void durable_gate::open(bool durable) {
    std::vector<std::function<void(bool)>> waiters;
    {
        std::lock_guard lk(m_);
        if (state_)
            return;
        state_ = durable;
        waiters.swap(waiters_);
    }
    for (auto& w : waiters)
        w(durable);
}

std::optional<bool> durable_gate::state() const {
    std::lock_guard lk(m_);
    return state_;
}

asio::awaitable<bool> durable_gate::wait() {
    if (auto s = state())
        co_return *s;
    auto ex = co_await asio::this_coro::executor;
    co_return co_await asio::async_initiate<decltype(asio::use_awaitable), void(bool)>(
        [this, ex](auto handler) {
            using handler_t = decltype(handler);
            auto h = std::make_shared<handler_t>(std::move(handler));
            auto resume = [h, ex](bool v) { asio::post(ex, [h, v]() mutable { (*h)(v); }); };
            std::unique_lock lk(m_);
            if (state_) {
                const bool v = *state_;
                lk.unlock();
                resume(v);
                return;
            }
            waiters_.push_back(std::move(resume));
        },
        asio::use_awaitable);
}

}  // namespace segue::util

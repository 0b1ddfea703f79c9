#include "gateway/net/dns.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <netdb.h>
#include <sys/socket.h>

#include <algorithm>
#include <cstring>
#include <mutex>
#include <optional>

namespace segue::net {

namespace asio = boost::asio;
using steady = std::chrono::steady_clock;

dns_answer dns_resolver::system_lookup(const std::string& host) {
    dns_answer out;
    addrinfo hints{};
    hints.ai_family = AF_UNSPEC;  // every A and AAAA record, whatever the local interfaces
    hints.ai_socktype = SOCK_STREAM;
    addrinfo* res = nullptr;
    const int rc = ::getaddrinfo(host.c_str(), nullptr, &hints, &res);
    if (rc != 0) {
        out.error = ::gai_strerror(rc);
        return out;
    }
    for (auto* p = res; p; p = p->ai_next) {
        asio::ip::address a;
        if (p->ai_family == AF_INET) {
            const auto* sa = reinterpret_cast<const sockaddr_in*>(p->ai_addr);
            asio::ip::address_v4::bytes_type b;
            std::memcpy(b.data(), &sa->sin_addr, b.size());
            a = asio::ip::address_v4(b);
        } else if (p->ai_family == AF_INET6) {
            const auto* sa = reinterpret_cast<const sockaddr_in6*>(p->ai_addr);
            asio::ip::address_v6::bytes_type b;
            std::memcpy(b.data(), &sa->sin6_addr, b.size());
            a = asio::ip::address_v6(b, sa->sin6_scope_id);
        } else {
            continue;
        }
        if (std::find(out.addresses.begin(), out.addresses.end(), a) == out.addresses.end())
            out.addresses.push_back(a);
    }
    ::freeaddrinfo(res);
    if (out.addresses.empty())
        out.error = "no addresses";
    return out;
}

dns_resolver::dns_resolver(dns_options o, lookup_fn fn) : opts_(o), lookup_(std::move(fn)) {
    const int n = std::max(1, opts_.threads);
    for (int i = 0; i < n; ++i)
        threads_.emplace_back([this] { run(); });
}

dns_resolver::~dns_resolver() {
    {
        std::lock_guard lk(m_);
        stopping_ = true;
        queue_.clear();
    }
    cv_.notify_all();
    for (auto& t : threads_)
        t.join();
}

asio::awaitable<dns_answer> dns_resolver::resolve(std::string host, steady::time_point deadline) {
    auto ex = co_await asio::this_coro::executor;
    struct state {
        explicit state(const asio::any_io_executor& e) : timer(e) {}
        asio::steady_timer timer;
        std::optional<dns_answer> answer;
    };
    auto st = std::make_shared<state>(ex);
    st->timer.expires_at(deadline);
    bool hit = false;
    dns_answer cached_answer;
    {
        std::lock_guard lk(m_);
        auto it = entries_.find(host);
        if (it != entries_.end() && !it->second.in_flight && it->second.expires > steady::now()) {
            ++stats_.hits;
            cached_answer = it->second.answer;
            hit = true;
        }
    }
    if (hit)
        co_return cached_answer;
    // The answer is posted to this coroutine's executor (callers run on a strand or a
    // single-threaded context): the check below and the wait cannot miss it.
    // The waiter runs, and is dropped, on a lookup thread, and may outlive this coroutine and
    // its io_context (a caller that timed out). So it holds nothing of the caller's but a
    // mailbox: the executor sits there only while this coroutine lives, and is posted to under
    // the mailbox's lock; the coroutine empties it (under the same lock) when it ends, however
    // it ends, so nothing of its io_context is touched or destroyed on a lookup thread after.
    struct mailbox {
        std::mutex m;
        asio::any_io_executor ex;  // empty once the caller is gone
        std::weak_ptr<state> st;
    };
    auto box = std::make_shared<mailbox>();
    box->ex = ex;
    box->st = st;
    struct close_on_exit {
        mailbox& b;
        ~close_on_exit() {
            std::lock_guard lk(b.m);
            b.ex = {};
        }
    } closer{*box};
    request(host, [box](const dns_answer& a) {
        std::lock_guard lk(box->m);
        if (!box->ex)
            return;
        asio::post(box->ex, [weak = box->st, a] {
            auto st = weak.lock();
            if (st && !st->answer) {
                st->answer = a;
                st->timer.cancel();
            }
        });
    });
    if (!st->answer)
        co_await st->timer.async_wait(asio::as_tuple(asio::use_awaitable));
    if (!st->answer) {
        dns_answer t;
        t.timed_out = true;
        t.error = "timed out";
        co_return t;
    }
    co_return *st->answer;
}

void dns_resolver::request(const std::string& host, waiter w) {
    std::optional<dns_answer> now;
    {
        std::lock_guard lk(m_);
        auto it = entries_.find(host);
        if (it != entries_.end()) {
            auto& e = it->second;
            if (e.in_flight) {
                ++stats_.joined;
                e.waiters.push_back(std::move(w));
                return;
            }
            if (e.expires > steady::now()) {  // filled in since the caller looked
                ++stats_.hits;
                now = e.answer;
            }
        } else if (entries_.size() >= opts_.max_entries) {
            make_room();
        }
        if (!now) {
            auto& e = entries_[host];
            e.in_flight = true;
            e.waiters.push_back(std::move(w));
            queue_.push_back(host);
            ++stats_.lookups;
        }
    }
    if (now) {
        w(*now);
        return;
    }
    cv_.notify_one();
}

void dns_resolver::run() {
    for (;;) {
        std::string host;
        {
            std::unique_lock lk(m_);
            cv_.wait(lk, [&] { return stopping_ || !queue_.empty(); });
            if (stopping_)
                return;
            host = std::move(queue_.front());
            queue_.pop_front();
        }
        dns_answer a = lookup_(host);
        std::vector<waiter> waiters;
        {
            std::lock_guard lk(m_);
            auto it = entries_.find(host);
            if (it == entries_.end())
                continue;
            waiters = std::move(it->second.waiters);
            if (a.ok() && opts_.ttl.count() > 0) {
                it->second.in_flight = false;
                it->second.answer = a;
                it->second.expires = steady::now() + opts_.ttl;
            } else {
                entries_.erase(it);  // failures are not cached; ttl 0: nothing is
            }
        }
        for (auto& w : waiters)
            w(a);
    }
}

void dns_resolver::make_room() {
    const auto now = steady::now();
    for (auto it = entries_.begin(); it != entries_.end();) {
        if (!it->second.in_flight && it->second.expires <= now)
            it = entries_.erase(it);
        else
            ++it;
    }
    if (entries_.size() < opts_.max_entries)
        return;
    auto victim = entries_.end();
    for (auto it = entries_.begin(); it != entries_.end(); ++it)
        if (!it->second.in_flight &&
            (victim == entries_.end() || it->second.expires < victim->second.expires))
            victim = it;
    if (victim != entries_.end())
        entries_.erase(victim);
}

dns_resolver::counters dns_resolver::stats() const {
    std::lock_guard lk(m_);
    return stats_;
}

std::size_t dns_resolver::cached() const {
    std::lock_guard lk(m_);
    std::size_t n = 0;
    for (const auto& [h, e] : entries_)
        n += e.in_flight ? 0 : 1;
    return n;
}

std::shared_ptr<dns_resolver> default_dns_resolver() {
    static const auto r =
        std::make_shared<dns_resolver>(dns_options{.threads = 2, .ttl = {}, .max_entries = 1});
    return r;
}

}  // namespace segue::net

// The DNS resolver with a fake lookup: lookups run concurrently (a slow name does not hold up
// another), one lookup serves every concurrent request for a name, answers are cached for the
// TTL and no longer, failures are not cached, the cache is bounded, deadlines hold.

#include <gtest/gtest.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "gateway/net/dns.hpp"

namespace {

namespace asio = boost::asio;
using namespace std::chrono_literals;
using segue::net::dns_answer;
using segue::net::dns_options;
using segue::net::dns_resolver;
using steady = std::chrono::steady_clock;

// Names answer 10.0.0.<n>; a name can be held (its lookup blocks until released) or fail.
struct fake_dns {
    std::mutex m;
    std::condition_variable cv;
    std::map<std::string, int> calls;
    std::map<std::string, bool> held;
    std::set<std::string> failing;
    dns_answer lookup(const std::string& host) {
        std::unique_lock lk(m);
        ++calls[host];
        cv.wait(lk, [&] { return !held[host]; });
        dns_answer a;
        if (failing.count(host)) {
            a.error = "Name or service not known";
            return a;
        }
        a.addresses.push_back(asio::ip::make_address("10.0.0." + std::to_string(host.size())));
        return a;
    }
    void hold(const std::string& h) {
        std::lock_guard lk(m);
        held[h] = true;
    }
    void release(const std::string& h) {
        {
            std::lock_guard lk(m);
            held[h] = false;
        }
        cv.notify_all();
    }
    int calls_of(const std::string& h) {
        std::lock_guard lk(m);
        return calls[h];
    }
};

struct fixture {
    fake_dns fake;
    asio::io_context ioc;
    std::unique_ptr<dns_resolver> r;
    explicit fixture(dns_options o) {
        r = std::make_unique<dns_resolver>(o,
                                           [this](const std::string& h) { return fake.lookup(h); });
    }
    std::future<dns_answer> start(const std::string& host, std::chrono::milliseconds within = 5s) {
        return asio::co_spawn(ioc, r->resolve(host, steady::now() + within), asio::use_future);
    }
    // Runs the context until `f` is ready (or 5 s).
    dns_answer wait(std::future<dns_answer>& f) {
        const auto until = steady::now() + 5s;
        while (f.wait_for(0s) != std::future_status::ready && steady::now() < until) {
            ioc.restart();
            ioc.run_for(5ms);
        }
        EXPECT_EQ(f.wait_for(0s), std::future_status::ready);
        return f.get();
    }
};

TEST(Dns, ASlowNameDoesNotHoldUpAnother) {
    fixture t({.threads = 4, .ttl = 30s});
    t.fake.hold("slow.example");
    auto slow = t.start("slow.example");
    auto fast = t.start("fast.example");
    auto a = t.wait(fast);
    ASSERT_TRUE(a.ok()) << a.error;
    EXPECT_EQ(a.addresses[0].to_string(), "10.0.0.12");
    EXPECT_NE(slow.wait_for(0s), std::future_status::ready);
    t.fake.release("slow.example");
    EXPECT_TRUE(t.wait(slow).ok());
}

TEST(Dns, ConcurrentRequestsForANameShareOneLookup) {
    fixture t({.threads = 4, .ttl = 30s});
    t.fake.hold("a.example");
    std::vector<std::future<dns_answer>> fs;
    for (int i = 0; i < 20; ++i)
        fs.push_back(t.start("a.example"));
    for (int i = 0; i < 20; ++i) {  // let them all register
        t.ioc.restart();
        t.ioc.run_for(1ms);
    }
    t.fake.release("a.example");
    for (auto& f : fs)
        EXPECT_TRUE(t.wait(f).ok());
    EXPECT_EQ(t.fake.calls_of("a.example"), 1);
    EXPECT_EQ(t.r->stats().lookups, 1u);
    EXPECT_EQ(t.r->stats().joined, 19u);
}

TEST(Dns, AnswersAreCachedForTheTtlAndNoLonger) {
    fixture t({.threads = 2, .ttl = 200ms});
    auto f1 = t.start("c.example");
    EXPECT_TRUE(t.wait(f1).ok());
    auto f2 = t.start("c.example");
    EXPECT_TRUE(t.wait(f2).ok());
    EXPECT_EQ(t.fake.calls_of("c.example"), 1);
    EXPECT_EQ(t.r->stats().hits, 1u);
    std::this_thread::sleep_for(250ms);
    auto f3 = t.start("c.example");
    EXPECT_TRUE(t.wait(f3).ok());
    EXPECT_EQ(t.fake.calls_of("c.example"), 2) << "expired: looked up again";
}

TEST(Dns, ATtlOfZeroCachesNothingAndFailuresAreNotCached) {
    fixture t({.threads = 2, .ttl = 0ms});
    for (int i = 0; i < 3; ++i) {
        auto f = t.start("n.example");
        EXPECT_TRUE(t.wait(f).ok());
    }
    EXPECT_EQ(t.fake.calls_of("n.example"), 3);
    EXPECT_EQ(t.r->cached(), 0u);

    fixture u({.threads = 2, .ttl = 30s});
    u.fake.failing.insert("bad.example");
    for (int i = 0; i < 2; ++i) {
        auto f = u.start("bad.example");
        auto a = u.wait(f);
        EXPECT_FALSE(a.ok());
        EXPECT_EQ(a.error, "Name or service not known");
    }
    EXPECT_EQ(u.fake.calls_of("bad.example"), 2);
}

TEST(Dns, TheCacheIsBounded) {
    fixture t({.threads = 2, .ttl = 30s, .max_entries = 3});
    for (int i = 0; i < 10; ++i) {
        auto f = t.start("h" + std::to_string(i) + ".example");
        EXPECT_TRUE(t.wait(f).ok());
    }
    EXPECT_LE(t.r->cached(), 3u);
}

TEST(Dns, TheDeadlineHoldsWhileALookupHangs) {
    fixture t({.threads = 1, .ttl = 30s});
    t.fake.hold("hung.example");
    const auto t0 = steady::now();
    auto f = t.start("hung.example", 100ms);
    auto a = t.wait(f);
    EXPECT_TRUE(a.timed_out);
    EXPECT_FALSE(a.ok());
    EXPECT_LT(steady::now() - t0, 2s);
    t.fake.release("hung.example");  // the resolver's destructor joins its threads
}

}  // namespace

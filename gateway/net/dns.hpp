#pragma once
// Host name resolution for outbound calls (provider APIs, audio_url fetches, webhooks, the URL
// guard at submit): concurrent and cached, so no lookup waits behind another.
//
// Asio's resolver runs getaddrinfo on one hidden thread per io_context, one lookup at a time:
// a slow name server made every submit with a host name queue behind the slowest lookup. Here a
// small pool of threads runs the lookups (`threads` at once), concurrent requests for one name
// share one lookup, and answers are cached for `ttl`.
//
// The TTL is the configured one, not the record's: getaddrinfo does not report DNS TTLs. A name
// whose records change is seen by the gateway at most `ttl` later (the default, 30 s, is shorter
// than most records' own TTL); 0 turns the cache off. Failures are not cached. The cache holds
// at most `max_entries` names (the soonest-expiring one makes room).

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/ip/address.hpp>

#include <chrono>
#include <condition_variable>
#include <cstdint>
#include <deque>
#include <functional>
#include <memory>
#include <mutex>
#include <string>
#include <thread>
#include <unordered_map>
#include <vector>

namespace segue::net {

struct dns_answer {
    std::vector<boost::asio::ip::address> addresses;  // every A and AAAA record
    std::string error;                                // set when the lookup failed
    bool timed_out = false;                           // resolve()'s deadline passed first
    bool ok() const { return error.empty() && !addresses.empty(); }
};

struct dns_options {
    int threads = 4;
    std::chrono::milliseconds ttl{30000};
    std::size_t max_entries = 4096;
};

class dns_resolver {
  public:
    // A blocking lookup of one name (the system's getaddrinfo by default; tests pass a fake).
    using lookup_fn = std::function<dns_answer(const std::string& host)>;
    static dns_answer system_lookup(const std::string& host);

    explicit dns_resolver(dns_options o = {}, lookup_fn fn = system_lookup);
    ~dns_resolver();  // joins the lookup threads (a lookup in progress is waited for)
    dns_resolver(const dns_resolver&) = delete;
    dns_resolver& operator=(const dns_resolver&) = delete;

    // The addresses of `host` (a name, not an IP literal), resuming on the caller's executor by
    // `deadline` at the latest (then timed_out, and the lookup goes on for whoever asks next).
    boost::asio::awaitable<dns_answer> resolve(std::string host,
                                               std::chrono::steady_clock::time_point deadline);

    struct counters {
        std::uint64_t hits = 0;     // answered from the cache
        std::uint64_t lookups = 0;  // lookups run (misses that did not join one in flight)
        std::uint64_t joined = 0;   // misses that waited for a lookup already in flight
    };
    counters stats() const;
    std::size_t cached() const;

  private:
    using waiter = std::function<void(const dns_answer&)>;
    struct entry {
        dns_answer answer;
        std::chrono::steady_clock::time_point expires{};
        bool in_flight = false;
        std::vector<waiter> waiters;
    };
    // Calls `w` with the answer: now (from the cache, before returning) or when the lookup ends.
    void request(const std::string& host, waiter w);
    void run();
    void make_room();  // under m_

    dns_options opts_;
    lookup_fn lookup_;
    mutable std::mutex m_;
    std::condition_variable cv_;
    std::unordered_map<std::string, entry> entries_;
    std::deque<std::string> queue_;
    bool stopping_ = false;
    counters stats_;
    std::vector<std::thread> threads_;
};

// For clients and URL checks the application did not give a resolver (tests, tools): shared, 2
// threads, no cache.
std::shared_ptr<dns_resolver> default_dns_resolver();

}  // namespace segue::net

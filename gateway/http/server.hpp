#pragma once
// The HTTP/1.1 front door: a listener and one coroutine per connection, each on its own strand.
// Limits (header and body size, timeouts, connection cap) come from config; graceful shutdown
// turns readiness off, stops accepting and lets in-flight requests finish under a deadline.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>

#include <boost/asio/awaitable.hpp>

#include "gateway/config/settings.hpp"

namespace segue::runtime {
class io_pool;
}
namespace segue::metrics {
class registry;
}

namespace segue::http {

class router;

class server {
  public:
    // Connections are spread over the pool's contexts; the listener runs on pool.main().
    server(runtime::io_pool& pool, const config::settings& settings, const router& routes,
           metrics::registry& metrics);
    ~server();
    server(const server&) = delete;
    server& operator=(const server&) = delete;

    // Binds and starts accepting. Throws std::system_error if the address cannot be bound.
    void start();
    // The bound address ("127.0.0.1:41723"), valid after start().
    std::string local_address() const;
    std::uint16_t port() const;

    // False once shutdown has begun.
    bool ready() const noexcept;
    // Begins a graceful shutdown (idempotent): readiness turns false at once; after
    // server.shutdown_delay the listener closes (the connections the kernel had queued on it
    // are accepted first, not reset), idle keep-alive connections close, busy ones close after
    // their current response, and a connection that has not sent its first request gets a
    // second to send it (it is then served, with Connection: close).
    // `done(clean)` runs on the main context when no connection is left (clean) or when the drain
    // deadline passes (connections are then cut).
    void shutdown(std::function<void(bool clean)> done);

    std::uint64_t active_connections() const noexcept;

    struct impl;  // opaque; public so the connection type in server.cpp can name it

  private:
    static boost::asio::awaitable<void> drain(std::shared_ptr<impl> self,
                                              std::function<void(bool)> done);
    std::shared_ptr<impl> impl_;
};

}  // namespace segue::http

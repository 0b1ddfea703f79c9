#pragma once
// HTTP plumbing shared by the fake providers: a small single-threaded HTTP/1.1 server whose
// replies can be delayed, reset (RST after the request was read) or cut (FIN, no answer), and a
// plain-HTTP client for webhooks and downloads. Everything runs on one io_context thread, so
// fake state needs no locks.
//
// Why not segue::http::server: a fake must misbehave on purpose (reset a connection after reading
// the request, answer nothing), which the gateway's own server rightly cannot do.

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/awaitable.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace segue::fakes {

namespace net = boost::asio;

// Completion token for co_await without exceptions: (error_code, results...).
inline constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

using header_pairs = std::vector<std::pair<std::string, std::string>>;

struct fake_request {
    std::string method;
    std::string target;
    std::string path;      // target up to '?'
    std::string query;     // after '?'
    header_pairs headers;  // lower-case names, in arrival order
    std::string body;
    std::string remote;
    std::int64_t log_seq = -1;  // set by whoever records the request (request_log)
    // CLOCK_MONOTONIC (steady_clock on Linux: one clock for every process of the machine), in
    // microseconds, when the whole request had been read: bench/submit_overhead.sh compares it
    // with the client's send time.
    std::int64_t received_mono_us = 0;

    // First value of a header (name in any case).
    std::optional<std::string_view> header(std::string_view name) const;
    // Percent-decoded value of the first query parameter `name` ('+' is a space).
    std::optional<std::string> query_param(std::string_view name) const;
    // Every query parameter, decoded, in order.
    std::vector<std::pair<std::string, std::string>> query_params() const;
};

struct fake_reply {
    enum class action {
        respond,  // write the response
        reset,    // the request was read; reset the connection (RST), answer nothing
        close,    // the request was read; close the connection (FIN), answer nothing
    };
    int status = 200;
    std::string content_type = "application/json";
    std::string body;
    header_pairs headers;
    std::int64_t delay_ms = 0;  // wait this long before acting
    action act = action::respond;
    std::string note;  // why (a fault), for the request log

    static fake_reply json(int status, std::string body) {
        fake_reply r;
        r.status = status;
        r.body = std::move(body);
        return r;
    }
};

class request_handler {
  public:
    virtual ~request_handler() = default;
    // Runs on the server's io_context. The handler may mutate the request (it is not reused).
    virtual net::awaitable<fake_reply> handle(fake_request& request) = 0;
    // Called once the reply was acted on (written, reset or closed), e.g. to note the outcome
    // in the request log.
    virtual void replied(const fake_request& request, const fake_reply& reply) {}
};

class fake_server {
  public:
    fake_server(net::io_context& ioc, request_handler& handler,
                std::uint64_t max_body_bytes = 512ull * 1024 * 1024);
    // "127.0.0.1:0" or "[::1]:8080". Throws std::runtime_error / std::system_error.
    void listen(const std::string& host_port);
    std::uint16_t port() const { return port_; }
    std::string host() const { return host_; }

  private:
    static net::awaitable<void> accept_loop(fake_server* self);
    static net::awaitable<void> session(fake_server* self, net::ip::tcp::socket socket);

    net::io_context& ioc_;
    request_handler& handler_;
    std::uint64_t max_body_;
    net::ip::tcp::acceptor acceptor_;
    std::uint16_t port_ = 0;
    std::string host_;
};

// One plain-HTTP exchange (http:// only), a fresh connection each time.
struct client_result {
    bool ok = false;  // a complete response was read
    int status = 0;
    std::string body;
    std::string error;  // when !ok
};

struct client_request {
    std::string method = "GET";
    std::string url;
    std::string body;
    std::string content_type;  // "" for none
    header_pairs headers;
    std::chrono::milliseconds timeout{5000};  // the whole exchange
    std::uint64_t max_body_bytes = 512ull * 1024 * 1024;
};

net::awaitable<client_result> http_call(client_request request);

// Percent-decoding for query strings and form bodies ('+' is a space).
std::string url_decode(std::string_view s);
// "host:port" -> (host, port); accepts "[v6]:port". Throws std::invalid_argument.
std::pair<std::string, std::uint16_t> split_host_port(const std::string& host_port);
// Milliseconds since the Unix epoch.
std::int64_t unix_ms();

}  // namespace segue::fakes

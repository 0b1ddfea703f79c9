#pragma once
// Internal to gateway/net/http_client*.cpp, never included elsewhere (it brings Beast in).
// What the connection pool (http_client.cpp) and one HTTP/1.1 exchange on an open connection
// (http_client_exchange.cpp) share. Two translation units, so the exchange's Beast read and
// write instantiations (plain and TLS) compile apart from, and alongside, the rest.

#include <sys/socket.h>

#include <boost/asio/awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>

#include <cerrno>
#include <chrono>
#include <cstdint>
#include <memory>
#include <string>

#include "gateway/net/http_client.hpp"

namespace segue::net::detail {

namespace beast = boost::beast;
using steady = std::chrono::steady_clock;
using error_code = boost::system::error_code;
using tls_stream = beast::ssl_stream<beast::tcp_stream>;

// A parsed request URL.
struct target {
    bool tls = false;
    std::string host;  // lower case; an IPv6 literal without brackets
    bool host_is_ip = false;
    std::uint16_t port = 0;
    std::string host_field;  // the Host header: host[:port]
    std::string path;        // origin-form request target: path and query
    std::string key;         // pool key: scheme://host:port
};

// --- connections ---

struct connection {
    std::unique_ptr<beast::tcp_stream> plain;
    std::unique_ptr<tls_stream> tls;
    beast::flat_buffer buffer;
    std::string key;
    steady::time_point idle_since{};

    beast::tcp_stream& tcp() { return tls ? beast::get_lowest_layer(*tls) : *plain; }
    void close() {
        // No TLS close_notify: it costs a round trip and a peer that is gone would stall it.
        tcp().close();
    }
    // A pooled connection is usable only if the server has neither closed it (FIN or RST) nor
    // sent anything unasked while it sat idle. A non-blocking peek, so safe on the IO thread.
    bool still_open() {
        if (buffer.size() > 0)
            return false;
        char b;
        const auto n = ::recv(tcp().socket().native_handle(), &b, 1, MSG_PEEK | MSG_DONTWAIT);
        return n < 0 && (errno == EAGAIN || errno == EWOULDBLOCK);
    }
};

// How one attempt on one connection went, for the retry decision.
struct attempt_state {
    error_code ec;             // the I/O error that ended it, if any
    bool sent = false;         // the kernel accepted at least one request byte
    bool source_used = false;  // body_source was called: the body cannot be replayed
    bool response_started = false;
    bool reusable = false;
};

// One request and its response on `c` (`s` is its plain or TLS stream), all within `deadline`:
// sets `out` (status, headers, body or the sink's chunks, or the failure) and `at` (what the
// retry decision needs). Only the options' user_agent, max_header_bytes and max_response_bytes
// are used.
boost::asio::awaitable<void> exchange(beast::tcp_stream& s, connection& c, const target& t,
                                      request& r, steady::time_point deadline,
                                      const body_sink* sink, std::uint64_t sink_max,
                                      const client_options& opts, attempt_state& at, result& out);
boost::asio::awaitable<void> exchange(tls_stream& s, connection& c, const target& t, request& r,
                                      steady::time_point deadline, const body_sink* sink,
                                      std::uint64_t sink_max, const client_options& opts,
                                      attempt_state& at, result& out);

}  // namespace segue::net::detail

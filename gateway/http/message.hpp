#pragma once
// The request/response types handlers see. Beast stays inside gateway/http/*.cpp: handlers
// work against this interface, which keeps their translation units cheap to compile.

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstddef>
#include <functional>
#include <optional>
#include <span>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace segue::http {

struct response {
    int status = 200;
    std::string content_type;  // empty: no Content-Type header
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;

    void set_header(std::string name, std::string value) {
        headers.emplace_back(std::move(name), std::move(value));
    }
};

// Outcome of one read of a streamed request body.
struct body_chunk {
    std::size_t size = 0;  // bytes written into the caller's buffer
    bool done = false;     // the body is complete (size may still be > 0)
    enum class failure { none, too_large, timeout, malformed, closed } error = failure::none;
};

// One request in flight on a connection. Implemented by the connection (gateway/http/server.cpp).
class context {
  public:
    virtual ~context() = default;

    virtual std::string_view method() const = 0;  // "GET", "POST", ...
    virtual std::string_view target() const = 0;  // raw request-target
    std::string_view path() const;                // target up to '?'
    std::string_view query() const;               // after '?', without it
    // First value of the header (case-insensitive name), if present.
    virtual std::optional<std::string_view> header(std::string_view name) const = 0;
    // Every request header, names lower-cased, in arrival order.
    virtual std::vector<std::pair<std::string, std::string>> headers() const = 0;
    virtual const std::string& request_id() const = 0;
    virtual std::string_view remote_address() const = 0;
    // Value of `{name}` in the matched route template; empty if absent.
    std::string_view param(std::string_view name) const;
    // The matched route template ("/v1/extensions/{id}"), for labels and logs.
    std::string_view route() const { return route_; }

    // Buffered routes: the whole body, read before the handler runs.
    virtual const std::string& body() const = 0;
    // Streaming routes: reads the next part of the body into `into`. Each call has the
    // configured per-read timeout, so a client trickling bytes is cut off.
    virtual boost::asio::awaitable<body_chunk> read_body(std::span<char> into) = 0;
    virtual std::optional<std::uint64_t> content_length() const = 0;

    // The response the connection writes when the handler returns.
    response& res() { return res_; }

    // Streaming responses (Server-Sent Events, file downloads): sends the status line and
    // headers now (plus those already set on res()), chunked unless `content_length` is given;
    // after it, res().body is ignored. Returns false if the client is gone.
    virtual boost::asio::awaitable<bool> begin_stream(
        int status, std::string content_type,
        std::optional<std::uint64_t> content_length = std::nullopt) = 0;
    virtual boost::asio::awaitable<bool> write_stream(std::string_view data) = 0;
    // After begin_stream, for long-lived streams (SSE): `fn` runs once, on the connection's
    // executor, when the client closes the connection (noticed at once by a read kept pending on
    // the socket, not at the next write) or when shutdown closes the streams. The default (for
    // contexts without a socket) never calls it.
    virtual void watch_peer_close(std::function<void()> fn) { (void)fn; }
    // True once shutdown has begun: long-lived handlers (SSE) should finish.
    virtual bool draining() const = 0;

    // Set by the router.
    void set_route(std::string_view route,
                   std::vector<std::pair<std::string, std::string>> params) {
        route_ = route;
        params_ = std::move(params);
    }

  protected:
    response res_;
    std::string_view route_;
    std::vector<std::pair<std::string, std::string>> params_;
};

}  // namespace segue::http

#pragma once
// The upstream HTTP/1.1 client: provider APIs and audio URL downloads.
//
// One attempt per call: the caller owns the retry policy (see core/). The only retry made here is
// the stale keep-alive case described at http_client::send(). Every call has a deadline (the
// request's `timeout`, else client_options::request_timeout) and a connect deadline
// (client_options::connect_timeout) covering DNS, TCP connect and the TLS handshake.
//
// Beast and the Asio I/O objects stay in http_client.cpp; only awaitable is needed here.

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

namespace boost::asio {
class io_context;
}

namespace segue::metrics {
class registry;
}

namespace segue::net {

class dns_resolver;

// One address a host name resolved to (numeric text as Asio prints it: "10.0.0.1", "::1",
// "::ffff:127.0.0.1"), handed to client_options::check_endpoints.
struct resolved_endpoint {
    std::string address;
    std::uint16_t port = 0;
    bool v6 = false;
};

// Called with the URL's host and every address it resolved to, after resolution and before any
// connection is attempted. Returns nullopt to allow, or the reason for refusing (the request
// then fails with failure::refused_address and that message). The client connects only to the
// addresses it showed this function: no second resolution, so no DNS-rebinding window.
// This is the SSRF guard's hook (net/url_guard); it applies to every request of the client, so
// user-given URLs (audio_url, webhook_url) get their own client with the guard installed.
using endpoint_check = std::function<std::optional<std::string>(
    std::string_view host, const std::vector<resolved_endpoint>& endpoints)>;

// Runs blocking work (file I/O) off the IO thread and resumes the awaiting coroutine on its own
// executor: runtime::blocking_pool::run has exactly this shape.
using blocking_runner = std::function<boost::asio::awaitable<void>(std::function<void()>)>;

// Receives a streamed response body chunk by chunk (the view is valid until the awaitable
// completes), then once more with an empty chunk when the body is complete (flush or close
// there). Returning false, or throwing, fails the transfer with failure::local_io.
using body_sink = std::function<boost::asio::awaitable<bool>(std::string_view chunk)>;

struct client_options {
    // Resolve + TCP connect + TLS handshake of a new connection (also bounded by the request's
    // own deadline).
    std::chrono::milliseconds connect_timeout{5000};
    // Whole exchange, connect included; the default for requests without their own `timeout`.
    std::chrono::milliseconds request_timeout{30000};
    // Cap on in-memory response bodies (send()); larger is failure::too_large.
    std::uint64_t max_response_bytes = 8 * 1024 * 1024;
    // Cap on a response's status line and header fields.
    std::uint32_t max_header_bytes = 64 * 1024;
    // Keep-alive pool: idle connections kept per (scheme, host, port); 0 disables reuse.
    std::size_t max_idle_per_host = 8;
    // A pooled connection idle this long is closed.
    std::chrono::milliseconds idle_timeout{30000};
    // http:// URLs only when the config says so (tests, local fakes); https:// always works.
    bool allow_plain_http = false;
    // Certificate chain + host name verification against the system CA store (and ca_file).
    bool verify_tls = true;
    // An extra PEM CA bundle, trusted in addition to the system store (self-signed test certs).
    std::string ca_file;
    std::string user_agent = "segue/0.1";
    // SSRF hook, see endpoint_check. Empty: every address is allowed.
    endpoint_check check_endpoints;
    // Needed by download(request, path, ...) only: where the file writes run.
    blocking_runner run_blocking;
    // Resolves host names (dns.hpp: concurrent, cached); null: the client makes its own.
    std::shared_ptr<dns_resolver> resolver;
};

struct request {
    std::string method = "GET";
    std::string url;  // absolute http(s) URL; user info is refused, a fragment is ignored
    // Extra header fields. Host may be overridden; the framing fields (Content-Length,
    // Transfer-Encoding, Connection, Keep-Alive, Upgrade, TE, Trailer) belong to the client and
    // are refused (failure::invalid_request), as are names or values with CR, LF or NUL.
    std::vector<std::pair<std::string, std::string>> headers;
    // In-memory body (sent with Content-Length when non-empty or the method usually has one) ...
    std::string body;
    // ... or a streamed body: the client awaits `body_source` until it returns an empty string.
    // `body_size` (Content-Length) is required with it and must match exactly, so large spooled
    // files (multipart uploads) never sit in memory. A source that throws fails the request with
    // failure::local_io.
    std::function<boost::asio::awaitable<std::string>()> body_source;
    std::optional<std::uint64_t> body_size;
    // Whole-exchange deadline for this call, overriding client_options::request_timeout.
    std::optional<std::chrono::milliseconds> timeout;
    // Each write and read of the exchange (the header, a piece of the body, the response's
    // header, a piece of its body) must complete within this, whatever `timeout` allows the
    // whole: a long upload or download is given up on once the peer stops reading or answering
    // for this long (failure::timeout). Unset: only the deadline.
    std::optional<std::chrono::milliseconds> stall_timeout;
    // Whether replaying the request is harmless; by default true for GET, HEAD, PUT, DELETE,
    // OPTIONS and TRACE (RFC 9110 9.2.2). Set it for a POST carrying an idempotency key.
    std::optional<bool> idempotent;
    // The `host` label of the metrics; defaults to the URL's host. Set a fixed name for
    // user-given URLs so the label's cardinality stays bounded.
    std::string metrics_host;
    // download() only: give the sink each piece of the body as soon as it is read (a
    // Server-Sent Events stream) rather than once a 64 KiB buffer is full or the body ends.
    bool stream_chunks = false;
    // send() only: the answer is its status and header fields (a webhook delivery). A body
    // over client_options::max_response_bytes is then not a failure: it is not read (the
    // response's body stays empty) and the connection is closed instead of reused.
    bool status_only = false;
};

struct response {
    int status = 0;
    std::vector<std::pair<std::string, std::string>> headers;  // as received, in order
    std::string body;
    // First field with this name (case-insensitive).
    std::optional<std::string> header(std::string_view name) const;
};

enum class failure {
    none,
    bad_url,             // not an absolute http(s) URL we can use
    plain_http_refused,  // http:// while client_options::allow_plain_http is false
    invalid_request,     // bad method/header, body_source without body_size, size mismatch...
    resolve,             // DNS failed
    refused_address,     // check_endpoints refused the resolved addresses
    connect,             // TCP connect failed (refused, unreachable)
    tls,                 // TLS handshake or certificate verification failed
    timeout,             // a deadline passed (connect or whole exchange); see request_sent
    reset,               // the connection closed or broke mid-exchange
    too_large,           // response header or body over its cap
    protocol,            // the server did not speak valid HTTP/1.1
    local_io,            // body_source threw, a sink refused, the download file failed
};
std::string_view to_string(failure f) noexcept;

struct result {
    failure error = failure::none;
    std::string message;  // human detail for logs; empty on success
    // True if any request byte may have reached the server. With an error, the outcome is then
    // ambiguous: the server may have processed the request (reconcile before resubmitting).
    bool request_sent = false;
    int attempts = 0;  // connections tried: 1, or 2 after a stale keep-alive retry
    // Response body bytes received: res.body.size() for send(), bytes given to the sink or file
    // for download().
    std::uint64_t body_bytes = 0;
    response res;  // valid when error == none (any HTTP status: redirects are not followed)

    bool ok() const noexcept { return error == failure::none; }
};

class http_client {
  public:
    // Sockets, timers and the pool live on a strand of `ioc`, so the client may be used from
    // coroutines on any executor (each send hops onto the strand and back). Throws at start-up if
    // the TLS context cannot be built (e.g. an unreadable ca_file). Metrics are registered in
    // `m`; several clients may share one registry (the series then add up).
    http_client(boost::asio::io_context& ioc, client_options opts, metrics::registry& m);
    // Closes idle connections. Calls still in flight keep the internals alive and finish; their
    // connections are then closed instead of pooled. Must run before `ioc` is destroyed.
    // While connections sit idle a timer is pending on `ioc` (it closes them after
    // idle_timeout), so an `ioc.run()` without a work guard returns only after that, or once the
    // client is destroyed.
    ~http_client();
    http_client(const http_client&) = delete;
    http_client& operator=(const http_client&) = delete;

    // One request, one response read into memory (capped by max_response_bytes). Redirects are
    // returned, not followed (the caller re-checks the Location URL and decides).
    //
    // Retry: exactly one, and only for a stale keep-alive connection: when a connection taken
    // from the pool fails (closed or reset) before any byte of the response arrived, and either
    // the request is idempotent or provably not sent (the kernel accepted no byte of it), and no
    // streamed body was consumed, the request is sent again once on a fresh connection, within
    // the same deadline. A server may close an idle connection at any moment, so this failure
    // says nothing about the server's health; everything else (timeouts, fresh connections,
    // partial responses, non-idempotent requests that may have arrived) is returned to the
    // caller, whose retry policy knows the request's semantics.
    boost::asio::awaitable<result> send(request r);

    // Streams the response body to `sink` in chunks, capped at `max_bytes` (failure::too_large),
    // for 2xx responses only. Any other status is returned with its body in res.body (capped by
    // max_response_bytes) and the sink is not called. Same retry rule as send() (the sink is
    // called only after the response began, so never for an attempt that is retried).
    boost::asio::awaitable<result> download(request r, body_sink sink, std::uint64_t max_bytes);

    // The same into a file at `path` (created or truncated, mode 0640). File writes run on
    // client_options::run_blocking (failure::invalid_request if unset): the IO thread never
    // blocks on the disk. On any failure, or a non-2xx status, the file is removed, so a file
    // left behind is always a complete 2xx body.
    boost::asio::awaitable<result> download(request r, std::string path, std::uint64_t max_bytes);

  private:
    struct impl;
    std::shared_ptr<impl> impl_;
};

}  // namespace segue::net

#include "gateway/http/server.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/chunk_encode.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <array>
#include <atomic>
#include <chrono>
#include <mutex>
#include <random>
#include <span>
#include <stdexcept>
#include <system_error>
#include <unordered_map>

#include "gateway/api/problem.hpp"
#include "gateway/http/conditional.hpp"
#include "gateway/http/multipart.hpp"
#include "gateway/http/router.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/runtime/io_pool.hpp"
#include "gateway/util/unavailable.hpp"

namespace segue::http {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using std::chrono::steady_clock;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t body_read_capacity = 64 * 1024;

constexpr std::array<std::string_view, 7> known_methods{"GET",    "HEAD",  "POST",   "PUT",
                                                        "DELETE", "PATCH", "OPTIONS"};

// RFC 9110 6.6.1: a server with a clock sends Date on every answer (caches and players reckon
// a response's age from it). Formatted once a second per thread.
std::string_view date_now() {
    thread_local std::int64_t second = -1;
    thread_local std::string text;
    const auto s = std::chrono::duration_cast<std::chrono::seconds>(
                       std::chrono::system_clock::now().time_since_epoch())
                       .count();
    if (s != second) {
        second = s;
        text = http_date(s * 1000);
    }
    return text;
}

// CORS (Fetch standard). A file URL answers any origin: a signed link is its own credential
// (an <audio crossorigin>, a fetch() for a waveform, a browser's player of a link opened in a
// tab, whose sandboxed page has the origin "null"). The rest of the API answers the origins in
// api.cors_allow_origins: a page there holds a key, sent as a header, never as a cookie.
constexpr std::string_view cors_allow_headers =
    "Authorization, Content-Type, Idempotency-Key, Last-Event-ID, Range, If-None-Match, "
    "If-Modified-Since, If-Range, X-Request-Id";
constexpr std::string_view cors_expose_headers =
    "Location, Retry-After, ETag, Last-Modified, Content-Range, Content-Disposition, "
    "Accept-Ranges, Idempotent-Replayed, X-Request-Id";

// What Access-Control-Allow-Origin says to `origin` for `path`; empty: no CORS for it.
std::string cors_origin(const config::api_settings& api, std::string_view path,
                        std::string_view origin) {
    if (path.starts_with("/v1/files/"))
        return "*";
    for (const auto& o : api.cors_allow_origins) {
        if (o == "*")
            return "*";
        if (o == origin)
            return o;
    }
    return {};
}

// Whether `path`'s answer depends on the request's Origin (an allow-list of origins, not "*"):
// then every answer of it says Vary: Origin, one without CORS headers too, so that a cache
// never serves a request of one origin what was made for another (or for none).
bool varies_by_origin(const config::api_settings& api, std::string_view path) {
    if (path.starts_with("/v1/files/") || api.cors_allow_origins.empty())
        return false;
    return std::find(api.cors_allow_origins.begin(), api.cors_allow_origins.end(), "*") ==
           api.cors_allow_origins.end();
}

std::string_view method_label(std::string_view m) {
    for (auto k : known_methods)
        if (k == m)
            return k;
    return "OTHER";
}

// Request ids: 128 random bits as hex. Cheap, per-thread generator.
std::string new_request_id() {
    thread_local std::mt19937_64 gen{std::random_device{}()};
    static constexpr char hex[] = "0123456789abcdef";
    std::string s(32, '0');
    for (int half = 0; half < 2; ++half) {
        auto v = gen();
        for (int i = 0; i < 16; ++i)
            s[half * 16 + i] = hex[(v >> (i * 4)) & 0xf];
    }
    return s;
}

// A client-given X-Request-Id is echoed only if it is short and plainly printable, so it
// cannot inject anything into logs or headers.
bool acceptable_request_id(std::string_view id) {
    if (id.empty() || id.size() > 128)
        return false;
    for (unsigned char c : id) {
        bool ok = (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
                  c == '-' || c == '_' || c == '.' || c == ':';
        if (!ok)
            return false;
    }
    return true;
}

// What a 413 says of a route's body limit: the route's own words (naming the setting that
// makes it), else the server's limits.max_body_bytes, which it then is.
std::string body_limit_detail(const route& rt, std::uint64_t limit) {
    if (!rt.options.body_limit_detail.empty())
        return rt.options.body_limit_detail;
    return "request body exceeds " + std::to_string(limit) + " bytes" +
           (rt.options.max_body_bytes ? "" : " (limits.max_body_bytes)");
}

// The path of a request whose header could not be parsed, from its raw first bytes ("" when
// its request line did not come whole): whose error shape the answer takes.
std::string_view request_line_path(std::string_view raw) {
    const auto sp = raw.find(' ');
    if (sp == std::string_view::npos)
        return {};
    raw.remove_prefix(sp + 1);
    const auto end = raw.find_first_of(" ?\r\n");
    return end == std::string_view::npos ? std::string_view() : raw.substr(0, end);
}

std::pair<std::string, std::uint16_t> split_listen(const std::string& listen) {
    auto colon = listen.rfind(':');
    if (colon == std::string::npos)
        throw std::invalid_argument("listen address must be host:port: " + listen);
    std::string host = listen.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    int port = std::stoi(listen.substr(colon + 1));
    if (port < 0 || port > 65535)
        throw std::invalid_argument("port out of range: " + listen);
    return {host, static_cast<std::uint16_t>(port)};
}

// Per-route metric children, resolved once so the hot path is two atomic adds.
struct route_stats {
    metrics::histogram* duration = nullptr;
    std::string method;
    std::array<std::atomic<metrics::counter*>, 600> by_status{};
};

}  // namespace

class connection;

struct server::impl : std::enable_shared_from_this<server::impl> {
    impl(runtime::io_pool& p, const config::settings& s, const router& r, metrics::registry& m)
        : pool(p),
          ioc(p.main()),
          settings(s),
          routes(r),
          acceptor(p.main()),
          requests(m.counter_family("segue_http_requests_total",
                                    "HTTP requests answered, by route template, method and status.",
                                    {"route", "method", "code"})),
          durations(m.histogram_family("segue_http_request_duration_seconds",
                                       "Time from the request's first byte to the response sent "
                                       "(streams of server-sent events are not observed).",
                                       {"route"}, metrics::default_latency_buckets())),
          connections_gauge(m.make_gauge("segue_http_connections", "Open client connections.")),
          inflight_gauge(m.make_gauge("segue_http_requests_in_flight",
                                      "Requests being read, handled or answered.")),
          accepted(m.make_counter("segue_http_connections_accepted_total",
                                  "Client connections accepted.")),
          errors(m.counter_family("segue_http_errors_total",
                                  "Requests or connections ended by a protocol error or limit.",
                                  {"kind"})),
          draining_gauge(
              m.make_gauge("segue_draining", "1 while the server is shutting down, else 0.")) {
        stats.reserve(routes.routes().size());
        for (const auto& rt : routes.routes()) {
            auto st = std::make_unique<route_stats>();
            st->duration = &durations.with({rt->pattern});
            st->method = std::string(method_label(rt->method));
            stats.push_back(std::move(st));
        }
    }

    metrics::counter& request_counter(const route* rt, std::string_view method, int status) {
        if (status < 100 || status > 599)
            status = 500;
        if (rt) {
            auto& slot = stats[rt->index]->by_status[static_cast<std::size_t>(status)];
            if (auto* c = slot.load(std::memory_order_acquire))
                return *c;
            auto* c =
                &requests.with({rt->pattern, stats[rt->index]->method, std::to_string(status)});
            slot.store(c, std::memory_order_release);
            return *c;
        }
        return requests.with({"unmatched", method_label(method), std::to_string(status)});
    }

    void count_error(std::string_view kind) { errors.with({kind}).inc(); }

    asio::awaitable<void> accept_loop();
    // Starts serving an accepted socket (or answers 503 over max_connections).
    void admit(tcp::socket socket);
    // At the drain: accepts every connection the kernel has queued on the listener, which
    // closing it would reset (a client that already sent its request would see it fail).
    void accept_queued();
    asio::awaitable<void> reject(tcp::socket socket);
    void add(connection* c, std::weak_ptr<connection> w) {
        std::lock_guard lock(mu);
        live.emplace(c, std::move(w));
    }
    void remove(connection* c) {
        std::lock_guard lock(mu);
        live.erase(c);
    }
    // Closes the connections waiting for their next request; with `fresh` also those that
    // have not sent their first one yet.
    void close_idle(bool fresh);
    void cut_all();

    runtime::io_pool& pool;
    asio::io_context& ioc;  // the listener's and the drain's context
    const config::settings settings;
    const router& routes;
    tcp::acceptor acceptor;
    std::string local;
    std::uint16_t bound_port = 0;

    metrics::family<metrics::counter>& requests;
    metrics::family<metrics::histogram>& durations;
    metrics::gauge& connections_gauge;
    metrics::gauge& inflight_gauge;
    metrics::counter& accepted;
    metrics::family<metrics::counter>& errors;
    metrics::gauge& draining_gauge;
    std::vector<std::unique_ptr<route_stats>> stats;

    std::atomic<bool> draining{false};  // readiness false, responses say Connection: close
    std::atomic<bool> closing{false};   // listener closed: idle connections close too
    std::atomic<std::uint64_t> open{0};
    std::mutex mu;
    std::unordered_map<connection*, std::weak_ptr<connection>> live;
};

// One client connection. Also the `context` of the request it is serving: requests on a
// connection are handled one at a time, so pipelined requests wait in the read buffer, which is
// bounded (pipelining cannot grow memory).
class connection final : public context, public std::enable_shared_from_this<connection> {
  public:
    connection(std::shared_ptr<server::impl> srv, tcp::socket socket)
        : srv_(std::move(srv)),
          limits_(srv_->settings.limits),
          stream_(std::move(socket)),
          read_timer_(stream_.get_executor()),
          buffer_(static_cast<std::size_t>(limits_.max_header_bytes) + 64 * 1024) {
        beast::error_code ec;
        auto ep = stream_.socket().remote_endpoint(ec);
        if (!ec)
            remote_ = ep.address().to_string() + ":" + std::to_string(ep.port());
    }

    // `self` is a parameter so the coroutine frame owns the connection from its creation.
    asio::awaitable<void> run(std::shared_ptr<connection> self) {
        srv_->add(this, weak_from_this());  // counted in `open` by admit()
        srv_->connections_gauge.inc();
        for (;;) {
            if (!co_await wait_for_request())
                break;
            bool keep = co_await serve_one();
            ++served_;
            if (!keep)
                break;  // also after the last request limits.max_requests_per_connection allows
        }
        beast::error_code ec;
        stream_.socket().shutdown(tcp::socket::shutdown_send, ec);
        if (linger_)
            co_await drain_unread();
        stream_.socket().close(ec);
        srv_->connections_gauge.dec();
        srv_->remove(this);
        srv_->open.fetch_sub(1, std::memory_order_acq_rel);
    }

    // Runs on this connection's strand (posted by the server during shutdown).
    void close_if_idle(bool fresh) {
        if (!idle_)
            fire_peer_close();  // a stream waiting for events ends now
        else if (served_ > 0 || fresh)
            stream_.cancel();
        // else its first request may be on its way: wait_for_request bounds the wait
    }
    void cut() {
        beast::error_code ec;
        stream_.socket().close(ec);
    }
    asio::any_io_executor executor() { return stream_.get_executor(); }

    // --- context ---
    std::string_view method() const override { return parser_->get().method_string(); }
    std::string_view target() const override { return parser_->get().target(); }
    std::optional<std::string_view> header(std::string_view name) const override {
        const auto& fields = parser_->get();
        auto it = fields.find(name);
        if (it == fields.end())
            return std::nullopt;
        return it->value();
    }
    std::vector<std::pair<std::string, std::string>> headers() const override {
        std::vector<std::pair<std::string, std::string>> out;
        for (const auto& f : parser_->get()) {
            std::string name(f.name_string());
            for (auto& c : name)
                c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
            out.emplace_back(std::move(name), std::string(f.value()));
        }
        return out;
    }
    const std::string& request_id() const override { return request_id_; }
    std::string_view remote_address() const override { return remote_; }
    const std::string& body() const override { return body_; }
    std::optional<std::uint64_t> content_length() const override {
        auto v = parser_->content_length();
        if (v)
            return static_cast<std::uint64_t>(*v);
        return std::nullopt;
    }
    bool draining() const override { return srv_->draining.load(std::memory_order_acquire); }

    asio::awaitable<body_chunk> read_body(std::span<char> into) override {
        body_chunk out;
        if (parser_->is_done()) {
            out.done = true;
            co_return out;
        }
        if (!continue_sent_) {
            continue_sent_ = true;
            // curl and most clients wait for this before sending a large body.
            auto expect = header("Expect");
            if (expect && beast::iequals(*expect, "100-continue")) {
                static constexpr std::string_view msg = "HTTP/1.1 100 Continue\r\n\r\n";
                stream_.expires_after(limits_.write_timeout);
                auto [ec, n] = co_await asio::async_write(stream_, asio::buffer(msg), use_tuple);
                if (ec) {
                    out.error = body_chunk::failure::closed;
                    peer_gone_ = true;
                    co_return out;
                }
            }
        }
        // Body reads are sized by the buffer's capacity, which the header read left small:
        // without this, a large upload arrives 4 KiB per read (found by bench/upload.sh).
        if (buffer_.capacity() < body_read_capacity)
            buffer_.reserve(std::min(body_read_capacity, buffer_.max_size()));
        while (!parser_->is_done()) {
            auto& b = parser_->get().body();
            b.data = into.data();
            b.size = into.size();
            arm_read_deadline(limits_.body_read_timeout);
            auto [rec, n] = co_await bhttp::async_read_some(stream_, buffer_, *parser_, use_tuple);
            auto ec = read_done(rec);
            const std::size_t got = into.size() - parser_->get().body().size;
            if (ec == bhttp::error::need_buffer)
                ec = {};
            if (ec) {
                if (ec == bhttp::error::body_limit)
                    out.error = body_chunk::failure::too_large;
                else if (ec == beast::error::timeout)
                    out.error = body_chunk::failure::timeout;
                else if (ec != bhttp::error::partial_message &&
                         ec.category() ==
                             bhttp::make_error_code(bhttp::error::need_buffer).category())
                    out.error = body_chunk::failure::malformed;
                else
                    out.error = body_chunk::failure::closed;  // the end of the stream, a reset
                body_failed_ = true;
                peer_gone_ = out.error == body_chunk::failure::closed;
                co_return out;
            }
            bytes_in_ += got;
            if (got > 0 || parser_->is_done()) {
                out.size = got;
                out.done = parser_->is_done();
                co_return out;
            }
        }
        out.done = true;
        co_return out;
    }

    asio::awaitable<bool> begin_stream(int status, std::string content_type,
                                       std::optional<std::uint64_t> content_length) override {
        bhttp::response<bhttp::empty_body> r;
        r.version(11);
        r.result(static_cast<unsigned>(status));
        r.set(bhttp::field::content_type, content_type);
        event_stream_ = media_type_is(content_type, "text/event-stream");
        for (const auto& [k, v] : res_.headers)
            r.insert(k, v);
        r.set("X-Request-Id", request_id_);
        r.set(bhttp::field::date, date_now());
        if (!cors_origin_.empty()) {
            r.set(bhttp::field::access_control_allow_origin, cors_origin_);
            r.set(bhttp::field::access_control_expose_headers, cors_expose_headers);
        }
        if (vary_origin_)
            r.insert(bhttp::field::vary, "Origin");
        if (content_length) {
            r.content_length(*content_length);
        } else {
            r.set(bhttp::field::cache_control, "no-cache");
            r.chunked(true);
        }
        // A body of known length (a file) keeps the connection, as a buffered answer would, once
        // all of it was written: a player seeking by Range pays no new connection per request.
        // A stream of unknown length (SSE) ends by closing.
        stream_keep_alive_ = content_length && parser_->get().keep_alive() && parser_->is_done() &&
                             !draining() && !watching_ &&
                             !(limits_.max_requests_per_connection > 0 &&
                               served_ + 1 >= limits_.max_requests_per_connection);
        stream_left_ = method() == "HEAD" ? 0 : content_length.value_or(0);
        stream_failed_ = false;
        r.keep_alive(stream_keep_alive_);
        streaming_ = true;
        stream_chunked_ = !content_length;
        stream_status_ = status;
        bhttp::response_serializer<bhttp::empty_body> sr{r};
        stream_.expires_after(limits_.write_timeout);
        auto [ec, n] = co_await bhttp::async_write_header(stream_, sr, use_tuple);
        co_return !ec;
    }

    asio::awaitable<bool> write_stream(std::string_view data) override {
        if (data.empty())
            co_return true;
        stream_.expires_after(limits_.write_timeout);
        boost::system::error_code ec;
        if (stream_chunked_) {
            auto [wec, n] = co_await asio::async_write(
                stream_, bhttp::make_chunk(asio::buffer(data)), use_tuple);
            ec = wec;
        } else {
            auto [wec, n] = co_await asio::async_write(stream_, asio::buffer(data), use_tuple);
            ec = wec;
            stream_left_ -= std::min<std::uint64_t>(stream_left_, n);
        }
        bytes_out_ += data.size();
        if (ec)
            stream_failed_ = true;
        co_return !ec;
    }

    void watch_peer_close(std::function<void()> fn) override {
        if (watching_)
            return;
        watching_ = true;
        peer_close_ = std::move(fn);
        // No timeout on this read: an idle stream may stay open for hours. Writes keep theirs
        // (expires_after while a read is pending sets only the write timer).
        stream_.expires_never();
        asio::co_spawn(stream_.get_executor(), watch_close(shared_from_this()), asio::detached);
    }

  private:
    // Header and body reads are timed by a timer of their own that cancels the read when it
    // expires: Beast's stream timeout would close the socket, and the stalled client could no
    // longer be told 408. A generation number keeps a late expiry from cancelling a later
    // operation.
    void arm_read_deadline(steady_clock::duration d) {
        stream_.expires_never();
        const auto gen = ++read_gen_;
        read_timed_out_ = false;
        read_timer_.expires_after(d);
        read_timer_.async_wait([w = weak_from_this(), gen](boost::system::error_code ec) {
            auto self = w.lock();
            if (ec || !self || self->read_gen_ != gen)
                return;
            self->read_timed_out_ = true;
            beast::error_code ignored;
            self->stream_.socket().cancel(ignored);
        });
    }
    // The read's error, with a cancel by the deadline reported as beast::error::timeout.
    beast::error_code read_done(beast::error_code ec) {
        ++read_gen_;
        read_timer_.cancel();
        if (ec == asio::error::operation_aborted && read_timed_out_)
            return beast::error::timeout;
        return ec;
    }

    // Keeps a read pending on a streaming connection: it completes when the client closes (or
    // the socket is closed here); bytes a client sends meanwhile are discarded.
    asio::awaitable<void> watch_close(std::shared_ptr<connection> self) {
        std::array<char, 512> scratch;
        for (;;) {
            auto [ec, n] = co_await stream_.async_read_some(asio::buffer(scratch), use_tuple);
            if (ec)
                break;
        }
        fire_peer_close();
    }
    void fire_peer_close() {
        if (auto fn = std::exchange(peer_close_, nullptr))
            fn();
    }

    // Lingering close: a response was sent before the request body was read (413, 401, ...).
    // Closing now would reset the connection while the client is still sending, and the reset
    // can destroy the response before the client reads it. Discard what still arrives, bounded
    // in time and bytes, so the client sees the answer.
    asio::awaitable<void> drain_unread() {
        std::array<char, 16 * 1024> scratch;
        std::size_t total = 0;
        stream_.expires_after(std::chrono::seconds(2));
        while (total < 8 * 1024 * 1024) {
            auto [ec, n] = co_await stream_.async_read_some(asio::buffer(scratch), use_tuple);
            if (ec)
                break;
            total += n;
        }
    }

    // Waits for the first byte of the next request under the idle timeout.
    asio::awaitable<bool> wait_for_request() {
        if (buffer_.size() > 0)
            co_return true;
        // Once the listener has closed, a connection that has been answered has nothing left
        // to wait for. One that has not sent its first request yet was opened to send one (a
        // proxy writes it right after its connect): it is served if the request comes soon.
        const bool closing = srv_->closing.load(std::memory_order_acquire);
        if (closing && served_ > 0)
            co_return false;
        idle_ = true;
        stream_.expires_after(
            closing ? std::min<std::chrono::steady_clock::duration>(
                          limits_.idle_timeout, srv_->settings.server.drain_first_request_wait)
                    : limits_.idle_timeout);
        auto [ec, n] = co_await stream_.async_read_some(buffer_.prepare(4096), use_tuple);
        idle_ = false;
        if (ec) {
            if (ec == beast::error::timeout)
                srv_->count_error("idle_timeout");
            co_return false;
        }
        buffer_.commit(n);
        co_return true;
    }

    asio::awaitable<bool> serve_one() {
        const auto start = steady_clock::now();
        srv_->inflight_gauge.inc();
        struct inflight_guard {
            metrics::gauge& g;
            ~inflight_guard() { g.dec(); }
        } guard{srv_->inflight_gauge};

        parser_.emplace();
        parser_->header_limit(static_cast<std::uint32_t>(limits_.max_header_bytes));
        // The body limit depends on the route, known only after the header: set it then.
        parser_->body_limit(boost::none);
        res_ = response{};
        body_.clear();
        params_.clear();
        route_ = {};
        continue_sent_ = false;
        body_failed_ = false;
        peer_gone_ = false;
        streaming_ = false;
        event_stream_ = false;
        cors_origin_.clear();
        vary_origin_ = false;
        preflight_ = false;
        bytes_in_ = 0;
        bytes_out_ = 0;

        // Usually the whole header is already buffered: parse it without another async hop.
        beast::error_code ec;
        buffer_.consume(parser_->put(buffer_.data(), ec));
        if (ec == bhttp::error::need_more)
            ec = {};
        if (!ec && !parser_->is_header_done()) {
            // The rest must arrive within header_timeout (slowloris on headers).
            arm_read_deadline(limits_.header_timeout);
            auto [rec, n] =
                co_await bhttp::async_read_header(stream_, buffer_, *parser_, use_tuple);
            ec = read_done(rec);
        }
        if (ec)
            co_return co_await reject_header(ec, start);

        const auto rid = header("X-Request-Id");
        request_id_ = rid && acceptable_request_id(*rid) ? std::string(*rid) : new_request_id();
        // Behind a proxy, remote is the proxy: the access line also gives the client chain the
        // proxy reported. Logged, never trusted: cut to 256 bytes, and a byte that is not
        // printable ASCII becomes '?' (the line stays valid JSON in UTF-8).
        forwarded_for_.clear();
        if (srv_->settings.log.access)
            if (const auto xff = header("X-Forwarded-For")) {
                forwarded_for_.assign(xff->substr(0, 256));
                for (char& c : forwarded_for_)
                    if (c < 0x20 || c > 0x7e)
                        c = '?';
            }

        const auto origin = header("Origin");
        if (origin)
            cors_origin_ = cors_origin(srv_->settings.api, path(), *origin);
        vary_origin_ = varies_by_origin(srv_->settings.api, path());
        const auto preflight_method = origin && method() == "OPTIONS"
                                          ? header("Access-Control-Request-Method")
                                          : std::nullopt;

        auto m = srv_->routes.match(method(), path());
        const http::route* rt = m.matched;
        bool keep_alive = parser_->get().keep_alive();
        // The parser's own framing decision: message::chunked() reads only the first
        // Transfer-Encoding field, the parser the last coding of all of them (found by fuzzing).
        const bool has_body = !parser_->is_done();

        if (preflight_method && !cors_origin_.empty() && !malformed_fields() &&
            srv_->routes.match(*preflight_method, path()).matched) {
            // A CORS preflight for a method this path takes, from an origin it answers.
            preflight_ = true;
            res_.status = 204;
            const auto known = srv_->routes.match("OPTIONS", path());
            res_.set_header("Access-Control-Allow-Methods", known.allow);
            res_.set_header("Access-Control-Allow-Headers", std::string(cors_allow_headers));
            res_.set_header("Access-Control-Max-Age", "600");
            if (has_body && !(content_length() && *content_length() == 0))
                keep_alive = false;
        } else if (auto why = malformed_fields()) {
            srv_->count_error("malformed_request");
            set_error(api::error_kind::bad_request, *why, path());
            if (has_body)
                keep_alive = false;  // its body would be read as the next request
        } else if (!rt) {
            if (content_length() && *content_length() > limits_.max_body_bytes) {
                // Like nginx's client_max_body_size: an oversized body is refused before routing.
                srv_->count_error("body_too_large");
                set_error(api::error_kind::payload_too_large,
                          "request body exceeds " + std::to_string(limits_.max_body_bytes) +
                              " bytes (limits.max_body_bytes)",
                          path());
            } else if (const auto* shaped = srv_->routes.unrouted_for(path())) {
                (*shaped)(res_, m.path_known ? 405 : 404, path());  // a drop-in API's shape
                if (m.path_known)
                    res_.set_header("Allow", m.allow);
            } else if (m.path_known) {
                api::set_problem(res_, api::error_kind::method_not_allowed,
                                 std::string(method()) + " is not allowed on this resource",
                                 path());
                res_.set_header("Allow", m.allow);
            } else {
                api::set_problem(res_, api::error_kind::not_found, "no route for this path",
                                 path());
            }
            // An unread body would be parsed as the next request: close instead.
            if (has_body && !(content_length() && *content_length() == 0))
                keep_alive = false;
        } else {
            set_route(rt->pattern, std::move(m.params));
            const std::uint64_t limit =
                rt->options.max_body_bytes ? rt->options.max_body_bytes : limits_.max_body_bytes;
            parser_->body_limit(limit);
            bool run_handler = true;
            if (content_length() && *content_length() > limit) {
                srv_->count_error("body_too_large");
                set_error(api::error_kind::payload_too_large, body_limit_detail(*rt, limit),
                          path());
                keep_alive = false;
                run_handler = false;
            } else if (rt->options.body == body_mode::buffered && has_body) {
                run_handler = co_await read_whole_body(body_limit_detail(*rt, limit));
                if (!run_handler)
                    keep_alive = false;
            }
            if (run_handler) {
                try {
                    co_await rt->fn(*this);
                } catch (const util::unavailable_error& e) {
                    // Nothing was done (util/unavailable.hpp): a 503 to come back, not a 500.
                    srv_->count_error("unavailable");
                    log::warn(
                        "request refused: unavailable",
                        {{"request_id", request_id_}, {"route", rt->pattern}, {"error", e.what()}});
                    if (streaming_) {
                        keep_alive = false;
                    } else {
                        set_error(api::error_kind::unavailable, e.what(), {});
                        res_.set_header("Retry-After", std::to_string(e.retry_after_s()));
                    }
                } catch (const std::exception& e) {
                    srv_->count_error("handler_exception");
                    log::error(
                        "handler failed",
                        {{"request_id", request_id_}, {"route", rt->pattern}, {"error", e.what()}});
                    if (streaming_)
                        keep_alive = false;
                    else
                        set_error(api::error_kind::internal, "unexpected error", {});
                }
                if (body_failed_ || !parser_->is_done())
                    keep_alive = false;
            }
        }

        const bool draining_now = draining();
        if (draining_now)
            keep_alive = false;
        // The connection's last request by limits.max_requests_per_connection: say so, or the
        // client would send its next request on a connection about to close.
        if (limits_.max_requests_per_connection > 0 &&
            served_ + 1 >= limits_.max_requests_per_connection)
            keep_alive = false;
        // Part of the body may still be on its way: linger before closing.
        linger_ = !keep_alive && !parser_->is_done() && !watching_;
        peer_close_ = nullptr;  // the handler is done: nobody waits for the close any more
        bool write_ok = true;
        int status = res_.status;
        if (streaming_) {
            if (stream_chunked_) {
                stream_.expires_after(limits_.write_timeout);
                auto [wec, wn] =
                    co_await asio::async_write(stream_, bhttp::make_chunk_last(), use_tuple);
                write_ok = !wec;
            }
            // Kept only when the head said so and every byte it promised went out.
            keep_alive = keep_alive && !stream_chunked_ && stream_keep_alive_ &&
                         stream_left_ == 0 && !stream_failed_ && !watching_;
            status = stream_status_;
        } else if (peer_gone_) {
            // The client closed the connection before its request was read (an upload it
            // canceled): nobody to answer. Logged and counted as nginx's 499, not as the 4xx
            // the handler would have answered.
            srv_->count_error("client_closed");
            write_ok = false;
            status = 499;
        } else {
            write_ok = co_await write_response(keep_alive, method() == "HEAD");
        }
        finish(rt, status, start);
        co_return write_ok&& keep_alive;
    }

    // An error the server answers itself, in the shape of the API the request's path belongs
    // to (a drop-in API's own, router::on_error), else problem+json (with `instance`).
    void set_error(api::error_kind kind, std::string_view detail, std::string_view instance) {
        if (const auto* shaped = srv_->routes.error_shape_for(path()))
            (*shaped)(res_, api::info(kind).status, detail);
        else
            api::set_problem(res_, kind, detail, instance);
    }

    // Header fields whose repetition makes a request ambiguous (a proxy merging or splitting
    // them would change which one counts), and HTTP/1.1's required Host (RFC 9112 3.2): the
    // reason to refuse the request, if any.
    std::optional<std::string> malformed_fields() const {
        const auto& h = parser_->get();
        const auto hosts = h.count(bhttp::field::host);
        if (hosts > 1 || (hosts == 0 && h.version() >= 11))
            return std::string("an HTTP/1.1 request needs exactly one Host header field");
        for (const std::string_view name :
             {"Authorization", "Idempotency-Key", "Content-Type", "Last-Event-ID"})
            if (h.count(name) > 1)
                return "the " + std::string(name) + " header field is given more than once";
        return std::nullopt;
    }

    // Buffered routes: read the body under the route's limit with a per-read timeout. Answers
    // the error itself and returns false if the body could not be read.
    asio::awaitable<bool> read_whole_body(std::string too_large) {
        std::array<char, 16 * 1024> chunk;
        for (;;) {
            auto c = co_await read_body(chunk);
            if (c.error != body_chunk::failure::none) {
                switch (c.error) {
                    case body_chunk::failure::too_large:
                        srv_->count_error("body_too_large");
                        set_error(api::error_kind::payload_too_large, too_large, {});
                        break;
                    case body_chunk::failure::timeout:
                        srv_->count_error("body_timeout");
                        set_error(api::error_kind::request_timeout,
                                  "request body not received in time", {});
                        break;
                    case body_chunk::failure::closed:
                        break;  // nobody to answer: the request ends as a 499
                    default:
                        srv_->count_error("malformed_body");
                        set_error(api::error_kind::bad_request, "malformed request body", {});
                }
                co_return false;
            }
            body_.append(chunk.data(), c.size);
            if (c.done)
                co_return true;
        }
    }

    // Header could not be read: answer what can be answered, then close.
    asio::awaitable<bool> reject_header(beast::error_code ec, steady_clock::time_point start) {
        api::error_kind kind;
        if (ec == bhttp::error::header_limit || ec == bhttp::error::buffer_overflow) {
            srv_->count_error("header_too_large");
            kind = api::error_kind::header_too_large;
        } else if (ec == beast::error::timeout) {
            srv_->count_error("header_timeout");
            kind = api::error_kind::request_timeout;
        } else if (ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
                   ec == asio::error::connection_reset || ec == asio::error::operation_aborted ||
                   ec == bhttp::error::partial_message) {
            co_return false;  // the client went away
        } else {
            srv_->count_error("malformed_request");
            kind = api::error_kind::bad_request;
        }
        request_id_ = new_request_id();
        const std::string detail =
            kind == api::error_kind::header_too_large
                ? "request line and headers exceed " + std::to_string(limits_.max_header_bytes) +
                      " bytes (limits.max_header_bytes)"
            : ec == beast::error::timeout ? std::string("request header not received in time")
                                          : ec.message();
        // Whose path it is: the target the parser took already (it reads the start line and
        // each field as they come), else the request line still unparsed in the buffer.
        std::string_view where = parser_->get().target();
        where = where.empty()
                    ? request_line_path(std::string_view(
                          static_cast<const char*>(buffer_.data().data()), buffer_.size()))
                    : where.substr(0, where.find('?'));
        if (const auto* shaped = srv_->routes.error_shape_for(where)) {
            res_ = response{};
            (*shaped)(res_, api::info(kind).status, detail);
        } else {
            res_ = api::make_problem(kind, detail);
        }
        // A client that stalled may still be sending: linger, so the close does not reset
        // the connection before it has read the 408.
        if (kind == api::error_kind::request_timeout)
            linger_ = true;
        co_await write_response(false, false);
        srv_->request_counter(nullptr, "OTHER", res_.status).inc();
        co_return false;
    }

    // Serializes the response head by hand (no per-field allocations) and writes head and body
    // with one gathered write.
    asio::awaitable<bool> write_response(bool keep_alive, bool head) {
        auto& out = head_buffer_;
        out.clear();
        out.append("HTTP/1.1 ");
        out.append(std::to_string(res_.status));
        out.push_back(' ');
        auto reason = bhttp::obsolete_reason(static_cast<bhttp::status>(res_.status));
        out.append(reason.data(), reason.size());
        out.append("\r\n");
        auto add = [&out](std::string_view name, std::string_view value) {
            out.append(name);
            out.append(": ");
            // Handlers never get to split the response: CR and LF are dropped from values.
            for (char c : value)
                if (c != '\r' && c != '\n')
                    out.push_back(c);
            out.append("\r\n");
        };
        if (!res_.content_type.empty())
            add("Content-Type", res_.content_type);
        for (const auto& [k, v] : res_.headers)
            add(k, v);
        add("X-Request-Id", request_id_);
        add("Date", date_now());
        if (!cors_origin_.empty()) {
            add("Access-Control-Allow-Origin", cors_origin_);
            if (!preflight_)
                add("Access-Control-Expose-Headers", cors_expose_headers);
        }
        if (vary_origin_)
            add("Vary", "Origin");
        // A 304 and a 204 have no content, and RFC 9110 forbids a Content-Length that is not
        // the 200's (304) or any at all (204).
        if (res_.status != 304 && res_.status != 204)
            add("Content-Length", std::to_string(res_.body.size()));
        if (!keep_alive)
            add("Connection", "close");
        out.append("\r\n");
        bytes_out_ = res_.body.size();
        std::array<asio::const_buffer, 2> bufs{
            asio::buffer(out), asio::buffer(res_.body.data(), head ? 0 : res_.body.size())};
        stream_.expires_after(limits_.write_timeout);
        auto [ec, n] = co_await asio::async_write(stream_, bufs, use_tuple);
        co_return !ec;
    }

    void finish(const http::route* rt, int status, steady_clock::time_point start) {
        const double secs = std::chrono::duration<double>(steady_clock::now() - start).count();
        srv_->request_counter(rt, method(), status).inc();
        // A stream of server-sent events lasts as long as its client follows it: not a latency.
        // Observed, it would share its route's series with that route's requests (the task
        // list's stream is GET /v1/extensions, beside the creates) and page on a quiet gateway.
        if (!event_stream_) {
            if (rt)
                srv_->stats[rt->index]->duration->observe(secs);
            else
                srv_->durations.with({"unmatched"}).observe(secs);
        }
        if (srv_->settings.log.access && log::enabled(log::level::info)) {
            const std::array<log::field, 9> fields{
                log::field{"request_id", request_id_},
                {"method", method()},
                {"route", rt ? std::string_view(rt->pattern) : "unmatched"},
                {"status", status},
                {"bytes_in", bytes_in_},
                {"bytes_out", bytes_out_},
                {"duration_ms", secs * 1000.0},
                {"remote", remote_},
                {"forwarded_for", forwarded_for_}};  // the last: only when a proxy sent it
            log::write(log::level::info, "request",
                       std::span(fields).first(forwarded_for_.empty() ? 8 : 9));
        }
    }

    std::shared_ptr<server::impl> srv_;
    const config::limits_settings& limits_;
    beast::tcp_stream stream_;
    asio::steady_timer read_timer_;  // arm_read_deadline
    std::uint64_t read_gen_ = 0;
    bool read_timed_out_ = false;
    beast::flat_buffer buffer_;
    std::optional<bhttp::request_parser<bhttp::buffer_body>> parser_;
    std::string request_id_;
    std::string remote_;
    std::string forwarded_for_;  // X-Forwarded-For as sent, for the access line
    std::string cors_origin_;    // this answer's Access-Control-Allow-Origin; empty: none
    bool vary_origin_ = false;   // this answer depends on the Origin (varies_by_origin)
    bool preflight_ = false;     // this request is a CORS preflight (OPTIONS) answered here
    std::string body_;
    std::string head_buffer_;
    int served_ = 0;     // requests answered on this connection
    bool idle_ = false;  // waiting for a request's first byte
    bool linger_ = false;
    bool watching_ = false;             // watch_close's read is pending (streams only)
    std::function<void()> peer_close_;  // watch_peer_close's callback, until it runs
    bool continue_sent_ = false;
    bool body_failed_ = false;
    bool peer_gone_ = false;  // the body's read found the connection closed or reset
    bool streaming_ = false;
    bool event_stream_ = false;  // this request's answer is text/event-stream
    bool stream_chunked_ = true;
    bool stream_keep_alive_ = false;  // the stream's head said keep-alive
    std::uint64_t stream_left_ = 0;   // bytes of a fixed-length stream not written yet
    bool stream_failed_ = false;      // a write of the stream failed
    int stream_status_ = 200;
    std::uint64_t bytes_in_ = 0;
    std::uint64_t bytes_out_ = 0;
};

asio::awaitable<void> server::impl::accept_loop() {
    const auto self = shared_from_this();  // the loop keeps the server's state alive
    for (;;) {
        // Each connection gets its own strand: its handlers never run concurrently.
        // The new socket lives on the next IO context, whose single thread is its strand.
        auto [ec, socket] = co_await acceptor.async_accept(pool.next(), use_tuple);
        if (ec) {
            if (ec == asio::error::operation_aborted || !acceptor.is_open())
                co_return;
            // EMFILE and friends: count, back off briefly so the loop does not spin.
            count_error("accept");
            log::warn("accept failed", {{"error", ec.message()}});
            asio::steady_timer t(ioc, std::chrono::milliseconds(50));
            co_await t.async_wait(use_tuple);
            continue;
        }
        admit(std::move(socket));
    }
}

void server::impl::admit(tcp::socket socket) {
    accepted.inc();
    beast::error_code ec;
    socket.set_option(tcp::no_delay(true), ec);
    if (open.load(std::memory_order_relaxed) >=
        static_cast<std::uint64_t>(settings.server.max_connections)) {
        count_error("max_connections");
        auto ex = socket.get_executor();
        asio::co_spawn(ex, reject(std::move(socket)), asio::detached);
        return;
    }
    // Counted before its coroutine starts on its context: the drain, which may admit it just
    // before it counts what is open, must wait for it.
    open.fetch_add(1, std::memory_order_relaxed);
    auto c = std::make_shared<connection>(shared_from_this(), std::move(socket));
    auto ex = c->executor();
    asio::co_spawn(ex, c->run(c), [](std::exception_ptr e) {
        if (!e)
            return;
        try {
            std::rethrow_exception(e);
        } catch (const std::exception& ex) {
            log::error("connection failed", {{"error", ex.what()}});
        }
    });
}

void server::impl::accept_queued() {
    beast::error_code ec;
    acceptor.non_blocking(true, ec);
    if (ec)
        return;
    // Bounded: the listener's backlog (somaxconn) is the most the kernel can have queued.
    for (int n = 0; n < 65536; ++n) {
        tcp::socket socket(pool.next());
        acceptor.accept(socket, ec);
        if (ec)
            break;  // would_block: nothing more queued
        admit(std::move(socket));
    }
}

// Over the connection cap: a short 503 and close, so clients see why instead of a hang.
asio::awaitable<void> server::impl::reject(tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    bhttp::response<bhttp::string_body> r;
    auto p = api::make_problem(api::error_kind::unavailable, "too many connections");
    r.version(11);
    r.result(static_cast<unsigned>(p.status));
    r.set(bhttp::field::content_type, p.content_type);
    r.set(bhttp::field::retry_after, "1");
    r.keep_alive(false);
    r.body() = std::move(p.body);
    r.prepare_payload();
    stream.expires_after(std::chrono::seconds(2));
    co_await bhttp::async_write(stream, r, use_tuple);
    beast::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
}

void server::impl::close_idle(bool fresh) {
    std::lock_guard lock(mu);
    for (auto& [raw, weak] : live) {
        if (auto c = weak.lock())
            asio::post(c->executor(), [c, fresh] { c->close_if_idle(fresh); });
    }
}

void server::impl::cut_all() {
    std::lock_guard lock(mu);
    for (auto& [raw, weak] : live) {
        if (auto c = weak.lock())
            asio::post(c->executor(), [c] { c->cut(); });
    }
}

server::server(runtime::io_pool& pool, const config::settings& settings, const router& routes,
               metrics::registry& metrics)
    : impl_(std::make_shared<impl>(pool, settings, routes, metrics)) {}

server::~server() = default;

void server::start() {
    auto [host, port] = split_listen(impl_->settings.server.listen);
    asio::ip::address addr;
    beast::error_code ec;
    addr = asio::ip::make_address(host, ec);
    // Start-up failures name the setting and the address, not Asio's source location.
    const std::string& listen = impl_->settings.server.listen;
    auto fail = [&](const char* what, const beast::error_code& e) {
        throw std::runtime_error("server.listen " + listen + ": " + what + ": " + e.message());
    };
    if (ec) {
        // A name (e.g. "localhost"): resolved once at start-up, before any IO thread runs.
        tcp::resolver resolver(impl_->ioc);
        auto results = resolver.resolve(host, std::to_string(port), ec);
        if (ec || results.empty())
            fail("cannot resolve the host", ec);
        addr = results.begin()->endpoint().address();
    }
    tcp::endpoint ep(addr, port);
    auto& a = impl_->acceptor;
    if (a.open(ep.protocol(), ec); ec)
        fail("cannot open a socket", ec);
    a.set_option(asio::socket_base::reuse_address(true));
    if (a.bind(ep, ec); ec)
        fail("cannot bind", ec);
    if (a.listen(asio::socket_base::max_listen_connections, ec); ec)
        fail("cannot listen", ec);
    auto bound = a.local_endpoint();
    impl_->bound_port = bound.port();
    impl_->local = (bound.address().is_v6() ? "[" + bound.address().to_string() + "]"
                                            : bound.address().to_string()) +
                   ":" + std::to_string(bound.port());
    asio::co_spawn(impl_->ioc, impl_->accept_loop(), asio::detached);
}

std::string server::local_address() const {
    return impl_->local;
}
std::uint16_t server::port() const {
    return impl_->bound_port;
}
bool server::ready() const noexcept {
    return !impl_->draining.load(std::memory_order_acquire);
}
std::uint64_t server::active_connections() const noexcept {
    return impl_->open.load(std::memory_order_acquire);
}

void server::shutdown(std::function<void(bool clean)> done) {
    auto self = impl_;
    if (self->draining.exchange(true))
        return;
    self->draining_gauge.set(1);
    asio::co_spawn(self->ioc, drain(self, std::move(done)), asio::detached);
}

asio::awaitable<void> server::drain(std::shared_ptr<impl> self, std::function<void(bool)> done) {
    asio::steady_timer timer(self->ioc);
    if (self->settings.server.shutdown_delay.count() > 0) {
        // Readiness is already false; keep serving while load balancers notice.
        timer.expires_after(self->settings.server.shutdown_delay);
        co_await timer.async_wait(use_tuple);
    }
    beast::error_code ec;
    self->closing.store(true, std::memory_order_release);
    self->accept_queued();
    self->acceptor.close(ec);
    self->close_idle(false);
    // Busy connections close after their current response; wait for them under the deadline.
    // Connections whose first request has not come close after drain_first_request_wait: a
    // proxy that connected just before the close is writing it.
    const auto start = steady_clock::now();
    const auto deadline = start + self->settings.server.drain_timeout;
    bool fresh_closed = false;
    while (self->open.load(std::memory_order_acquire) > 0 && steady_clock::now() < deadline) {
        if (!fresh_closed &&
            steady_clock::now() - start >= self->settings.server.drain_first_request_wait) {
            fresh_closed = true;
            self->close_idle(true);
        }
        timer.expires_after(std::chrono::milliseconds(20));
        co_await timer.async_wait(use_tuple);
    }
    const bool clean = self->open.load(std::memory_order_acquire) == 0;
    if (!clean) {
        log::warn("drain deadline passed; closing remaining connections",
                  {{"connections", self->open.load()}});
        self->count_error("drain_deadline");
        self->cut_all();
    }
    done(clean);
}

}  // namespace segue::http

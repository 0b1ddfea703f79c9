#include "gateway/net/http_client.hpp"

#include <fcntl.h>
#include <openssl/ssl.h>
#include <openssl/x509.h>
#include <openssl/x509_vfy.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/ssl/context.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/ssl/host_name_verification.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/ssl/ssl_stream.hpp>
#include <boost/url/parse.hpp>

#include <algorithm>
#include <array>
#include <cerrno>
#include <cstring>
#include <mutex>
#include <unordered_map>

#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/net/dns.hpp"
#include "gateway/net/http_client_exchange.hpp"
#include "gateway/util/fd_io.hpp"

namespace segue::net {
namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;
using tcp = asio::ip::tcp;
using steady = std::chrono::steady_clock;
using error_code = boost::system::error_code;
using strand_type = asio::strand<asio::io_context::executor_type>;
using detail::attempt_state;
using detail::connection;
using detail::target;
using detail::tls_stream;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

// --- URL and request checks ---

bool host_name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

std::optional<target> parse_target(std::string_view url, std::string& why) {
    namespace urls = boost::urls;
    auto parsed = urls::parse_uri(url);
    if (!parsed) {
        why = "not an absolute URL: " + parsed.error().message();
        return std::nullopt;
    }
    const urls::url_view u = *parsed;
    target t;
    if (u.scheme_id() == urls::scheme::https) {
        t.tls = true;
    } else if (u.scheme_id() != urls::scheme::http) {
        why = "the scheme must be http or https";
        return std::nullopt;
    }
    if (u.has_userinfo()) {
        why = "credentials in the URL are refused";
        return std::nullopt;
    }
    switch (u.host_type()) {
        case urls::host_type::ipv4:
        case urls::host_type::ipv6:
            t.host = u.host_address();
            t.host_is_ip = true;
            break;
        case urls::host_type::name:
            t.host = u.host_address();
            std::transform(t.host.begin(), t.host.end(), t.host.begin(),
                           [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
            if (!std::all_of(t.host.begin(), t.host.end(), host_name_char)) {
                why = "the host name has characters outside [a-z0-9.-_] (IDNs must be punycode)";
                return std::nullopt;
            }
            break;
        default:
            why = "the URL has no usable host";
            return std::nullopt;
    }
    if (t.host.empty()) {
        why = "the URL has an empty host";
        return std::nullopt;
    }
    const std::uint16_t default_port = t.tls ? 443 : 80;
    t.port = default_port;
    if (u.has_port() && !u.port().empty()) {
        // Parsed here: url_view::port_number() does not report overflow.
        const std::string_view digits = u.port();
        unsigned long port = 0;
        for (char ch : digits) {
            port = port * 10 + static_cast<unsigned long>(ch - '0');
            if (port > 65535)
                break;
        }
        if (port == 0 || port > 65535) {
            why = "the port must be 1..65535";
            return std::nullopt;
        }
        t.port = static_cast<std::uint16_t>(port);
    }
    const bool v6 = u.host_type() == urls::host_type::ipv6;
    const std::string bracketed = v6 ? "[" + t.host + "]" : t.host;
    t.host_field = t.port == default_port ? bracketed : bracketed + ":" + std::to_string(t.port);
    t.path = u.encoded_path();
    if (t.path.empty())
        t.path = "/";
    if (u.has_query()) {
        t.path += '?';
        t.path += u.encoded_query();
    }
    t.key = (t.tls ? "https://" : "http://") + bracketed + ":" + std::to_string(t.port);
    return t;
}

bool token_char(unsigned char c) {
    return std::isalnum(c) || std::strchr("!#$%&'*+-.^_`|~", c) != nullptr;
}
bool valid_token(std::string_view s) {
    return !s.empty() && std::all_of(s.begin(), s.end(), [](char c) {
        return c != '\0' && token_char(static_cast<unsigned char>(c));
    });
}
bool valid_field_value(std::string_view s) {
    return s.find_first_of(std::string_view("\r\n\0", 3)) == std::string_view::npos;
}

// Framing and connection management are the client's: a caller setting them would corrupt the
// exchange or the pool.
constexpr std::array<std::string_view, 7> reserved_fields{
    "content-length", "transfer-encoding", "connection", "keep-alive", "upgrade", "te", "trailer"};

std::optional<std::string> check_request(const request& r) {
    if (!valid_token(r.method))
        return "invalid method";
    for (const auto& [name, value] : r.headers) {
        if (!valid_token(name))
            return "invalid header name";
        if (!valid_field_value(value))
            return "header " + name + " has CR, LF or NUL in its value";
        for (auto f : reserved_fields)
            if (beast::iequals(name, f))
                return "header " + name + " is set by the client";
    }
    if (r.body_source) {
        if (!r.body_size)
            return "a streamed body needs body_size";
        if (!r.body.empty())
            return "both body and body_source are set";
    }
    return std::nullopt;
}

bool idempotent_method(std::string_view m) {
    for (std::string_view k : {"GET", "HEAD", "PUT", "DELETE", "OPTIONS", "TRACE"})
        if (m == k)
            return true;
    return false;
}

std::string_view method_label(std::string_view m) {
    for (std::string_view k : {"GET", "HEAD", "POST", "PUT", "DELETE", "PATCH", "OPTIONS"})
        if (m == k)
            return k;
    return "OTHER";
}

std::string status_class(int status) {
    if (status >= 100 && status < 600)
        return std::to_string(status / 100) + "xx";
    return "other";
}

// What a server closing a kept-alive connection looks like from our side.
bool stale_connection_error(const error_code& ec) {
    return ec == bhttp::error::end_of_stream || ec == asio::error::eof ||
           ec == asio::error::connection_reset || ec == asio::error::broken_pipe ||
           ec == asio::error::connection_aborted || ec == asio::error::not_connected ||
           ec == ssl::error::stream_truncated;
}

// asio's host_name_verification only answers yes or no; record why, so the handshake error
// says "hostname mismatch" instead of a bare "certificate verify failed".
struct verify_host {
    ssl::host_name_verification check;
    bool operator()(bool preverified, ssl::verify_context& ctx) const {
        const bool ok = check(preverified, ctx);
        if (preverified && !ok)
            X509_STORE_CTX_set_error(ctx.native_handle(), X509_V_ERR_HOSTNAME_MISMATCH);
        return ok;
    }
};

struct opened {
    std::unique_ptr<connection> conn;
    failure error = failure::none;
    std::string message;
};

struct file_sink_state {
    blocking_runner run;
    std::string path;
    int fd = -1;
    int err = 0;
};

// A plain function, not a capturing coroutine lambda: its parameters live in the frame.
asio::awaitable<bool> write_file_chunk(std::shared_ptr<file_sink_state> st, std::string_view d) {
    co_await st->run([st, d] {
        if (st->err != 0)
            return;
        if (d.empty()) {  // end of body
            if (::close(st->fd) != 0)
                st->err = errno;
            st->fd = -1;
            return;
        }
        st->err = util::write_all(st->fd, d);
    });
    co_return st->err == 0;
}

}  // namespace

std::string_view to_string(failure f) noexcept {
    switch (f) {
        case failure::none:
            return "none";
        case failure::bad_url:
            return "bad_url";
        case failure::plain_http_refused:
            return "plain_http_refused";
        case failure::invalid_request:
            return "invalid_request";
        case failure::resolve:
            return "resolve";
        case failure::refused_address:
            return "refused_address";
        case failure::connect:
            return "connect";
        case failure::tls:
            return "tls";
        case failure::timeout:
            return "timeout";
        case failure::reset:
            return "reset";
        case failure::too_large:
            return "too_large";
        case failure::protocol:
            return "protocol";
        case failure::local_io:
            return "local_io";
    }
    return "unknown";
}

std::optional<std::string> response::header(std::string_view name) const {
    for (const auto& [k, v] : headers)
        if (beast::iequals(k, name))
            return v;
    return std::nullopt;
}

struct http_client::impl : std::enable_shared_from_this<impl> {
    impl(asio::io_context& ioc, client_options o, metrics::registry& m)
        : strand(asio::make_strand(ioc)),
          opts(std::move(o)),
          resolver(opts.resolver ? opts.resolver : default_dns_resolver()),
          tls_ctx(ssl::context::tls_client),
          requests(m.counter_family(
              "segue_upstream_requests_total",
              "Upstream HTTP requests by host, method and outcome (status class or failure).",
              {"host", "method", "outcome"})),
          durations(m.histogram_family(
              "segue_upstream_request_duration_seconds",
              "Upstream request time, connect and any stale-connection retry included.", {"host"},
              {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120})),
          connections(m.gauge_family("segue_upstream_connections",
                                     "Upstream connections: idle in the pool or in use.",
                                     {"state"})),
          idle_gauge(connections.with({"idle"})),
          active_gauge(connections.with({"active"})),
          stale_retries(
              m.counter_family("segue_upstream_stale_retries_total",
                               "Requests resent on a fresh connection because a pooled one turned "
                               "out to be closed by the server.",
                               {"host"})),
          dropped(m.counter_family("segue_upstream_connections_dropped_total",
                                   "Pooled connections closed unused, by reason.", {"reason"})),
          sweep_timer(strand) {
        // TLS 1.2+ only; the system CA store plus an optional bundle (start-up: may throw).
        tls_ctx.set_options(ssl::context::default_workarounds | ssl::context::no_sslv2 |
                            ssl::context::no_sslv3 | ssl::context::no_tlsv1 |
                            ssl::context::no_tlsv1_1);
        SSL_CTX_set_min_proto_version(tls_ctx.native_handle(), TLS1_2_VERSION);
        if (opts.verify_tls) {
            tls_ctx.set_default_verify_paths();
            if (!opts.ca_file.empty())
                tls_ctx.load_verify_file(opts.ca_file);
            tls_ctx.set_verify_mode(ssl::verify_peer);
        } else {
            tls_ctx.set_verify_mode(ssl::verify_none);
        }
    }

    // --- the pool (mutex: the destructor of http_client may run on any thread) ---

    std::unique_ptr<connection> take_idle(const std::string& key) {
        std::lock_guard lock(mu);
        auto it = idle.find(key);
        if (it == idle.end())
            return nullptr;
        auto& list = it->second;
        const auto now = steady::now();
        std::unique_ptr<connection> found;
        // Most recently used first: the likeliest to be alive.
        while (!list.empty() && !found) {
            auto c = std::move(list.back());
            list.pop_back();
            idle_gauge.dec();
            if (now - c->idle_since >= opts.idle_timeout)
                drop(*c, "idle_timeout");
            else if (!c->still_open())
                drop(*c, "closed_by_peer");
            else
                found = std::move(c);
        }
        if (list.empty())
            idle.erase(it);
        if (found)
            active_gauge.inc();
        return found;
    }

    void release(std::unique_ptr<connection> c, bool reusable) {
        active_gauge.dec();
        std::lock_guard lock(mu);
        if (!reusable || closed || opts.max_idle_per_host == 0) {
            c->close();
            return;
        }
        auto& list = idle[c->key];
        if (list.size() >= opts.max_idle_per_host) {
            drop(*list.front(), "pool_full");
            list.erase(list.begin());
            idle_gauge.dec();
        }
        c->idle_since = steady::now();
        // No timeout while idle: the sweep closes it (tcp_stream's timer would close it too, but
        // silently, with no metric).
        c->tcp().expires_never();
        list.push_back(std::move(c));
        idle_gauge.inc();
        arm_sweep_locked();
    }

    void drop(connection& c, std::string_view reason) {
        c.close();
        dropped.with({reason}).inc();
    }

    // Idle connections are closed when their time is up even if no request comes for that host,
    // so they do not hold sockets (and the server's slots) open.
    void arm_sweep_locked() {
        if (sweep_armed || closed || idle.empty())
            return;
        auto earliest = steady::time_point::max();
        for (const auto& [key, list] : idle)
            if (!list.empty())
                earliest = std::min(earliest, list.front()->idle_since + opts.idle_timeout);
        sweep_armed = true;
        sweep_timer.expires_at(earliest);
        sweep_timer.async_wait([w = weak_from_this()](error_code) {
            if (auto self = w.lock())
                self->sweep();
        });
    }

    void sweep() {
        std::lock_guard lock(mu);
        sweep_armed = false;
        if (closed)
            return;
        const auto now = steady::now();
        for (auto it = idle.begin(); it != idle.end();) {
            auto& list = it->second;
            auto keep = std::remove_if(list.begin(), list.end(), [&](auto& c) {
                const char* reason = now - c->idle_since >= opts.idle_timeout ? "idle_timeout"
                                     : !c->still_open()                       ? "closed_by_peer"
                                                                              : nullptr;
                if (!reason)
                    return false;
                drop(*c, reason);
                idle_gauge.dec();
                return true;
            });
            list.erase(keep, list.end());
            it = list.empty() ? idle.erase(it) : std::next(it);
        }
        arm_sweep_locked();
    }

    void shutdown() {
        std::lock_guard lock(mu);
        closed = true;
        for (auto& [key, list] : idle)
            for (auto& c : list) {
                c->close();
                idle_gauge.dec();
            }
        idle.clear();
        sweep_timer.cancel();
    }

    // --- connecting ---

    // dns.hpp: lookups run concurrently on the resolver's threads, answers are cached; the
    // deadline bounds the wait even when a name server hangs.
    asio::awaitable<opened> resolve(const target& t, steady::time_point deadline,
                                    std::vector<tcp::endpoint>& out) {
        opened res;
        auto a = co_await resolver->resolve(t.host, deadline);
        if (a.timed_out) {
            res.error = failure::timeout;
            res.message = "resolving " + t.host + " timed out";
            co_return res;
        }
        if (!a.ok()) {
            res.error = failure::resolve;
            res.message = "resolving " + t.host + ": " + a.error;
            co_return res;
        }
        for (const auto& addr : a.addresses)
            out.emplace_back(addr, t.port);
        co_return res;
    }

    asio::awaitable<opened> open(const target& t, steady::time_point deadline) {
        const auto connect_deadline = std::min(deadline, steady::now() + opts.connect_timeout);
        opened out;
        std::vector<tcp::endpoint> endpoints;
        if (t.host_is_ip) {
            error_code ec;
            endpoints.emplace_back(asio::ip::make_address(t.host, ec), t.port);
            if (ec) {
                out.error = failure::bad_url;
                out.message = "bad IP address " + t.host;
                co_return out;
            }
        } else {
            out = co_await resolve(t, connect_deadline, endpoints);
            if (out.error != failure::none)
                co_return out;
        }

        if (opts.check_endpoints) {
            std::vector<resolved_endpoint> list;
            list.reserve(endpoints.size());
            for (const auto& e : endpoints)
                list.push_back({e.address().to_string(), e.port(), e.address().is_v6()});
            std::optional<std::string> refusal;
            try {
                refusal = opts.check_endpoints(t.host, list);
            } catch (const std::exception& e) {
                refusal = std::string("address check failed: ") + e.what();
            }
            if (refusal) {
                out.error = failure::refused_address;
                out.message = std::move(*refusal);
                co_return out;
            }
        }

        auto c = std::make_unique<connection>();
        c->key = t.key;
        if (t.tls) {
            c->tls = std::make_unique<tls_stream>(strand, tls_ctx);
            // SNI carries names only (RFC 6066), never an IP literal.
            if (!t.host_is_ip &&
                !SSL_set_tlsext_host_name(c->tls->native_handle(), t.host.c_str())) {
                out.error = failure::tls;
                out.message = "cannot set SNI for " + t.host;
                co_return out;
            }
            if (opts.verify_tls)
                c->tls->set_verify_callback(verify_host{ssl::host_name_verification(t.host)});
        } else {
            c->plain = std::make_unique<beast::tcp_stream>(strand);
        }

        // Each resolved address in turn, all within the connect deadline.
        c->tcp().expires_at(connect_deadline);
        auto [cec, ep] = co_await c->tcp().async_connect(endpoints, use_tuple);
        if (cec) {
            out.error = cec == beast::error::timeout ? failure::timeout : failure::connect;
            out.message = "connecting to " + t.key + ": " + cec.message();
            co_return out;
        }
        // Header and body go out in separate writes: Nagle would hold the second one back.
        error_code ignored;
        c->tcp().socket().set_option(tcp::no_delay(true), ignored);

        if (c->tls) {
            c->tcp().expires_at(connect_deadline);
            auto [hec] = co_await c->tls->async_handshake(ssl::stream_base::client, use_tuple);
            if (hec) {
                out.error = hec == beast::error::timeout ? failure::timeout : failure::tls;
                out.message = "TLS handshake with " + t.key + ": " + hec.message();
                const long v = SSL_get_verify_result(c->tls->native_handle());
                if (v != X509_V_OK)
                    out.message += std::string(" (") + X509_verify_cert_error_string(v) + ")";
                co_return out;
            }
        }
        out.conn = std::move(c);
        co_return out;
    }

    // --- a whole call: pool, exchange, the one stale-connection retry, metrics ---

    // `self` keeps the client's internals alive for the whole call.
    asio::awaitable<result> run(std::shared_ptr<impl> self, request r, body_sink sink,
                                std::uint64_t sink_max) {
        const auto start = steady::now();
        result out;
        std::string why;
        const auto t = parse_target(r.url, why);
        std::string host_label = !r.metrics_host.empty() ? r.metrics_host
                                 : t                     ? t->host
                                                         : std::string("invalid");
        if (!t) {
            out.error = failure::bad_url;
            out.message = std::move(why);
        } else if (!t->tls && !opts.allow_plain_http) {
            out.error = failure::plain_http_refused;
            out.message = "plain http:// is not allowed by the config";
        } else if (auto bad = check_request(r)) {
            out.error = failure::invalid_request;
            out.message = std::move(*bad);
        }
        if (!out.ok()) {
            record(host_label, r.method, out, start);
            co_return out;
        }

        const auto deadline = start + r.timeout.value_or(opts.request_timeout);
        const bool idempotent = r.idempotent.value_or(idempotent_method(r.method));
        const body_sink* sink_ptr = sink ? &sink : nullptr;
        bool sent = false;
        for (int attempt = 1; attempt <= 2; ++attempt) {
            out = result{};
            out.attempts = attempt;
            // The retry goes to a fresh connection: the next pooled one may be just as stale.
            auto c = attempt == 1 ? take_idle(t->key) : nullptr;
            const bool reused = c != nullptr;
            if (!c) {
                auto o = co_await open(*t, deadline);
                if (!o.conn) {
                    out.error = o.error;
                    out.message = std::move(o.message);
                    break;
                }
                c = std::move(o.conn);
                active_gauge.inc();
            }
            attempt_state at;
            if (c->tls)
                co_await detail::exchange(*c->tls, *c, *t, r, deadline, sink_ptr, sink_max, opts,
                                          at, out);
            else
                co_await detail::exchange(*c->plain, *c, *t, r, deadline, sink_ptr, sink_max, opts,
                                          at, out);
            sent = sent || at.sent;
            release(std::move(c), out.ok() && at.reusable);
            if (out.ok())
                break;
            // See http_client::send(): only a pooled connection the server closed before
            // answering, and only if replaying is harmless or nothing was sent.
            const bool retry = attempt == 1 && reused && !at.response_started && !at.source_used &&
                               stale_connection_error(at.ec) && (idempotent || !at.sent) &&
                               steady::now() < deadline;
            if (!retry)
                break;
            stale_retries.with({host_label}).inc();
            log::debug("upstream: pooled connection was stale, retrying on a fresh one",
                       {{"host", host_label}, {"method", r.method}, {"error", out.message}});
        }
        out.request_sent = sent;
        record(host_label, r.method, out, start);
        co_return out;
    }

    // For failures found before run() starts (download's own checks).
    void record_early(const request& r, const result& out) {
        std::string why;
        const auto t = parse_target(r.url, why);
        record(!r.metrics_host.empty() ? r.metrics_host
               : t                     ? t->host
                                       : std::string("invalid"),
               r.method, out, steady::now());
    }

    void record(const std::string& host, std::string_view method, const result& out,
                steady::time_point start) {
        const std::string outcome =
            out.ok() ? status_class(out.res.status) : std::string(to_string(out.error));
        requests.with({host, method_label(method), outcome}).inc();
        durations.with({host}).observe(
            std::chrono::duration<double>(steady::now() - start).count());
        if (!out.ok())
            log::debug("upstream request failed", {{"host", host},
                                                   {"method", method},
                                                   {"failure", to_string(out.error)},
                                                   {"request_sent", out.request_sent},
                                                   {"detail", out.message}});
    }

    strand_type strand;
    client_options opts;
    std::shared_ptr<dns_resolver> resolver;
    ssl::context tls_ctx;

    metrics::family<metrics::counter>& requests;
    metrics::family<metrics::histogram>& durations;
    metrics::family<metrics::gauge>& connections;
    metrics::gauge& idle_gauge;
    metrics::gauge& active_gauge;
    metrics::family<metrics::counter>& stale_retries;
    metrics::family<metrics::counter>& dropped;

    std::mutex mu;
    // Per pool key, oldest first.
    std::unordered_map<std::string, std::vector<std::unique_ptr<connection>>> idle;
    asio::steady_timer sweep_timer;
    bool sweep_armed = false;
    bool closed = false;
};

http_client::http_client(asio::io_context& ioc, client_options opts, metrics::registry& m)
    : impl_(std::make_shared<impl>(ioc, std::move(opts), m)) {}

http_client::~http_client() {
    impl_->shutdown();
}

asio::awaitable<result> http_client::send(request r) {
    auto self = impl_;
    // Hop onto the client's strand: the pool, sockets and timers are only touched there.
    co_return co_await asio::co_spawn(self->strand, self->run(self, std::move(r), {}, 0),
                                      asio::use_awaitable);
}

asio::awaitable<result> http_client::download(request r, body_sink sink, std::uint64_t max_bytes) {
    auto self = impl_;
    if (!sink) {
        result out;
        out.error = failure::invalid_request;
        out.message = "download needs a sink";
        self->record_early(r, out);
        co_return out;
    }
    co_return co_await asio::co_spawn(self->strand,
                                      self->run(self, std::move(r), std::move(sink), max_bytes),
                                      asio::use_awaitable);
}

asio::awaitable<result> http_client::download(request r, std::string path,
                                              std::uint64_t max_bytes) {
    auto self = impl_;
    result out;
    if (!self->opts.run_blocking) {
        out.error = failure::invalid_request;
        out.message = "download to a file needs client_options::run_blocking";
        self->record_early(r, out);
        co_return out;
    }
    auto st = std::make_shared<file_sink_state>();
    st->run = self->opts.run_blocking;
    st->path = std::move(path);
    co_await st->run([st] {
        st->fd = ::open(st->path.c_str(), O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0640);
        if (st->fd < 0)
            st->err = errno;
    });
    if (st->fd < 0) {
        out.error = failure::local_io;
        out.message = "cannot open " + st->path + ": " + std::strerror(st->err);
        self->record_early(r, out);
        co_return out;
    }
    body_sink sink = [st](std::string_view chunk) { return write_file_chunk(st, chunk); };
    out = co_await download(std::move(r), std::move(sink), max_bytes);
    // A 2xx success has had its end-of-body call, which closed the file.
    const bool complete = out.ok() && out.res.status / 100 == 2 && st->fd < 0 && st->err == 0;
    if (!complete) {
        co_await st->run([st] {
            if (st->fd >= 0)
                ::close(st->fd);
            st->fd = -1;
            ::unlink(st->path.c_str());
        });
        if (out.error == failure::local_io && st->err != 0)
            out.message = "writing " + st->path + ": " + std::strerror(st->err);
    }
    co_return out;
}

}  // namespace segue::net

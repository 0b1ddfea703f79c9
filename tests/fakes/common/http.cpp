#include "tests/fakes/common/http.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/url/parse.hpp>

#include <cctype>
#include <chrono>
#include <iostream>
#include <stdexcept>

#include "gateway/util/text.hpp"

namespace segue::fakes {

namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = net::ip::tcp;

namespace {

bool iequal(std::string_view a, std::string_view b) {
    return beast::iequals(a, b);
}

std::string lower(std::string_view s) {
    std::string out(s);
    for (auto& c : out)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    return out;
}
}  // namespace

// ---------------------------------------------------------------------------------------------

std::string url_decode(std::string_view s) {
    std::string out;
    out.reserve(s.size());
    const auto hex = segue::util::hex_value;
    for (std::size_t i = 0; i < s.size(); ++i) {
        if (s[i] == '+') {
            out.push_back(' ');
        } else if (s[i] == '%' && i + 2 < s.size() && hex(s[i + 1]) >= 0 && hex(s[i + 2]) >= 0) {
            out.push_back(static_cast<char>(hex(s[i + 1]) * 16 + hex(s[i + 2])));
            i += 2;
        } else {
            out.push_back(s[i]);
        }
    }
    return out;
}

std::pair<std::string, std::uint16_t> split_host_port(const std::string& host_port) {
    auto colon = host_port.rfind(':');
    if (colon == std::string::npos)
        throw std::invalid_argument("expected host:port, got '" + host_port + "'");
    std::string host = host_port.substr(0, colon);
    if (host.size() >= 2 && host.front() == '[' && host.back() == ']')
        host = host.substr(1, host.size() - 2);
    const int port = std::stoi(host_port.substr(colon + 1));
    if (port < 0 || port > 65535)
        throw std::invalid_argument("port out of range in '" + host_port + "'");
    return {host, static_cast<std::uint16_t>(port)};
}

std::int64_t unix_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

std::optional<std::string_view> fake_request::header(std::string_view name) const {
    for (const auto& [k, v] : headers)
        if (iequal(k, name))
            return std::string_view(v);
    return std::nullopt;
}

std::vector<std::pair<std::string, std::string>> fake_request::query_params() const {
    std::vector<std::pair<std::string, std::string>> out;
    std::string_view q = query;
    while (!q.empty()) {
        auto amp = q.find('&');
        auto item = q.substr(0, amp);
        q = amp == std::string_view::npos ? std::string_view{} : q.substr(amp + 1);
        if (item.empty())
            continue;
        auto eq = item.find('=');
        if (eq == std::string_view::npos)
            out.emplace_back(url_decode(item), "");
        else
            out.emplace_back(url_decode(item.substr(0, eq)), url_decode(item.substr(eq + 1)));
    }
    return out;
}

std::optional<std::string> fake_request::query_param(std::string_view name) const {
    for (auto& [k, v] : query_params())
        if (k == name)
            return v;
    return std::nullopt;
}

// ---------------------------------------------------------------------------------------------
// Server

fake_server::fake_server(net::io_context& ioc, request_handler& handler,
                         std::uint64_t max_body_bytes)
    : ioc_(ioc), handler_(handler), max_body_(max_body_bytes), acceptor_(ioc) {}

void fake_server::listen(const std::string& host_port) {
    auto [host, port] = split_host_port(host_port);
    boost::system::error_code ec;
    auto addr = net::ip::make_address(host, ec);
    if (ec) {
        tcp::resolver resolver(ioc_);
        addr = resolver.resolve(host, std::to_string(port)).begin()->endpoint().address();
    }
    tcp::endpoint ep(addr, port);
    acceptor_.open(ep.protocol());
    acceptor_.set_option(net::socket_base::reuse_address(true));
    acceptor_.bind(ep);
    acceptor_.listen(net::socket_base::max_listen_connections);
    port_ = acceptor_.local_endpoint().port();
    host_ = addr.to_string();
    net::co_spawn(ioc_, accept_loop(this), net::detached);
}

net::awaitable<void> fake_server::accept_loop(fake_server* self) {
    for (;;) {
        auto [ec, socket] = co_await self->acceptor_.async_accept(use_tuple);
        if (ec) {
            if (ec == net::error::operation_aborted)
                co_return;
            std::cerr << "fake: accept failed: " << ec.message() << "\n";
            net::steady_timer t(self->ioc_, std::chrono::milliseconds(50));
            co_await t.async_wait(use_tuple);
            continue;
        }
        socket.set_option(tcp::no_delay(true), ec);
        net::co_spawn(self->ioc_, session(self, std::move(socket)), [](std::exception_ptr e) {
            if (!e)
                return;
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& ex) {
                std::cerr << "fake: session failed: " << ex.what() << "\n";
            }
        });
    }
}

net::awaitable<void> fake_server::session(fake_server* self, tcp::socket socket) {
    beast::tcp_stream stream(std::move(socket));
    beast::flat_buffer buffer;
    std::string remote;
    {
        boost::system::error_code ec;
        auto ep = stream.socket().remote_endpoint(ec);
        if (!ec)
            remote = ep.address().to_string() + ":" + std::to_string(ep.port());
    }
    for (;;) {
        bhttp::request_parser<bhttp::string_body> parser;
        parser.header_limit(64 * 1024);
        parser.body_limit(self->max_body_);
        // Idle keep-alive connections and slow clients are dropped after a while.
        stream.expires_after(std::chrono::minutes(2));
        auto [hec, hn] = co_await bhttp::async_read_header(stream, buffer, parser, use_tuple);
        if (hec)
            break;
        // Clients that wait for "100 Continue" (curl, large uploads) get it at once.
        if (iequal(parser.get()[bhttp::field::expect], "100-continue")) {
            static constexpr std::string_view cont = "HTTP/1.1 100 Continue\r\n\r\n";
            auto [wec, wn] = co_await net::async_write(stream, net::buffer(cont), use_tuple);
            if (wec)
                break;
        }
        if (!parser.is_done()) {
            auto [bec, bn] = co_await bhttp::async_read(stream, buffer, parser, use_tuple);
            if (bec) {
                if (bec == bhttp::error::body_limit) {
                    bhttp::response<bhttp::string_body> res{bhttp::status::payload_too_large, 11};
                    res.set(bhttp::field::content_type, "application/json");
                    res.body() = R"({"detail":"Request body too large"})";
                    res.keep_alive(false);
                    res.prepare_payload();
                    co_await bhttp::async_write(stream, res, use_tuple);
                }
                break;
            }
        }
        auto msg = parser.release();

        fake_request req;
        req.received_mono_us = std::chrono::duration_cast<std::chrono::microseconds>(
                                   std::chrono::steady_clock::now().time_since_epoch())
                                   .count();
        req.method = std::string(msg.method_string());
        req.target = std::string(msg.target());
        auto q = req.target.find('?');
        req.path = req.target.substr(0, q);
        req.query = q == std::string::npos ? "" : req.target.substr(q + 1);
        for (const auto& f : msg)
            req.headers.emplace_back(lower(f.name_string()), std::string(f.value()));
        req.body = std::move(msg.body());
        req.remote = remote;
        const bool keep_alive = msg.keep_alive();

        fake_reply rep;
        try {
            rep = co_await self->handler_.handle(req);
        } catch (const std::exception& e) {
            rep = fake_reply::json(500, R"({"detail":"fake handler failed"})");
            std::cerr << "fake: handler threw: " << e.what() << "\n";
        }
        if (rep.delay_ms > 0) {
            net::steady_timer t(self->ioc_, std::chrono::milliseconds(rep.delay_ms));
            co_await t.async_wait(use_tuple);
        }
        boost::system::error_code ec;
        if (rep.act == fake_reply::action::reset) {
            // SO_LINGER 0: close() sends RST instead of FIN.
            stream.socket().set_option(tcp::socket::linger(true, 0), ec);
            stream.socket().close(ec);
            self->handler_.replied(req, rep);
            co_return;
        }
        if (rep.act == fake_reply::action::close) {
            stream.socket().shutdown(tcp::socket::shutdown_both, ec);
            stream.socket().close(ec);
            self->handler_.replied(req, rep);
            co_return;
        }

        bhttp::response<bhttp::string_body> res;
        res.version(11);
        res.result(static_cast<unsigned>(rep.status));
        if (!rep.content_type.empty())
            res.set(bhttp::field::content_type, rep.content_type);
        for (const auto& [k, v] : rep.headers)
            res.insert(k, v);
        res.keep_alive(keep_alive);
        const std::size_t length = rep.body.size();
        if (req.method != "HEAD")
            res.body() = rep.body;
        res.content_length(length);
        stream.expires_after(std::chrono::seconds(30));
        auto [wec, wn] = co_await bhttp::async_write(stream, res, use_tuple);
        self->handler_.replied(req, rep);
        if (wec || !keep_alive)
            break;
    }
    boost::system::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_send, ec);
    stream.socket().close(ec);
}

// ---------------------------------------------------------------------------------------------
// Client

net::awaitable<client_result> http_call(client_request rq) {
    client_result out;
    auto parsed = boost::urls::parse_uri(rq.url);
    if (!parsed) {
        out.error = "malformed URL '" + rq.url + "'";
        co_return out;
    }
    const auto& u = *parsed;
    if (!iequal(u.scheme(), "http")) {
        out.error = "the fake only speaks plain http:// (got '" + rq.url + "')";
        co_return out;
    }
    const std::string host = u.host_address();
    const std::string port = u.has_port() ? std::string(u.port()) : "80";
    std::string target = std::string(u.encoded_path());
    if (target.empty())
        target = "/";
    if (u.has_query())
        target += "?" + std::string(u.encoded_query());

    auto ex = co_await net::this_coro::executor;
    tcp::resolver resolver(ex);
    auto [rec, endpoints] = co_await resolver.async_resolve(host, port, use_tuple);
    if (rec) {
        out.error = "resolve " + host + ": " + rec.message();
        co_return out;
    }
    beast::tcp_stream stream(ex);
    // One deadline for the whole exchange.
    stream.expires_after(rq.timeout);
    auto [cec, ep] = co_await stream.async_connect(endpoints, use_tuple);
    if (cec) {
        out.error = "connect " + host + ":" + port + ": " + cec.message();
        co_return out;
    }
    bhttp::request<bhttp::string_body> req;
    req.version(11);
    req.method_string(rq.method);
    req.target(target);
    req.set(bhttp::field::host, std::string(u.encoded_host_and_port()));
    req.set(bhttp::field::user_agent, "segue-fake/1");
    if (!rq.content_type.empty())
        req.set(bhttp::field::content_type, rq.content_type);
    for (const auto& [k, v] : rq.headers)
        req.insert(k, v);
    req.keep_alive(false);
    req.body() = std::move(rq.body);
    if (!req.body().empty() || rq.method == "POST" || rq.method == "PUT")
        req.prepare_payload();
    auto [wec, wn] = co_await bhttp::async_write(stream, req, use_tuple);
    if (wec) {
        out.error = "write: " + wec.message();
        co_return out;
    }
    beast::flat_buffer buffer;
    bhttp::response_parser<bhttp::string_body> parser;
    parser.body_limit(rq.max_body_bytes);
    if (rq.method == "HEAD")
        parser.skip(true);
    auto [rdec, rn] = co_await bhttp::async_read(stream, buffer, parser, use_tuple);
    if (rdec) {
        out.error = "read: " + rdec.message();
        co_return out;
    }
    out.ok = true;
    out.status = static_cast<int>(parser.get().result_int());
    out.body = std::move(parser.get().body());
    boost::system::error_code ec;
    stream.socket().shutdown(tcp::socket::shutdown_both, ec);
    co_return out;
}

}  // namespace segue::fakes

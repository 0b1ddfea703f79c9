// One HTTP/1.1 exchange on an open connection (see http_client_exchange.hpp): the request
// written (from memory or streamed from body_source), interim responses skipped, the response
// read into memory or handed to a sink, and whether the connection can go back to the pool.

#include "gateway/net/http_client_exchange.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/ssl/error.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/error.hpp>
#include <boost/beast/core/string.hpp>
#include <boost/beast/http/buffer_body.hpp>
#include <boost/beast/http/empty_body.hpp>
#include <boost/beast/http/error.hpp>
#include <boost/beast/http/parser.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/serializer.hpp>
#include <boost/beast/http/span_body.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <optional>

namespace segue::net::detail {
namespace {

namespace asio = boost::asio;
namespace bhttp = boost::beast::http;
namespace ssl = boost::asio::ssl;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);
constexpr std::size_t download_chunk = 64 * 1024;
constexpr int max_interim_responses = 8;

// --- error classification ---

const boost::system::error_category& http_category() {
    return bhttp::make_error_code(bhttp::error::need_buffer).category();
}

failure classify(const error_code& ec) {
    if (ec == beast::error::timeout)
        return failure::timeout;
    if (ec == bhttp::error::body_limit || ec == bhttp::error::header_limit ||
        ec == bhttp::error::buffer_overflow)
        return failure::too_large;
    if (ec == bhttp::error::end_of_stream || ec == bhttp::error::partial_message)
        return failure::reset;
    if (ec.category() == http_category())
        return failure::protocol;
    if (ec == ssl::error::stream_truncated)
        return failure::reset;
    if (ec.category() == asio::error::get_ssl_category())
        return failure::tls;
    return failure::reset;
}

template <class Message>
void fill_header(Message& m, const target& t, const request& r, const std::string& user_agent) {
    m.version(11);
    m.method_string(r.method);
    m.target(t.path);
    m.set(bhttp::field::host, t.host_field);
    m.set(bhttp::field::user_agent, user_agent);
    for (const auto& [name, value] : r.headers) {
        if (beast::iequals(name, "host") || beast::iequals(name, "user-agent"))
            m.set(name, value);
        else
            m.insert(name, value);
    }
}

asio::awaitable<bool> call_sink(const body_sink& sink, std::string_view chunk, result& out) {
    std::string why = "the body sink refused the data";
    try {
        if (co_await sink(chunk))
            co_return true;
    } catch (const std::exception& e) {
        why = std::string("the body sink failed: ") + e.what();
    }
    out.error = failure::local_io;
    out.message = std::move(why);
    co_return false;
}

template <class Stream>
asio::awaitable<void> exchange_on(Stream& s, connection& c, const target& t, request& r,
                                  steady::time_point deadline, const body_sink* sink,
                                  std::uint64_t sink_max, const client_options& opts,
                                  attempt_state& at, result& out) {
    auto& lowest = c.tcp();
    auto fail = [&](failure f, std::string msg) {
        out.error = f;
        out.message = std::move(msg);
    };
    // Set before every operation: the exchange's deadline, or sooner by the stall timeout.
    auto arm = [&] {
        lowest.expires_at(r.stall_timeout ? std::min(deadline, steady::now() + *r.stall_timeout)
                                          : deadline);
    };

    // Write the request. The deadline is the whole exchange's, set before every operation.
    error_code wec;
    if (r.body_source) {
        bhttp::request<bhttp::empty_body> m;
        fill_header(m, t, r, opts.user_agent);
        m.content_length(*r.body_size);
        bhttp::request_serializer<bhttp::empty_body> sr{m};
        arm();
        auto [ec, n] = co_await bhttp::async_write_header(s, sr, use_tuple);
        at.sent = n > 0;
        wec = ec;
        std::uint64_t total = 0;
        while (!wec) {
            at.source_used = true;
            std::string chunk;
            try {
                chunk = co_await r.body_source();
            } catch (const std::exception& e) {
                fail(failure::local_io, std::string("body_source failed: ") + e.what());
                co_return;
            }
            if (chunk.empty())
                break;
            if (chunk.size() > *r.body_size - total) {
                fail(failure::invalid_request, "body_source produced more than body_size (" +
                                                   std::to_string(*r.body_size) + " bytes)");
                co_return;
            }
            total += chunk.size();
            arm();
            auto [cec, cn] = co_await asio::async_write(s, asio::buffer(chunk), use_tuple);
            wec = cec;
        }
        if (!wec && total != *r.body_size) {
            fail(failure::invalid_request, "body_source ended after " + std::to_string(total) +
                                               " of " + std::to_string(*r.body_size) + " bytes");
            co_return;
        }
    } else {
        // span_body: the body is sent from the request itself, so a retry needs no copy.
        bhttp::request<bhttp::span_body<const char>> m;
        fill_header(m, t, r, opts.user_agent);
        m.body() = {r.body.data(), r.body.size()};
        m.prepare_payload();
        arm();
        auto [ec, n] = co_await bhttp::async_write(s, m, use_tuple);
        at.sent = n > 0;
        wec = ec;
    }
    if (wec) {
        at.ec = wec;
        if (wec == beast::error::timeout) {
            fail(failure::timeout,
                 steady::now() < deadline
                     ? "the peer stopped reading the request (no progress for " +
                           std::to_string(r.stall_timeout ? r.stall_timeout->count() : 0) + " ms)"
                     : "deadline passed while sending the request");
            co_return;
        }
        // Go on reading: a server may answer early and close without reading the whole body
        // (401, 413 on an upload). Its answer beats our write error.
    }

    // Read the response header, skipping interim 1xx responses (100 Continue, 103).
    const bool head = r.method == "HEAD";
    std::optional<bhttp::response_parser<bhttp::empty_body>> hp;
    for (int interim = 0;; ++interim) {
        hp.emplace();
        hp->header_limit(opts.max_header_bytes);
        // Checked by hand below: which cap applies depends on the status.
        hp->body_limit(boost::none);
        if (head)
            hp->skip(true);
        arm();
        auto [ec, n] = co_await bhttp::async_read_header(s, c.buffer, *hp, use_tuple);
        if (hp->got_some() || c.buffer.size() > 0)
            at.response_started = true;
        if (ec) {
            if (wec) {
                fail(classify(wec), "sending the request: " + wec.message());
            } else {
                at.ec = ec;
                fail(classify(ec), "reading the response: " + ec.message());
            }
            co_return;
        }
        const int status = hp->get().result_int();
        if (status < 100 || status >= 200 || status == 101)
            break;
        if (interim == max_interim_responses) {
            fail(failure::protocol, "too many interim 1xx responses");
            co_return;
        }
    }

    const auto& h = hp->get();
    out.res.status = h.result_int();
    for (const auto& f : h)
        out.res.headers.emplace_back(std::string(f.name_string()), std::string(f.value()));

    const bool to_sink = sink && out.res.status >= 200 && out.res.status < 300;
    const std::uint64_t limit = to_sink ? sink_max : opts.max_response_bytes;
    bool keep_alive = hp->keep_alive();
    if (!hp->is_done()) {
        // A body nobody reads past its cap: the answer stands, the rest of the body is left
        // unread and the connection is not reused (at.reusable stays false).
        const bool cap_is_the_end = r.status_only && !to_sink;
        if (auto len = hp->content_length(); len && *len > limit) {
            if (cap_is_the_end)
                co_return;
            fail(failure::too_large, "Content-Length " + std::to_string(*len) +
                                         " is over the cap of " + std::to_string(limit));
            co_return;
        }
        if (!to_sink) {
            bhttp::response_parser<bhttp::string_body> p{std::move(*hp)};
            p.body_limit(limit);
            arm();
            auto [ec, n] = co_await bhttp::async_read(s, c.buffer, p, use_tuple);
            if (ec == bhttp::error::body_limit && cap_is_the_end)
                co_return;
            if (ec) {
                fail(classify(ec), "reading the response body: " + ec.message());
                co_return;
            }
            out.res.body = std::move(p.get().body());
            out.body_bytes = out.res.body.size();
            keep_alive = p.keep_alive();
        } else {
            bhttp::response_parser<bhttp::buffer_body> p{std::move(*hp)};
            p.body_limit(limit);
            auto buf = std::make_unique<char[]>(download_chunk);
            while (!p.is_done()) {
                p.get().body().data = buf.get();
                p.get().body().size = download_chunk;
                arm();
                // An event stream is handed over as it arrives; a file fills the buffer
                // first (fewer, larger writes).
                auto [ec, n] = r.stream_chunks
                                   ? co_await bhttp::async_read_some(s, c.buffer, p, use_tuple)
                                   : co_await bhttp::async_read(s, c.buffer, p, use_tuple);
                if (ec == bhttp::error::need_buffer)
                    ec = {};
                if (ec) {
                    fail(classify(ec), "reading the response body: " + ec.message());
                    co_return;
                }
                const std::size_t got = download_chunk - p.get().body().size;
                if (got == 0)
                    continue;
                out.body_bytes += got;
                if (!co_await call_sink(*sink, std::string_view(buf.get(), got), out))
                    co_return;
            }
            keep_alive = p.keep_alive();
        }
    }
    if (to_sink && !co_await call_sink(*sink, {}, out))
        co_return;
    at.reusable = !wec && keep_alive && out.res.status != 101 && c.buffer.size() == 0;
}

}  // namespace

asio::awaitable<void> exchange(beast::tcp_stream& s, connection& c, const target& t, request& r,
                               steady::time_point deadline, const body_sink* sink,
                               std::uint64_t sink_max, const client_options& opts,
                               attempt_state& at, result& out) {
    return exchange_on(s, c, t, r, deadline, sink, sink_max, opts, at, out);
}

asio::awaitable<void> exchange(tls_stream& s, connection& c, const target& t, request& r,
                               steady::time_point deadline, const body_sink* sink,
                               std::uint64_t sink_max, const client_options& opts,
                               attempt_state& at, result& out) {
    return exchange_on(s, c, t, r, deadline, sink, sink_max, opts, at, out);
}

}  // namespace segue::net::detail

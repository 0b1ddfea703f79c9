// The incremental multipart/form-data parser (gateway/http/multipart.hpp): boundary extraction,
// chunking independence, limits, error values, filename decoding and constant-memory streaming.

#include <gtest/gtest.h>

#include <algorithm>
#include <chrono>
#include <cstdint>
#include <cstdio>
#include <cstring>
#include <optional>
#include <ostream>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/http/multipart.hpp"

namespace segue::http {
// Readable values in assertion messages.
void PrintTo(multipart_error e, std::ostream* os) {
    *os << to_string(e);
}
}  // namespace segue::http

namespace {

using segue::http::multipart_boundary;
using segue::http::multipart_error;
using segue::http::multipart_limits;
using segue::http::multipart_parser;
using segue::http::part_info;

const std::string boundary = "------------------------8d6c3c9f2d1a4b7e";  // like curl's

struct parsed_part {
    part_info info;
    std::string data;
    bool ended = false;
    std::size_t data_calls = 0;
};

struct parse_result {
    std::vector<parsed_part> parts;
    multipart_error feed_error = multipart_error::none;
    multipart_error finish_error = multipart_error::none;
    bool done = false;
    std::size_t max_buffered = 0;
    std::string protocol_violation;  // callbacks out of order, empty data views
};

// Feeds `body` in pieces of `chunk` bytes (0: in one piece), stopping at the first error, then
// calls finish(). The callbacks check their own ordering.
parse_result parse(std::string_view body, std::size_t chunk, multipart_limits limits = {},
                   const std::string& b = boundary) {
    parse_result r;
    bool in_part = false;
    multipart_parser::callbacks cb;
    cb.on_part_begin = [&](const part_info& info) {
        if (in_part)
            r.protocol_violation += "begin inside a part;";
        in_part = true;
        r.parts.push_back({info, {}, false, 0});
        return true;
    };
    cb.on_part_data = [&](std::string_view data) {
        if (!in_part)
            r.protocol_violation += "data outside a part;";
        if (data.empty())
            r.protocol_violation += "empty data view;";
        if (!r.parts.empty()) {
            r.parts.back().data.append(data);
            ++r.parts.back().data_calls;
        }
        return true;
    };
    cb.on_part_end = [&] {
        if (!in_part)
            r.protocol_violation += "end outside a part;";
        in_part = false;
        if (!r.parts.empty())
            r.parts.back().ended = true;
        return true;
    };
    multipart_parser p(b, cb, limits);
    const std::size_t step = chunk == 0 ? std::max<std::size_t>(body.size(), 1) : chunk;
    for (std::size_t i = 0; i < body.size(); i += step) {
        r.feed_error = p.feed(body.substr(i, step));
        r.max_buffered = std::max(r.max_buffered, p.buffered_bytes());
        if (r.feed_error != multipart_error::none)
            break;
    }
    r.finish_error = p.finish();
    r.done = p.done();
    if (r.feed_error != multipart_error::none && p.feed("more") != r.feed_error)
        r.protocol_violation += "error not sticky;";
    return r;
}

// The same result, up to how the data was split into callbacks.
void expect_same(const parse_result& a, const parse_result& b, const std::string& what) {
    EXPECT_EQ(a.feed_error, b.feed_error) << what;
    EXPECT_EQ(a.finish_error, b.finish_error) << what;
    EXPECT_EQ(a.done, b.done) << what;
    ASSERT_EQ(a.parts.size(), b.parts.size()) << what;
    for (std::size_t i = 0; i < a.parts.size(); ++i) {
        EXPECT_EQ(a.parts[i].info.name, b.parts[i].info.name) << what;
        EXPECT_EQ(a.parts[i].info.filename, b.parts[i].info.filename) << what;
        EXPECT_EQ(a.parts[i].info.content_type, b.parts[i].info.content_type) << what;
        EXPECT_EQ(a.parts[i].ended, b.parts[i].ended) << what;
        EXPECT_TRUE(a.parts[i].data == b.parts[i].data) << what << ": part " << i << " data";
    }
    EXPECT_EQ(b.protocol_violation, "") << what;
}

// Parses with several chunkings; all must agree. Returns the one-piece result.
parse_result parse_all_ways(std::string_view body, multipart_limits limits = {},
                            const std::string& b = boundary) {
    auto whole = parse(body, 0, limits, b);
    EXPECT_EQ(whole.protocol_violation, "");
    for (std::size_t chunk : {1, 2, 3, 5, 16}) {
        expect_same(whole, parse(body, chunk, limits, b), "chunk " + std::to_string(chunk));
    }
    return whole;
}

multipart_error error_of(const parse_result& r) {
    return r.feed_error != multipart_error::none ? r.feed_error : r.finish_error;
}

std::string part(std::string_view headers, std::string_view data, const std::string& b = boundary) {
    std::string s = "--" + b + "\r\n";
    s += headers;
    s += "\r\n";
    s += data;
    s += "\r\n";
    return s;
}

std::string field(std::string_view name, std::string_view value) {
    return part("Content-Disposition: form-data; name=\"" + std::string(name) + "\"\r\n", value);
}

std::string close(const std::string& b = boundary) {
    return "--" + b + "--\r\n";
}

// Every byte value, and sequences that start like the delimiter but are not one.
std::string tricky_file() {
    std::string f;
    for (int round = 0; round < 3; ++round) {
        for (int c = 0; c < 256; ++c)
            f.push_back(static_cast<char>(c));
    }
    f += "\r\n--";
    f += "\r\n--" + boundary.substr(0, 10) + "x";
    f += "\r\n-\r\r\n";
    f += "\r\n--" + boundary.substr(0, boundary.size() - 1) + "\r\n";
    f += "x--" + boundary + "\r\n";  // no CRLF before it
    f += "\n--" + boundary + "--";   // LF only
    f += "\r--" + boundary;          // CR only
    f += std::string(300, '\r');
    f += "\r\n\r\n\r\n--\r\n--";
    f += "\r\n--" + boundary.substr(0, boundary.size() - 1);  // a prefix right before the end
    return f;
}

std::string curl_like_body() {
    std::string body;
    body += field("title", "My Song");
    body += field("artist", "Bj\xc3\xb6rk");
    body += part(
        "Content-Disposition: form-data; name=\"file\"; filename=\"song.bin\"\r\n"
        "Content-Type: application/octet-stream\r\n",
        tricky_file());
    body += field("notes", "");
    body += close();
    return body;
}

void expect_curl_like(const parse_result& r) {
    EXPECT_EQ(r.feed_error, multipart_error::none);
    EXPECT_EQ(r.finish_error, multipart_error::none);
    EXPECT_TRUE(r.done);
    ASSERT_EQ(r.parts.size(), 4u);
    EXPECT_EQ(r.parts[0].info.name, "title");
    EXPECT_EQ(r.parts[0].info.filename, std::nullopt);
    EXPECT_EQ(r.parts[0].info.content_type, "");
    EXPECT_EQ(r.parts[0].data, "My Song");
    EXPECT_EQ(r.parts[1].info.name, "artist");
    EXPECT_EQ(r.parts[1].data, "Bj\xc3\xb6rk");
    EXPECT_EQ(r.parts[2].info.name, "file");
    EXPECT_EQ(r.parts[2].info.filename, "song.bin");
    EXPECT_EQ(r.parts[2].info.content_type, "application/octet-stream");
    EXPECT_TRUE(r.parts[2].data == tricky_file());
    EXPECT_EQ(r.parts[3].info.name, "notes");
    EXPECT_EQ(r.parts[3].data, "");
    EXPECT_EQ(r.parts[3].data_calls, 0u);
    for (const auto& p : r.parts)
        EXPECT_TRUE(p.ended);
    EXPECT_EQ(r.protocol_violation, "");
}

// ---------------------------------------------------------------------------------------------
// Media types

TEST(MediaType, TypeAndSubtypeAreCaseInsensitiveAndParametersAllowed) {
    using segue::http::media_type_is;
    EXPECT_TRUE(media_type_is("application/json", "application/json"));
    EXPECT_TRUE(media_type_is("application/JSON", "application/json"));
    EXPECT_TRUE(media_type_is("Application/Json; charset=UTF-8", "application/json"));
    EXPECT_TRUE(media_type_is(" application/json ;charset=\"utf-8\" ;", "application/json"));
    EXPECT_TRUE(
        media_type_is("Application/X-WWW-Form-Urlencoded", "application/x-www-form-urlencoded"));
    EXPECT_TRUE(media_type_is("Multipart/Form-Data; BOUNDARY=x", "multipart/form-data"));
    EXPECT_FALSE(media_type_is("application/jsonx", "application/json"));
    EXPECT_FALSE(media_type_is("application/json-patch+json", "application/json"));
    EXPECT_FALSE(media_type_is("text/json", "application/json"));
    EXPECT_FALSE(media_type_is("application/json; charset", "application/json"));
    EXPECT_FALSE(media_type_is("application/json garbage", "application/json"));
    EXPECT_FALSE(media_type_is("application", "application/json"));
    EXPECT_FALSE(media_type_is("", "application/json"));
}

TEST(MediaType, AcceptQualityTakesTheMostSpecificRange) {
    using segue::http::accept_quality;
    EXPECT_EQ(accept_quality("text/event-stream", "text/event-stream"), 1.0);
    EXPECT_EQ(accept_quality("application/json, text/event-stream;q=0.1", "text/event-stream"),
              0.1);
    EXPECT_EQ(accept_quality("application/json, text/event-stream;q=0.1", "application/json"), 1.0);
    EXPECT_EQ(
        accept_quality("*/*;q=0.5, text/*;q=0.7, text/event-stream;q=0.9", "text/event-stream"),
        0.9);
    EXPECT_EQ(accept_quality("*/*;q=0.5, text/*;q=0.7", "text/event-stream"), 0.7);
    EXPECT_EQ(accept_quality("*/*;q=0.5", "application/json"), 0.5);
    EXPECT_EQ(accept_quality("*/*", "text/event-stream", true), std::nullopt);
    EXPECT_EQ(accept_quality("Text/Event-Stream ; Q=0.3", "text/event-stream"), 0.3);
    EXPECT_EQ(accept_quality("text/html", "application/json"), std::nullopt);
    // Malformed elements are skipped, the rest still counts.
    EXPECT_EQ(accept_quality("text/event-stream;q=2, application/json", "text/event-stream"),
              std::nullopt);
    EXPECT_EQ(accept_quality("garbage, application/json;q=0.2", "application/json"), 0.2);
    EXPECT_EQ(accept_quality(R"(a/b;x="1,2", application/json)", "application/json"), 1.0);
    EXPECT_EQ(accept_quality("", "application/json"), std::nullopt);
}

// ---------------------------------------------------------------------------------------------
// Boundary extraction

TEST(MultipartBoundary, TokenAndQuoted) {
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=abc"), "abc");
    EXPECT_EQ(multipart_boundary("multipart/form-data;boundary=abc"), "abc");
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=\"abc\""), "abc");
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=\"a b:c?=(x),/.+_'\""),
              "a b:c?=(x),/.+_'");
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=\"a\\bc\""), "abc");
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=" + boundary), boundary);
    EXPECT_EQ(multipart_boundary("  multipart/form-data ; boundary = abc ;"), "abc");
}

TEST(MultipartBoundary, CaseInsensitiveTypeAndName) {
    EXPECT_EQ(multipart_boundary("Multipart/Form-Data; BOUNDARY=AbC"), "AbC");
    EXPECT_EQ(multipart_boundary("MULTIPART/FORM-DATA; Boundary=\"x-Y\""), "x-Y");
}

TEST(MultipartBoundary, ExtraParameters) {
    EXPECT_EQ(multipart_boundary("multipart/form-data; charset=utf-8; boundary=\"----x\"; a=b"),
              "----x");
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=q; charset=\"utf;8\""), "q");
}

TEST(MultipartBoundary, Missing) {
    EXPECT_EQ(multipart_boundary("multipart/form-data"), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; charset=utf-8"), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary="), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=\"\""), std::nullopt);
    EXPECT_EQ(multipart_boundary(""), std::nullopt);
}

TEST(MultipartBoundary, Length) {
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=" + std::string(70, 'a')),
              std::string(70, 'a'));
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=" + std::string(71, 'a')),
              std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=x"), "x");
}

TEST(MultipartBoundary, NotFormData) {
    EXPECT_EQ(multipart_boundary("multipart/mixed; boundary=abc"), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-datax; boundary=abc"), std::nullopt);
    EXPECT_EQ(multipart_boundary("application/x-www-form-urlencoded"), std::nullopt);
    EXPECT_EQ(multipart_boundary("text/plain; boundary=abc"), std::nullopt);
    EXPECT_EQ(multipart_boundary("form-data; boundary=abc"), std::nullopt);
}

TEST(MultipartBoundary, Invalid) {
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=\"a@b\""), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=\"abc \""), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=\"abc"), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=a; boundary=b"), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=a b"), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary=\"a\r\nb\""), std::nullopt);
    EXPECT_EQ(multipart_boundary("multipart/form-data; boundary"), std::nullopt);
}

// ---------------------------------------------------------------------------------------------
// Parsing

TEST(MultipartParser, CurlLikeBodyEveryChunkSize) {
    const std::string file = tricky_file();
    ASSERT_EQ(file.find("\r\n--" + boundary), std::string::npos);
    const std::string body = curl_like_body();

    const auto whole = parse(body, 0);
    expect_curl_like(whole);
    // In one piece, the file's partial delimiters do not split its delivery.
    EXPECT_EQ(whole.parts[2].data_calls, 1u);
    for (std::size_t chunk = 1; chunk <= 97; ++chunk) {
        SCOPED_TRACE("chunk size " + std::to_string(chunk));
        const auto r = parse(body, chunk);
        expect_curl_like(r);
        expect_same(whole, r, "chunk " + std::to_string(chunk));
        EXPECT_LE(r.max_buffered, 8u * 1024);
    }
}

TEST(MultipartParser, RandomChunking) {
    const std::string body = curl_like_body();
    const auto whole = parse(body, 0);
    std::uint64_t rng = 0x9e3779b97f4a7c15ull;
    for (int round = 0; round < 200; ++round) {
        parse_result r;
        bool in_part = false;
        multipart_parser p(boundary, {[&](const part_info& info) {
                                          in_part = true;
                                          r.parts.push_back({info, {}, false, 0});
                                          return true;
                                      },
                                      [&](std::string_view d) {
                                          EXPECT_TRUE(in_part);
                                          r.parts.back().data.append(d);
                                          return true;
                                      },
                                      [&] {
                                          in_part = false;
                                          r.parts.back().ended = true;
                                          return true;
                                      }});
        std::size_t i = 0;
        while (i < body.size()) {
            rng ^= rng << 13;
            rng ^= rng >> 7;
            rng ^= rng << 17;
            const std::size_t n = 1 + rng % (round % 2 ? 7 : 300);
            ASSERT_EQ(p.feed(std::string_view(body).substr(i, n)), multipart_error::none);
            i += n;
        }
        r.finish_error = p.finish();
        r.done = p.done();
        expect_same(whole, r, "round " + std::to_string(round));
    }
}

TEST(MultipartParser, PreambleAndTransportPadding) {
    std::string body = "This is the preamble.  It is to be ignored.\r\n";
    body += "--" + boundary + " \t \r\n";
    body += "Content-Disposition: form-data; name=\"a\"\r\n\r\n1\r\n";
    body += "--" + boundary + "\t\r\n";
    body += "Content-Disposition: form-data; name=\"b\"\r\n\r\n2\r\n";
    body += "--" + boundary + "--  \r\nepilogue";
    const auto r = parse_all_ways(body);
    EXPECT_EQ(error_of(r), multipart_error::none);
    ASSERT_EQ(r.parts.size(), 2u);
    EXPECT_EQ(r.parts[0].data, "1");
    EXPECT_EQ(r.parts[1].data, "2");

    // An empty preamble line, and a delimiter-like preamble.
    const auto r2 =
        parse_all_ways("\r\n--" + boundary.substr(0, 5) + "\r\n" + field("a", "x") + close());
    EXPECT_EQ(error_of(r2), multipart_error::none);
    ASSERT_EQ(r2.parts.size(), 1u);
    EXPECT_EQ(r2.parts[0].data, "x");
}

TEST(MultipartParser, PreambleTooLarge) {
    const std::string body = std::string(5000, 'p') + "\r\n" + field("a", "x") + close();
    EXPECT_EQ(error_of(parse_all_ways(body)), multipart_error::preamble_too_large);
    multipart_limits limits;
    limits.max_preamble_bytes = 5000;
    EXPECT_EQ(error_of(parse_all_ways(body, limits)), multipart_error::none);
    limits.max_preamble_bytes = 4999;
    EXPECT_EQ(error_of(parse_all_ways(body, limits)), multipart_error::preamble_too_large);
}

TEST(MultipartParser, Truncated) {
    const std::string body = curl_like_body();
    const std::size_t complete = body.size() - 2;  // "--boundary--" seen, its CRLF not yet
    for (std::size_t cut = 0; cut < body.size();
         cut += (cut < 200 || cut > complete - 200) ? 1 : 7) {
        SCOPED_TRACE("cut at " + std::to_string(cut));
        const auto r = parse(std::string_view(body).substr(0, cut), 5);
        EXPECT_EQ(r.feed_error, multipart_error::none);
        EXPECT_EQ(r.protocol_violation, "");
        if (cut < complete) {
            EXPECT_EQ(r.finish_error, multipart_error::truncated);
            EXPECT_FALSE(r.done);
        } else {
            EXPECT_EQ(r.finish_error, multipart_error::none);
            EXPECT_TRUE(r.done);
        }
    }
    // The data seen before the cut is a prefix of the file.
    const auto file_at = body.find(tricky_file());
    const auto r = parse(std::string_view(body).substr(0, file_at + 1000), 13);
    ASSERT_EQ(r.parts.size(), 3u);
    EXPECT_FALSE(r.parts[2].ended);
    EXPECT_EQ(tricky_file().compare(0, r.parts[2].data.size(), r.parts[2].data), 0);
    EXPECT_GE(r.parts[2].data.size(), 1000u - boundary.size() - 4);

    EXPECT_EQ(parse("", 0).finish_error, multipart_error::truncated);
    EXPECT_EQ(error_of(parse_all_ways("random bytes, no boundary at all")),
              multipart_error::truncated);
}

TEST(MultipartParser, Garbage) {
    const std::string b = "--" + boundary;
    const std::string cd = "Content-Disposition: form-data; name=\"a\"";
    const std::vector<std::string> bodies = {
        // LF-only line endings
        b + "\n" + cd + "\n\nx\n" + b + "--\n",
        b + "\r\n" + cd + "\n\r\nx\r\n" + b + "--\r\n",
        // the delimiter followed by something else than "--", padding or CRLF
        b + "x\r\n",
        b + "-x",
        b + " \tx\r\n",
        b + "\rx",
        b + "\r\n" + cd + "\r\n\r\nxx\r\n" + b + "zz\r\n" + close(),
        b + "\r\n" + cd + "\r\n\r\nxx\r\n" + b + "-\r\n" + close(),
        // part headers
        b + "\r\nContent-Disposition form-data\r\n\r\nx\r\n" + close(),
        b + "\r\n: nameless\r\n" + cd + "\r\n\r\nx\r\n" + close(),
        b + "\r\nContent-Disposition: form-data;\r\n name=\"a\"\r\n\r\nx\r\n" + close(),
        b + "\r\n" + cd + "\r\n\tX-Folded: y\r\n\r\nx\r\n" + close(),
        b + "\r\nContent-Disposition : form-data; name=a\r\n\r\nx\r\n" + close(),
        b + "\r\n" + cd + "\r\nX-Bad: a\rb\r\n\r\nx\r\n" + close(),
        b + "\r\n" + cd + "\r\nX-Bad: a" + std::string(1, '\0') + "b\r\n\r\nx\r\n" + close(),
        b + "\r\nContent-Disposition: attachment; name=\"a\"\r\n\r\nx\r\n" + close(),
        b + "\r\nContent-Disposition: form-data; name=\"a\r\n\r\nx\r\n" + close(),
        b + "\r\nContent-Disposition: form-data; name=\"a\"; name=\"b\"\r\n\r\nx\r\n" + close(),
        b + "\r\nContent-Disposition: form-data; name=a b\r\n\r\nx\r\n" + close(),
        b + "\r\nContent-Disposition: form-data; name\r\n\r\nx\r\n" + close(),
        b + "\r\n" + cd + "\r\n" + cd + "\r\n\r\nx\r\n" + close(),
        b + "\r\n" + cd + "\r\nContent-Type: a\r\nContent-Type: b\r\n\r\nx\r\n" + close(),
    };
    for (std::size_t i = 0; i < bodies.size(); ++i) {
        SCOPED_TRACE("body " + std::to_string(i));
        EXPECT_EQ(error_of(parse_all_ways(bodies[i])), multipart_error::malformed);
    }
    // An invalid boundary given to the constructor.
    multipart_parser bad("", {});
    EXPECT_EQ(bad.feed("--\r\n"), multipart_error::malformed);
    EXPECT_EQ(bad.finish(), multipart_error::malformed);
    EXPECT_EQ(bad.buffered_bytes(), 0u);
    multipart_parser bad2("a\rb", {});
    EXPECT_EQ(bad2.finish(), multipart_error::malformed);
}

TEST(MultipartParser, TooManyParts) {
    multipart_limits limits;
    limits.max_parts = 3;
    std::string three = field("a", "1") + field("b", "2") + field("c", "3");
    const auto ok = parse_all_ways(three + close(), limits);
    EXPECT_EQ(error_of(ok), multipart_error::none);
    EXPECT_EQ(ok.parts.size(), 3u);

    const auto r = parse_all_ways(three + field("d", "4") + close(), limits);
    EXPECT_EQ(error_of(r), multipart_error::too_many_parts);
    EXPECT_EQ(r.parts.size(), 3u);
    EXPECT_TRUE(r.parts[2].ended);

    std::string many;
    for (int i = 0; i < 33; ++i)
        many += field("f" + std::to_string(i), "v");
    EXPECT_EQ(error_of(parse_all_ways(many + close())), multipart_error::too_many_parts);
}

TEST(MultipartParser, HugePartHeader) {
    const std::string big =
        "Content-Disposition: form-data; name=\"a\"\r\nX-Big: " + std::string(9000, 'x') + "\r\n";
    auto r = parse_all_ways(part(big, "data") + close());
    EXPECT_EQ(error_of(r), multipart_error::part_header_too_large);
    EXPECT_LE(r.max_buffered, 8u * 1024);

    // Many small lines add up.
    std::string lines = "Content-Disposition: form-data; name=\"a\"\r\n";
    for (int i = 0; i < 1000; ++i)
        lines += "X-N: " + std::to_string(i) + "\r\n";
    EXPECT_EQ(error_of(parse_all_ways(part(lines, "d") + close())),
              multipart_error::part_header_too_large);

    // A header block that never ends.
    EXPECT_EQ(error_of(parse("--" + boundary + "\r\n" + std::string(100000, 'h'), 4096)),
              multipart_error::part_header_too_large);

    // Endless transport padding.
    EXPECT_EQ(error_of(parse_all_ways("--" + boundary + std::string(9000, ' ') + "\r\n")),
              multipart_error::part_header_too_large);

    // Exactly at the limit is fine.
    multipart_limits limits;
    const std::string cd = "Content-Disposition: form-data; name=\"a\"\r\n";
    limits.max_part_header_bytes = cd.size() + 2;  // the lines and the empty line
    EXPECT_EQ(error_of(parse_all_ways(part(cd, "d") + close(), limits)), multipart_error::none);
    limits.max_part_header_bytes = cd.size() + 1;
    EXPECT_EQ(error_of(parse_all_ways(part(cd, "d") + close(), limits)),
              multipart_error::part_header_too_large);
}

TEST(MultipartParser, MissingName) {
    const std::vector<std::string> bodies = {
        part("Content-Type: text/plain\r\n", "x") + close(),
        part("Content-Disposition: form-data\r\n", "x") + close(),
        part("Content-Disposition: form-data; filename=\"a.txt\"\r\n", "x") + close(),
        part("Content-Disposition: form-data; name=\"\"\r\n", "x") + close(),
        part("", "x") + close(),  // no headers at all
    };
    for (std::size_t i = 0; i < bodies.size(); ++i) {
        SCOPED_TRACE("body " + std::to_string(i));
        EXPECT_EQ(error_of(parse_all_ways(bodies[i])), multipart_error::missing_name);
    }
}

TEST(MultipartParser, HeaderNamesAndParameters) {
    const auto r = parse_all_ways(
        part("content-DISPOSITION:Form-Data ;  NAME=title; FileName=\"a\\\"b\\\\c.mp3\" ;x=y\r\n"
             "CONTENT-TYPE:   audio/mpeg; charset=binary  \r\n"
             "X-Other: ignored\r\n"
             "Content-Transfer-Encoding: binary\r\n",
             "z") +
        close());
    EXPECT_EQ(error_of(r), multipart_error::none);
    ASSERT_EQ(r.parts.size(), 1u);
    EXPECT_EQ(r.parts[0].info.name, "title");
    EXPECT_EQ(r.parts[0].info.filename, "a\"b\\c.mp3");
    EXPECT_EQ(r.parts[0].info.content_type, "audio/mpeg; charset=binary");
    EXPECT_EQ(r.parts[0].data, "z");

    // Raw UTF-8 in a quoted filename (what browsers and curl send).
    const auto u = parse_all_ways(
        part("Content-Disposition: form-data; name=\"f\"; filename=\"Bj\xc3\xb6rk.flac\"\r\n",
             "z") +
        close());
    ASSERT_EQ(u.parts.size(), 1u);
    EXPECT_EQ(u.parts[0].info.filename, "Bj\xc3\xb6rk.flac");
}

TEST(MultipartParser, FilenameStarDecoding) {
    auto filename_of = [](const std::string& disposition) {
        const auto r =
            parse_all_ways(part("Content-Disposition: " + disposition + "\r\n", "") + close());
        EXPECT_EQ(r.parts.size(), error_of(r) == multipart_error::none ? 1u : 0u);
        return std::make_pair(error_of(r),
                              r.parts.empty() ? std::nullopt : r.parts[0].info.filename);
    };
    using result = std::pair<multipart_error, std::optional<std::string>>;
    const auto ok = multipart_error::none;
    const auto bad = multipart_error::malformed;

    EXPECT_EQ(filename_of("form-data; name=f; filename*=UTF-8''%E2%82%AC%20rates.mp3"),
              result(ok, "\xe2\x82\xac rates.mp3"));
    // filename* wins over filename, whatever the order.
    EXPECT_EQ(filename_of("form-data; name=f; filename=\"fallback.mp3\"; "
                          "filename*=UTF-8''na%C3%AFve.flac"),
              result(ok, "na\xc3\xafve.flac"));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=utf-8'en'na%c3%afve.flac; "
                          "filename=\"fallback.mp3\""),
              result(ok, "na\xc3\xafve.flac"));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=ISO-8859-1''caf%E9.wav"),
              result(ok, "caf\xc3\xa9.wav"));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=\"UTF-8''a%20b\""), result(ok, "a b"));

    EXPECT_EQ(filename_of("form-data; name=f; filename*=UTF-8''%E2%82"), result(bad, {}));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=UTF-8''%C0%AF"), result(bad, {}));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=UTF-8''%G1"), result(bad, {}));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=UTF-8''%4"), result(bad, {}));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=UTF-8''a%00b"), result(bad, {}));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=UTF-8''a%0Ab"), result(bad, {}));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=KOI8-R''x"), result(bad, {}));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=UTF-8'x"), result(bad, {}));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=nocharset"), result(bad, {}));
    EXPECT_EQ(filename_of("form-data; name=f; filename*=UTF-8''a; filename*=UTF-8''b"),
              result(bad, {}));
}

TEST(MultipartParser, EmptyFilePart) {
    const auto r =
        parse_all_ways(field("title", "t") +
                       part("Content-Disposition: form-data; name=\"file\"; filename=\"\"\r\n"
                            "Content-Type: application/octet-stream\r\n",
                            "") +
                       close());
    EXPECT_EQ(error_of(r), multipart_error::none);
    ASSERT_EQ(r.parts.size(), 2u);
    EXPECT_EQ(r.parts[1].info.name, "file");
    EXPECT_EQ(r.parts[1].info.filename, "");
    EXPECT_EQ(r.parts[1].data_calls, 0u);
    EXPECT_TRUE(r.parts[1].ended);
}

TEST(MultipartParser, EpilogueIgnored) {
    const std::string body = field("a", "1") + close() + "epilogue\r\n" + field("evil", "2") +
                             close() + std::string(100000, 'e');
    const auto r = parse_all_ways(body);
    EXPECT_EQ(r.feed_error, multipart_error::none);
    EXPECT_EQ(r.finish_error, multipart_error::none);
    EXPECT_TRUE(r.done);
    ASSERT_EQ(r.parts.size(), 1u);
    EXPECT_EQ(r.parts[0].data, "1");

    // The close delimiter without its CRLF ends the body too.
    const auto r2 = parse_all_ways(field("a", "1") + "--" + boundary + "--");
    EXPECT_TRUE(r2.done);
    EXPECT_EQ(error_of(r2), multipart_error::none);
}

TEST(MultipartParser, DelimiterOnlyBody) {
    const auto r = parse_all_ways(close());
    EXPECT_TRUE(r.done);
    EXPECT_EQ(error_of(r), multipart_error::none);
    EXPECT_TRUE(r.parts.empty());
}

TEST(MultipartParser, ShortBoundaries) {
    for (std::string b : {"a", "-", "--", "x y"}) {
        SCOPED_TRACE("boundary '" + b + "'");
        const std::string data = "-\r\n-\r\n--\r\n-" + b.substr(0, b.size() - 1) + "\r\r\n";
        if (data.find("\r\n--" + b) != std::string::npos)
            continue;
        const std::string body =
            part("Content-Disposition: form-data; name=\"a\"\r\n", data, b) + close(b);
        const auto r = parse_all_ways(body, {}, b);
        EXPECT_EQ(error_of(r), multipart_error::none);
        ASSERT_EQ(r.parts.size(), 1u);
        EXPECT_EQ(r.parts[0].data, data);
    }
}

TEST(MultipartParser, CallbacksAbort) {
    const std::string body = curl_like_body();
    for (int which = 0; which < 3; ++which) {
        SCOPED_TRACE("callback " + std::to_string(which));
        int calls = 0;
        multipart_parser::callbacks cb;
        cb.on_part_begin = [&](const part_info&) { return ++calls, which != 0; };
        cb.on_part_data = [&](std::string_view) { return ++calls, which != 1; };
        cb.on_part_end = [&] { return ++calls, which != 2; };
        multipart_parser p(boundary, cb);
        EXPECT_EQ(p.feed(body), multipart_error::aborted);
        const int after = calls;
        EXPECT_EQ(p.feed(body), multipart_error::aborted);
        EXPECT_EQ(p.finish(), multipart_error::aborted);
        EXPECT_EQ(calls, after);  // no callback after the error
        EXPECT_EQ(p.error(), multipart_error::aborted);
    }
    // Empty callbacks accept.
    multipart_parser p(boundary, {});
    EXPECT_EQ(p.feed(body), multipart_error::none);
    EXPECT_EQ(p.finish(), multipart_error::none);
}

TEST(MultipartParser, ErrorStrings) {
    EXPECT_EQ(segue::http::to_string(multipart_error::none), "none");
    EXPECT_EQ(segue::http::to_string(multipart_error::malformed), "malformed");
    EXPECT_EQ(segue::http::to_string(multipart_error::too_many_parts), "too_many_parts");
    EXPECT_EQ(segue::http::to_string(multipart_error::part_header_too_large),
              "part_header_too_large");
    EXPECT_EQ(segue::http::to_string(multipart_error::preamble_too_large), "preamble_too_large");
    EXPECT_EQ(segue::http::to_string(multipart_error::missing_name), "missing_name");
    EXPECT_EQ(segue::http::to_string(multipart_error::truncated), "truncated");
    EXPECT_EQ(segue::http::to_string(multipart_error::aborted), "aborted");
}

// ---------------------------------------------------------------------------------------------
// Streaming: a 50 MB file part in 64 KiB reads, never held by the parser.

// The bytes of a body whose file part is generated on the fly: pseudo-random blocks with
// delimiter prefixes planted in them. Tracks a checksum of the file bytes it produced.
class synthetic_body {
  public:
    synthetic_body(std::string head, std::uint64_t file_size, std::string tail)
        : head_(std::move(head)), file_size_(file_size), tail_(std::move(tail)) {}

    std::uint64_t size() const { return head_.size() + file_size_ + tail_.size(); }
    std::uint64_t file_checksum() const { return checksum_; }

    std::size_t read(char* out, std::size_t room) {
        std::size_t n = 0;
        while (n < room && pos_ < size()) {
            if (pos_ < head_.size()) {
                const std::size_t k = std::min<std::size_t>(room - n, head_.size() - pos_);
                std::memcpy(out + n, head_.data() + pos_, k);
                n += k;
                pos_ += k;
            } else if (pos_ < head_.size() + file_size_) {
                // Blocks are aligned on body offsets, so some planted prefixes straddle reads.
                const std::uint64_t off = pos_ - head_.size();
                const std::uint64_t blk = pos_ / block_size;
                if (blk != block_index_)
                    make_block(blk);
                const std::size_t in_block = pos_ % block_size;
                const std::size_t k = static_cast<std::size_t>(
                    std::min<std::uint64_t>({room - n, block_size - in_block, file_size_ - off}));
                std::memcpy(out + n, block_.data() + in_block, k);
                for (std::size_t j = 0; j < k; ++j)
                    checksum_ =
                        (checksum_ ^ static_cast<unsigned char>(out[n + j])) * 1099511628211ull;
                n += k;
                pos_ += k;
            } else {
                const std::uint64_t off = pos_ - head_.size() - file_size_;
                const std::size_t k = std::min<std::size_t>(room - n, tail_.size() - off);
                std::memcpy(out + n, tail_.data() + off, k);
                n += k;
                pos_ += k;
            }
        }
        return n;
    }

  private:
    static constexpr std::size_t block_size = 4096;

    void make_block(std::uint64_t index) {
        block_index_ = index;
        block_.resize(block_size);
        std::uint64_t s = (index + 1) * 0x9e3779b97f4a7c15ull;
        for (std::size_t i = 0; i < block_size; i += 8) {
            s ^= s << 13;
            s ^= s >> 7;
            s ^= s << 17;
            std::memcpy(block_.data() + i, &s, 8);
        }
        // A delimiter prefix of varying length, some across the block (and so read) boundaries.
        const std::string fake = "\r\n--" + boundary.substr(0, index % boundary.size());
        const std::size_t at = index % 3 == 0 ? block_size - fake.size() / 2 : 100;
        std::memcpy(block_.data() + at, fake.data(), std::min(fake.size(), block_size - at));
    }

    std::string head_;
    std::uint64_t file_size_;
    std::string tail_;
    std::uint64_t pos_ = 0;
    std::string block_;
    std::uint64_t block_index_ = ~0ull;
    std::uint64_t checksum_ = 1469598103934665603ull;
};

TEST(MultipartStreaming, FiftyMegabytesInConstantMemory) {
    constexpr std::uint64_t file_size = 50ull * 1000 * 1000;
    constexpr std::size_t read_size = 64 * 1024;
    synthetic_body body(
        field("title", "Long Song") + "--" + boundary +
            "\r\nContent-Disposition: form-data; name=\"file\"; filename=\"long.wav\"\r\n"
            "Content-Type: audio/wav\r\n\r\n",
        file_size, "\r\n" + close());

    std::uint64_t received = 0, copied = 0, data_calls = 0;
    std::uint64_t checksum = 1469598103934665603ull;
    std::string title;
    std::vector<char> buf(read_size);
    bool in_file = false;
    multipart_parser::callbacks cb;
    cb.on_part_begin = [&](const part_info& info) {
        in_file = info.name == "file";
        return true;
    };
    cb.on_part_data = [&](std::string_view d) {
        ++data_calls;
        if (!in_file) {
            title.append(d);
            return true;
        }
        received += d.size();
        if (d.data() < buf.data() || d.data() + d.size() > buf.data() + buf.size())
            copied += d.size();  // not a view of the fed chunk
        for (unsigned char c : d)
            checksum = (checksum ^ c) * 1099511628211ull;
        return true;
    };
    cb.on_part_end = [&] { return true; };
    multipart_parser parser(boundary, cb);

    const std::size_t bound = boundary.size() + 4;
    std::size_t max_buffered = 0, chunks = 0;
    for (;;) {
        const std::size_t n = body.read(buf.data(), buf.size());
        if (n == 0)
            break;
        ++chunks;
        ASSERT_EQ(parser.feed(std::string_view(buf.data(), n)), multipart_error::none);
        max_buffered = std::max(max_buffered, parser.buffered_bytes());
        ASSERT_LE(parser.buffered_bytes(), bound);
    }
    ASSERT_EQ(parser.finish(), multipart_error::none);
    EXPECT_EQ(title, "Long Song");
    EXPECT_EQ(received, file_size);
    EXPECT_EQ(checksum, body.file_checksum());
    // Spans, not bytes: about one call per chunk plus one per held-back prefix.
    EXPECT_LE(data_calls, 3 * chunks);
    EXPECT_LE(copied, chunks * bound);

    // Throughput without the checksum the callback computes: a second pass with a no-op sink.
    synthetic_body again(
        "--" + boundary + "\r\nContent-Disposition: form-data; name=\"file\"\r\n\r\n", file_size,
        "\r\n" + close());
    std::uint64_t sunk = 0;
    multipart_parser fast(boundary, {nullptr,
                                     [&](std::string_view d) {
                                         sunk += d.size();
                                         return true;
                                     },
                                     nullptr});
    std::chrono::steady_clock::duration fast_time{};
    for (;;) {
        const std::size_t n = again.read(buf.data(), buf.size());
        if (n == 0)
            break;
        const auto t0 = std::chrono::steady_clock::now();
        ASSERT_EQ(fast.feed(std::string_view(buf.data(), n)), multipart_error::none);
        fast_time += std::chrono::steady_clock::now() - t0;
        ASSERT_LE(fast.buffered_bytes(), bound);
    }
    ASSERT_EQ(fast.finish(), multipart_error::none);
    EXPECT_EQ(sunk, file_size);

    const double secs = std::chrono::duration<double>(fast_time).count();
    const double mbps = static_cast<double>(file_size) / 1e6 / std::max(secs, 1e-9);
    std::printf(
        "[ multipart ] 50 MB file part, %zu chunks of 64 KiB: parser %.1f MB/s "
        "(%.1f ms), max buffered %zu bytes, %llu data callbacks\n",
        chunks, mbps, secs * 1e3, max_buffered, static_cast<unsigned long long>(data_calls));
    RecordProperty("throughput_mb_per_s", static_cast<int>(mbps));
}

}  // namespace

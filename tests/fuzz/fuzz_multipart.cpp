// libFuzzer target: the incremental multipart/form-data parser (gateway/http/multipart.cpp) on
// untrusted upload bodies, and multipart_boundary() on untrusted Content-Type values.
//
// Input layout: byte 0 picks the boundary, the chunking mode and the limits; bytes 1..8 seed the
// pseudo-random chunk sizes (so a run is reproducible); the rest is the body. The body is also
// tried as a Content-Type value.
//
// Besides crashes and ASan/UBSan reports, it aborts on broken invariants:
//   - callbacks out of order (data or end outside a part, begin inside one), empty data views;
//   - more bytes delivered to on_part_data than the body holds, more parts than max_parts;
//   - buffered_bytes() above the header limit or, inside a part, above the delimiter size;
//   - an error that is not sticky, or callbacks after an error;
//   - finish() disagreeing with done();
//   - a different outcome (parts, their headers and data, error, done) when the same body is fed
//     in one piece: the result must not depend on how the body was split;
//   - a boundary from multipart_boundary() that the parser rejects.

#include <algorithm>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/http/multipart.hpp"

namespace {

using segue::http::multipart_error;
using segue::http::multipart_limits;
using segue::http::multipart_parser;
using segue::http::part_info;

[[noreturn]] void fail(const char* what, std::string_view detail = {}) {
    std::fprintf(stderr, "fuzz_multipart: invariant broken: %s [%.*s]\n", what,
                 static_cast<int>(std::min<std::size_t>(detail.size(), 512)), detail.data());
    std::abort();
}

const char* const boundaries[] = {
    "b",
    "boundary",
    "------------------------8d6c3c9f2d1a4b7e",  // curl's shape
    "-",
};

struct recorded_part {
    part_info info;
    std::string data;
    bool ended = false;
};

struct outcome {
    std::vector<recorded_part> parts;
    multipart_error error = multipart_error::none;  // first error from feed() or finish()
    bool done = false;
};

class chunker {
  public:
    chunker(std::uint64_t seed, unsigned mode) : rng_(seed | 1), mode_(mode) {}
    std::size_t next_size() {
        switch (mode_) {
            case 0:
                return 1;
            case 1:
                return 1 + next() % 7;
            case 2:
                return 1 + next() % 300;
            default:
                return 1 + next() % 65536;
        }
    }

  private:
    std::uint64_t next() {
        rng_ ^= rng_ << 13;
        rng_ ^= rng_ >> 7;
        rng_ ^= rng_ << 17;
        return rng_;
    }
    std::uint64_t rng_;
    unsigned mode_;
};

// Parses `body` fed in the sizes `sizes` gives (nullptr: in one piece), checking the per-call
// invariants as it goes.
outcome run(std::string_view body, const std::string& boundary, const multipart_limits& limits,
            chunker* sizes) {
    outcome out;
    bool in_part = false;
    bool stopped = false;  // an error was returned: no callback may follow
    std::size_t delivered = 0;

    multipart_parser::callbacks cb;
    cb.on_part_begin = [&](const part_info& info) {
        if (stopped)
            fail("on_part_begin after an error");
        if (in_part)
            fail("on_part_begin inside a part");
        if (info.name.empty())
            fail("part without a name accepted");
        in_part = true;
        out.parts.push_back({info, {}, false});
        if (out.parts.size() > limits.max_parts)
            fail("more parts than max_parts");
        return true;
    };
    cb.on_part_data = [&](std::string_view data) {
        if (stopped)
            fail("on_part_data after an error");
        if (!in_part)
            fail("on_part_data outside a part");
        if (data.empty())
            fail("empty data view");
        delivered += data.size();
        if (delivered > body.size())
            fail("more data delivered than the body holds");
        out.parts.back().data.append(data);
        return true;
    };
    cb.on_part_end = [&] {
        if (stopped)
            fail("on_part_end after an error");
        if (!in_part)
            fail("on_part_end outside a part");
        in_part = false;
        out.parts.back().ended = true;
        return true;
    };

    multipart_parser p(boundary, cb, limits);
    const std::size_t delimiter_size = boundary.size() + 4;
    std::size_t pos = 0;
    while (pos < body.size()) {
        const std::size_t n =
            sizes ? std::min(sizes->next_size(), body.size() - pos) : body.size() - pos;
        const multipart_error e = p.feed(body.substr(pos, n));
        pos += n;
        if (p.buffered_bytes() > std::max(limits.max_part_header_bytes, delimiter_size))
            fail("buffered_bytes above its bound");
        if (in_part && p.buffered_bytes() > delimiter_size)
            fail("more than a delimiter held back inside a part");
        if (e != p.error())
            fail("feed() and error() disagree");
        if (e != multipart_error::none) {
            out.error = e;
            stopped = true;
            if (p.feed(body) != e || p.feed({}) != e || p.finish() != e)
                fail("error not sticky", segue::http::to_string(e));
            break;
        }
    }
    const bool done = p.done();
    const multipart_error fin = p.finish();
    if (out.error == multipart_error::none) {
        out.error = fin;
        if (done && fin != multipart_error::none)
            fail("done() but finish() fails", segue::http::to_string(fin));
        if (!done && fin != multipart_error::truncated)
            fail("finish() before the close delimiter is not truncated",
                 segue::http::to_string(fin));
        if (done && in_part)
            fail("done() inside a part");
    }
    if (segue::http::to_string(out.error).empty())
        fail("error without a name");
    out.done = done;
    return out;
}

void check_same(const outcome& a, const outcome& b) {
    if (a.error != b.error)
        fail("chunking changed the error", segue::http::to_string(a.error));
    if (a.done != b.done)
        fail("chunking changed done()");
    if (a.parts.size() != b.parts.size())
        fail("chunking changed the number of parts");
    for (std::size_t i = 0; i < a.parts.size(); ++i) {
        const auto &x = a.parts[i], &y = b.parts[i];
        if (x.info.name != y.info.name || x.info.filename != y.info.filename ||
            x.info.content_type != y.info.content_type)
            fail("chunking changed a part's headers", x.info.name);
        if (x.data != y.data)
            fail("chunking changed a part's data", x.info.name);
        if (x.ended != y.ended)
            fail("chunking changed where a part ends", x.info.name);
    }
}

// A boundary multipart_boundary() accepts works with the parser.
void check_boundary(std::string_view content_type) {
    const auto b = segue::http::multipart_boundary(content_type);
    if (!b)
        return;
    if (b->empty() || b->size() > 70)
        fail("boundary length outside 1..70", *b);
    const std::string body =
        "--" + *b + "\r\nContent-Disposition: form-data; name=\"x\"\r\n\r\nv\r\n--" + *b + "--";
    std::string data;
    int parts = 0;
    multipart_parser p(*b, {[&](const part_info& info) { return ++parts, info.name == "x"; },
                            [&](std::string_view d) { return data.append(d), true; }, nullptr});
    if (p.feed(body) != multipart_error::none || p.finish() != multipart_error::none ||
        parts != 1 || data != "v")
        fail("extracted boundary rejected by the parser", *b);
}

}  // namespace

extern "C" int LLVMFuzzerTestOneInput(const std::uint8_t* data, std::size_t size) {
    if (size == 0)
        return 0;
    const unsigned config = data[0];
    std::uint64_t seed = 0x9e3779b97f4a7c15ull;
    for (std::size_t i = 1; i < std::min<std::size_t>(size, 9); ++i)
        seed = (seed ^ data[i]) * 1099511628211ull;
    const std::size_t skip = std::min<std::size_t>(size, 9);
    const std::string_view body(reinterpret_cast<const char*>(data) + skip, size - skip);

    const std::string boundary = boundaries[config & 3];
    multipart_limits limits;
    if (config & 0x10) {  // small limits, so the fuzzer reaches them
        limits.max_parts = 3;
        limits.max_part_header_bytes = 96;
        limits.max_preamble_bytes = 16;
    }
    chunker sizes(seed, (config >> 2) & 3);

    const outcome chunked = run(body, boundary, limits, &sizes);
    const outcome whole = run(body, boundary, limits, nullptr);
    check_same(whole, chunked);

    check_boundary(body.substr(0, std::min<std::size_t>(body.find('\n'), body.size())));
    return 0;
}

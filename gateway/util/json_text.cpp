#include "gateway/util/json_text.hpp"

#include <boost/json.hpp>

#include <charconv>
#include <cmath>
#include <system_error>

namespace segue::util {

namespace json = boost::json;

namespace {

void append(std::string& out, const json::value& v);

void append_double(std::string& out, double d) {
    if (!std::isfinite(d)) {
        out += "null";
        return;
    }
    if (d == 0) {  // and -0: a sign on zero means nothing to a reader of these documents
        out += '0';
        return;
    }
    // Fixed notation, shortest digits that read back as the same double. The longest is the
    // smallest subnormal: "0." and 323 zeros before its digits (the largest double has 309).
    char buf[400];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, d, std::chars_format::fixed);
    if (ec != std::errc()) {
        out += "null";
        return;
    }
    out.append(buf, end);
}

template <class T>
void append_integer(std::string& out, T i) {
    char buf[24];
    auto [end, ec] = std::to_chars(buf, buf + sizeof buf, i);
    (void)ec;  // 24 characters hold any 64-bit integer
    out.append(buf, end);
}

// Escaped exactly as Boost does it (by Boost).
void append_string(std::string& out, json::string_view s) {
    out += json::serialize(s);
}

void append_object(std::string& out, const json::object& o) {
    out += '{';
    bool first = true;
    for (const auto& kv : o) {
        if (!first)
            out += ',';
        first = false;
        append_string(out, kv.key());
        out += ':';
        append(out, kv.value());
    }
    out += '}';
}

void append_array(std::string& out, const json::array& a) {
    out += '[';
    bool first = true;
    for (const auto& v : a) {
        if (!first)
            out += ',';
        first = false;
        append(out, v);
    }
    out += ']';
}

void append(std::string& out, const json::value& v) {
    switch (v.kind()) {
        case json::kind::null:
            out += "null";
            return;
        case json::kind::bool_:
            out += v.get_bool() ? "true" : "false";
            return;
        case json::kind::int64:
            append_integer(out, v.get_int64());
            return;
        case json::kind::uint64:
            append_integer(out, v.get_uint64());
            return;
        case json::kind::double_:
            append_double(out, v.get_double());
            return;
        case json::kind::string:
            append_string(out, v.get_string());
            return;
        case json::kind::array:
            append_array(out, v.get_array());
            return;
        case json::kind::object:
            append_object(out, v.get_object());
            return;
    }
}

}  // namespace

std::string json_text(const json::value& v) {
    std::string out;
    append(out, v);
    return out;
}

std::string json_text(const json::object& o) {
    std::string out;
    append_object(out, o);
    return out;
}

std::string json_text(const json::array& a) {
    std::string out;
    append_array(out, a);
    return out;
}

}  // namespace segue::util

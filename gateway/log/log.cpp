#include "gateway/log/log.hpp"

#include <unistd.h>

#include <atomic>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cmath>
#include <cstdio>
#include <ctime>

namespace segue::log {
namespace {

std::atomic<int> g_level{static_cast<int>(level::info)};
std::atomic<int> g_fd{1};

constexpr std::string_view level_name(level l) {
    switch (l) {
        case level::debug:
            return "debug";
        case level::info:
            return "info";
        case level::warn:
            return "warn";
        case level::error:
            return "error";
    }
    return "info";
}

void append_time(std::string& out) {
    using namespace std::chrono;
    auto now = system_clock::now();
    auto secs = time_point_cast<seconds>(now);
    auto ms = duration_cast<milliseconds>(now - secs).count();
    std::time_t t = system_clock::to_time_t(secs);
    std::tm tm{};
    gmtime_r(&t, &tm);
    char buf[40];
    int n = std::snprintf(buf, sizeof buf, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900,
                          tm.tm_mon + 1, tm.tm_mday, tm.tm_hour, tm.tm_min, tm.tm_sec,
                          static_cast<int>(ms));
    out.append(buf, static_cast<std::size_t>(n));
}

template <class T>
void append_number(std::string& out, T v) {
    char buf[32];
    auto [p, ec] = std::to_chars(buf, buf + sizeof buf, v);
    out.append(buf, p);
}

void append_value(std::string& out, const value& v) {
    struct visitor {
        std::string& out;
        void operator()(std::string_view s) const {
            out.push_back('"');
            append_json_escaped(out, s);
            out.push_back('"');
        }
        void operator()(std::int64_t i) const { append_number(out, i); }
        void operator()(std::uint64_t i) const { append_number(out, i); }
        void operator()(double d) const {
            if (!std::isfinite(d)) {
                out.append("null");
                return;
            }
            char buf[32];
            int n = std::snprintf(buf, sizeof buf, "%.6g", d);
            out.append(buf, static_cast<std::size_t>(n));
        }
        void operator()(bool b) const { out.append(b ? "true" : "false"); }
    };
    std::visit(visitor{out}, v);
}

}  // namespace

void set_level(level l) noexcept {
    g_level.store(static_cast<int>(l), std::memory_order_relaxed);
}
level current_level() noexcept {
    return static_cast<level>(g_level.load(std::memory_order_relaxed));
}
void set_fd(int fd) noexcept {
    g_fd.store(fd, std::memory_order_relaxed);
}

void append_json_escaped(std::string& out, std::string_view s) {
    static constexpr char hex[] = "0123456789abcdef";
    for (unsigned char c : s) {
        switch (c) {
            case '"':
                out.append("\\\"");
                break;
            case '\\':
                out.append("\\\\");
                break;
            case '\n':
                out.append("\\n");
                break;
            case '\r':
                out.append("\\r");
                break;
            case '\t':
                out.append("\\t");
                break;
            default:
                if (c < 0x20 || c == 0x7f) {
                    out.append("\\u00");
                    out.push_back(hex[c >> 4]);
                    out.push_back(hex[c & 0xf]);
                } else {
                    out.push_back(static_cast<char>(c));
                }
        }
    }
}

void write(level l, std::string_view msg, std::initializer_list<field> fields) {
    thread_local std::string line;
    line.clear();
    line.append("{\"time\":\"");
    append_time(line);
    line.append("\",\"level\":\"");
    line.append(level_name(l));
    line.append("\",\"msg\":\"");
    append_json_escaped(line, msg);
    line.push_back('"');
    for (const auto& f : fields) {
        line.append(",\"");
        append_json_escaped(line, f.key);
        line.append("\":");
        append_value(line, f.val);
    }
    line.append("}\n");
    // One write(2) per line keeps lines whole when several threads log at once.
    const int fd = g_fd.load(std::memory_order_relaxed);
    const char* p = line.data();
    std::size_t left = line.size();
    while (left > 0) {
        ssize_t n = ::write(fd, p, left);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return;  // nowhere left to report a failing log sink
        }
        p += n;
        left -= static_cast<std::size_t>(n);
    }
}

}  // namespace segue::log

#pragma once
// Structured logs: one JSON object per line on stdout. Cheap enough for an access line per
// request: the line is built in a thread-local buffer. By default it is written at once with one
// write(2). A server starts an async_writer: lines are then queued in memory and written by a
// thread of their own, many per write(2) (a line waits at most ~10 ms), so no IO thread ever
// waits on a slow log reader (a full pipe, a stalled collector). A line that does not fit the queue
// is dropped and counted, and the writer says how many it dropped once the sink takes lines again.

#include <cstddef>
#include <cstdint>
#include <initializer_list>
#include <span>
#include <string>
#include <string_view>
#include <variant>

namespace segue::log {

enum class level { debug = 0, info = 1, warn = 2, error = 3 };

using value = std::variant<std::string_view, std::int64_t, std::uint64_t, double, bool>;

struct field {
    std::string_view key;
    value val;
    field(std::string_view k, std::string_view v) : key(k), val(v) {}
    field(std::string_view k, const std::string& v) : key(k), val(std::string_view(v)) {}
    field(std::string_view k, const char* v) : key(k), val(std::string_view(v)) {}
    field(std::string_view k, int v) : key(k), val(static_cast<std::int64_t>(v)) {}
    field(std::string_view k, long v) : key(k), val(static_cast<std::int64_t>(v)) {}
    field(std::string_view k, long long v) : key(k), val(static_cast<std::int64_t>(v)) {}
    field(std::string_view k, unsigned v) : key(k), val(static_cast<std::uint64_t>(v)) {}
    field(std::string_view k, unsigned long v) : key(k), val(static_cast<std::uint64_t>(v)) {}
    field(std::string_view k, unsigned long long v) : key(k), val(static_cast<std::uint64_t>(v)) {}
    field(std::string_view k, double v) : key(k), val(v) {}
    field(std::string_view k, bool v) : key(k), val(v) {}
};

void set_level(level l) noexcept;
level current_level() noexcept;
inline bool enabled(level l) noexcept {
    return l >= current_level();
}

// Redirects output (tests); fd 1 by default.
void set_fd(int fd) noexcept;

void write(level l, std::string_view msg, std::span<const field> fields);
inline void write(level l, std::string_view msg, std::initializer_list<field> fields = {}) {
    write(l, msg, std::span<const field>(fields.begin(), fields.size()));
}

// While one lives, lines go through a queue of at most `max_queued_bytes` to a writer thread.
// Its destruction writes what is queued, then lines are written at once again. One at a time.
class async_writer {
  public:
    explicit async_writer(std::size_t max_queued_bytes);
    ~async_writer();
    async_writer(const async_writer&) = delete;
    async_writer& operator=(const async_writer&) = delete;
};

// Returns once every line logged before the call is written (at once when no async_writer).
void flush();
// Lines dropped because the queue was full, since the process started.
std::uint64_t dropped_lines() noexcept;

inline void debug(std::string_view msg, std::initializer_list<field> f = {}) {
    if (enabled(level::debug))
        write(level::debug, msg, f);
}
inline void info(std::string_view msg, std::initializer_list<field> f = {}) {
    if (enabled(level::info))
        write(level::info, msg, f);
}
inline void warn(std::string_view msg, std::initializer_list<field> f = {}) {
    if (enabled(level::warn))
        write(level::warn, msg, f);
}
inline void error(std::string_view msg, std::initializer_list<field> f = {}) {
    if (enabled(level::error))
        write(level::error, msg, f);
}

// Appends `s` to `out` as the inside of a JSON string (no quotes).
void append_json_escaped(std::string& out, std::string_view s);

}  // namespace segue::log

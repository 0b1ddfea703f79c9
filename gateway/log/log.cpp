#include "gateway/log/log.hpp"

#include <atomic>
#include <charconv>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <ctime>
#include <mutex>
#include <stdexcept>
#include <thread>

#include "gateway/util/fd_io.hpp"

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

void format_line(std::string& line, level l, std::string_view msg, std::span<const field> fields) {
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
}

// The queue of an async_writer. Static, never destroyed: a thread that logs while the writer
// stops finds it still there (and then writes its line itself).
struct queue {
    std::mutex mu;
    std::condition_variable wake;     // the writer: lines, drops to report, or stop
    std::condition_variable written;  // flush(): a batch went out
    std::string pending;              // whole lines, not yet taken by the writer
    std::size_t limit = 0;
    std::uint64_t queued = 0;      // lines queued, ever
    std::uint64_t done = 0;        // of those, written (or given up on)
    std::uint64_t unreported = 0;  // dropped since the last notice
    int flushes = 0;               // flush() calls waiting
    bool running = false;
    bool stopping = false;
    std::thread thread;
};

// Once woken by a first line, the writer lets more gather for up to `linger` (or until a batch
// of `batch_bytes`): under load one wake-up and one write(2) carry many lines. Woken per line,
// the writer cost the IO thread a context switch per request (47k against 63k access-logged
// requests/s on one core, bench/healthz.sh).
constexpr auto linger = std::chrono::milliseconds(10);
constexpr std::size_t batch_bytes = 64 * 1024;
// How long a stopping writer may take to write what is queued (see ~async_writer).
constexpr auto final_write_wait = std::chrono::seconds(2);

queue& the_queue() {
    static auto* q = new queue;  // never destroyed (see queue)
    return *q;
}

std::atomic<bool> g_async{false};
std::atomic<std::uint64_t> g_dropped{0};

void writer_loop(queue& q) {
    std::string batch;
    std::unique_lock lk(q.mu);
    for (;;) {
        q.wake.wait(lk, [&] { return !q.pending.empty() || q.unreported > 0 || q.stopping; });
        q.wake.wait_for(lk, linger, [&] {
            return q.pending.size() >= batch_bytes || q.stopping || q.flushes > 0;
        });
        if (q.pending.empty() && q.unreported == 0) {  // stopping, and nothing left
            q.running = false;
            q.written.notify_all();
            return;
        }
        batch.swap(q.pending);
        const auto dropped = q.unreported;
        q.unreported = 0;
        const auto upto = q.queued;
        lk.unlock();
        if (dropped > 0) {
            std::string notice;
            const field count{"dropped", static_cast<std::uint64_t>(dropped)};
            format_line(notice, level::warn,
                        "log lines dropped: the log's reader was slower than the log",
                        std::span(&count, 1));
            batch.append(notice);
        }
        (void)util::write_all(g_fd.load(std::memory_order_relaxed), batch);  // no one to tell
        batch.clear();  // its capacity (at most about twice the queue's limit) is kept
        lk.lock();
        q.done = upto;
        q.written.notify_all();
    }
}

}  // namespace

async_writer::async_writer(std::size_t max_queued_bytes) {
    auto& q = the_queue();
    std::lock_guard lk(q.mu);
    if (q.running || q.thread.joinable())
        throw std::logic_error("log: an async_writer is already running");
    q.limit = max_queued_bytes;
    q.stopping = false;
    q.running = true;
    q.thread = std::thread([&q] { writer_loop(q); });
    g_async.store(true, std::memory_order_release);
}

async_writer::~async_writer() {
    auto& q = the_queue();
    std::unique_lock lk(q.mu);
    q.stopping = true;
    q.wake.notify_one();
    // It writes what is queued first, but a reader of the log that stopped reading (a pipe to
    // a stalled process) would hold the exit for as long as it stalls: measured, a SIGTERM'd
    // gateway still there 22 s after its drain. So the wait has an end; then the writer, blocked
    // in write(2), is left to the process's exit, and later lines are dropped rather than block
    // whoever logs them (the descriptor is not made non-blocking: a terminal shares it).
    if (q.written.wait_for(lk, final_write_wait, [&] { return !q.running; })) {
        lk.unlock();
        q.thread.join();
    } else {
        lk.unlock();
        q.thread.detach();
        g_fd.store(-1, std::memory_order_relaxed);
    }
    g_async.store(false, std::memory_order_release);
}

void flush() {
    if (!g_async.load(std::memory_order_acquire))
        return;
    auto& q = the_queue();
    std::unique_lock lk(q.mu);
    const auto upto = q.queued;
    ++q.flushes;
    q.wake.notify_one();  // no lingering for a flush
    q.written.wait(lk, [&] { return q.done >= upto || !q.running; });
    --q.flushes;
}

std::uint64_t dropped_lines() noexcept {
    return g_dropped.load(std::memory_order_relaxed);
}

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

void write(level l, std::string_view msg, std::span<const field> fields) {
    thread_local std::string line;
    format_line(line, l, msg, fields);
    if (g_async.load(std::memory_order_acquire)) {
        auto& q = the_queue();
        std::unique_lock lk(q.mu);
        if (q.running) {
            if (q.pending.size() + line.size() > q.limit) {
                ++q.unreported;
                g_dropped.fetch_add(1, std::memory_order_relaxed);
                return;
            }
            const bool was_empty = q.pending.empty();
            const bool fills_a_batch =
                q.pending.size() < batch_bytes && q.pending.size() + line.size() >= batch_bytes;
            q.pending.append(line);
            ++q.queued;
            lk.unlock();
            // The first line wakes the writer (which then lingers); a full batch ends its
            // lingering. Other lines wake no one.
            if (was_empty || fills_a_batch)
                q.wake.notify_one();
            return;
        }
    }
    // One write(2) per line keeps lines whole when several threads log at once (a failing sink
    // leaves no one to tell).
    (void)util::write_all(g_fd.load(std::memory_order_relaxed), line);
}

}  // namespace segue::log

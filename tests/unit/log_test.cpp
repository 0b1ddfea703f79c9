// The structured log: one JSON object per line, written at once or, under an async_writer,
// by a thread of its own that never makes a logging thread wait on the sink.

#include <gtest/gtest.h>

#include <fcntl.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <cstdint>
#include <future>
#include <map>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gateway/log/log.hpp"
#include "tests/support/process.hpp"

namespace json = boost::json;
namespace slog = segue::log;
using namespace std::chrono_literals;

namespace {

// Every line of `text`, parsed (a line that is not a JSON object fails the test).
std::vector<json::object> lines_of(const std::string& text) {
    std::vector<json::object> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        boost::system::error_code ec;
        auto v = json::parse(line, ec);
        EXPECT_FALSE(ec) << "not JSON: " << line;
        if (!ec && v.is_object())
            out.push_back(v.as_object());
        else
            ADD_FAILURE() << "not a JSON object: " << line;
    }
    return out;
}

// Everything readable from `fd` until EOF.
std::string read_all(int fd) {
    std::string out;
    char buf[65536];
    for (;;) {
        const ssize_t n = ::read(fd, buf, sizeof buf);
        if (n > 0)
            out.append(buf, static_cast<std::size_t>(n));
        else if (n == 0 || errno != EINTR)
            return out;
    }
}

// Logs to a pipe for the test's length; the read end is drained by `drain()`.
struct piped_log {
    int fds[2] = {-1, -1};
    piped_log() {
        EXPECT_EQ(::pipe(fds), 0);
        slog::set_fd(fds[1]);
    }
    ~piped_log() {
        slog::set_fd(1);
        for (int fd : fds)
            if (fd >= 0)
                ::close(fd);
    }
    // Everything logged so far, once the write end is closed.
    std::string drain() {
        close_write_end();
        return read_all(fds[0]);
    }
    // What `reader` (already reading the read end) got, once the write end is closed.
    std::string drain_into(std::future<std::string>& reader) {
        close_write_end();
        return reader.get();
    }
    void close_write_end() {
        slog::set_fd(1);
        ::close(fds[1]);
        fds[1] = -1;
    }
};

}  // namespace

TEST(Log, ALineIsOneJsonObjectWithItsFieldsEscaped) {
    piped_log p;
    slog::info("said \"hi\"\n", {{"who", "a\\b"}, {"n", 42}, {"ok", true}, {"ratio", 0.5}});
    const auto lines = lines_of(p.drain());
    ASSERT_EQ(lines.size(), 1u);
    EXPECT_EQ(lines[0].at("level"), "info");
    EXPECT_EQ(lines[0].at("msg"), "said \"hi\"\n");
    EXPECT_EQ(lines[0].at("who"), "a\\b");
    EXPECT_EQ(lines[0].at("n").as_int64(), 42);
    EXPECT_EQ(lines[0].at("ok"), true);
    EXPECT_EQ(lines[0].at("ratio").as_double(), 0.5);
}

// Four threads log at once through the writer: every line arrives whole, each thread's in the
// order it logged them, and none is dropped while the queue has room.
TEST(Log, AsyncLinesFromManyThreadsArriveWholeAndInOrder) {
    segue::test::temp_dir dir;
    const int fd = ::open(dir.file("log").c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
    ASSERT_GE(fd, 0);
    slog::set_fd(fd);
    const auto dropped_before = slog::dropped_lines();
    constexpr int threads = 4, each = 2000;
    {
        slog::async_writer writer(8 << 20);
        std::vector<std::thread> ts;
        for (int t = 0; t < threads; ++t)
            ts.emplace_back([t] {
                for (int i = 0; i < each; ++i)
                    slog::info("line", {{"thread", t}, {"n", i}});
            });
        for (auto& t : ts)
            t.join();
        slog::flush();  // returns once all of them are written
        EXPECT_EQ(lines_of(segue::test::read_file(dir.file("log"))).size(),
                  static_cast<std::size_t>(threads * each));
    }
    slog::set_fd(1);
    ::close(fd);
    EXPECT_EQ(slog::dropped_lines(), dropped_before);
    std::map<std::int64_t, std::int64_t> next;
    for (const auto& l : lines_of(segue::test::read_file(dir.file("log")))) {
        const auto t = l.at("thread").as_int64();
        EXPECT_EQ(l.at("n").as_int64(), next[t]) << "thread " << t;
        next[t] = l.at("n").as_int64() + 1;
    }
    for (int t = 0; t < threads; ++t)
        EXPECT_EQ(next[t], each);
}

// A reader that takes nothing (a full pipe: a stalled log collector) blocks the writer thread,
// never the threads that log: their lines beyond the queue's room are dropped and counted, and
// once the reader takes lines again the writer says how many it dropped.
TEST(Log, ASinkThatTakesNothingNeverBlocksTheLoggersAndItsDropsAreReported) {
    piped_log p;
    const auto dropped_before = slog::dropped_lines();
    constexpr int total = 20000;  // ~2 MB: far more than the pipe (64 KiB) and the queue hold
    std::optional<slog::async_writer> writer;
    writer.emplace(64 << 10);
    auto logging = std::async(std::launch::async, [] {
        for (int i = 0; i < total; ++i)
            slog::info("line", {{"n", i}, {"pad", std::string(64, 'x')}});
    });
    // Nothing reads the pipe yet: the loggers still finish.
    // EXPECT, not ASSERT: the reader below unblocks everything even if a logger is stuck.
    EXPECT_EQ(logging.wait_for(30s), std::future_status::ready) << "a logger waited on the sink";
    EXPECT_GT(slog::dropped_lines(), dropped_before);
    // Now a reader drains the pipe; the writer's stop writes what is queued and the notice.
    auto reading = std::async(std::launch::async, [&p] { return read_all(p.fds[0]); });
    logging.wait();
    slog::flush();
    slog::info("end");
    writer.reset();
    const std::string text = p.drain_into(reading);
    const auto dropped = slog::dropped_lines() - dropped_before;
    std::int64_t received = 0, reported = 0;
    bool end = false;
    for (const auto& l : lines_of(text)) {
        if (l.at("msg") == "line")
            ++received;
        else if (l.at("msg") == "end")
            end = true;
        else if (l.contains("dropped"))
            reported += l.at("dropped").as_int64();
    }
    EXPECT_TRUE(end);
    EXPECT_EQ(reported, static_cast<std::int64_t>(dropped));
    EXPECT_EQ(received + reported, total);
}

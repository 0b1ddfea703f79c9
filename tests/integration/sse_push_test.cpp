// Server-Sent Events pushed by the event hub, against the real binary: every event once and in
// order for many followers of one task and across a reconnect with Last-Event-ID; a client that
// goes away is noticed at once (not at the next write); idle streams get keep-alives.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <map>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gateway/audio/audio.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
using segue::test::http_connection;
using segue::test::http_request;
using segue::test::segue_process;

namespace {

const std::string key = "Authorization: Bearer sk-sse";
const std::string boundary = "segue-sse-boundary-51c2";

std::string config_for(const std::string& dir, const std::string& sandbox_delay,
                       const std::string& api = "") {
    return "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n  drain_timeout: 5s\n"
           "log:\n  level: warn\n"
           "tenants:\n  - name: a\n    api_keys: [sk-sse]\n" +
           segue::test::storage_yaml(dir) +
           "engine:\n  poll_interval: 100ms\n  lease: 2s\n"
           "providers:\n  sandbox:\n    delay: " +
           sandbox_delay + "\n" + api;
}

std::string create_task(const segue::test::temp_dir& d, std::uint16_t port) {
    const std::string path = d.file("in.wav");
    EXPECT_TRUE(segue::audio::write_test_song(path, 4, 22050, 1, 120, "wav"));
    auto r = http_request(port, "POST", "/v1/extensions",
                          segue::test::multipart_body(
                              {{"audio_file", segue::test::read_file(path), "in.wav", "audio/wav"},
                               {"extend_after", "2"},
                               {"length", "2"}},
                              boundary),
                          {key, "Content-Type: multipart/form-data; boundary=" + boundary});
    EXPECT_TRUE(r);
    if (!r)
        return {};
    EXPECT_EQ(r->status, 202) << r->body;
    return std::string(json::parse(r->body).as_object().at("id").as_string());
}

struct frame {
    std::int64_t seq = 0;
    std::string type;
};

struct stop_reading {};

// Follows the task's SSE stream until it ends, until `stop_after` frames, or, with `for_at_most`,
// until that much time has passed (then closes).
struct sse_reader {
    std::vector<frame> frames;
    int keep_alives = 0;
    bool ended = false;  // the server ended the stream (final event sent)
    void run(std::uint16_t port, const std::string& id, std::int64_t last_event_id = -1,
             std::size_t stop_after = 0, std::chrono::milliseconds for_at_most = 0ms) {
        http_connection c(port, 30s);
        const auto deadline = std::chrono::steady_clock::now() + for_at_most;
        std::string req = "GET /v1/extensions/" + id + "/events HTTP/1.1\r\nHost: 127.0.0.1\r\n" +
                          key + "\r\nAccept: text/event-stream\r\n";
        if (last_event_id >= 0)
            req += "Last-Event-ID: " + std::to_string(last_event_id) + "\r\n";
        ASSERT_TRUE(c.send_raw(req + "\r\n"));
        std::string text;
        try {
            auto r = c.read_streaming([&](std::string_view piece) {
                text.append(piece);
                for (std::size_t end; (end = text.find("\n\n")) != std::string::npos;) {
                    std::istringstream in(text.substr(0, end));
                    text.erase(0, end + 2);
                    frame f;
                    for (std::string line; std::getline(in, line);) {
                        if (line.rfind("id: ", 0) == 0)
                            f.seq = std::stoll(line.substr(4));
                        else if (line.rfind("event: ", 0) == 0)
                            f.type = line.substr(7);
                        else if (line.rfind(": keep-alive", 0) == 0)
                            ++keep_alives;
                    }
                    if (f.seq > 0)
                        frames.push_back(f);
                    if (stop_after > 0 && frames.size() >= stop_after)
                        throw stop_reading{};
                    if (for_at_most > 0ms && std::chrono::steady_clock::now() > deadline)
                        throw stop_reading{};
                }
            });
            ended = r.has_value();
        } catch (const stop_reading&) {
        }
    }
};

std::vector<frame> log_of(std::uint16_t port, const std::string& id) {
    auto r = http_request(port, "GET", "/v1/extensions/" + id + "/events?limit=1000", "", {key});
    std::vector<frame> out;
    if (!r || r->status != 200)
        return out;
    auto body = json::parse(r->body).as_object();
    for (auto& e : body["data"].as_array())
        out.push_back({e.at("seq").as_int64(), std::string(e.at("type").as_string())});
    return out;
}

double metric(std::uint16_t port, const std::string& series) {
    auto r = http_request(port, "GET", "/metrics");
    return r ? segue::test::metric_value(r->body, series) : -1;
}

void expect_same(const std::vector<frame>& got, const std::vector<frame>& log,
                 const std::string& who) {
    ASSERT_EQ(got.size(), log.size()) << who;
    for (std::size_t i = 0; i < got.size(); ++i) {
        EXPECT_EQ(got[i].seq, log[i].seq) << who << " frame " << i;
        EXPECT_EQ(got[i].type, log[i].type) << who << " frame " << i;
    }
}

TEST(SsePush, ManyFollowersAndAReconnectGetEveryEventOnceInOrder) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path(), "1500ms"));
    const auto id = create_task(d, s.port());
    ASSERT_FALSE(id.empty());

    // 16 followers from the start, in parallel, until the stream ends by itself.
    std::vector<std::unique_ptr<sse_reader>> readers;
    std::vector<std::thread> threads;
    for (int i = 0; i < 16; ++i) {
        readers.push_back(std::make_unique<sse_reader>());
        threads.emplace_back([&, r = readers.back().get()] { r->run(s.port(), id); });
    }
    // One more leaves after its first two events and comes back with Last-Event-ID.
    sse_reader first;
    first.run(s.port(), id, -1, 2);
    ASSERT_EQ(first.frames.size(), 2u);
    sse_reader second;
    second.run(s.port(), id, first.frames.back().seq);
    for (auto& t : threads)
        t.join();

    const auto log = log_of(s.port(), id);
    ASSERT_GE(log.size(), 4u);
    EXPECT_EQ(log.back().type, "extension.succeeded");
    for (std::size_t i = 0; i < readers.size(); ++i) {
        EXPECT_TRUE(readers[i]->ended) << "follower " << i;
        expect_same(readers[i]->frames, log, "follower " + std::to_string(i));
    }
    EXPECT_TRUE(second.ended);
    auto joined = first.frames;
    joined.insert(joined.end(), second.frames.begin(), second.frames.end());
    expect_same(joined, log, "reconnected follower");
    // Reconnecting after the end: only what follows the id, then the stream ends.
    sse_reader late;
    late.run(s.port(), id, log[log.size() - 2].seq);
    EXPECT_TRUE(late.ended);
    expect_same(late.frames, {log.back()}, "late follower");
}

TEST(SsePush, IdleStreamsGetKeepAlives) {
    segue::test::temp_dir d;
    // The task stays queued/submitted for the whole test: its stream is idle.
    segue_process s(config_for(d.path(), "10m", "api:\n  sse_keep_alive: 1s\n"));
    const auto id = create_task(d, s.port());
    ASSERT_FALSE(id.empty());
    sse_reader idle;
    idle.run(s.port(), id, -1, 0, 2500ms);
    EXPECT_GE(idle.keep_alives, 1) << "an idle stream sends a comment line every second";
    EXPECT_FALSE(idle.frames.empty());
    EXPECT_FALSE(idle.ended);
}

// A task's stream and the task list's stream alike.
TEST(SsePush, AClientThatLeavesIsNoticedAtOnce) {
    segue::test::temp_dir d;
    // An idle task, and keep-alives far apart: only the pending read can notice the close.
    segue_process s(config_for(d.path(), "10m", "api:\n  sse_keep_alive: 10m\n"));
    const auto id = create_task(d, s.port());
    ASSERT_FALSE(id.empty());
    for (const std::string& target :
         {"/v1/extensions/" + id + "/events", std::string("/v1/extensions")}) {
        {
            auto c = std::make_unique<http_connection>(s.port(), 5s);
            ASSERT_TRUE(c->send_raw("GET " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n" + key +
                                    "\r\nAccept: text/event-stream\r\n\r\n"));
            const auto until = std::chrono::steady_clock::now() + 5s;
            while (metric(s.port(), "segue_sse_clients") != 1 &&
                   std::chrono::steady_clock::now() < until)
                std::this_thread::sleep_for(10ms);
            ASSERT_EQ(metric(s.port(), "segue_sse_clients"), 1) << target;
        }  // closed here
        const auto closed_at = std::chrono::steady_clock::now();
        while (metric(s.port(), "segue_sse_clients") != 0 &&
               std::chrono::steady_clock::now() - closed_at < 5s)
            std::this_thread::sleep_for(5ms);
        const auto noticed = std::chrono::steady_clock::now() - closed_at;
        EXPECT_EQ(metric(s.port(), "segue_sse_clients"), 0) << target;
        EXPECT_LT(noticed, 1s) << target;
    }
    // Each stream is counted as a request, and not observed as a latency: the create's is the
    // one /v1/extensions duration (a stream open for minutes would set its route's p99).
    EXPECT_EQ(
        metric(s.port(),
               R"(segue_http_requests_total{route="/v1/extensions",method="GET",code="200"})"),
        1);
    EXPECT_EQ(
        metric(s.port(), R"(segue_http_request_duration_seconds_count{route="/v1/extensions"})"),
        1);
    EXPECT_EQ(
        metric(s.port(),
               R"(segue_http_request_duration_seconds_count{route="/v1/extensions/{id}/events"})"),
        0);
}

// The task list's stream sends its keep-alives at api.sse_keep_alive, as a task's does.
TEST(SsePush, TheTaskListStreamKeepsItsKeepAliveInterval) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path(), "10m", "api:\n  sse_keep_alive: 1s\n"));
    http_connection c(s.port(), 5s);
    int keep_alives = 0;
    std::atomic<bool> stop{false};
    std::thread closer([&] {
        std::this_thread::sleep_for(3500ms);
        stop = true;  // the next keep-alive ends the read
    });
    ASSERT_TRUE(c.send_raw("GET /v1/extensions HTTP/1.1\r\nHost: 127.0.0.1\r\n" + key +
                           "\r\nAccept: text/event-stream\r\n\r\n"));
    try {
        c.read_streaming([&](std::string_view body) {
            for (auto at = body.find(": keep-alive"); at != std::string_view::npos;
                 at = body.find(": keep-alive", at + 1))
                ++keep_alives;
            if (stop)
                throw std::runtime_error("enough");
        });
    } catch (const std::exception&) {
    }
    closer.join();
    EXPECT_GE(keep_alives, 2) << "about one a second over 3.5 s";
}

}  // namespace

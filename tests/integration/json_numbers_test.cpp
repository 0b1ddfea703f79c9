// Numbers in every JSON document the API returns are plain decimals ("2.5", "50"), never
// Boost.JSON's exponent form ("2.5E0", "5E1"): the 202, the task, its events (JSON and SSE) and
// the credits ledger, with fractional seconds, durations and credit amounts throughout.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <chrono>
#include <regex>
#include <string>
#include <thread>

#include "gateway/audio/audio.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
using segue::test::http_request;
using segue::test::segue_process;

namespace {

const std::string key = "Authorization: Bearer sk-numbers";
const std::string boundary = "segue-numbers-boundary";

// A JSON number in exponent form where a value starts (after ':', ',' or '[').
const std::regex exponent_number(R"([:,\[]\s*-?[0-9]+(\.[0-9]+)?[eE][-+]?[0-9]+)");

std::string exponents_in(const std::string& text) {
    std::smatch m;
    return std::regex_search(text, m, exponent_number) ? m.str() : std::string();
}

}  // namespace

TEST(JsonNumbers, TaskEventsAndLedgerArePlainDecimals) {
    segue::test::temp_dir d;
    segue_process s(
        "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n"
        "log:\n  level: warn\n"
        "tenants:\n  - name: n\n    api_keys: [sk-numbers]\n    credits: 10.5\n" +
        segue::test::storage_yaml(d.path()) +
        "engine:\n  poll_interval: 100ms\n"
        "providers:\n  sandbox:\n    delay: 50ms\n    price: 0.125\n");
    const std::string path = d.file("input.wav");
    ASSERT_TRUE(segue::audio::write_test_song(path, 6, 44100, 1, 120, "wav"));
    auto r =
        http_request(s.port(), "POST", "/v1/extensions",
                     segue::test::multipart_body(
                         {{"audio_file", segue::test::read_file(path), "song.wav", "audio/wav"},
                          {"extend_after", "2.5"},
                          {"length", "3.25"},
                          {"num_outputs", "2"},
                          {"metadata", R"({"ratio":0.75,"n":50})"}},
                         boundary),
                     {key, "Content-Type: multipart/form-data; boundary=" + boundary});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    EXPECT_EQ(exponents_in(r->body), "") << r->body;
    EXPECT_NE(r->body.find(R"("extend_after":2.5,)"), std::string::npos) << r->body;
    const std::string id(json::parse(r->body).at("id").as_string());

    std::string task;
    for (int i = 0; i < 300; ++i) {
        auto t = http_request(s.port(), "GET", "/v1/extensions/" + id, "", {key});
        ASSERT_TRUE(t);
        task = t->body;
        if (json::parse(task).at("status") == "succeeded")
            break;
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_EQ(json::parse(task).at("status"), "succeeded") << task;
    EXPECT_EQ(exponents_in(task), "") << task;
    EXPECT_NE(task.find(R"("length":3.25)"), std::string::npos) << task;
    EXPECT_NE(task.find(R"("duration":5.75)"), std::string::npos) << "output durations: " << task;
    EXPECT_NE(task.find(R"("ratio":0.75,"n":50)"), std::string::npos) << task;

    auto events = http_request(s.port(), "GET", "/v1/extensions/" + id + "/events", "", {key});
    ASSERT_TRUE(events);
    EXPECT_EQ(exponents_in(events->body), "") << events->body;
    EXPECT_NE(events->body.find(R"("duration":5.75)"), std::string::npos) << events->body;
    EXPECT_NE(events->body.find(R"("ratio":0.75)"), std::string::npos) << events->body;

    segue::test::http_connection sse(s.port(), 10s);
    auto stream = sse.request("GET", "/v1/extensions/" + id + "/events", "",
                              {key, "Accept: text/event-stream"});
    ASSERT_TRUE(stream);
    EXPECT_NE(stream->body.find("extension.succeeded"), std::string::npos) << stream->body;
    EXPECT_EQ(exponents_in(stream->body), "") << stream->body;

    auto credits = http_request(s.port(), "GET", "/v1/credits", "", {key});
    ASSERT_TRUE(credits);
    ASSERT_EQ(credits->status, 200) << credits->body;
    EXPECT_EQ(exponents_in(credits->body), "") << credits->body;
    EXPECT_NE(credits->body.find("0.25"), std::string::npos)
        << "two outputs at 0.125: " << credits->body;
}

// What the web console (/console) stands on, against the real binary: its embedded files with
// their types, ETags, revalidation and a self-only Content-Security-Policy; the tenant's task
// list with each task's credits, live over Server-Sent Events and private to the tenant; the
// task's credits; and the providers' recent error rates. The browser journey itself is
// tests/console/console_test.js (headless Chromium).

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <chrono>
#include <mutex>
#include <string>
#include <thread>

#include "gateway/api/console_assets.hpp"
#include "gateway/audio/audio.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
using segue::test::form_part;
using segue::test::http_request;

namespace {

const std::string key_a = "Authorization: Bearer sk-console-a";
const std::string key_b = "Authorization: Bearer sk-console-b";
const std::string boundary = "segue-console-boundary";

std::string config(const std::string& dir) {
    return "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n  drain_timeout: 2s\n"
           "log:\n  level: info\n"
           "tenants:\n"
           "  - name: a\n    api_keys: [sk-console-a]\n    credits: 50\n"
           "  - name: b\n    api_keys: [sk-console-b]\n    credits: 50\n" +
           segue::test::storage_yaml(dir) +
           "engine:\n  poll_interval: 100ms\n  lease: 2s\n"
           "providers:\n  sandbox:\n    delay: 300ms\n    price: 2\n";
}

json::object parse(const std::string& s) {
    return json::parse(s).as_object();
}

std::string create(std::uint16_t port, const segue::test::temp_dir& d) {
    const std::string path = d.file("in.wav");
    EXPECT_TRUE(segue::audio::write_test_song(path, 3.0, 22050, 1, 120, "wav"));
    std::vector<form_part> parts = {
        {"audio_file", segue::test::read_file(path), "in.wav", "audio/wav"},
        {"extend_after", "1.5"},
        {"length", "1"}};
    auto r =
        http_request(port, "POST", "/v1/extensions", segue::test::multipart_body(parts, boundary),
                     {key_a, "Content-Type: multipart/form-data; boundary=" + boundary});
    EXPECT_TRUE(r);
    if (!r || r->status != 202)
        return "";
    return std::string(parse(r->body)["id"].as_string());
}

// Follows GET /v1/extensions as SSE for `key`, collecting the `task` frames' data, until the
// stream has been quiet for `quiet` (it never ends by itself).
struct list_watch {
    std::mutex m;
    std::vector<json::object> tasks;
    int status = 0;
    std::thread th;
    list_watch(std::uint16_t port, const std::string& key, std::chrono::milliseconds quiet) {
        th = std::thread([this, port, key, quiet] {
            segue::test::http_connection c(port, quiet);
            if (!c.send_raw("GET /v1/extensions?limit=10 HTTP/1.1\r\nHost: 127.0.0.1\r\n" + key +
                            "\r\nAccept: text/event-stream\r\n\r\n"))
                return;
            std::string text;
            c.read_streaming([&](std::string_view piece) {
                text.append(piece);
                for (std::size_t end; (end = text.find("\n\n")) != std::string::npos;) {
                    const std::string frame = text.substr(0, end);
                    text.erase(0, end + 2);
                    if (frame.rfind("event: task\ndata: ", 0) != 0)
                        continue;
                    std::lock_guard lk(m);
                    tasks.push_back(parse(frame.substr(18)));
                }
            });
        });
    }
    ~list_watch() {
        if (th.joinable())
            th.join();
    }
};

}  // namespace

TEST(Console, ServesItsEmbeddedFilesWithTypesEtagsAndASelfOnlyPolicy) {
    segue::test::temp_dir d;
    segue::test::segue_process s(config(d.path()));
    const auto assets = segue::api::console_assets();
    ASSERT_FALSE(assets.empty());
    bool has_index = false;
    for (const auto& a : assets) {
        SCOPED_TRACE(std::string(a.path));
        auto r = http_request(s.port(), "GET", std::string(a.path));
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 200);
        EXPECT_EQ(r->header("content-type").value_or(""), a.content_type);
        EXPECT_EQ(r->header("etag").value_or(""), a.etag);
        EXPECT_EQ(r->header("cache-control").value_or(""), "no-cache");
        EXPECT_EQ(r->header("x-content-type-options").value_or(""), "nosniff");
        EXPECT_EQ(r->body.size(), a.body.size());
        EXPECT_EQ(r->body,
                  std::string(reinterpret_cast<const char*>(a.body.data()), a.body.size()));
        const auto csp = r->header("content-security-policy").value_or("");
        EXPECT_NE(csp.find("default-src 'none'"), std::string::npos) << csp;
        EXPECT_NE(csp.find("script-src 'self'"), std::string::npos) << csp;
        EXPECT_NE(csp.find("connect-src 'self'"), std::string::npos) << csp;
        EXPECT_EQ(csp.find("unsafe"), std::string::npos) << csp;
        EXPECT_EQ(csp.find("http"), std::string::npos) << csp;
        // Revalidation: the same ETag (also in a list, or weak) answers 304 without a body.
        for (const std::string& inm :
             {std::string(a.etag), "\"x\", " + std::string(a.etag), "W/" + std::string(a.etag)}) {
            auto again =
                http_request(s.port(), "GET", std::string(a.path), "", {"If-None-Match: " + inm});
            ASSERT_TRUE(again);
            EXPECT_EQ(again->status, 304) << inm;
            EXPECT_TRUE(again->body.empty());
            EXPECT_FALSE(again->header("content-length")) << "not the 200's length";
            EXPECT_EQ(again->header("etag").value_or(""), a.etag);
        }
        auto other = http_request(s.port(), "GET", std::string(a.path), "",
                                  {"If-None-Match: \"not-this-one\""});
        ASSERT_TRUE(other);
        EXPECT_EQ(other->status, 200);
        auto head = http_request(s.port(), "HEAD", std::string(a.path));
        ASSERT_TRUE(head);
        EXPECT_EQ(head->status, 200);
        EXPECT_TRUE(head->body.empty());
        has_index |= a.path == "/console/index.html";
    }
    ASSERT_TRUE(has_index);
    // The page itself at /console and /console/; no key is needed for the files.
    for (const std::string& path : {std::string("/console"), std::string("/console/")}) {
        auto r = http_request(s.port(), "GET", path);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 200) << path;
        EXPECT_EQ(r->header("content-type").value_or(""), "text/html; charset=utf-8");
        EXPECT_NE(r->body.find("/console/app.js"), std::string::npos);
    }
    // No inline script or style in the page: the policy would refuse them.
    auto index = http_request(s.port(), "GET", "/console/");
    ASSERT_TRUE(index);
    EXPECT_EQ(index->body.find("<script>"), std::string::npos);
    EXPECT_EQ(index->body.find("style="), std::string::npos);
    // Anything else under /console is a plain 404 problem; writes are 405.
    auto missing = http_request(s.port(), "GET", "/console/nope.js");
    ASSERT_TRUE(missing);
    EXPECT_EQ(missing->status, 404);
    EXPECT_EQ(missing->header("content-type").value_or(""), "application/problem+json");
    auto post = http_request(s.port(), "POST", "/console/app.js", "x");
    ASSERT_TRUE(post);
    EXPECT_EQ(post->status, 405);
}

TEST(Console, TheTaskListIsLiveOverSseWithCreditsAndPrivateToItsTenant) {
    segue::test::temp_dir d;
    segue::test::segue_process s(config(d.path()));
    list_watch a(s.port(), key_a, 4s);
    list_watch b(s.port(), key_b, 4s);
    std::this_thread::sleep_for(300ms);  // both streams are open before the task exists
    const std::string id = create(s.port(), d);
    ASSERT_FALSE(id.empty());
    a.th.join();
    b.th.join();
    {
        // Tenant a saw its task arrive and change until it succeeded, with its credits.
        std::vector<std::string> statuses;
        for (auto& t : a.tasks)
            if (t["id"].as_string() == id)
                statuses.emplace_back(t["status"].as_string());
        ASSERT_GE(statuses.size(), 2u);
        EXPECT_EQ(statuses.back(), "succeeded");
        auto& last = a.tasks.back();
        EXPECT_EQ(last["id"].as_string(), id);
        EXPECT_EQ(last["provider"], "sandbox");
        EXPECT_EQ(last["num_outputs"], 2);
        auto& c = last["credits"].as_object();
        EXPECT_EQ(c["held"], 4);
        EXPECT_EQ(c["captured"], 4);
        EXPECT_EQ(c["refunded"], 0);
        EXPECT_EQ(c["outstanding"], 0);
    }
    // Tenant b saw nothing of it.
    EXPECT_TRUE(b.tasks.empty()) << json::serialize(b.tasks.front());

    // The same in the plain list and on the task.
    auto list = http_request(s.port(), "GET", "/v1/extensions", "", {key_a});
    ASSERT_TRUE(list);
    auto page = parse(list->body);
    ASSERT_EQ(page["data"].as_array().size(), 1u);
    auto& item = page["data"].as_array()[0].as_object();
    EXPECT_EQ(item["credits"].as_object()["captured"], 4);
    EXPECT_TRUE(item.contains("updated_at"));
    auto task = http_request(s.port(), "GET", "/v1/extensions/" + id, "", {key_a});
    ASSERT_TRUE(task);
    auto credits = parse(task->body)["credits"].as_object();
    EXPECT_EQ(credits["held"], 4);
    EXPECT_EQ(credits["captured"], 4);
    auto other = http_request(s.port(), "GET", "/v1/extensions", "", {key_b});
    ASSERT_TRUE(other);
    EXPECT_TRUE(parse(other->body)["data"].as_array().empty());

    // A stream opened later starts with the current page; `before` is for pages, not streams.
    list_watch late(s.port(), key_a, 1s);
    late.th.join();
    ASSERT_EQ(late.tasks.size(), 1u);
    EXPECT_EQ(late.tasks[0]["status"], "succeeded");
    auto bad = http_request(s.port(), "GET", "/v1/extensions?before=" + id, "",
                            {key_a, "Accept: text/event-stream"});
    ASSERT_TRUE(bad);
    EXPECT_EQ(bad->status, 400);
    auto anonymous =
        http_request(s.port(), "GET", "/v1/extensions", "", {"Accept: text/event-stream"});
    ASSERT_TRUE(anonymous);
    EXPECT_EQ(anonymous->status, 401);
}

TEST(Console, ProvidersShowRecentErrorRates) {
    segue::test::temp_dir d;
    segue::test::segue_process s(config(d.path()));
    auto before = http_request(s.port(), "GET", "/v1/providers", "", {key_a});
    ASSERT_TRUE(before);
    auto sandbox = [](const std::string& body) {
        auto doc = parse(body);
        for (auto& p : doc["data"].as_array())
            if (p.as_object().at("name") == "sandbox")
                return p.as_object();
        return json::object{};
    };
    auto p = sandbox(before->body);
    ASSERT_TRUE(p.contains("recent")) << before->body;
    auto& w5 = p["recent"].as_object()["last_5m"].as_object();
    EXPECT_EQ(w5["requests"], 0);
    EXPECT_TRUE(w5["error_rate"].is_null());
    EXPECT_EQ(p["price_per_output"], 2);
    EXPECT_EQ(p["circuit"].as_object()["state"], "closed");

    const std::string id = create(s.port(), d);
    ASSERT_FALSE(id.empty());
    for (int i = 0; i < 100; ++i) {
        auto t = http_request(s.port(), "GET", "/v1/extensions/" + id, "", {key_a});
        if (t && parse(t->body)["status"] == "succeeded")
            break;
        std::this_thread::sleep_for(100ms);
    }
    auto after = http_request(s.port(), "GET", "/v1/providers", "", {key_a});
    ASSERT_TRUE(after);
    auto q = sandbox(after->body);
    for (const char* span : {"last_5m", "last_60m"}) {
        auto& w = q["recent"].as_object()[span].as_object();
        EXPECT_GE(w["requests"].as_int64(), 1) << span;
        EXPECT_EQ(w["failures"], 0) << span;
        EXPECT_EQ(w["error_rate"].to_number<double>(), 0.0) << span;
    }
}

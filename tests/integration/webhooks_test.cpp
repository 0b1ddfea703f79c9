// Outbound webhooks end to end: the real binary, the sandbox provider, and a Node receiver
// (tests/receiver) that verifies every delivery with the official `standardwebhooks` package.
// Receiver down then up, 500 / 3xx / 410 / hanging answers, dead letters and redelivery, and a
// restart of segue with deliveries pending.

#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <map>
#include <set>
#include <sstream>
#include <thread>

#include "gateway/audio/audio.hpp"
#include "gateway/store/pg_connection.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
using segue::test::form_part;
using segue::test::http_request;
using segue::test::http_response;

namespace {

// The tenant signs with both during a "rotation"; the receiver knows only the old one, so a
// delivery verifies only if it carries a signature per key.
const std::string secret_new = "whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw";
const std::string secret_old = "whsec_c2VndWUtdGVzdC1vbGQtd2ViaG9vay1zZWNyZXQ=";
const std::string key = "Authorization: Bearer sk-hooks";
const std::string key_nosecret = "Authorization: Bearer sk-nosecret";
const std::string boundary = "segue-hooks-boundary";

json::object parse(const std::string& s) {
    return json::parse(s).as_object();
}

std::string node_binary() {
    auto [rc, out] = segue::test::run_command({"/bin/sh", "-c", "command -v node"});
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
        out.pop_back();
    return rc == 0 ? out : "";
}

// tests/receiver/receiver.js as a child process, on a fixed port so it can come back.
class receiver {
  public:
    explicit receiver(std::uint16_t port = 0) : port_(port ? port : segue::test::free_port()) {
        start();
    }
    void start() {
        const std::string node = node_binary();
        if (node.empty())
            throw std::runtime_error("node is not installed (scripts/setup.sh --test installs it)");
        const std::string port_file = dir_.file("port." + std::to_string(++starts_));
        proc_ = std::make_unique<segue::test::child_process>();
        proc_->start({node, std::string(SEGUE_SOURCE_DIR) + "/tests/receiver/receiver.js",
                      "--secret", secret_old, "--listen", "127.0.0.1:" + std::to_string(port_),
                      "--port-file", port_file},
                     dir_.file("log"));
        if (segue::test::wait_port_file(port_file, 15s) != port_)
            throw std::runtime_error("receiver did not start: " +
                                     segue::test::read_file(dir_.file("log")));
    }
    void stop() {
        proc_->signal(SIGTERM);
        proc_->wait(5s);
    }
    std::uint16_t port() const { return port_; }
    std::string url(const std::string& path) const {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }
    void mode(const std::string& body) {
        auto r = http_request(port_, "POST", "/_control", body, {"Content-Type: application/json"});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 200) << r->body;
    }
    json::array deliveries(const std::string& path = "") {
        auto r = http_request(port_, "GET",
                              "/_control/deliveries" + (path.empty() ? "" : "?path=" + path));
        if (!r || r->status != 200)
            return {};
        return parse(r->body)["deliveries"].as_array();
    }

  private:
    segue::test::temp_dir dir_;
    std::uint16_t port_;
    int starts_ = 0;
    std::unique_ptr<segue::test::child_process> proc_;
};

std::string config(const std::string& storage_dir, const std::string& webhooks,
                   const std::string& storage_more = "") {
    return "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n  drain_timeout: 3s\n"
           "log:\n  level: info\n"
           "tenants:\n"
           "  - name: hooks\n    api_keys: [sk-hooks]\n    webhook_secrets: [\"" +
           secret_new + "\", \"" + secret_old +
           "\"]\n"
           "  - name: nosecret\n    api_keys: [sk-nosecret]\n" +
           segue::test::storage_yaml(storage_dir, storage_more) +
           "engine:\n  poll_interval: 100ms\n  lease: 2s\n"
           "providers:\n  sandbox:\n    delay: 50ms\n"
           "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"
           "webhooks:\n" +
           webhooks;
}

const std::string fast_schedule =
    "  retry_schedule: [200ms, 300ms, 500ms, 500ms, 1s, 1s, 1s, 1s, 1s, 1s]\n"
    "  jitter: 0\n  timeout: 1s\n  lease: 5s\n";

std::string song(const segue::test::temp_dir& d) {
    const std::string path = d.file("in.wav");
    EXPECT_TRUE(segue::audio::write_test_song(path, 4.0, 22050, 1, 120, "wav"));
    return segue::test::read_file(path);
}

// Creates a sandbox task whose events go to `hook`; returns its id.
std::string create(std::uint16_t port, const std::string& audio, const std::string& hook,
                   const std::string& auth = key) {
    std::vector<form_part> parts = {{"audio_file", audio, "in.wav", "audio/wav"},
                                    {"extend_after", "2"},
                                    {"length", "2"},
                                    {"webhook_url", hook}};
    auto r =
        http_request(port, "POST", "/v1/extensions", segue::test::multipart_body(parts, boundary),
                     {auth, "Content-Type: multipart/form-data; boundary=" + boundary});
    EXPECT_TRUE(r);
    if (!r)
        return "";
    EXPECT_EQ(r->status, 202) << r->body;
    return r->status == 202 ? std::string(parse(r->body)["id"].as_string()) : "";
}

std::string wait_final(std::uint16_t port, const std::string& id) {
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (std::chrono::steady_clock::now() < until) {
        auto r = http_request(port, "GET", "/v1/extensions/" + id, "", {key});
        if (r && r->status == 200) {
            std::string st(parse(r->body)["status"].as_string());
            if (st == "succeeded" || st == "failed" || st == "canceled")
                return st;
        }
        std::this_thread::sleep_for(50ms);
    }
    return "timeout";
}

// The task's event log: id -> (seq, type).
std::vector<json::object> events_of(std::uint16_t port, const std::string& id) {
    auto r = http_request(port, "GET", "/v1/extensions/" + id + "/events", "", {key});
    std::vector<json::object> out;
    if (!r || r->status != 200)
        return out;
    auto doc = parse(r->body);  // a range-for over a temporary's member would dangle
    for (auto& e : doc["data"].as_array())
        out.push_back(e.as_object());
    return out;
}

json::array deliveries(std::uint16_t port, const std::string& query) {
    auto r = http_request(port, "GET", "/v1/deliveries?" + query, "", {key});
    if (!r || r->status != 200)
        return {};
    return parse(r->body)["data"].as_array();
}

// Waits until the receiver has a verified delivery of every event of the task (at path), then
// checks that the first arrival of each came in seq order and that every delivery verified.
// The webhook-id of the first delivery to reach `path` (a prefix), as soon as it arrives (its
// answer may still be pending); "" if none came within 20 s.
std::string first_arrival(receiver& rcv, const std::string& path) {
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (rcv.deliveries(path).empty() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(5ms);
    const auto got = rcv.deliveries(path);
    return got.empty() ? "" : std::string(got[0].at("id").as_string());
}

void expect_all_delivered_in_order(receiver& rcv, std::uint16_t port, const std::string& id,
                                   const std::string& path, std::chrono::seconds limit = 30s) {
    const auto events = events_of(port, id);
    ASSERT_GE(events.size(), 4u);
    std::map<std::string, std::int64_t> seq_of;
    for (const auto& e : events)
        seq_of[std::string(e.at("id").as_string())] = e.at("seq").as_int64();
    const auto until = std::chrono::steady_clock::now() + limit;
    json::array got;
    std::set<std::string> seen;
    while (std::chrono::steady_clock::now() < until) {
        got = rcv.deliveries(path);
        seen.clear();
        for (const auto& d : got)
            if (d.at("verified").as_bool() && d.at("answered").is_int64() &&
                d.at("answered").as_int64() / 100 == 2)
                seen.insert(std::string(d.at("id").as_string()));
        if (seen.size() >= seq_of.size())
            break;
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_EQ(seen.size(), seq_of.size()) << json::serialize(got);
    std::int64_t last = 0;
    std::set<std::string> first;
    for (const auto& d : got) {
        EXPECT_TRUE(d.at("verified").as_bool()) << json::serialize(d);
        const std::string eid(d.at("id").as_string());
        ASSERT_TRUE(seq_of.count(eid)) << "unknown event " << eid;
        if (!first.insert(eid).second)
            continue;  // a retry of one already seen (at least once)
        EXPECT_GT(seq_of[eid], last) << "out of order: " << json::serialize(got);
        last = seq_of[eid];
        // The body is {type, timestamp, data}; data carries the event id and seq.
        const auto& body = d.at("body").as_object();
        EXPECT_EQ(body.size(), 3u);
        EXPECT_EQ(body.at("data").at("event_id").as_string(), eid);
        EXPECT_EQ(body.at("data").at("seq").as_int64(), seq_of[eid]);
        EXPECT_EQ(body.at("data").at("task_id").as_string(), id);
        // Two signatures: one per key of the rotation.
        std::string sig(d.at("signature").as_string());
        EXPECT_EQ(std::count(sig.begin(), sig.end(), ' '), 1) << sig;
    }
    EXPECT_EQ(first.size(), seq_of.size());
}

class WebhooksTest : public ::testing::Test {
  protected:
    void SetUp() override {
        if (node_binary().empty())
            GTEST_SKIP() << "node is not installed (scripts/setup.sh --test installs it)";
    }
    segue::test::temp_dir storage_;
    segue::test::temp_dir files_;
};

}  // namespace

TEST_F(WebhooksTest, EveryEventOfASandboxTaskArrivesVerifiedAndInOrder) {
    receiver rcv;
    segue::test::segue_process gw(config(storage_.path(), fast_schedule));
    const std::string id = create(gw.port(), song(files_), rcv.url("/hooks/a"));
    ASSERT_FALSE(id.empty());
    ASSERT_EQ(wait_final(gw.port(), id), "succeeded");
    expect_all_delivered_in_order(rcv, gw.port(), id, "/hooks/a");

    // The outbox shows them delivered, one attempt each.
    auto rows = deliveries(gw.port(), "task_id=" + id);
    ASSERT_EQ(rows.size(), events_of(gw.port(), id).size());
    for (const auto& d : rows) {
        EXPECT_EQ(d.at("status").as_string(), "delivered") << json::serialize(d);
        EXPECT_EQ(d.at("attempts").as_int64(), 1);
    }
    // Metrics count them.
    auto m = http_request(gw.port(), "GET", "/metrics");
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find("segue_webhook_deliveries_total{outcome=\"delivered\"}"),
              std::string::npos);
    EXPECT_NE(m->body.find("segue_webhook_delivery_latency_seconds_count"), std::string::npos);
}

TEST_F(WebhooksTest, AWebhookUrlNeedsATenantSecret) {
    segue::test::segue_process gw(config(storage_.path(), fast_schedule));
    std::vector<form_part> parts = {{"audio_file", song(files_), "in.wav", "audio/wav"},
                                    {"extend_after", "2"},
                                    {"webhook_url", "http://127.0.0.1:9/x"}};
    auto r = http_request(
        gw.port(), "POST", "/v1/extensions", segue::test::multipart_body(parts, boundary),
        {key_nosecret, "Content-Type: multipart/form-data; boundary=" + boundary});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422) << r->body;
    EXPECT_NE(r->body.find("webhook_url"), std::string::npos);
}

TEST_F(WebhooksTest, ReceiverDownThenUpGetsEverything) {
    receiver rcv;
    rcv.stop();  // down: connections are refused
    segue::test::segue_process gw(config(storage_.path(), fast_schedule));
    const std::string id = create(gw.port(), song(files_), rcv.url("/hooks/down"));
    ASSERT_EQ(wait_final(gw.port(), id), "succeeded");
    std::this_thread::sleep_for(700ms);
    auto rows = deliveries(gw.port(), "task_id=" + id + "&status=pending");
    ASSERT_FALSE(rows.empty());
    bool retried = false;
    for (const auto& d : rows)
        retried = retried || d.at("attempts").as_int64() >= 1;
    EXPECT_TRUE(retried) << json::serialize(rows);
    rcv.start();  // up again on the same port
    expect_all_delivered_in_order(rcv, gw.port(), id, "/hooks/down");
}

TEST_F(WebhooksTest, ErrorsRedirectsAndHangsAreRetriedNeverFollowed) {
    receiver rcv;
    segue::test::segue_process gw(config(storage_.path(), fast_schedule));
    // The first delivery gets a 500, the next a 302 (never followed), then one hangs past the
    // 1 s timeout; after that the receiver is fine. Spent rules fall through to the next
    // longest prefix, so the three answers come in this order whatever the timing.
    rcv.mode(R"({"mode":"500","times":1,"path":"/hooks/e"})");
    rcv.mode(R"({"mode":"redirect","times":1,"path":"/hooks"})");
    rcv.mode(R"({"mode":"hang","times":1})");
    const std::string id = create(gw.port(), song(files_), rcv.url("/hooks/e"));
    ASSERT_EQ(wait_final(gw.port(), id), "succeeded");
    expect_all_delivered_in_order(rcv, gw.port(), id, "/hooks/e");
    EXPECT_TRUE(rcv.deliveries("/_redirected").empty()) << "a redirect was followed";
    // Each failure (500, 302, no answer) was followed by a retry of the same event (webhook-id)
    // that got a 2xx.
    auto all = rcv.deliveries("/hooks/e");
    ASSERT_GE(all.size(), 3u);
    EXPECT_EQ(all[0].at("answered").as_int64(), 500);
    std::set<std::string> failures_seen;
    for (std::size_t i = 0; i < all.size(); ++i) {
        const auto& d = all[i].as_object();
        const bool ok = d.at("answered").is_int64() && d.at("answered").as_int64() / 100 == 2;
        if (ok)
            continue;
        failures_seen.insert(d.at("answered").is_int64()
                                 ? std::to_string(d.at("answered").as_int64())
                                 : "no answer");
        bool retried = false;
        for (std::size_t j = i + 1; j < all.size() && !retried; ++j)
            retried = all[j].at("id") == d.at("id") && all[j].at("answered").is_int64() &&
                      all[j].at("answered").as_int64() / 100 == 2;
        EXPECT_TRUE(retried) << "event " << d.at("id") << " was not retried";
    }
    EXPECT_EQ(failures_seen, (std::set<std::string>{"500", "302", "no answer"}));
}

// A receiver may answer a delivery with any body (a framework's HTML page): a 2xx delivers the
// event however large the body, with a Content-Length over the client's 64 KiB cap or chunked
// past it, and the event is not sent again.
TEST_F(WebhooksTest, A2xxWithALargeBodyDeliversTheEventOnce) {
    receiver rcv;
    segue::test::segue_process gw(config(storage_.path(), fast_schedule));
    rcv.mode(R"({"mode":"ok","status":200,"body_bytes":100000,"path":"/hooks/big"})");
    rcv.mode(
        R"({"mode":"ok","status":200,"body_bytes":400000,"chunked":true,"path":"/hooks/chunked"})");
    const std::string audio = song(files_);
    for (const std::string path : {"/hooks/big", "/hooks/chunked"}) {
        SCOPED_TRACE(path);
        const std::string id = create(gw.port(), audio, rcv.url(path));
        ASSERT_EQ(wait_final(gw.port(), id), "succeeded");
        expect_all_delivered_in_order(rcv, gw.port(), id, path);
        // Every delivery of the task is delivered at its first attempt, with the 200 recorded.
        json::array rows;
        bool all_delivered = false;
        for (int i = 0; i < 100 && !all_delivered; ++i) {
            rows = deliveries(gw.port(), "task_id=" + id);
            all_delivered = !rows.empty();
            for (const auto& d : rows)
                all_delivered = all_delivered && d.at("status").as_string() == "delivered";
            if (!all_delivered)
                std::this_thread::sleep_for(100ms);
        }
        ASSERT_TRUE(all_delivered) << json::serialize(rows);
        for (const auto& d : rows) {
            EXPECT_EQ(d.at("attempts").as_int64(), 1) << json::serialize(d);
            EXPECT_EQ(d.at("last_status").as_int64(), 200) << json::serialize(d);
        }
        std::map<std::string, int> sent;
        for (const auto& d : rcv.deliveries(path))
            ++sent[std::string(d.at("id").as_string())];
        for (const auto& [eid, n] : sent)
            EXPECT_EQ(n, 1) << eid << " was sent " << n << " times";
    }
}

// Retry-After in its HTTP-date form (RFC 9110 10.2.3) is honoured like delta-seconds: the
// retry waits for the date, not for the schedule's 200 ms.
TEST_F(WebhooksTest, ARetryAfterDateIsHonoured) {
    receiver rcv;
    segue::test::segue_process gw(config(storage_.path(), fast_schedule));
    rcv.mode(
        R"({"mode":"retry_after","status":429,"retry_after":3,"retry_after_date":true,"times":1,"path":"/hooks/date"})");
    const std::string id = create(gw.port(), song(files_), rcv.url("/hooks/date"));
    ASSERT_EQ(wait_final(gw.port(), id), "succeeded");
    expect_all_delivered_in_order(rcv, gw.port(), id, "/hooks/date");
    auto all = rcv.deliveries("/hooks/date");
    ASSERT_GE(all.size(), 2u);
    ASSERT_EQ(all[0].at("answered").as_int64(), 429);
    const auto& retry = all[1].as_object();
    EXPECT_EQ(retry.at("id"), all[0].at("id"));
    // The date has whole seconds: 3 s ahead is at least 2 s ahead.
    const auto waited =
        retry.at("received_at_ms").as_int64() - all[0].at("received_at_ms").as_int64();
    EXPECT_GE(waited, 2000) << "the retry came after " << waited << " ms";
}

TEST_F(WebhooksTest, GoneStopsTheEndpointAndDeadLettersCanBeRedelivered) {
    receiver rcv;
    segue::test::segue_process gw(config(storage_.path(), fast_schedule));
    rcv.mode(R"({"mode":"gone","path":"/hooks/g"})");
    const std::string id = create(gw.port(), song(files_), rcv.url("/hooks/g"));
    ASSERT_EQ(wait_final(gw.port(), id), "succeeded");
    const auto events = events_of(gw.port(), id);
    json::array dead;
    for (int i = 0; i < 100; ++i) {
        dead = deliveries(gw.port(), "status=dead&task_id=" + id);
        if (dead.size() == events.size())
            break;
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_EQ(dead.size(), events.size()) << json::serialize(dead);
    EXPECT_EQ(rcv.deliveries("/hooks/g").size(), 1u);  // one 410, then no more attempts

    // The list is newest first; the events of one transaction share a timestamp and still
    // list in their order (their ids are made in it).
    for (std::size_t i = 1; i < dead.size(); ++i)
        EXPECT_GT(dead[i - 1].at("seq").as_int64(), dead[i].at("seq").as_int64())
            << json::serialize(dead);

    // Once the endpoint is back, the task's dead deliveries are redelivered in one request:
    // pending together, they go in seq order.
    rcv.mode(R"({"mode":"ok","path":"/hooks/g"})");
    auto all =
        http_request(gw.port(), "POST", "/v1/deliveries/redeliver",
                     R"({"task_id":")" + id + R"("})", {key, "Content-Type: application/json"});
    ASSERT_TRUE(all);
    ASSERT_EQ(all->status, 202) << all->body;
    const auto redelivered = json::parse(all->body).as_object().at("data").as_array();
    ASSERT_EQ(redelivered.size(), events.size()) << all->body;
    for (std::size_t i = 0; i < redelivered.size(); ++i) {
        EXPECT_EQ(redelivered[i].at("seq").as_int64(), static_cast<std::int64_t>(i + 1));
        EXPECT_EQ(redelivered[i].at("status"), "pending");
    }
    expect_all_delivered_in_order(rcv, gw.port(), id, "/hooks/g");

    // Unknown, foreign and still-pending deliveries.
    auto r = http_request(gw.port(), "POST", "/v1/deliveries/dlv_nope/redeliver", "", {key});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    // Nothing dead is left: a second request redelivers nothing. Delivered ones can be sent
    // again on request; a task of another tenant, or none, is a 404; bad fields are named.
    const auto bulk = [&](const std::string& body, const std::string& k = key) {
        return http_request(gw.port(), "POST", "/v1/deliveries/redeliver", body,
                            {k, "Content-Type: application/json"});
    };
    r = bulk(R"({"task_id":")" + id + R"("})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 202);
    EXPECT_TRUE(json::parse(r->body).as_object().at("data").as_array().empty()) << r->body;
    r = bulk(R"({"task_id":")" + id + R"(","status":"delivered"})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 202);
    EXPECT_EQ(json::parse(r->body).as_object().at("data").as_array().size(), events.size());
    r = bulk(R"({"task_id":")" + id + R"("})", key_nosecret);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404) << r->body;
    r = bulk(R"({"task_id":"ext_nope"})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404) << r->body;
    r = bulk(R"({"status":"pending","x":1})");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422) << r->body;
    for (const char* f : {"\"task_id\"", "\"status\"", "\"x\""})
        EXPECT_NE(r->body.find(std::string("\"field\":") + f), std::string::npos) << r->body;
    r = http_request(gw.port(), "GET", "/v1/deliveries?status=weird", "", {key});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    r = http_request(gw.port(), "GET",
                     "/v1/deliveries/" + std::string(dead[0].at("id").as_string()), "",
                     {key_nosecret});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
}

TEST_F(WebhooksTest, RetriesExhaustedMakeADeadDelivery) {
    receiver rcv;
    segue::test::segue_process gw(
        config(storage_.path(), "  retry_schedule: [100ms, 100ms]\n  jitter: 0\n  timeout: 1s\n"));
    rcv.mode(R"({"mode":"503","path":"/hooks/x"})");
    const std::string id = create(gw.port(), song(files_), rcv.url("/hooks/x"));
    ASSERT_EQ(wait_final(gw.port(), id), "succeeded");
    json::array dead;
    for (int i = 0; i < 100 && dead.empty(); ++i) {
        dead = deliveries(gw.port(), "status=dead&task_id=" + id);
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_FALSE(dead.empty());
    const auto& d = dead.back().as_object();  // the oldest: the queue's head
    EXPECT_EQ(d.at("attempts").as_int64(), 3);
    EXPECT_EQ(d.at("last_status").as_int64(), 503);
    EXPECT_NE(std::string(d.at("last_error").as_string()).find("retries exhausted"),
              std::string::npos);
    // Counted just after the outcome is committed: wait (bounded) rather than race it.
    const std::string dead_series = "segue_webhook_deliveries_total{outcome=\"dead\"}";
    auto m = http_request(gw.port(), "GET", "/metrics");
    for (int i = 0; i < 50 && m && m->body.find(dead_series) == std::string::npos; ++i) {
        std::this_thread::sleep_for(20ms);
        m = http_request(gw.port(), "GET", "/metrics");
    }
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find(dead_series), std::string::npos);
}

TEST_F(WebhooksTest, RestartWithPendingDeliveriesLosesNone) {
    receiver rcv;
    rcv.stop();
    std::string id;
    {
        segue::test::segue_process gw(config(storage_.path(), fast_schedule));
        id = create(gw.port(), song(files_), rcv.url("/hooks/r"));
        ASSERT_EQ(wait_final(gw.port(), id), "succeeded");
        gw.proc().signal(SIGKILL);  // no drain, leases left behind
        gw.proc().wait(5s);
    }
    rcv.start();
    segue::test::segue_process gw(config(storage_.path(), fast_schedule));
    expect_all_delivered_in_order(rcv, gw.port(), id, "/hooks/r");
}

// A delivery on the wire says a replica holds it (claimed_until). After that replica is killed,
// on PostgreSQL the delivery still says so until the lease ends, although its next_attempt_at
// has passed: the API tells why nothing is sent for a while. A single SQLite process frees the
// killed one's claims when it starts (its lock proves that one gone), and sends at once. Either
// way it goes out (at least once).
TEST_F(WebhooksTest, ADeliveryHeldByAReplicaSaysUntilWhen) {
    receiver rcv;
    // On SQLite a restart frees the killed process's claims at once (its lock proves it gone):
    // a long lease there shows it. Replicas on PostgreSQL cannot know, and wait for the lease.
    const bool shared = segue::test::testing_postgres();
    const std::string webhooks =
        "  retry_schedule: [200ms, 300ms, 500ms, 1s, 1s]\n  jitter: 0\n  timeout: 3s\n"
        "  lease: " +
        std::string(shared ? "4s" : "60s") + "\n";
    rcv.mode(R"({"mode":"hang","times":1})");
    auto claimed = [](std::uint16_t port, const std::string& id, const std::string& event) {
        for (const auto& d : deliveries(port, "task_id=" + id))
            if (d.at("event_id").as_string() == event)
                return d.as_object();
        return json::object();
    };
    std::string id, first;
    {
        segue::test::segue_process gw(config(storage_.path(), webhooks));
        id = create(gw.port(), song(files_), rcv.url("/hooks/c"));
        ASSERT_FALSE(id.empty());
        const auto until = std::chrono::steady_clock::now() + 20s;
        while (rcv.deliveries("/hooks/c").empty() && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(5ms);
        ASSERT_FALSE(rcv.deliveries("/hooks/c").empty());
        first = std::string(rcv.deliveries("/hooks/c")[0].at("id").as_string());
        const auto d = claimed(gw.port(), id, first);
        ASSERT_EQ(d.at("status").as_string(), "pending") << json::serialize(d);
        ASSERT_TRUE(d.contains("claimed_until")) << json::serialize(d);
        EXPECT_GE(d.at("claimed_until").as_string(), d.at("next_attempt_at").as_string());
        // Deliveries no replica holds say nothing of a claim.
        for (const auto& o : deliveries(gw.port(), "task_id=" + id))
            if (o.at("event_id").as_string() != first)
                EXPECT_FALSE(o.as_object().contains("claimed_until")) << json::serialize(o);
        gw.proc().signal(SIGKILL);
        gw.proc().wait(5s);
    }
    segue::test::segue_process gw(config(storage_.path(), webhooks));
    if (shared) {
        // The dead replica's claim is still shown until its lease ends.
        const auto d = claimed(gw.port(), id, first);
        ASSERT_EQ(d.at("status").as_string(), "pending") << json::serialize(d);
        EXPECT_TRUE(d.contains("claimed_until")) << json::serialize(d);
    } else {
        // Sent again well before the dead process's 60 s lease would have ended.
        auto sent_again = [&] {
            int n = 0;
            for (const auto& r : rcv.deliveries("/hooks/c"))
                n += r.at("id").as_string() == first;
            return n >= 2;
        };
        const auto until = std::chrono::steady_clock::now() + 30s;
        while (!sent_again() && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(20ms);
        EXPECT_TRUE(sent_again()) << "the killed process's claim held the delivery";
    }
    ASSERT_EQ(wait_final(gw.port(), id), "succeeded");
    expect_all_delivered_in_order(rcv, gw.port(), id, "/hooks/c");
    for (const auto& o : deliveries(gw.port(), "task_id=" + id))
        EXPECT_FALSE(o.as_object().contains("claimed_until")) << json::serialize(o);
    // The send the killed process made counts: attempts 2, so a receiver's team can see why
    // that webhook-id came twice (found by a black-box run: it said 1).
    const auto d = claimed(gw.port(), id, first);
    EXPECT_EQ(d.at("status").as_string(), "delivered") << json::serialize(d);
    EXPECT_EQ(d.at("attempts").to_number<int>(), 2) << json::serialize(d);
}

// A send that never comes back (here: the process is killed while the receiver holds every
// request) still counts against the retry schedule. With one retry, two sends are lost to two
// kills; the third process finds the schedule spent and ends the delivery `dead` without
// sending it a third time. Before, a send that ended the process every time went on forever.
TEST_F(WebhooksTest, SendsCutShortByCrashesRunOutOfRetriesToo) {
    receiver rcv;
    const bool shared = segue::test::testing_postgres();
    const std::string webhooks =
        "  retry_schedule: [100ms]\n  jitter: 0\n" +
        std::string(shared ? "  timeout: 3s\n  lease: 4s\n" : "  timeout: 30s\n  lease: 60s\n");
    rcv.mode(R"({"mode":"hang","path":"/hooks/k"})");
    std::string id, first;
    auto sends_of_first = [&] {
        int n = 0;
        for (const auto& r : rcv.deliveries("/hooks/k"))
            n += r.at("id").as_string() == first;
        return n;
    };
    for (int round = 1; round <= 2; ++round) {
        segue::test::segue_process gw(config(storage_.path(), webhooks));
        if (round == 1) {
            id = create(gw.port(), song(files_), rcv.url("/hooks/k"));
            ASSERT_FALSE(id.empty());
        }
        const auto until = std::chrono::steady_clock::now() + 30s;
        auto sent = [&] {
            if (first.empty() && !rcv.deliveries("/hooks/k").empty())
                first = std::string(rcv.deliveries("/hooks/k")[0].at("id").as_string());
            return !first.empty() && sends_of_first() >= round;
        };
        while (!sent() && std::chrono::steady_clock::now() < until)
            std::this_thread::sleep_for(10ms);
        ASSERT_EQ(sends_of_first(), round);
        gw.proc().signal(SIGKILL);  // the send in flight never gets its outcome
        gw.proc().wait(5s);
    }
    rcv.mode(R"({"mode":"ok","path":"/hooks/k"})");
    segue::test::segue_process gw(config(storage_.path(), webhooks));
    ASSERT_EQ(wait_final(gw.port(), id), "succeeded");
    json::object d;
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (std::chrono::steady_clock::now() < until) {
        for (const auto& o : deliveries(gw.port(), "task_id=" + id))
            if (o.at("event_id").as_string() == first)
                d = o.as_object();
        if (d.contains("status") && d.at("status").as_string() != "pending")
            break;
        std::this_thread::sleep_for(20ms);
    }
    ASSERT_EQ(d.at("status").as_string(), "dead") << json::serialize(d);
    EXPECT_EQ(d.at("attempts").to_number<int>(), 2) << json::serialize(d);
    EXPECT_NE(std::string(d.at("last_error").as_string())
                  .find("2 sends made, all that webhooks.retry_schedule allows"),
              std::string::npos)
        << json::serialize(d);
    // Not sent a third time, and the events behind it still go out.
    auto later = [&] {
        int n = 0;
        for (const auto& r : rcv.deliveries("/hooks/k"))
            n += r.at("id").as_string() != first;
        return n;
    };
    const auto until2 = std::chrono::steady_clock::now() + 20s;
    while (later() == 0 && std::chrono::steady_clock::now() < until2)
        std::this_thread::sleep_for(20ms);
    EXPECT_GT(later(), 0);
    EXPECT_EQ(sends_of_first(), 2);
}

// A delivery's outcome the database does not take at once (its row locked past
// statement_timeout while the send was on the wire) is recorded when it can be, within the
// lease: the receiver gets the event once, and the task's later events go out at once. The
// record used to be given up: the event came twice, the rest a minute later (the lease).
TEST_F(WebhooksTest, AnOutcomeTheDatabaseRefusedAWhileIsRecordedNotSentAgain) {
    if (!segue::test::testing_postgres())
        GTEST_SKIP() << "a row lock and a statement_timeout are PostgreSQL's (pg.WebhooksTest)";
    receiver rcv;
    std::string cfg = config(storage_.path(),
                             "  retry_schedule: [200ms]\n  jitter: 0\n"
                             "  timeout: 5s\n  lease: 60s\n");
    cfg.insert(cfg.find("  postgres:\n") + 12, "    statement_timeout: 1s\n");
    const auto url_at = cfg.find("    url: \"") + 10;
    const std::string url = cfg.substr(url_at, cfg.find('"', url_at) - url_at);
    segue::test::segue_process gw(cfg);
    rcv.mode(R"({"mode":"ok","path":"/hooks/l","delay_ms":2000,"times":1})");
    const std::string id = create(gw.port(), song(files_), rcv.url("/hooks/l"));
    ASSERT_FALSE(id.empty());
    const std::string first = first_arrival(rcv, "/hooks/l");
    ASSERT_FALSE(first.empty());
    std::string dlv;
    for (const auto& o : deliveries(gw.port(), "task_id=" + id))
        if (o.at("event_id").as_string() == first)
            dlv = std::string(o.at("id").as_string());
    ASSERT_FALSE(dlv.empty());
    // While the receiver still holds the send: the row locked for 4 s, so the send's record
    // waits past statement_timeout, is refused, and must be tried again.
    {
        segue::store::pg::connection holder(url, 0, "holder");
        holder.exec("BEGIN");
        holder.exec(("SELECT id FROM deliveries WHERE id = '" + dlv + "' FOR UPDATE").c_str());
        std::this_thread::sleep_for(4s);
        holder.exec("ROLLBACK");
    }
    ASSERT_EQ(wait_final(gw.port(), id), "succeeded");
    // Well before the lease (60 s) would have let the event go out again.
    expect_all_delivered_in_order(rcv, gw.port(), id, "/hooks/l", 20s);
    int copies = 0;
    for (const auto& r : rcv.deliveries("/hooks/l"))
        copies += r.at("id").as_string() == first;
    EXPECT_EQ(copies, 1) << "the event was sent again";
    EXPECT_NE(gw.log().find("recording a delivery failed; trying again"), std::string::npos);
}

// A replica frozen (SIGSTOP) while its delivery is on the wire: another replica takes the row
// once the lease expires and sends it again (at least once). When the frozen one wakes up and
// answers for its send, its record is refused and it says why, measured by the database's
// clock: its lease had ended (late_ms > 0), and the row is now under a newer claim. Never the
// error that a claim took a lease still held.
// Two replicas share a store on PostgreSQL only: CTest runs this suite as pg.* alone.
// Waits (up to `d`) until the event `id` reached the receiver at least twice.
bool wait_sent_twice(receiver& rcv, const std::string& id, std::chrono::milliseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    for (;;) {
        int n = 0;
        for (const auto& del : rcv.deliveries("/hooks/"))
            n += del.at("id").as_string() == id;
        if (n >= 2)
            return true;
        if (std::chrono::steady_clock::now() >= until)
            return false;
        std::this_thread::sleep_for(20ms);
    }
}

// The last line of `p`'s log containing `what`, waited for up to `d` ("" if none came).
std::string wait_log_line(const segue::test::segue_process& p, const std::string& what,
                          std::chrono::milliseconds d) {
    const auto until = std::chrono::steady_clock::now() + d;
    std::string line;
    while (line.empty() && std::chrono::steady_clock::now() < until) {
        std::istringstream in(p.log());
        for (std::string l; std::getline(in, l);)
            if (l.find(what) != std::string::npos)
                line = l;
        if (line.empty())
            std::this_thread::sleep_for(50ms);
    }
    return line;
}

// Webhook settings for a sender frozen mid-delivery: quick retries, the given lease.
std::string frozen_sender_webhooks(const std::string& lease) {
    return "  retry_schedule: [200ms, 300ms, 500ms, 500ms, 1s, 1s, 1s]\n"
           "  jitter: 0\n  timeout: 1s\n  lease: " +
           lease + "\n";
}

class WebhooksOnReplicas : public WebhooksTest {};

TEST_F(WebhooksOnReplicas, AReplicaFrozenPastItsLeaseSaysSoAndTheEventIsStillDelivered) {
    if (!segue::test::testing_postgres())
        GTEST_SKIP() << "two replicas share a store on PostgreSQL only (pg.WebhooksOnReplicas)";
    receiver rcv;
    const std::string webhooks = frozen_sender_webhooks("2s");
    segue::test::segue_process a(config(storage_.path(), webhooks));
    // The first delivery is answered 2xx after 600 ms: long enough to freeze its sender first.
    rcv.mode(R"({"mode":"ok","times":1,"delay_ms":600})");
    const std::string id = create(a.port(), song(files_), rcv.url("/hooks/f"));
    ASSERT_FALSE(id.empty());
    const std::string first = first_arrival(rcv, "/hooks/");
    ASSERT_FALSE(first.empty());
    a.proc().signal(SIGSTOP);

    // B shares A's store; after A's lease (2 s) it takes the delivery and sends it again.
    segue::test::segue_process b(config(storage_.path(), webhooks));
    ASSERT_TRUE(wait_sent_twice(rcv, first, 20s)) << json::serialize(rcv.deliveries());
    a.proc().signal(SIGCONT);

    // A records nothing and says its lease had expired, with the newer claim's fence.
    const std::string line =
        wait_log_line(a, "delivery lease expired before its outcome was recorded", 15s);
    ASSERT_FALSE(line.empty()) << a.log();
    const auto f = parse(line);
    EXPECT_EQ(f.at("event_id").as_string(), first);
    EXPECT_GT(f.at("late_ms").as_int64(), 0) << line;
    EXPECT_GT(f.at("lease_until").as_int64(), 0) << line;
    EXPECT_GT(f.at("now_fence").as_int64(), f.at("fence").as_int64()) << line;
    auto m = http_request(a.port(), "GET", "/metrics");
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find("segue_webhook_leases_expired_total 1\n"), std::string::npos);
    for (const auto* log : {&a, &b})
        EXPECT_EQ(log->log().find("while this one's lease still held"), std::string::npos)
            << log->log();

    // Every event of the task still arrives, in order (B sends the rest).
    ASSERT_EQ(wait_final(b.port(), id), "succeeded");
    expect_all_delivered_in_order(rcv, b.port(), id, "/hooks/f");
}

// The same freeze, shorter than the delivery's lease (1 min) but longer than the replica
// timeout (2 s): B takes A for dead, frees its lease and sends the delivery again. A's record,
// refused well inside its lease, says A was taken for dead; it is not the error of two claims
// of one live lease (which it was logged as before A knew of the liveness beat).
TEST_F(WebhooksOnReplicas, AReplicaTakenForDeadWhileFrozenSaysSoWhenItsRecordIsRefused) {
    if (!segue::test::testing_postgres())
        GTEST_SKIP() << "two replicas share a store on PostgreSQL only (pg.WebhooksOnReplicas)";
    receiver rcv;
    const std::string webhooks = frozen_sender_webhooks("1m");
    const std::string replicas = "    replica_timeout: 2s\n";
    segue::test::segue_process a(config(storage_.path(), webhooks, replicas));
    rcv.mode(R"({"mode":"ok","times":1,"delay_ms":600})");
    const std::string id = create(a.port(), song(files_), rcv.url("/hooks/f"));
    ASSERT_FALSE(id.empty());
    const std::string first = first_arrival(rcv, "/hooks/");
    ASSERT_FALSE(first.empty());
    a.proc().signal(SIGSTOP);

    segue::test::segue_process b(config(storage_.path(), webhooks, replicas));
    ASSERT_TRUE(wait_sent_twice(rcv, first, 20s)) << "B never took the frozen replica's delivery\n"
                                                  << b.log();
    a.proc().signal(SIGCONT);

    const std::string line = wait_log_line(
        a, "delivery claimed by another replica after this one was taken for dead", 15s);
    ASSERT_FALSE(line.empty()) << a.log();
    const auto f = parse(line);
    EXPECT_EQ(f.at("event_id").as_string(), first);
    EXPECT_LT(f.at("late_ms").as_int64(), 0) << "refused inside its lease: " << line;
    EXPECT_GT(f.at("now_fence").as_int64(), f.at("fence").as_int64()) << line;
    for (const auto* log : {&a, &b})
        EXPECT_EQ(log->log().find("while this one's lease still held"), std::string::npos)
            << log->log();
    EXPECT_NE(b.log().find("replicas stopped showing they are alive"), std::string::npos);

    ASSERT_EQ(wait_final(b.port(), id), "succeeded");
    expect_all_delivered_in_order(rcv, b.port(), id, "/hooks/f");
}

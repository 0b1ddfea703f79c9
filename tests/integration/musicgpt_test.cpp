// MusicGPT end to end: the real binary against the fake MusicGPT (tests/fakes/musicgpt), which
// speaks its protocol (multipart/JSON submit, five shuffled webhooks, byId) and injects faults.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <csignal>
#include <fstream>
#include <map>
#include <thread>
#include <vector>

#include "gateway/audio/audio.hpp"
#include "gateway/util/crypto.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
using segue::test::form_part;
using segue::test::http_request;
using segue::test::http_response;

namespace {

const std::string key = "Authorization: Bearer sk-mg-tenant";
const std::string boundary = "mg-test-boundary-91";

json::object parse(const std::string& s) {
    return json::parse(s).as_object();
}

// The fake MusicGPT as a child process.
class fake_musicgpt {
  public:
    fake_musicgpt() {
        const std::string port_file = dir_.file("port");
        proc_.start({SEGUE_FAKE_MUSICGPT_PATH, "--listen", "127.0.0.1:0", "--port-file", port_file,
                     "--api-key", "mg-upstream-key", "--webhook-delay-ms", "150"},
                    dir_.file("log"));
        for (int i = 0; i < 500; ++i) {
            std::ifstream in(port_file);
            int p = 0;
            if (in >> p && p > 0) {
                port_ = static_cast<std::uint16_t>(p);
                return;
            }
            std::this_thread::sleep_for(10ms);
        }
        throw std::runtime_error("fake_musicgpt did not start");
    }
    std::uint16_t port() const { return port_; }
    void control(const std::string& body) {
        auto r = http_request(port_, "POST", "/_control", body, {"Content-Type: application/json"});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 200) << r->body;
    }
    json::array requests(const std::string& route) {
        auto r = http_request(port_, "GET", "/_control/requests?route=" + route);
        return parse(r->body)["requests"].as_array();
    }

  private:
    segue::test::temp_dir dir_;
    segue::test::child_process proc_;
    std::uint16_t port_ = 0;
};

struct gateway {
    // `on_port`: a restart that keeps the port its callback URLs name (0: a free one).
    explicit gateway(const fake_musicgpt& fake, const std::string& extra = "",
                     const std::string& lease = "5s", const std::string& retry = "",
                     std::uint16_t on_port = 0) {
        port = on_port != 0 ? on_port : segue::test::free_port();
        const std::string cfg =
            "server:\n  listen: 127.0.0.1:" + std::to_string(port) +
            "\n  io_threads: 2\nlog:\n  level: info\n"
            "tenants:\n  - name: t\n    api_keys: [sk-mg-tenant]\n"
            "api:\n  public_base_url: http://127.0.0.1:" +
            std::to_string(port) +
            "\n  default_provider: musicgpt\n"
            "engine:\n  poll_interval: 100ms\n  lease: " +
            lease +
            "\n"
            "upstream:\n  allow_plain_http: true\n  request_timeout: 5s\n"
            "providers:\n  musicgpt:\n    enabled: true\n    base_url: http://127.0.0.1:" +
            std::to_string(fake.port()) +
            "/api/public\n    api_key: mg-upstream-key\n    reconcile_after: 3s\n"
            "    poll_interval: 500ms\n    submit_timeout: 5s\n"
            "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"
            "retry:\n" +
            retry +
            "  transient: {initial: 50ms, max: 100ms}\n"
            "  rate_limited: {initial: 50ms, max: 100ms}\n"
            // These tests inject failures on purpose: keep the circuit closed.
            "breakers:\n  consecutive_failures: 1000\n  min_requests: 1000\n" +
            extra;
        proc = std::make_unique<segue::test::segue_process>(cfg);
    }
    std::unique_ptr<segue::test::segue_process> proc;
    std::uint16_t port = 0;
};

std::string make_song(const segue::test::temp_dir& d, double seconds) {
    const std::string path = d.file("in.wav");
    EXPECT_TRUE(segue::audio::write_test_song(path, seconds, 22050, 2, 120, "wav"));
    return segue::test::read_file(path);
}

std::optional<http_response> post_form(std::uint16_t port, const std::vector<form_part>& parts) {
    return http_request(port, "POST", "/v1/extensions",
                        segue::test::multipart_body(parts, boundary),
                        {key, "Content-Type: multipart/form-data; boundary=" + boundary});
}

json::object wait_final(std::uint16_t port, const std::string& id,
                        std::chrono::seconds limit = 30s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    json::object t;
    while (std::chrono::steady_clock::now() < until) {
        auto r = http_request(port, "GET", "/v1/extensions/" + id, "", {key});
        if (r && r->status == 200) {
            t = parse(r->body);
            std::string st(t["status"].as_string());
            if (st != "queued" && st != "submitted" && st != "running")
                return t;
        }
        std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "not final: " << json::serialize(t);
    return t;
}

std::map<std::string, int> event_counts(std::uint16_t port, const std::string& id) {
    auto r = http_request(port, "GET", "/v1/extensions/" + id + "/events?limit=1000", "", {key});
    std::map<std::string, int> counts;
    auto body = parse(r->body);
    std::int64_t expect = 1;
    for (auto& e : body["data"].as_array()) {
        EXPECT_EQ(e.as_object()["seq"].to_number<std::int64_t>(), expect++);
        counts[std::string(e.as_object()["type"].as_string())]++;
    }
    return counts;
}

// A task of a URL source (audio_url, extend_after 3): its id, or "" (a failure recorded).
std::string create_url_task(std::uint16_t port) {
    auto r = http_request(port, "POST", "/v1/extensions",
                          R"({"audio_url":"https://cdn.example/song.mp3","extend_after":3})",
                          {key, "Content-Type: application/json"});
    EXPECT_TRUE(r);
    if (!r)
        return {};
    EXPECT_EQ(r->status, 202) << r->body;
    return r->status == 202 ? std::string(parse(r->body)["id"].as_string()) : std::string();
}

std::string submit_file(std::uint16_t port, const segue::test::temp_dir& d, std::string& bytes) {
    bytes = make_song(d, 12);
    auto r = post_form(port, {{"audio_file", bytes, "song.wav", "audio/wav"},
                              {"extend_after", "6.5"},
                              {"prompt", "calming piano outro"},
                              {"lyrics", "let the journey fade away"},
                              {"lyrics_section_to_extend", "and the night comes"},
                              {"gender", "neutral"},
                              {"num_outputs", "2"}});
    EXPECT_TRUE(r);
    EXPECT_EQ(r->status, 202) << r->body;
    return std::string(parse(r->body)["id"].as_string());
}

}  // namespace

TEST(MusicGpt, FileUploadReachesSucceededWithEveryFieldAndTheExactBytes) {
    fake_musicgpt fake;
    gateway g(fake);
    segue::test::temp_dir d;
    std::string bytes;
    auto id = submit_file(g.port, d, bytes);
    auto t = wait_final(g.port, id);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    auto& outs = t["outputs"].as_array();
    ASSERT_EQ(outs.size(), 2u);
    for (auto& ov : outs) {
        auto& o = ov.as_object();
        EXPECT_EQ(o["status"], "ready");
        auto& audio = o["audio"].as_object();
        // The gateway's copies; MusicGPT's own links stay beside them
        // (tests/integration/mirror_test).
        EXPECT_NE(std::string(audio["mp3_url"].as_string()).find("/v1/files/"), std::string::npos);
        EXPECT_NE(std::string(audio["mp3_provider_url"].as_string()).find(".mp3"),
                  std::string::npos);
        EXPECT_NE(std::string(audio["wav_provider_url"].as_string()).find(".wav"),
                  std::string::npos);
        EXPECT_GT(audio["duration"].to_number<double>(), 0);
        EXPECT_FALSE(std::string(o["title"].as_string()).empty());
        EXPECT_FALSE(o["lyrics_timestamped"].as_array().empty());
        EXPECT_FALSE(std::string(o["cover_url"].as_string()).empty());
    }
    EXPECT_EQ(t["attempts"].as_array()[0].as_object()["provider"], "musicgpt");

    // The multipart MusicGPT received: every mapped field, and the exact audio bytes.
    auto submits = fake.requests("submit");
    ASSERT_EQ(submits.size(), 1u);
    auto& req = submits[0].as_object();
    EXPECT_EQ(req["headers"].as_object()["authorization"], "mg-upstream-key")
        << "raw key, no Bearer";
    std::map<std::string, json::object> fields;
    for (auto& f : req["fields"].as_array())
        fields[std::string(f.as_object().at("name").as_string())] = f.as_object();
    EXPECT_EQ(fields["extend_after"]["value"], "6.5");
    EXPECT_EQ(fields["prompt"]["value"], "calming piano outro");
    EXPECT_EQ(fields["lyrics"]["value"], "let the journey fade away");
    EXPECT_EQ(fields["lyrics_section_to_extend"]["value"], "and the night comes");
    EXPECT_EQ(fields["gender"]["value"], "neutral");
    EXPECT_EQ(fields["num_outputs"]["value"], "2");
    const std::string hook(fields["webhook_url"]["value"].as_string());
    EXPECT_EQ(
        hook.rfind(
            "http://127.0.0.1:" + std::to_string(g.port) + "/v1/providers/musicgpt/webhooks/", 0),
        0u)
        << hook;
    EXPECT_EQ(fields["audio_file"]["sha256"].as_string(), segue::util::sha256_hex(bytes));
    EXPECT_EQ(fields["audio_file"]["size"].to_number<std::size_t>(), bytes.size());

    auto counts = event_counts(g.port, id);
    EXPECT_EQ(counts["extension.output.ready"], 2);
    EXPECT_EQ(counts["extension.lyrics.ready"], 2);
    EXPECT_EQ(counts["extension.cover.ready"], 1);
    EXPECT_EQ(counts["extension.succeeded"], 1);
    auto m = http_request(g.port, "GET", "/metrics");
    for (auto kind : {"audio", "lyrics", "cover"})
        EXPECT_NE(m->body.find(
                      std::string("segue_provider_webhooks_total{provider=\"musicgpt\",kind=\"") +
                      kind + "\",outcome=\"applied\"}"),
                  std::string::npos)
            << kind;
    EXPECT_NE(m->body.find("segue_upstream_requests_total{"), std::string::npos);
}

TEST(MusicGpt, UrlSourceIsSentAsJson) {
    fake_musicgpt fake;
    gateway g(fake);
    auto r = http_request(
        g.port, "POST", "/v1/extensions",
        R"({"audio_url":"https://cdn.example/song.mp3","extend_after":35,"num_outputs":2,"prompt":"more drums"})",
        {key, "Content-Type: application/json"});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    auto t = wait_final(g.port, std::string(parse(r->body)["id"].as_string()));
    EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
    auto& outs = t["outputs"].as_array();
    ASSERT_EQ(outs.size(), 2u);
    for (auto& ov : outs) {
        auto& o = ov.as_object();
        EXPECT_EQ(o["status"], "ready");
        EXPECT_FALSE(o["lyrics_timestamped"].as_array().empty());
        EXPECT_FALSE(std::string(o["cover_url"].as_string()).empty());
    }
    auto submits = fake.requests("submit");
    ASSERT_EQ(submits.size(), 1u);
    auto& j = submits[0].as_object()["json"].as_object();
    EXPECT_EQ(j["audio_url"], "https://cdn.example/song.mp3");
    EXPECT_EQ(j["extend_after"].to_number<double>(), 35);
    EXPECT_EQ(j["num_outputs"].to_number<int>(), 2);
    EXPECT_EQ(j["prompt"], "more drums");
}

TEST(MusicGpt, DuplicatedShuffledWebhooksGiveOneEventEach) {
    fake_musicgpt fake;
    fake.control(R"({"duplicate_webhooks":2,"shuffle_webhooks":true})");
    gateway g(fake);
    segue::test::temp_dir d;
    std::string bytes;
    auto id = submit_file(g.port, d, bytes);
    auto t = wait_final(g.port, id);
    ASSERT_EQ(t["status"], "succeeded");
    // Five webhooks, each sent three times: each changes the task once; the rest are counted
    // as duplicates (while the task runs) or late (after its end), never as applied.
    const auto count_of = [](const std::string& metrics, const char* outcome) {
        double n = 0;
        for (auto kind : {"audio", "lyrics", "cover"})
            n += std::max(0.0, segue::test::metric_value(
                                   metrics, std::string("segue_provider_webhooks_total{provider="
                                                        "\"musicgpt\",kind=\"") +
                                                kind + "\",outcome=\"" + outcome + "\"}"));
        return n;
    };
    std::string m;
    for (int i = 0; i < 100; ++i) {
        m = http_request(g.port, "GET", "/metrics")->body;
        if (count_of(m, "applied") + count_of(m, "duplicate") + count_of(m, "late") >= 15)
            break;
        std::this_thread::sleep_for(50ms);  // late duplicates arrive after the end
    }
    EXPECT_EQ(count_of(m, "applied"), 5) << m;
    EXPECT_EQ(count_of(m, "applied") + count_of(m, "duplicate") + count_of(m, "late"), 15) << m;
    auto counts = event_counts(g.port, id);
    EXPECT_EQ(counts["extension.output.ready"], 2);
    EXPECT_EQ(counts["extension.lyrics.ready"], 2);
    EXPECT_EQ(counts["extension.cover.ready"], 1);
    EXPECT_EQ(counts["extension.succeeded"], 1);
}

TEST(MusicGpt, LostWebhooksAreRecoveredByPolling) {
    fake_musicgpt fake;
    fake.control(R"({"drop_all_webhooks":true})");
    gateway g(fake);
    segue::test::temp_dir d;
    std::string bytes;
    auto id = submit_file(g.port, d, bytes);
    auto t = wait_final(g.port, id, 30s);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    EXPECT_EQ(t["outputs"].as_array().size(), 2u);
    EXPECT_GE(fake.requests("by_id").size(), 1u);
}

// MusicGPT took the tasks and never finishes them, and every webhook is lost: byId says
// IN_QUEUE forever. Polls alone never end such a task (it stayed running, its credits held,
// polled every poll_interval); retry.attempt_deadline does: each task fails with
// upstream_deadline soon after it, its outputs failed, its hold released and its jobs gone.
// Nothing is submitted again (this route does not regenerate), polling stops, and a callback
// that comes after the deadline changes nothing.
TEST(MusicGpt, AnAcceptedTaskThatNeverFinishesFailsAtTheAttemptDeadline) {
    fake_musicgpt fake;
    fake.control(R"({"complete_after_ms":100000000,"drop_all_webhooks":true})");
    gateway g(fake, "", "5s", "  attempt_deadline: 3s\n");
    const auto start = std::chrono::steady_clock::now();
    const std::vector<std::string> ids{create_url_task(g.port), create_url_task(g.port)};
    for (const auto& id : ids) {
        ASSERT_FALSE(id.empty());
        auto t = wait_final(g.port, id, 20s);
        ASSERT_EQ(t["status"], "failed") << json::serialize(t);
        auto& e = t["error"].as_object();
        EXPECT_EQ(e["code"], "upstream_deadline") << json::serialize(e);
        EXPECT_EQ(e["class"], "transient") << json::serialize(e);
        EXPECT_EQ(e["provider"], "musicgpt") << json::serialize(e);
        for (const auto& o : t["outputs"].as_array())
            EXPECT_EQ(o.as_object().at("status"), "failed") << json::serialize(o);
        auto& c = t["credits"].as_object();
        EXPECT_GT(c["held"].to_number<double>(), 0) << json::serialize(c);
        EXPECT_EQ(c["outstanding"].to_number<double>(), 0) << json::serialize(c);
        EXPECT_EQ(c["refunded"].to_number<double>(), c["held"].to_number<double>())
            << json::serialize(c);
        auto counts = event_counts(g.port, id);
        EXPECT_EQ(counts["extension.output.failed"], 2);
        EXPECT_EQ(counts["extension.credits.refunded"], 1);
        EXPECT_EQ(counts["extension.failed"], 1);
        EXPECT_EQ(counts["extension.retrying"], 0);
    }
    EXPECT_LT(std::chrono::steady_clock::now() - start, 15s);
    EXPECT_EQ(fake.requests("submit").size(), 2u);
    auto credits = http_request(g.port, "GET", "/v1/credits", "", {key});
    ASSERT_TRUE(credits);
    ASSERT_EQ(credits->status, 200) << credits->body;
    EXPECT_EQ(parse(credits->body)["held"].to_number<double>(), 0) << credits->body;

    // The jobs went with the tasks: no more byId.
    const auto polls = fake.requests("by_id").size();
    std::this_thread::sleep_for(1500ms);
    EXPECT_EQ(fake.requests("by_id").size(), polls);

    // A late callback (one of the dropped audio webhooks, delivered now) does not bring the
    // task back.
    auto w = http_request(fake.port(), "GET", "/_control/webhooks");
    ASSERT_TRUE(w);
    const auto log = parse(w->body);
    std::string url, body;
    for (const auto& v : log.at("webhooks").as_array())
        if (v.as_object().at("kind") == "audio") {
            url = std::string(v.as_object().at("url").as_string());
            body = std::string(v.as_object().at("body").as_string());
            break;
        }
    ASSERT_FALSE(url.empty()) << json::serialize(log);
    const std::string path = url.substr(url.find("/v1/"));
    auto late = http_request(g.port, "POST", path, body, {"Content-Type: application/json"});
    ASSERT_TRUE(late);
    EXPECT_LT(late->status, 500) << late->body;
    for (const auto& id : ids) {
        auto r = http_request(g.port, "GET", "/v1/extensions/" + id, "", {key});
        ASSERT_TRUE(r);
        EXPECT_EQ(parse(r->body)["status"], "failed") << r->body;
        EXPECT_EQ(event_counts(g.port, id)["extension.output.ready"], 0);
    }
}

TEST(MusicGpt, UpstreamErrorsEndTheTaskWithTheNormalizedError) {
    struct error_case {
        std::string fault;
        std::string code;
        std::string cls;
    };
    std::vector<error_case> cases{
        {R"({"match":"submit","status":402})", "insufficient_funds", "quota"},
        {R"({"match":"submit","status":401})", "upstream_unauthorized", "credential"},
        {R"({"match":"submit","status":422})", "upstream_rejected", "rejected"},
        {R"({"match":"submit","status":429,"retry_after":7})", "upstream_rate_limited",
         "rate_limited"},
        {R"({"match":"submit","status":500})", "upstream_unavailable", "transient"},
        // A reset after sending is ambiguous: reconciled (no callback came) before each retry.
        {R"({"match":"submit","reset":true})", "ambiguous_unresolved", "transient"},
    };
    fake_musicgpt fake;
    gateway g(fake);
    for (const auto& c : cases) {
        fake.control(R"({"faults":[)" + c.fault + "]}");
        auto r = http_request(g.port, "POST", "/v1/extensions",
                              R"({"audio_url":"https://cdn.example/song.mp3","extend_after":3})",
                              {key, "Content-Type: application/json"});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 202);
        auto t = wait_final(g.port, std::string(parse(r->body)["id"].as_string()));
        EXPECT_EQ(t["status"], "failed") << c.fault;
        auto& e = t["error"].as_object();
        EXPECT_EQ(e["code"].as_string(), c.code) << c.fault << " " << json::serialize(e);
        EXPECT_EQ(e["class"].as_string(), c.cls) << c.fault;
        if (c.code == "upstream_rejected")
            EXPECT_NE(std::string(e["message"].as_string()).find("extend_after"),
                      std::string::npos);
        // Transient and rate-limited failures were retried first (sticky faults: in vain);
        // the others were not.
        const auto counts = event_counts(g.port, std::string(t["id"].as_string()));
        const bool retryable = c.cls == "transient" || c.cls == "rate_limited";
        EXPECT_EQ(counts.count("extension.retrying") > 0, retryable) << c.fault;
    }
}

TEST(MusicGpt, ATransientFailureIsRetriedAndTheTaskSucceeds) {
    fake_musicgpt fake;
    gateway g(fake);
    fake.control(R"({"faults":[{"match":"submit","status":503,"times":1}]})");
    auto r = http_request(g.port, "POST", "/v1/extensions",
                          R"({"audio_url":"https://cdn.example/song.mp3","extend_after":3})",
                          {key, "Content-Type: application/json"});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202);
    const std::string id(parse(r->body)["id"].as_string());
    auto t = wait_final(g.port, id);
    EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
    EXPECT_EQ(event_counts(g.port, id)["extension.retrying"], 1);
    EXPECT_EQ(t["attempts"].as_array().size(), 2u) << json::serialize(t["attempts"]);
    EXPECT_EQ(fake.requests("submit").size(), 2u);
}

TEST(MusicGpt, ForgedWebhookTokenChangesNothing) {
    fake_musicgpt fake;
    fake.control(R"({"drop_all_webhooks":true})");
    gateway g(fake, "");
    segue::test::temp_dir d;
    std::string bytes;
    auto id = submit_file(g.port, d, bytes);
    const std::string forged =
        R"({"success":true,"conversion_type":"Extend","task_id":"x","conversion_id":"y","conversion_path":"https://evil.example/a.mp3"})";
    auto r = http_request(g.port, "POST",
                          "/v1/providers/musicgpt/webhooks/cb_forgedtoken0000000000000000", forged,
                          {"Content-Type: application/json"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    auto counts = event_counts(g.port, id);
    EXPECT_EQ(counts["extension.output.ready"], 0);
}

// A submit slower than the job's lease: the heartbeat keeps the lease, so the same process
// never claims the job again mid-call and the provider makes the song once. (It used to treat
// its own running submit as a crash and submit a second time.)
TEST(MusicGpt, ASubmitSlowerThanTheLeaseIsSentOnce) {
    fake_musicgpt fake;
    gateway g(fake, "", "2s");
    // The answer comes after 4.5 s, its webhooks only after 6 s: until then nothing but the
    // submit's own answer can show the task exists.
    fake.control(
        R"({"faults":[{"match":"submit","delay_ms":4500,"times":1}],"webhook_delay_ms":6000})");
    auto r = http_request(g.port, "POST", "/v1/extensions",
                          R"({"audio_url":"https://cdn.example/song.mp3","extend_after":3})",
                          {key, "Content-Type: application/json"});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202);
    const std::string id(parse(r->body)["id"].as_string());
    auto t = wait_final(g.port, id);
    EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
    EXPECT_EQ(t["attempts"].as_array().size(), 1u) << json::serialize(t["attempts"]);
    EXPECT_EQ(event_counts(g.port, id)["extension.retrying"], 0);
    EXPECT_EQ(fake.requests("submit").size(), 1u) << "the song was submitted twice";
}

// The provider answers a submit after the claim that sent it lost its lease (here: the replica
// was frozen past engine.lease; in production, a store out of reach that long), and another
// replica has already found the submit interrupted. The answer names MusicGPT's task: it is
// recorded for the attempt, which is then polled, not submitted again. Before, the answer was
// dropped, the reconcile found no evidence (no webhooks come here) and the song was submitted
// twice. Two replicas share a store on PostgreSQL only (pg.MusicGpt.*).
TEST(MusicGpt, AnAnswerThatOutlivedItsLeaseStillKeepsTheSongFromBeingSentTwice) {
    if (!segue::test::testing_postgres())
        GTEST_SKIP() << "two replicas share a store on PostgreSQL only (pg.MusicGpt.*)";
    fake_musicgpt fake;
    fake.control(
        R"({"faults":[{"match":"submit","delay_ms":3000,"times":1}],"drop_all_webhooks":true})");
    segue::test::temp_dir shared;
    const std::string storage = segue::test::storage_yaml(shared.path());
    gateway a(fake, storage, "2s");
    const std::string id = create_url_task(a.port);
    ASSERT_FALSE(id.empty());
    auto until = std::chrono::steady_clock::now() + 10s;
    while (fake.requests("submit").empty() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(10ms);
    ASSERT_EQ(fake.requests("submit").size(), 1u);
    a.proc->proc().signal(SIGSTOP);
    // B takes the job once A's lease ends and finds the submit interrupted (ambiguous).
    gateway b(fake, storage, "2s");
    std::string status;
    until = std::chrono::steady_clock::now() + 20s;
    while (status != "unknown" && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(20ms);
        auto r = http_request(b.port, "GET", "/v1/extensions/" + id, "", {key});
        if (!r || r->status != 200)
            continue;
        auto t = parse(r->body);
        const auto& as = t["attempts"].as_array();
        status = as.empty() ? "" : std::string(as.back().at("status").as_string());
    }
    a.proc->proc().signal(SIGCONT);
    ASSERT_EQ(status, "unknown") << b.proc->log();
    auto t = wait_final(b.port, id, 40s);
    EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
    EXPECT_EQ(fake.requests("submit").size(), 1u) << "the song was submitted twice; A's log:\n"
                                                  << a.proc->log();
    EXPECT_EQ(t["attempts"].as_array().size(), 1u) << json::serialize(t["attempts"]);
    EXPECT_NE(a.proc->log().find("recorded its task so the submit is not sent again"),
              std::string::npos)
        << a.proc->log();
}

// A submit whose answer is lost (held 8 s past a 5 s submit_timeout: a timeout after sending,
// ambiguous) while MusicGPT took the task and calls back (its callbacks as `webhooks` sets
// them). Expects one submit, the task succeeded from byId polls, `metric` on /metrics, and the
// timeout reconciled as received: its `extension.submitted` event names the MusicGPT task if a
// callback had named it by then (`named`), else `provider_task_id: null`.
namespace {
void expect_a_lost_answer_sent_once(const std::string& webhooks, const std::string& metric,
                                    bool named, const std::string& more_faults = "") {
    fake_musicgpt fake;
    fake.control(R"({"faults":[{"match":"submit","delay_ms":8000,"times":1})" + more_faults +
                 R"(],"webhook_delay_ms":100,)" + webhooks + "}");
    gateway g(fake);
    const std::string id = create_url_task(g.port);
    ASSERT_FALSE(id.empty());
    auto t = wait_final(g.port, id, 40s);
    EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
    EXPECT_EQ(fake.requests("submit").size(), 1u) << "the song was submitted twice; gateway log:\n"
                                                  << g.proc->log();
    EXPECT_EQ(t["attempts"].as_array().size(), 1u) << json::serialize(t["attempts"]);
    // It succeeded: the timeout that made it ambiguous is not its error (OpenAPI Attempt).
    EXPECT_EQ(t["attempts"].as_array()[0].at("status"), "succeeded");
    EXPECT_TRUE(t["attempts"].as_array()[0].at("error").is_null())
        << json::serialize(t["attempts"]);
    EXPECT_GE(fake.requests("by_id").size(), 1u) << "the outputs should come from polling";
    auto m = http_request(g.port, "GET", "/metrics");
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find(metric), std::string::npos) << m->body;
    auto r = http_request(g.port, "GET", "/v1/extensions/" + id + "/events?limit=1000", "", {key});
    ASSERT_TRUE(r);
    int reconciled = 0;
    bool submitted = false;
    const auto events = parse(r->body);  // a range-for over a temporary's member would dangle
    for (const auto& e : events.at("data").as_array()) {
        const auto& o = e.as_object();
        // The event model: submitted before anything the provider made.
        const std::string type(o.at("type").as_string());
        if (type.starts_with("extension.output.") || type == "extension.cover.ready" ||
            type == "extension.lyrics.ready")
            EXPECT_TRUE(submitted) << type << " before extension.submitted: " << r->body;
        if (type != "extension.submitted")
            continue;
        submitted = true;
        const auto& d = o.at("data").as_object();
        if (!d.contains("reconciled"))
            continue;
        ++reconciled;
        EXPECT_EQ(d.at("provider_task_id").is_string(), named) << json::serialize(o);
        EXPECT_EQ(d.at("provider_task_id").is_null(), !named) << json::serialize(o);
    }
    EXPECT_EQ(reconciled, 1) << r->body;
}
}  // namespace

// The audio and lyrics callbacks of a lost answer name conversions the attempt never learns,
// so they are refused after the wait (the cover, the one that names no conversion, is dropped).
// The audio callbacks still name MusicGPT's task: the gateway records it for the attempt, so
// the timeout is reconciled as "the provider has it" and the outputs come from byId polls.
// Before, nothing recorded the callbacks: the reconcile window passed with no evidence and the
// song was submitted again. In order (audio 1 first): the fake sends its callbacks one at a
// time, each held for the 3 s wait; shuffled, the lyrics could come first (the next test).
TEST(MusicGpt, ACallbackForASubmitWhoseAnswerIsLostKeepsItFromBeingSentTwice) {
    expect_a_lost_answer_sent_once(R"("drop_webhooks":["cover"],"shuffle_webhooks":false)",
                                   R"(outcome="upstream_recorded"})", true);
}

// The same lost answer, and only the cover's callback comes, while the submit still waits
// for its answer: it is applied at once (the task's cover), and it proves MusicGPT has the
// attempt, so extension.submitted (reconciled) comes first, before cover.ready, as the event
// model says. Before, cover.ready came first and submitted only with the timeout's reconcile.
TEST(MusicGpt, ALostAnswersCallbacksKeepSubmittedFirst) {
    expect_a_lost_answer_sent_once(R"("drop_webhooks":["audio","lyrics"])",
                                   R"(decision="reconciled",reason="callback_seen"})", true);
}

// The same lost answer, but only the lyrics callbacks come (the audio and cover ones are lost),
// and they name no MusicGPT task. A callback carries the attempt's own token, so the first one
// already proves MusicGPT has the attempt: the timeout is followed, not resubmitted. The
// reconcile then asks byId by the conversion that callback named, which names the task, and
// the outputs come from byId polls. Before, the lyrics callbacks left no trace and the song was
// submitted twice (with the sign but no lookup, the task waited for its retry deadline).
TEST(MusicGpt, CallbacksThatNameNoTaskStillKeepALostAnswersSubmitFromBeingSentTwice) {
    expect_a_lost_answer_sent_once(R"("drop_webhooks":["cover","audio"])",
                                   R"(kind="reconcile",outcome="looked_up"})", false);
}

// The same, and byId does not know the conversion the first time it is asked (404, as for a
// conversion it has not indexed yet). The callback proved MusicGPT has the task, so the lookup
// is asked again a window later, which names it. Before, the 404 failed the attempt
// ("upstream_task_not_found") and the task failed although MusicGPT was making the song.
TEST(MusicGpt, ALookupByConversionThatByIdDoesNotKnowYetIsAskedAgain) {
    expect_a_lost_answer_sent_once(R"("drop_webhooks":["cover","audio"])",
                                   R"(kind="reconcile",outcome="looked_up"})", false,
                                   R"(,{"match":"by_id","status":404,"times":1})");
}

// The gateway is killed while its submit waits for MusicGPT's answer, and restarted at once on
// the same database and port: the restart finds the submit interrupted and will reconcile it
// (reconcile_after: 3 s), and MusicGPT's callbacks for it come 2 s after the submit. A callback
// for an attempt whose outcome is unknown is the proof the reconcile looks for, recorded at
// once. Before, it was held for the answer (up to 3 s) that no process would ever get, the
// reconcile found no evidence meanwhile, and the song was sent to MusicGPT a second time
// (found by a black-box run).
TEST(MusicGpt, ACallbackForASubmitInterruptedByACrashIsRecordedBeforeItsReconcile) {
    if (segue::test::testing_postgres())
        GTEST_SKIP() << "the same on both engines; run once";
    fake_musicgpt fake;
    fake.control(R"({"faults":[{"match":"submit","delay_ms":2500,"times":1}],)"
                 R"("webhook_delay_ms":2000,"shuffle_webhooks":false})");
    segue::test::temp_dir shared;
    const std::string storage = segue::test::storage_yaml(shared.path());
    auto a = std::make_unique<gateway>(fake, storage);
    const std::uint16_t port = a->port;
    const std::string id = create_url_task(port);
    ASSERT_FALSE(id.empty());
    auto until = std::chrono::steady_clock::now() + 10s;
    while (fake.requests("submit").empty() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(5ms);
    ASSERT_EQ(fake.requests("submit").size(), 1u);
    a->proc->proc().signal(SIGKILL);
    a->proc->proc().wait(5s);
    const std::string first_log = a->proc->log();
    a.reset();
    gateway b(fake, storage, "5s", "", port);
    auto t = wait_final(b.port, id, 40s);
    EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
    EXPECT_EQ(fake.requests("submit").size(), 1u)
        << "the song was submitted twice; the killed gateway's log:\n"
        << first_log << "\nthe restarted one's:\n"
        << b.proc->log();
    EXPECT_EQ(t["attempts"].as_array().size(), 1u) << json::serialize(t["attempts"]);
}

// A cancel that comes when every output is made and the task waits only for MusicGPT's separate
// lyrics callbacks (lost here, and byId failing, so nothing else ends the wait): nothing is left
// to cancel, so the task finishes as it would at its attempt's deadline: succeeded, both outputs
// charged, nothing refunded. Before, it ended "canceled" with every output ready and charged
// (found by a black-box run).
TEST(MusicGpt, ACancelOnceEveryOutputIsMadeFinishesTheTask) {
    fake_musicgpt fake;
    fake.control(R"({"drop_webhooks":["lyrics"],"faults":[{"match":"by_id","status":503}]})");
    gateway g(fake);
    const std::string id = create_url_task(g.port);
    ASSERT_FALSE(id.empty());
    bool made = false;
    json::object t;
    const auto until = std::chrono::steady_clock::now() + 30s;
    while (!made && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(50ms);
        auto r = http_request(g.port, "GET", "/v1/extensions/" + id, "", {key});
        if (!r || r->status != 200)
            continue;
        t = parse(r->body);
        made = t["outputs"].as_array().size() == 2u;
        for (const auto& o : t["outputs"].as_array())
            made = made && o.at("status") == "ready";
    }
    ASSERT_TRUE(made) << json::serialize(t);
    std::this_thread::sleep_for(300ms);  // the cover callback too, as it comes
    EXPECT_EQ(t["status"], "running") << json::serialize(t);

    auto r = http_request(g.port, "POST", "/v1/extensions/" + id + "/cancel", "", {key});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    t = parse(r->body);
    EXPECT_EQ(t["status"], "succeeded") << r->body;
    auto& c = t["credits"].as_object();
    EXPECT_EQ(c["refunded"].to_number<double>(), 0) << r->body;
    EXPECT_EQ(c["outstanding"].to_number<double>(), 0) << r->body;
    EXPECT_GT(c["captured"].to_number<double>(), 0) << r->body;
    auto counts = event_counts(g.port, id);
    EXPECT_EQ(counts["extension.canceled"], 0);
    EXPECT_EQ(counts["extension.succeeded"], 1);
    EXPECT_EQ(counts["extension.output.ready"], 2);
    EXPECT_EQ(counts["extension.output.failed"], 0);
    // Once finished, a cancel is what it is for any final task.
    r = http_request(g.port, "POST", "/v1/extensions/" + id + "/cancel", "", {key});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 409) << r->body;
}

// A callback that overtakes the submit's answer (MusicGPT calls back before its HTTP answer is
// read: here the answer is held 1 s, the webhooks leave after 100 ms) names conversions the
// attempt does not know yet. The gateway reads the attempt again until the answer is in (up to
// engine::early_webhook_wait) and applies it: every webhook is taken at its first delivery and
// the outputs come from them, not from polling. Before, each was refused with 400, which the
// fake (like many senders) does not retry, and the outputs waited for a byId poll.
TEST(MusicGpt, AWebhookThatOvertakesTheSubmitAnswerWaitsForItAndIsApplied) {
    fake_musicgpt fake;
    fake.control(R"({"faults":[{"match":"submit","delay_ms":1000,"times":1}],)"
                 R"("webhook_delay_ms":100})");
    gateway g(fake);
    const std::string id = create_url_task(g.port);
    ASSERT_FALSE(id.empty());
    auto t = wait_final(g.port, id);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    EXPECT_EQ(t["outputs"].as_array().size(), 2u);
    EXPECT_EQ(fake.requests("by_id").size(), 0u) << "the outputs should come from the webhooks";

    auto w = http_request(fake.port(), "GET", "/_control/webhooks");
    ASSERT_TRUE(w);
    const auto log = parse(w->body);  // a range-for over a temporary's member would dangle
    const auto& hooks = log.at("webhooks").as_array();
    EXPECT_EQ(hooks.size(), 5u);
    for (const auto& v : hooks) {
        const auto& o = v.as_object();
        EXPECT_EQ(o.at("status").as_int64(), 200) << json::serialize(o);
        EXPECT_EQ(o.at("attempts").as_int64(), 1) << json::serialize(o);
    }
    auto m = http_request(g.port, "GET", "/metrics");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->body.find(R"(outcome="rejected"} )"), std::string::npos) << m->body;
    EXPECT_EQ(m->body.find(R"(outcome="too_early"} )"), std::string::npos) << m->body;
    // The first (the fake sends them one after another) waited until the answer's events
    // committed and was woken by that commit (the event hub), not by a timer: nothing polled
    // the store meanwhile.
    EXPECT_NE(m->body.find(R"(segue_provider_webhook_waits_total{provider="musicgpt",)"
                           R"(ended_by="commit"} )"),
              std::string::npos)
        << m->body;
    EXPECT_EQ(m->body.find(R"(ended_by="timer"})"), std::string::npos) << m->body;
}

// How many submits the provider had in flight at most: each of them answered `answer_after`
// after it was received (a fault's delay), so two were in flight together when one was
// received less than that after the other.
namespace {
std::size_t most_submits_in_flight(fake_musicgpt& fake, std::int64_t answer_after_us) {
    std::vector<std::int64_t> at;
    for (const auto& r : fake.requests("submit"))
        at.push_back(r.as_object().at("received_mono_us").to_number<std::int64_t>());
    std::sort(at.begin(), at.end());
    std::size_t most = 0;
    for (std::size_t i = 0; i < at.size(); ++i) {
        std::size_t j = i;
        while (j < at.size() && at[j] < at[i] + answer_after_us)
            ++j;
        most = std::max(most, j - i);
    }
    return most;
}

// Creates `n` tasks at once (an IP literal for a source: nothing to resolve; one output each, so
// the tenant's 1,000 credits cover 23) while every submit is answered 3 s after it arrives (long
// enough for all the creates, even under ThreadSanitizer); waits until all `n` reached the
// provider. Returns the most the provider had in flight at once.
std::size_t submits_in_flight_for(int n, const std::string& gateway_extra) {
    fake_musicgpt fake;
    fake.control(R"({"faults":[{"match":"submit","delay_ms":3000}]})");
    gateway g(fake, gateway_extra);
    for (int i = 0; i < n; ++i) {
        auto r = http_request(
            g.port, "POST", "/v1/extensions",
            R"({"audio_url":"https://93.184.215.14/a.mp3","extend_after":3,"num_outputs":1})",
            {key, "Content-Type: application/json"});
        EXPECT_TRUE(r && r->status == 202) << (r ? r->body : "no answer");
    }
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (fake.requests("submit").size() < static_cast<std::size_t>(n) &&
           std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(100ms);
    EXPECT_EQ(fake.requests("submit").size(), static_cast<std::size_t>(n));
    // 2.9 s, not 3: a submit sent when another's answer came is never counted with it.
    return most_submits_in_flight(fake, 2'900'000);
}
}  // namespace

// The engine does not hold provider calls back: with the shipped settings, a burst of tasks
// reaches the provider at once (every call is an asynchronous request, not a thread). Before,
// engine.batch defaulted to 16, so at most 12 submits were in flight per replica: 12 tasks a
// second with 1 s provider calls, and these 20 took two rounds of 3 s.
TEST(MusicGpt, ABurstOfTasksReachesTheProviderAtOnce) {
    EXPECT_EQ(submits_in_flight_for(20, ""), 20u);
}

// The provider's limit is what bounds them: breakers.max_concurrency 8 keeps eight calls in
// flight, never more, and the rest follow as calls finish.
TEST(MusicGpt, SubmitsInFlightStopAtTheProvidersLimit) {
    // Appended to the gateway's `breakers:` block.
    EXPECT_EQ(submits_in_flight_for(12, "  max_concurrency: 8\n"), 8u);
}

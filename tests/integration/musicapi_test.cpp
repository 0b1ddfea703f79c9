// The MusicAPI provider end to end: the real binary against the fake MusicAPI
// (tests/fakes/musicapi). File sources reach MusicAPI through a signed URL of the gateway's own,
// URL sources through its upload, clip sources directly; the fake records what it received.
// Errors and faults end the task as classified; a restart in the middle of polling still
// finishes the task; a badly signed webhook changes nothing, a good one finishes early.

#include <gtest/gtest.h>
#include <signal.h>

#include <boost/json.hpp>

#include <chrono>
#include <thread>

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

const std::string key = "Authorization: Bearer sk-ma-tenant";
const std::string boundary = "segue-musicapi-boundary";
const std::string webhook_secret = "ma-webhook-secret-for-tests";

json::object parse(const std::string& s) {
    return json::parse(s).as_object();
}

class fake_musicapi {
  public:
    explicit fake_musicapi(const std::string& control = "") {
        const std::string port_file = dir_.file("port");
        std::vector<std::string> argv = {SEGUE_FAKE_MUSICAPI_PATH,
                                         "--listen",
                                         "127.0.0.1:0",
                                         "--port-file",
                                         port_file,
                                         "--api-key",
                                         "ma-upstream-key",
                                         "--clip",
                                         "clip_seeded:30",
                                         "--song-seconds",
                                         "4"};
        if (!control.empty()) {
            argv.push_back("--control");
            argv.push_back(control);
        }
        proc_.start(argv, dir_.file("log"));
        port_ = segue::test::wait_port_file(port_file);
        if (port_ == 0)
            throw std::runtime_error("fake_musicapi did not start");
    }
    std::uint16_t port() const { return port_; }
    void control(const std::string& body) {
        auto r = http_request(port_, "POST", "/_control", body, {"Content-Type: application/json"});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 200) << r->body;
    }
    json::object get(const std::string& path) {
        auto r = http_request(port_, "GET", path);
        return r && r->status == 200 ? parse(r->body) : json::object{};
    }
    json::array requests(const std::string& route) {
        auto doc = get("/_control/requests?route=" + route);
        return doc.contains("requests") ? doc["requests"].as_array() : json::array{};
    }

  private:
    segue::test::temp_dir dir_;
    segue::test::child_process proc_;
    std::uint16_t port_ = 0;
};

struct gateway {
    gateway(const fake_musicapi& fake, const std::string& storage, const std::string& extra = "",
            std::uint16_t fixed_port = 0) {
        port = fixed_port ? fixed_port : segue::test::free_port();
        const std::string cfg =
            "server:\n  listen: 127.0.0.1:" + std::to_string(port) +
            "\n  io_threads: 2\nlog:\n  level: info\n"
            "tenants:\n  - name: t\n    api_keys: [sk-ma-tenant]\n" +
            segue::test::storage_yaml(storage) +
            "api:\n  public_base_url: http://127.0.0.1:" + std::to_string(port) +
            "\n  default_provider: musicapi\n"
            "engine:\n  poll_interval: 100ms\n  lease: 3s\n"
            "upstream:\n  allow_plain_http: true\n  request_timeout: 5s\n"
            "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"
            "retry:\n  transient: {initial: 50ms, max: 100ms}\n"
            // A Retry-After is honoured up to `max` (2 s here, so a test can see it).
            "  rate_limited: {initial: 50ms, max: 2s}\n"
            // These tests inject failures on purpose: keep the circuit closed.
            "breakers:\n  consecutive_failures: 1000\n  min_requests: 1000\n"
            "providers:\n  musicapi:\n    enabled: true\n    base_url: http://127.0.0.1:" +
            std::to_string(fake.port()) + "/api/v1\n    api_key: ma-upstream-key\n" +
            std::string(extra.find("poll_initial") == std::string::npos
                            ? "    poll_initial: 100ms\n    poll_max: 300ms\n"
                            : "") +
            "    poll_jitter: 0\n"
            "    submit_timeout: 5s\n    poll_timeout: 2s\n" +
            extra;  // extra continues providers.musicapi
        proc = std::make_unique<segue::test::segue_process>(cfg);
    }
    std::unique_ptr<segue::test::segue_process> proc;
    std::uint16_t port = 0;
};

std::string make_song(const segue::test::temp_dir& d, double seconds) {
    const std::string path = d.file("in.wav");
    EXPECT_TRUE(segue::audio::write_test_song(path, seconds, 22050, 1, 120, "wav"));
    return segue::test::read_file(path);
}

std::optional<http_response> post_form(std::uint16_t port, const std::vector<form_part>& parts) {
    return http_request(port, "POST", "/v1/extensions",
                        segue::test::multipart_body(parts, boundary),
                        {key, "Content-Type: multipart/form-data; boundary=" + boundary});
}

std::optional<http_response> post_json(std::uint16_t port, const std::string& body) {
    return http_request(port, "POST", "/v1/extensions", body,
                        {key, "Content-Type: application/json"});
}

std::string accepted_id(const std::optional<http_response>& r) {
    EXPECT_TRUE(r);
    if (!r)
        return "";
    EXPECT_EQ(r->status, 202) << r->body;
    return r->status == 202 ? std::string(parse(r->body)["id"].as_string()) : "";
}

json::object task(std::uint16_t port, const std::string& id) {
    auto r = http_request(port, "GET", "/v1/extensions/" + id, "", {key});
    return r && r->status == 200 ? parse(r->body) : json::object{};
}

json::object wait_final(std::uint16_t port, const std::string& id,
                        std::chrono::seconds limit = 30s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    json::object t;
    while (std::chrono::steady_clock::now() < until) {
        t = task(port, id);
        if (t.contains("status")) {
            std::string st(t["status"].as_string());
            if (st != "queued" && st != "submitted" && st != "running")
                return t;
        }
        std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "task " << id << " did not finish: " << json::serialize(t);
    return t;
}

std::vector<std::string> event_types(std::uint16_t port, const std::string& id) {
    auto r = http_request(port, "GET", "/v1/extensions/" + id + "/events", "", {key});
    std::vector<std::string> out;
    if (!r || r->status != 200)
        return out;
    auto doc = parse(r->body);
    for (auto& e : doc["data"].as_array())
        out.emplace_back(e.at("type").as_string());
    return out;
}

// The succeeded task has one ready output with the fake's audio; returns its mp3 URL.
void expect_one_ready_output(json::object& t) {
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    auto& outs = t["outputs"].as_array();
    ASSERT_GE(outs.size(), 1u);
    auto& o = outs[0].as_object();
    EXPECT_EQ(o["status"], "ready") << json::serialize(o);
    std::string mp3(o["audio"].at("mp3_url").as_string());
    EXPECT_NE(mp3.find("/files/"), std::string::npos) << mp3;
    EXPECT_TRUE(o["audio"].as_object().contains("duration"));
}

json::object last_create_body(fake_musicapi& fake) {
    auto reqs = fake.requests("create");
    if (reqs.empty())
        return {};
    auto& last = reqs.back().as_object();
    return parse(std::string(last.at("body").as_string()));
}

}  // namespace

TEST(MusicApi, FileSourceGoesThroughASignedUrlAndSucceeds) {
    fake_musicapi fake;
    segue::test::temp_dir storage, files;
    gateway gw(fake, storage.path());
    const std::string song = make_song(files, 6);
    auto id = accepted_id(post_form(gw.port, {{"audio_file", song, "in.wav", "audio/wav"},
                                              {"extend_after", "4.5"},
                                              {"prompt", "add strings"},
                                              {"lyrics", "la la la"},
                                              {"gender", "female"},
                                              {"num_outputs", "1"},
                                              {"length", "20"}}));
    ASSERT_FALSE(id.empty());
    auto t = wait_final(gw.port, id);
    expect_one_ready_output(t);

    // The fake fetched exactly our bytes from the signed URL.
    auto uploads = fake.get("/_control/uploads");
    ASSERT_TRUE(uploads.contains("uploads")) << json::serialize(uploads);
    auto& ups = uploads["uploads"].as_array();
    ASSERT_EQ(ups.size(), 1u);
    auto& dl = ups[0].at("download").as_object();
    EXPECT_EQ(dl.at("sha256").as_string(), segue::util::sha256_hex(song)) << json::serialize(dl);
    auto up_req = fake.requests("upload");
    ASSERT_EQ(up_req.size(), 1u);
    const std::string up_body(up_req[0].at("body").as_string());
    EXPECT_NE(up_body.find("sig="), std::string::npos) << up_body;
    EXPECT_NE(up_body.find("expires="), std::string::npos) << up_body;

    // Every mapped field reached the create call.
    auto body = last_create_body(fake);
    EXPECT_EQ(body["task_type"], "extend_music");
    EXPECT_EQ(body["clip_id"], ups[0].at("clip_id"));
    EXPECT_EQ(body["starts_at"].to_number<double>(), 4.5);
    EXPECT_EQ(body["instruction"], "add strings");
    EXPECT_EQ(body["lyrics"], "la la la");
    EXPECT_EQ(body["length"].to_number<double>(), 20);
    EXPECT_FALSE(body.contains("gender"));
    // ... and what has no equivalent is said, not dropped silently.
    EXPECT_NE(json::serialize(t["warnings"]).find("gender"), std::string::npos)
        << json::serialize(t);

    // The signed URL is the only door without a key, and only for its file and its time.
    auto plain = http_request(gw.port, "GET", "/v1/files/nope?expires=9999999999&sig=00");
    ASSERT_TRUE(plain);
    EXPECT_EQ(plain->status, 404);
    const auto types = event_types(gw.port, id);
    EXPECT_EQ(types.front(), "extension.queued");
    EXPECT_EQ(types.back(), "extension.succeeded");
}

TEST(MusicApi, UrlSourceIsUploadedByUrl) {
    fake_musicapi fake;
    segue::test::temp_dir storage;
    gateway gw(fake, storage.path());
    // The fake serves the seeded clip's audio: use it as "someone's URL".
    const std::string url =
        "http://127.0.0.1:" + std::to_string(fake.port()) + "/files/clip_seeded.mp3";
    auto id = accepted_id(
        post_json(gw.port, R"({"audio_url":")" + url + R"(","extend_after":2,"num_outputs":1})"));
    ASSERT_FALSE(id.empty());
    auto t = wait_final(gw.port, id);
    expect_one_ready_output(t);
    auto up_req = fake.requests("upload");
    ASSERT_EQ(up_req.size(), 1u);
    auto up = parse(std::string(up_req[0].at("body").as_string()));
    EXPECT_EQ(up["audio_url"], json::value(url));
    EXPECT_EQ(last_create_body(fake)["starts_at"].to_number<double>(), 2);
}

TEST(MusicApi, ClipSourceSkipsTheUpload) {
    fake_musicapi fake(R"({"clips":2})");
    segue::test::temp_dir storage;
    gateway gw(fake, storage.path());
    auto id = accepted_id(post_json(
        gw.port,
        R"({"clip":{"provider":"musicapi","id":"clip_seeded"},"extend_after":10,"num_outputs":2})"));
    ASSERT_FALSE(id.empty());
    auto t = wait_final(gw.port, id);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    auto& outs = t["outputs"].as_array();
    ASSERT_EQ(outs.size(), 2u);
    EXPECT_EQ(outs[1].at("status"), "ready");
    EXPECT_TRUE(fake.requests("upload").empty());
    EXPECT_EQ(last_create_body(fake)["clip_id"], "clip_seeded");
}

// MusicAPI decides how many clips an extend makes. A request that leaves num_outputs out gets
// the clips it made: here one, so the task succeeded with one output, a warning, and the
// second output's share of the hold back. One that asked for two and got one is partially
// succeeded, as before (the second output failed "not produced").
TEST(MusicApi, WithoutNumOutputsTheClipsItMakesAreTheTask) {
    fake_musicapi fake(R"({"clips":1})");
    segue::test::temp_dir storage;
    gateway gw(fake, storage.path(), "    price: 6\n");
    auto id = accepted_id(post_json(
        gw.port, R"({"clip":{"provider":"musicapi","id":"clip_seeded"},"extend_after":10})"));
    ASSERT_FALSE(id.empty());
    auto t = wait_final(gw.port, id);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    ASSERT_EQ(t["outputs"].as_array().size(), 1u) << json::serialize(t);
    EXPECT_EQ(t["outputs"].as_array()[0].at("status"), "ready");
    EXPECT_NE(json::serialize(t["warnings"]).find("made 1 of the 2 outputs"), std::string::npos)
        << json::serialize(t);
    const auto& c = t["credits"].as_object();
    EXPECT_EQ(c.at("held").to_number<double>(), 12) << json::serialize(c);
    EXPECT_EQ(c.at("captured").to_number<double>(), 6) << json::serialize(c);
    EXPECT_EQ(c.at("refunded").to_number<double>(), 6) << json::serialize(c);
    const auto types = event_types(gw.port, id);
    EXPECT_EQ(std::count(types.begin(), types.end(), "extension.output.failed"), 0);
    EXPECT_EQ(std::count(types.begin(), types.end(), "extension.credits.refunded"), 1);

    auto asked = accepted_id(post_json(
        gw.port,
        R"({"clip":{"provider":"musicapi","id":"clip_seeded"},"extend_after":10,"num_outputs":2})"));
    ASSERT_FALSE(asked.empty());
    t = wait_final(gw.port, asked);
    EXPECT_EQ(t["status"], "partially_succeeded") << json::serialize(t);
    EXPECT_EQ(t["outputs"].as_array().size(), 2u) << json::serialize(t);
}

TEST(MusicApi, ErrorsEndTheTaskAsClassified) {
    fake_musicapi fake;
    segue::test::temp_dir storage;
    gateway gw(fake, storage.path());
    auto clip_task = [&](const std::string& extra) {
        return accepted_id(post_json(
            gw.port, R"({"clip":{"provider":"musicapi","id":"clip_seeded"},"extend_after":5,)"
                     R"("num_outputs":1)" +
                         extra + "}"));
    };
    struct expectation {
        std::string setup, extra, cls, code;
        bool refunded;
    };
    const std::vector<expectation> cases = {
        {R"({"credits":5})", "", "quota", "insufficient_credits", false},
        {R"({"credits":1000})", R"(,"lyrics":"COPYRIGHTED words")", "rejected",
         "upstream_moderation", false},
        {R"({"fail_next":1,"fail_reason":"the model gave up"})", "", "rejected", "upstream_failed",
         true},
        {R"({"faults":[{"match":"create","status":401,"times":1}]})", "", "credential",
         "upstream_unauthorized", false},
    };
    for (const auto& c : cases) {
        SCOPED_TRACE(c.setup + c.extra);
        fake.control(c.setup);
        auto id = clip_task(c.extra);
        ASSERT_FALSE(id.empty());
        auto t = wait_final(gw.port, id);
        EXPECT_EQ(t["status"], "failed") << json::serialize(t);
        auto& err = t["error"].as_object();
        EXPECT_EQ(err["class"], json::value(c.cls)) << json::serialize(err);
        EXPECT_EQ(err["code"], json::value(c.code)) << json::serialize(err);
        EXPECT_EQ(err.contains("provider_refunded"), c.refunded) << json::serialize(err);
        if (c.code == "upstream_failed")
            EXPECT_NE(std::string(err["message"].as_string()).find("the model gave up"),
                      std::string::npos);
        fake.control(R"({"faults":[]})");
    }
    // The fake's own books: every failed extend was refunded (12 charged, 12 back).
    auto ledger = fake.get("/_control/ledger");
    EXPECT_EQ(ledger["charged"], ledger["refunded"]) << json::serialize(ledger);
    // A 504 (MusicAPI refunded its credits) is transient: retried, and the retry succeeds.
    fake.control(R"({"faults":[{"match":"create","status":504,"times":1}]})");
    auto id = clip_task("");
    auto t = wait_final(gw.port, id);
    EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
    auto ev = http_request(gw.port, "GET", "/v1/extensions/" + id + "/events", "", {key});
    ASSERT_TRUE(ev);
    EXPECT_NE(ev->body.find("extension.retrying"), std::string::npos);
    EXPECT_NE(ev->body.find("provider_refunded"), std::string::npos) << ev->body;
}

TEST(MusicApi, PollErrorsAreRetriedUntilTheTaskFinishes) {
    fake_musicapi fake;
    segue::test::temp_dir storage;
    gateway gw(fake, storage.path());
    fake.control(
        R"({"faults":[{"match":"task","status":429,"retry_after":0,"times":2},)"
        R"({"match":"task","status":500,"times":1},{"match":"task","reset":true,"times":1}]})");
    auto id = accepted_id(post_json(
        gw.port,
        R"({"clip":{"provider":"musicapi","id":"clip_seeded"},"extend_after":5,"num_outputs":1})"));
    auto t = wait_final(gw.port, id);
    expect_one_ready_output(t);
    EXPECT_GE(fake.requests("task").size(), 5u);
}

TEST(MusicApi, ARestartInTheMiddleOfPollingStillFinishes) {
    fake_musicapi fake(R"({"finish_after_ms":3000})");
    segue::test::temp_dir storage, files;
    const std::uint16_t port = segue::test::free_port();
    std::string id;
    {
        gateway gw(fake, storage.path(), "", port);
        id = accepted_id(
            post_form(gw.port, {{"audio_file", make_song(files, 5), "in.wav", "audio/wav"},
                                {"extend_after", "3"},
                                {"num_outputs", "1"}}));
        ASSERT_FALSE(id.empty());
        // Wait until the extend exists upstream and is being polled (the create's answer is
        // recorded: its attempt has the upstream id), then kill -9. A kill between the create's
        // request and its recorded answer is AKillBetweenTheCreateIntentAndItsAnswerCreatesOnce.
        auto polled = [&] {
            const auto t = task(gw.port, id);
            const auto* atts = t.if_contains("attempts");
            if (!atts || !atts->is_array() || atts->as_array().size() < 2)
                return false;
            const auto& last = atts->as_array().back().as_object();
            return last.at("status") == "accepted" && last.at("provider_task_id").is_string();
        };
        for (int i = 0; i < 200 && !polled(); ++i)
            std::this_thread::sleep_for(50ms);
        ASSERT_TRUE(polled()) << json::serialize(task(gw.port, id));
        ASSERT_EQ(fake.requests("create").size(), 1u);
        gw.proc->proc().signal(SIGKILL);
        gw.proc->proc().wait(5s);
    }
    gateway gw(fake, storage.path(), "", port);  // same storage, same public URL
    auto t = wait_final(gw.port, id);
    expect_one_ready_output(t);
    const auto evs = http_request(gw.port, "GET", "/v1/extensions/" + id + "/events", "", {key});
    EXPECT_EQ(fake.requests("create").size(), 1u)
        << "the extend was not created twice: " << json::serialize(t) << "\n"
        << (evs ? evs->body : "");
}

TEST(MusicApi, SignedWebhooksFinishEarlyAndForgedOnesChangeNothing) {
    fake_musicapi fake;
    segue::test::temp_dir storage;
    // Polling so slow that only the webhook can finish the task in time.
    gateway gw(
        fake, storage.path(),
        "    webhook_secret: " + webhook_secret + "\n    poll_initial: 20s\n    poll_max: 20s\n");
    // First a forged webhook: the task must not move.
    fake.control(R"({"webhook_bad_signature":true,"webhook_attempts":1})");
    auto forged = accepted_id(post_json(
        gw.port,
        R"({"clip":{"provider":"musicapi","id":"clip_seeded"},"extend_after":5,"num_outputs":1})"));
    ASSERT_FALSE(forged.empty());
    json::array hooks;
    for (int i = 0; i < 100; ++i) {
        auto w = fake.get("/_control/webhooks");
        hooks = w.contains("webhooks") ? w["webhooks"].as_array() : json::array{};
        if (!hooks.empty() && hooks[0].as_object().contains("status") &&
            hooks[0].at("status").as_int64() != 0)
            break;
        std::this_thread::sleep_for(50ms);
    }
    ASSERT_FALSE(hooks.empty());
    EXPECT_EQ(hooks[0].at("status").as_int64(), 400) << json::serialize(hooks);
    std::this_thread::sleep_for(300ms);
    EXPECT_NE(task(gw.port, forged)["status"], "succeeded");

    // Then a good one: done long before the first poll (20 s).
    fake.control(R"({"webhook_bad_signature":false})");
    auto good = accepted_id(post_json(
        gw.port,
        R"({"clip":{"provider":"musicapi","id":"clip_seeded"},"extend_after":5,"num_outputs":1})"));
    auto t = wait_final(gw.port, good, 10s);
    expect_one_ready_output(t);
    auto create = last_create_body(fake);
    EXPECT_EQ(create["webhook_secret"], json::value(webhook_secret));
    EXPECT_NE(
        std::string(create["webhook_url"].as_string()).find("/v1/providers/musicapi/webhooks/"),
        std::string::npos);
}

// A task that ends while its create is in flight (here a cancel) takes its jobs with it: the
// create's late answer finds nothing to write. That is no lost lease (another claim did not
// take the job): it is counted and logged as a job whose task had ended.
TEST(MusicApi, ACreateAnsweredAfterItsTaskEndedIsNotALostLease) {
    fake_musicapi fake(R"({"faults":[{"match":"create","delay_ms":1500}]})");
    segue::test::temp_dir storage;
    gateway gw(fake, storage.path());
    auto id = accepted_id(post_json(
        gw.port,
        R"({"clip":{"provider":"musicapi","id":"clip_seeded"},"extend_after":5,"num_outputs":1})"));
    ASSERT_FALSE(id.empty());
    std::this_thread::sleep_for(300ms);  // the create is on its way
    auto c = http_request(gw.port, "POST", "/v1/extensions/" + id + "/cancel", "", {key});
    ASSERT_TRUE(c);
    ASSERT_EQ(c->status, 200) << c->body;
    const std::string ended = R"(segue_engine_jobs_total{kind="submit",outcome="task_ended"})";
    std::string m;
    for (int i = 0; i < 100 && segue::test::metric_value(m, ended) < 1; ++i) {
        std::this_thread::sleep_for(50ms);
        m = http_request(gw.port, "GET", "/metrics")->body;
    }
    EXPECT_EQ(segue::test::metric_value(m, ended), 1) << m;
    EXPECT_EQ(segue::test::metric_value(
                  m, R"(segue_engine_jobs_total{kind="submit",outcome="lease_lost"})"),
              -1)
        << m;
    EXPECT_EQ(task(gw.port, id)["status"], "canceled");
}

// The extend create after a successful upload is an attempt of its own, its intent recorded
// before it is sent: a transient failure of it (429 with Retry-After, 500, a reset) is retried
// like any submit failure and the task succeeds. (It used to fail the task at once.)
TEST(MusicApi, TransientCreateFailuresAfterTheUploadAreRetried) {
    struct scenario {
        const char* name;
        std::string faults;
        std::size_t creates;
        std::chrono::milliseconds at_least;
    };
    const std::vector<scenario> cases = {
        {"429 twice, Retry-After 1 s",
         R"({"faults":[{"match":"create","status":429,"retry_after":1,"times":2}]})", 3, 2000ms},
        {"500 twice", R"({"faults":[{"match":"create","status":500,"times":2}]})", 3, 0ms},
        {"a reset", R"({"faults":[{"match":"create","reset":true,"times":1}]})", 2, 0ms},
    };
    fake_musicapi fake;
    segue::test::temp_dir storage, files;
    gateway gw(fake, storage.path());
    const auto song = make_song(files, 5);
    for (const auto& c : cases) {
        SCOPED_TRACE(c.name);
        fake.control(c.faults);
        const auto before = fake.requests("create").size();
        const auto uploads_before = fake.requests("upload").size();
        const auto started = std::chrono::steady_clock::now();
        auto id = accepted_id(post_form(gw.port, {{"audio_file", song, "in.wav", "audio/wav"},
                                                  {"extend_after", "3"},
                                                  {"num_outputs", "1"}}));
        ASSERT_FALSE(id.empty());
        auto t = wait_final(gw.port, id);
        expect_one_ready_output(t);
        EXPECT_GE(std::chrono::steady_clock::now() - started, c.at_least) << json::serialize(t);
        EXPECT_EQ(fake.requests("create").size() - before, c.creates);
        EXPECT_EQ(fake.requests("upload").size() - uploads_before, 1u) << "one upload";
        // The upload's attempt is "prepared"; the creates after it are attempts of their own.
        const auto& atts = t["attempts"].as_array();
        ASSERT_EQ(atts.size(), 1 + c.creates) << json::serialize(atts);
        EXPECT_EQ(atts[0].at("status"), "prepared");
        EXPECT_EQ(atts.back().at("status"), "succeeded");
        fake.control(R"({"faults":[]})");
    }
}

// SIGKILL after the create's intent was written and its request sent, before the answer: the
// restarted gateway reconciles it (its webhook shows the extend exists) and never creates it
// a second time.
TEST(MusicApi, AKillBetweenTheCreateIntentAndItsAnswerCreatesOnce) {
    fake_musicapi fake;
    segue::test::temp_dir storage, files;
    const std::uint16_t port = segue::test::free_port();
    // A reconcile window (poll_max) long enough for the webhook to come back.
    const std::string extra =
        "    webhook_secret: " + webhook_secret + "\n    poll_initial: 100ms\n    poll_max: 8s\n";
    fake.control(R"({"faults":[{"match":"create","delay_ms":2500,"times":1}],)"
                 R"("webhook_attempts":12,"webhook_backoff_ms":200})");
    std::string id;
    {
        gateway gw(fake, storage.path(), extra, port);
        id = accepted_id(
            post_form(gw.port, {{"audio_file", make_song(files, 5), "in.wav", "audio/wav"},
                                {"extend_after", "3"},
                                {"num_outputs", "1"}}));
        ASSERT_FALSE(id.empty());
        // The create's intent: a second attempt "submitting" (the upload's is "prepared").
        bool intent = false;
        for (int i = 0; i < 200 && !intent; ++i) {
            auto t = task(gw.port, id);
            if (t.contains("attempts")) {
                const auto& atts = t["attempts"].as_array();
                intent = atts.size() == 2 && atts[1].at("status") == "submitting";
            }
            if (!intent)
                std::this_thread::sleep_for(20ms);
        }
        ASSERT_TRUE(intent) << json::serialize(task(gw.port, id));
        std::this_thread::sleep_for(300ms);  // the request is on its way (answer due in 2.5 s)
        gw.proc->proc().signal(SIGKILL);
        gw.proc->proc().wait(5s);
    }
    gateway gw(fake, storage.path(), extra, port);  // same storage, same public URL
    auto t = wait_final(gw.port, id, 60s);
    expect_one_ready_output(t);
    std::this_thread::sleep_for(500ms);
    EXPECT_EQ(fake.requests("create").size(), 1u) << "the extend was created twice";
}

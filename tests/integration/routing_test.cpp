// Routing, failover, circuit breakers and the credit ledger end to end: the real binary with
// both fake providers (MusicGPT first, MusicAPI next in the route).

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <chrono>
#include <map>
#include <thread>

#include "tests/support/fakes.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
using segue::test::fake_provider;
using segue::test::http_request;

namespace {

const std::string key = "Authorization: Bearer sk-route";
const std::string admin = "Authorization: Bearer admin-secret";

json::object parse(const std::string& s) {
    return json::parse(s).as_object();
}

struct world {
    explicit world(const std::string& extra = "", double credits = 1000)
        : mg(SEGUE_FAKE_MUSICGPT_PATH,
             {"--api-key", "mg-key", "--webhook-delay-ms", "100", "--song-seconds", "3"}),
          ma(SEGUE_FAKE_MUSICAPI_PATH,
             {"--api-key", "ma-key", "--song-seconds", "3", "--clip", "clip_seeded:30"}) {
        port = segue::test::free_port();
        const std::string p = std::to_string(port);
        std::string cfg =
            "server:\n  listen: 127.0.0.1:" + p +
            "\n  io_threads: 2\nlog:\n  level: info\n"
            "tenants:\n  - name: r\n    api_keys: [sk-route]\n    credits: " +
            std::to_string(credits) +
            "\n"
            "api:\n  public_base_url: http://127.0.0.1:" +
            p +
            "\n"
            "engine:\n  poll_interval: 100ms\n  lease: 3s\n"
            "upstream:\n  allow_plain_http: true\n  request_timeout: 5s\n"
            "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"
            "providers:\n"
            "  musicgpt:\n    enabled: true\n    base_url: " +
            mg.base() +
            "/api/public\n    api_key: mg-key\n    reconcile_after: 2s\n"
            "    poll_interval: 300ms\n    price: 5\n"
            "  musicapi:\n    enabled: true\n    base_url: " +
            ma.base() +
            "/api/v1\n    api_key: ma-key\n    poll_initial: 100ms\n    poll_max: 200ms\n"
            "    price: 3\n"
            "routing:\n  default_route: main\n  routes:\n"
            "    main:\n      chain: [{provider: musicgpt}, {provider: musicapi}]\n"
            "    only_api:\n      chain: [{provider: musicapi}]\n"
            "    cheap_first:\n      chain: [{provider: musicapi}, {provider: musicgpt}]\n"
            "    free_first:\n      chain: [{provider: sandbox}, {provider: musicgpt}]\n"
            "retry:\n  transient: {initial: 50ms, max: 100ms}\n"
            "  rate_limited: {initial: 50ms, max: 100ms}\n"
            "credits:\n  admin_key: admin-secret\n" +
            extra;
        gw = std::make_unique<segue::test::segue_process>(cfg);
    }

    std::string submit(const std::string& body) {
        auto r = http_request(port, "POST", "/v1/extensions", body,
                              {key, "Content-Type: application/json"});
        EXPECT_TRUE(r);
        if (!r || r->status != 202) {
            ADD_FAILURE() << (r ? r->body : "no answer");
            return "";
        }
        return std::string(parse(r->body)["id"].as_string());
    }
    std::string url() const { return ma.base() + "/files/clip_seeded.mp3"; }
    json::object task(const std::string& id) {
        auto r = http_request(port, "GET", "/v1/extensions/" + id, "", {key});
        return r && r->status == 200 ? parse(r->body) : json::object{};
    }
    json::object wait_final(const std::string& id) {
        json::object t;
        for (int i = 0; i < 300; ++i) {
            t = task(id);
            std::string st = t.contains("status") ? std::string(t["status"].as_string()) : "";
            if (st == "succeeded" || st == "failed" || st == "partially_succeeded" ||
                st == "canceled")
                return t;
            std::this_thread::sleep_for(100ms);
        }
        ADD_FAILURE() << "not final: " << json::serialize(t);
        return t;
    }
    std::vector<json::object> events(const std::string& id) {
        auto r = http_request(port, "GET", "/v1/extensions/" + id + "/events", "", {key});
        std::vector<json::object> out;
        if (!r || r->status != 200)
            return out;
        auto doc = parse(r->body);
        for (auto& e : doc["data"].as_array())
            out.push_back(e.as_object());
        return out;
    }
    json::object credits() {
        auto r = http_request(port, "GET", "/v1/credits?limit=500", "", {key});
        return r && r->status == 200 ? parse(r->body) : json::object{};
    }

    fake_provider mg, ma;
    std::uint16_t port = 0;
    std::unique_ptr<segue::test::segue_process> gw;
};

double num(const json::value& v) {
    return v.to_number<double>();
}

}  // namespace

TEST(Routing, QuotaAtTheFirstProviderFailsOverToTheNext) {
    world w;
    ASSERT_TRUE(w.mg.control(R"({"faults":[{"match":"submit","status":402}]})"));
    auto id = w.submit(R"({"audio_url":")" + w.url() + R"(","extend_after":2,"num_outputs":1})");
    auto t = w.wait_final(id);
    EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
    EXPECT_EQ(t["provider"], "musicapi");
    auto& atts = t["attempts"].as_array();
    // MusicAPI's upload (prepared) and its create are attempts of their own.
    ASSERT_EQ(atts.size(), 3u) << json::serialize(atts);
    EXPECT_EQ(atts[0].at("provider"), "musicgpt");
    EXPECT_EQ(atts[0].at("status"), "failed");
    EXPECT_EQ(atts[0].at("error").at("class"), "quota");
    EXPECT_EQ(atts[1].at("provider"), "musicapi");
    EXPECT_EQ(atts[1].at("status"), "prepared");
    EXPECT_EQ(atts[2].at("provider"), "musicapi");
    EXPECT_EQ(atts[2].at("status"), "succeeded");
    // One extension.retrying event says what happened.
    int retrying = 0;
    for (auto& e : w.events(id))
        if (e["type"] == "extension.retrying") {
            ++retrying;
            EXPECT_EQ(e["data"].at("decision"), "failover");
            EXPECT_EQ(e["data"].at("next_provider"), "musicapi");
            EXPECT_EQ(e["data"].at("reason"), "quota");
        }
    EXPECT_EQ(retrying, 1);
    // The 2 the cheaper provider does not need went back, and the tenant hears of it, right
    // after the failover; nothing more is refunded at the end (the one output was captured).
    std::vector<std::string> types;
    double refunded = 0;
    for (auto& e : w.events(id)) {
        types.emplace_back(e["type"].as_string());
        if (e["type"] == "extension.credits.refunded")
            refunded += num(e["data"].at("amount"));
    }
    EXPECT_EQ(refunded, 2) << json::serialize(w.events(id).back());
    auto at = std::find(types.begin(), types.end(), "extension.retrying");
    ASSERT_NE(at, types.end());
    ASSERT_NE(at + 1, types.end());
    EXPECT_EQ(*(at + 1), "extension.credits.refunded");
    // The same audio went to the next provider (a URL source: MusicAPI uploaded it).
    EXPECT_EQ(w.ma.requests("upload").size(), 1u);
    // The hold followed the failover: MusicGPT's 5 held, 2 released, MusicAPI's 3 captured.
    auto c = w.credits();
    EXPECT_EQ(num(c["captured"]), 3) << json::serialize(c);
    EXPECT_EQ(num(c["held"]), 0);
    EXPECT_EQ(num(c["balance"]), 997);
}

TEST(Routing, RejectedRequestsDoNotFailOverAndPinsAndRoutesAreHonoured) {
    world w;
    ASSERT_TRUE(w.mg.control(R"({"faults":[{"match":"submit","status":422}]})"));
    auto id = w.submit(R"({"audio_url":")" + w.url() + R"(","extend_after":2,"num_outputs":1})");
    auto t = w.wait_final(id);
    EXPECT_EQ(t["status"], "failed");
    EXPECT_EQ(t["attempts"].as_array().size(), 1u);
    EXPECT_TRUE(w.ma.requests("upload").empty());
    ASSERT_TRUE(w.mg.control(R"({"faults":[]})"));

    // A named route, and a clip (which stays with the provider that owns it).
    id = w.submit(R"({"audio_url":")" + w.url() +
                  R"(","extend_after":2,"num_outputs":1,"route":"only_api"})");
    EXPECT_EQ(w.wait_final(id)["provider"], "musicapi");
    id = w.submit(
        R"({"clip":{"provider":"musicapi","id":"clip_seeded"},"extend_after":2,"num_outputs":1})");
    EXPECT_EQ(w.wait_final(id)["provider"], "musicapi");
    // Unknown route: 422 naming it.
    auto r =
        http_request(w.port, "POST", "/v1/extensions",
                     R"({"audio_url":"https://x.example/a.mp3","extend_after":1,"route":"nope"})",
                     {key, "Content-Type: application/json"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422);
    EXPECT_NE(r->body.find("\"route\""), std::string::npos) << r->body;
}

TEST(Routing, AnOpenCircuitSendsNothingAndShowsInProviders) {
    world w("breakers:\n  consecutive_failures: 2\n  open: 30s\n");
    ASSERT_TRUE(w.mg.control(R"({"faults":[{"match":"submit","status":500}]})"));
    // Two transient failures open MusicGPT's circuit; the task fails over to MusicAPI.
    auto id = w.submit(R"({"audio_url":")" + w.url() + R"(","extend_after":2,"num_outputs":1})");
    auto t = w.wait_final(id);
    EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
    auto r = http_request(w.port, "GET", "/v1/providers", "", {key});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200);
    auto doc = parse(r->body);
    std::map<std::string, json::object> by;
    for (auto& p : doc["data"].as_array())
        by[std::string(p.at("name").as_string())] = p.as_object();
    ASSERT_TRUE(by.count("musicgpt"));
    EXPECT_EQ(by["musicgpt"]["circuit"].at("state"), "open") << r->body;
    EXPECT_EQ(by["musicgpt"]["healthy"], false);
    EXPECT_EQ(by["musicapi"]["circuit"].at("state"), "closed");
    EXPECT_EQ(num(by["musicgpt"]["price_per_output"]), 5);

    // While it is open, a new task skips MusicGPT without sending it anything.
    const auto sent = w.mg.requests("submit").size();
    id = w.submit(R"({"audio_url":")" + w.url() + R"(","extend_after":2,"num_outputs":1})");
    t = w.wait_final(id);
    EXPECT_EQ(t["status"], "succeeded");
    EXPECT_EQ(w.mg.requests("submit").size(), sent) << "a request went through an open circuit";
    auto m = http_request(w.port, "GET", "/metrics");
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find("segue_provider_circuit_state{provider=\"musicgpt\"} 2"),
              std::string::npos);
    EXPECT_NE(m->body.find("segue_task_retries_total{provider=\"musicgpt\",decision=\"failover\""),
              std::string::npos);
    // And the log says so, once, at warn, naming the provider.
    const auto log = w.gw->log_with("provider circuit opened");
    const auto at = log.find("provider circuit opened");
    ASSERT_NE(at, std::string::npos) << log;
    const auto line = log.substr(log.rfind('\n', at) + 1, log.find('\n', at) - log.rfind('\n', at));
    EXPECT_NE(line.find(R"("level":"warn")"), std::string::npos) << line;
    EXPECT_NE(line.find(R"("provider":"musicgpt")"), std::string::npos) << line;
}

TEST(Ledger, HoldsCapturesRefundsAndRefusesWhatCannotBePaid) {
    world w("", 20);  // 20 credits; MusicGPT costs 5 per output, MusicAPI 3
    // Two outputs at MusicGPT: 10 held, both captured.
    auto id = w.submit(R"({"audio_url":")" + w.url() + R"(","extend_after":2,"num_outputs":2})");
    auto t = w.wait_final(id);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    auto c = w.credits();
    EXPECT_EQ(num(c["granted"]), 20);
    EXPECT_EQ(num(c["captured"]), 10);
    EXPECT_EQ(num(c["held"]), 0);
    EXPECT_EQ(num(c["balance"]), 10);

    // A task that fails refunds its hold, and says so.
    ASSERT_TRUE(w.mg.control(R"({"faults":[{"match":"submit","status":422,"times":1}]})"));
    id = w.submit(R"({"audio_url":")" + w.url() + R"(","extend_after":2,"num_outputs":1})");
    t = w.wait_final(id);
    EXPECT_EQ(t["status"], "failed");
    bool refunded = false;
    for (auto& e : w.events(id))
        if (e["type"] == "extension.credits.refunded") {
            refunded = true;
            EXPECT_EQ(num(e["data"].at("amount")), 5);
        }
    EXPECT_TRUE(refunded);
    c = w.credits();
    EXPECT_EQ(num(c["balance"]), 10);
    EXPECT_EQ(num(c["held"]), 0);

    // 10 available, 15 needed: 402, and nothing reaches a provider.
    const auto before = w.mg.requests("submit").size();
    auto r = http_request(w.port, "POST", "/v1/extensions",
                          R"({"audio_url":")" + w.url() +
                              R"(","extend_after":2,"num_outputs":2,"provider":"musicgpt"})",
                          {key, "Content-Type: application/json"});
    ASSERT_TRUE(r);
    // 2 x 5 = 10 fits exactly; a third task does not.
    ASSERT_EQ(r->status, 202) << r->body;
    r = http_request(w.port, "POST", "/v1/extensions",
                     R"({"audio_url":")" + w.url() + R"(","extend_after":2,"num_outputs":1})",
                     {key, "Content-Type: application/json"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 402) << r->body;
    EXPECT_EQ(r->header("content-type").value_or(""), "application/problem+json");
    EXPECT_NE(r->body.find("insufficient_credits"), std::string::npos) << r->body;
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(w.mg.requests("submit").size(), before + 1);

    // An admin top-up makes room; replaying it adds nothing.
    auto top = [&](int expect) {
        auto a = http_request(w.port, "POST", "/v1/admin/credits",
                              R"({"tenant":"r","amount":50,"note":"test"})",
                              {admin, "Content-Type: application/json", "Idempotency-Key: top-1"});
        ASSERT_TRUE(a);
        EXPECT_EQ(a->status, expect) << a->body;
    };
    top(201);
    top(200);
    // Credits are kept in thousandths: an amount with more decimals is refused, not rounded.
    for (const char* amount :
         {"0.0015", "1.23456789", "1.000001", "999999999.9999", "0", "1e-9", "-1", "1000000001"}) {
        auto a = http_request(w.port, "POST", "/v1/admin/credits",
                              std::string(R"({"tenant":"r","amount":)") + amount + "}",
                              {admin, "Content-Type: application/json"});
        ASSERT_TRUE(a);
        EXPECT_EQ(a->status, 422) << amount << ": " << a->body;
        EXPECT_NE(a->body.find("at most three decimals"), std::string::npos) << a->body;
    }
    // A number sent as a string is named as such, not as missing.
    auto text = http_request(w.port, "POST", "/v1/admin/credits", R"({"tenant":"r","amount":"5"})",
                             {admin, "Content-Type: application/json"});
    ASSERT_TRUE(text);
    EXPECT_EQ(text->status, 422) << text->body;
    EXPECT_NE(text->body.find("must be a JSON number of credits"), std::string::npos) << text->body;
    auto bad = http_request(w.port, "POST", "/v1/admin/credits", R"({"tenant":"r","amount":5})",
                            {key, "Content-Type: application/json"});
    ASSERT_TRUE(bad);
    EXPECT_EQ(bad->status, 401);
    c = w.credits();
    EXPECT_EQ(num(c["granted"]), 70);

    // Every entry is once per (task, output, kind): captured amounts add up.
    double captured = 0;
    std::map<std::string, int> seen;
    for (auto& e : c["entries"].as_array()) {
        const auto& o = e.as_object();
        if (o.at("kind") == "capture") {
            captured += num(o.at("amount"));
            const std::string k = std::string(o.at("task_id").as_string()) + "/" +
                                  std::to_string(o.at("output").to_number<int>());
            EXPECT_EQ(++seen[k], 1) << k;
        }
    }
    EXPECT_EQ(captured, num(c["captured"]));
}

// MusicAPI's upload succeeds (its attempt says how MusicAPI would make the outputs), its create
// is refused for credits (quota: fail over at once), MusicGPT makes the outputs: they do not
// say MusicAPI made them, and the task keeps none of MusicAPI's warnings about how it would
// have sent the request (num_outputs 2 cannot be requested there).
TEST(Routing, OutputsDoNotNameTheMethodOfAProviderThatFailedOver) {
    world w("", 20);
    ASSERT_TRUE(w.ma.control(R"({"faults":[{"match":"create","status":403,)"
                             R"("body":"{\"code\":403,\"message\":\"The remaining credits are not )"
                             R"(enough.\"}"}]})"));
    auto id = w.submit(R"({"audio_url":")" + w.url() +
                       R"(","extend_after":2,"num_outputs":2,"route":"cheap_first"})");
    auto t = w.wait_final(id);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    EXPECT_EQ(t["provider"], "musicgpt");
    EXPECT_EQ(json::serialize(t["warnings"]).find("musicapi:"), std::string::npos)
        << json::serialize(t["warnings"]);
    EXPECT_EQ(w.ma.requests("upload").size(), 1u);
    for (const auto& o : t["outputs"].as_array()) {
        const auto* m = o.as_object().if_contains("method");
        EXPECT_TRUE(!m || json::serialize(*m).find("musicapi") == std::string::npos)
            << json::serialize(o);
    }
}

// A failover moves the hold to the next provider's price: when that provider is pricier and the
// tenant cannot cover the difference, the task fails (insufficient_credits, the first failure as
// its cause) instead of running on credits it does not have; nothing is sent to that provider
// and the hold goes back.
TEST(Routing, AFailoverThatTheBalanceCannotCoverFailsTheTask) {
    world w("", 4);  // MusicAPI holds 3 of the 4; MusicGPT would need 5
    ASSERT_TRUE(w.ma.control(R"({"faults":[{"match":"upload","status":500}]})"));
    auto id = w.submit(R"({"audio_url":")" + w.url() +
                       R"(","extend_after":2,"num_outputs":1,"route":"cheap_first"})");
    auto t = w.wait_final(id);
    EXPECT_EQ(t["status"], "failed") << json::serialize(t);
    EXPECT_EQ(t["error"].at("code"), "insufficient_credits") << json::serialize(t["error"]);
    EXPECT_EQ(t["error"].at("cause").at("class"), "transient") << json::serialize(t["error"]);
    // 3 held of 4, 5 needed: 2 more, and 1 available (not "2 more than available").
    EXPECT_NE(std::string(t["error"].at("message").as_string())
                  .find("would hold 2 more credits, and the tenant has 1 available"),
              std::string::npos)
        << json::serialize(t["error"]);
    EXPECT_TRUE(w.mg.requests("submit").empty()) << "nothing is sent to the pricier provider";
    auto c = w.credits();
    EXPECT_EQ(num(c["held"]), 0) << json::serialize(c);
    EXPECT_EQ(num(c["captured"]), 0);
    EXPECT_EQ(num(c["available"]), 4);
}

// The sandbox is free (nothing is held at submit); when it gives up and the task fails over to
// a paid provider, that provider's price is held like at submit and captured per output, and a
// balance that cannot cover it fails the task before anything is sent there.
TEST(Routing, AFailoverFromAFreeProviderHoldsTheNextOnesPrice) {
    // A source nobody serves: the sandbox cannot fetch it (transient), MusicGPT takes the URL.
    const std::string dead =
        "http://127.0.0.1:" + std::to_string(segue::test::free_port()) + "/gone.mp3";
    const std::string body =
        R"({"audio_url":")" + dead + R"(","extend_after":2,"num_outputs":2,"route":"free_first"})";
    {
        world w;
        auto id = w.submit(body);
        auto t = w.wait_final(id);
        ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
        EXPECT_EQ(t["provider"], "musicgpt");
        EXPECT_EQ(num(t["credits"].at("held")), 10) << json::serialize(t["credits"]);
        EXPECT_EQ(num(t["credits"].at("captured")), 10) << json::serialize(t["credits"]);
        auto c = w.credits();
        EXPECT_EQ(num(c["captured"]), 10) << json::serialize(c);
        EXPECT_EQ(num(c["held"]), 0);
        EXPECT_EQ(num(c["available"]), 990);
        int holds = 0;
        for (auto& e : c["entries"].as_array()) {
            const auto& o = e.as_object();
            if (o.at("kind") == "hold") {
                ++holds;
                EXPECT_EQ(num(o.at("amount")), 10) << json::serialize(o);
                EXPECT_EQ(o.at("note"), "failover to musicgpt") << json::serialize(o);
            }
        }
        EXPECT_EQ(holds, 1) << json::serialize(c);
        // The log tells the task's end, in one line.
        const std::string line = R"("msg":"task finished","task_id":")" + id +
                                 R"(","status":"succeeded","provider":"musicgpt","duration_ms":)";
        const auto log = w.gw->log_with(line);
        EXPECT_NE(log.find(line), std::string::npos) << log;
    }
    {
        world w("", 9);  // MusicGPT would hold 10
        auto id = w.submit(body);
        auto t = w.wait_final(id);
        EXPECT_EQ(t["status"], "failed") << json::serialize(t);
        EXPECT_EQ(t["error"].at("code"), "insufficient_credits") << json::serialize(t["error"]);
        EXPECT_NE(std::string(t["error"].at("message").as_string())
                      .find("would hold 10 more credits, and the tenant has 9 available"),
                  std::string::npos)
            << json::serialize(t["error"]);
        EXPECT_TRUE(w.mg.requests("submit").empty()) << "nothing is sent to the paid provider";
        auto c = w.credits();
        EXPECT_EQ(num(c["held"]), 0) << json::serialize(c);
        EXPECT_EQ(num(c["captured"]), 0);
        EXPECT_EQ(num(c["available"]), 9);
    }
}

// The API's edge against hostile or sloppy input, on the real binary: provider names in the
// open webhook route never reach a metric label, text must be UTF-8, query parameters are
// percent-decoded, and uploads are served with the type they were probed as.

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <memory>
#include <random>
#include <set>
#include <sstream>
#include <string>
#include <thread>

#include "gateway/audio/audio.hpp"
#include "gateway/store/pg_connection.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
using segue::test::form_part;
using segue::test::http_connection;
using segue::test::http_request;
using segue::test::http_response;
using segue::test::segue_process;

namespace {

const std::string key = "Authorization: Bearer sk-edge";

// A gateway of tenant edge (sk-edge; `tenant_more`: more of its lines) on `storage` (a
// `storage:` section), with `more` sections after it.
std::string edge_on(const std::string& storage, const std::string& tenant_more = "",
                    const std::string& more = "") {
    return "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n"
           "log:\n  level: info\n"
           "tenants:\n  - name: edge\n    api_keys: [sk-edge]\n" +
           tenant_more + more + storage;
}

// Tenant edge's create of a task by URL (the sandbox's, unless routed otherwise).
// A Retry-After of 3..7 s: the 5 s the API means, spread so refused clients do not all come
// back at once (core::spread_retry_after_s).
::testing::AssertionResult spread_retry_after(const http_response& r) {
    const auto v = r.header("retry-after").value_or("");
    if (v.size() == 1 && v[0] >= '3' && v[0] <= '7')
        return ::testing::AssertionSuccess();
    return ::testing::AssertionFailure() << "Retry-After '" << v << "'";
}

std::optional<http_response> create_by_url(std::uint16_t port) {
    return http_request(port, "POST", "/v1/extensions",
                        R"({"audio_url":"https://cdn.example/a.mp3","extend_after":3})",
                        {key, "Content-Type: application/json"});
}
const std::string boundary = "segue-edge-boundary-41c2";

std::string config_for(const std::string& dir) {
    return "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n  drain_timeout: 3s\n"
           "limits:\n  max_requests_per_connection: 0\n"
           "log:\n  level: warn\n"
           "tenants:\n  - name: edge\n    api_keys: [sk-edge]\n" +
           segue::test::storage_yaml(dir) +
           "engine:\n  poll_interval: 100ms\n  lease: 2s\n"
           "providers:\n  sandbox:\n    delay: 50ms\n";
}

std::string song(const segue::test::temp_dir& d, const std::string& format, double seconds = 4) {
    const std::string path = d.file("in." + format);
    EXPECT_TRUE(segue::audio::write_test_song(path, seconds, 22050, 1, 120, format));
    return segue::test::read_file(path);
}

std::optional<http_response> post_form(std::uint16_t port, const std::vector<form_part>& parts) {
    return http_request(port, "POST", "/v1/extensions",
                        segue::test::multipart_body(parts, boundary),
                        {key, "Content-Type: multipart/form-data; boundary=" + boundary});
}

// Strict parse: Boost.JSON refuses invalid UTF-8 by default, so this also checks the answer is
// valid JSON text.
json::object parse(const std::string& s) {
    return json::parse(s).as_object();
}

// The series (sample lines, labels included) of an exposition, without their values.
std::set<std::string> series_of(const std::string& text) {
    std::set<std::string> out;
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.empty() || line[0] == '#')
            continue;
        out.insert(line.substr(0, line.rfind(' ')));
    }
    return out;
}

std::set<std::string> metric_series(std::uint16_t port) {
    auto m = http_request(port, "GET", "/metrics");
    EXPECT_TRUE(m && m->status == 200);
    return m ? series_of(m->body) : std::set<std::string>{};
}

std::size_t extension_count(std::uint16_t port) {
    auto list = http_request(port, "GET", "/v1/extensions?limit=100", "", {key});
    EXPECT_TRUE(list && list->status == 200);
    return list ? parse(list->body)["data"].as_array().size() : 0;
}

std::string percent_encode_all(const std::string& s) {
    static const char* hex = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : s) {
        out += '%';
        out += hex[c >> 4];
        out += hex[c & 15];
    }
    return out;
}

}  // namespace

TEST(ApiEdge, UnknownProviderWebhooksAre404AndMakeNoSeries) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    // One unknown name first, so the route's own series (by template, method and code) exist.
    auto warm = http_request(s.port(), "POST", "/v1/providers/warmup/webhooks/tok", "{}",
                             {"Content-Type: application/json"});
    ASSERT_TRUE(warm);
    ASSERT_EQ(warm->status, 404);
    // A request is counted once its answer is written: wait until both routes' series show.
    std::set<std::string> before;
    for (int i = 0; i < 100; ++i) {
        before = metric_series(s.port());
        const bool ready =
            before.count(
                R"(segue_http_requests_total{route="/metrics",method="GET",code="200"})") &&
            before.count(
                R"(segue_http_requests_total{route="/v1/providers/{name}/webhooks/{token}",)"
                R"(method="POST",code="404"})");
        if (ready)
            break;
        std::this_thread::sleep_for(20ms);
    }

    std::mt19937 rng(12);
    const std::string alphabet = "abcdefghijklmnopqrstuvwxyz0123456789-_";
    http_connection conn(s.port());
    std::vector<std::string> names;
    for (int i = 0; i < 10000; ++i) {
        std::string name = "p";
        const int len = 4 + static_cast<int>(rng() % 24);
        for (int k = 0; k < len; ++k)
            name += alphabet[rng() % alphabet.size()];
        names.push_back(name);
        auto r = conn.request("POST", "/v1/providers/" + name + "/webhooks/tok" + std::to_string(i),
                              "{}", {"Content-Type: application/json"});
        ASSERT_TRUE(r) << i;
        ASSERT_EQ(r->status, 404) << name << ": " << r->body;
        ASSERT_EQ(r->header("content-type").value_or(""), "application/problem+json");
    }

    // The counts moved, but no series was added, and no name made it into the exposition.
    auto m = http_request(s.port(), "GET", "/metrics");
    ASSERT_TRUE(m);
    const auto after = series_of(m->body);
    std::vector<std::string> added;
    for (const auto& x : after)
        if (!before.count(x))
            added.push_back(x);
    EXPECT_TRUE(added.empty()) << added.size() << " new series, e.g. " << added.front();
    for (const auto& n : names)
        ASSERT_EQ(m->body.find(n), std::string::npos) << n;
    EXPECT_EQ(m->body.find("segue_metrics_series_refused_total"), std::string::npos)
        << "refused by the route, not by the registry's cap";

    // A configured provider still reaches the engine (and its bounded label).
    auto known = http_request(s.port(), "POST", "/v1/providers/sandbox/webhooks/forged", "{}",
                              {"Content-Type: application/json"});
    ASSERT_TRUE(known);
    EXPECT_EQ(known->status, 404);
    auto m2 = http_request(s.port(), "GET", "/metrics");
    ASSERT_TRUE(m2);
    EXPECT_NE(m2->body.find(R"(segue_provider_webhooks_total{provider="sandbox",kind="unknown",)"
                            R"(outcome="unknown_token"} 1)"),
              std::string::npos);
}

TEST(ApiEdge, InvalidUtf8TextIs422NamingTheFieldAndCreatesNothing) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    const std::string wav = song(d, "wav");

    // A multipart text field: 0xC3 starts a 2-byte sequence, 0x28 '(' cannot continue it.
    auto r = post_form(s.port(), {{"audio_file", wav, "s.wav", "audio/wav"},
                                  {"extend_after", "1"},
                                  {"prompt", "piano \xC3\x28 outro"}});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422) << r->body;
    EXPECT_EQ(r->header("content-type").value_or(""), "application/problem+json");
    auto p = parse(r->body);
    ASSERT_TRUE(p.contains("errors")) << r->body;
    auto& errors = p["errors"].as_array();
    ASSERT_EQ(errors.size(), 1u) << r->body;
    EXPECT_EQ(errors[0].at("field"), "prompt");

    // Every text field, also in JSON bodies (where the parser alone would refuse the whole body
    // as malformed, without saying which field).
    auto j = http_request(s.port(), "POST", "/v1/extensions",
                          "{\"audio_url\":\"https://x.test/a.mp3\",\"extend_after\":1,"
                          "\"lyrics\":\"la \xFF la\"}",
                          {key, "Content-Type: application/json"});
    ASSERT_TRUE(j);
    EXPECT_EQ(j->status, 422) << j->body;
    EXPECT_EQ(parse(j->body)["errors"].as_array()[0].at("field"), "lyrics");

    // A form field whose *name* is not UTF-8: refused, and the answer is still valid JSON.
    auto n = post_form(
        s.port(),
        {{"audio_file", wav, "s.wav", "audio/wav"}, {"extend_after", "1"}, {"col\xC3our", "x"}});
    ASSERT_TRUE(n);
    EXPECT_EQ(n->status, 422);
    EXPECT_NO_THROW(parse(n->body)) << n->body;

    // Nothing was created, and no upload was left behind.
    EXPECT_EQ(extension_count(s.port()), 0u);
    std::size_t spooled = 0;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(d.path() + "/blobs", ec);
         it != std::filesystem::recursive_directory_iterator(); ++it)
        if (it->is_regular_file())
            ++spooled;
    EXPECT_EQ(spooled, 0u);

    // A filename that is not UTF-8 is only informational: kept, as valid text.
    auto f = post_form(s.port(), {{"audio_file", wav, "caf\xE9.wav", "audio/wav"},
                                  {"extend_after", "1"},
                                  {"num_outputs", "1"}});
    ASSERT_TRUE(f);
    ASSERT_EQ(f->status, 202) << f->body;
    auto t = parse(f->body);
    EXPECT_EQ(t["request"].at("source").at("filename"), "caf\xEF\xBF\xBD.wav");
}

// Every bad field at once: a clip that names no output, URLs the guard refuses and an upload
// whose end comes before extend_after are named with the fields' own errors, not one stage
// at a time (each used to hide the next). Nothing is created.
TEST(ApiEdge, EveryBadFieldIsNamedAtOnce) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    auto fields = [](const std::optional<http_response>& r) {
        std::set<std::string> out;
        EXPECT_TRUE(r);
        if (!r)
            return out;
        EXPECT_EQ(r->status, 422) << r->body;
        auto p = parse(r->body);
        if (auto* e = p.if_contains("errors"); e && e->is_array())
            for (const auto& x : e->as_array())
                out.emplace(x.at("field").as_string());
        return out;
    };
    auto post = [&](const std::string& body) {
        return http_request(s.port(), "POST", "/v1/extensions", body,
                            {key, "Content-Type: application/json"});
    };
    EXPECT_EQ(
        fields(post(R"({"clip":{"provider":"sandbox","id":"ext_00000000000000000000000000-1"},)"
                    R"("extend_after":1,"gender":"x","num_outputs":5})")),
        (std::set<std::string>{"clip.id", "gender", "num_outputs"}));
    EXPECT_EQ(fields(post(R"({"audio_url":"http://127.0.0.1/a.mp3","extend_after":1,)"
                          R"("webhook_url":"http://10.0.0.1/h","gender":"x"})")),
              (std::set<std::string>{"audio_url", "webhook_url", "gender"}));
    const std::string wav = song(d, "wav", 4);
    EXPECT_EQ(fields(post_form(s.port(), {{"audio_file", wav, "s.wav", "audio/wav"},
                                          {"extend_after", "99"},
                                          {"gender", "x"}})),
              (std::set<std::string>{"extend_after", "gender"}));
    EXPECT_EQ(extension_count(s.port()), 0u);
}

TEST(ApiEdge, QueryParametersArePercentDecoded) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    const std::string wav = song(d, "wav");
    std::vector<std::string> ids;
    for (int i = 0; i < 2; ++i) {
        auto r = post_form(s.port(), {{"audio_file", wav, "s.wav", "audio/wav"},
                                      {"extend_after", "1"},
                                      {"num_outputs", "1"}});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 202) << r->body;
        ids.emplace_back(parse(r->body)["id"].as_string());
    }

    // The cursor, every byte percent-encoded: the same as the plain id.
    auto plain = http_request(s.port(), "GET", "/v1/extensions?before=" + ids[1], "", {key});
    auto encoded = http_request(s.port(), "GET",
                                "/v1/extensions?before=" + percent_encode_all(ids[1]), "", {key});
    ASSERT_TRUE(plain && encoded);
    ASSERT_EQ(encoded->status, 200) << encoded->body;
    auto data = parse(encoded->body)["data"].as_array();
    ASSERT_EQ(data.size(), 1u) << encoded->body;
    EXPECT_EQ(data[0].at("id").as_string(), ids[0]);
    EXPECT_EQ(encoded->body, plain->body);

    // Enumerations and numbers decode too; names as well.
    auto dead = http_request(s.port(), "GET",
                             "/v1/deliveries?status=%64ead&task_id=" + percent_encode_all(ids[0]),
                             "", {key});
    ASSERT_TRUE(dead);
    EXPECT_EQ(dead->status, 200) << dead->body;
    auto lim = http_request(s.port(), "GET", "/v1/extensions?%6Cimit=%31", "", {key});
    ASSERT_TRUE(lim);
    ASSERT_EQ(lim->status, 200) << lim->body;
    EXPECT_EQ(parse(lim->body)["data"].as_array().size(), 1u);
    auto after =
        http_request(s.port(), "GET", "/v1/extensions/" + ids[0] + "/events?after=%31", "", {key});
    ASSERT_TRUE(after);
    EXPECT_EQ(after->status, 200) << after->body;
    // A ledger cursor of the tenant's own pages on (here: past its oldest entry, the grant).
    auto ledger = http_request(s.port(), "GET", "/v1/credits", "", {key});
    ASSERT_TRUE(ledger);
    ASSERT_EQ(ledger->status, 200) << ledger->body;
    const auto entries = parse(ledger->body)["entries"].as_array();
    ASSERT_FALSE(entries.empty()) << ledger->body;
    const auto oldest = json::serialize(entries.back().at("id"));
    auto past = http_request(s.port(), "GET", "/v1/credits?before=" + oldest, "", {key});
    ASSERT_TRUE(past);
    EXPECT_EQ(past->status, 200) << past->body;
    EXPECT_TRUE(parse(past->body)["entries"].as_array().empty()) << past->body;

    // Content negotiation on the event log: q-values count; */* alone is JSON (a stream needs
    // text/event-stream named, and not below JSON).
    for (const auto& [accept, type] : std::vector<std::pair<std::string, std::string>>{
             {"application/json, text/event-stream;q=0.1", "application/json"},
             {"*/*", "application/json"},
             {"text/event-stream;q=0.1, */*;q=0.5", "application/json"}}) {
        auto r = http_request(s.port(), "GET", "/v1/extensions/" + ids[0] + "/events", "",
                              {key, "Accept: " + accept});
        ASSERT_TRUE(r) << accept;
        EXPECT_EQ(r->status, 200) << accept;
        EXPECT_EQ(r->header("content-type").value_or("").substr(0, type.size()), type) << accept;
    }

    // Known names in any spelling, and empty parts of a query, are no unknown parameter.
    for (const std::string& target : std::vector<std::string>{
             "/v1/extensions?%6Cimit=1&", "/v1/extensions?&limit=1&&before=" + ids[0],
             "/v1/deliveries?limit=1&status=dead&task_id=" + ids[0], "/v1/credits?limit=1",
             "/v1/extensions/" + ids[0] + "/events?after=0&limit=1"}) {
        auto r = http_request(s.port(), "GET", target, "", {key});
        ASSERT_TRUE(r) << target;
        EXPECT_EQ(r->status, 200) << target << ": " << r->body;
    }

    // A malformed escape, a parameter given twice or unknown, or an empty filter or cursor is
    // a 400 naming it.
    struct bad {
        std::string target;
        std::string param;
    };
    for (const auto& b :
         std::vector<bad>{{"/v1/extensions?before=%zz", "before"},
                          {"/v1/extensions?limit=1%", "limit"},
                          {"/v1/deliveries?status=de%4", "status"},
                          {"/v1/deliveries?task_id=%C3%28", "task_id"},
                          {"/v1/credits?before=%G1", "before"},
                          {"/v1/extensions/" + ids[0] + "/events?after=%", "after"},
                          // A cursor that names nothing of the tenant's: not an empty page.
                          {"/v1/extensions?before=bogus", "before"},
                          {"/v1/extensions?before=ext_00000000000000000000000000", "before"},
                          {"/v1/deliveries?before=dlv_zzzz", "before"},
                          {"/v1/credits?before=999999", "before"},
                          // A task filter that names none of the tenant's tasks: not "none".
                          {"/v1/deliveries?task_id=ext_00000000000000000000000000", "task_id"},
                          {"/v1/deliveries?status=dead&task_id=" + ids[0] + "x", "task_id"},
                          // Given twice (in any spelling), or an empty filter.
                          {"/v1/extensions?limit=5&limit=5", "limit"},
                          {"/v1/deliveries?task_id=ext_a&%74ask_id=ext_b", "task_id"},
                          {"/v1/deliveries?status=dead&status=pending", "status"},
                          {"/v1/deliveries?task_id=", "task_id"},
                          {"/v1/deliveries?status=", "status"},
                          // An empty cursor, on each list alike.
                          {"/v1/extensions?before=", "before"},
                          {"/v1/deliveries?before=", "before"},
                          {"/v1/credits?before=", "before"},
                          // A parameter the endpoint does not take: a filter it lacks, a typo.
                          {"/v1/extensions?status=failed", "status"},
                          {"/v1/extensions?limit=5&Limit=5", "Limit"},
                          {"/v1/deliveries?taskid=ext_a", "taskid"},
                          {"/v1/credits?after=3", "after"},
                          {"/v1/extensions/" + ids[0] + "/events?before=1", "before"}}) {
        auto r = http_request(s.port(), "GET", b.target, "", {key});
        ASSERT_TRUE(r) << b.target;
        EXPECT_EQ(r->status, 400) << b.target << ": " << r->body;
        EXPECT_EQ(r->header("content-type").value_or(""), "application/problem+json");
        auto p = parse(r->body);
        ASSERT_TRUE(p.contains("errors")) << b.target << ": " << r->body;
        EXPECT_EQ(p["errors"].as_array()[0].at("field").as_string(), b.param) << b.target;
    }
}

// PostgreSQL stops under a running gateway: /readyz says why at once (a load balancer moves the
// traffic), and the API answers 503 with Retry-After instead of holding each request until the
// database is back (a client gave up after 40 s, and its task was created after it left).
// Once the database is back, both serve again. A server of its own: the shared one stays up.
// A gateway on the private PostgreSQL `pg` (tenant edge), for the outage tests; `postgres`
// adds lines to storage.postgres.
segue_process outage_gateway(const segue::test::temp_dir& d,
                             const segue::test::pg_private_server& pg,
                             const std::string& postgres = "") {
    return segue_process(
        "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n  drain_timeout: 3s\n"
        "log:\n  level: info\n"
        "tenants:\n  - name: edge\n    api_keys: [sk-edge]\n"
        "    webhook_secrets: [\"whsec_c2VndWUtY2xpLXRlc3Qtd2ViaG9vay1zZWNyZXQ=\"]\n" +
        segue::test::postgres_storage_yaml(pg.url(), d.path() + "/blobs") + postgres +
        "engine:\n  poll_interval: 100ms\n"
        "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n");
}

// /readyz once it answers `status`, or its last answer after `limit`.
std::optional<http_response> readyz_once(const segue_process& s, int status,
                                         std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    std::optional<http_response> ready;
    while (std::chrono::steady_clock::now() < until) {
        ready = http_request(s.port(), "GET", "/readyz");
        if (ready && ready->status == status)
            break;
        std::this_thread::sleep_for(50ms);
    }
    return ready;
}

const std::string outage_body = R"({"audio_url":"https://cdn.example/a.mp3","extend_after":3})";
const std::vector<std::string> json_key = {key, "Content-Type: application/json"};

// After an outage: once /readyz is 200 again (within `limit`), a create is accepted. The ids
// the tenant's list holds then, the new one (`created`) among them; empty on a failure.
std::set<std::string> serves_again(const segue_process& s, std::chrono::milliseconds limit,
                                   std::string& created) {
    auto ready = readyz_once(s, 200, limit);
    if (!ready || ready->status != 200) {
        ADD_FAILURE() << "not ready again: " << (ready ? ready->body : "no answer");
        return {};
    }
    auto after = http_request(s.port(), "POST", "/v1/extensions", outage_body, json_key);
    if (!after || after->status != 202) {
        ADD_FAILURE() << "a create after the outage: " << (after ? after->body : "no answer");
        return {};
    }
    created = parse(after->body)["id"].as_string();
    auto list = http_request(s.port(), "GET", "/v1/extensions", "", {key});
    if (!list || list->status != 200) {
        ADD_FAILURE() << "the list after the outage: " << (list ? list->body : "no answer");
        return {};
    }
    std::set<std::string> ids;
    const auto listed = parse(list->body);
    for (const auto& t : listed.at("data").as_array())
        ids.insert(std::string(t.at("id").as_string()));
    return ids;
}

TEST(ApiEdge, ADatabaseOutageIsA503AndNotReadyThenServesAgain) {
    segue::test::temp_dir d;
    segue::test::pg_private_server pg;
    segue_process s = outage_gateway(d, pg);
    const std::string& body = outage_body;
    auto ready = http_request(s.port(), "GET", "/readyz");
    ASSERT_TRUE(ready);
    ASSERT_EQ(ready->status, 200) << ready->body;
    // A task whose webhooks cannot be delivered (nothing listens on port 9): its events wait.
    auto waiting = http_request(s.port(), "POST", "/v1/extensions",
                                R"({"audio_url":"https://cdn.example/a.mp3","extend_after":3,)"
                                R"("webhook_url":"http://127.0.0.1:9/hooks"})",
                                json_key);
    ASSERT_TRUE(waiting);
    ASSERT_EQ(waiting->status, 202) << waiting->body;
    auto oldest_age = [&] {
        auto m = http_request(s.port(), "GET", "/metrics");
        return m ? segue::test::metric_value(m->body,
                                             "segue_webhook_oldest_undelivered_age_seconds")
                 : -1;
    };
    for (int i = 0; i < 100 && oldest_age() <= 0; ++i)
        std::this_thread::sleep_for(50ms);
    ASSERT_GT(oldest_age(), 0);

    pg.stop();
    // The store notices within about a second (its listener's connection breaks).
    ready = readyz_once(s, 503, 15s);
    ASSERT_TRUE(ready);
    ASSERT_EQ(ready->status, 503) << ready->body;
    EXPECT_NE(parse(ready->body)["detail"].as_string().find("database is unreachable"),
              std::string::npos)
        << ready->body;
    auto reachable = [&] {
        auto m = http_request(s.port(), "GET", "/metrics");
        return m ? segue::test::metric_value(m->body, "segue_store_reachable") : -1;
    };
    EXPECT_EQ(reachable(), 0);  // what SegueDatabaseUnreachable watches
    // What waited for delivery waits still: its age grows while the database cannot be read.
    const double age_then = oldest_age();
    std::this_thread::sleep_for(1500ms);
    EXPECT_GE(oldest_age(), age_then + 1.0);
    for (const auto& [method, target] : std::vector<std::pair<std::string, std::string>>{
             {"POST", "/v1/extensions"},
             {"GET", "/v1/extensions"},
             {"GET", "/v1/credits"},
             // The engine's unit, refused by the API as well.
             {"POST", "/v1/extensions/ext_0000000000000000000000/cancel"}}) {
        const auto start = std::chrono::steady_clock::now();
        auto r = http_request(s.port(), method, target, method == "POST" ? body : "", json_key);
        ASSERT_TRUE(r) << target;
        EXPECT_EQ(r->status, 503) << target << ": " << r->body;
        EXPECT_EQ(r->header("content-type").value_or(""), "application/problem+json") << target;
        EXPECT_EQ(parse(r->body)["code"], "unavailable") << r->body;
        EXPECT_TRUE(spread_retry_after(*r)) << target;
        EXPECT_LT(std::chrono::steady_clock::now() - start, 2s) << target << " was held";
    }
    // An upload too (its blob goes to the database: blobs postgres), in /v1's shape and the
    // MusicGPT drop-in's: a 503 to come back later, not a 500 "cannot store the upload".
    const std::string wav = song(d, "wav");
    for (const auto& [target, file_field] : std::vector<std::pair<std::string, std::string>>{
             {"/v1/extensions", "audio_file"}, {"/api/public/v1/extend", "audio_file"}}) {
        const auto upload = segue::test::multipart_body(
            {{file_field, wav, "song.wav", "audio/wav"}, {"extend_after", "1"}}, boundary);
        auto r = http_request(s.port(), "POST", target, upload,
                              {target.starts_with("/v1") ? key : "Authorization: sk-edge",
                               "Content-Type: multipart/form-data; boundary=" + boundary});
        ASSERT_TRUE(r) << target;
        EXPECT_EQ(r->status, 503) << target << ": " << r->body;
        EXPECT_TRUE(spread_retry_after(*r)) << target;
    }

    pg.start();
    std::string created;
    const auto ids = serves_again(s, 20s, created);
    EXPECT_EQ(reachable(), 1);
    // Exactly the one created before the outage and the one after: the refused ones made
    // nothing.
    EXPECT_EQ(
        ids, (std::set<std::string>{std::string(parse(waiting->body)["id"].as_string()), created}));
}

// PostgreSQL stops answering without closing anything (every process SIGSTOPped: a frozen VM,
// a server stuck on its disk): no error, no refusal, answers just never come, so nothing tells
// the gateway the database is gone. A request that arrives then is answered 503 with
// Retry-After within the store's bounds (a connection without an answer for statement_timeout
// + 10 s is given up, a request queued longer than storage.postgres.request_wait is not run),
// not held for the freeze, and it did nothing: after the thaw the list holds the tasks made
// before and after, none of the refused ones.
TEST(ApiEdge, AFrozenDatabaseHoldsNoRequestForTheFreeze) {
    segue::test::temp_dir d;
    segue::test::pg_private_server pg;
    segue_process s = outage_gateway(d, pg, "    statement_timeout: 1s\n    request_wait: 2s\n");
    const std::string& body = outage_body;
    auto before = http_request(s.port(), "POST", "/v1/extensions", body, json_key);
    ASSERT_TRUE(before);
    ASSERT_EQ(before->status, 202) << before->body;

    const auto upload = segue::test::multipart_body(
        {{"audio_file", song(d, "wav"), "song.wav", "audio/wav"}, {"extend_after", "1"}}, boundary);
    const std::vector<std::string> form = {
        key, "Content-Type: multipart/form-data; boundary=" + boundary};
    struct request {
        std::string method;
        std::string body;
        const std::vector<std::string>* headers;
    };
    pg.freeze();
    // Requests in turn, each on a connection of its own that waits up to a minute: the first
    // finds stores that believe their connections work (an upload: its file goes to the blob
    // store first, then a create), the later ones a store that knows.
    for (const auto& [method, req_body, headers] :
         std::vector<request>{{"POST", upload, &form},
                              {"POST", body, &json_key},
                              {"GET", "", &json_key},
                              {"POST", body, &json_key}}) {
        const std::string target = "/v1/extensions";
        const auto start = std::chrono::steady_clock::now();
        http_connection c(s.port(), 60s);
        auto r = c.request(method, target, req_body, *headers);
        const auto took = std::chrono::steady_clock::now() - start;
        ASSERT_TRUE(r) << target << " held for 60 s";
        EXPECT_EQ(r->status, 503) << target << ": " << r->body;
        EXPECT_EQ(parse(r->body)["code"], "unavailable") << r->body;
        EXPECT_TRUE(spread_retry_after(*r)) << target;
        // 11 s for the connection to be given up, 5 s for a connect, then at once.
        EXPECT_LT(took, 25s) << target;
        if (::testing::Test::HasFailure())
            FAIL() << "the gateway's log:\n" << s.log();
    }
    auto ready = http_request(s.port(), "GET", "/readyz");
    ASSERT_TRUE(ready);
    EXPECT_EQ(ready->status, 503) << ready->body;

    pg.thaw();
    std::string created;
    const auto ids = serves_again(s, 30s, created);
    EXPECT_EQ(ids,
              (std::set<std::string>{std::string(parse(before->body)["id"].as_string()), created}));
}

// tenants[].credits is the initial grant, made once: raised in the config later it changes
// nothing, and the start says so (with what was granted and how to top up) instead of leaving
// the operator to find out from a 402. Unchanged, it says nothing.
TEST(ApiEdge, ACreditsSettingChangedAfterTheGrantIsLoggedAtStart) {
    segue::test::temp_dir d;
    const auto config = [&](const std::string& credits) {
        return "server:\n  listen: 127.0.0.1:0\n"
               "tenants:\n  - name: edge\n    api_keys: [sk-edge]\n    credits: " +
               credits + "\n" + segue::test::storage_yaml(d.path());
    };
    const std::string warning = "differs from the initial grant already made";
    const auto balance = [&](const segue_process& s) {
        auto r = http_request(s.port(), "GET", "/v1/credits", "", {key});
        return r && r->status == 200 ? json::serialize(parse(r->body)["balance"]) : "?";
    };
    {
        segue_process s(config("1000"));
        EXPECT_EQ(balance(s), "1000");  // the grant, made by the first credits call
    }
    {
        segue_process s(config("1000"));
        EXPECT_EQ(balance(s), "1000");
        EXPECT_EQ(s.log().find(warning), std::string::npos) << s.log();
    }
    segue_process s(config("5000"));
    const std::string log = s.log_with(warning);
    EXPECT_NE(log.find(warning), std::string::npos) << log;
    EXPECT_NE(log.find(R"("tenant":"edge","configured":"5000","granted":"1000")"),
              std::string::npos)
        << log;
    EXPECT_EQ(balance(s), "1000");
}

// Runs segue (`args` before --config) on `yaml` and expects it to exit 1 within 5 s; its
// output.
std::string gives_up_at_once(const segue::test::temp_dir& d, const std::string& yaml,
                             const std::vector<std::string>& args = {}) {
    const std::string file = d.file("now.yaml");
    { std::ofstream(file) << yaml; }
    std::vector<std::string> argv = {"timeout", "20", segue::test::segue_binary()};
    argv.insert(argv.end(), args.begin(), args.end());
    argv.insert(argv.end(), {"--config", file});
    const auto start = std::chrono::steady_clock::now();
    auto [code, out] = segue::test::run_command(argv);
    EXPECT_EQ(code, 1) << out;
    EXPECT_LT(std::chrono::steady_clock::now() - start, 5s);
    return out;
}

// A request whose unit the database gives up on for its load (here a lock held past
// storage.postgres.statement_timeout on the tenant's account) is a 503 with Retry-After, to come
// back: nothing of it was committed. It was a 500 "unexpected error" (found by a black-box run).
TEST(ApiEdge, ADatabaseTooBusyToAnswerInTimeIs503) {
    segue::test::temp_dir d;
    segue::test::pg_schema schema;
    std::string storage = segue::test::postgres_storage_yaml(schema.url(), d.path() + "/blobs");
    storage.insert(storage.find("  postgres:\n") + 12, "    statement_timeout: 1s\n");
    segue_process s(
        edge_on(storage, "    credits: 1000\n", "providers:\n  sandbox:\n    price: 1\n"));
    auto create = [&] { return create_by_url(s.port()); };
    auto first = create();
    ASSERT_TRUE(first);
    ASSERT_EQ(first->status, 202) << first->body;  // the tenant's account exists
    segue::store::pg::connection holder(schema.url(), 0, "holder");
    holder.exec("BEGIN");
    holder.exec("SELECT tenant FROM ledger_accounts WHERE tenant = 'edge' FOR UPDATE");
    auto busy = create();
    holder.exec("ROLLBACK");
    ASSERT_TRUE(busy);
    EXPECT_EQ(busy->status, 503) << busy->body;
    EXPECT_NE(busy->body.find("\"unavailable\""), std::string::npos) << busy->body;
    EXPECT_TRUE(busy->header("retry-after")) << busy->body;
    auto after = create();
    ASSERT_TRUE(after);
    EXPECT_EQ(after->status, 202) << after->body;
}

// A database out of connection slots (max_connections) is up: a replica whose connections work
// stays ready and serves, although one of its reconnects is refused. Both replicas of a
// black-box run answered every request 503 then, holding 5 and 9 working connections.
TEST(ApiEdge, ADatabaseOutOfConnectionSlotsIsNotOutOfReach) {
    segue::test::temp_dir d;
    ::setenv("SEGUE_PG_OPTIONS", "-c max_connections=30", 1);
    segue::test::pg_private_server pg;
    ::unsetenv("SEGUE_PG_OPTIONS");
    segue_process s(edge_on(segue::test::postgres_storage_yaml(pg.url(), d.path() + "/blobs")));
    auto create = [&] { return create_by_url(s.port()); };
    auto first = create();
    ASSERT_TRUE(first);
    ASSERT_EQ(first->status, 202) << first->body;
    // Every slot left taken, then segue's LISTEN session ended: its reconnect finds no slot.
    std::vector<std::unique_ptr<segue::store::pg::connection>> held;
    auto fill = [&] {
        for (int i = 0; i < 40; ++i) {
            try {
                held.push_back(std::make_unique<segue::store::pg::connection>(pg.url(), 0, "hog"));
            } catch (const std::exception&) {
                return;
            }
        }
    };
    fill();
    ASSERT_FALSE(held.empty());
    // Until segue's listener has been refused a reconnect: its session ended, the slot that
    // freed taken by the test. Segue may win the race for that slot (it did once, in a
    // clean-clone CI run): then its new session is ended again.
    bool refused = false;
    for (int round = 0; round < 5 && !refused; ++round) {
        held.back()->exec(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE query LIKE 'LISTEN%'");
        fill();
        for (int i = 0; i < 100 && !refused; ++i) {  // its reconnects, for up to 5 s
            refused = s.log().find("too many clients") != std::string::npos;
            if (!refused)
                std::this_thread::sleep_for(50ms);
        }
    }
    ASSERT_TRUE(refused) << "no reconnect was refused";
    auto ready = http_request(s.port(), "GET", "/readyz");
    ASSERT_TRUE(ready);
    EXPECT_EQ(ready->status, 200) << ready->body;
    auto during = create();
    ASSERT_TRUE(during);
    EXPECT_EQ(during->status, 202) << during->body;
    held.clear();
}

// A replica that starts while its database is down waits for it (storage.postgres.connect_wait)
// and then serves, instead of exiting into a crash loop; with connect_wait 0s it gives up at once.
TEST(ApiEdge, AReplicaStartedWhileItsDatabaseIsDownWaitsForIt) {
    segue::test::temp_dir d;
    segue::test::pg_private_server pg;
    pg.stop();
    auto config = [&](const std::string& wait) {
        std::string storage = segue::test::postgres_storage_yaml(pg.url(), d.path() + "/blobs");
        storage.insert(storage.find("  postgres:\n") + 12, "    connect_wait: " + wait + "\n");
        return edge_on(storage);
    };
    // Given up at once: exit status 1, saying why.
    const std::string out = gives_up_at_once(d, config("0s"));
    EXPECT_NE(out.find("cannot connect"), std::string::npos) << out;

    // Waiting: the database comes up 3 s after the replica started. (The config is made before:
    // start() sets the server's URL again, on the other thread.)
    const std::string waiting = config("30s");
    std::thread later([&] {
        std::this_thread::sleep_for(3s);
        pg.start();
    });
    std::unique_ptr<segue_process> s;
    try {
        s = std::make_unique<segue_process>(waiting);
    } catch (...) {
        later.join();
        throw;
    }
    later.join();
    EXPECT_NE(s->log().find("waiting for it"), std::string::npos) << s->log();
    auto ready = http_request(s->port(), "GET", "/readyz");
    ASSERT_TRUE(ready);
    EXPECT_EQ(ready->status, 200) << ready->body;
    auto created = create_by_url(s->port());
    ASSERT_TRUE(created);
    EXPECT_EQ(created->status, 202) << created->body;
    // The store's counters on PostgreSQL: its own, and none of SQLite's.
    auto m = http_request(s->port(), "GET", "/metrics");
    ASSERT_TRUE(m);
    EXPECT_GT(segue::test::metric_value(m->body, "segue_store_commits_total"), 0) << m->body;
    EXPECT_GE(segue::test::metric_value(m->body, "segue_store_conflicts_total"), 0);
    EXPECT_GE(segue::test::metric_value(m->body, "segue_store_put_off_total"), 0);
    EXPECT_EQ(segue::test::metric_value(m->body, "segue_store_syncs_total"), -1) << "SQLite's only";
    auto [code, checked] = segue::test::run_command({"promtool", "check", "metrics"}, m->body);
    EXPECT_EQ(code, 0) << checked;
}

// SQLite serves one process: a second segue on the same database (another port, the same
// files) is refused, naming the one that has it, instead of running a second engine on it; with
// a wait it starts once the first has exited (a restart while the old process drains).
TEST(ApiEdge, ASecondProcessOnTheSameSqliteDatabaseWaitsForTheFirstOrIsRefused) {
    segue::test::temp_dir d;
    auto config = [&](const std::string& wait) {
        return "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n  drain_timeout: 2s\n"
               "log:\n  level: info\n"
               "tenants:\n  - name: edge\n    api_keys: [sk-edge]\n"
               "storage:\n  blob_dir: " +
               d.path() + "/blobs\n  sqlite_path: " + d.path() +
               "/segue.db\n  sqlite_lock_wait: " + wait + "\n";
    };
    auto first = std::make_unique<segue_process>(config("0s"));
    const pid_t first_pid = first->proc().pid();

    const std::string out = gives_up_at_once(d, config("0s"));
    EXPECT_NE(out.find("in use by another segue process (pid " + std::to_string(first_pid) + ")"),
              std::string::npos)
        << out;
    // `segue migrate` is refused the same way while the server has the database.
    const std::string mout = gives_up_at_once(d, config("0s"), {"migrate"});
    EXPECT_NE(mout.find("in use by another segue process"), std::string::npos) << mout;
    // The first one is untouched.
    auto ready = http_request(first->port(), "GET", "/readyz");
    ASSERT_TRUE(ready);
    EXPECT_EQ(ready->status, 200) << ready->body;

    // Waiting: the first is stopped 2 s after the second started.
    std::thread later([&] {
        std::this_thread::sleep_for(2s);
        first->proc().signal(SIGTERM);
    });
    std::unique_ptr<segue_process> second;
    try {
        second = std::make_unique<segue_process>(config("30s"));
    } catch (...) {
        later.join();
        throw;
    }
    later.join();
    EXPECT_EQ(first->proc().wait(10s), 0);
    EXPECT_NE(second->log().find("in use by another process; waiting"), std::string::npos)
        << second->log();
    auto created = http_request(second->port(), "POST", "/v1/extensions",
                                R"({"audio_url":"https://cdn.example/a.mp3","extend_after":3})",
                                {key, "Content-Type: application/json"});
    ASSERT_TRUE(created);
    EXPECT_EQ(created->status, 202) << created->body;
}

TEST(ApiEdge, UploadsAreServedWithTheirProbedContentType) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    const std::vector<std::pair<std::string, std::string>> formats{
        {"mp3", "audio/mpeg"}, {"wav", "audio/wav"}, {"flac", "audio/flac"}, {"ogg", "audio/ogg"}};
    for (const auto& [format, type] : formats) {
        const std::string bytes = song(d, format);
        // The client's own part type is not trusted: the probe decides.
        auto r =
            post_form(s.port(), {{"audio_file", bytes, "upload.bin", "application/octet-stream"},
                                 {"extend_after", "1"},
                                 {"num_outputs", "1"}});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 202) << format << ": " << r->body;
        auto t = parse(r->body);
        const std::string file_id(t["request"].at("source").at("file_id").as_string());
        auto f = http_request(s.port(), "GET", "/v1/files/" + file_id, "", {key});
        ASSERT_TRUE(f);
        ASSERT_EQ(f->status, 200) << format;
        EXPECT_EQ(f->header("content-type").value_or(""), type) << format;
        EXPECT_EQ(f->body, bytes) << format;
    }
    // A long name is cut before its extension, not through it.
    const std::string long_name = std::string(120, 'a') + ".wav";
    auto r = post_form(s.port(), {{"audio_file", song(d, "wav"), long_name, "audio/wav"},
                                  {"extend_after", "1"},
                                  {"num_outputs", "1"}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    const std::string file_id(parse(r->body)["request"].at("source").at("file_id").as_string());
    auto f = http_request(s.port(), "GET", "/v1/files/" + file_id, "", {key});
    ASSERT_TRUE(f);
    EXPECT_EQ(f->header("content-disposition").value_or(""),
              "inline; filename=\"" + std::string(80, 'a') + ".wav\"");
}

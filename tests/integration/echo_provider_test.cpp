// A provider is one folder: the echo provider (tests/providers/echo, nothing under gateway/
// changed for it) is added to segue's provider kinds by a test build of the binary (segue_echo)
// and then configured (with its own bounded block), documented, priced, routed and run end to
// end through the real command line, config loader, HTTP API, engine and ledger.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <chrono>
#include <string>
#include <thread>

#include "gateway/audio/audio.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
using segue::test::http_request;
using segue::test::run_command;

namespace {

const std::string echo_binary = SEGUE_ECHO_PATH;
const std::string key = "Authorization: Bearer sk-echo";
const std::string boundary = "segue-echo-boundary";

double num(const json::value& v) {
    return v.is_double() ? v.as_double() : static_cast<double>(v.as_int64());
}

json::object get_json(std::uint16_t port, const std::string& target) {
    auto r = http_request(port, "GET", target, "", {key});
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
    return r && r->status == 200 ? json::parse(r->body).as_object() : json::object{};
}

TEST(EchoProvider, ItsBlockIsCheckedAndDocumentedWithItsOwnBounds) {
    segue::test::temp_dir d;
    const auto cfg = d.write("bad.yaml", "providers:\n  echo:\n    speed: 11\n");
    auto [code, out] = run_command({echo_binary, "--config", cfg, "--check-config"});
    EXPECT_EQ(code, 1) << out;
    EXPECT_NE(out.find("providers.echo.speed: 11 is above the maximum 10"), std::string::npos)
        << out;

    // The shipped binary does not know it, and says which providers it knows.
    auto [code2, out2] =
        run_command({segue::test::segue_binary(), "--config", cfg, "--check-config"});
    EXPECT_EQ(code2, 1) << out2;
    EXPECT_NE(out2.find("providers.echo: unknown provider; known providers: sandbox, musicgpt, "
                        "musicapi"),
              std::string::npos)
        << out2;

    auto [code3, docs] = run_command({echo_binary, "--config-docs"});
    EXPECT_EQ(code3, 0);
    EXPECT_NE(docs.find("| `providers.echo.speed` | integer | `1` | `1` .. `10` |"),
              std::string::npos)
        << docs;
    EXPECT_NE(docs.find("| `providers.echo.price` | number | `7` |"), std::string::npos);

    const auto good =
        d.write("good.yaml", "providers:\n  echo:\n    enabled: true\n    speed: 3\n");
    auto [code4, effective] = run_command({echo_binary, "--config", good, "--check-config"});
    EXPECT_EQ(code4, 0) << effective;
    EXPECT_NE(effective.find("  echo:\n    enabled: true\n    speed: 3\n    price: 7\n"),
              std::string::npos)
        << effective;
}

TEST(EchoProvider, ConfiguredPricedRoutedAndRunEndToEnd) {
    segue::test::segue_process gw(
        "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n"
        "tenants:\n  - name: e\n    api_keys: [sk-echo]\n    credits: 100\n"
        "engine:\n  poll_interval: 100ms\n  lease: 2s\n"
        "providers:\n  echo:\n    enabled: true\n    speed: 3\n    price: 7.5\n"
        "routing:\n  routes:\n    echoes:\n      chain: [{provider: echo}]\n",
        {}, echo_binary);

    // Listed with its own price and capabilities (it neither polls nor takes webhooks).
    auto providers = get_json(gw.port(), "/v1/providers");
    bool listed = false;
    for (auto& pv : providers["data"].as_array()) {
        auto& p = pv.as_object();
        if (p["name"] != "echo")
            continue;
        listed = true;
        EXPECT_EQ(num(p["price_per_output"]), 7.5) << json::serialize(p);
        EXPECT_EQ(p["capabilities"].at("polling"), false) << json::serialize(p);
        EXPECT_EQ(p["capabilities"].at("webhooks"), false) << json::serialize(p);
        EXPECT_EQ(json::serialize(p["capabilities"].at("sources")), R"(["file"])");
    }
    EXPECT_TRUE(listed) << json::serialize(providers);

    segue::test::temp_dir d;
    const std::string song = d.file("in.wav");
    ASSERT_TRUE(segue::audio::write_test_song(song, 4, 44100, 2, 120, "wav"));
    const std::string bytes = segue::test::read_file(song);
    auto r = http_request(gw.port(), "POST", "/v1/extensions",
                          segue::test::multipart_body({{"audio_file", bytes, "in.wav", "audio/wav"},
                                                       {"extend_after", "2"},
                                                       {"num_outputs", "2"},
                                                       {"route", "echoes"}},
                                                      boundary),
                          {key, "Content-Type: multipart/form-data; boundary=" + boundary});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    const std::string id(json::parse(r->body).as_object()["id"].as_string());

    json::object t;
    for (int i = 0; i < 100; ++i) {
        t = get_json(gw.port(), "/v1/extensions/" + id);
        if (t["status"] == "succeeded" || t["status"] == "failed")
            break;
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t) << gw.log();
    EXPECT_EQ(t["provider"], "echo");
    auto& outputs = t["outputs"].as_array();
    ASSERT_EQ(outputs.size(), 2u);
    for (auto& ov : outputs) {
        auto& o = ov.as_object();
        EXPECT_EQ(o["status"], "ready");
        EXPECT_EQ(o["title"], "echo x3");  // its own setting reached it
    }
    // The echoed audio is served back byte for byte.
    const std::string url(outputs[0].as_object()["audio"].at("mp3_url").as_string());
    auto file = http_request(gw.port(), "GET", url.substr(url.find("/v1/files/")), "", {key});
    ASSERT_TRUE(file);
    EXPECT_EQ(file->status, 200);
    EXPECT_EQ(file->body, bytes);

    // Priced by its own block: 2 outputs at 7.5 held, then captured.
    auto c = get_json(gw.port(), "/v1/credits");
    EXPECT_EQ(num(c["captured"]), 15) << json::serialize(c);
    EXPECT_EQ(num(c["held"]), 0);
    EXPECT_EQ(num(c["balance"]), 85);
}

}  // namespace

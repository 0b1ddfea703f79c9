// GET /openapi.json is the committed document; and answers no other integration test asks for
// (401s, byte ranges, a delivery, the admin API's refusals), so that contract.validate checks
// them against docs/openapi.json too.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <string>
#include <vector>

#include "gateway/audio/audio.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

namespace json = boost::json;
using segue::test::http_request;

namespace {

const std::string key = "Authorization: Bearer sk-contract";
const std::string admin = "Authorization: Bearer admin-contract";

}  // namespace

TEST(OpenApiServed, IsTheCommittedDocument) {
    segue::test::segue_process s("server:\n  listen: 127.0.0.1:0\n  io_threads: 1\n");
    auto r = http_request(s.port(), "GET", "/openapi.json");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("content-type").value_or(""), "application/json");
    EXPECT_EQ(r->body,
              segue::test::read_file(std::string(SEGUE_SOURCE_DIR) + "/docs/openapi.json"));
}

TEST(OpenApiServed, AnswersTheOtherTestsDoNotAsk) {
    segue::test::temp_dir d;
    segue::test::segue_process s(
        "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n"
        "tenants:\n  - name: c\n    api_keys: [sk-contract]\n    credits: 100\n"
        "    webhook_secrets: [\"whsec_MfKQ9r8GKYqrTwjUPD8ILPZIo2LaLaSw\"]\n"
        "credits:\n  admin_key: admin-contract\n" +
        segue::test::storage_yaml(d.path()) +
        "providers:\n  sandbox:\n    delay: 50ms\n"
        "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"
        "webhooks:\n  retry_schedule: [30s]\n  timeout: 1s\n");
    const auto port = s.port();

    // Every tenant endpoint refuses a request without a key.
    for (const auto& [method, target] : std::vector<std::pair<std::string, std::string>>{
             {"GET", "/v1/extensions/ext_x"},
             {"GET", "/v1/extensions/ext_x/events"},
             {"POST", "/v1/extensions/ext_x/cancel"},
             {"GET", "/v1/files/file_x"},
             {"GET", "/v1/providers"},
             {"GET", "/v1/deliveries"},
             {"GET", "/v1/deliveries/dlv_x"},
             {"POST", "/v1/deliveries/dlv_x/redeliver"},
             {"GET", "/v1/credits"}}) {
        auto r = http_request(port, method, target);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 401) << method << " " << target;
    }

    // A task whose webhook cannot be delivered (nothing listens on port 9): a pending delivery.
    const std::string song = d.file("in.wav");
    ASSERT_TRUE(segue::audio::write_test_song(song, 3.0, 22050, 1, 120, "wav"));
    const std::string boundary = "contract-boundary";
    auto created =
        http_request(port, "POST", "/v1/extensions",
                     segue::test::multipart_body(
                         {{"audio_file", segue::test::read_file(song), "in.wav", "audio/wav"},
                          {"extend_after", "1"},
                          {"length", "1"},
                          {"webhook_url", "http://127.0.0.1:9/hook"}},
                         boundary),
                     {key, "Content-Type: multipart/form-data; boundary=" + boundary});
    ASSERT_TRUE(created);
    ASSERT_EQ(created->status, 202) << created->body;
    const auto task = json::parse(created->body).as_object();
    const std::string task_id(task.at("id").as_string());
    const std::string file_id(task.at("request").at("source").at("file_id").as_string());

    // The upload, a byte range of it and a range past its end.
    auto part = http_request(port, "GET", "/v1/files/" + file_id, "", {key, "Range: bytes=0-9"});
    ASSERT_TRUE(part);
    EXPECT_EQ(part->status, 206);
    EXPECT_EQ(part->body.size(), 10u);
    auto past =
        http_request(port, "GET", "/v1/files/" + file_id, "", {key, "Range: bytes=999999999-"});
    ASSERT_TRUE(past);
    EXPECT_EQ(past->status, 416);

    auto list = http_request(port, "GET", "/v1/deliveries?task_id=" + task_id, "", {key});
    ASSERT_TRUE(list);
    ASSERT_EQ(list->status, 200);
    const auto deliveries = json::parse(list->body).at("data").as_array();
    ASSERT_FALSE(deliveries.empty()) << list->body;
    const std::string delivery(deliveries.front().at("id").as_string());
    auto one = http_request(port, "GET", "/v1/deliveries/" + delivery, "", {key});
    ASSERT_TRUE(one);
    EXPECT_EQ(one->status, 200);
    auto again = http_request(port, "POST", "/v1/deliveries/" + delivery + "/redeliver", "", {key});
    ASSERT_TRUE(again);
    EXPECT_EQ(again->status, 409) << again->body;  // still pending: its retry is 30 s away

    // The admin API: not JSON, invalid fields, and an Idempotency-Key reused for another amount.
    auto topup = [&](const std::string& body, const std::string& idem) {
        std::vector<std::string> h{admin, "Content-Type: application/json"};
        if (!idem.empty())
            h.push_back("Idempotency-Key: " + idem);
        auto r = http_request(port, "POST", "/v1/admin/credits", body, h);
        return r ? r->status : 0;
    };
    EXPECT_EQ(topup("{", ""), 400);
    EXPECT_EQ(topup(R"({"tenant":"nobody","amount":-1,"extra":1})", ""), 422);
    EXPECT_EQ(topup(R"({"tenant":"c","amount":1})", "k1"), 201);
    EXPECT_EQ(topup(R"({"tenant":"c","amount":2})", "k1"), 409);
}

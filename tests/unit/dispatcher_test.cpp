// The pure parts of webhook delivery: the retry schedule and the delivered body.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "gateway/config/settings.hpp"
#include "gateway/events/dispatcher.hpp"
#include "gateway/store/store.hpp"

using namespace std::chrono_literals;
using segue::events::retry_delay_ms;

TEST(DeliveryRetry, FollowsTheStandardWebhooksScheduleWithinJitter) {
    segue::config::webhooks_settings w;  // 5s, 5m, 30m, 2h, 5h, 10h, 10h; jitter 0.1
    const std::int64_t base[] = {5000, 300000, 1800000, 7200000, 18000000, 36000000, 36000000};
    for (int attempt = 1; attempt <= 7; ++attempt) {
        const auto b = base[attempt - 1];
        EXPECT_EQ(retry_delay_ms(w, attempt, 0.5), b) << attempt;  // the middle of the range
        auto lo = retry_delay_ms(w, attempt, 0.0);
        auto hi = retry_delay_ms(w, attempt, 0.999999);
        ASSERT_TRUE(lo && hi);
        EXPECT_EQ(*lo, b - b / 10);
        EXPECT_NEAR(static_cast<double>(*hi), b + b / 10.0, 1.0 + b * 1e-5);
    }
    EXPECT_FALSE(retry_delay_ms(w, 8, 0.5));  // exhausted: dead
    EXPECT_FALSE(retry_delay_ms(w, 0, 0.5));
}

TEST(DeliveryRetry, RetryAfterOnlyLengthensAndIsCapped) {
    segue::config::webhooks_settings w;
    w.jitter = 0;
    w.max_retry_after = 1h;
    EXPECT_EQ(retry_delay_ms(w, 1, 0.5, 60'000), 60'000);         // longer than 5 s: honoured
    EXPECT_EQ(retry_delay_ms(w, 2, 0.5, 60'000), 300'000);        // shorter than 5 min: ignored
    EXPECT_EQ(retry_delay_ms(w, 1, 0.5, 86'400'000), 3'600'000);  // a day: capped at 1 h
    w.retry_schedule = {};
    EXPECT_FALSE(retry_delay_ms(w, 1, 0.5, 1000));  // no retries at all
}

TEST(DeliveryBody, IsTypeTimestampAndDataWithEventIdAndSeq) {
    segue::store::delivery_row d;
    d.event_id = "evt_1";
    d.seq = 3;
    d.event_type = "extension.output.ready";
    d.event_at = 1614265330123;
    d.event_data_json = R"({"task_id":"ext_1","index":1})";
    auto v = boost::json::parse(segue::events::delivery_body(d)).as_object();
    EXPECT_EQ(v.size(), 3u);
    EXPECT_EQ(v["type"].as_string(), "extension.output.ready");
    EXPECT_EQ(v["timestamp"].as_string(), "2021-02-25T15:02:10.123Z");
    auto& data = v["data"].as_object();
    EXPECT_EQ(data["task_id"].as_string(), "ext_1");
    EXPECT_EQ(data["index"].as_int64(), 1);
    EXPECT_EQ(data["event_id"].as_string(), "evt_1");
    EXPECT_EQ(data["seq"].as_int64(), 3);
}

// Webhook bodies re-serialize the event's data: numbers stay plain decimals (2.5, not 2.5E0),
// exactly as the task, the event log and SSE show them.
TEST(DeliveryBody, NumbersArePlainDecimals) {
    segue::store::delivery_row d;
    d.event_id = "evt_2";
    d.seq = 4;
    d.event_type = "extension.output.ready";
    d.event_at = 1614265330123;
    d.event_data_json = R"({"output":{"audio":{"duration":2.5}},"amount":0.125,"n":50})";
    const auto body = segue::events::delivery_body(d);
    EXPECT_NE(body.find("\"duration\":2.5"), std::string::npos) << body;
    EXPECT_NE(body.find("\"amount\":0.125"), std::string::npos) << body;
    EXPECT_NE(body.find("\"n\":50"), std::string::npos) << body;
    EXPECT_EQ(body.find('E'), std::string::npos) << body;
}

// Pieces under the web console: the event hub's any-task subscription (the live task list) and
// the providers' recent outcome counts.

#include <gtest/gtest.h>

#include <atomic>

#include "gateway/core/recent_outcomes.hpp"
#include "gateway/events/event_hub.hpp"

using segue::core::recent_outcomes;
using segue::events::event_hub;

TEST(EventHub, AnyTaskSubscribersWakeForEveryTasksEvents) {
    event_hub hub;
    std::atomic<int> one{0};
    std::atomic<int> any{0};
    auto s1 = hub.subscribe("ext_1", [&] { ++one; });
    {
        auto s2 = hub.subscribe(std::string(event_hub::any_task), [&] { ++any; });
        hub.publish({"ext_1"});
        hub.publish({"ext_2", "ext_3"});  // one wake per commit, however many tasks
        hub.publish({});                  // nothing committed for any task: no wake
        EXPECT_EQ(one, 1);
        EXPECT_EQ(any, 2);
        hub.publish_all();
        EXPECT_EQ(one, 2);
        EXPECT_EQ(any, 3);
    }
    hub.publish({"ext_2"});
    EXPECT_EQ(any, 3);  // gone with its subscription
    EXPECT_EQ(hub.waiters(), 1u);
}

TEST(RecentOutcomes, CountsByMinuteOverTheLastHour) {
    recent_outcomes r;
    const std::int64_t t0 = 1'000 * 60'000;  // the start of a minute
    EXPECT_EQ(r.over(5, t0).requests, 0);
    r.record(true, t0);
    r.record(false, t0 + 59'999);
    r.record(false, t0 + 3 * 60'000);
    auto now = t0 + 4 * 60'000;
    EXPECT_EQ(r.over(5, now).requests, 3);
    EXPECT_EQ(r.over(5, now).failures, 2);
    EXPECT_EQ(r.over(2, now).requests, 1);  // minutes 3 and 4 only
    // Five minutes on, the 5-minute view has forgotten the first minute; the hour has not.
    now = t0 + 5 * 60'000;
    EXPECT_EQ(r.over(5, now).requests, 1);
    EXPECT_EQ(r.over(60, now).requests, 3);
    // An hour on, a new result reuses the old minute's slot and nothing older is counted.
    now = t0 + 60 * 60'000;
    EXPECT_EQ(r.over(60, now).requests, 1);  // minute 3 is still inside the hour
    r.record(true, now);
    EXPECT_EQ(r.over(60, now).requests, 2);
    EXPECT_EQ(r.over(60, now).failures, 1);
    EXPECT_EQ(r.over(1, now).failures, 0);
    // Spans outside 1..60 are clamped.
    EXPECT_EQ(r.over(0, now).requests, 1);
    EXPECT_EQ(r.over(1000, now).requests, 2);
}

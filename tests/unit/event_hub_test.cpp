// The event hub's fan-out: one read per task per commit for any number of followers, batches in
// order and each event once, joins that race a read, leaving during a read.

#include <gtest/gtest.h>

#include <deque>
#include <map>
#include <string>
#include <vector>

#include "gateway/events/event_hub.hpp"

namespace {

using segue::events::batch_ptr;
using segue::events::event_batch;
using segue::events::event_hub;

// A task log the test appends to, and a reader whose reads complete when the test says so.
struct fake_log {
    std::map<std::string, std::vector<std::int64_t>> events;  // task -> seqs
    std::map<std::string, bool> final;
    struct pending {
        std::string task;
        std::int64_t after;
        int limit;
        std::function<void(event_batch)> done;
    };
    std::deque<pending> reads;

    event_hub::reader reader() {
        return [this](const std::string& task, std::int64_t after, int limit,
                      std::function<void(event_batch)> done) {
            reads.push_back({task, after, limit, std::move(done)});
        };
    }
    void append(const std::string& task, int n = 1) {
        auto& v = events[task];
        for (int i = 0; i < n; ++i)
            v.push_back(v.empty() ? 1 : v.back() + 1);
    }
    // Completes the oldest read against the log as it is now.
    void complete_one() {
        ASSERT_FALSE(reads.empty());
        auto p = std::move(reads.front());
        reads.pop_front();
        event_batch b;
        auto it = events.find(p.task);
        if (it == events.end()) {
            b.found = false;
            p.done(std::move(b));
            return;
        }
        for (auto s : it->second)
            if (s > p.after && static_cast<int>(b.frames.size()) <= p.limit)
                b.frames.emplace_back(s, "id: " + std::to_string(s) + "\n\n");
        b.more = static_cast<int>(b.frames.size()) > p.limit;
        if (b.more)
            b.frames.pop_back();
        b.to = b.frames.empty() ? p.after : b.frames.back().first;
        b.final = !b.more && final[p.task];
        p.done(std::move(b));
    }
    void complete_all() {
        while (!reads.empty())
            complete_one();
    }
};

// What one follower received, and the sequence numbers it would write (as the SSE handler does:
// frames past what it has, a batch starting past it is a gap).
struct follower {
    std::vector<batch_ptr> batches;
    std::int64_t after = 0;
    std::vector<std::int64_t> written;
    bool gap = false;
    event_hub::sink sink() {
        return [this](batch_ptr b) { batches.push_back(std::move(b)); };
    }
    void consume() {
        for (const auto& b : batches) {
            if (b->from > after)
                gap = true;
            for (const auto& [seq, text] : b->frames)
                if (seq > after) {
                    written.push_back(seq);
                    after = seq;
                }
        }
        batches.clear();
    }
};

std::vector<std::int64_t> range(std::int64_t from, std::int64_t to) {
    std::vector<std::int64_t> v;
    for (auto i = from; i <= to; ++i)
        v.push_back(i);
    return v;
}

TEST(EventHub, ManyFollowersOfATaskCostOneReadPerCommit) {
    fake_log log;
    event_hub hub;
    hub.set_reader(log.reader());
    log.append("t", 2);
    std::vector<follower> f(50);
    std::vector<std::unique_ptr<event_hub::subscription>> subs;
    for (auto& x : f) {
        x.after = 2;
        subs.push_back(hub.subscribe("t", 2, x.sink()));
    }
    // The first subscriber's join reads once (the window before it joined); the rest share it.
    EXPECT_EQ(hub.reads(), 1u);
    log.complete_all();
    EXPECT_EQ(hub.channels(), 1u);
    EXPECT_EQ(hub.subscribers(), 50u);

    log.append("t", 3);
    hub.publish({"t"});
    EXPECT_EQ(hub.reads(), 2u);
    log.complete_all();
    for (auto& x : f) {
        ASSERT_EQ(x.batches.size(), 1u);
        EXPECT_EQ(x.batches[0], f[0].batches[0]) << "one batch, shared";
        x.consume();
        EXPECT_EQ(x.written, range(3, 5));
    }
    // A commit of another task reads nothing; nobody follows it.
    hub.publish({"other"});
    EXPECT_EQ(hub.reads(), 2u);
    EXPECT_TRUE(log.reads.empty());
}

TEST(EventHub, CommitsDuringAReadAreReadOnceMoreInOrder) {
    fake_log log;
    event_hub hub;
    hub.set_reader(log.reader());
    log.events["t"];
    follower a;
    auto sub = hub.subscribe("t", 0, a.sink());
    log.complete_all();
    EXPECT_TRUE(a.batches.empty());
    log.append("t");
    hub.publish({"t"});
    // Three more commits while the read is in flight: one read more, not three.
    log.append("t");
    hub.publish({"t"});
    log.append("t");
    hub.publish({"t"});
    log.append("t");
    hub.publish({"t"});
    EXPECT_EQ(log.reads.size(), 1u);
    log.complete_one();  // sees all four (the log as it is now)
    EXPECT_EQ(log.reads.size(), 1u) << "the notices during the read ask for one more";
    log.complete_all();
    a.consume();
    EXPECT_EQ(a.written, range(1, 4));
    EXPECT_FALSE(a.gap);
}

TEST(EventHub, LongBacklogIsReadPageByPage) {
    fake_log log;
    event_hub hub(10);
    hub.set_reader(log.reader());
    log.append("t", 35);
    follower a;
    auto sub = hub.subscribe("t", 0, a.sink());
    log.complete_all();
    EXPECT_EQ(hub.reads(), 4u);  // 10 + 10 + 10 + 5
    a.consume();
    EXPECT_EQ(a.written, range(1, 35));
}

TEST(EventHub, AFollowerJoiningBehindItsChannelIsToldToCatchUp) {
    fake_log log;
    event_hub hub;
    hub.set_reader(log.reader());
    follower a;
    auto sa = hub.subscribe("t", 0, a.sink());
    EXPECT_EQ(sa->behind_until(), 0);
    log.append("t", 3);
    log.complete_all();  // the join read sees 1..3
    // b read the log before those commits (it stands at 0): the channel is past it.
    follower b;
    auto sb = hub.subscribe("t", 0, b.sink());
    EXPECT_EQ(sb->behind_until(), 3);
    // c stands where the channel does: nothing to catch up.
    follower c;
    c.after = 3;
    auto sc = hub.subscribe("t", 3, c.sink());
    EXPECT_EQ(sc->behind_until(), 0);
    EXPECT_TRUE(log.reads.empty()) << "joining an existing channel reads nothing";
}

TEST(EventHub, FinalAndMissingTasksAreDeliveredEvenWithoutEvents) {
    fake_log log;
    event_hub hub;
    hub.set_reader(log.reader());
    log.append("t", 2);
    follower a;
    a.after = 2;
    auto sub = hub.subscribe("t", 2, a.sink());
    log.complete_all();
    EXPECT_TRUE(a.batches.empty()) << "nothing new: nothing delivered";
    log.final["t"] = true;  // e.g. a final state whose event another commit already carried
    hub.publish({"t"});
    log.complete_all();
    ASSERT_EQ(a.batches.size(), 1u);
    EXPECT_TRUE(a.batches[0]->final);

    follower g;
    auto sg = hub.subscribe("gone", 0, g.sink());
    log.complete_all();
    ASSERT_EQ(g.batches.size(), 1u);
    EXPECT_FALSE(g.batches[0]->found);
}

TEST(EventHub, LeavingStopsDeliveryAndDropsTheChannel) {
    fake_log log;
    event_hub hub;
    hub.set_reader(log.reader());
    log.events["t"];  // the task exists, without events yet
    follower a;
    follower b;
    auto sa = hub.subscribe("t", 0, a.sink());
    auto sb = hub.subscribe("t", 0, b.sink());
    log.complete_all();
    log.append("t");
    hub.publish({"t"});
    sa.reset();  // a leaves while the read is in flight
    log.complete_all();
    EXPECT_TRUE(a.batches.empty());
    EXPECT_EQ(b.batches.size(), 1u);
    EXPECT_EQ(hub.subscribers(), 1u);
    log.append("t");
    hub.publish({"t"});
    sb.reset();  // the last one leaves mid-read: the channel goes, its read delivers nothing
    EXPECT_EQ(hub.channels(), 0u);
    log.complete_all();
    EXPECT_EQ(b.batches.size(), 1u);
    hub.publish({"t"});
    EXPECT_TRUE(log.reads.empty());
}

TEST(EventHub, AFailedReadTellsFollowersToReadThemselves) {
    event_hub hub;
    std::function<void(event_batch)> pending;
    hub.set_reader([&](const std::string&, std::int64_t, int, std::function<void(event_batch)> d) {
        pending = std::move(d);
    });
    follower a;
    auto sub = hub.subscribe("t", 0, a.sink());
    event_batch failed;
    failed.failed = true;
    pending(std::move(failed));
    ASSERT_EQ(a.batches.size(), 1u);
    EXPECT_TRUE(a.batches[0]->failed);
}

TEST(EventHub, PublishAllReadsEveryChannel) {
    fake_log log;
    event_hub hub;
    hub.set_reader(log.reader());
    log.events["t1"];
    log.events["t2"];
    follower a;
    follower b;
    auto sa = hub.subscribe("t1", 0, a.sink());
    auto sb = hub.subscribe("t2", 0, b.sink());
    log.complete_all();
    log.append("t1");
    log.append("t2");
    hub.publish_all();
    EXPECT_EQ(log.reads.size(), 2u);
    log.complete_all();
    a.consume();
    b.consume();
    EXPECT_EQ(a.written, range(1, 1));
    EXPECT_EQ(b.written, range(1, 1));
}

}  // namespace

// Routing: chain order, weighted first pick (exact proportions over evenly spaced draws),
// capability skipping for each capability, clip and provider pins, unknown providers, duplicate
// entries, empty chains and the messages of empty plans.

#include <gtest/gtest.h>

#include <cmath>
#include <limits>
#include <map>
#include <string>
#include <vector>

#include "gateway/core/routing.hpp"
#include "providers/provider.hpp"

namespace core = segue::core;
using core::route;
using core::routing_request;
using core::source_kind;
using segue::providers::capabilities;
using plan = std::vector<std::string>;

namespace {

capabilities caps_of(bool file, bool url, bool clip, bool length, int max_outputs) {
    capabilities c;
    c.source_file = file;
    c.source_url = url;
    c.source_clip = clip;
    c.length = length;
    c.max_outputs = max_outputs;
    return c;
}

struct fixture {
    std::map<std::string, capabilities, std::less<>> known{
        {"all", caps_of(true, true, true, true, 2)},
        {"fileonly", caps_of(true, false, false, true, 2)},
        {"urlonly", caps_of(false, true, false, true, 2)},
        {"nolength", caps_of(true, true, true, false, 2)},
        {"single", caps_of(true, true, true, true, 1)},
        {"clipper", caps_of(false, false, true, true, 2)},
        {"all2", caps_of(true, true, true, true, 2)},
        {"all3", caps_of(true, true, true, true, 2)},
    };
    core::capability_lookup lookup() const {
        return [this](std::string_view name) -> const capabilities* {
            auto it = known.find(name);
            return it == known.end() ? nullptr : &it->second;
        };
    }
};

route make_route(std::string name, std::vector<std::pair<std::string, double>> entries) {
    route r;
    r.name = std::move(name);
    for (auto& [p, w] : entries)
        r.chain.push_back(core::route_entry{p, w});
    return r;
}

routing_request req(source_kind s = source_kind::file, int outputs = 1, bool length = false) {
    routing_request r;
    r.source = s;
    r.num_outputs = outputs;
    r.wants_length = length;
    return r;
}

plan run(const fixture& f, const route& r, const routing_request& q, double u = 0.0,
         std::string* why = nullptr) {
    return core::plan_route(r, q, f.lookup(), u, why);
}

}  // namespace

TEST(Routing, UnweightedChainKeepsOrder) {
    fixture f;
    std::string why = "stale";
    EXPECT_EQ(run(f, make_route("r", {{"all", 0}, {"all2", 0}, {"all3", 0}}), req(), 0.7, &why),
              (plan{"all", "all2", "all3"}));
    EXPECT_TRUE(why.empty());  // cleared on success
    EXPECT_EQ(run(f, make_route("r", {{"all3", 0}, {"all", 0}, {"all2", 0}}), req()),
              (plan{"all3", "all", "all2"}));
}

TEST(Routing, WeightedFirstPickThenChainOrder) {
    fixture f;
    const auto r = make_route("r", {{"all", 1}, {"all2", 3}, {"all3", 0}});
    EXPECT_EQ(run(f, r, req(), 0.0), (plan{"all", "all2", "all3"}));
    EXPECT_EQ(run(f, r, req(), 0.2499), (plan{"all", "all2", "all3"}));
    EXPECT_EQ(run(f, r, req(), 0.25), (plan{"all2", "all", "all3"}));
    EXPECT_EQ(run(f, r, req(), 0.99), (plan{"all2", "all", "all3"}));
    // Out-of-range draws are clamped; NaN reads as 0.
    EXPECT_EQ(run(f, r, req(), 1.0), (plan{"all2", "all", "all3"}));
    EXPECT_EQ(run(f, r, req(), 7.0), (plan{"all2", "all", "all3"}));
    EXPECT_EQ(run(f, r, req(), -3.0), (plan{"all", "all2", "all3"}));
    EXPECT_EQ(run(f, r, req(), std::nan("")), (plan{"all", "all2", "all3"}));
}

TEST(Routing, WeightsGiveExactProportionsOverEvenDraws) {
    fixture f;
    struct tcase {
        std::vector<std::pair<std::string, double>> entries;
        std::map<std::string, int> expected;  // first picks per 100 draws
    };
    const std::vector<tcase> cases = {
        {{{"all", 1}, {"all2", 3}}, {{"all", 25}, {"all2", 75}}},
        {{{"all", 2}, {"all2", 3}, {"all3", 5}}, {{"all", 20}, {"all2", 30}, {"all3", 50}}},
        {{{"all", 0.5}, {"all2", 0.5}}, {{"all", 50}, {"all2", 50}}},
        // Entries without weight are never first while a weighted one exists.
        {{{"all", 0}, {"all2", 1}, {"all3", 0}}, {{"all2", 100}}},
        // Negative, NaN and infinite weights are "no weight".
        {{{"all", -4}, {"all2", std::nan("")}, {"all3", 9}}, {{"all3", 100}}},
        {{{"all", std::numeric_limits<double>::infinity()}, {"all2", 1}}, {{"all2", 100}}},
    };
    for (const auto& c : cases) {
        const auto r = make_route("r", c.entries);
        std::map<std::string, int> firsts;
        for (int i = 0; i < 100; ++i) {
            const plan p = run(f, r, req(), i / 100.0);
            ASSERT_EQ(p.size(), c.entries.size());
            ++firsts[p.front()];
            // The rest is the chain order without the first.
            plan rest;
            for (const auto& e : c.entries)
                if (e.first != p.front())
                    rest.push_back(e.first);
            EXPECT_EQ(plan(p.begin() + 1, p.end()), rest);
        }
        EXPECT_EQ(firsts, c.expected);
    }
}

TEST(Routing, WeightsAmongCapableOnly) {
    fixture f;
    // "urlonly" has most of the weight but cannot take a file: "all" always goes first.
    const auto r = make_route("r", {{"urlonly", 9}, {"all", 1}, {"all2", 0}});
    for (int i = 0; i < 100; ++i)
        EXPECT_EQ(run(f, r, req(source_kind::file), i / 100.0), (plan{"all", "all2"}));
    // No capable weighted entry: the first capable in order.
    const auto r2 = make_route("r", {{"urlonly", 5}, {"all2", 0}, {"all", 0}});
    EXPECT_EQ(run(f, r2, req(source_kind::file), 0.5), (plan{"all2", "all"}));
}

TEST(Routing, SkipsProvidersLackingSourceKind) {
    fixture f;
    const auto r = make_route("r", {{"fileonly", 0}, {"urlonly", 0}, {"clipper", 0}, {"all", 0}});
    EXPECT_EQ(run(f, r, req(source_kind::file)), (plan{"fileonly", "all"}));
    EXPECT_EQ(run(f, r, req(source_kind::url)), (plan{"urlonly", "all"}));
}

// A provider that fetches a file source by the gateway's link takes none without
// api.public_base_url: skipped for the next, and a pin to it says why.
TEST(Routing, SkipsProvidersThatNeedTheGatewaysLinkForFilesWithoutOne) {
    fixture f;
    f.known["bylink"] = caps_of(true, true, false, true, 2);
    f.known["bylink"].file_by_public_url = true;
    const auto r = make_route("r", {{"bylink", 0}, {"fileonly", 0}});
    auto q = req(source_kind::file);
    EXPECT_EQ(run(f, r, q), (plan{"bylink", "fileonly"}));
    q.public_url = false;
    EXPECT_EQ(run(f, r, q), (plan{"fileonly"}));
    EXPECT_EQ(run(f, r, req(source_kind::url)), (plan{"bylink"}));  // a URL it fetches itself
    std::string why;
    q.pinned_provider = "bylink";
    EXPECT_TRUE(run(f, r, q, 0.0, &why).empty());
    EXPECT_NE(why.find("'bylink' takes file sources only by the gateway's link"), std::string::npos)
        << why;
}

TEST(Routing, SkipsProvidersWithoutLength) {
    fixture f;
    const auto r = make_route("r", {{"nolength", 0}, {"all", 0}});
    EXPECT_EQ(run(f, r, req(source_kind::file, 1, true)), (plan{"all"}));
    EXPECT_EQ(run(f, r, req(source_kind::file, 1, false)), (plan{"nolength", "all"}));
}

TEST(Routing, SkipsProvidersWithTooFewOutputs) {
    fixture f;
    const auto r = make_route("r", {{"single", 0}, {"all", 0}});
    EXPECT_EQ(run(f, r, req(source_kind::file, 2)), (plan{"all"}));
    EXPECT_EQ(run(f, r, req(source_kind::file, 1)), (plan{"single", "all"}));
}

TEST(Routing, SkipsUnknownProvidersAndDuplicates) {
    fixture f;
    const auto r = make_route("r", {{"ghost", 5}, {"all", 0}, {"all", 3}, {"all2", 0}});
    // "ghost" is skipped; the second "all" (and its weight) is ignored: nothing has a weight.
    EXPECT_EQ(run(f, r, req(), 0.9), (plan{"all", "all2"}));
    // A null lookup knows no provider.
    std::string why;
    EXPECT_TRUE(core::plan_route(r, req(), nullptr, 0, &why).empty());
    EXPECT_EQ(why, "no provider in route 'r' is configured");
}

TEST(Routing, ClipIsPinnedToItsProvider) {
    fixture f;
    auto q = req(source_kind::clip, 2);
    q.clip_provider = "clipper";
    const auto r = make_route("r", {{"all", 10}, {"all2", 0}});
    // Not in the route, still the only candidate; the route is not consulted.
    EXPECT_EQ(run(f, r, q, 0.3), (plan{"clipper"}));
    q.clip_provider = "all2";
    EXPECT_EQ(run(f, r, q, 0.3), (plan{"all2"}));

    std::string why;
    q.clip_provider = "fileonly";
    EXPECT_TRUE(run(f, r, q, 0, &why).empty());
    EXPECT_EQ(why, "the clip's provider: 'fileonly' does not accept clip sources");
    q.clip_provider = "ghost";
    EXPECT_TRUE(run(f, r, q, 0, &why).empty());
    EXPECT_EQ(why, "the clip's provider: 'ghost' is not configured");
    q.clip_provider = "single";  // accepts clips but only one output
    EXPECT_TRUE(run(f, r, q, 0, &why).empty());
    EXPECT_EQ(why, "the clip's provider: 'single' supports at most 1 output, not 2");
    q.clip_provider.clear();
    EXPECT_TRUE(run(f, r, q, 0, &why).empty());
    EXPECT_EQ(why, "a clip source must name the provider that owns the clip");
}

TEST(Routing, ClipAndPinMustAgree) {
    fixture f;
    auto q = req(source_kind::clip);
    q.clip_provider = "clipper";
    q.pinned_provider = "clipper";
    const auto r = make_route("r", {{"all", 0}});
    EXPECT_EQ(run(f, r, q), (plan{"clipper"}));
    q.pinned_provider = "all";
    std::string why;
    EXPECT_TRUE(run(f, r, q, 0, &why).empty());
    EXPECT_EQ(why, "the clip belongs to provider 'clipper' but the request pins provider 'all'");
}

TEST(Routing, PinnedProviderIsTheWholeChain) {
    fixture f;
    const auto r = make_route("r", {{"all", 1}, {"all2", 1}, {"all3", 1}});
    auto q = req(source_kind::url, 1, true);
    q.pinned_provider = "all3";
    EXPECT_EQ(run(f, r, q, 0.0), (plan{"all3"}));
    q.pinned_provider = "urlonly";  // not in the route: a pin overrides the route
    EXPECT_EQ(run(f, r, q, 0.0), (plan{"urlonly"}));

    std::string why;
    q.pinned_provider = "fileonly";
    EXPECT_TRUE(run(f, r, q, 0, &why).empty());
    EXPECT_EQ(why, "the pinned provider: 'fileonly' does not accept url sources");
    q.pinned_provider = "nolength";
    EXPECT_TRUE(run(f, r, q, 0, &why).empty());
    EXPECT_EQ(why, "the pinned provider: 'nolength' does not support length");
    q.pinned_provider = "nobody";
    EXPECT_TRUE(run(f, r, q, 0, &why).empty());
    EXPECT_EQ(why, "the pinned provider: 'nobody' is not configured");
}

TEST(Routing, EmptyChain) {
    fixture f;
    std::string why;
    EXPECT_TRUE(run(f, make_route("empty", {}), req(), 0, &why).empty());
    EXPECT_EQ(why, "route 'empty' has no providers");
    // why_empty is optional.
    EXPECT_TRUE(run(f, make_route("empty", {}), req()).empty());
}

TEST(Routing, AllSkippedMessages) {
    fixture f;
    std::string why;
    // One shared reason (clip sources never reach the chain: they are pinned to their owner).
    EXPECT_TRUE(
        run(f, make_route("x", {{"fileonly", 1}, {"clipper", 0}}), req(source_kind::url), 0, &why)
            .empty());
    EXPECT_EQ(why, "no provider in route 'x' accepts url sources");
    EXPECT_TRUE(
        run(f, make_route("x", {{"urlonly", 1}, {"clipper", 0}}), req(source_kind::file), 0, &why)
            .empty());
    EXPECT_EQ(why, "no provider in route 'x' accepts file sources");
    EXPECT_TRUE(run(f, make_route("x", {{"nolength", 0}}), req(source_kind::file, 1, true), 0, &why)
                    .empty());
    EXPECT_EQ(why, "no provider in route 'x' supports length");
    EXPECT_TRUE(
        run(f, make_route("x", {{"single", 0}}), req(source_kind::file, 2), 0, &why).empty());
    EXPECT_EQ(why, "no provider in route 'x' supports 2 outputs");
    EXPECT_TRUE(run(f, make_route("x", {{"a", 0}, {"b", 0}}), req(), 0, &why).empty());
    EXPECT_EQ(why, "no provider in route 'x' is configured");
    // Mixed reasons: each provider's.
    EXPECT_TRUE(run(f, make_route("x", {{"urlonly", 0}, {"ghost", 0}, {"single", 0}}),
                    req(source_kind::file, 2), 0, &why)
                    .empty());
    EXPECT_EQ(why,
              "no provider in route 'x' can serve this request ('urlonly' does not accept file "
              "sources; 'ghost' is not configured; 'single' supports at most 1 output, not 2)");
}

TEST(Routing, FromExtendRequest) {
    core::extend_request e;
    e.source = source_kind::clip;
    e.clip_provider = "musicapi";
    e.num_outputs = 2;
    e.length = 30.0;
    e.provider = "musicapi";
    const auto r = core::make_routing_request(e);
    EXPECT_EQ(r.source, source_kind::clip);
    EXPECT_EQ(r.clip_provider, "musicapi");
    EXPECT_EQ(r.num_outputs, 2);
    EXPECT_TRUE(r.wants_length);
    EXPECT_EQ(r.pinned_provider, std::optional<std::string>("musicapi"));
    e.length.reset();
    e.provider.reset();
    EXPECT_FALSE(core::make_routing_request(e).wants_length);
    EXPECT_FALSE(core::make_routing_request(e).pinned_provider);
}

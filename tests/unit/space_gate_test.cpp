// store::space_gate: when an admission under storage.min_free_bytes may rest on an earlier
// measurement of the volume, and when it must measure again.

#include <gtest/gtest.h>

#include "gateway/store/disk.hpp"

namespace {

using segue::store::space_gate;
using segue::store::volume_space;
using namespace std::chrono_literals;

constexpr std::uint64_t MiB = 1ull << 20;
constexpr std::uint64_t GiB = 1ull << 30;

volume_space free_bytes(std::uint64_t available) {
    volume_space v;
    v.available = available;
    v.size = 100 * GiB;
    return v;
}

TEST(SpaceGate, MeasuresWhenItHasNoMeasurement) {
    space_gate g;
    EXPECT_FALSE(g.admits(256 * MiB, 0, space_gate::clock::now()));
}

TEST(SpaceGate, AdmitsOnARecentMeasurementFarAboveTheFloor) {
    space_gate g;
    const auto t = space_gate::clock::now();
    g.measured(free_bytes(10 * GiB), t, 0);
    EXPECT_TRUE(g.admits(256 * MiB, 0, t + 10ms));
    EXPECT_TRUE(g.admits(256 * MiB, 100 * MiB, t + 900ms));
}

TEST(SpaceGate, AMeasurementAnswersForOneSecondAtMost) {
    space_gate g;
    const auto t = space_gate::clock::now();
    g.measured(free_bytes(10 * GiB), t, 0);
    EXPECT_TRUE(g.admits(256 * MiB, 0, t + space_gate::max_age - 1ms));
    EXPECT_FALSE(g.admits(256 * MiB, 0, t + space_gate::max_age));
    EXPECT_FALSE(g.admits(256 * MiB, 0, t + 1h));
    // A clock that went back (another thread's earlier reading) does not extend it either.
    EXPECT_FALSE(g.admits(256 * MiB, 0, t - 1ms));
}

TEST(SpaceGate, NearTheFloorEveryRequestMeasures) {
    space_gate g;
    const auto t = space_gate::clock::now();
    // Above the floor, but not by another floor's worth: measure (and refusals always do).
    g.measured(free_bytes(400 * MiB), t, 0);
    EXPECT_FALSE(g.admits(256 * MiB, 0, t + 1ms));
    g.measured(free_bytes(512 * MiB), t, 0);
    EXPECT_TRUE(g.admits(256 * MiB, 0, t + 1ms));
    // A small floor still keeps min_headroom of margin.
    g.measured(free_bytes(8 * MiB + space_gate::min_headroom - 1), t, 0);
    EXPECT_FALSE(g.admits(8 * MiB, 0, t + 1ms));
    g.measured(free_bytes(8 * MiB + space_gate::min_headroom), t, 0);
    EXPECT_TRUE(g.admits(8 * MiB, 0, t + 1ms));
}

TEST(SpaceGate, BytesAdmittedSinceTheMeasurementCountAgainstIt) {
    space_gate g;
    const auto t = space_gate::clock::now();
    // 1 GiB free, floor 256 MiB: room for 512 MiB of uploads before it must measure again.
    g.measured(free_bytes(1 * GiB), t, 0);
    EXPECT_TRUE(g.admits(256 * MiB, 300 * MiB, t + 1ms));
    EXPECT_TRUE(g.admits(256 * MiB, 212 * MiB, t + 2ms));
    EXPECT_FALSE(g.admits(256 * MiB, 1, t + 3ms));
    // The upload the measurement itself admitted counts too.
    g.measured(free_bytes(1 * GiB), t, 512 * MiB);
    EXPECT_FALSE(g.admits(256 * MiB, 1, t + 1ms));
    // A new measurement starts the count over.
    g.measured(free_bytes(1 * GiB), t + 5ms, 0);
    EXPECT_TRUE(g.admits(256 * MiB, 1, t + 6ms));
}

TEST(SpaceGate, AFailedMeasurementCachesNothing) {
    space_gate g;
    const auto t = space_gate::clock::now();
    g.measured(free_bytes(10 * GiB), t, 0);
    g.measured(std::nullopt, t + 1ms, 0);
    EXPECT_FALSE(g.admits(256 * MiB, 0, t + 2ms));
}

TEST(SpaceGate, HugeSizesDoNotOverflowIntoAnAdmission) {
    space_gate g;
    const auto t = space_gate::clock::now();
    g.measured(free_bytes(10 * GiB), t, 0);
    EXPECT_FALSE(g.admits(UINT64_MAX - 1, 0, t + 1ms));
    EXPECT_FALSE(g.admits(256 * MiB, UINT64_MAX - 1, t + 1ms));
    EXPECT_FALSE(g.admits(UINT64_MAX / 2, UINT64_MAX / 2, t + 1ms));
    EXPECT_TRUE(g.admits(256 * MiB, 0, t + 1ms));
}

}  // namespace

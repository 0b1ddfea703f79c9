// Chaos: the real binary against both fake providers with random faults on every upstream step
// (MusicGPT submit and byId, MusicAPI upload, create and task: 5xx, 429, resets, closes, submit
// steps slower than the job lease, answers slower than the timeouts), lost and duplicated
// provider webhooks, tasks failing upstream), a few hundred tasks from several client threads
// and two tenants, and `segue` killed with SIGKILL and restarted on the same port and database a
// few times during the run. At the end, the checks of chaos_harness.hpp: every task terminal, no
// task accepted twice (by its attempts and upstream), exact ledgers, every event delivered as
// logged and in order.
// The random choices come from one seed (printed; SEGUE_CHAOS_SEED overrides it), so a failing
// run's fault plan can be replayed (timing still varies). On failure the logs of every segue
// instance, the fakes and the receiver are kept in a directory named in the output.

#include <gtest/gtest.h>

#include <atomic>
#include <iostream>
#include <thread>

#include "tests/integration/chaos_harness.hpp"
#include "tests/support/pg.hpp"

using namespace std::chrono_literals;
using namespace segue::test::chaos;

namespace {

// ---- sizing: the whole test stays well inside the 120 s CTest timeout ----------------------
constexpr int task_count = 300;
constexpr int client_threads = 4;
constexpr int kills = 3;
constexpr auto submit_window = 28s;  // submissions spread over this

class Chaos : public ::testing::TestWithParam<std::uint64_t> {
  protected:
    void SetUp() override {
        if (node_binary().empty())
            GTEST_SKIP() << "node is not installed (scripts/setup.sh --test installs it)";
    }
};

}  // namespace

TEST_P(Chaos, KillsAndFaultsLoseNothing) {
    const auto t0 = steady::now();
    const std::uint64_t seed = chaos_seed(GetParam());
    std::cout << "[chaos] seed " << seed << " (SEGUE_CHAOS_SEED=" << seed << " replays the plan)"
              << std::endl;
    std::mt19937 rng(static_cast<std::mt19937::result_type>(seed));

    upstreams up(seed);

    // segue on a fixed port with its own database, so a restart is the same gateway.
    segue::test::temp_dir storage;
    const std::uint16_t port = segue::test::free_port();
    gateway gw(gateway_config({port, segue::test::storage_yaml(storage.path())}, up));

    std::vector<task_rec> tasks(task_count);
    for (int i = 0; i < task_count; ++i) {
        auto& t = tasks[i];
        t.index = i;
        t.tenant = &tenants[pick(rng, 0, 1)];
        t.num_outputs = pick(rng, 1, 2);
        t.key = "chaos-" + std::to_string(seed) + "-" + std::to_string(i);
        t.prompt = "chaos task " + std::to_string(i) + " of run " + std::to_string(seed);
    }

    // ---- the run ----
    std::atomic<int> restarts{0};
    const auto run_start = steady::now();

    auto client = [&](int c) {
        std::mt19937 crng(static_cast<std::mt19937::result_type>(seed * 31 + c));
        for (int i = c; i < task_count; i += client_threads) {
            auto& t = tasks[i];
            // Spread over the window, with jitter.
            std::this_thread::sleep_until(run_start + submit_window * i / task_count +
                                          std::chrono::milliseconds(pick(crng, 0, 150)));
            submit_task(port, t, up.audio_url(), up.receiver.url("/hooks/" + t.tenant->name), crng);
        }
    };

    std::vector<std::thread> threads;
    for (int c = 0; c < client_threads; ++c)
        threads.emplace_back(client, c);
    // The kills and restarts run on this thread: segue dies with the thread that started it
    // (PR_SET_PDEATHSIG), so a helper thread must not outlive its instance.
    {
        std::mt19937 krng(static_cast<std::mt19937::result_type>(seed ^ 0x5eedULL));
        const double window = std::chrono::duration<double>(submit_window).count();
        const auto kill_at = kill_moments(krng, kills, window);
        run_faults(
            up, krng, run_start, kill_at, std::max(kill_at.back(), window) + 3,
            [&](std::size_t k) {
                std::cout << "[chaos] t=" << seconds_since(run_start) << "s SIGKILL segue #"
                          << k + 1 << std::endl;
                gw.kill();
                std::this_thread::sleep_for(std::chrono::milliseconds(pick(krng, 100, 1200)));
                gw.start();
                ++restarts;
                std::cout << "[chaos] t=" << seconds_since(run_start) << "s segue restarted"
                          << std::endl;
            },
            "[chaos]");
    }
    for (auto& th : threads)
        th.join();
    EXPECT_EQ(restarts.load(), kills);
    ASSERT_TRUE(gw.running()) << "segue is not running; its log:\n" << gw.logs().back();

    verify_input in;
    in.port = port;
    in.tasks = &tasks;
    in.up = &up;
    in.logs = gw.logs();
    in.stop_times = gw.stop_times();
    in.run_start = run_start;
    in.tag = "[chaos]";
    const auto report = verify_run(in);
    std::cout << "[chaos] SUMMARY seed=" << seed << " " << report.summary
              << " kills=" << restarts.load() << " runtime=" << seconds_since(t0) << "s"
              << std::endl;

    // The chaos did happen.
    EXPECT_GT(report.retrying, 0);
    EXPECT_GT(report.failovers, 0);
    EXPECT_GT(report.faults, 0);

    if (HasFailure()) {
        std::vector<std::string> db;
        for (const char* f : {"segue.db", "segue.db-wal", "segue.db-shm"})
            db.push_back(storage.file(f));
        std::cout << "[chaos] logs and database kept in "
                  << keep_evidence("segue-chaos-" + std::to_string(seed), in.logs, up, db)
                  << std::endl;
    }
}

INSTANTIATE_TEST_SUITE_P(Seeds, Chaos, ::testing::Values(20240611u, 3u, 7u),
                         [](const ::testing::TestParamInfo<std::uint64_t>& i) {
                             return "seed_" + std::to_string(i.param);
                         });

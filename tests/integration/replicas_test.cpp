// Several replicas: three `segue` processes on one PostgreSQL schema (the same config: engine and
// blobs postgres, each its own scratch blob_dir, one url_signing_key, public_base_url at nginx
// so provider callbacks and signed file fetches reach any replica), behind nginx round robin.
//   - KillsAndFaultsLoseNothing: 300 tasks over both fakes with random faults, created through
//     nginx with Idempotency-Keys (some as multipart uploads), replicas SIGKILLed and restarted
//     at random; then the checks of chaos_harness.hpp over everything.
//   - SseOnAnotherReplicaIsLive: a task created on one replica, its SSE stream on another: each
//     event arrives about when a poller on the third sees it committed, and the final one ends
//     the stream.
//   - RollingRestartFailsNoRequest: SIGTERM, wait, restart, wait for /readyz, replica by replica,
//     while a client keeps sending creates and GETs through nginx: every answer as expected.
//   - DrainsUnderAFloodOfKeylessPostsFailAtMostOne: each replica drains and restarts while
//     key-less POSTs (which nginx may not resend) flood nginx: all but at most one answered
//     (the kernel's race at the listener's close, explained at the test).
//   - OneKeyOnTwoReplicasAtOnceMakesOneTask: the same create with the same Idempotency-Key on
//     two replicas at the same instant makes one task.
//   - AKilledReplicasSubmitIsTakenUpAfterTheReplicaTimeout: a replica SIGKILLed in the middle
//     of a provider call; another takes the job up about storage.postgres.replica_timeout
//     later, not after engine.lease, and reconciles the call instead of sending it again.
// The nginx config (nginx_conf below) is the one a deployment in front of several replicas wants:
// which requests it may send again to another replica, and why.

#include <gtest/gtest.h>
#include <signal.h>
#include <time.h>

#include <algorithm>
#include <array>
#include <atomic>
#include <barrier>
#include <iostream>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "gateway/audio/audio.hpp"
#include "tests/integration/chaos_harness.hpp"
#include "tests/support/pg.hpp"

using namespace std::chrono_literals;
using namespace segue::test::chaos;
using segue::test::http_response;

namespace {

constexpr int replica_count = 3;

// The client threads of a test that also restarts replicas: stopped and joined on every way
// out of the test, a failed ASSERT's early return included (a joinable std::thread that is
// destroyed ends the process). Declared after everything the threads use.
struct joined_threads {
    std::atomic<bool>& stop;
    std::vector<std::thread> threads;
    void join() {
        stop = true;
        for (auto& th : threads)
            if (th.joinable())
                th.join();
    }
    ~joined_threads() { join(); }
};

std::string nginx_binary() {
    auto [rc, out] =
        segue::test::run_command({"/bin/sh", "-c", "PATH=$PATH:/usr/sbin command -v nginx"});
    while (!out.empty() && (out.back() == '\n' || out.back() == '\r'))
        out.pop_back();
    return rc == 0 ? out : "";
}

// nginx in front of the replicas. Retrying on another replica (proxy_next_upstream) is what
// hides a replica going away; the question is which requests may be sent twice:
//  - GET, HEAD (and PUT, DELETE: nginx's idempotent methods) always;
//  - POST with an Idempotency-Key too: the gateway answers the same key and body with the first
//    answer and creates nothing more, whichever replica gets it and even while the first try is
//    still running on the replica that was cut off (the second waits for the first's record of
//    the key), so a POST sent twice is still one task;
//  - POST to a provider webhook route: providers repeat webhooks anyway and the gateway applies
//    each once (deduplicated by the attempt's token and state);
//  - any other POST (cancel, redeliver) is resent only if it never left nginx (the connection
//    was refused): once sent, the replica may have acted on it.
// A replica that refused a connection is left alone for fail_timeout (no active health checks
// in open source nginx). Upstream keep-alive, with nginx closing a connection idle in its pool
// after 200 ms, less than the replicas' shutdown_delay (300 ms): from SIGTERM on, every response
// of the replica closes its connection, so when it closes its listener and idle connections
// nginx holds none of them (it could otherwise send a request on one just as the replica closes
// it, and a POST it may not resend would fail).
// master_process off: one process, our child (it dies with the test, PR_SET_PDEATHSIG); it
// proxies exactly as a worker would.
std::string nginx_conf(const std::string& dir, std::uint16_t listen,
                       const std::vector<std::uint16_t>& backends) {
    std::ostringstream c;
    c << "master_process off;\n"
      << "error_log " << dir << "/error.log info;\n"
      << "events {\n  worker_connections 4096;\n}\n"
      << "http {\n"
      << "  log_format upstreams '$msec \"$request\" $status upstream=$upstream_addr "
         "upstream_status=$upstream_status time=$request_time';\n"
      << "  access_log " << dir << "/access.log upstreams;\n";
    for (const char* t : {"client_body", "proxy", "fastcgi", "uwsgi", "scgi"})
        c << "  " << t << "_temp_path " << dir << "/" << t << ";\n";
    c << "  client_max_body_size 32m;\n"
      << "  upstream segue {\n";
    for (auto p : backends)
        c << "    server 127.0.0.1:" << p << " max_fails=1 fail_timeout=1s;\n";
    c << "    keepalive 32;\n"
      << "    keepalive_timeout 200ms;\n"
      << "  }\n"
      // First match wins: reads, provider webhooks, then any write without a key.
      << "  map \"$request_method:$http_idempotency_key:$uri\" $replay_unsafe {\n"
      << "    default 0;\n"
      << "    \"~^(GET|HEAD|OPTIONS):\" 0;\n"
      << "    \"~^POST::/v1/providers/[^/]+/webhooks/\" 0;\n"
      << "    \"~^[A-Z]+::\" 1;\n"
      << "  }\n"
      << "  server {\n"
      << "    listen 127.0.0.1:" << listen << ";\n"
      << "    proxy_http_version 1.1;\n"
      << "    proxy_set_header Connection \"\";\n"
      << "    proxy_set_header Host $http_host;\n"
      << "    proxy_set_header X-Forwarded-For $remote_addr;\n"
      // SSE: every event goes out as it comes (the gateway also says X-Accel-Buffering: no).
      << "    proxy_buffering off;\n"
      << "    proxy_connect_timeout 1s;\n"
      << "    proxy_read_timeout 60s;\n"
      << "    proxy_next_upstream_timeout 15s;\n"
      << "    location / {\n"
      << "      error_page 418 = @no_replay;\n"
      << "      if ($replay_unsafe) {\n        return 418;\n      }\n"
      << "      proxy_pass http://segue;\n"
      << "      proxy_next_upstream error timeout http_502 http_503 non_idempotent;\n"
      << "    }\n"
      << "    location @no_replay {\n"
      << "      proxy_pass http://segue;\n"
      << "      proxy_next_upstream error timeout http_502 http_503;\n"
      << "    }\n"
      << "  }\n"
      << "}\n";
    return c.str();
}

class nginx_proxy {
  public:
    explicit nginx_proxy(const std::vector<std::uint16_t>& backends)
        : port_(segue::test::free_port()) {
        const std::string bin = nginx_binary();
        if (bin.empty())
            throw std::runtime_error(
                "nginx is not installed (scripts/setup.sh --test installs nginx-light)");
        const std::string conf = dir_.write("nginx.conf", nginx_conf(dir_.path(), port_, backends));
        proc_.start({bin, "-p", dir_.path(), "-c", conf, "-e", dir_.file("error.log"), "-g",
                     "daemon off; pid " + dir_.file("nginx.pid") + ";"},
                    dir_.file("stderr.log"));
        const auto until = steady::now() + 10s;
        while (steady::now() < until) {
            try {
                segue::test::http_connection probe(port_, 1s);
                return;
            } catch (const std::exception&) {
            }
            if (!proc_.running())
                break;
            std::this_thread::sleep_for(20ms);
        }
        throw std::runtime_error(
            "nginx did not start: " + segue::test::read_file(dir_.file("stderr.log")) +
            segue::test::read_file(dir_.file("error.log")));
    }
    ~nginx_proxy() {
        proc_.signal(SIGTERM);
        proc_.wait(3s);
    }
    std::uint16_t port() const { return port_; }
    std::string url() const { return "http://127.0.0.1:" + std::to_string(port_); }
    std::vector<std::string> log_files() const {
        return {dir_.file("access.log"), dir_.file("error.log"), dir_.file("nginx.conf")};
    }
    // What the access log says: requests, those nginx sent to more than one replica
    // ($upstream_addr lists each it tried), and which replica answered.
    struct usage {
        int requests = 0;
        int retried = 0;
        std::map<std::string, int> by_upstream;  // the replica that answered
    };
    usage read_usage() const {
        usage u;
        std::istringstream in(segue::test::read_file(dir_.file("access.log")));
        std::string line;
        while (std::getline(in, line)) {
            ++u.requests;
            const auto at = line.find("upstream=");
            if (at == std::string::npos)
                continue;
            const auto end = line.find(" upstream_status=", at);
            const std::string addrs = line.substr(at + 9, end - at - 9);
            u.retried += addrs.find(',') != std::string::npos;
            u.by_upstream[addrs.substr(
                addrs.rfind(' ') == std::string::npos ? 0 : addrs.rfind(' ') + 1)]++;
        }
        return u;
    }

  private:
    segue::test::temp_dir dir_;
    std::uint16_t port_;
    segue::test::child_process proc_;
};

// The replicas, nginx, the fakes and the receiver.
class cluster {
  public:
    explicit cluster(std::uint64_t seed) : up(seed) {
        for (int i = 0; i < replica_count; ++i)
            ports.push_back(segue::test::free_port());
        nginx = std::make_unique<nginx_proxy>(ports);
        for (int i = 0; i < replica_count; ++i) {
            gateway_options o;
            o.port = ports[static_cast<std::size_t>(i)];
            // Files in PostgreSQL too; blob_dir is each process's own (@DIR@: a fresh directory
            // per start, as a pod's emptyDir).
            o.storage_yaml = segue::test::postgres_storage_yaml(schema.url(), "@DIR@/blobs");
            o.public_base_url = nginx->url();
            // Readiness turns 503 at once; nginx has no health checks, so a short delay, longer
            // than nginx's upstream keepalive_timeout (nginx_conf).
            o.server_extra = "  shutdown_delay: 300ms\n";
            replicas.push_back(std::make_unique<gateway>(gateway_config(o, up)));
        }
    }
    std::uint16_t api() const { return nginx->port(); }
    std::vector<std::string> logs() const {
        std::vector<std::string> out;
        for (const auto& g : replicas)
            for (auto& l : g->logs())
                out.push_back(std::move(l));
        return out;
    }
    std::vector<std::int64_t> stop_times() const {
        std::vector<std::int64_t> out;
        for (const auto& g : replicas)
            out.insert(out.end(), g->stop_times().begin(), g->stop_times().end());
        return out;
    }
    bool ready(int i) {
        auto r = call(ports[static_cast<std::size_t>(i)], "GET", "/readyz", "", {}, 2s);
        return r && r->status == 200;
    }
    bool wait_ready(int i, std::chrono::milliseconds limit = 15s) {
        const auto until = steady::now() + limit;
        while (steady::now() < until) {
            if (ready(i))
                return true;
            std::this_thread::sleep_for(20ms);
        }
        return false;
    }
    verify_input verification(std::vector<task_rec>& tasks, steady::time_point run_start) {
        verify_input in;
        in.port = api();
        in.tasks = &tasks;
        in.up = &up;
        in.logs = logs();
        in.stop_times = stop_times();
        in.run_start = run_start;
        in.tag = "[replicas]";
        return in;
    }
    std::string keep(const std::string& name) {
        return keep_evidence(name, logs(), up, nginx->log_files());
    }

    upstreams up;
    segue::test::pg_schema schema;
    std::vector<std::uint16_t> ports;
    std::unique_ptr<nginx_proxy> nginx;
    std::vector<std::unique_ptr<gateway>> replicas;
};

class Replicas : public ::testing::Test {
  protected:
    void SetUp() override {
        if (node_binary().empty())
            GTEST_SKIP() << "node is not installed (scripts/setup.sh --test installs it)";
    }
};

task_rec make_task(int i, const std::string& run, std::mt19937& rng) {
    task_rec t;
    t.index = i;
    t.tenant = &tenants[static_cast<std::size_t>(pick(rng, 0, 1))];
    t.num_outputs = pick(rng, 1, 2);
    t.key = run + "-" + std::to_string(i);
    t.prompt = run + " task " + std::to_string(i);
    return t;
}

std::string webhook_of(cluster& c, const task_rec& t) {
    return c.up.receiver.url("/hooks/" + t.tenant->name);
}

// "2026-12-03T18:04:17.400Z" -> Unix ms (-1 if it is not that).
std::int64_t iso_ms(const std::string& s) {
    std::tm tm{};
    int ms = 0;
    if (std::sscanf(s.c_str(), "%d-%d-%dT%d:%d:%d.%dZ", &tm.tm_year, &tm.tm_mon, &tm.tm_mday,
                    &tm.tm_hour, &tm.tm_min, &tm.tm_sec, &ms) != 7)
        return -1;
    tm.tm_year -= 1900;
    tm.tm_mon -= 1;
    return static_cast<std::int64_t>(::timegm(&tm)) * 1000 + ms;
}

}  // namespace

TEST_F(Replicas, KillsAndFaultsLoseNothing) {
    constexpr int task_count = 300;
    constexpr int client_threads = 4;
    constexpr int kills = 5;
    constexpr auto submit_window = 28s;
    const auto t0 = steady::now();
    const std::uint64_t seed = chaos_seed(20250301u);
    std::cout << "[replicas] seed " << seed << " (SEGUE_CHAOS_SEED=" << seed << " replays the plan)"
              << std::endl;
    std::mt19937 rng(static_cast<std::mt19937::result_type>(seed));
    cluster c(seed);

    // A fifth of the tasks upload their audio: stored in PostgreSQL by the replica nginx gave
    // the create, read back by whichever replica runs the submit (MusicGPT gets the file) or
    // serves MusicAPI's fetch of the signed URL (through nginx, any replica).
    segue::test::temp_dir files;
    const std::string song = files.file("song.wav");
    ASSERT_TRUE(segue::audio::write_test_song(song, 5, 22050, 1, 120, "wav"));
    std::vector<task_rec> tasks;
    for (int i = 0; i < task_count; ++i) {
        tasks.push_back(make_task(i, "replicas-" + std::to_string(seed), rng));
        if (i % 5 == 4)
            tasks.back().upload_path = song;
    }

    const auto run_start = steady::now();
    auto client = [&](int n) {
        std::mt19937 crng(static_cast<std::mt19937::result_type>(seed * 31 + n));
        for (int i = n; i < task_count; i += client_threads) {
            auto& t = tasks[static_cast<std::size_t>(i)];
            std::this_thread::sleep_until(run_start + submit_window * i / task_count +
                                          std::chrono::milliseconds(pick(crng, 0, 150)));
            submit_task(c.api(), t, c.up.audio_url(), webhook_of(c, t), crng);
        }
    };
    std::vector<std::thread> threads;
    for (int n = 0; n < client_threads; ++n)
        threads.emplace_back(client, n);
    // Kills on this thread (a child dies with the thread that started it).
    int killed = 0;
    std::map<int, int> kills_of;
    {
        std::mt19937 krng(static_cast<std::mt19937::result_type>(seed ^ 0x5eedULL));
        const double window = std::chrono::duration<double>(submit_window).count();
        const auto kill_at = kill_moments(krng, kills, window);
        run_faults(
            c.up, krng, run_start, kill_at, std::max(kill_at.back(), window) + 3,
            [&](std::size_t) {
                const int r = pick(krng, 0, replica_count - 1);
                std::cout << "[replicas] t=" << seconds_since(run_start) << "s SIGKILL replica "
                          << r << std::endl;
                c.replicas[static_cast<std::size_t>(r)]->kill();
                std::this_thread::sleep_for(std::chrono::milliseconds(pick(krng, 100, 1500)));
                c.replicas[static_cast<std::size_t>(r)]->start();
                ++killed;
                ++kills_of[r];
                std::cout << "[replicas] t=" << seconds_since(run_start) << "s replica " << r
                          << " restarted" << std::endl;
            },
            "[replicas]");
    }
    for (auto& th : threads)
        th.join();
    EXPECT_EQ(killed, kills);
    for (int i = 0; i < replica_count; ++i)
        ASSERT_TRUE(c.replicas[static_cast<std::size_t>(i)]->running())
            << "replica " << i << " is not running; its log:\n"
            << c.replicas[static_cast<std::size_t>(i)]->logs().back();

    auto in = c.verification(tasks, run_start);
    const auto report = verify_run(in);
    int uploads_ok = 0, uploads = 0;
    for (const auto& t : tasks)
        if (!t.upload_path.empty()) {
            ++uploads;
            uploads_ok += t.doc.contains("status") && str(t.doc.at("status")) == "succeeded";
        }
    const auto usage = c.nginx->read_usage();
    std::string per_replica;
    for (const auto& [addr, n] : usage.by_upstream)
        per_replica += " " + addr + "=" + std::to_string(n);
    std::cout << "[replicas] SUMMARY seed=" << seed << " " << report.summary << " kills=" << killed
              << " (replica 0/1/2: " << kills_of[0] << "/" << kills_of[1] << "/" << kills_of[2]
              << ") uploads_succeeded=" << uploads_ok << "/" << uploads
              << " nginx: requests=" << usage.requests << " retried_on_another=" << usage.retried
              << " answered_by:" << per_replica << " runtime=" << seconds_since(t0) << "s"
              << std::endl;

    // The chaos did happen, and uploads went through the stored files and signed URLs.
    EXPECT_GT(report.retrying, 0);
    EXPECT_GT(report.failovers, 0);
    EXPECT_GT(report.faults, 0);
    EXPECT_GT(uploads_ok, 0);
    if (HasFailure())
        std::cout << "[replicas] logs kept in " << c.keep("segue-replicas-" + std::to_string(seed))
                  << std::endl;
}

namespace {

// One Server-Sent Events frame as it arrived.
struct sse_frame {
    std::int64_t seq = 0;
    std::string type;
    std::int64_t at_ms = 0;  // wall clock when its bytes arrived
};

// Follows `GET /v1/extensions/{id}/events` as SSE on `port` until the stream ends.
struct sse_watch {
    std::vector<sse_frame> frames;
    std::int64_t opened_ms = 0;
    std::atomic<bool> ended{false};
    int status = 0;
    void run(std::uint16_t port, const task_rec& t) {
        try {
            segue::test::http_connection conn(port, 30s);
            if (!conn.send_raw("GET /v1/extensions/" + t.id +
                               "/events HTTP/1.1\r\nHost: 127.0.0.1\r\n" + auth(*t.tenant) +
                               "\r\nAccept: text/event-stream\r\n\r\n"))
                return;
            std::string text;
            auto r = conn.read_streaming([&](std::string_view piece) {
                if (opened_ms == 0)
                    opened_ms = wall_ms();
                text.append(piece);
                for (std::size_t end; (end = text.find("\n\n")) != std::string::npos;) {
                    std::istringstream frame(text.substr(0, end));
                    text.erase(0, end + 2);
                    sse_frame f;
                    f.at_ms = wall_ms();
                    for (std::string line; std::getline(frame, line);) {
                        if (line.rfind("id: ", 0) == 0)
                            f.seq = std::stoll(line.substr(4));
                        else if (line.rfind("event: ", 0) == 0)
                            f.type = line.substr(7);
                    }
                    if (f.seq > 0)
                        frames.push_back(f);
                }
            });
            ended = r.has_value();
            status = r ? r->status : 0;
        } catch (const std::exception&) {
        }
    }
};

// Polls the event log on `port` every 20 ms: when each event was first seen there.
struct event_poller {
    std::map<std::int64_t, std::int64_t> first_seen;  // seq -> wall ms
    void run(std::uint16_t port, const task_rec& t, const std::atomic<bool>& stop) {
        std::int64_t after = 0;
        while (!stop.load()) {
            auto r = call(port, "GET",
                          "/v1/extensions/" + t.id + "/events?after=" + std::to_string(after), "",
                          {auth(*t.tenant)}, 5s);
            const auto now = wall_ms();
            if (r && r->status == 200)
                if (auto o = parse_object(r->body))
                    for (const auto& e : o->at("data").as_array()) {
                        after = e.at("seq").as_int64();
                        first_seen.emplace(after, now);
                    }
            std::this_thread::sleep_for(20ms);
        }
    }
};

std::int64_t median(std::vector<std::int64_t> v) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    return v[v.size() / 2];
}

}  // namespace

TEST_F(Replicas, SseOnAnotherReplicaIsLive) {
    constexpr int task_count = 6;
    // An SSE stream that missed the wake-up would still catch up on its 1 s timer: half a
    // second on average. Woken by the NOTIFY, it is as quick as a poller on the third replica.
    constexpr std::int64_t bound_ms = 400;
    const auto t0 = steady::now();
    cluster c(11);
    std::mt19937 rng(11);
    std::vector<task_rec> tasks;
    for (int i = 0; i < task_count; ++i) {
        tasks.push_back(make_task(i, "sse", rng));
        tasks.back().provider = i % 2 ? "musicapi" : "musicgpt";
        tasks.back().num_outputs = 2;
    }
    std::vector<sse_watch> watches(task_count);
    std::vector<event_poller> pollers(task_count);
    std::atomic<bool> stop{false};
    std::vector<std::thread> threads;
    const auto run_start = steady::now();
    for (int i = 0; i < task_count; ++i)
        threads.emplace_back([&, i] {
            auto& t = tasks[static_cast<std::size_t>(i)];
            std::mt19937 crng(static_cast<std::mt19937::result_type>(i));
            std::this_thread::sleep_for(std::chrono::milliseconds(150 * i));
            const auto created_on = c.ports[static_cast<std::size_t>(i % replica_count)];
            const auto streamed_on = c.ports[static_cast<std::size_t>((i + 1) % replica_count)];
            const auto polled_on = c.ports[static_cast<std::size_t>((i + 2) % replica_count)];
            submit_task(created_on, t, c.up.audio_url(), webhook_of(c, t), crng, 10s);
            if (t.id.empty())
                return;
            std::thread poll([&] { pollers[static_cast<std::size_t>(i)].run(polled_on, t, stop); });
            watches[static_cast<std::size_t>(i)].run(streamed_on, t);
            // The poller goes on until the end, so it has seen every event.
            std::this_thread::sleep_for(300ms);
            poll.join();
        });
    // Every stream ends by itself once its task is final; the pollers stop when all have.
    const auto until = steady::now() + 40s;
    while (steady::now() < until) {
        bool all = true;
        for (const auto& w : watches)
            all = all && w.ended;
        if (all)
            break;
        std::this_thread::sleep_for(50ms);
    }
    std::this_thread::sleep_for(200ms);
    stop = true;
    for (auto& th : threads)
        th.join();

    auto in = c.verification(tasks, run_start);
    const auto report = verify_run(in);

    std::vector<std::int64_t> vs_poll, vs_commit;
    int live = 0;
    for (int i = 0; i < task_count; ++i) {
        const auto& t = tasks[static_cast<std::size_t>(i)];
        const auto& w = watches[static_cast<std::size_t>(i)];
        const auto& p = pollers[static_cast<std::size_t>(i)];
        SCOPED_TRACE("task " + t.id + " (" + t.provider + ")");
        ASSERT_FALSE(t.id.empty()) << t.submit_error;
        EXPECT_TRUE(w.ended) << "the SSE stream did not end";
        EXPECT_EQ(w.status, 200);
        // The stream carried the whole log, each event once, the final one last.
        ASSERT_EQ(w.frames.size(), t.events.size());
        for (std::size_t k = 0; k < w.frames.size(); ++k) {
            EXPECT_EQ(w.frames[k].seq, t.events[k].at("seq").as_int64());
            EXPECT_EQ(w.frames[k].type, str(t.events[k].at("type")));
        }
        ASSERT_FALSE(w.frames.empty());
        const std::string last = w.frames.back().type;
        EXPECT_TRUE(last == "extension.succeeded" || last == "extension.partially_succeeded" ||
                    last == "extension.failed")
            << "the stream ended on " << last;
        // Live: every event committed after the stream opened arrived within the bound of
        // when the poller on the third replica saw it.
        for (std::size_t k = 0; k < w.frames.size(); ++k) {
            const auto created = iso_ms(str(t.events[k].at("created_at")));
            if (created < w.opened_ms)
                continue;  // in the log before the stream opened: sent from the log
            ++live;
            auto seen = p.first_seen.find(w.frames[k].seq);
            ASSERT_NE(seen, p.first_seen.end()) << "the poller never saw seq " << w.frames[k].seq;
            const auto lag = w.frames[k].at_ms - seen->second;
            vs_poll.push_back(lag);
            vs_commit.push_back(w.frames[k].at_ms - created);
            EXPECT_LE(lag, bound_ms)
                << "seq " << w.frames[k].seq << " (" << w.frames[k].type
                << ") reached the SSE stream " << lag << " ms after the poller saw it";
        }
    }
    EXPECT_GE(live, task_count * 3) << "too few events were written while the streams were open";
    std::cout << "[replicas] SSE SUMMARY tasks=" << task_count << " live_events=" << live
              << " sse_minus_poll_ms: median=" << median(vs_poll) << " max="
              << (vs_poll.empty() ? 0 : *std::max_element(vs_poll.begin(), vs_poll.end()))
              << " sse_minus_created_ms: median=" << median(vs_commit) << " max="
              << (vs_commit.empty() ? 0 : *std::max_element(vs_commit.begin(), vs_commit.end()))
              << " " << report.summary << " runtime=" << seconds_since(t0) << "s" << std::endl;
    if (HasFailure())
        std::cout << "[replicas] logs kept in " << c.keep("segue-replicas-sse") << std::endl;
}

TEST_F(Replicas, RollingRestartFailsNoRequest) {
    constexpr int client_threads = 2;
    constexpr auto period = 40ms;  // per client thread: 50 requests/s in all
    const auto t0 = steady::now();
    cluster c(12);
    std::mt19937 rng(12);

    struct failure {
        double at;
        std::string what;
    };
    std::mutex m;
    std::vector<task_rec> tasks;  // guarded by m until the clients stop
    std::vector<failure> failures;
    std::atomic<int> requests{0};
    std::atomic<bool> stop{false};
    const auto run_start = steady::now();

    auto client = [&](int n) {
        std::mt19937 crng(static_cast<std::mt19937::result_type>(100 + n));
        std::string last_id;
        const tenant_info* last_tenant = &tenants[0];
        auto next = steady::now();
        for (int i = 0; !stop.load(); ++i) {
            next += period;
            std::this_thread::sleep_until(next);
            std::string method = "GET", target, expect_what;
            std::vector<std::string> headers;
            std::string body;
            int expect = 200;
            task_rec t;
            switch (i % 4) {
                case 0: {  // a create with its key: 202
                    std::lock_guard lk(m);
                    t = make_task(static_cast<int>(tasks.size()), "rolling", crng);
                    t.key += "-" + std::to_string(n);
                    t.prompt += " of client " + std::to_string(n);
                    t.provider = i % 8 ? "musicgpt" : "musicapi";
                    t.num_outputs = 1;
                    json::object b;
                    b["audio_url"] = c.up.audio_url();
                    b["extend_after"] = 2;
                    b["num_outputs"] = 1;
                    b["prompt"] = t.prompt;
                    b["provider"] = t.provider;
                    b["webhook_url"] = webhook_of(c, t);
                    method = "POST";
                    target = "/v1/extensions";
                    body = json::serialize(b);
                    headers = {auth(*t.tenant), "Content-Type: application/json",
                               "Idempotency-Key: " + t.key};
                    expect = 202;
                    break;
                }
                case 1:  // the task just created
                    if (last_id.empty())
                        continue;
                    target = "/v1/extensions/" + last_id;
                    headers = {auth(*last_tenant)};
                    break;
                case 2:
                    target = "/v1/extensions?limit=5";
                    headers = {auth(*last_tenant)};
                    break;
                default:  // an unknown task, read or (a POST without a key) canceled: 404
                    method = i % 8 == 3 ? "GET" : "POST";
                    target = "/v1/extensions/ext_00000000000000000000000000" +
                             std::string(method == "POST" ? "/cancel" : "");
                    headers = {auth(*last_tenant)};
                    expect = 404;
                    break;
            }
            ++requests;
            auto r = call(c.api(), method, target, body, headers, 20s);
            if (!r || r->status != expect) {
                std::lock_guard lk(m);
                failures.push_back(
                    {seconds_since(run_start),
                     method + " " + target + ": " +
                         (r ? std::to_string(r->status) + " " + r->body.substr(0, 200)
                            : std::string("no answer (connection failed, reset or timed out)"))});
            }
            if (expect == 202 && r && r->status == 202) {
                if (auto o = parse_object(r->body); o && o->contains("id")) {
                    t.id = str(o->at("id"));
                    last_id = t.id;
                    last_tenant = t.tenant;
                }
                t.submit_tries = 1;
                std::lock_guard lk(m);
                tasks.push_back(std::move(t));
            }
        }
    };
    joined_threads clients{stop, {}};
    for (int n = 0; n < client_threads; ++n)
        clients.threads.emplace_back(client, n);

    // Warm up (every replica in nginx's pool), then each replica in turn.
    std::this_thread::sleep_for(2s);
    std::vector<double> stop_seconds;
    for (int i = 0; i < replica_count; ++i) {
        auto& g = *c.replicas[static_cast<std::size_t>(i)];
        const double began = seconds_since(run_start);
        const auto rc = g.terminate(15s);
        ASSERT_TRUE(rc) << "replica " << i << " did not exit within 15 s of SIGTERM";
        EXPECT_EQ(*rc, 0) << "replica " << i << " exit code";
        const double exited = seconds_since(run_start);
        g.start();
        ASSERT_TRUE(c.wait_ready(i)) << "replica " << i << " not ready after its restart";
        stop_seconds.push_back(exited - began);
        std::cout << "[replicas] t=" << began << "s SIGTERM replica " << i << ", exited after "
                  << exited - began << " s, ready again at t=" << seconds_since(run_start) << "s"
                  << std::endl;
        // nginx puts a replica that refused a connection back after fail_timeout (1 s).
        std::this_thread::sleep_for(2s);
    }
    clients.join();

    for (std::size_t k = 0; k < failures.size() && k < 10; ++k)
        ADD_FAILURE() << "t=" << failures[k].at << "s " << failures[k].what;
    EXPECT_EQ(failures.size(), 0u) << "client requests through nginx that failed";
    EXPECT_GE(requests.load(), 300);

    for (std::size_t k = 0; k < tasks.size(); ++k)
        tasks[k].index = static_cast<int>(k);
    auto in = c.verification(tasks, run_start);
    const auto report = verify_run(in);
    const auto usage = c.nginx->read_usage();
    std::string per_replica;
    for (const auto& [addr, n] : usage.by_upstream)
        per_replica += " " + addr + "=" + std::to_string(n);
    std::cout << "[replicas] ROLLING SUMMARY requests=" << requests.load()
              << " failed=" << failures.size() << " creates=" << tasks.size()
              << " nginx: requests=" << usage.requests << " retried_on_another=" << usage.retried
              << " answered_by:" << per_replica << " | " << report.summary
              << " runtime=" << seconds_since(t0) << "s" << std::endl;
    if (HasFailure())
        std::cout << "[replicas] logs kept in " << c.keep("segue-replicas-rolling") << std::endl;
}

// Key-less POSTs, which nginx may not send again once it has sent them, flood nginx while
// each replica in turn drains and restarts. During shutdown_delay every answer closes its
// connection, so nginx connects anew for nearly every request to the draining replica and
// writes the request right after its connect. Closing the listener reset what the kernel had
// queued on it, and the drain closed a connection whose request had not been read yet: before
// the drain handled both, a restart under such a flood cost a few 502s (bench/drain.sh: 17-46
// in 8 restarts).
// One failure in the run is allowed, and why: a connection whose handshake is under way at the
// instant the listener closes is reset by the kernel, and nginx has sent its request by then.
// No call stops new handshakes while keeping the queue. A socket filter dropping SYNs can, but
// nginx then marks each replica failed a second later, when it has restarted and the next one
// drains: bench/drain.sh gave 344-752 502s with it (commit a004820). Measured in-process
// (4 threads connecting flat out through a drain): 33 of 600 drains reset one connection or
// more. Here it is rarer (one 502 in one CI run of 72,024 requests; none in the others); behind
// Kubernetes nothing arrives at that instant (shutdown_delay, deploy/README.md).
TEST_F(Replicas, DrainsUnderAFloodOfKeylessPostsFailAtMostOne) {
    constexpr int client_threads = 8;
    const auto t0 = steady::now();
    cluster c(14);
    const std::string target = "/v1/extensions/ext_00000000000000000000000000/cancel";
    const std::string key_header = auth(tenants[0]);
    std::atomic<bool> stop{false};
    std::atomic<long> answered{0};
    std::mutex m;
    std::vector<std::string> failures;  // guarded by m
    auto flood = [&] {
        std::optional<segue::test::http_connection> conn;
        while (!stop.load()) {
            if (!conn) {
                try {
                    conn.emplace(c.api(), 10s);
                } catch (const std::exception& e) {
                    std::lock_guard lk(m);
                    failures.push_back(std::string("connect to nginx: ") + e.what());
                    std::this_thread::sleep_for(10ms);
                    continue;
                }
            }
            auto r = conn->request("POST", target, "", {key_header});
            if (!r) {
                std::lock_guard lk(m);
                failures.push_back("no answer from nginx");
                conn.reset();
                continue;
            }
            ++answered;
            if (r->status != 404) {
                std::lock_guard lk(m);
                failures.push_back(std::to_string(r->status) + " " + r->body.substr(0, 200));
            }
            if (r->header("connection").value_or("") == "close")
                conn.reset();
        }
    };
    joined_threads clients{stop, {}};
    for (int n = 0; n < client_threads; ++n)
        clients.threads.emplace_back(flood);

    std::this_thread::sleep_for(1s);
    // Two rounds: at this load a restart of the old drain failed a request about one time in
    // three, so six restarts fail it with a probability above 0.9; the HttpServer.Drain* unit
    // tests check each case deterministically.
    for (int k = 0; k < 2 * replica_count; ++k) {
        const int i = k % replica_count;
        auto& g = *c.replicas[static_cast<std::size_t>(i)];
        const long before = answered.load();
        const auto rc = g.terminate(15s);
        ASSERT_TRUE(rc) << "replica " << i << " did not exit within 15 s of SIGTERM";
        EXPECT_EQ(*rc, 0) << "replica " << i << " exit code";
        g.start();
        ASSERT_TRUE(c.wait_ready(i)) << "replica " << i << " not ready after its restart";
        // Back in nginx's pool after fail_timeout (1 s), then busy again before the next one.
        std::this_thread::sleep_for(1500ms);
        std::cout << "[replicas] replica " << i << " restarted; " << answered.load() - before
                  << " answers meanwhile" << std::endl;
    }
    clients.join();

    for (std::size_t k = 0; failures.size() > 1 && k < failures.size() && k < 10; ++k)
        ADD_FAILURE() << failures[k];
    for (const auto& f : failures)
        std::cout << "[replicas] the one failure allowed: " << f << std::endl;
    EXPECT_LE(failures.size(), 1u) << "key-less POSTs through nginx that failed";
    EXPECT_GE(answered.load(), 3000) << "too little load to meet a drain";
    const auto usage = c.nginx->read_usage();
    std::cout << "[replicas] FLOOD SUMMARY answered=" << answered.load()
              << " failed=" << failures.size() << " nginx: requests=" << usage.requests
              << " retried_on_another=" << usage.retried << " runtime=" << seconds_since(t0) << "s"
              << std::endl;
    if (HasFailure())
        std::cout << "[replicas] logs kept in " << c.keep("segue-replicas-flood") << std::endl;
}

TEST_F(Replicas, OneKeyOnTwoReplicasAtOnceMakesOneTask) {
    constexpr int keys = 40;
    cluster c(13);
    const tenant_info& tenant = tenants[0];
    int split = 0;
    std::set<std::string> ids;
    for (int k = 0; k < keys; ++k) {
        json::object b;
        b["audio_url"] = c.up.audio_url();
        b["extend_after"] = 2;
        b["num_outputs"] = 1;
        b["prompt"] = "one key, two replicas " + std::to_string(k);
        b["provider"] = "musicgpt";
        const std::string body = json::serialize(b);
        const std::string key = "Idempotency-Key: same-" + std::to_string(k);
        std::array<std::optional<http_response>, 2> answers;
        std::barrier start(2);
        auto send = [&](int side) {
            std::optional<segue::test::http_connection> conn;
            try {
                conn.emplace(c.ports[static_cast<std::size_t>(side)], 10s);
            } catch (const std::exception&) {
            }
            start.arrive_and_wait();
            if (conn)
                answers[static_cast<std::size_t>(side)] =
                    conn->request("POST", "/v1/extensions", body,
                                  {auth(tenant), "Content-Type: application/json", key});
        };
        std::thread other(send, 1);
        send(0);
        other.join();
        std::array<std::string, 2> got;
        for (int side = 0; side < 2; ++side) {
            const auto& a = answers[static_cast<std::size_t>(side)];
            ASSERT_TRUE(a) << "replica " << side << " did not answer";
            ASSERT_EQ(a->status, 202) << a->body;
            got[static_cast<std::size_t>(side)] = str(parse_object(a->body)->at("id"));
            ids.insert(got[static_cast<std::size_t>(side)]);
        }
        split += got[0] != got[1];
    }
    EXPECT_EQ(split, 0) << "keys whose two creates made two tasks";
    auto list = get_json(c.api(), "/v1/extensions?limit=100", {auth(tenant)});
    ASSERT_TRUE(list);
    EXPECT_EQ(list->at("data").as_array().size(), static_cast<std::size_t>(keys))
        << "tasks the tenant has";
    auto credits = get_json(c.api(), "/v1/credits?limit=500", {auth(tenant)});
    ASSERT_TRUE(credits);
    int holds = 0;
    for (const auto& e : credits->at("entries").as_array())
        holds += str(e.at("kind")) == "hold";
    EXPECT_EQ(holds, keys) << "credit holds";
    std::cout << "[replicas] IDEMPOTENCY SUMMARY keys=" << keys << " tasks=" << ids.size()
              << " split_keys=" << split << std::endl;
}

// Two replicas with the default leases (engine.lease 2 min) and replica_timeout 2 s. A create on
// A hands its submit to A's engine, whose call the fake MusicGPT holds (it has the task, and
// sends no webhook during the test). A is SIGKILLed mid-call. B takes the job up once A has not
// shown it is alive for 2 s: the submit's outcome was never recorded, so B reconciles it
// (interrupted_submit) and does not send it again. Without the liveness beat the job would wait
// for its lease, two minutes.
TEST_F(Replicas, AKilledReplicasSubmitIsTakenUpAfterTheReplicaTimeout) {
    upstreams up(21);
    segue::test::pg_schema schema;
    const std::array<std::uint16_t, 2> ports = {segue::test::free_port(), segue::test::free_port()};
    std::vector<std::unique_ptr<gateway>> g;
    for (auto port : ports) {
        gateway_options o;
        o.port = port;
        o.storage_yaml = segue::test::postgres_storage_yaml(schema.url(), "@DIR@/blobs") +
                         "    replica_timeout: 2s\n";
        o.public_base_url = "http://127.0.0.1:" + std::to_string(ports[1]);  // B: A will be gone
        std::string cfg = gateway_config(o, up);
        const std::string short_lease = "  lease: 2s\n";
        const auto at = cfg.find(short_lease);
        ASSERT_NE(at, std::string::npos);
        cfg.replace(at, short_lease.size(), "  lease: 2m\n");
        g.push_back(std::make_unique<gateway>(cfg));
    }
    ASSERT_TRUE(up.musicgpt.control(
        R"({"webhook_delay_ms":600000,"faults":[{"match":"submit","delay_ms":60000,"times":1}]})"));
    auto submits = [&] {
        auto doc = up.musicgpt.get("/_control/requests?route=submit");
        return doc.contains("requests") ? doc.at("requests").as_array().size() : 0;
    };
    auto interrupted = [&] {
        auto r = call(ports[1], "GET", "/metrics", "", {}, 2s);
        return r ? segue::test::metric_value(
                       r->body, "segue_engine_jobs_total{kind=\"submit\",outcome=\"interrupted\"}")
                 : -1;
    };

    std::mt19937 rng(21);
    task_rec t = make_task(0, "killed-mid-call", rng);
    t.provider = "musicgpt";
    submit_task(ports[0], t, up.audio_url(), up.receiver.url("/hooks/" + t.tenant->name), rng, 10s);
    ASSERT_FALSE(t.id.empty()) << t.submit_error;
    const auto until = steady::now() + 10s;
    while (submits() == 0 && steady::now() < until)
        std::this_thread::sleep_for(20ms);
    ASSERT_EQ(submits(), 1u) << "the submit never reached the fake";
    std::this_thread::sleep_for(300ms);
    g[0]->kill();
    const auto killed_at = steady::now();

    while (interrupted() < 1 && steady::now() < killed_at + 40s)
        std::this_thread::sleep_for(50ms);
    const auto took =
        std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - killed_at);
    ASSERT_GE(interrupted(), 1) << "B never took up the killed replica's submit\n"
                                << grep_logs(g[1]->logs(), "alive");
    std::cout << "[replicas] the killed replica's submit was taken up " << took.count()
              << " ms after the kill (replica_timeout 2 s, engine.lease 2 min)" << std::endl;
    EXPECT_LT(took, 15s);
    EXPECT_EQ(submits(), 1u) << "the interrupted submit was sent again blindly";
    EXPECT_NE(grep_logs(g[1]->logs(), "replicas stopped showing they are alive"), "");
    // A's engine and dispatcher were both taken for dead (by B's engine or its dispatcher,
    // whichever beat first), and A's one job lease was freed (its deliveries may have been
    // sent before the kill).
    auto freed = [&](const std::string& series) {
        auto r = call(ports[1], "GET", "/metrics", "", {}, 2s);
        return r ? segue::test::metric_value(r->body, series) : -1;
    };
    const auto counted_by = steady::now() + 5s;
    while (freed("segue_lease_owners_freed_total") < 2 && steady::now() < counted_by)
        std::this_thread::sleep_for(50ms);
    EXPECT_EQ(freed("segue_lease_owners_freed_total"), 2);
    EXPECT_EQ(freed("segue_leases_freed_total{kind=\"job\"}"), 1);
}

// Webhook delivery, measured in-process with the real pieces: a fresh durable SQLite store
// (store::open_sqlite, synchronous FULL as in production), events written by
// core::engine::append_event (the event and its outbox delivery in one write unit, as the engine
// does), the real events::dispatcher (claims under a lease, signs with the tenant's Standard
// Webhooks key, POSTs with a real net::http_client, records the outcome) on one IO thread, as
// gateway/app.cpp runs it on the pool's main context. The receiver is given by --url (nginx
// answering 204, started by bench/webhooks.sh).
//
// Phases (each printed as it ends; a RESULT line at the end for the script):
//   sign        CPU per delivery_body() and per signature_header(), in a loop.
//   baseline    the same signed POSTs (same body shape, same client options, same concurrency)
//               sent straight by C coroutines, no store: requests/s and per-request latency.
//   throughput  N events (with their deliveries) pre-loaded in tasks of K events, then the
//               dispatcher starts; timed until the last delivery is recorded as delivered.
//   latency     a producer thread writes R events/s for S seconds (open loop, one write unit per
//               event, round robin over M tasks); the outbox listener wakes the dispatcher. Then
//               delivered_at - event_at of every delivery (ms resolution, from the rows).
// For each phase: CPU seconds of the IO thread (dispatcher + HTTP client), the store's writer and
// reader threads (from /proc/self/task/<tid>/schedstat) and the receiver's processes
// (--receiver-pids); the store's commits and units; mean write-unit and HTTP times (from the
// metrics the code under test keeps anyway).
//
//   webhook_bench --url http://127.0.0.1:PORT/hook --dir DIR [--events 20000] [--per-task 10]
//       [--concurrency 64] [--batch 64] [--rate 1000] [--seconds 10] [--tasks 200] [--keys 1]
//       [--sync full|normal] [--phases sign,baseline,throughput,latency] [--receiver-pids "1 2"]

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json.hpp>

#include <fcntl.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <condition_variable>
#include <cstdio>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <future>
#include <iostream>
#include <mutex>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <tuple>
#include <utility>
#include <vector>

#include "gateway/config/settings.hpp"
#include "gateway/core/engine.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/model.hpp"
#include "gateway/events/dispatcher.hpp"
#include "gateway/events/signer.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/net/http_client.hpp"
#include "gateway/store/db.hpp"
#include "gateway/store/store.hpp"
#include "gateway/util/crypto.hpp"

namespace asio = boost::asio;
namespace json = boost::json;
using namespace segue;
using steady = std::chrono::steady_clock;

namespace {

// ---------------------------------------------------------------- options

struct options {
    std::string url;
    std::string dir;
    int events = 20000;
    int per_task = 10;
    int concurrency = 64;
    int batch = 64;
    int rate = 1000;
    int seconds = 10;
    int tasks = 200;
    int keys = 1;
    bool sync_full = true;
    std::string phases = "sign,baseline,throughput,latency";
    std::vector<int> receiver_pids;
};

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "webhook_bench: " << why
              << "\nusage: webhook_bench --url URL --dir DIR [--events N] [--per-task K] "
                 "[--concurrency C] [--batch B] [--rate R] [--seconds S] [--tasks M] [--keys 1] "
                 "[--sync full|normal] [--phases sign,baseline,throughput,latency] "
                 "[--receiver-pids \"PID...\"]\n";
    std::exit(2);
}

options parse_options(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string k = argv[i];
        if (i + 1 >= argc)
            usage("missing value for " + k);
        const std::string v = argv[++i];
        auto num = [&](int lo) {
            int n = 0;
            try {
                n = std::stoi(v);
            } catch (const std::exception&) {
                usage("bad number for " + k + ": " + v);
            }
            if (n < lo)
                usage(k + " must be >= " + std::to_string(lo));
            return n;
        };
        if (k == "--url")
            o.url = v;
        else if (k == "--dir")
            o.dir = v;
        else if (k == "--events")
            o.events = num(1);
        else if (k == "--per-task")
            o.per_task = num(1);
        else if (k == "--concurrency")
            o.concurrency = num(1);
        else if (k == "--batch")
            o.batch = num(1);
        else if (k == "--rate")
            o.rate = num(1);
        else if (k == "--seconds")
            o.seconds = num(1);
        else if (k == "--tasks")
            o.tasks = num(1);
        else if (k == "--keys")
            o.keys = num(1);
        else if (k == "--sync") {
            if (v != "full" && v != "normal")
                usage("--sync is full or normal");
            o.sync_full = v == "full";
        } else if (k == "--phases")
            o.phases = v;
        else if (k == "--receiver-pids") {
            std::istringstream in(v);
            int p = 0;
            while (in >> p)
                o.receiver_pids.push_back(p);
        } else
            usage("unknown option " + k);
    }
    if (o.url.empty() || o.dir.empty())
        usage("--url and --dir are required");
    return o;
}

bool has_phase(const options& o, const std::string& name) {
    return ("," + o.phases + ",").find("," + name + ",") != std::string::npos;
}

// ---------------------------------------------------------------- measuring helpers

std::string fmt(double v, int decimals = 1) {
    char buf[64];
    std::snprintf(buf, sizeof buf, "%.*f", decimals, v);
    return buf;
}

pid_t this_tid() {
    return static_cast<pid_t>(::syscall(SYS_gettid));
}

// Seconds on a CPU of one task (thread or single-threaded process), and seconds it waited,
// runnable, for a CPU, from schedstat (ns).
std::pair<double, double> schedstat(const std::string& path) {
    std::ifstream in(path);
    unsigned long long run = 0, wait = 0;
    if (!(in >> run >> wait))
        return {0.0, 0.0};
    return {static_cast<double>(run) / 1e9, static_cast<double>(wait) / 1e9};
}
std::string task_path(pid_t tid) {
    return "/proc/self/task/" + std::to_string(tid);
}

// The scheduler state of a thread: R running or runnable, S sleeping (idle: a futex, epoll),
// D uninterruptible (here: the disk, fsync), ...
char thread_state(pid_t tid) {
    std::ifstream in(task_path(tid) + "/stat");
    std::string all;
    std::getline(in, all);
    const auto close = all.rfind(')');
    return close != std::string::npos && close + 2 < all.size() ? all[close + 2] : '?';
}

struct state_counts {
    long running = 0, disk = 0, idle = 0, n = 0;
    void add(char c) {
        ++n;
        if (c == 'R')
            ++running;
        else if (c == 'D')
            ++disk;
        else
            ++idle;
    }
    std::string text() const {
        if (n == 0)
            return "no samples";
        auto p = [&](long v) {
            return fmt(100.0 * static_cast<double>(v) / static_cast<double>(n), 0);
        };
        return "running " + p(running) + " %, disk wait (D) " + p(disk) + " %, idle " + p(idle) +
               " % of " + std::to_string(n) + " samples";
    }
};

// All threads of this process (utime + stime, clock ticks).
double process_cpu() {
    std::ifstream in("/proc/self/stat");
    std::string all((std::istreambuf_iterator<char>(in)), std::istreambuf_iterator<char>());
    const auto close = all.rfind(')');
    if (close == std::string::npos)
        return 0.0;
    std::istringstream rest(all.substr(close + 2));
    std::string f;
    double ticks = 0;
    for (int i = 0; i < 13 && rest >> f; ++i)
        if (i == 11 || i == 12)
            ticks += std::stod(f);
    return ticks / static_cast<double>(::sysconf(_SC_CLK_TCK));
}

double thread_cpu_now() {
    timespec ts{};
    ::clock_gettime(CLOCK_THREAD_CPUTIME_ID, &ts);
    return static_cast<double>(ts.tv_sec) + static_cast<double>(ts.tv_nsec) / 1e9;
}

struct cpu_snapshot {
    double io = 0, writer = 0, reader = 0, process = 0, receiver = 0;
    double io_wait = 0, writer_wait = 0;  // runnable but not running (other load)
};

struct tids {
    pid_t io = 0, writer = 0, reader = 0;
};

cpu_snapshot take_cpu(const tids& t, const std::vector<int>& receiver) {
    cpu_snapshot s;
    std::tie(s.io, s.io_wait) = schedstat(task_path(t.io) + "/schedstat");
    std::tie(s.writer, s.writer_wait) = schedstat(task_path(t.writer) + "/schedstat");
    s.reader = schedstat(task_path(t.reader) + "/schedstat").first;
    s.process = process_cpu();
    for (int p : receiver)
        s.receiver += schedstat("/proc/" + std::to_string(p) + "/schedstat").first;
    return s;
}

// Nearest-rank percentile of a sorted vector.
double pct(const std::vector<double>& sorted, double p) {
    if (sorted.empty())
        return 0.0;
    auto rank = static_cast<std::size_t>(std::ceil(p / 100.0 * static_cast<double>(sorted.size())));
    rank = std::clamp<std::size_t>(rank, 1, sorted.size());
    return sorted[rank - 1];
}

// Thousands separators, for counts and rates.
std::string grouped(double v) {
    auto n = static_cast<long long>(std::llround(v));
    std::string s = std::to_string(n < 0 ? -n : n);
    for (int i = static_cast<int>(s.size()) - 3; i > 0; i -= 3)
        s.insert(static_cast<std::size_t>(i), ",");
    return (n < 0 ? "-" : "") + s;
}

// Waits for a number of store completions (they run on the store's threads).
class completions {
  public:
    void add(int n) {
        std::lock_guard lk(m_);
        pending_ += n;
    }
    void done(std::exception_ptr e) {
        std::lock_guard lk(m_);
        if (e && !error_)
            error_ = e;
        if (--pending_ == 0)
            cv_.notify_all();
    }
    void wait() {
        std::unique_lock lk(m_);
        cv_.wait(lk, [&] { return pending_ == 0; });
        if (error_)
            std::rethrow_exception(error_);
    }

  private:
    std::mutex m_;
    std::condition_variable cv_;
    int pending_ = 0;
    std::exception_ptr error_;
};

void write_sync(store::store& st, store::store::unit fn) {
    completions c;
    c.add(1);
    st.submit_write(std::move(fn), [&c](std::exception_ptr e) { c.done(e); });
    c.wait();
}
void read_sync(store::store& st, store::store::unit fn) {
    completions c;
    c.add(1);
    st.submit_read(std::move(fn), [&c](std::exception_ptr e) { c.done(e); });
    c.wait();
}

// One synced 4 KiB append, as a WAL commit does: the disk's cost per commit.
double fsync_ms(const std::string& dir) {
    const std::string path = dir + "/fsync-probe";
    const int fd = ::open(path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (fd < 0)
        return 0.0;
    std::string block(4096, 'x');
    const int n = 200;
    const auto t0 = steady::now();
    for (int i = 0; i < n; ++i) {
        if (::write(fd, block.data(), block.size()) < 0)
            break;
        ::fdatasync(fd);
    }
    const double ms = std::chrono::duration<double, std::milli>(steady::now() - t0).count() / n;
    ::close(fd);
    ::unlink(path.c_str());
    return ms;
}

// ---------------------------------------------------------------- the domain data

constexpr std::string_view lifecycle[] = {
    core::event_type::queued,       core::event_type::submitted,    core::event_type::output_ready,
    core::event_type::output_ready, core::event_type::lyrics_ready, core::event_type::cover_ready,
    core::event_type::succeeded,
};

// Tasks whose request names the receiver as webhook_url, as the API stores them.
std::vector<store::task_row> make_tasks(const std::string& tenant, int n, const std::string& url) {
    core::extend_request req;
    req.source = core::source_kind::url;
    req.audio_url = "https://example.com/song.wav";
    req.extend_after = 5;
    req.num_outputs = 2;
    req.length = 30;
    req.webhook_url = url;
    req.metadata_json = R"({"customer_ref":"bench-0001"})";
    const std::string request_json = core::request_to_json(req);
    const auto now = core::now_ms();
    std::vector<store::task_row> out;
    out.reserve(static_cast<std::size_t>(n));
    for (int i = 0; i < n; ++i) {
        store::task_row t;
        t.id = util::random_id("ext_");
        t.tenant = tenant;
        t.status = "processing";
        t.provider = "sandbox";
        t.request_json = request_json;
        t.num_outputs = 2;
        t.created_at = t.updated_at = now;
        out.push_back(std::move(t));
    }
    return out;
}

json::object event_data(int round) {
    json::object d;
    if (lifecycle[round % std::size(lifecycle)] == core::event_type::output_ready)
        d["index"] = 1 + round % 2;
    return d;
}

void insert_tasks(store::store& st, const std::vector<store::task_row>& tasks) {
    completions c;
    for (std::size_t i = 0; i < tasks.size(); i += 500) {
        const std::size_t end = std::min(tasks.size(), i + 500);
        std::vector<store::task_row> part(tasks.begin() + static_cast<std::ptrdiff_t>(i),
                                          tasks.begin() + static_cast<std::ptrdiff_t>(end));
        c.add(1);
        st.submit_write(
            [part = std::move(part)](store::transaction& tx) {
                for (const auto& t : part)
                    tx.insert_task(t);
            },
            [&c](std::exception_ptr e) { c.done(e); });
    }
    c.wait();
}

// ---------------------------------------------------------------- baseline: signed POSTs, no store

struct baseline_state {
    net::http_client* client = nullptr;
    std::string url;
    std::vector<std::string> keys;
    std::chrono::milliseconds timeout{15000};
    std::vector<store::delivery_row> rows;
    std::size_t next = 0;
    std::size_t measured_from = 0;  // rows before this index are the warm-up
    std::vector<double> latency_ms;
    int failures = 0;
    int non2xx = 0;
    int running = 0;
    steady::time_point warm_done{};  // written on the IO thread before `warmed` is set
    std::atomic<bool> warmed{false};
    steady::time_point finished{};
    std::promise<void> done;
};

// What dispatcher::impl::deliver does before and around client.send, without the store.
asio::awaitable<void> baseline_worker(baseline_state* st) {
    while (st->next < st->rows.size()) {
        const std::size_t i = st->next++;
        if (i == st->measured_from) {
            st->warm_done = steady::now();
            st->warmed.store(true, std::memory_order_release);
        }
        const auto& d = st->rows[i];
        const auto t0 = steady::now();
        net::request req;
        req.method = "POST";
        req.url = st->url;
        req.body = events::delivery_body(d);
        const std::int64_t ts = core::now_ms() / 1000;
        req.headers = {
            {"Content-Type", "application/json"},
            {"webhook-id", d.event_id},
            {"webhook-timestamp", std::to_string(ts)},
            {"webhook-signature", events::signature_header(st->keys, d.event_id, ts, req.body)},
        };
        req.timeout = st->timeout;
        req.metrics_host = "baseline";
        auto r = co_await st->client->send(std::move(req));
        const double ms = std::chrono::duration<double, std::milli>(steady::now() - t0).count();
        if (!r.ok())
            ++st->failures;
        else if (r.res.status / 100 != 2)
            ++st->non2xx;
        if (i >= st->measured_from)
            st->latency_ms.push_back(ms);
    }
}

store::delivery_row sample_row(const store::task_row& task, int round) {
    store::delivery_row d;
    d.id = util::random_id("dlv_");
    d.event_id = util::random_id("evt_");
    d.task_id = task.id;
    d.tenant = task.tenant;
    d.seq = round + 1;
    d.status = "pending";
    d.event_at = d.created_at = d.updated_at = d.next_at = core::now_ms();
    d.event_type = std::string(lifecycle[round % std::size(lifecycle)]);
    // The data engine::append_event writes: the caller's, then task_id, status, provider and
    // the request's metadata.
    json::object data = event_data(round);
    data["task_id"] = task.id;
    data["status"] = task.status;
    data["provider"] = task.provider;
    data["metadata"] = json::object{{"customer_ref", "bench-0001"}};
    d.event_data_json = json::serialize(data);
    return d;
}

// ---------------------------------------------------------------- the run

struct counters {
    metrics::counter* delivered = nullptr;
    metrics::counter* dead = nullptr;
    metrics::counter* attempts_2xx = nullptr;
    metrics::gauge* in_flight = nullptr;
    metrics::histogram* write_latency = nullptr;
    metrics::histogram* http_webhook = nullptr;
    metrics::histogram* http_baseline = nullptr;
};

struct hist_snapshot {
    double sum = 0;
    std::uint64_t count = 0;
};
hist_snapshot snap(const metrics::histogram* h) {
    return {h->sum(), h->count()};
}
// Mean in ms of what was observed between two snapshots.
double mean_ms(const hist_snapshot& a, const hist_snapshot& b) {
    return b.count > a.count ? (b.sum - a.sum) / static_cast<double>(b.count - a.count) * 1e3 : 0.0;
}

struct phase_meter {
    cpu_snapshot cpu0;
    store::store_stats st0;
    hist_snapshot write0, http0;
    steady::time_point t0;
};

struct phase_result {
    // The IO or writer thread spent more than this share of the phase runnable but without a
    // CPU: other load on the machine set the figures (the run should be discarded).
    static constexpr double starved_share = 0.10;
    bool starved() const {
        return seconds > 0 && std::max(cpu.io_wait, cpu.writer_wait) / seconds > starved_share;
    }
    double seconds = 0;
    cpu_snapshot cpu;  // deltas
    std::uint64_t commits = 0, units = 0;
    double write_ms = 0, http_ms = 0;
    std::uint64_t writes = 0;
};

phase_meter meter_start(const tids& t, const options& o, store::store& st,
                        const metrics::histogram* http, const counters& m) {
    phase_meter p;
    p.cpu0 = take_cpu(t, o.receiver_pids);
    p.st0 = st.stats();
    p.write0 = snap(m.write_latency);
    p.http0 = snap(http);
    p.t0 = steady::now();
    return p;
}

phase_result meter_stop(const phase_meter& p, const tids& t, const options& o, store::store& st,
                        const metrics::histogram* http, const counters& m, steady::time_point end) {
    phase_result r;
    r.seconds = std::chrono::duration<double>(end - p.t0).count();
    const auto c = take_cpu(t, o.receiver_pids);
    r.cpu.io = c.io - p.cpu0.io;
    r.cpu.writer = c.writer - p.cpu0.writer;
    r.cpu.reader = c.reader - p.cpu0.reader;
    r.cpu.process = c.process - p.cpu0.process;
    r.cpu.receiver = c.receiver - p.cpu0.receiver;
    r.cpu.io_wait = c.io_wait - p.cpu0.io_wait;
    r.cpu.writer_wait = c.writer_wait - p.cpu0.writer_wait;
    const auto s = st.stats();
    r.commits = s.commits - p.st0.commits;
    r.units = s.units - p.st0.units;
    const auto w = snap(m.write_latency);
    r.write_ms = mean_ms(p.write0, w);
    r.writes = w.count - p.write0.count;
    r.http_ms = mean_ms(p.http0, snap(http));
    return r;
}

// "CPU µs per item" of each thread, and its share of the wall time.
void print_cpu(const phase_result& r, double items, bool store_threads) {
    auto line = [&](const char* name, double s, double wait) {
        std::cout << "    " << name << ": " << fmt(s / items * 1e6) << " us/delivery, "
                  << fmt(100.0 * s / r.seconds, 0) << " % of a core";
        if (wait >= 0)
            std::cout << " (and " << fmt(100.0 * wait / r.seconds, 0)
                      << " % runnable, waiting for a CPU)";
        std::cout << "\n";
    };
    line("IO thread (dispatcher + HTTP client)", r.cpu.io, r.cpu.io_wait);
    if (store_threads) {
        line("store writer thread", r.cpu.writer, r.cpu.writer_wait);
        line("store reader thread", r.cpu.reader, -1);
    }
    const double rest =
        r.cpu.process - r.cpu.io - (store_threads ? r.cpu.writer + r.cpu.reader : 0);
    line("other threads (bench driver, resolver; 10 ms ticks)", std::max(0.0, rest), -1);
    if (r.cpu.receiver > 0)
        line("receiver (nginx workers)", r.cpu.receiver, -1);
    if (r.starved())
        std::cout << "  WARNING: a thread under test waited for a CPU more than "
                  << fmt(phase_result::starved_share * 100, 0)
                  << " % of the phase: other load set these figures; discard the run\n";
}

struct results {
    double sign_body_us = 0, sign_hmac_us = 0;
    double base_rps = 0, base_p50 = 0, base_p99 = 0;
    double tp_dps = 0;
    double lat_p50 = 0, lat_p90 = 0, lat_p99 = 0, lat_max = 0;
    double lat_rate = 0;
    int problems = 0;
    std::string starved;  // phases with the WARNING above, comma-separated
    void note(const char* phase, const phase_result& r) {
        if (r.starved())
            starved += (starved.empty() ? "" : ",") + std::string(phase);
    }
};

void phase_sign(const options& o, const std::vector<std::string>& keys, results& res) {
    auto tasks = make_tasks("bench", 1, o.url);
    std::vector<store::delivery_row> rows;
    for (int i = 0; i < 64; ++i)
        rows.push_back(sample_row(tasks[0], i));
    const int n = 50000;
    std::size_t sink = 0;
    double t0 = thread_cpu_now();
    std::vector<std::string> bodies;
    for (int i = 0; i < n; ++i)
        sink += events::delivery_body(rows[static_cast<std::size_t>(i) % rows.size()]).size();
    const double body_s = thread_cpu_now() - t0;
    for (const auto& r : rows)
        bodies.push_back(events::delivery_body(r));
    t0 = thread_cpu_now();
    for (int i = 0; i < n; ++i) {
        const auto k = static_cast<std::size_t>(i) % rows.size();
        sink += events::signature_header(keys, rows[k].event_id, 1700000000 + i, bodies[k]).size();
    }
    const double sign_s = thread_cpu_now() - t0;
    res.sign_body_us = body_s / n * 1e6;
    res.sign_hmac_us = sign_s / n * 1e6;
    std::cout << "\n== sign: " << n << " iterations (CPU time of this thread)\n"
              << "  delivery_body (JSON, " << bodies[2].size()
              << " bytes): " << fmt(res.sign_body_us, 2) << " us\n"
              << "  signature_header (" << keys.size()
              << " key, HMAC-SHA256 + base64): " << fmt(res.sign_hmac_us, 2) << " us"
              << (sink == 0 ? " (?)" : "") << "\n";
}

}  // namespace

int main(int argc, char** argv) {
    const options o = parse_options(argc, argv);
    log::set_level(log::level::warn);
    std::filesystem::create_directories(o.dir);

    // ---- configuration: production defaults, the bench's concurrency and batch
    config::settings settings;
    std::vector<std::string> secrets;
    for (int i = 0; i < o.keys; ++i)
        secrets.push_back(events::generate_secret());
    for (const char* name : {"bench", "bench-tp", "bench-lat"}) {
        config::tenant_settings t;
        t.name = name;
        t.webhook_secrets = secrets;
        settings.tenants.push_back(t);
    }
    settings.webhooks.concurrency = o.concurrency;
    settings.webhooks.batch = o.batch;
    std::vector<std::string> keys;
    for (const auto& s : secrets) {
        std::string k, err;
        if (!events::parse_secret(s, k, err))
            throw std::runtime_error(err);
        keys.push_back(k);
    }

    // ---- the store, as gateway/app.cpp opens it
    store::sqlite_options so;
    so.path = o.dir + "/segue.db";
    so.synchronous_full = o.sync_full;
    auto st = store::open_sqlite(so);
    metrics::registry reg;
    store::db db(*st, reg);

    tids t;
    write_sync(*st, [&t](store::transaction&) { t.writer = this_tid(); });
    read_sync(*st, [&t](store::transaction&) { t.reader = this_tid(); });

    // ---- one IO thread, like the pool's main context that runs the dispatcher in production
    asio::io_context ioc;
    auto guard = asio::make_work_guard(ioc);
    std::promise<pid_t> io_tid;
    std::thread io([&ioc, &io_tid] {
        io_tid.set_value(this_tid());
        ioc.run();
    });
    t.io = io_tid.get_future().get();

    // The webhook client of gateway/app.cpp: plain http allowed (the receiver is http://), the
    // guard's hook installed (loopback allowed, as fetch.allow_cidrs would), 64 KiB response cap,
    // one idle connection per possible delivery in flight.
    net::client_options wo;
    wo.allow_plain_http = true;
    wo.request_timeout =
        std::chrono::duration_cast<std::chrono::milliseconds>(settings.webhooks.timeout);
    wo.max_response_bytes = 64 * 1024;
    wo.max_idle_per_host = static_cast<std::size_t>(settings.webhooks.concurrency);
    wo.check_endpoints = [](std::string_view, const std::vector<net::resolved_endpoint>&)
        -> std::optional<std::string> { return std::nullopt; };
    auto client = std::make_unique<net::http_client>(ioc, wo, reg);
    auto base_client = std::make_unique<net::http_client>(ioc, wo, reg);
    auto disp = std::make_unique<events::dispatcher>(ioc, db, settings, reg, *client);
    st->set_commit_listener([d = disp.get()](const store::commit_notice& n) {
        if (n.outbox)
            d->notify();
    });

    counters m;
    m.delivered =
        &reg.counter_family("segue_webhook_deliveries_total", "", {"outcome"}).with({"delivered"});
    m.dead = &reg.counter_family("segue_webhook_deliveries_total", "", {"outcome"}).with({"dead"});
    m.attempts_2xx =
        &reg.counter_family("segue_webhook_attempts_total", "", {"result"}).with({"2xx"});
    m.in_flight = &reg.make_gauge("segue_webhook_deliveries_in_flight", "");
    m.write_latency = &reg.histogram_family("segue_store_operation_duration_seconds", "", {"op"},
                                            metrics::default_latency_buckets())
                           .with({"write"});
    auto& http_fam = reg.histogram_family(
        "segue_upstream_request_duration_seconds", "", {"host"},
        {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120});
    m.http_webhook = &http_fam.with({"webhook"});
    m.http_baseline = &http_fam.with({"baseline"});

    results res;
    std::cout << "# receiver " << o.url << "; store " << so.path << " (synchronous "
              << (o.sync_full ? "FULL" : "NORMAL") << ", WAL); webhooks.concurrency "
              << o.concurrency << ", batch " << o.batch << ", " << o.keys
              << " signing key(s); disk: " << fmt(fsync_ms(o.dir), 3)
              << " ms per synced 4 KiB append\n";

    if (has_phase(o, "sign"))
        phase_sign(o, keys, res);

    // ---------------------------------------------------------------- baseline
    if (has_phase(o, "baseline")) {
        auto tasks = make_tasks("bench", std::max(1, o.events / o.per_task), o.url);
        baseline_state bs;
        bs.client = base_client.get();
        bs.url = o.url;
        bs.keys = keys;
        bs.measured_from = static_cast<std::size_t>(o.concurrency) * 4;
        const std::size_t total = bs.measured_from + static_cast<std::size_t>(o.events);
        bs.rows.reserve(total);
        for (std::size_t i = 0; i < total; ++i)
            bs.rows.push_back(
                sample_row(tasks[i % tasks.size()], static_cast<int>(i / tasks.size()) % 7));
        bs.running = o.concurrency;
        auto fut = bs.done.get_future();
        phase_meter pm;
        bool metered = false;
        for (int i = 0; i < o.concurrency; ++i)
            asio::co_spawn(ioc, baseline_worker(&bs), [&bs](std::exception_ptr e) {
                if (e)
                    ++bs.failures;
                if (--bs.running == 0) {
                    bs.finished = steady::now();
                    bs.done.set_value();
                }
            });
        // Meter from the end of the warm-up (approximately: polled).
        while (fut.wait_for(std::chrono::milliseconds(1)) != std::future_status::ready) {
            if (!metered && bs.warmed.load(std::memory_order_acquire)) {
                pm = meter_start(t, o, *st, m.http_baseline, m);
                metered = true;
            }
        }
        if (!metered)
            pm = meter_start(t, o, *st, m.http_baseline, m);
        const auto r = meter_stop(pm, t, o, *st, m.http_baseline, m, bs.finished);
        const double secs = std::chrono::duration<double>(bs.finished - bs.warm_done).count();
        std::sort(bs.latency_ms.begin(), bs.latency_ms.end());
        res.base_rps = static_cast<double>(bs.latency_ms.size()) / secs;
        res.base_p50 = pct(bs.latency_ms, 50);
        res.base_p99 = pct(bs.latency_ms, 99);
        std::cout << "\n== baseline: " << grouped(bs.latency_ms.size())
                  << " signed POSTs straight from the client, " << o.concurrency
                  << " in flight, no store (after " << bs.measured_from << " warm-up)\n"
                  << "  " << grouped(res.base_rps) << " requests/s (" << fmt(secs, 2)
                  << " s); latency p50 " << fmt(res.base_p50, 2) << " ms, p90 "
                  << fmt(pct(bs.latency_ms, 90), 2) << " ms, p99 " << fmt(res.base_p99, 2)
                  << " ms, max " << fmt(bs.latency_ms.empty() ? 0 : bs.latency_ms.back(), 2)
                  << " ms; failures " << bs.failures << ", non-2xx " << bs.non2xx << "\n"
                  << "  CPU:\n";
        print_cpu(r, static_cast<double>(bs.latency_ms.size()), false);
        res.note("baseline", r);
        if (bs.failures + bs.non2xx > 0)
            ++res.problems;
    }

    // ---------------------------------------------------------------- throughput
    double delivered_before = m.delivered->value();
    bool started = false;
    if (has_phase(o, "throughput")) {
        const int ntasks = std::max(1, (o.events + o.per_task - 1) / o.per_task);
        auto tasks = make_tasks("bench-tp", ntasks, o.url);
        const auto p0 = steady::now();
        insert_tasks(*st, tasks);
        // Round robin over the tasks (round r of every task, then round r + 1), as a backlog of
        // concurrent tasks grows; 500 events per write unit.
        completions c;
        int written = 0;
        std::vector<std::pair<int, int>> part;  // (task, round)
        auto flush = [&] {
            if (part.empty())
                return;
            c.add(1);
            st->submit_write(
                [part, &tasks](store::transaction& tx) {
                    for (auto [ti, round] : part)
                        core::engine::append_event(tx, tasks[static_cast<std::size_t>(ti)],
                                                   lifecycle[round % std::size(lifecycle)],
                                                   event_data(round));
                },
                [&c](std::exception_ptr e) { c.done(e); });
            part.clear();
        };
        for (int round = 0; written < o.events; ++round)
            for (int ti = 0; ti < ntasks && written < o.events; ++ti) {
                if (round * ntasks + ti >= o.events)
                    break;
                part.emplace_back(ti, round);
                ++written;
                if (part.size() == 500)
                    flush();
            }
        flush();
        c.wait();
        const double load_s = std::chrono::duration<double>(steady::now() - p0).count();

        // One real body, for the record.
        std::size_t body_bytes = 0;
        read_sync(*st, [&](store::transaction& tx) {
            auto ds = tx.list_deliveries("bench-tp", "pending", "", 1, "");
            if (ds.empty())
                return;
            auto evs = tx.get_events(ds[0].task_id, ds[0].seq - 1, 1);
            if (!evs.empty()) {
                ds[0].event_type = evs[0].type;
                ds[0].event_data_json = evs[0].data_json;
            }
            body_bytes = events::delivery_body(ds[0]).size();
        });
        std::cout << "\n== throughput: " << grouped(written) << " events in " << ntasks
                  << " tasks (" << o.per_task << " each) pre-loaded in " << fmt(load_s, 2)
                  << " s, one pending delivery each (bodies ~" << body_bytes << " bytes)\n";

        delivered_before = m.delivered->value();
        const double target = delivered_before + written;
        auto pm = meter_start(t, o, *st, m.http_webhook, m);
        disp->start();
        started = true;
        // Poll the dispatcher's own counter (incremented after the outcome is committed).
        double inflight_sum = 0;
        long samples = 0;
        state_counts writer_states, io_states;
        std::vector<double> per_second;
        double last_count = delivered_before;
        auto next_tick = pm.t0 + std::chrono::seconds(1);
        steady::time_point end = pm.t0;
        const auto give_up = pm.t0 + std::chrono::seconds(300);
        for (;;) {
            const double v = m.delivered->value();
            const auto now = steady::now();
            if (v >= target) {
                end = now;
                break;
            }
            if (now > give_up) {
                end = now;
                std::cout << "  TIMEOUT after 300 s\n";
                ++res.problems;
                break;
            }
            inflight_sum += m.in_flight->value();
            ++samples;
            writer_states.add(thread_state(t.writer));
            io_states.add(thread_state(t.io));
            if (now >= next_tick) {
                per_second.push_back(v - last_count);
                last_count = v;
                next_tick += std::chrono::seconds(1);
            }
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        const auto r = meter_stop(pm, t, o, *st, m.http_webhook, m, end);
        const double n = m.delivered->value() - delivered_before;
        res.tp_dps = n / r.seconds;
        store::delivery_summary sum;
        read_sync(*st, [&sum](store::transaction& tx) { sum = tx.summarize_deliveries(); });
        const auto claims =
            r.units > static_cast<std::uint64_t>(n) ? r.units - static_cast<std::uint64_t>(n) : 0;
        std::cout << "  " << grouped(n) << " delivered in " << fmt(r.seconds, 2)
                  << " s: " << grouped(res.tp_dps) << " deliveries/s; mean in flight "
                  << fmt(samples ? inflight_sum / static_cast<double>(samples) : 0, 1) << " of "
                  << o.concurrency << "; left pending " << sum.pending << ", dead " << sum.dead
                  << "\n  per second:";
        for (double v : per_second)
            std::cout << " " << grouped(v);
        std::cout
            << "\n  store: " << grouped(r.commits) << " commits (" << grouped(r.commits / r.seconds)
            << "/s), " << grouped(r.units) << " write units = " << grouped(claims) << " claims ("
            << fmt(claims ? n / static_cast<double>(claims) : 0, 1) << " deliveries each) + "
            << grouped(n) << " outcomes; "
            << fmt(r.commits ? static_cast<double>(r.units) / static_cast<double>(r.commits) : 0, 1)
            << " units per commit; a write unit took " << fmt(r.write_ms, 2)
            << " ms on average (queue + run + commit + fsync)\n"
            << "  HTTP: " << fmt(r.http_ms, 2)
            << " ms per send on average (client metric)\n  writer thread: " << writer_states.text()
            << "\n  IO thread: " << io_states.text() << "\n  CPU:\n";
        print_cpu(r, n, true);
        res.note("throughput", r);
        if (sum.pending != 0 || sum.dead != 0)
            ++res.problems;
    }

    // ---------------------------------------------------------------- latency
    if (has_phase(o, "latency")) {
        auto tasks = make_tasks("bench-lat", o.tasks, o.url);
        insert_tasks(*st, tasks);
        if (!started) {
            disp->start();
            started = true;
        }
        std::this_thread::sleep_for(std::chrono::milliseconds(600));  // let it go idle
        const int total = o.rate * o.seconds;
        const double before = m.delivered->value();
        auto pm = meter_start(t, o, *st, m.http_webhook, m);

        struct producer_stats {
            std::mutex mu;
            std::vector<double> commit_ms;
            double max_lag_ms = 0;
            std::atomic<int> failed{0};
        } ps;
        completions c;
        c.add(total);
        std::thread producer([&] {
            const auto period = std::chrono::nanoseconds(1'000'000'000LL / o.rate);
            const auto t0 = steady::now();
            for (int i = 0; i < total; ++i) {
                const auto due = t0 + period * i;
                std::this_thread::sleep_until(due);
                const auto now = steady::now();
                ps.max_lag_ms = std::max(
                    ps.max_lag_ms, std::chrono::duration<double, std::milli>(now - due).count());
                const auto& task = tasks[static_cast<std::size_t>(i) % tasks.size()];
                const int round = i / static_cast<int>(tasks.size());
                st->submit_write(
                    [&task, round](store::transaction& tx) {
                        core::engine::append_event(
                            tx, task, lifecycle[round % std::size(lifecycle)], event_data(round));
                    },
                    [&ps, &c, now](std::exception_ptr e) {
                        const double ms =
                            std::chrono::duration<double, std::milli>(steady::now() - now).count();
                        {
                            std::lock_guard lk(ps.mu);
                            ps.commit_ms.push_back(ms);
                        }
                        if (e)
                            ++ps.failed;
                        c.done(nullptr);
                    });
            }
        });
        double inflight_sum = 0;
        long samples = 0;
        state_counts writer_states, io_states;
        const auto give_up = pm.t0 + std::chrono::seconds(o.seconds + 60);
        steady::time_point end;
        for (;;) {
            const auto now = steady::now();
            if (m.delivered->value() >= before + total || now > give_up) {
                end = now;
                break;
            }
            inflight_sum += m.in_flight->value();
            ++samples;
            writer_states.add(thread_state(t.writer));
            io_states.add(thread_state(t.io));
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        producer.join();
        c.wait();
        const auto r = meter_stop(pm, t, o, *st, m.http_webhook, m, end);
        const double n = m.delivered->value() - before;

        std::vector<store::delivery_row> rows;
        read_sync(*st, [&rows, total](store::transaction& tx) {
            rows = tx.list_deliveries("bench-lat", "", "", total + 100, "");
        });
        std::vector<double> lat;
        int not_delivered = 0;
        for (const auto& d : rows) {
            if (d.status != "delivered") {
                ++not_delivered;
                continue;
            }
            lat.push_back(static_cast<double>(d.delivered_at - d.event_at));
        }
        std::sort(lat.begin(), lat.end());
        std::sort(ps.commit_ms.begin(), ps.commit_ms.end());
        res.lat_p50 = pct(lat, 50);
        res.lat_p90 = pct(lat, 90);
        res.lat_p99 = pct(lat, 99);
        res.lat_max = lat.empty() ? 0 : lat.back();
        res.lat_rate = total / static_cast<double>(o.seconds);
        double mean = 0;
        for (double v : lat)
            mean += v;
        mean = lat.empty() ? 0 : mean / static_cast<double>(lat.size());
        std::cout << "\n== latency: " << grouped(total) << " events at " << grouped(o.rate)
                  << "/s for " << o.seconds << " s (open loop, one write unit each, over "
                  << o.tasks << " tasks); producer max lag " << fmt(ps.max_lag_ms, 1)
                  << " ms, event commit p50 " << fmt(pct(ps.commit_ms, 50), 2) << " ms, p99 "
                  << fmt(pct(ps.commit_ms, 99), 2) << " ms\n"
                  << "  event -> delivered (delivered_at - event_at, ms resolution): p50 "
                  << fmt(res.lat_p50, 0) << " ms, p90 " << fmt(res.lat_p90, 0) << " ms, p99 "
                  << fmt(res.lat_p99, 0) << " ms, max " << fmt(res.lat_max, 0) << " ms, mean "
                  << fmt(mean, 2) << " ms (" << grouped(lat.size()) << " rows; not delivered "
                  << not_delivered << ", producer failures " << ps.failed.load()
                  << "); last delivery " << fmt(r.seconds - o.seconds, 2)
                  << " s after the producer's scheduled end\n"
                  << "  mean in flight "
                  << fmt(samples ? inflight_sum / static_cast<double>(samples) : 0, 2)
                  << "; dispatcher write units " << grouped(r.writes) << " (mean "
                  << fmt(r.write_ms, 2) << " ms); store " << grouped(r.commits) << " commits for "
                  << grouped(r.units) << " units (events + claims + outcomes); HTTP "
                  << fmt(r.http_ms, 2) << " ms per send\n  writer thread: " << writer_states.text()
                  << "\n  IO thread: " << io_states.text() << "\n  CPU (per delivery, over "
                  << fmt(r.seconds, 1) << " s):\n";
        print_cpu(r, n, true);
        res.note("latency", r);
        if (not_delivered != 0 || ps.failed.load() != 0 || static_cast<int>(lat.size()) != total)
            ++res.problems;
    }

    // ---------------------------------------------------------------- end
    if (started)
        asio::co_spawn(ioc, disp->stop(std::chrono::seconds(2)), asio::use_future).get();
    guard.reset();
    ioc.stop();
    io.join();
    disp.reset();
    client.reset();
    base_client.reset();
    st->close();

    std::cout << "\nRESULT throughput_dps=" << fmt(res.tp_dps, 0)
              << " baseline_rps=" << fmt(res.base_rps, 0)
              << " baseline_p50_ms=" << fmt(res.base_p50, 2)
              << " baseline_p99_ms=" << fmt(res.base_p99, 2) << " lat_rate=" << fmt(res.lat_rate, 0)
              << " lat_p50_ms=" << fmt(res.lat_p50, 0) << " lat_p90_ms=" << fmt(res.lat_p90, 0)
              << " lat_p99_ms=" << fmt(res.lat_p99, 0) << " lat_max_ms=" << fmt(res.lat_max, 0)
              << " sign_us=" << fmt(res.sign_body_us + res.sign_hmac_us, 2)
              << " problems=" << res.problems
              << " starved=" << (res.starved.empty() ? "none" : res.starved) << "\n";
    return res.problems == 0 ? 0 : 1;
}

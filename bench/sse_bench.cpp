// Server-Sent Events at scale, against a running gateway (bench/sse.sh starts it).
//
// Phases (each printed as it ends; RESULT lines at the end for the script):
//   idle     --idle-tasks tasks (sandbox delay long: nothing happens to them), --idle-per-task
//            SSE streams on each. Once every stream has its first frame: the gateway's RSS grown
//            per stream, then its CPU (user+system, /proc/PID/stat) over --seconds.
//   active   --active more tasks, one stream each (the idle streams stay open). Then every
//            active task is canceled, --rate per second (open loop over 16 keep-alive
//            connections): event-to-subscriber latency = when the stream got its
//            `extension.canceled` frame - when the cancel request was sent; the cancel's own
//            response time (which includes the commit the event is part of) is the baseline.
//            The gateway's CPU during the cancels.
//   close    every stream closed at once: time until the gateway's segue_sse_clients is 0.
//
//   sse_bench --port P --key K --audio-url URL --pid PID [--idle-tasks 100]
//       [--idle-per-task 100] [--active 1000] [--rate 200] [--seconds 20]

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/connect.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/read_until.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/write.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>
#include <boost/json.hpp>

#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <fstream>
#include <iostream>
#include <memory>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

namespace net = boost::asio;
namespace beast = boost::beast;
namespace bhttp = beast::http;
using net::awaitable;
using tcp = net::ip::tcp;
using clock_type = std::chrono::steady_clock;
constexpr auto use_tuple = net::as_tuple(net::use_awaitable);

namespace {

struct options {
    int port = 0;
    std::string key;
    std::string audio_url;
    int pid = 0;
    int idle_tasks = 100;
    int idle_per_task = 100;
    int active = 1000;
    int rate = 200;
    int seconds = 20;
};

[[noreturn]] void usage(const std::string& why) {
    std::cerr << "sse_bench: " << why
              << "\nusage: sse_bench --port P --key K --audio-url URL --pid PID [--idle-tasks N] "
                 "[--idle-per-task N] [--active N] [--rate R] [--seconds S]\n";
    std::exit(2);
}

options parse_options(int argc, char** argv) {
    options o;
    for (int i = 1; i < argc; ++i) {
        const std::string k = argv[i];
        if (i + 1 >= argc)
            usage("missing value for " + k);
        const std::string v = argv[++i];
        auto num = [&] {
            try {
                return std::stoi(v);
            } catch (const std::exception&) {
                usage("bad number for " + k + ": " + v);
            }
        };
        if (k == "--port")
            o.port = num();
        else if (k == "--key")
            o.key = v;
        else if (k == "--audio-url")
            o.audio_url = v;
        else if (k == "--pid")
            o.pid = num();
        else if (k == "--idle-tasks")
            o.idle_tasks = num();
        else if (k == "--idle-per-task")
            o.idle_per_task = num();
        else if (k == "--active")
            o.active = num();
        else if (k == "--rate")
            o.rate = num();
        else if (k == "--seconds")
            o.seconds = num();
        else
            usage("unknown option " + k);
    }
    if (o.port <= 0 || o.key.empty() || o.audio_url.empty() || o.pid <= 0)
        usage("--port, --key, --audio-url and --pid are required");
    return o;
}

double cpu_seconds(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/stat");
    std::string s((std::istreambuf_iterator<char>(f)), {});
    auto p = s.rfind(')');
    std::istringstream in(s.substr(p + 2));
    std::string field;
    double ut = 0, st = 0;
    for (int i = 3; in >> field; ++i) {
        if (i == 14)
            ut = std::stod(field);
        if (i == 15) {
            st = std::stod(field);
            break;
        }
    }
    return (ut + st) / static_cast<double>(sysconf(_SC_CLK_TCK));
}

long rss_kib(int pid) {
    std::ifstream f("/proc/" + std::to_string(pid) + "/status");
    for (std::string line; std::getline(f, line);)
        if (line.rfind("VmRSS:", 0) == 0)
            return std::stol(line.substr(6));
    return 0;
}

double pct(std::vector<double> v, double p) {
    if (v.empty())
        return 0;
    std::sort(v.begin(), v.end());
    auto i = static_cast<std::size_t>(p / 100.0 * static_cast<double>(v.size() - 1) + 0.5);
    return v[std::min(i, v.size() - 1)];
}

double ms_since(clock_type::time_point a, clock_type::time_point b) {
    return std::chrono::duration<double, std::milli>(b - a).count();
}

// One keep-alive HTTP client connection for creates, cancels and /metrics.
struct client {
    beast::tcp_stream stream;
    beast::flat_buffer buf;
    explicit client(net::any_io_executor ex) : stream(ex) {}
    awaitable<void> connect(int port) {
        co_await stream.async_connect(
            tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(port)),
            net::use_awaitable);
    }
    awaitable<bhttp::response<bhttp::string_body>> call(bhttp::verb v, std::string target,
                                                        const std::string& key,
                                                        std::string body = {}) {
        bhttp::request<bhttp::string_body> req{v, target, 11};
        req.set(bhttp::field::host, "127.0.0.1");
        if (!key.empty())
            req.set(bhttp::field::authorization, "Bearer " + key);
        if (!body.empty())
            req.set(bhttp::field::content_type, "application/json");
        req.body() = std::move(body);
        req.prepare_payload();
        co_await bhttp::async_write(stream, req, net::use_awaitable);
        bhttp::response<bhttp::string_body> res;
        co_await bhttp::async_read(stream, buf, res, net::use_awaitable);
        co_return res;
    }
};

// One SSE stream: counts frames; notes when `extension.canceled` arrived.
struct stream_state {
    std::string task;
    bool first = false;
    bool canceled_seen = false;
    clock_type::time_point canceled_at;
    std::shared_ptr<tcp::socket> socket;
};

struct bench {
    options o;
    net::io_context ioc{1};
    std::vector<std::shared_ptr<stream_state>> streams;
    int firsts = 0;
    int open_streams = 0;
    int connect_failures = 0;

    awaitable<std::vector<std::string>> create_tasks(int n) {
        std::vector<std::string> ids(static_cast<std::size_t>(n));
        int next = 0;
        int failures = 0;
        auto worker = [&]() -> awaitable<void> {
            client c(co_await net::this_coro::executor);
            co_await c.connect(o.port);
            const std::string body = R"({"audio_url":")" + o.audio_url +
                                     R"(","extend_after":5,"length":5,"num_outputs":1})";
            while (next < n) {
                const int i = next++;
                auto r = co_await c.call(bhttp::verb::post, "/v1/extensions", o.key, body);
                if (r.result_int() != 202) {
                    ++failures;
                    std::cerr << "create: " << r.result_int() << " " << r.body() << "\n";
                    continue;
                }
                ids[static_cast<std::size_t>(i)] =
                    boost::json::parse(r.body()).as_object().at("id").as_string().c_str();
            }
        };
        const int workers = 8;
        int done = 0;
        for (int w = 0; w < workers; ++w)
            net::co_spawn(ioc, worker(), [&](std::exception_ptr e) {
                if (e)
                    ++failures;
                ++done;
            });
        net::steady_timer t(ioc);
        while (done < workers) {
            t.expires_after(std::chrono::milliseconds(5));
            co_await t.async_wait(use_tuple);
        }
        if (failures)
            throw std::runtime_error("task creation failed");
        co_return ids;
    }

    awaitable<void> follow(std::shared_ptr<stream_state> s) {
        auto ex = co_await net::this_coro::executor;
        s->socket = std::make_shared<tcp::socket>(ex);
        auto [cec] = co_await s->socket->async_connect(
            tcp::endpoint(net::ip::make_address("127.0.0.1"), static_cast<unsigned short>(o.port)),
            use_tuple);
        if (cec) {
            ++connect_failures;
            co_return;
        }
        const std::string req = "GET /v1/extensions/" + s->task +
                                "/events HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer " +
                                o.key + "\r\nAccept: text/event-stream\r\n\r\n";
        auto [wec, wn] = co_await net::async_write(*s->socket, net::buffer(req), use_tuple);
        if (wec) {
            ++connect_failures;
            co_return;
        }
        ++open_streams;
        std::string text;
        std::array<char, 4096> buf;
        for (;;) {
            auto [ec, n] = co_await s->socket->async_read_some(net::buffer(buf), use_tuple);
            if (ec)
                break;
            text.append(buf.data(), n);
            if (!s->first && text.find("\nid: ") != std::string::npos) {
                s->first = true;
                ++firsts;
            }
            if (!s->canceled_seen && text.find("event: extension.canceled") != std::string::npos) {
                s->canceled_seen = true;
                s->canceled_at = clock_type::now();
            }
            if (text.size() > 256)
                text.erase(0, text.size() - 64);  // a marker split across reads is kept
        }
        --open_streams;
    }

    awaitable<void> wait_until(std::function<bool()> cond, std::chrono::seconds limit,
                               const char* what) {
        net::steady_timer t(ioc);
        const auto until = clock_type::now() + limit;
        while (!cond()) {
            if (clock_type::now() > until)
                throw std::runtime_error(std::string("timed out waiting for ") + what);
            t.expires_after(std::chrono::milliseconds(10));
            co_await t.async_wait(use_tuple);
        }
    }

    awaitable<void> open(const std::vector<std::string>& ids, int per_task) {
        const int target = firsts + static_cast<int>(ids.size()) * per_task;
        net::steady_timer t(ioc);
        for (const auto& id : ids)
            for (int k = 0; k < per_task; ++k) {
                auto s = std::make_shared<stream_state>();
                s->task = id;
                streams.push_back(s);
                net::co_spawn(ioc, follow(s), net::detached);
                // Paced: the listen backlog is finite.
                if (streams.size() % 200 == 0) {
                    t.expires_after(std::chrono::milliseconds(20));
                    co_await t.async_wait(use_tuple);
                }
            }
        co_await wait_until([&] { return firsts >= target || connect_failures > 0; },
                            std::chrono::seconds(120), "first frames");
        if (connect_failures)
            throw std::runtime_error("stream connect failures: " +
                                     std::to_string(connect_failures));
    }

    awaitable<double> sse_clients_gauge(client& c) {
        auto r = co_await c.call(bhttp::verb::get, "/metrics", "");
        std::istringstream in(r.body());
        for (std::string line; std::getline(in, line);)
            if (line.rfind("segue_sse_clients ", 0) == 0)
                co_return std::stod(line.substr(18));
        co_return -1;
    }

    awaitable<void> run() {
        net::steady_timer t(ioc);
        // --- idle
        const long rss0 = rss_kib(o.pid);
        auto idle_ids = co_await create_tasks(o.idle_tasks);
        const auto open0 = clock_type::now();
        co_await open(idle_ids, o.idle_per_task);
        const double open_s = ms_since(open0, clock_type::now()) / 1000;
        const int idle_n = o.idle_tasks * o.idle_per_task;
        t.expires_after(std::chrono::seconds(2));
        co_await t.async_wait(use_tuple);
        const long rss1 = rss_kib(o.pid);
        const double c0 = cpu_seconds(o.pid);
        const auto i0 = clock_type::now();
        t.expires_after(std::chrono::seconds(o.seconds));
        co_await t.async_wait(use_tuple);
        const double idle_cpu =
            (cpu_seconds(o.pid) - c0) / (ms_since(i0, clock_type::now()) / 1000);
        std::printf(
            "idle: %d streams on %d tasks opened in %.1f s; gateway RSS %.1f -> %.1f MiB "
            "(%.1f KiB per stream); CPU over %d s: %.2f %% of one core\n",
            idle_n, o.idle_tasks, open_s, rss0 / 1024.0, rss1 / 1024.0,
            static_cast<double>(rss1 - rss0) / std::max(idle_n, 1), o.seconds, idle_cpu * 100);
        std::fflush(stdout);

        // --- active
        auto active_ids = co_await create_tasks(o.active);
        const std::size_t first_active = streams.size();
        co_await open(active_ids, 1);
        t.expires_after(std::chrono::seconds(1));
        co_await t.async_wait(use_tuple);
        std::vector<clock_type::time_point> sent(active_ids.size()), answered(active_ids.size());
        std::vector<int> status(active_ids.size(), 0);
        const double a0 = cpu_seconds(o.pid);
        const auto start = clock_type::now();
        const auto gap = std::chrono::duration<double>(1.0 / o.rate);
        std::size_t next = 0;
        int done = 0;
        const int conns = 16;
        for (int w = 0; w < conns; ++w)
            net::co_spawn(
                ioc,
                [&]() -> awaitable<void> {
                    client c(co_await net::this_coro::executor);
                    co_await c.connect(o.port);
                    net::steady_timer pace(ioc);
                    while (next < active_ids.size()) {
                        const std::size_t i = next++;
                        // Open loop: request i leaves at start + i/rate, whatever came before.
                        const auto due = start + std::chrono::duration_cast<clock_type::duration>(
                                                     gap * static_cast<double>(i));
                        pace.expires_at(due);
                        co_await pace.async_wait(use_tuple);
                        sent[i] = clock_type::now();
                        auto r =
                            co_await c.call(bhttp::verb::post,
                                            "/v1/extensions/" + active_ids[i] + "/cancel", o.key);
                        answered[i] = clock_type::now();
                        status[i] = r.result_int();
                    }
                },
                [&](std::exception_ptr) { ++done; });
        co_await wait_until([&] { return done == conns; }, std::chrono::seconds(300), "cancels");
        co_await wait_until(
            [&] {
                for (std::size_t i = first_active; i < streams.size(); ++i)
                    if (!streams[i]->canceled_seen)
                        return false;
                return true;
            },
            std::chrono::seconds(30), "canceled events");
        const double active_s = ms_since(start, clock_type::now()) / 1000;
        const double active_cpu = (cpu_seconds(o.pid) - a0) / active_s;
        std::vector<double> lat, resp;
        int bad = 0;
        for (std::size_t i = 0; i < active_ids.size(); ++i) {
            if (status[i] != 200)
                ++bad;
            lat.push_back(ms_since(sent[i], streams[first_active + i]->canceled_at));
            resp.push_back(ms_since(sent[i], answered[i]));
        }
        std::printf(
            "active: %zu streams got their task's extension.canceled, %d cancels/s "
            "(non-200: %d); event-to-subscriber ms p50 %.2f p90 %.2f p99 %.2f max %.2f; "
            "the cancel's own response ms p50 %.2f p99 %.2f; gateway CPU %.1f %% of one "
            "core over %.1f s\n",
            lat.size(), o.rate, bad, pct(lat, 50), pct(lat, 90), pct(lat, 99), pct(lat, 100),
            pct(resp, 50), pct(resp, 99), active_cpu * 100, active_s);
        std::fflush(stdout);

        // --- close
        client m(co_await net::this_coro::executor);
        co_await m.connect(o.port);
        const double before = co_await sse_clients_gauge(m);
        const auto close0 = clock_type::now();
        for (auto& s : streams) {
            boost::system::error_code ec;
            if (s->socket)
                s->socket->close(ec);
        }
        double left = before;
        while (left > 0 && ms_since(close0, clock_type::now()) < 60000) {
            t.expires_after(std::chrono::milliseconds(5));
            co_await t.async_wait(use_tuple);
            left = co_await sse_clients_gauge(m);
        }
        const double close_ms = ms_since(close0, clock_type::now());
        std::printf(
            "close: %.0f idle streams closed by their clients; segue_sse_clients at 0 "
            "after %.0f ms (%.0f left)\n",
            before, close_ms, left);
        std::printf(
            "RESULT idle_streams=%d idle_cpu_pct=%.2f kib_per_stream=%.1f active=%zu "
            "p50_ms=%.2f p99_ms=%.2f cancel_p99_ms=%.2f active_cpu_pct=%.1f "
            "close_ms=%.0f\n",
            idle_n, idle_cpu * 100, static_cast<double>(rss1 - rss0) / std::max(idle_n, 1),
            lat.size(), pct(lat, 50), pct(lat, 99), pct(resp, 99), active_cpu * 100, close_ms);
    }
};

}  // namespace

int main(int argc, char** argv) {
    bench b;
    b.o = parse_options(argc, argv);
    int rc = 0;
    net::co_spawn(b.ioc, b.run(), [&](std::exception_ptr e) {
        if (e) {
            try {
                std::rethrow_exception(e);
            } catch (const std::exception& x) {
                std::cerr << "sse_bench: " << x.what() << "\n";
            }
            rc = 1;
        }
        b.ioc.stop();
    });
    b.ioc.run();
    return rc;
}

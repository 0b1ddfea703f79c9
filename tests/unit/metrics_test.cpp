#include <gtest/gtest.h>
#include <sys/wait.h>
#include <unistd.h>

#include <algorithm>
#include <cmath>
#include <cstdio>
#include <cstdlib>
#include <ctime>
#include <filesystem>
#include <fstream>
#include <iterator>
#include <limits>
#include <optional>
#include <sstream>
#include <stdexcept>
#include <string>
#include <thread>
#include <vector>

#include "gateway/metrics/process.hpp"
#include "gateway/metrics/registry.hpp"

namespace m = segue::metrics;

namespace {

// Value of the first sample line starting with `series` followed by a space.
std::optional<double> sample_value(const std::string& text, const std::string& series) {
    std::istringstream in(text);
    for (std::string line; std::getline(in, line);) {
        if (line.starts_with(series + " "))
            return std::stod(line.substr(series.size() + 1));
    }
    return std::nullopt;
}

std::string find_on_path(const std::string& prog) {
    const char* path = std::getenv("PATH");
    std::istringstream dirs(path != nullptr ? path : "/usr/bin:/bin");
    for (std::string dir; std::getline(dirs, dir, ':');) {
        const std::string candidate = (dir.empty() ? "." : dir) + "/" + prog;
        if (::access(candidate.c_str(), X_OK) == 0)
            return candidate;
    }
    return {};
}

}  // namespace

TEST(MetricsFormat, Values) {
    EXPECT_EQ(m::format_value(0), "0");
    EXPECT_EQ(m::format_value(3), "3");
    EXPECT_EQ(m::format_value(-2), "-2");
    EXPECT_EQ(m::format_value(1000000), "1000000");
    EXPECT_EQ(m::format_value(0.25), "0.25");
    EXPECT_EQ(m::format_value(0.1), "0.1");
    EXPECT_EQ(m::format_value(0.0005), "0.0005");
    EXPECT_EQ(m::format_value(0.00001), "1e-05");
    EXPECT_EQ(m::format_value(1234567.5), "1.2345675e+06");  // as Go's FormatFloat(v, 'g', -1)
    EXPECT_EQ(m::format_value(1e20), "1e+20");
    EXPECT_EQ(m::format_value(std::numeric_limits<double>::infinity()), "+Inf");
    EXPECT_EQ(m::format_value(-std::numeric_limits<double>::infinity()), "-Inf");
    EXPECT_EQ(m::format_value(std::nan("")), "NaN");
    // Round-trips exactly.
    const double third = 1.0 / 3.0;
    EXPECT_EQ(std::stod(m::format_value(third)), third);
}

TEST(MetricsRegistry, CounterAndGaugeText) {
    m::registry r;
    auto& requests =
        r.counter_family("http_requests_total", "Requests handled.", {"method", "code"});
    requests.with({"GET", "200"}).inc();
    requests.with({"GET", "200"}).inc(2);
    requests.with(std::vector<std::string>{"POST", "500"}).inc(0.5);
    requests.with({"DELETE", "204"});
    auto& up = r.make_gauge("up", "Whether the gateway is up.");
    up.set(1);
    auto& inflight = r.make_gauge("http_in_flight_requests", "Requests in flight.");
    inflight.inc(5);
    inflight.dec(2);
    r.make_counter("errors_total", "Errors.");  // never touched: still exposed as 0

    EXPECT_EQ(r.serialize(),
              "# HELP http_requests_total Requests handled.\n"
              "# TYPE http_requests_total counter\n"
              "http_requests_total{method=\"DELETE\",code=\"204\"} 0\n"
              "http_requests_total{method=\"GET\",code=\"200\"} 3\n"
              "http_requests_total{method=\"POST\",code=\"500\"} 0.5\n"
              "# HELP up Whether the gateway is up.\n"
              "# TYPE up gauge\n"
              "up 1\n"
              "# HELP http_in_flight_requests Requests in flight.\n"
              "# TYPE http_in_flight_requests gauge\n"
              "http_in_flight_requests 3\n"
              "# HELP errors_total Errors.\n"
              "# TYPE errors_total counter\n"
              "errors_total 0\n");
}

TEST(MetricsRegistry, CounterIgnoresNegativeAndNaN) {
    m::counter c;
    c.inc(2);
    c.inc(-1);
    c.inc(std::nan(""));
    EXPECT_EQ(c.value(), 2);
}

TEST(MetricsRegistry, Escaping) {
    m::registry r;
    auto& f = r.gauge_family("odd_values", "Back\\slash and\nnewline \"quoted\".", {"v"});
    f.with({"a\\b"}).set(1);
    f.with({"say \"hi\""}).set(2);
    f.with({"two\nlines"}).set(-3);
    EXPECT_EQ(r.serialize(),
              "# HELP odd_values Back\\\\slash and\\nnewline \"quoted\".\n"
              "# TYPE odd_values gauge\n"
              "odd_values{v=\"a\\\\b\"} 1\n"
              "odd_values{v=\"say \\\"hi\\\"\"} 2\n"
              "odd_values{v=\"two\\nlines\"} -3\n");
}

TEST(MetricsRegistry, SpecialValues) {
    m::registry r;
    r.make_gauge("g_pos_inf", "x").set(std::numeric_limits<double>::infinity());
    r.make_gauge("g_neg_inf", "x").set(-std::numeric_limits<double>::infinity());
    r.make_gauge("g_nan", "x").set(std::nan(""));
    const std::string text = r.serialize();
    EXPECT_NE(text.find("\ng_pos_inf +Inf\n"), std::string::npos) << text;
    EXPECT_NE(text.find("\ng_neg_inf -Inf\n"), std::string::npos) << text;
    EXPECT_NE(text.find("\ng_nan NaN\n"), std::string::npos) << text;
}

TEST(MetricsRegistry, HistogramText) {
    m::registry r;
    auto& f = r.histogram_family("request_duration_seconds", "Request latency.", {"route"},
                                 {0.1, 0.5, 1});
    auto& api = f.with({"api"});
    api.observe(0.05);
    api.observe(0.1);  // on the bound: counted in le="0.1"
    api.observe(0.3);
    api.observe(7);
    f.with({"admin"}).observe(1);

    EXPECT_EQ(r.serialize(),
              "# HELP request_duration_seconds Request latency.\n"
              "# TYPE request_duration_seconds histogram\n"
              "request_duration_seconds_bucket{route=\"admin\",le=\"0.1\"} 0\n"
              "request_duration_seconds_bucket{route=\"admin\",le=\"0.5\"} 0\n"
              "request_duration_seconds_bucket{route=\"admin\",le=\"1\"} 1\n"
              "request_duration_seconds_bucket{route=\"admin\",le=\"+Inf\"} 1\n"
              "request_duration_seconds_sum{route=\"admin\"} 1\n"
              "request_duration_seconds_count{route=\"admin\"} 1\n"
              "request_duration_seconds_bucket{route=\"api\",le=\"0.1\"} 2\n"
              "request_duration_seconds_bucket{route=\"api\",le=\"0.5\"} 3\n"
              "request_duration_seconds_bucket{route=\"api\",le=\"1\"} 3\n"
              "request_duration_seconds_bucket{route=\"api\",le=\"+Inf\"} 4\n"
              "request_duration_seconds_sum{route=\"api\"} 7.45\n"
              "request_duration_seconds_count{route=\"api\"} 4\n");
}

TEST(MetricsRegistry, UnlabelledHistogramText) {
    m::registry r;
    r.histogram_family("job_seconds", "Job time.", {}, {1, 2.5});
    EXPECT_EQ(r.serialize(),
              "# HELP job_seconds Job time.\n"
              "# TYPE job_seconds histogram\n"
              "job_seconds_bucket{le=\"1\"} 0\n"
              "job_seconds_bucket{le=\"2.5\"} 0\n"
              "job_seconds_bucket{le=\"+Inf\"} 0\n"
              "job_seconds_sum 0\n"
              "job_seconds_count 0\n");
}

TEST(MetricsRegistry, HistogramAccessors) {
    m::histogram h({1, 2, 4, std::numeric_limits<double>::infinity()});  // trailing +Inf dropped
    EXPECT_EQ(h.bounds(), (std::vector<double>{1, 2, 4}));
    for (double v : {0.5, 1.0, 1.5, 3.0, 3.5, 100.0})
        h.observe(v);
    h.observe(std::nan(""));  // goes to +Inf, like client_golang
    EXPECT_EQ(h.bucket_counts(), (std::vector<std::uint64_t>{2, 1, 2, 2}));
    EXPECT_EQ(h.cumulative_counts(), (std::vector<std::uint64_t>{2, 3, 5, 7}));
    EXPECT_EQ(h.count(), 7u);
    EXPECT_TRUE(std::isnan(h.sum()));

    m::histogram g({0.5});
    g.observe(0.25);
    g.observe(2);
    EXPECT_EQ(g.sum(), 2.25);
    EXPECT_EQ(g.count(), 2u);

    EXPECT_THROW(m::histogram({2, 1}), std::invalid_argument);
    EXPECT_THROW(m::histogram({1, 1}), std::invalid_argument);
    EXPECT_THROW(m::histogram({std::nan("")}), std::invalid_argument);
    EXPECT_THROW(m::histogram({-std::numeric_limits<double>::infinity(), 1}),
                 std::invalid_argument);
}

TEST(MetricsRegistry, DefaultLatencyBuckets) {
    const auto b = m::default_latency_buckets();
    ASSERT_FALSE(b.empty());
    EXPECT_EQ(b.front(), 0.0005);
    EXPECT_EQ(b.back(), 10);
    EXPECT_TRUE(std::is_sorted(b.begin(), b.end()));
    EXPECT_NO_THROW(m::histogram{b});
}

TEST(MetricsRegistry, DuplicateRegistration) {
    m::registry r;
    auto& a = r.counter_family("hits_total", "Hits.", {"route"});
    auto& b = r.counter_family("hits_total", "Hits.", {"route"});
    EXPECT_EQ(&a, &b);
    EXPECT_EQ(&r.make_counter("c_total", "C."), &r.make_counter("c_total", "C."));
    auto& h = r.histogram_family("lat_seconds", "L.", {}, {1, 2});
    EXPECT_EQ(&h, &r.histogram_family("lat_seconds", "L.", {}, {1, 2}));

    EXPECT_THROW(r.gauge_family("hits_total", "Hits.", {"route"}), std::invalid_argument);
    EXPECT_THROW(r.counter_family("hits_total", "Hits.", {"path"}), std::invalid_argument);
    EXPECT_THROW(r.counter_family("hits_total", "Hits."), std::invalid_argument);
    EXPECT_THROW(r.histogram_family("lat_seconds", "L.", {}, {1, 3}), std::invalid_argument);
    EXPECT_THROW(r.make_gauge("c_total", "C."), std::invalid_argument);
    // Series of a histogram cannot be shadowed, in either order.
    EXPECT_THROW(r.make_counter("lat_seconds_count", "x"), std::invalid_argument);
    r.make_gauge("queue_sum", "x");
    EXPECT_THROW(r.histogram_family("queue", "x", {}, {1}), std::invalid_argument);
    // Only one copy of each family is exposed.
    const std::string text = r.serialize();
    EXPECT_EQ(text.find("# TYPE hits_total"), text.rfind("# TYPE hits_total"));
}

TEST(MetricsRegistry, BadNames) {
    m::registry r;
    for (const char* bad : {"", "1abc", "a-b", "a b", "é", "a.b"}) {
        EXPECT_THROW(r.make_counter(bad, "x"), std::invalid_argument) << bad;
    }
    EXPECT_NO_THROW(r.make_counter("ns:sub_system_total", "x"));
    EXPECT_NO_THROW(r.make_counter("_private", "x"));
    for (const char* bad : {"", "a:b", "__reserved", "1x", "a-b"}) {
        EXPECT_THROW(r.counter_family("labelled_total", "x", {bad}), std::invalid_argument) << bad;
    }
    EXPECT_THROW(r.counter_family("dup_total", "x", {"a", "a"}), std::invalid_argument);
    EXPECT_THROW(r.histogram_family("h", "x", {"le"}, {1}), std::invalid_argument);
    EXPECT_NO_THROW(r.gauge_family("le_ok", "x", {"le"}));
    EXPECT_THROW(r.histogram_family("h2", "x", {}, {3, 2}), std::invalid_argument);
    // Nothing half-registered.
    EXPECT_NO_THROW(r.counter_family("labelled_total", "x", {"ok"}));
}

TEST(MetricsRegistry, WrongLabelCount) {
    m::registry r;
    auto& f = r.counter_family("x_total", "x", {"a", "b"});
    EXPECT_THROW(f.with({"1"}), std::invalid_argument);
    EXPECT_THROW(f.with({"1", "2", "3"}), std::invalid_argument);
    EXPECT_THROW(f.with(std::vector<std::string>{}), std::invalid_argument);
    EXPECT_NO_THROW(f.with({"1", "2"}));
    auto& u = r.counter_family("y_total", "y");
    EXPECT_THROW(u.with({"1"}), std::invalid_argument);
    EXPECT_EQ(f.size(), 1u);
}

TEST(MetricsRegistry, EmptyLabelledFamilyPrintsHeaderOnly) {
    m::registry r;
    r.counter_family("unused_total", "Never used.", {"k"});
    EXPECT_EQ(r.serialize(),
              "# HELP unused_total Never used.\n"
              "# TYPE unused_total counter\n");
}

TEST(MetricsRegistry, ReferencesStayValid) {
    m::registry r(5000);  // above the default cap, to grow the map well past it
    auto& f = r.counter_family("refs_total", "x", {"i"});
    m::counter& first = f.with({"0"});
    first.inc();
    for (int i = 1; i < 2000; ++i)
        f.with({std::to_string(i)}).inc();
    EXPECT_EQ(&first, &f.with({"0"}));
    EXPECT_EQ(&first, &f.with(std::vector<std::string>{"0"}));
    EXPECT_EQ(first.value(), 1);
    EXPECT_EQ(f.size(), 2000u);
}

TEST(MetricsRegistry, ConcurrentUpdatesSumExactly) {
    m::registry r;
    auto& c = r.make_counter("conc_total", "x");
    auto& g = r.make_gauge("conc_gauge", "x");
    auto& f = r.counter_family("conc_labelled_total", "x", {"k"});
    auto& h = r.histogram_family("conc_seconds", "x", {}, {0.5}).with({});
    constexpr int threads = 8;
    constexpr int iterations = 20000;
    std::vector<std::thread> pool;
    for (int t = 0; t < threads; ++t) {
        pool.emplace_back([&, t] {
            for (int i = 0; i < iterations; ++i) {
                c.inc();
                g.inc(2);
                g.dec();
                // Children created concurrently from different threads.
                f.with({std::to_string(i % 16)}).inc();
                h.observe(t % 2 == 0 ? 0.25 : 1.0);
                if (i % 5000 == 0)
                    (void)r.serialize();
            }
        });
    }
    for (auto& th : pool)
        th.join();
    EXPECT_EQ(c.value(), threads * iterations);
    EXPECT_EQ(g.value(), threads * iterations);
    double labelled = 0;
    for (int k = 0; k < 16; ++k)
        labelled += f.with({std::to_string(k)}).value();
    EXPECT_EQ(labelled, threads * iterations);
    EXPECT_EQ(f.size(), 16u);
    EXPECT_EQ(h.count(), static_cast<std::uint64_t>(threads * iterations));
    EXPECT_EQ(h.bucket_counts(),
              (std::vector<std::uint64_t>{threads / 2 * iterations, threads / 2 * iterations}));
    EXPECT_EQ(h.sum(), threads / 2 * iterations * 1.25);
}

TEST(MetricsRegistry, Collectors) {
    m::registry r;
    r.make_counter("first_total", "x").inc();
    int depth = 3;
    r.add_collector([&](m::text_writer& w) {
        w.family_header("queue_depth", "Items queued.", "gauge");
        w.sample("queue_depth", {{"queue", "a\"b"}}, depth);
        w.sample("queue_depth", {{"queue", "c"}, {"prio", "1"}}, 0.5);
    });
    r.add_collector([](m::text_writer& w) {
        w.family_header("broken", "x", "gauge");
        throw std::runtime_error("unreadable");
    });
    r.add_collector([](m::text_writer& w) {
        w.write_counter("bytes_total", "Bytes.", 10);
        w.write_gauge("temp", "T.", -1.5);
    });
    EXPECT_EQ(r.serialize(),
              "# HELP first_total x\n"
              "# TYPE first_total counter\n"
              "first_total 1\n"
              "# HELP queue_depth Items queued.\n"
              "# TYPE queue_depth gauge\n"
              "queue_depth{queue=\"a\\\"b\"} 3\n"
              "queue_depth{queue=\"c\",prio=\"1\"} 0.5\n"
              "# HELP bytes_total Bytes.\n"
              "# TYPE bytes_total counter\n"
              "bytes_total 10\n"
              "# HELP temp T.\n"
              "# TYPE temp gauge\n"
              "temp -1.5\n");
    depth = 4;  // read at scrape time
    EXPECT_NE(r.serialize().find("queue_depth{queue=\"a\\\"b\"} 4\n"), std::string::npos);
}

TEST(ProcessMetrics, PresentAndPlausible) {
    EXPECT_GT(m::current_rss_bytes(), 0u);
    m::registry r;
    m::register_process_metrics(r);
    const std::string text = r.serialize();
    for (const char* type :
         {"process_resident_memory_bytes gauge", "process_virtual_memory_bytes gauge",
          "process_open_fds gauge", "process_max_fds gauge", "process_cpu_seconds_total counter",
          "process_start_time_seconds gauge"}) {
        EXPECT_NE(text.find(std::string("# TYPE ") + type + "\n"), std::string::npos)
            << type << "\n"
            << text;
    }
    const auto rss = sample_value(text, "process_resident_memory_bytes");
    const auto vsz = sample_value(text, "process_virtual_memory_bytes");
    const auto fds = sample_value(text, "process_open_fds");
    const auto max_fds = sample_value(text, "process_max_fds");
    const auto cpu = sample_value(text, "process_cpu_seconds_total");
    const auto start = sample_value(text, "process_start_time_seconds");
    ASSERT_TRUE(rss && vsz && fds && max_fds && cpu && start) << text;
    EXPECT_GT(*rss, 0);
    EXPECT_GE(*vsz, *rss);
    EXPECT_GT(*fds, 0);  // stdin/stdout/stderr at least
    EXPECT_GE(*max_fds, *fds);
    EXPECT_GE(*cpu, 0);
    // Started in the last day, and not in the future.
    const double now = static_cast<double>(std::time(nullptr));
    EXPECT_LE(*start, now + 2);
    EXPECT_GT(*start, now - 86400);

    // An extra open file shows up.
    std::FILE* extra = std::tmpfile();
    ASSERT_NE(extra, nullptr);
    const auto fds_after = sample_value(r.serialize(), "process_open_fds");
    std::fclose(extra);
    ASSERT_TRUE(fds_after);
    EXPECT_EQ(*fds_after, *fds + 1);
}

TEST(MetricsPromtool, CheckMetricsAcceptsOutput) {
    const std::string promtool = find_on_path("promtool");
    if (promtool.empty()) {
        FAIL() << "promtool not found on PATH: install the Debian package `prometheus` "
                  "(apt-get install prometheus) to validate the exposition format";
    }

    m::registry r;
    auto& requests =
        r.counter_family("segue_http_requests_total", "Requests handled.", {"method", "code"});
    requests.with({"GET", "200"}).inc(3);
    requests.with({"POST", "503"}).inc();
    // Past the cap: refused, and the refusal counter is exported too.
    r.set_max_series_per_family(2);
    requests.with({"PUT", "201"}).inc();
    r.counter_family("segue_unused_total", "Labelled, never used.", {"reason"});
    r.make_counter("segue_upstream_errors_total", "Upstream errors.");
    r.make_gauge("segue_connections", "Open connections.").set(12);
    auto& odd = r.gauge_family("segue_odd_labels", "Help with \\ and\nnewline.", {"value"});
    odd.with({"quote \" backslash \\ newline \n end"}).set(0.125);
    odd.with({"inf"}).set(std::numeric_limits<double>::infinity());
    auto& lat = r.histogram_family("segue_request_duration_seconds", "Request latency.", {"route"},
                                   m::default_latency_buckets());
    for (double v : {0.0001, 0.003, 0.2, 0.2, 3.0, 42.0})
        lat.with({"/v1/chat"}).observe(v);
    lat.with({"/healthz"}).observe(0.0004);
    r.histogram_family("segue_body_size_bytes", "Body sizes.", {}, {1024, 65536})
        .with({})
        .observe(2048);
    r.add_collector([](m::text_writer& w) {
        w.family_header("segue_queue_depth", "Queued items.", "gauge");
        w.sample("segue_queue_depth", {{"queue", "dns"}}, 2);
    });
    m::register_process_metrics(r);

    const std::string text = r.serialize();
    EXPECT_NE(
        text.find("segue_metrics_series_refused_total{family=\"segue_http_requests_total\"} 1"),
        std::string::npos)
        << text;
    const auto dir = std::filesystem::temp_directory_path();
    const std::string stem = "segue_metrics_" + std::to_string(::getpid());
    const auto input = dir / (stem + ".prom");
    const auto output = dir / (stem + ".out");
    {
        std::ofstream f(input, std::ios::binary);
        f << text;
        ASSERT_TRUE(f.good());
    }
    const std::string cmd = "'" + promtool + "' check metrics < '" + input.string() + "' > '" +
                            output.string() + "' 2>&1";
    const int status = std::system(cmd.c_str());
    std::ifstream out_file(output);
    const std::string promtool_output((std::istreambuf_iterator<char>(out_file)),
                                      std::istreambuf_iterator<char>());
    std::filesystem::remove(input);
    std::filesystem::remove(output);
    ASSERT_NE(status, -1);
    ASSERT_TRUE(WIFEXITED(status));
    EXPECT_EQ(WEXITSTATUS(status), 0) << "promtool output:\n"
                                      << promtool_output << "\ninput:\n"
                                      << text;
}

// ---- cardinality cap

TEST(MetricsCap, NewLabelSetsPastTheCapAreRefusedAndCounted) {
    m::registry r(3);
    EXPECT_EQ(r.max_series_per_family(), 3u);
    auto& f = r.counter_family("hits_total", "Hits.", {"who"});
    m::counter& a = f.with({"a"});
    f.with({"b"}).inc();
    f.with({"c"}).inc();
    // No refusal yet: nothing extra is exported.
    EXPECT_EQ(r.serialize().find(std::string(m::series_refused_metric)), std::string::npos);

    m::counter& d = f.with({"d"});
    d.inc(5);  // usable, never exported
    f.with({"e"}).inc();
    f.with(std::vector<std::string>{"f"}).inc();
    EXPECT_EQ(f.size(), 3u);
    EXPECT_EQ(&f.with({"a"}), &a) << "existing series are still found";
    EXPECT_NE(&d, &a);
    a.inc(2);

    const std::string text = r.serialize();
    EXPECT_EQ(sample_value(text, "hits_total{who=\"a\"}"), 2);
    EXPECT_EQ(text.find("who=\"d\""), std::string::npos) << text;
    EXPECT_EQ(text.find("who=\"e\""), std::string::npos) << text;
    EXPECT_EQ(sample_value(text, "segue_metrics_series_refused_total{family=\"hits_total\"}"), 3)
        << text;
    EXPECT_NE(text.find("# TYPE segue_metrics_series_refused_total counter\n"), std::string::npos);
}

TEST(MetricsCap, GaugesAndHistogramsHaveAnOverflowToo) {
    m::registry r(1);
    auto& g = r.gauge_family("temp", "T.", {"room"});
    g.with({"kitchen"}).set(20);
    g.with({"attic"}).set(99);
    auto& h = r.histogram_family("lat_seconds", "L.", {"route"}, {0.1, 1});
    h.with({"/a"}).observe(0.05);
    m::histogram& over = h.with({"/b"});
    over.observe(0.5);
    EXPECT_EQ(over.bounds(), h.bounds());
    EXPECT_EQ(g.size(), 1u);
    EXPECT_EQ(h.size(), 1u);
    const std::string text = r.serialize();
    EXPECT_EQ(text.find("attic"), std::string::npos) << text;
    EXPECT_EQ(text.find("/b"), std::string::npos) << text;
    EXPECT_EQ(sample_value(text, "segue_metrics_series_refused_total{family=\"temp\"}"), 1);
    EXPECT_EQ(sample_value(text, "segue_metrics_series_refused_total{family=\"lat_seconds\"}"), 1);
    // Unlabelled families have their one series whatever the cap.
    r.make_counter("plain_total", "P.").inc();
    EXPECT_EQ(sample_value(r.serialize(), "plain_total"), 1);
}

TEST(MetricsCap, DefaultIsAThousandPerFamily) {
    m::registry r;
    EXPECT_EQ(r.max_series_per_family(), m::default_max_series_per_family);
    EXPECT_EQ(m::default_max_series_per_family, 1000u);
    auto& f = r.counter_family("by_name_total", "N.", {"name"});
    for (int i = 0; i < 1500; ++i)
        f.with({"n" + std::to_string(i)}).inc();
    EXPECT_EQ(f.size(), 1000u);
    EXPECT_EQ(
        sample_value(r.serialize(), "segue_metrics_series_refused_total{family=\"by_name_total\"}"),
        500);
}

TEST(MetricsCap, LoweringTheCapKeepsSeriesAndRefusesNewOnes) {
    m::registry r(10);
    auto& f = r.counter_family("x_total", "X.", {"k"});
    for (int i = 0; i < 5; ++i)
        f.with({std::to_string(i)}).inc();
    r.set_max_series_per_family(2);
    f.with({"new"}).inc();
    EXPECT_EQ(f.size(), 5u);
    f.with({"3"}).inc();  // existing: counted normally
    EXPECT_EQ(sample_value(r.serialize(), "x_total{k=\"3\"}"), 2);
    r.set_max_series_per_family(0);  // clamped to 1
    EXPECT_EQ(r.max_series_per_family(), 1u);
}

TEST(MetricsCap, ConcurrentInsertsNeverOvershoot) {
    m::registry r(100);
    auto& f = r.counter_family("race_total", "R.", {"id"});
    std::vector<std::thread> threads;
    for (int t = 0; t < 4; ++t)
        threads.emplace_back([&f, t] {
            for (int i = 0; i < 200; ++i)
                f.with({std::to_string(t) + "-" + std::to_string(i)}).inc();
        });
    for (auto& th : threads)
        th.join();
    EXPECT_EQ(f.size(), 100u);
    EXPECT_EQ(
        sample_value(r.serialize(), "segue_metrics_series_refused_total{family=\"race_total\"}"),
        700);
}

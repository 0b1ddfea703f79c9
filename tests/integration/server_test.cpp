// The foundation, end to end: the real binary on 127.0.0.1:0.

#include <fcntl.h>
#include <gtest/gtest.h>
#include <signal.h>
#include <sys/stat.h>
#include <unistd.h>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <optional>
#include <regex>
#include <string>
#include <thread>

#include <boost/json/parse.hpp>

#include "gateway/store/store.hpp"
#include "gateway/util/http_date.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
using segue::test::http_connection;
using segue::test::http_request;
using segue::test::metric_value;
using segue::test::segue_process;

namespace {

std::string config(const std::string& extra_server = "", const std::string& extra_limits = "") {
    return "server:\n"
           "  listen: 127.0.0.1:0\n"
           "  io_threads: 2\n" +
           extra_server +
           "limits:\n"
           "  max_requests_per_connection: 0\n" +
           extra_limits +
           "log:\n"
           "  level: info\n";
}

// GET /metrics until `series` reaches `at_least` (bounded): a request is counted once its
// response was written, so the client may read the answer a moment before the count moves.
std::optional<segue::test::http_response> metrics_when(std::uint16_t port,
                                                       const std::string& series, double at_least) {
    auto m = http_request(port, "GET", "/metrics");
    for (int i = 0; i < 100 && m && metric_value(m->body, series) < at_least; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
        m = http_request(port, "GET", "/metrics");
    }
    return m;
}

}  // namespace

// CORS: file URLs answer any origin (a signed link is its own credential; a browser's player
// of a link opened in a tab asks as the origin "null"); the rest of the API only the origins in
// api.cors_allow_origins, and a preflight from any other gets what it got before (405).
TEST(Server, CorsForFilesAlwaysAndForTheApiByOrigin) {
    auto cors_of = [](const segue::test::http_response& r) {
        return r.header("access-control-allow-origin").value_or("");
    };
    const std::vector<std::string> preflight_get = {"Origin: https://app.example.com",
                                                    "Access-Control-Request-Method: GET",
                                                    "Access-Control-Request-Headers: range"};
    {
        segue_process s(config());
        // Files: any origin, on errors too (the page reads the problem), and a preflight.
        auto f = http_request(s.port(), "GET", "/v1/files/file_nothere", "", {"Origin: null"});
        ASSERT_TRUE(f);
        EXPECT_EQ(cors_of(*f), "*");
        EXPECT_NE(f->header("access-control-expose-headers").value_or("").find("Content-Range"),
                  std::string::npos);
        auto p = http_request(s.port(), "OPTIONS", "/v1/files/file_nothere", "", preflight_get);
        ASSERT_TRUE(p);
        EXPECT_EQ(p->status, 204) << p->body;
        EXPECT_EQ(cors_of(*p), "*");
        EXPECT_EQ(p->header("access-control-allow-methods").value_or(""), "GET, HEAD");
        EXPECT_NE(p->header("access-control-allow-headers").value_or("").find("Range"),
                  std::string::npos);
        // The API: no origin is allowed by default.
        auto a = http_request(s.port(), "GET", "/v1/extensions", "",
                              {"Origin: https://app.example.com"});
        ASSERT_TRUE(a);
        EXPECT_EQ(a->status, 401);
        EXPECT_FALSE(a->header("access-control-allow-origin"));
        auto ap = http_request(s.port(), "OPTIONS", "/v1/extensions", "", preflight_get);
        ASSERT_TRUE(ap);
        EXPECT_EQ(ap->status, 405);
        EXPECT_FALSE(ap->header("access-control-allow-origin"));
        // No Origin, no CORS headers (a server-to-server call).
        auto plain = http_request(s.port(), "GET", "/v1/files/file_nothere");
        ASSERT_TRUE(plain);
        EXPECT_FALSE(plain->header("access-control-allow-origin"));
    }
    {
        segue_process s(config() + "api:\n  cors_allow_origins: [https://app.example.com]\n");
        auto a = http_request(s.port(), "GET", "/v1/extensions", "",
                              {"Origin: https://app.example.com"});
        ASSERT_TRUE(a);
        EXPECT_EQ(a->status, 401);  // the page can read why
        EXPECT_EQ(cors_of(*a), "https://app.example.com");
        EXPECT_EQ(a->header("vary").value_or(""), "Origin");
        auto p =
            http_request(s.port(), "OPTIONS", "/v1/extensions", "",
                         {"Origin: https://app.example.com", "Access-Control-Request-Method: POST",
                          "Access-Control-Request-Headers: authorization, idempotency-key"});
        ASSERT_TRUE(p);
        EXPECT_EQ(p->status, 204) << p->body;
        EXPECT_EQ(cors_of(*p), "https://app.example.com");
        EXPECT_NE(p->header("access-control-allow-methods").value_or("").find("POST"),
                  std::string::npos);
        const auto allowed = p->header("access-control-allow-headers").value_or("");
        EXPECT_NE(allowed.find("Authorization"), std::string::npos) << allowed;
        EXPECT_NE(allowed.find("Idempotency-Key"), std::string::npos) << allowed;
        // Another origin: nothing, but the answer says it depends on the Origin; so does one to
        // a request without any (a cache must not hand either to the allowed page, or back).
        auto other = http_request(s.port(), "GET", "/v1/extensions", "",
                                  {"Origin: https://evil.example.net"});
        ASSERT_TRUE(other);
        EXPECT_FALSE(other->header("access-control-allow-origin"));
        EXPECT_EQ(other->header("vary").value_or(""), "Origin");
        auto none = http_request(s.port(), "GET", "/healthz");
        ASSERT_TRUE(none);
        EXPECT_EQ(none->header("vary").value_or(""), "Origin");
        // A file's answer is the same for every origin ("*"): no Vary.
        auto file = http_request(s.port(), "GET", "/v1/files/file_nothere", "",
                                 {"Origin: https://evil.example.net"});
        ASSERT_TRUE(file);
        EXPECT_FALSE(file->header("vary")) << *file->header("vary");
        // A preflight for a method the path does not take is no preflight.
        auto bad = http_request(
            s.port(), "OPTIONS", "/v1/extensions", "",
            {"Origin: https://app.example.com", "Access-Control-Request-Method: DELETE"});
        ASSERT_TRUE(bad);
        EXPECT_EQ(bad->status, 405);
    }
    // Not an origin: refused at start, naming the entry.
    segue::test::temp_dir dir;
    const std::string cfg = dir.file("bad.yaml");
    std::ofstream(cfg) << config() << "api:\n  cors_allow_origins: [https://a.example/]\n";
    auto [rc, out] =
        segue::test::run_command({segue::test::segue_binary(), "--config", cfg, "--check-config"});
    EXPECT_NE(rc, 0);
    EXPECT_NE(out.find("cors_allow_origins[0]"), std::string::npos) << out;
}

TEST(Server, HealthReadyAndRequestIds) {
    segue_process s(config());
    auto h = http_request(s.port(), "GET", "/healthz");
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 200);
    EXPECT_EQ(h->header("content-type").value_or(""), "application/json");
    EXPECT_EQ(h->body, R"({"status":"ok"})");
    EXPECT_TRUE(
        std::regex_match(h->header("x-request-id").value_or(""), std::regex("[0-9a-f]{32}")));
    // Every answer has a Date (RFC 9110 6.6.1), the server's clock to the second.
    const auto date = segue::util::parse_http_date(h->header("date").value_or(""));
    ASSERT_TRUE(date) << h->header("date").value_or("(none)");
    const auto now_ms = std::chrono::duration_cast<std::chrono::milliseconds>(
                            std::chrono::system_clock::now().time_since_epoch())
                            .count();
    EXPECT_LE(std::abs(*date - now_ms), 5000) << h->header("date").value_or("");

    auto r = http_request(s.port(), "GET", "/readyz", "", {"X-Request-Id: my-trace.42"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("x-request-id").value_or(""), "my-trace.42");

    // An id that could inject into logs or headers is replaced, not echoed.
    auto bad = http_request(s.port(), "GET", "/healthz", "", {"X-Request-Id: a\"b{}"});
    ASSERT_TRUE(bad);
    EXPECT_NE(bad->header("x-request-id").value_or(""), "a\"b{}");

    // Behind a proxy: the client chain it reports, as sent (a byte that is not printable
    // ASCII replaced), on the access line beside the proxy's own address.
    auto proxied =
        http_request(s.port(), "GET", "/healthz", "",
                     {"X-Request-Id: via-proxy", "X-Forwarded-For: 203.0.113.7, \xC3\xA9"});
    ASSERT_TRUE(proxied);

    // One JSON access line per request, with the route template and the request id.
    std::this_thread::sleep_for(100ms);
    auto log = s.log();
    EXPECT_NE(log.find("\"msg\":\"listening\""), std::string::npos) << log;
    EXPECT_NE(log.find("\"request_id\":\"my-trace.42\""), std::string::npos) << log;
    EXPECT_NE(log.find("\"route\":\"/readyz\""), std::string::npos) << log;
    const auto line_of = [&](const std::string& id) {
        const auto at = log.find("\"request_id\":\"" + id + "\"");
        if (at == std::string::npos)
            return std::string();
        const auto start = log.rfind('\n', at) + 1;
        return log.substr(start, log.find('\n', at) - start);
    };
    const auto via = line_of("via-proxy");
    EXPECT_NE(via.find("\"remote\":\"127.0.0.1"), std::string::npos) << via;
    EXPECT_NE(via.find("\"forwarded_for\":\"203.0.113.7, ??\""), std::string::npos) << via;
    boost::system::error_code ec;
    EXPECT_TRUE(boost::json::parse(via, ec).is_object()) << via;
    EXPECT_EQ(line_of("my-trace.42").find("forwarded_for"), std::string::npos) << log;
}

TEST(Server, HeadIsServedLikeGetWithoutBody) {
    segue_process s(config());
    http_connection c(s.port());
    auto r = c.request("HEAD", "/healthz");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("content-length").value_or(""), "15");
    EXPECT_TRUE(r->body.empty());
    // The connection is still in sync for the next request.
    auto r2 = c.request("GET", "/healthz");
    ASSERT_TRUE(r2);
    EXPECT_EQ(r2->body, R"({"status":"ok"})");
}

TEST(Server, ProblemJsonFor404And405) {
    segue_process s(config());
    auto nf = http_request(s.port(), "GET", "/nope/123");
    ASSERT_TRUE(nf);
    EXPECT_EQ(nf->status, 404);
    EXPECT_EQ(nf->header("content-type").value_or(""), "application/problem+json");
    EXPECT_NE(nf->body.find(R"("type":"https://segue.dev/problems/not_found")"), std::string::npos)
        << nf->body;
    EXPECT_NE(nf->body.find(R"("status":404)"), std::string::npos);
    EXPECT_NE(nf->body.find(R"("instance":"/nope/123")"), std::string::npos);

    auto na = http_request(s.port(), "DELETE", "/healthz");
    ASSERT_TRUE(na);
    EXPECT_EQ(na->status, 405);
    EXPECT_EQ(na->header("allow").value_or(""), "GET, HEAD");
    EXPECT_EQ(na->header("content-type").value_or(""), "application/problem+json");
}

TEST(Server, MalformedRequestIs400) {
    segue_process s(config());
    http_connection c(s.port());
    c.send_raw("GET /healthz HTTP/1.1\r\nHost: x\r\nBad Header Line\r\n\r\n");
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_EQ(r->header("content-type").value_or(""), "application/problem+json");
    EXPECT_TRUE(c.closed_by_peer(2s));
}

TEST(Server, HeaderTooLargeIs431) {
    segue_process s(config("", "  max_header_bytes: 4KiB\n"));
    http_connection c(s.port());
    auto r = c.request("GET", "/healthz", "", {"X-Big: " + std::string(8000, 'a')});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 431);
    EXPECT_EQ(r->header("content-type").value_or(""), "application/problem+json");
    // A header just under the limit is fine.
    auto ok = http_request(s.port(), "GET", "/healthz", "", {"X-Big: " + std::string(3000, 'a')});
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200);
}

TEST(Server, BodyOverLimitIs413BeforeItIsRead) {
    segue_process s(config("", "  max_body_bytes: 1KiB\n"));
    http_connection c(s.port());
    // Only the header is sent: the answer must not wait for 10 MB that never come.
    c.send_raw("POST /anything HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n");
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 413);
    EXPECT_EQ(r->header("content-type").value_or(""), "application/problem+json");
    EXPECT_TRUE(c.closed_by_peer(2s));
}

TEST(Server, SlowlorisHeaderIsCutOff) {
    segue_process s(config("", "  header_timeout: 1s\n"));
    http_connection c(s.port(), 5s);
    const auto start = std::chrono::steady_clock::now();
    ASSERT_TRUE(c.send_raw("GET /healthz HTTP/1.1\r\n"));
    // One header byte every 200 ms: each read makes progress, the whole header never arrives.
    bool cut = false;
    for (int i = 0; i < 40 && !cut; ++i) {
        std::this_thread::sleep_for(200ms);
        if (!c.send_raw("X") || c.readable(1ms))
            cut = true;
    }
    auto elapsed = std::chrono::steady_clock::now() - start;
    EXPECT_TRUE(cut);
    EXPECT_LT(elapsed, 4s);
    EXPECT_GE(elapsed, 900ms);
    // The client is told why (the server lingers, so the close does not destroy the answer).
    auto r = c.read_response();
    ASSERT_TRUE(r) << "no answer";
    EXPECT_EQ(r->status, 408);
    EXPECT_EQ(r->header("content-type").value_or(""), "application/problem+json");
}

TEST(Server, IdleKeepAliveConnectionIsClosed) {
    segue_process s(config("", "  idle_timeout: 500ms\n"));
    http_connection c(s.port());
    auto r = c.request("GET", "/healthz");
    ASSERT_TRUE(r);
    EXPECT_TRUE(c.closed_by_peer(3s));
}

TEST(Server, KeepAliveAndPipelining) {
    segue_process s(config());
    http_connection c(s.port());
    for (int i = 0; i < 5; ++i) {
        auto r = c.request("GET", "/healthz");
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 200);
    }
    // Three pipelined requests in one write are answered in order.
    c.send_raw(
        "GET /healthz HTTP/1.1\r\nHost: x\r\nX-Request-Id: p1\r\n\r\n"
        "GET /nope HTTP/1.1\r\nHost: x\r\nX-Request-Id: p2\r\n\r\n"
        "GET /readyz HTTP/1.1\r\nHost: x\r\nX-Request-Id: p3\r\n\r\n");
    auto a = c.read_response();
    auto b = c.read_response();
    auto d = c.read_response();
    ASSERT_TRUE(a && b && d);
    EXPECT_EQ(a->header("x-request-id").value_or(""), "p1");
    EXPECT_EQ(b->status, 404);
    EXPECT_EQ(b->header("x-request-id").value_or(""), "p2");
    EXPECT_EQ(d->header("x-request-id").value_or(""), "p3");
}

TEST(Server, MaxConnectionsAnswers503) {
    segue_process s(config("  max_connections: 2\n"));
    http_connection a(s.port()), b(s.port());
    ASSERT_TRUE(a.request("GET", "/healthz"));
    ASSERT_TRUE(b.request("GET", "/healthz"));
    http_connection c(s.port());
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 503);
    EXPECT_EQ(r->header("retry-after").value_or(""), "1");
}

TEST(Server, MetricsPassPromtoolAndCountRequests) {
    segue_process s(config());
    for (int i = 0; i < 3; ++i)
        ASSERT_TRUE(http_request(s.port(), "GET", "/healthz"));
    ASSERT_TRUE(http_request(s.port(), "GET", "/nope/abc-secret-id"));
    auto m = metrics_when(
        s.port(), R"(segue_http_requests_total{route="unmatched",method="GET",code="404"})", 1);
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status, 200);
    EXPECT_EQ(m->header("content-type").value_or(""), "text/plain; version=0.0.4; charset=utf-8");
    const auto& t = m->body;
    EXPECT_EQ(
        metric_value(t, R"(segue_http_requests_total{route="/healthz",method="GET",code="200"})"),
        3);
    EXPECT_EQ(
        metric_value(t, R"(segue_http_requests_total{route="unmatched",method="GET",code="404"})"),
        1);
    // Raw paths never become label values.
    EXPECT_EQ(t.find("abc-secret-id"), std::string::npos);
    for (auto name : {"segue_http_request_duration_seconds_bucket", "segue_http_connections",
                      "segue_build_info{", "process_resident_memory_bytes", "process_open_fds",
                      "process_cpu_seconds_total", "process_start_time_seconds"})
        EXPECT_NE(t.find(name), std::string::npos) << name;

    auto [code, out] = segue::test::run_command({"promtool", "check", "metrics"}, t);
    EXPECT_EQ(code, 0) << out;

    // Counters move.
    ASSERT_TRUE(http_request(s.port(), "GET", "/healthz"));
    auto m2 = metrics_when(
        s.port(), R"(segue_http_requests_total{route="/healthz",method="GET",code="200"})", 4);
    ASSERT_TRUE(m2);
    EXPECT_EQ(
        metric_value(m2->body,
                     R"(segue_http_requests_total{route="/healthz",method="GET",code="200"})"),
        4);
    EXPECT_GE(
        metric_value(m2->body,
                     R"(segue_http_requests_total{route="/metrics",method="GET",code="200"})"),
        1);
}

TEST(Server, SigtermDrainsInFlightRequestAndExitsZero) {
    segue_process s(config("  shutdown_delay: 1s\n  drain_timeout: 10s\n"));
    // A request in flight: its header is only half sent.
    http_connection slow(s.port());
    ASSERT_TRUE(slow.send_raw("GET /healthz HTTP/1.1\r\nHost: x\r\n"));
    std::this_thread::sleep_for(100ms);
    s.proc().signal(SIGTERM);
    std::this_thread::sleep_for(100ms);

    // Readiness is false at once; liveness stays true.
    auto ready = http_request(s.port(), "GET", "/readyz");
    ASSERT_TRUE(ready);
    EXPECT_EQ(ready->status, 503);
    EXPECT_EQ(ready->header("connection").value_or(""), "close");
    auto alive = http_request(s.port(), "GET", "/healthz");
    ASSERT_TRUE(alive);
    EXPECT_EQ(alive->status, 200);

    // After the shutdown delay, no new connections; the in-flight request still completes.
    std::this_thread::sleep_for(1200ms);
    EXPECT_THROW(http_connection late(s.port()), std::runtime_error);
    ASSERT_TRUE(slow.send_raw("\r\n"));
    auto r = slow.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->header("connection").value_or(""), "close");

    auto code = s.proc().wait(5s);
    ASSERT_TRUE(code);
    EXPECT_EQ(*code, 0) << s.log();
    EXPECT_NE(s.log().find("\"clean\":true"), std::string::npos) << s.log();
}

TEST(Server, DrainDeadlineCutsStuckRequests) {
    segue_process s(config("  drain_timeout: 500ms\n", "  header_timeout: 30s\n"));
    http_connection stuck(s.port());
    ASSERT_TRUE(stuck.send_raw("GET /healthz HTTP/1.1\r\n"));
    std::this_thread::sleep_for(100ms);
    const auto start = std::chrono::steady_clock::now();
    s.proc().signal(SIGTERM);
    auto code = s.proc().wait(5s);
    ASSERT_TRUE(code);
    EXPECT_EQ(*code, 0);
    EXPECT_LT(std::chrono::steady_clock::now() - start, 3s);
    EXPECT_NE(s.log().find("\"clean\":false"), std::string::npos) << s.log();
}

// A key short enough to guess is said at start (not refused), by where it is, never what it is.
TEST(Server, ShortKeysAreWarnedOfAtStartWithoutShowingThem) {
    const std::string long_key = "sk-0123456789abcdefghijklmnopqrstuv";
    segue_process s(config() + "tenants:\n  - name: acme\n    api_keys: [sk-short, " + long_key +
                    "]\ncredits:\n  admin_key: adm-short\n");
    ASSERT_TRUE(http_request(s.port(), "GET", "/healthz"));
    const std::string log = s.log();
    EXPECT_NE(log.find("\"key\":\"tenants[acme].api_keys[0]\""), std::string::npos) << log;
    EXPECT_NE(log.find("\"key\":\"credits.admin_key\""), std::string::npos) << log;
    EXPECT_EQ(log.find("api_keys[1]"), std::string::npos) << "a 35-character key is not short";
    EXPECT_EQ(log.find("sk-short"), std::string::npos) << "a key was logged";
    EXPECT_EQ(log.find("adm-short"), std::string::npos) << "a key was logged";
}

TEST(Cli, VersionHelpAndUnknownFlag) {
    auto bin = segue::test::segue_binary();
    auto [vc, vout] = segue::test::run_command({bin, "--version"});
    EXPECT_EQ(vc, 0);
    EXPECT_EQ(vout.rfind("segue ", 0), 0u) << vout;
    auto [hc, hout] = segue::test::run_command({bin, "--help"});
    EXPECT_EQ(hc, 0);
    EXPECT_NE(hout.find("--check-config"), std::string::npos);
    auto [uc, uout] = segue::test::run_command({bin, "--bogus"});
    EXPECT_EQ(uc, 2);
}

// Start-up failures name the setting and what is wrong (not Asio's source location), and
// exit 1 at once: a port another process holds, a blob directory the process cannot write
// (sysfs refuses even root), which would otherwise fail every upload with a 500 later.
TEST(Cli, StartUpFailuresNameTheSetting) {
    auto bin = segue::test::segue_binary();
    segue::test::temp_dir d;
    const auto port = segue::test::hold_loopback_port();
    ASSERT_GE(port.fd, 0);
    const int held = port.fd;
    const std::string listen = "127.0.0.1:" + std::to_string(port.port);
    auto taken = d.write("taken.yaml", "server:\n  listen: " + listen +
                                           "\nstorage:\n  sqlite_path: " + d.path() +
                                           "/a.db\n  blob_dir: " + d.path() + "/a\n");
    auto [tc, tout] = segue::test::run_command({"timeout", "20", bin, "--config", taken});
    ::close(held);
    EXPECT_EQ(tc, 1) << tout;
    EXPECT_NE(tout.find("server.listen " + listen + ": cannot bind: Address already in use"),
              std::string::npos)
        << tout;

    auto sys =
        d.write("sys.yaml", "server:\n  listen: 127.0.0.1:0\nstorage:\n  sqlite_path: " + d.path() +
                                "/b.db\n  blob_dir: /sys/kernel\n");
    auto [sc, sout] = segue::test::run_command({"timeout", "20", bin, "--config", sys});
    EXPECT_EQ(sc, 1) << sout;
    EXPECT_NE(sout.find("storage.blob_dir /sys/kernel is not writable"), std::string::npos) << sout;

    // A blob_dir under a regular file cannot be created; a sqlite_path that is a directory
    // cannot be opened: each names its setting.
    auto file = d.write("plain", "x");
    auto under = d.write("under.yaml", "server:\n  listen: 127.0.0.1:0\nstorage:\n  sqlite_path: " +
                                           d.path() + "/c.db\n  blob_dir: " + file + "/blobs\n");
    auto [uc, uout] = segue::test::run_command({"timeout", "20", bin, "--config", under});
    EXPECT_EQ(uc, 1) << uout;
    EXPECT_NE(uout.find("storage.blob_dir " + file + "/blobs cannot be created"), std::string::npos)
        << uout;
    auto dirdb = d.write("dirdb.yaml", "server:\n  listen: 127.0.0.1:0\nstorage:\n  sqlite_path: " +
                                           d.path() + "\n  blob_dir: " + d.path() + "/d\n");
    auto [dc, dout] = segue::test::run_command({"timeout", "20", bin, "--config", dirdb});
    EXPECT_EQ(dc, 1) << dout;
    EXPECT_NE(dout.find("storage.sqlite_path " + d.path() + ": "), std::string::npos) << dout;
    EXPECT_NE(dout.find("is a directory"), std::string::npos) << dout;
    // Bad input changes nothing: no lock file was made beside the directory.
    EXPECT_FALSE(std::filesystem::exists(d.path() + ".lock"));
    std::filesystem::remove(d.path() + ".lock");
    // A regular file that is not a database: refused, untouched, nothing left beside it.
    auto notdb =
        d.write("notdb.yaml", "server:\n  listen: 127.0.0.1:0\nstorage:\n  sqlite_path: " + file +
                                  "\n  blob_dir: " + d.path() + "/e\n");
    auto [nc, nout] = segue::test::run_command({"timeout", "20", bin, "--config", notdb});
    EXPECT_EQ(nc, 1) << nout;
    EXPECT_NE(nout.find("storage.sqlite_path " + file + ": "), std::string::npos) << nout;
    EXPECT_NE(nout.find("is not a SQLite database"), std::string::npos) << nout;
    EXPECT_EQ(std::filesystem::file_size(file), 1u);
    EXPECT_FALSE(std::filesystem::exists(file + ".lock"));
    EXPECT_FALSE(std::filesystem::exists(file + "-wal"));
}

TEST(Cli, CheckConfigAcceptsAndRefuses) {
    auto bin = segue::test::segue_binary();
    segue::test::temp_dir d;
    auto good = d.write("good.yaml", config());
    auto [gc, gout] = segue::test::run_command({bin, "--config", good, "--check-config"});
    EXPECT_EQ(gc, 0) << gout;
    EXPECT_NE(gout.find("listen: \"127.0.0.1:0\""), std::string::npos) << gout;

    auto bad = d.write("bad.yaml",
                       "server:\n  listen: 127.0.0.1:0\nlimits:\n  max_header_bytes: 1\n  "
                       "frobnicate: 3\n");
    auto [bc, bout] = segue::test::run_command({bin, "--config", bad, "--check-config"});
    EXPECT_EQ(bc, 1);
    EXPECT_NE(bout.find("limits.max_header_bytes"), std::string::npos) << bout;
    EXPECT_NE(bout.find("limits.frobnicate"), std::string::npos) << bout;
    EXPECT_NE(bout.find("bad.yaml:4"), std::string::npos) << bout;

    // An empty --config is a mistake, not the embedded defaults.
    auto [ec, eout] = segue::test::run_command({bin, "--config", "", "--check-config"});
    EXPECT_EQ(ec, 2) << eout;

    // A config that fails validation never starts the server either.
    auto [sc, sout] = segue::test::run_command({bin, "--config", bad});
    EXPECT_EQ(sc, 1);

    // The shipped configs are valid.
    for (auto f : {"/config/segue.yaml", "/config/test.yaml"}) {
        auto [c, out] = segue::test::run_command(
            {bin, "--config", std::string(SEGUE_SOURCE_DIR) + f, "--check-config"});
        EXPECT_EQ(c, 0) << f << "\n" << out;
    }
}

TEST(Server, SplitTransferEncodingDoesNotDesyncTheConnection) {
    // Found by fuzzing: the parser frames the body by the last coding of all the
    // Transfer-Encoding fields; the server must agree and not read the body as a new request.
    segue_process s(config());
    http_connection c(s.port());
    c.send_raw(
        "POST /nope HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: gzip\r\n"
        "Transfer-Encoding: chunked\r\n\r\n"
        "1a\r\nGET /healthz HTTP/1.1\r\n\r\n\r\n0\r\n\r\n");
    auto r = c.read_response();
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    EXPECT_EQ(r->header("connection").value_or(""), "close");
    EXPECT_FALSE(c.read_response()) << "the body was answered as a second request";
}

TEST(Cli, MigrateAppliesThePostgresSchemaOnceAndCheckConfigAcceptsIt) {
    auto bin = segue::test::segue_binary();
    segue::test::temp_dir d;
    segue::test::pg_schema schema;
    auto cfg = d.write("pg.yaml", "storage:\n  engine: postgres\n  postgres:\n    url: \"" +
                                      schema.url() + "\"\n  blob_dir: " + d.path() + "/blobs\n");
    auto [cc, cout] = segue::test::run_command({bin, "--config", cfg, "--check-config"});
    EXPECT_EQ(cc, 0) << cout;
    EXPECT_NE(cout.find("engine: postgres"), std::string::npos) << cout;
    for (int i = 0; i < 2; ++i) {  // the second run finds nothing to do
        auto [mc, mout] = segue::test::run_command({bin, "migrate", "--config", cfg});
        EXPECT_EQ(mc, 0) << mout;
        EXPECT_NE(mout.find("store schema is current (postgres)"), std::string::npos) << mout;
    }
    EXPECT_EQ(segue::test::pg_exec(schema.url(), "SELECT COUNT(*) FROM schema_migrations"),
              std::to_string(segue::store::postgres_schema_version()));
    // An unreachable database: a clear failure, exit 1 (at once: without connect_wait 0s, after
    // waiting 30 s for it, which cost this test 30 s in every run).
    auto bad = d.write("bad.yaml",
                       "storage:\n  engine: postgres\n  postgres:\n    connect_wait: 0s\n    url: "
                       "\"postgresql:///x?host=/nonexistent&connect_timeout=2\"\n");
    auto [bc, bout] = segue::test::run_command({bin, "migrate", "--config", bad});
    EXPECT_EQ(bc, 1);
    EXPECT_NE(bout.find("migrate failed"), std::string::npos) << bout;
    EXPECT_NE(bout.find("cannot connect"), std::string::npos) << bout;
}

namespace {
// Whether a running process has mapped a file whose path contains `name`.
bool maps_library(pid_t pid, const std::string& name) {
    std::ifstream maps("/proc/" + std::to_string(pid) + "/maps");
    std::string line;
    while (std::getline(maps, line))
        if (line.find(name) != std::string::npos)
            return true;
    return false;
}
}  // namespace

// libpq (and gnutls, krb5, ldap... which it pulls in) is loaded only by the PostgreSQL engine:
// a process on SQLite never maps it (gateway/store/pg_api.hpp).
TEST(Server, OnlyThePostgresEngineLoadsLibpq) {
    segue_process lite(config());
    ASSERT_TRUE(http_request(lite.port(), "GET", "/readyz"));
    EXPECT_FALSE(maps_library(lite.proc().pid(), "libpq.so"));
    EXPECT_FALSE(maps_library(lite.proc().pid(), "libgnutls"));
    EXPECT_TRUE(maps_library(lite.proc().pid(), "libsqlite3"));

    segue::test::pg_schema schema;
    segue_process pg(config() + "storage:\n  engine: postgres\n  postgres:\n    url: \"" +
                     schema.url() + "\"\n  blob_dir: @DIR@/blobs\n");
    auto r = http_request(pg.port(), "GET", "/readyz");
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 200);
    EXPECT_TRUE(maps_library(pg.proc().pid(), "libpq.so"));
}

// A gateway whose stdout is a FIFO this test holds the read end of (opened before the gateway,
// and only in this process: O_CLOEXEC), with access lines on.
struct gateway_on_a_fifo {
    segue::test::temp_dir dir;
    int reader = -1;
    segue::test::child_process p;
    std::uint16_t port = 0;

    gateway_on_a_fifo() {
        const std::string fifo = dir.file("stdout");
        if (::mkfifo(fifo.c_str(), 0600) != 0)
            return;
        reader = ::open(fifo.c_str(), O_RDONLY | O_NONBLOCK | O_CLOEXEC);
        const std::string cfg = dir.write(
            "segue.yaml", config() +
                              "  access: true\nstorage:\n"
                              "  sqlite_path: " +
                              dir.file("segue.db") + "\n  blob_dir: " + dir.file("blobs") + "\n");
        const std::string port_file = dir.file("port");
        p.start({"/bin/sh", "-c", "exec \"$0\" --config \"$1\" --port-file \"$2\" >\"$3\"",
                 segue::test::segue_binary(), cfg, port_file, fifo},
                dir.file("stderr"));
        port = segue::test::wait_port_file(port_file);
    }
    ~gateway_on_a_fifo() {
        if (p.running()) {
            p.signal(SIGKILL);
            p.wait(5s);
        }
        if (reader >= 0)
            ::close(reader);
    }
    std::string stderr_text() const { return segue::test::read_file(dir.file("stderr")); }
};

// A reader of stdout that takes nothing (a stalled log collector: the pipe fills after a few
// hundred lines) never stops the gateway: every request is still answered, each with its access
// line queued or, beyond the queue, dropped and counted. Before, the IO thread that wrote the
// access line waited on the full pipe, and so did every request on that thread.
TEST(Server, AStalledReaderOfItsLogNeverStopsTheGateway) {
    // The read end is held open and never read, so the gateway's stdout is a pipe that fills.
    gateway_on_a_fifo g;
    ASSERT_GE(g.reader, 0);
    ASSERT_NE(g.port, 0) << g.stderr_text();
    auto& p = g.p;
    const auto port = g.port;
    http_connection c(port);
    constexpr int n = 2000;  // ~500 KB of access lines: the pipe holds 64 KiB
    for (int i = 0; i < n; ++i) {
        auto r = c.request("GET", "/healthz");
        ASSERT_TRUE(r) << "request " << i << " got no answer";
        ASSERT_EQ(r->status, 200);
    }
    auto m = http_request(port, "GET", "/metrics");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->status, 200);
    EXPECT_NE(m->body.find("segue_log_lines_dropped_total"), std::string::npos);
    // Nor its exit: a SIGTERM drains (nothing in flight) and the process is gone soon after,
    // although the log's last lines never get out (it waited for the reader for ever).
    const auto stop_sent = std::chrono::steady_clock::now();
    p.signal(SIGTERM);
    const auto code = p.wait(15s);
    EXPECT_EQ(code, std::optional<int>(0));
    EXPECT_LT(std::chrono::steady_clock::now() - stop_sent, 10s);
}

// SIGHUP (a closed terminal, a log rotation's postrotate) drains like SIGTERM, and a log reader
// that went away (segue | head) does not take the gateway with it: SIGPIPE is ignored.
TEST(Server, SighupDrainsAndALogReaderThatLeftDoesNotKillTheGateway) {
    gateway_on_a_fifo g;
    ASSERT_GE(g.reader, 0);
    ASSERT_NE(g.port, 0) << g.stderr_text();
    auto& p = g.p;
    const auto port = g.port;
    // The reader goes away: every later log line meets a pipe with no reader (EPIPE).
    ::close(g.reader);
    g.reader = -1;
    for (int i = 0; i < 20; ++i) {  // over 400 ms: the log's writer writes every 10 ms
        auto r = http_request(port, "GET", "/healthz");
        ASSERT_TRUE(r) << "request " << i << ": the gateway is gone";
        ASSERT_EQ(r->status, 200);
        std::this_thread::sleep_for(20ms);
    }
    EXPECT_TRUE(p.running());
    p.signal(SIGHUP);
    const auto code = p.wait(15s);
    EXPECT_EQ(code, std::optional<int>(0)) << "SIGHUP ends it as a drain does (exit 0)";
}

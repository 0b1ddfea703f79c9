// The URL guard for user-given URLs: the syntax check (schemes, hosts, ports, the numeric IPv4
// spellings SSRF payloads use), the endpoint check on resolved addresses, check_url with real
// name resolution (/etc/hosts names only), and redirect following against a small HTTP server
// on 127.0.0.1.

#include "gateway/net/url_guard.hpp"

#include <gtest/gtest.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/beast/core/flat_buffer.hpp>
#include <boost/beast/core/tcp_stream.hpp>
#include <boost/beast/http/read.hpp>
#include <boost/beast/http/string_body.hpp>
#include <boost/beast/http/write.hpp>

#include <atomic>
#include <chrono>
#include <filesystem>
#include <fstream>
#include <memory>
#include <optional>
#include <sstream>
#include <string>
#include <thread>
#include <vector>

#include "gateway/metrics/registry.hpp"
#include "gateway/runtime/blocking_pool.hpp"

namespace {

namespace asio = boost::asio;
namespace beast = boost::beast;
namespace bhttp = boost::beast::http;
using tcp = asio::ip::tcp;
using namespace std::chrono_literals;
using segue::net::check_url_syntax;
using segue::net::cidr_list;
using segue::net::failure;
using segue::net::resolved_endpoint;
using segue::net::url_policy;

constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

url_policy any_port_policy(std::vector<std::string> allow = {}) {
    url_policy p;
    p.allowed_ports.clear();
    p.allow = cidr_list(allow);
    return p;
}

// --- the syntax check, table-driven ---

struct syntax_case {
    const char* url;
    bool ok;
    const char* reason = "";  // a part of the reason when refused
};

TEST(UrlGuard, SyntaxTable) {
    const syntax_case cases[] = {
        // Accepted: names, public literals, default ports.
        {"https://example.com/audio.mp3", true},
        {"http://example.com/a?b=c#frag", true},
        {"HTTPS://Example.COM/x", true},
        {"https://cdn.example.com./x", true},  // trailing dot
        {"https://a-b_c.example.com/", true},
        {"https://xn--bcher-kva.example/", true},
        {"https://8.8.8.8/", true},
        {"https://1.1.1.1/x", true},
        {"https://93.184.216.34/", true},
        {"https://[2606:4700::1111]/", true},
        {"https://[2606:4700:4700::1111]:443/", true},
        {"https://[::ffff:8.8.8.8]/", true},
        {"https://[64:ff9b::808:808]/", true},
        {"https://example.com:443/", true},
        {"http://example.com:80/", true},
        {"https://a.1.2.3.4.example.com/", true},  // a name: the last label is not numeric
        {"https://1.2.3.example.com/", true},
        {"https://0x7f.example/", true},  // likewise
        // IPv4 literals that are not public.
        {"http://127.0.0.1/", false, "loopback"},
        {"http://127.255.255.254/", false, "loopback"},
        {"http://10.0.0.1/", false, "private"},
        {"http://172.16.5.4/", false, "private"},
        {"http://172.31.255.255/", false, "private"},
        {"http://192.168.0.1/", false, "private"},
        {"http://169.254.169.254/latest/meta-data/", false, "link-local"},
        {"http://100.64.0.1/", false, "carrier-grade NAT"},
        {"http://100.127.255.254/", false, "carrier-grade NAT"},
        {"http://224.0.0.1/", false, "multicast"},
        {"http://239.255.255.250/", false, "multicast"},
        {"http://255.255.255.255/", false, "reserved/broadcast"},
        {"http://240.0.0.1/", false, "reserved"},
        {"http://0.0.0.0/", false, "unspecified"},
        {"http://0.1.2.3/", false, "unspecified"},
        {"http://192.0.0.8/", false, "IETF"},
        {"http://192.0.2.1/", false, "documentation"},
        {"http://198.51.100.7/", false, "documentation"},
        {"http://203.0.113.9/", false, "documentation"},
        {"http://198.18.0.1/", false, "benchmarking"},
        {"http://192.88.99.1/", false, "6to4"},
        // IPv6 literals that are not public.
        {"http://[::1]/", false, "loopback"},
        {"http://[::]/", false, "unspecified"},
        {"http://[fe80::1]/", false, "link-local"},
        {"http://[fc00::1]/", false, "unique local"},
        {"http://[fd12:3456:789a::1]/", false, "unique local"},
        {"http://[ff02::1]/", false, "multicast"},
        {"http://[2001:db8::1]/", false, "documentation"},
        {"http://[3fff::1]/", false, "documentation"},
        {"http://[2001:0:4136:e378::1]/", false, "Teredo"},
        {"http://[2001:2::1]/", false, "IETF"},
        {"http://[fec0::1]/", false, "site-local"},
        {"http://[100::1]/", false, "discard"},
        {"http://[5f00::1]/", false, "not global unicast"},
        {"http://[::ffff:0:7f00:1]/", false, "not global unicast"},
        {"http://[::ffff:127.0.0.1]/", false, "IPv4-mapped loopback"},
        {"http://[::ffff:7f00:1]/", false, "IPv4-mapped loopback"},
        {"http://[::FFFF:7F00:1]/", false, "IPv4-mapped loopback"},
        {"http://[::ffff:169.254.169.254]/", false, "IPv4-mapped link-local"},
        {"http://[::ffff:a00:1]/", false, "IPv4-mapped private"},
        {"http://[::127.0.0.1]/", false, "IPv4-compatible loopback"},
        {"http://[::8.8.8.8]/", false, "IPv4-compatible"},
        {"http://[64:ff9b::7f00:1]/", false, "NAT64 loopback"},
        {"http://[64:ff9b::a9fe:a9fe]/", false, "NAT64 link-local"},
        {"http://[64:ff9b:1::1]/", false, "NAT64 local"},
        {"http://[2002:7f00:1::]/", false, "6to4 loopback"},
        {"http://[2002:a9fe:a9fe::1]/", false, "6to4 link-local"},
        {"http://[fe80::1%25eth0]/", false, "zone ids"},
        {"http://[fe80::1%eth0]/", false, "zone ids"},
        {"http://example.com/?q=[%41]", false, "not an absolute URL"},
        {"http://[v1.fe80]/", false, "a name or an IP address"},
        // Other spellings of 127.0.0.1 and friends: refused, never resolved.
        {"http://2130706433/", false, "non-standard spelling"},
        {"http://0x7f000001/", false, "non-standard spelling"},
        {"http://0X7F000001/", false, "non-standard spelling"},
        {"http://0177.0.0.1/", false, "non-standard spelling"},
        {"http://0x7f.0.0.1/", false, "non-standard spelling"},
        {"http://0x7f.0x0.0x0.0x1/", false, "non-standard spelling"},
        {"http://127.1/", false, "non-standard spelling"},
        {"http://127.0.1/", false, "non-standard spelling"},
        {"http://017700000001/", false, "non-standard spelling"},
        {"http://127.000.000.001/", false, "non-standard spelling"},
        {"http://127.0.0.01/", false, "non-standard spelling"},
        {"http://3232235521/", false, "non-standard spelling"},     // 192.168.0.1
        {"http://2852039166/", false, "non-standard spelling"},     // 169.254.169.254
        {"http://169.254.43518/", false, "non-standard spelling"},  // 169.254.169.254
        {"http://256.1.1.1/", false, "non-standard spelling"},
        {"http://1.2.3.4.5/", false, "IPv4 address followed by more"},
        {"http://1.2.3.4.example.com/", false, "IPv4 address followed by more"},  // url#755
        {"http://127.0.0.1.nip.io/", false, "IPv4 address followed by more"},
        {"http://1.2.3.4x/", false, "IPv4 address followed by more"},
        {"http://1.2.3.4:80x/", false, "IPv4 address followed by more"},
        {"http://example.com:80x/", false, "malformed"},
        {"http://[::1]x/", false, "malformed"},
        {"http://1.2.3.256/", false, "non-standard spelling"},
        {"http://127.0.0.0x/", false, "IPv4 address followed by more"},
        {"http://127.0.0x/", false, "non-standard spelling"},  // glibc: "0x" is 0
        {"http://127.0x1/", false, "non-standard spelling"},
        {"http://0/", false, "non-standard spelling"},
        {"http://example.0x10/", false, "non-standard spelling"},
        {"http://127.0.0.1./", false, "IPv4 address followed by more"},  // url#755 again
        {"http://8.8.8.8./", false, "IPv4 address followed by more"},
        {"http://localhost./", true},  // a name: refused after resolution (check_url)
        // Percent-encoded hosts.
        {"http://%31%32%37.0.0.1/", false, "percent-encoded"},
        {"http://%6c%6f%63%61%6c%68%6f%73%74/", false, "percent-encoded"},
        {"http://exa%2Emple.com/", false, "percent-encoded"},
        // User info, fragments, backslashes, odd characters.
        {"http://a@127.0.0.1/", false, "credentials"},
        {"http://user:pass@example.com/", false, "credentials"},
        {"http://@example.com/", false, "credentials"},
        {"http://example.com@127.0.0.1/", false, "credentials"},
        {"http://127.0.0.1#@example.com/", false, "loopback"},
        {"http://127.0.0.1\\@example.com/", false, "backslashes"},
        {"http:\\\\127.0.0.1\\", false, "backslashes"},
        {"http://exa mple.com/", false, "spaces"},
        {"http://example.com\t/", false, "control"},
        {"http://exämple.com/", false, "non-ASCII"},
        {"http://ex!ample.com/", false, "characters"},
        {"http://example..com/", false, "empty label"},
        {"http://.example.com/", false, "empty label"},
        {"http://example.com../", false, "empty label"},
        // Schemes, hosts, ports.
        {"ftp://example.com/a.mp3", false, "scheme"},
        {"file:///etc/passwd", false, "scheme"},
        {"gopher://example.com:70/_x", false, "scheme"},
        {"ws://example.com/", false, "scheme"},
        {"//example.com/a.mp3", false, "absolute URL"},
        {"/a.mp3", false, "absolute URL"},
        {"", false, "absolute URL"},
        {"http:///a.mp3", false, "no host"},
        {"http:/a.mp3", false, "no host"},
        {"http://:80/", false, "no host"},
        {"http://example.com:0/", false, "1..65535"},
        {"http://example.com:65536/", false, "1..65535"},
        {"http://example.com:99999999999999999999/", false, "1..65535"},
        {"http://example.com:8080/", false, "port 8080 is not allowed"},
        {"https://example.com:22/", false, "port 22 is not allowed"},
        {"http://example.com:443/", true},
        {"http://example.com:/", true},  // empty port: the default
    };
    url_policy p;  // ports 80 and 443, no allow-list, http allowed
    int n = 0;
    for (const auto& c : cases) {
        ++n;
        const auto why = check_url_syntax(c.url, p);
        if (c.ok) {
            EXPECT_FALSE(why) << c.url << ": " << why.value_or("");
        } else if (!why) {
            ADD_FAILURE() << c.url << " was accepted";
        } else {
            EXPECT_NE(why->find(c.reason), std::string::npos)
                << c.url << ": \"" << *why << "\" lacks \"" << c.reason << "\"";
        }
    }
    EXPECT_GE(n, 40);
}

TEST(UrlGuard, ReasonsAreClear) {
    url_policy p;
    EXPECT_EQ(check_url_syntax("http://169.254.169.254/", p).value_or(""),
              "the host is a link-local (cloud metadata) address (169.254.169.254)");
    EXPECT_EQ(check_url_syntax("http://2130706433/", p).value_or(""),
              "the host is an IPv4 address in a non-standard spelling (decimal, octal, hex, "
              "short or zero-padded form); write four decimal octets");
    EXPECT_EQ(check_url_syntax("ftp://example.com/", p).value_or(""),
              "the scheme must be http or https");
}

TEST(UrlGuard, PortsFromPolicy) {
    url_policy p;
    p.allowed_ports = {443, 8443};
    EXPECT_FALSE(check_url_syntax("https://example.com/", p));
    EXPECT_FALSE(check_url_syntax("https://example.com:8443/", p));
    EXPECT_TRUE(check_url_syntax("http://example.com/", p)) << "80 is not in the list";
    p.allowed_ports.clear();  // any port
    EXPECT_FALSE(check_url_syntax("http://example.com:1/", p));
    EXPECT_FALSE(check_url_syntax("http://example.com:65535/", p));
    EXPECT_TRUE(check_url_syntax("http://example.com:0/", p));
}

TEST(UrlGuard, PlainHttpOnlyWhenAllowed) {
    url_policy p;
    p.allow_http = false;
    EXPECT_FALSE(check_url_syntax("https://example.com/", p));
    EXPECT_EQ(check_url_syntax("http://example.com/", p).value_or(""),
              "plain http is not allowed (use https)");
}

TEST(UrlGuard, AllowListOverridesThePolicyPerAddress) {
    auto p = any_port_policy({"127.0.0.1/32", "fd00::/8"});
    EXPECT_FALSE(check_url_syntax("http://127.0.0.1:8080/", p));
    EXPECT_TRUE(check_url_syntax("http://127.0.0.2:8080/", p));
    EXPECT_TRUE(check_url_syntax("http://[::1]/", p));
    EXPECT_FALSE(check_url_syntax("http://[fd00::5]/", p));
    // The allow-list does not make other spellings acceptable.
    EXPECT_TRUE(check_url_syntax("http://2130706433/", p));
    EXPECT_TRUE(check_url_syntax("http://127.1/", p));
    EXPECT_TRUE(check_url_syntax("http://[::ffff:127.0.0.1]/", p)) << "families are not mixed";
}

// --- the endpoint check ---

struct endpoint_case {
    const char* address;
    bool ok;
};

TEST(UrlGuard, EndpointCheckTable) {
    const endpoint_case cases[] = {
        {"8.8.8.8", true},
        {"1.1.1.1", true},
        {"93.184.216.34", true},
        {"2606:4700::1111", true},
        {"2a00:1450:4001:80b::200e", true},
        {"::ffff:8.8.8.8", true},
        {"64:ff9b::808:808", true},
        {"127.0.0.1", false},
        {"127.0.0.2", false},
        {"10.1.2.3", false},
        {"172.20.0.1", false},
        {"192.168.100.1", false},
        {"169.254.169.254", false},
        {"100.64.0.1", false},
        {"224.0.0.251", false},
        {"255.255.255.255", false},
        {"0.0.0.0", false},
        {"192.0.2.1", false},
        {"198.51.100.1", false},
        {"203.0.113.1", false},
        {"::1", false},
        {"::", false},
        {"fe80::1", false},
        {"fe80::1%eth0", false},
        {"fc00::1", false},
        {"fdab::1", false},
        {"ff02::1", false},
        {"2001:db8::1", false},
        {"::ffff:127.0.0.1", false},
        {"::ffff:169.254.169.254", false},
        {"64:ff9b::7f00:1", false},
        {"64:ff9b::a9fe:a9fe", false},
        {"2002:7f00:1::", false},
        {"2001:0:4136:e378:8000:63bf:3fff:fdd2", false},
    };
    auto check = segue::net::make_endpoint_check(std::make_shared<url_policy>(any_port_policy()));
    for (const auto& c : cases) {
        std::vector<resolved_endpoint> eps{
            {c.address, 443, std::string_view(c.address).find(':') != std::string_view::npos}};
        const auto why = check("h.example", eps);
        EXPECT_EQ(!why, c.ok) << c.address << ": " << why.value_or("");
    }
    // One refused address among public ones refuses the host.
    std::vector<resolved_endpoint> mixed{
        {"93.184.216.34", 443, false}, {"2606:4700::1111", 443, true}, {"10.0.0.7", 443, false}};
    EXPECT_EQ(check("rebind.example", mixed).value_or(""),
              "rebind.example resolves to 10.0.0.7 (private)");
    EXPECT_TRUE(check("empty.example", {}));
}

TEST(UrlGuard, EndpointCheckAllowListAndPorts) {
    url_policy p;
    p.allowed_ports = {443};
    p.allow = cidr_list({"127.0.0.1/32"});
    auto check = segue::net::make_endpoint_check(std::make_shared<url_policy>(p));
    EXPECT_FALSE(check("localhost", {{"127.0.0.1", 443, false}}));
    EXPECT_TRUE(check("localhost", {{"127.0.0.2", 443, false}}));
    EXPECT_TRUE(check("localhost", {{"127.0.0.1", 443, false}, {"::1", 443, true}}));
    EXPECT_EQ(check("localhost", {{"127.0.0.1", 8080, false}}).value_or(""),
              "localhost: port 8080 is not allowed");
}

// --- check_url: syntax + real resolution (names from /etc/hosts only) ---

std::optional<std::string> run_check(const std::string& url, url_policy p,
                                     std::chrono::milliseconds timeout = 5s,
                                     bool refuse_unresolvable = true) {
    asio::io_context ioc;
    std::optional<std::optional<std::string>> out;
    asio::co_spawn(ioc,
                   segue::net::check_url(ioc.get_executor(), url,
                                         std::make_shared<const url_policy>(std::move(p)), timeout,
                                         refuse_unresolvable),
                   [&](std::exception_ptr e, std::optional<std::string> r) {
                       if (e)
                           std::rethrow_exception(e);
                       out = std::move(r);
                   });
    ioc.run_for(30s);
    if (!out)
        throw std::runtime_error("check_url did not finish");
    return *out;
}

TEST(UrlGuard, CheckUrlResolvesAndRefusesLocalhost) {
    const auto why = run_check("http://localhost/", url_policy{});
    ASSERT_TRUE(why);
    EXPECT_NE(why->find("localhost resolves to 127.0.0.1 (loopback)"), std::string::npos) << *why;
    // The trailing dot is ignored: the same name, the same refusal.
    const auto dot = run_check("http://localhost./", url_policy{});
    ASSERT_TRUE(dot);
    EXPECT_NE(dot->find("loopback"), std::string::npos) << *dot;
    EXPECT_TRUE(run_check("http://LOCALHOST:80/x", url_policy{}));
}

TEST(UrlGuard, CheckUrlUnresolvableNamesAreRefusedOnlyWhenAsked) {
    // .invalid never resolves (RFC 6761). Submit time passes it on (DNS trouble may be
    // passing; the fetch checks again), everything else refuses it.
    const auto why = run_check("http://segue-test.invalid/", url_policy{});
    ASSERT_TRUE(why);
    EXPECT_NE(why->find("cannot resolve"), std::string::npos) << *why;
    EXPECT_FALSE(run_check("http://segue-test.invalid/", url_policy{}, 5s, false));
    // A refused address is refused either way.
    EXPECT_TRUE(run_check("http://localhost/", url_policy{}, 5s, false));
}

TEST(UrlGuard, CheckUrlAllowListedLocalhost) {
    // ::1 too: /etc/hosts may give localhost both.
    EXPECT_FALSE(run_check("http://localhost:8080/", any_port_policy({"127.0.0.1/32", "::1/128"})));
    EXPECT_FALSE(run_check("http://127.0.0.1:8080/", any_port_policy({"127.0.0.1/32"})));
    EXPECT_TRUE(run_check("http://127.0.0.2:8080/", any_port_policy({"127.0.0.1/32"})));
    // Syntax refusals come first, without a lookup.
    EXPECT_EQ(run_check("http://2130706433/", any_port_policy({"127.0.0.1/32"})).value_or(""),
              check_url_syntax("http://2130706433/", any_port_policy()).value_or("?"));
    EXPECT_TRUE(run_check("http://localhost:8080/", url_policy{}))
        << "8080 is not an allowed port by default";
}

// --- redirects, against a server on 127.0.0.1 ---

using http_request = bhttp::request<bhttp::string_body>;

std::string url_on(std::uint16_t port, const std::string& host, const std::string& path) {
    return "http://" + host + ":" + std::to_string(port) + path;
}

// Answers by path:
//   /chain/N      N > 0: 302 to the relative "/chain/N-1"; N == 0: 200 "final"
//   /abs/N        302 to the absolute http://127.0.0.1:<port>/chain/N-1
//   /to/<where>   302 to http://127.0.0.2:<port>/chain/0 (loopback2), http://2130706433:<port>
//                 (decimal), ftp://127.0.0.1/x (ftp), "http://[::1" (garbage), or /chain/0
//                 with 303 (see-other)
//   /nolocation   302 without a Location
//   /headers      200 with the Authorization field received as its body
asio::awaitable<void> serve_redirects(beast::tcp_stream s, std::uint16_t port,
                                      std::shared_ptr<std::atomic<int>> requests) {
    beast::flat_buffer buf;
    for (;;) {
        http_request req;
        auto [ec, n] = co_await bhttp::async_read(s, buf, req, use_tuple);
        if (ec)
            co_return;
        ++*requests;
        const std::string target(req.target());
        bhttp::response<bhttp::string_body> res{bhttp::status::found, 11};
        auto redirect = [&](std::string location) { res.set(bhttp::field::location, location); };
        if (target.rfind("/chain/", 0) == 0 || target.rfind("/abs/", 0) == 0) {
            const bool abs = target[1] == 'a';
            const int left = std::stoi(target.substr(target.rfind('/') + 1));
            if (left == 0 && !abs) {
                res.result(bhttp::status::ok);
                res.body() = "final";
            } else if (abs) {
                redirect(url_on(port, "127.0.0.1", "/chain/" + std::to_string(left - 1)));
            } else {
                redirect("/chain/" + std::to_string(left - 1));
            }
        } else if (target == "/to/loopback2") {
            redirect(url_on(port, "127.0.0.2", "/chain/0"));
        } else if (target == "/to/decimal") {
            redirect(url_on(port, "2130706433", "/chain/0"));
        } else if (target == "/to/ftp") {
            redirect("ftp://127.0.0.1/x");
        } else if (target == "/to/garbage") {
            redirect("http://[::1");
        } else if (target == "/to/see-other") {
            res.result(bhttp::status::see_other);
            redirect("../chain/0");
        } else if (target == "/to/localhost-headers") {
            redirect(url_on(port, "localhost", "/headers"));
        } else if (target == "/to/same-headers") {
            redirect("/headers");
        } else if (target == "/nolocation") {
            res.body() = "no location";
        } else if (target == "/headers") {
            res.result(bhttp::status::ok);
            res.body() = std::string(req[bhttp::field::authorization]);
        } else {
            res.result(bhttp::status::not_found);
        }
        res.keep_alive(req.keep_alive());
        res.prepare_payload();
        auto [wec, wn] = co_await bhttp::async_write(s, res, use_tuple);
        if (wec || !res.keep_alive())
            co_return;
    }
}

asio::awaitable<void> accept_redirects(tcp::acceptor& acceptor,
                                       std::shared_ptr<std::atomic<int>> requests) {
    const auto port = acceptor.local_endpoint().port();
    for (;;) {
        auto [ec, sock] = co_await acceptor.async_accept(use_tuple);
        if (ec)
            co_return;
        asio::co_spawn(acceptor.get_executor(),
                       serve_redirects(beast::tcp_stream(std::move(sock)), port, requests),
                       asio::detached);
    }
}

// A server on 127.0.0.1:0 with its own IO thread.
class redirect_server {
  public:
    redirect_server() : acceptor_(ioc_, tcp::endpoint(asio::ip::make_address("127.0.0.1"), 0)) {
        asio::co_spawn(ioc_, accept_redirects(acceptor_, requests_), asio::detached);
        thread_ = std::thread([this] { ioc_.run(); });
    }
    ~redirect_server() {
        ioc_.stop();
        thread_.join();
    }
    std::uint16_t port() const { return acceptor_.local_endpoint().port(); }
    std::string url(const std::string& path) const { return url_on(port(), "127.0.0.1", path); }
    int requests() const { return requests_->load(); }

  private:
    asio::io_context ioc_;
    tcp::acceptor acceptor_;
    std::shared_ptr<std::atomic<int>> requests_ = std::make_shared<std::atomic<int>>(0);
    std::thread thread_;
};

class UrlGuardRedirects : public ::testing::Test {
  protected:
    // Only 127.0.0.1 is allow-listed: every other non-public address stays refused.
    UrlGuardRedirects() {
        use_policy(any_port_policy({"127.0.0.1/32"}));
        file_ = (std::filesystem::temp_directory_path() /
                 ("url_guard_test_" + std::to_string(::getpid()) + ".bin"))
                    .string();
    }
    ~UrlGuardRedirects() override {
        client_.reset();
        // The blocking thread may still be handing a finished job back to ioc_ (releasing its
        // executor's work count) after the call's result is in: joined before ioc_ goes, or
        // it writes to a deleted io_context (TSAN: heap-use-after-free).
        files_.stop();
        std::filesystem::remove(file_);
    }

    // A fresh client with `p` installed as its endpoint check.
    void use_policy(url_policy p) {
        client_.reset();
        policy_ = std::make_shared<const url_policy>(std::move(p));
        segue::net::client_options o;
        o.allow_plain_http = true;
        o.connect_timeout = 2s;
        o.request_timeout = 10s;
        o.check_endpoints = segue::net::make_endpoint_check(policy_);
        o.run_blocking = [this](std::function<void()> fn) { return files_.run(std::move(fn)); };
        client_ = std::make_unique<segue::net::http_client>(ioc_, o, metrics_);
    }

    segue::net::result run(asio::awaitable<segue::net::result> call) {
        std::optional<segue::net::result> out;
        std::exception_ptr err;
        asio::co_spawn(ioc_, std::move(call), [&](std::exception_ptr e, segue::net::result r) {
            err = e;
            out = std::move(r);
            ioc_.stop();
        });
        ioc_.restart();
        ioc_.run_for(60s);
        if (err)
            std::rethrow_exception(err);
        if (!out)
            throw std::runtime_error("the call did not finish");
        return std::move(*out);
    }

    segue::net::result download(const std::string& url, int max_hops) {
        segue::net::request r;
        r.url = url;
        return run(segue::net::download_following(*client_, std::move(r), file_, 1 << 20, policy_,
                                                  max_hops));
    }

    std::string file_text() const {
        std::ifstream in(file_);
        std::stringstream ss;
        ss << in.rdbuf();
        return ss.str();
    }

    segue::runtime::blocking_pool files_{1};
    asio::io_context ioc_;
    segue::metrics::registry metrics_;
    std::shared_ptr<const url_policy> policy_;
    std::unique_ptr<segue::net::http_client> client_;
    std::string file_;
};

TEST_F(UrlGuardRedirects, NoRedirectIsOneRequest) {
    redirect_server server;
    auto r = download(server.url("/chain/0"), segue::net::fetch_max_redirects);
    ASSERT_TRUE(r.ok()) << r.message;
    EXPECT_EQ(r.res.status, 200);
    EXPECT_EQ(file_text(), "final");
    EXPECT_EQ(server.requests(), 1);
}

TEST_F(UrlGuardRedirects, TwoHopsSucceed) {
    redirect_server server;
    auto r = download(server.url("/chain/2"), segue::net::fetch_max_redirects);
    ASSERT_TRUE(r.ok()) << r.message;
    EXPECT_EQ(r.res.status, 200);
    EXPECT_EQ(file_text(), "final");
    EXPECT_EQ(server.requests(), 3);
    // Absolute Locations too, and exactly max_hops of them.
    auto a = download(server.url("/abs/3"), 3);
    ASSERT_TRUE(a.ok()) << a.message;
    EXPECT_EQ(file_text(), "final");
}

TEST_F(UrlGuardRedirects, FourHopsFail) {
    redirect_server server;
    auto r = download(server.url("/chain/4"), segue::net::fetch_max_redirects);
    EXPECT_EQ(r.error, failure::refused_address);
    EXPECT_EQ(r.message, "redirect limit (3) reached: HTTP 302 to /chain/0");
    EXPECT_EQ(r.res.status, 302);
    EXPECT_EQ(server.requests(), 4);
    EXPECT_FALSE(std::filesystem::exists(file_));
}

TEST_F(UrlGuardRedirects, RedirectToAnotherLoopbackAddressIsRefused) {
    redirect_server server;
    auto r = download(server.url("/to/loopback2"), segue::net::fetch_max_redirects);
    EXPECT_EQ(r.error, failure::refused_address);
    EXPECT_EQ(r.message, "redirect 1 to " + url_on(server.port(), "127.0.0.2", "/chain/0") +
                             ": the host is a loopback address (127.0.0.2)");
    EXPECT_EQ(server.requests(), 1);
}

TEST_F(UrlGuardRedirects, RedirectToDecimalIpIsRefused) {
    redirect_server server;
    auto r = download(server.url("/to/decimal"), segue::net::fetch_max_redirects);
    EXPECT_EQ(r.error, failure::refused_address);
    EXPECT_NE(r.message.find("non-standard spelling"), std::string::npos) << r.message;
    EXPECT_NE(r.message.find("redirect 1 to http://2130706433:"), std::string::npos) << r.message;
    EXPECT_EQ(server.requests(), 1);
}

TEST_F(UrlGuardRedirects, RedirectToOtherSchemesOrGarbageIsRefused) {
    redirect_server server;
    auto ftp = download(server.url("/to/ftp"), 3);
    EXPECT_EQ(ftp.error, failure::bad_url);
    EXPECT_EQ(ftp.message, "redirect 1 to ftp://127.0.0.1/x: the scheme must be http or https");
    auto garbage = download(server.url("/to/garbage"), 3);
    EXPECT_EQ(garbage.error, failure::bad_url);
    EXPECT_NE(garbage.message.find("Location"), std::string::npos) << garbage.message;
}

TEST_F(UrlGuardRedirects, RedirectsAreNotFollowedWithZeroHops) {
    redirect_server server;
    auto r = download(server.url("/chain/1"), segue::net::webhook_max_redirects);
    EXPECT_EQ(r.error, failure::refused_address);
    EXPECT_EQ(r.message, "redirect limit (0) reached: HTTP 302 to /chain/0");
    EXPECT_EQ(r.res.status, 302) << "the 3xx is kept for the caller";
    EXPECT_EQ(server.requests(), 1);

    // A webhook-like POST: never redirected, whatever max_hops says.
    segue::net::request post;
    post.method = "POST";
    post.url = server.url("/chain/1");
    post.body = "{}";
    auto p = run(segue::net::send_following(*client_, post, policy_, 3));
    EXPECT_EQ(p.error, failure::refused_address);
    EXPECT_EQ(p.res.status, 302);
    EXPECT_EQ(server.requests(), 2);
}

TEST_F(UrlGuardRedirects, SeeOtherWithRelativeLocationAndMissingLocation) {
    redirect_server server;
    auto r = download(server.url("/to/see-other"), 1);
    ASSERT_TRUE(r.ok()) << r.message;
    EXPECT_EQ(file_text(), "final");
    // A 3xx without a Location is a plain (non-2xx) response.
    auto n = download(server.url("/nolocation"), 3);
    ASSERT_TRUE(n.ok()) << n.message;
    EXPECT_EQ(n.res.status, 302);
}

TEST_F(UrlGuardRedirects, CredentialsStayWithTheOrigin) {
    redirect_server server;
    use_policy(any_port_policy({"127.0.0.1/32", "::1/128"}));  // localhost may have ::1 too
    segue::net::request r;
    r.url = server.url("/to/same-headers");
    r.headers = {{"Authorization", "Bearer secret"}};
    auto same = run(segue::net::send_following(*client_, r, policy_, 3));
    ASSERT_TRUE(same.ok()) << same.message;
    EXPECT_EQ(same.res.body, "Bearer secret");
    // localhost is another origin (it resolves to the allow-listed 127.0.0.1).
    r.url = server.url("/to/localhost-headers");
    auto other = run(segue::net::send_following(*client_, r, policy_, 3));
    ASSERT_TRUE(other.ok()) << other.message;
    EXPECT_EQ(other.res.body, "");
}

TEST_F(UrlGuardRedirects, FirstUrlIsCheckedToo) {
    redirect_server server;
    auto r = download(url_on(server.port(), "127.1", "/chain/0"), 3);
    EXPECT_EQ(r.error, failure::refused_address);
    EXPECT_NE(r.message.find("non-standard spelling"), std::string::npos) << r.message;
    EXPECT_EQ(server.requests(), 0);
}

TEST_F(UrlGuardRedirects, OverallTimeoutBoundsAllHops) {
    redirect_server server;
    segue::net::request r;
    r.url = server.url("/chain/2");
    r.timeout = 5s;
    auto ok = run(segue::net::download_following(*client_, r, file_, 1 << 20, policy_, 3));
    ASSERT_TRUE(ok.ok()) << ok.message;
}

}  // namespace

#pragma once
// The one guard for every URL a client names (audio_url, webhook_url, URLs a provider hands us):
// against SSRF, a user-given URL may reach only public addresses on allowed ports.
//
// Three layers, all driven by the same url_policy:
//  1. check_url_syntax(): the URL text alone, no DNS. http/https only (http only if
//     allow_http), a host, no user info, an allowed port. The host is a DNS name
//     ([a-z0-9._-] labels, one trailing dot tolerated and ignored), a canonical dotted-quad IPv4
//     address or a bracketed IPv6 address; an IP literal is judged by the address policy right
//     away. Refused outright, never handed to a resolver (glibc's inet_aton would decode them):
//     any host whose last label is numeric but which is not a canonical dotted quad
//     ("2130706433", "0x7f000001", "0177.0.0.1", "127.1", "127.000.000.001", "0x7f.0.0.1"),
//     percent-encoded hosts, IPv6 zone ids, IPvFuture literals, and a dotted quad followed by
//     more characters ("1.2.3.4.example.com", "127.0.0.1.", "1.2.3.4x"), which Boost.URL 1.81
//     misreads as the address 1.2.3.4 plus a path (boostorg/url#755).
//  2. make_endpoint_check(): installed as client_options::check_endpoints of the http_client
//     that fetches user-given URLs, it judges every address the host resolved to (A and AAAA)
//     and the port; one refused address refuses the request. The client connects only to the
//     addresses it checked (no second lookup, so DNS rebinding gets nowhere).
//  3. check_url(): syntax plus a resolution and the same address check, for submit time, so a
//     refused URL is a 422 naming the field before any task exists. Advisory only: what the
//     fetch later resolves is checked again by the endpoint check.
//
// Addresses: non_public_reason() (address_policy.hpp) decides, except those inside
// url_policy::allow (a CIDR allow-list from config, e.g. 127.0.0.1/32 in tests), which are
// allowed whatever their class. IPv4-mapped addresses are not matched by IPv4 allow entries.
//
// Redirects are never followed by http_client; download_following()/send_following() follow at
// most `max_hops` of them, each Location (relative ones resolved against the current URL) going
// through check_url_syntax() again and its addresses through the client's endpoint check. An
// https -> http redirect is allowed exactly when the policy allows http at all (the same check
// as for the first URL: a guard that refuses http refuses the downgrade).

#include <boost/asio/any_io_executor.hpp>
#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/net/address_policy.hpp"
#include "gateway/net/http_client.hpp"

namespace segue::net {

class dns_resolver;

struct url_policy {
    // Ports a URL may name (explicitly or by its scheme's default); empty: any port 1..65535.
    std::vector<std::uint16_t> allowed_ports{80, 443};
    // Addresses allowed whatever non_public_reason() says (tests: 127.0.0.1/32).
    cidr_list allow;
    // Plain http:// URLs (and https -> http redirects). https:// is always allowed.
    bool allow_http = true;
    // Resolves host names for check_url (dns.hpp); null: a private one (no shared cache).
    std::shared_ptr<dns_resolver> resolver;
};

// Redirect budgets: audio and other fetches follow a few; webhook deliveries none (a 3xx from a
// webhook receiver is a failed delivery).
inline constexpr int fetch_max_redirects = 3;
inline constexpr int webhook_max_redirects = 0;

// Syntax check of a URL string (see 1. above): nullopt if acceptable, else the reason (the caller
// names the field: "audio_url: <reason>"). Pure: no DNS, no I/O.
std::optional<std::string> check_url_syntax(std::string_view url, const url_policy& policy);

// The endpoint_check for client_options::check_endpoints of a client that fetches only
// user-given URLs (see 2. above). The reason names the host, the address and its class.
endpoint_check make_endpoint_check(std::shared_ptr<const url_policy> policy);

// Syntax + resolution (A and AAAA, on `ex`, bounded by `timeout`) + address check (see 3.
// above). nullopt if OK, else the reason; a name that does not resolve, or a resolution that
// times out, is refused too ("cannot resolve ...") unless `refuse_unresolvable` is false (submit
// time: DNS trouble may be passing, and every later use checks again). Runs on a strand of `ex`;
// `ex` must belong to an io_context that keeps running.
boost::asio::awaitable<std::optional<std::string>> check_url(
    boost::asio::any_io_executor ex, std::string url, std::shared_ptr<const url_policy> policy,
    std::chrono::milliseconds timeout, bool refuse_unresolvable = true);

// http_client::download(r, path, max_bytes) following at most `max_hops` redirects (301, 302,
// 303, 307, 308 with a Location). `client` should have make_endpoint_check(policy) installed:
// here each URL (the first one included) passes check_url_syntax(), the client checks the
// addresses. The result is the last hop's, except:
//  - a URL or Location refused by the syntax check: failure::bad_url (malformed, or not
//    resolvable against the current URL), failure::plain_http_refused (http while !allow_http),
//    failure::refused_address (policy: address, port, numeric IPv4 spelling); the message names
//    the hop and the URL;
//  - a redirect beyond `max_hops`: failure::refused_address, message "redirect limit (N)
//    reached: HTTP 302 to <Location>", and `res` still holds the 3xx response (status,
//    headers, body) for callers that want to look at it. With max_hops 0 (webhooks) every
//    redirect ends so. A 3xx without a Location (304, 300) is returned as a plain response.
// On a cross-origin redirect, Authorization, Cookie, Proxy-Authorization and a caller-set Host
// are dropped. If r.timeout is set it bounds all hops together, else each hop has the client's
// request_timeout. Only GET and HEAD are redirected (same method); for other methods any redirect
// ends as if max_hops were 0.
boost::asio::awaitable<result> download_following(http_client& client, request r, std::string path,
                                                  std::uint64_t max_bytes,
                                                  std::shared_ptr<const url_policy> policy,
                                                  int max_hops);

// The same streaming a 2xx body to `sink` (http_client::download(r, sink, max_bytes)); the sink
// sees only the last hop's body, never a redirect's.
boost::asio::awaitable<result> download_following(http_client& client, request r, body_sink sink,
                                                  std::uint64_t max_bytes,
                                                  std::shared_ptr<const url_policy> policy,
                                                  int max_hops);

// The same with http_client::send() (in-memory body), e.g. a webhook POST with
// webhook_max_redirects: its URL is re-checked for syntax and a 3xx is a failure.
boost::asio::awaitable<result> send_following(http_client& client, request r,
                                              std::shared_ptr<const url_policy> policy,
                                              int max_hops);

}  // namespace segue::net

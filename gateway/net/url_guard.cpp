#include "gateway/net/url_guard.hpp"

#include <arpa/inet.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/ip/tcp.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/strand.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/url/parse.hpp>
#include <boost/url/url.hpp>

#include <algorithm>
#include <cctype>
#include <utility>

#include "gateway/net/dns.hpp"
#include "gateway/util/text.hpp"

namespace segue::net {
namespace {

using util::iequals;

namespace asio = boost::asio;
namespace urls = boost::urls;
using tcp = asio::ip::tcp;
using error_code = boost::system::error_code;
using steady = std::chrono::steady_clock;

// What the syntax check learnt about an acceptable URL.
struct checked_url {
    std::string host;  // lower case, no trailing dot, an IPv6 literal without brackets
    bool host_is_ip = false;
    std::uint16_t port = 0;
};

// Why a URL is refused, and the client failure that stands for it.
struct refusal {
    failure kind;
    std::string why;
};

std::string lower(std::string_view s) {
    std::string out(s);
    std::transform(out.begin(), out.end(), out.begin(),
                   [](unsigned char c) { return static_cast<char>(std::tolower(c)); });
    return out;
}

bool name_char(char c) {
    return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_';
}

bool all_digits(std::string_view s) {
    return !s.empty() &&
           std::all_of(s.begin(), s.end(), [](char c) { return c >= '0' && c <= '9'; });
}

// A label that inet_aton (and the WHATWG URL parser) reads as a number: decimal or octal digits,
// or "0x" followed by hex digits (none at all included: "0x" is 0 to glibc).
bool numeric_label(std::string_view l) {
    if (all_digits(l))
        return true;
    if (l.size() >= 2 && l[0] == '0' && l[1] == 'x')
        return std::all_of(l.begin() + 2, l.end(),
                           [](unsigned char c) { return std::isxdigit(c) != 0; });
    return false;
}

std::optional<refusal> check_address(const std::string& ip, const url_policy& p) {
    if (p.allow.contains(ip))
        return std::nullopt;
    if (auto why = non_public_reason(ip))
        return refusal{failure::refused_address, "the host is a " + *why + " address (" + ip + ")"};
    return std::nullopt;
}

bool port_allowed(std::uint16_t port, const url_policy& p) {
    return p.allowed_ports.empty() ||
           std::find(p.allowed_ports.begin(), p.allowed_ports.end(), port) != p.allowed_ports.end();
}

std::optional<refusal> check_name(std::string_view encoded, const url_policy& p, checked_url& out) {
    if (encoded.find('%') != std::string_view::npos)
        return refusal{failure::bad_url, "the host must not be percent-encoded"};
    std::string host = lower(encoded);
    if (!host.empty() && host.back() == '.')
        host.pop_back();  // "localhost." is "localhost"
    if (host.empty())
        return refusal{failure::bad_url, "the URL has no host"};
    if (!std::all_of(host.begin(), host.end(), name_char))
        return refusal{failure::bad_url,
                       "the host name has characters outside [a-z0-9.-_] (IDNs must be punycode)"};
    if (host.size() > 253)
        return refusal{failure::bad_url, "the host name is longer than 253 characters"};
    std::string_view last;
    for (std::size_t start = 0;;) {
        const std::size_t dot = std::min(host.find('.', start), host.size());
        const std::string_view label(host.data() + start, dot - start);
        if (label.empty())
            return refusal{failure::bad_url, "the host name has an empty label"};
        if (label.size() > 63)
            return refusal{failure::bad_url, "a host name label is longer than 63 characters"};
        last = label;
        if (dot == host.size())
            break;
        start = dot + 1;
    }
    // A name ending in a number is an IPv4 address or nothing: only the canonical dotted quad
    // is accepted (it arrives here with a trailing dot), every other spelling is refused
    // before a resolver could decode it.
    if (numeric_label(last)) {
        unsigned char b[4];
        if (::inet_pton(AF_INET, host.c_str(), b) != 1)
            return refusal{failure::refused_address,
                           "the host is an IPv4 address in a non-standard spelling (decimal, "
                           "octal, hex, short or zero-padded form); write four decimal octets"};
        out.host_is_ip = true;
    }
    out.host = std::move(host);
    if (out.host_is_ip)
        return check_address(out.host, p);
    return std::nullopt;
}

// Why parse_uri refused `url`, in words a client can act on.
std::string unparsable_reason(std::string_view url) {
    if (url.find('\\') != std::string_view::npos)
        return "backslashes are not allowed in a URL";
    if (std::any_of(url.begin(), url.end(), [](unsigned char c) { return c <= 0x20 || c >= 0x7f; }))
        return "the URL has spaces, control or non-ASCII characters (percent-encode them)";
    // "scheme://[...%...]": an IP literal with a zone id (RFC 6874), which Boost.URL refuses.
    if (const auto slashes = url.find("//"); slashes != std::string_view::npos) {
        const auto host = url.substr(slashes + 2);
        const auto at = host.find('@');
        const auto literal = host.substr(at == std::string_view::npos ? 0 : at + 1);
        if (!literal.empty() && literal.front() == '[' && literal.find('%') < literal.find(']'))
            return "IPv6 zone ids are not allowed";
    }
    return "not an absolute URL";
}

std::optional<refusal> check_syntax(std::string_view url, const url_policy& p, checked_url& out) {
    auto parsed = urls::parse_uri(url);
    if (!parsed)
        return refusal{failure::bad_url, unparsable_reason(url)};
    const urls::url_view u = *parsed;
    const bool tls = u.scheme_id() == urls::scheme::https;
    if (!tls && u.scheme_id() != urls::scheme::http)
        return refusal{failure::bad_url, "the scheme must be http or https"};
    if (!tls && !p.allow_http)
        return refusal{failure::plain_http_refused, "plain http is not allowed (use https)"};
    if (!u.has_authority() || u.encoded_host().empty())
        return refusal{failure::bad_url, "the URL has no host"};
    if (u.has_userinfo())
        return refusal{failure::bad_url, "credentials (user info) are not allowed in the URL"};
    // After an authority the path is empty or starts with '/'. Anything else is where Boost.URL
    // 1.81 stopped reading the host or port too early: it reads "1.2.3.4.example.com" (and
    // "127.0.0.1.", "1.2.3.4x") as the IPv4 address 1.2.3.4 followed by a path
    // (boostorg/url#755), and "example.com:80x" as port 80. Refused, so the host checked is the
    // host the client would use.
    if (const auto path = u.encoded_path(); !path.empty() && path.front() != '/')
        return refusal{failure::bad_url,
                       u.host_type() == urls::host_type::ipv4
                           ? "the host starts with an IPv4 address followed by more characters "
                             "(such as 1.2.3.4.example.com): not supported"
                           : "the host or port is malformed"};

    out.port = tls ? 443 : 80;
    if (u.has_port() && !u.port().empty()) {
        unsigned long port = 0;
        for (char c : u.port()) {
            port = port * 10 + static_cast<unsigned long>(c - '0');
            if (port > 65535)
                break;
        }
        if (port == 0 || port > 65535)
            return refusal{failure::bad_url, "the port must be 1..65535"};
        out.port = static_cast<std::uint16_t>(port);
    }
    if (!port_allowed(out.port, p))
        return refusal{failure::refused_address,
                       "port " + std::to_string(out.port) + " is not allowed"};

    switch (u.host_type()) {
        case urls::host_type::ipv4:
            out.host = u.host_address();
            out.host_is_ip = true;
            return check_address(out.host, p);
        case urls::host_type::ipv6:
            if (u.encoded_host().find('%') != urls::string_view::npos)
                return refusal{failure::bad_url, "IPv6 zone ids are not allowed"};
            out.host = lower(u.host_address());
            out.host_is_ip = true;
            return check_address(out.host, p);
        case urls::host_type::name:
            return check_name(u.encoded_host(), p, out);
        default:
            return refusal{failure::bad_url, "the host must be a name or an IP address"};
    }
}

// --- endpoint check ---

struct endpoint_guard {
    std::shared_ptr<const url_policy> policy;

    std::optional<std::string> operator()(std::string_view host,
                                          const std::vector<resolved_endpoint>& eps) const {
        if (eps.empty())
            return std::string(host) + " resolved to no address";
        for (const auto& ep : eps) {
            if (!port_allowed(ep.port, *policy))
                return std::string(host) + ": port " + std::to_string(ep.port) + " is not allowed";
            if (policy->allow.contains(ep.address))
                continue;
            if (auto why = non_public_reason(ep.address))
                return std::string(host) + " resolves to " + ep.address + " (" + *why + ")";
        }
        return std::nullopt;
    }
};

// --- resolution for check_url ---

asio::awaitable<std::optional<std::string>> resolve_and_check(
    checked_url target, std::shared_ptr<const url_policy> policy, std::chrono::milliseconds timeout,
    bool refuse_unresolvable) {
    // dns.hpp: concurrent, cached lookups (a policy without a resolver: the uncached default).
    auto resolver = policy->resolver ? policy->resolver : default_dns_resolver();
    auto a = co_await resolver->resolve(target.host, std::chrono::steady_clock::now() + timeout);
    if (!a.ok() && !refuse_unresolvable)
        co_return std::nullopt;
    if (a.timed_out)
        co_return "cannot resolve " + target.host + ": timed out";
    if (!a.ok())
        co_return "cannot resolve " + target.host + ": " + a.error;
    std::vector<resolved_endpoint> eps;
    for (const auto& addr : a.addresses)
        eps.push_back({addr.to_string(), target.port, addr.is_v6()});
    co_return endpoint_guard{policy}(target.host, eps);
}

// --- redirects ---

bool is_redirect(int status) {
    return status == 301 || status == 302 || status == 303 || status == 307 || status == 308;
}

// scheme://host:port of an absolute URL, for the cross-origin test.
std::string origin_of(std::string_view url) {
    auto parsed = urls::parse_uri(url);
    if (!parsed)
        return {};
    const urls::url_view u = *parsed;
    std::string host = lower(u.encoded_host());
    if (!host.empty() && host.back() == '.')
        host.pop_back();
    const std::string scheme = lower(u.scheme());
    std::string port(u.port());
    if (port.empty())
        port = scheme == "https" ? "443" : "80";
    return scheme + "://" + host + ":" + port;
}

void drop_credentials(request& r) {
    std::erase_if(r.headers, [](const auto& h) {
        return iequals(h.first, "authorization") || iequals(h.first, "cookie") ||
               iequals(h.first, "proxy-authorization") || iequals(h.first, "host");
    });
}

// The next URL a redirect leads to, or a refusal when the Location is not usable.
std::optional<refusal> next_url(const std::string& current, const std::string& location,
                                std::string& next) {
    auto ref = urls::parse_uri_reference(location);
    auto base = urls::parse_uri(current);
    if (!ref || !base)
        return refusal{failure::bad_url, "the Location is not a URL reference"};
    urls::url dest;
    if (!urls::resolve(*base, *ref, dest))
        return refusal{failure::bad_url, "the Location cannot be resolved"};
    dest.remove_fragment();
    next = std::string(dest.buffer());
    return std::nullopt;
}

std::string hop_label(int hop, const std::string& url) {
    return hop == 0 ? std::string() : "redirect " + std::to_string(hop) + " to " + url + ": ";
}

asio::awaitable<result> follow(http_client& client, request r, bool to_file, std::string path,
                               std::uint64_t max_bytes, std::shared_ptr<const url_policy> policy,
                               int max_hops, body_sink sink = {}) {
    const bool redirectable =
        (r.method == "GET" || r.method == "HEAD") && !r.body_source && !r.body_size;
    if (!redirectable || max_hops < 0)
        max_hops = 0;
    const auto start = steady::now();
    const std::optional<std::chrono::milliseconds> overall = r.timeout;
    for (int hop = 0;; ++hop) {
        checked_url cu;
        if (auto bad = check_syntax(r.url, *policy, cu)) {
            result out;
            out.error = bad->kind;
            out.message = hop_label(hop, r.url) + bad->why;
            co_return out;
        }
        if (overall) {
            const auto left = *overall - std::chrono::duration_cast<std::chrono::milliseconds>(
                                             steady::now() - start);
            if (left <= std::chrono::milliseconds::zero()) {
                result out;
                out.error = failure::timeout;
                out.message = hop_label(hop, r.url) + "the request's deadline passed";
                co_return out;
            }
            r.timeout = left;
        }
        result res = sink      ? co_await client.download(r, sink, max_bytes)
                     : to_file ? co_await client.download(r, path, max_bytes)
                               : co_await client.send(r);
        if (!res.ok() || !is_redirect(res.res.status))
            co_return res;
        const auto location = res.res.header("Location");
        if (!location)
            co_return res;
        if (hop >= max_hops) {
            res.error = failure::refused_address;
            res.message = "redirect limit (" + std::to_string(max_hops) + ") reached: HTTP " +
                          std::to_string(res.res.status) + " to " + *location;
            co_return res;
        }
        std::string next;
        if (auto bad = next_url(r.url, *location, next)) {
            result out;
            out.error = bad->kind;
            out.message = hop_label(hop + 1, *location) + bad->why;
            co_return out;
        }
        if (origin_of(next) != origin_of(r.url))
            drop_credentials(r);
        r.url = std::move(next);
    }
}

}  // namespace

std::optional<std::string> check_url_syntax(std::string_view url, const url_policy& policy) {
    checked_url cu;
    if (auto bad = check_syntax(url, policy, cu))
        return std::move(bad->why);
    return std::nullopt;
}

endpoint_check make_endpoint_check(std::shared_ptr<const url_policy> policy) {
    return endpoint_guard{std::move(policy)};
}

asio::awaitable<std::optional<std::string>> check_url(asio::any_io_executor ex, std::string url,
                                                      std::shared_ptr<const url_policy> policy,
                                                      std::chrono::milliseconds timeout,
                                                      bool refuse_unresolvable) {
    checked_url cu;
    if (auto bad = check_syntax(url, *policy, cu))
        co_return std::move(bad->why);
    if (cu.host_is_ip)
        co_return std::nullopt;  // already judged by the syntax check
    auto strand = asio::make_strand(ex);
    co_return co_await asio::co_spawn(
        strand, resolve_and_check(std::move(cu), std::move(policy), timeout, refuse_unresolvable),
        asio::use_awaitable);
}

asio::awaitable<result> download_following(http_client& client, request r, std::string path,
                                           std::uint64_t max_bytes,
                                           std::shared_ptr<const url_policy> policy, int max_hops) {
    return follow(client, std::move(r), true, std::move(path), max_bytes, std::move(policy),
                  max_hops);
}

asio::awaitable<result> download_following(http_client& client, request r, body_sink sink,
                                           std::uint64_t max_bytes,
                                           std::shared_ptr<const url_policy> policy, int max_hops) {
    return follow(client, std::move(r), true, std::string(), max_bytes, std::move(policy), max_hops,
                  std::move(sink));
}

asio::awaitable<result> send_following(http_client& client, request r,
                                       std::shared_ptr<const url_policy> policy, int max_hops) {
    return follow(client, std::move(r), false, std::string(), 0, std::move(policy), max_hops);
}

}  // namespace segue::net

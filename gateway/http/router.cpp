#include "gateway/http/router.hpp"

#include <algorithm>
#include <stdexcept>

#include "gateway/util/text.hpp"

namespace segue::http {
namespace {

std::vector<std::string_view> split_path(std::string_view path) {
    std::vector<std::string_view> out;
    std::size_t i = 0;
    if (!path.empty() && path.front() == '/')
        i = 1;
    while (i <= path.size()) {
        auto j = path.find('/', i);
        if (j == std::string_view::npos)
            j = path.size();
        out.push_back(path.substr(i, j - i));
        i = j + 1;
    }
    return out;
}

bool is_param(std::string_view seg) {
    return seg.size() > 2 && seg.front() == '{' && seg.back() == '}';
}

}  // namespace

std::string decode_unreserved(std::string_view path) {
    std::string out;
    out.reserve(path.size());
    for (std::size_t i = 0; i < path.size(); ++i) {
        if (path[i] == '%' && i + 2 < path.size() && util::hex_value(path[i + 1]) >= 0 &&
            util::hex_value(path[i + 2]) >= 0) {
            const char c =
                static_cast<char>(util::hex_value(path[i + 1]) * 16 + util::hex_value(path[i + 2]));
            const bool unreserved = (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
                                    (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
                                    c == '~';
            if (unreserved) {
                out.push_back(c);
                i += 2;
                continue;
            }
        }
        out.push_back(path[i]);
    }
    return out;
}

void router::add(std::string method, std::string pattern, handler fn, route_options options) {
    if (pattern.empty() || pattern.front() != '/')
        throw std::invalid_argument("route pattern must start with '/': " + pattern);
    for (const auto& r : routes_)
        if (r->method == method && r->pattern == pattern)
            throw std::invalid_argument("duplicate route " + method + " " + pattern);
    auto r = std::make_unique<route>();
    r->method = std::move(method);
    r->pattern = std::move(pattern);
    r->fn = std::move(fn);
    r->options = options;
    r->index = routes_.size();
    for (auto seg : split_path(r->pattern)) {
        if (seg.find('{') != std::string_view::npos && !is_param(seg))
            throw std::invalid_argument("malformed route segment in " + r->pattern);
        r->segments.emplace_back(seg);
    }
    routes_.push_back(std::move(r));
}

match_result router::match(std::string_view method, std::string_view path) const {
    match_result result;
    std::string decoded;
    if (path.find('%') != std::string_view::npos) {
        decoded = decode_unreserved(path);
        path = decoded;
    }
    const auto parts = split_path(path);
    // How many literal segments route `r` matches with, or -1 when it does not match the path.
    auto literals = [&](const route& r) {
        if (r.segments.size() != parts.size())
            return -1;
        int n = 0;
        for (std::size_t i = 0; i < parts.size(); ++i) {
            const auto& seg = r.segments[i];
            if (is_param(seg)) {
                if (parts[i].empty())
                    return -1;
            } else if (seg != parts[i]) {
                return -1;
            } else {
                ++n;
            }
        }
        return n;
    };
    // The most specific pattern wins: /v1/deliveries/redeliver is that path's only resource,
    // not a delivery named "redeliver" of /v1/deliveries/{id}. One pass: a route with more
    // literal segments than those seen so far starts the answer again.
    int best = -1;
    const route* head_fallback = nullptr;
    std::vector<std::pair<std::string, std::string>> head_params;
    for (const auto& r : routes_) {
        const int n = literals(*r);
        if (n < 0 || n < best)
            continue;
        if (n > best) {
            best = n;
            result = {};
            head_fallback = nullptr;
            head_params.clear();
        }
        std::vector<std::pair<std::string, std::string>> params;
        for (std::size_t i = 0; i < parts.size(); ++i)
            if (const auto& seg = r->segments[i]; is_param(seg))
                params.emplace_back(seg.substr(1, seg.size() - 2), parts[i]);
        if (r->method == method) {
            if (!result.matched) {  // the first of equally specific ones, as added
                result.matched = r.get();
                result.params = std::move(params);
            }
            continue;  // a more specific route further on may still take the path
        }
        if (result.matched)
            continue;
        if (method == "HEAD" && r->method == "GET" && !head_fallback) {
            head_fallback = r.get();
            head_params = std::move(params);
        }
        result.path_known = true;
        // Every GET route also answers HEAD (the fallback above): Allow says so.
        for (const std::string_view m :
             {std::string_view(r->method), r->method == "GET" ? "HEAD" : std::string_view()}) {
            if (m.empty() || result.allow.find(m) != std::string::npos)
                continue;
            if (!result.allow.empty())
                result.allow += ", ";
            result.allow += m;
        }
    }
    if (result.matched) {
        result.path_known = false;
        result.allow.clear();
        return result;
    }
    if (head_fallback) {
        result.matched = head_fallback;
        result.params = std::move(head_params);
        result.path_known = false;
        result.allow.clear();
    }
    return result;
}

namespace {

// The entry of the longest prefix of `path`, or nullptr.
template <class F>
const F* longest_prefix(const std::vector<std::pair<std::string, F>>& entries,
                        std::string_view path) {
    const F* best = nullptr;
    std::size_t longest = 0;
    for (const auto& [prefix, fn] : entries)
        if (path.substr(0, prefix.size()) == prefix && prefix.size() >= longest) {
            best = &fn;
            longest = prefix.size();
        }
    return best;
}

}  // namespace

void router::on_unrouted(std::string prefix, unrouted fn) {
    unrouted_.emplace_back(std::move(prefix), std::move(fn));
}

const unrouted* router::unrouted_for(std::string_view path) const {
    return longest_prefix(unrouted_, path);
}

void router::on_error(std::string prefix, error_shape fn) {
    error_shapes_.emplace_back(std::move(prefix), std::move(fn));
}

const error_shape* router::error_shape_for(std::string_view path) const {
    return longest_prefix(error_shapes_, path);
}

}  // namespace segue::http

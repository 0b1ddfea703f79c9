#pragma once
// Maps (method, path) to a handler by route template ("/v1/extensions/{id}/events"). The
// template, never the raw path, is what metrics and logs use as the route label.

#include <cstdint>
#include <functional>
#include <memory>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/http/message.hpp"

namespace segue::http {

using handler = std::function<boost::asio::awaitable<void>(context&)>;

enum class body_mode {
    buffered,  // the server reads the whole body (capped by limits.max_body_bytes) first
    streamed,  // the handler pulls the body with context::read_body()
};

struct route_options {
    body_mode body = body_mode::buffered;
    std::uint64_t max_body_bytes = 0;  // 0: the server's limits.max_body_bytes
    // What the 413 for a body over max_body_bytes says the limit is (by the setting that makes
    // it); empty: "request body exceeds <max_body_bytes> bytes".
    std::string body_limit_detail;
};

struct route {
    std::string method;
    std::string pattern;
    handler fn;
    route_options options;
    std::size_t index = 0;  // dense, for per-route tables
    std::vector<std::string> segments;
};

struct match_result {
    const route* matched = nullptr;
    std::vector<std::pair<std::string, std::string>> params;
    bool path_known = false;  // some route has this path, under another method (405)
    std::string allow;        // the methods that path accepts, for the Allow header
};

// RFC 3986 6.2.2.2: a percent-encoded unreserved character (ALPHA, DIGIT, '-', '.', '_', '~')
// is that character, so "/v1/%65xtensions/ext%5F1" is "/v1/extensions/ext_1". Every other
// escape ('%2F' above all) stays as it is: it is not the character it encodes. router::match
// matches the path so normalized, and its parameters are segments of it.
std::string decode_unreserved(std::string_view path);

// Writes the answer to a request no route takes (404, or 405 with Allow set by the server) in
// an API's own error shape, for the paths under a prefix (a drop-in API's).
using unrouted = std::function<void(response& res, int status, std::string_view path)>;

// Writes an error the server answers before or instead of a handler (a body over the route's
// limit by its Content-Length or as it arrives, headers over limits.max_header_bytes, a body
// not received in time, a malformed request) in an API's own error shape, for the paths under
// a prefix (a drop-in API's). `message` says why, naming the setting that makes a limit.
using error_shape = std::function<void(response& res, int status, std::string_view message)>;

class router {
  public:
    // Throws std::invalid_argument on a malformed pattern or a duplicate (method, pattern).
    void add(std::string method, std::string pattern, handler fn, route_options options = {});
    // Requests under `prefix` that no route takes are answered by `fn` (the longest matching
    // prefix wins); others get problem+json.
    void on_unrouted(std::string prefix, unrouted fn);
    const unrouted* unrouted_for(std::string_view path) const;
    // The server's own errors for requests under `prefix` are written by `fn` (the longest
    // matching prefix wins); others get problem+json.
    void on_error(std::string prefix, error_shape fn);
    const error_shape* error_shape_for(std::string_view path) const;
    // HEAD falls back to GET routes (the server then omits the body).
    match_result match(std::string_view method, std::string_view path) const;
    const std::vector<std::unique_ptr<route>>& routes() const { return routes_; }

  private:
    std::vector<std::unique_ptr<route>> routes_;
    std::vector<std::pair<std::string, unrouted>> unrouted_;
    std::vector<std::pair<std::string, error_shape>> error_shapes_;
};

}  // namespace segue::http

#include "gateway/api/common.hpp"

#include <boost/json.hpp>

#include <charconv>

#include "gateway/api/auth.hpp"
#include "gateway/api/problem.hpp"
#include "gateway/http/message.hpp"
#include "gateway/util/json_text.hpp"

namespace segue::api {

namespace json = boost::json;

void json_response(http::context& ctx, int status, const json::value& v) {
    ctx.res().status = status;
    ctx.res().content_type = "application/json";
    ctx.res().body = util::json_text(v);
}

std::optional<std::string_view> query_param(std::string_view query, std::string_view name) {
    while (!query.empty()) {
        auto amp = query.find('&');
        auto part = query.substr(0, amp);
        auto eq = part.find('=');
        if (part.substr(0, eq) == name)
            return eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
        if (amp == std::string_view::npos)
            break;
        query.remove_prefix(amp + 1);
    }
    return std::nullopt;
}

std::optional<std::int64_t> parse_int(std::string_view s) {
    std::int64_t v = 0;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || p != s.data() + s.size() || s.empty())
        return std::nullopt;
    return v;
}

// An integer query parameter within [min, max], or `fallback` when absent. On a bad value the
// 400 problem is set and nullopt returned.
std::optional<int> int_param(http::context& ctx, std::string_view name, int fallback, int min,
                             int max) {
    auto v = query_param(ctx.query(), name);
    if (!v)
        return fallback;
    auto n = parse_int(*v);
    if (!n || *n < min || *n > max) {
        const std::string range = std::to_string(min) + " to " + std::to_string(max);
        set_problem(ctx.res(), error_kind::bad_request,
                    std::string(name) + " must be an integer from " + range, ctx.path(),
                    {{std::string(name), "must be an integer from " + range}});
        return std::nullopt;
    }
    return static_cast<int>(*n);
}

std::optional<std::string> authenticate(http::context& ctx, const authenticator& auth) {
    auto t = auth.authenticate(ctx.header("Authorization"));
    if (!t) {
        set_problem(ctx.res(), error_kind::unauthorized, "send Authorization: Bearer <api key>",
                    ctx.path());
        ctx.res().set_header("WWW-Authenticate", "Bearer");
    }
    return t;
}

}  // namespace segue::api

#include "gateway/api/common.hpp"

#include <boost/json.hpp>
#include <boost/url/pct_string_view.hpp>

#include <algorithm>
#include <charconv>

#include "gateway/api/auth.hpp"
#include "gateway/api/problem.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/multipart.hpp"
#include "gateway/util/json_keys.hpp"
#include "gateway/util/json_text.hpp"
#include "gateway/util/utf8.hpp"

namespace segue::api {

namespace json = boost::json;

std::optional<json::object> json_object_body(http::context& ctx) {
    if (!http::media_type_is(ctx.header("Content-Type").value_or(""), "application/json")) {
        set_problem(ctx.res(), error_kind::unsupported_media_type,
                    "send the body as application/json", ctx.path());
        return std::nullopt;
    }
    boost::system::error_code ec;
    auto parsed = json::parse(ctx.body(), ec);
    if (ec || !parsed.is_object()) {
        set_problem(ctx.res(), error_kind::bad_request,
                    ec ? "body is not valid JSON: " + ec.message() : "body must be a JSON object",
                    ctx.path());
        return std::nullopt;
    }
    if (auto twice = util::duplicate_json_key(ctx.body())) {
        set_problem(ctx.res(), error_kind::bad_request, "field '" + *twice + "' given twice",
                    ctx.path(), {{*twice, "given twice"}});
        return std::nullopt;
    }
    return std::move(parsed.as_object());
}

void json_response(http::context& ctx, int status, const json::value& v) {
    ctx.res().status = status;
    ctx.res().content_type = "application/json";
    ctx.res().body = util::json_text(v);
}

namespace {

void set_param_problem(http::context& ctx, std::string_view name, query_value::state state) {
    const bool repeated = state == query_value::state::repeated;
    const std::string why = repeated ? "given more than once"
                                     : "must be percent-encoded UTF-8 (%XX with two hex digits)";
    set_problem(ctx.res(), error_kind::bad_request,
                "query parameter " + std::string(name) +
                    (repeated ? " is given more than once" : " is malformed"),
                ctx.path(), {{std::string(name), why}});
}

}  // namespace

std::optional<std::string> percent_decode(std::string_view s) {
    // Boost.URL checks every escape (%XX, two hex digits); '+' stays a '+' (not form encoding).
    auto pct = boost::urls::make_pct_string_view(s);
    if (!pct)
        return std::nullopt;
    return pct->decode();
}

query_value query_param(std::string_view query, std::string_view name) {
    query_value out;
    while (!query.empty()) {
        auto amp = query.find('&');
        auto part = query.substr(0, amp);
        auto eq = part.find('=');
        auto raw_name = part.substr(0, eq);
        // Names are compared decoded ("%6Cimit" is "limit"); the cheap raw match first.
        bool match = raw_name == name;
        if (!match && raw_name.find('%') != std::string_view::npos) {
            auto decoded = percent_decode(raw_name);
            match = decoded && *decoded == name;
        }
        if (match) {
            if (out.status != query_value::state::absent) {
                out.status = query_value::state::repeated;
                out.value.clear();
                return out;
            }
            auto raw = eq == std::string_view::npos ? std::string_view{} : part.substr(eq + 1);
            auto v = percent_decode(raw);
            if (!v || !util::valid_utf8(*v)) {
                out.status = query_value::state::malformed;
                return out;
            }
            out.status = query_value::state::present;
            out.value = std::move(*v);
        }
        if (amp == std::string_view::npos)
            break;
        query.remove_prefix(amp + 1);
    }
    return out;
}

bool text_param(http::context& ctx, std::string_view name, std::optional<std::string>& out) {
    auto q = query_param(ctx.query(), name);
    out.reset();
    if (q.status == query_value::state::malformed || q.status == query_value::state::repeated) {
        set_param_problem(ctx, name, q.status);
        return false;
    }
    if (q.status == query_value::state::present)
        out = std::move(q.value);
    return true;
}

bool only_params(http::context& ctx, std::initializer_list<std::string_view> known) {
    std::string_view query = ctx.query();
    while (!query.empty()) {
        const auto amp = query.find('&');
        const auto part = query.substr(0, amp);
        query.remove_prefix(amp == std::string_view::npos ? query.size() : amp + 1);
        if (part.empty())
            continue;
        const auto raw = part.substr(0, part.find('='));
        const auto name = percent_decode(raw);
        if (name && std::find(known.begin(), known.end(), *name) != known.end())
            continue;
        const std::string shown = name && util::valid_utf8(*name) ? *name : std::string(raw);
        std::string list;
        for (auto k : known)
            list += (list.empty() ? "" : ", ") + std::string(k);
        set_problem(ctx.res(), error_kind::bad_request,
                    "unknown query parameter " + shown + " (this endpoint takes " +
                        (list.empty() ? std::string("none") : list) + ")",
                    ctx.path(), {{shown, "not a parameter of this endpoint"}});
        return false;
    }
    return true;
}

bool valid_idempotency_key(std::string_view k) {
    if (k.empty() || k.size() > 255)
        return false;
    for (unsigned char c : k)
        if (c < 0x21 || c > 0x7e)
            return false;
    return true;
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
    std::optional<std::string> v;
    if (!text_param(ctx, name, v))
        return std::nullopt;
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

#pragma once
// Small helpers shared by the /v1 handlers: JSON answers, query parameters, authentication.

#include <boost/json/fwd.hpp>

#include <cstdint>
#include <initializer_list>
#include <optional>
#include <string>
#include <string_view>

namespace segue::http {
class context;
}

namespace segue::api {

class authenticator;

void json_response(http::context& ctx, int status, const boost::json::value& v);

// RFC 3986 percent-decoding of one query component: "%XX" (hex digits, either case) becomes
// that byte. '+' stays '+': the API's query strings are not form-encoded (no endpoint takes an
// HTML form by GET), and its cursors and signatures may contain a literal '+'. nullopt on a
// malformed escape ('%' not followed by two hex digits).
std::optional<std::string> percent_decode(std::string_view s);

// One query parameter, looked up by its decoded name.
struct query_value {
    enum class state { absent, present, malformed, repeated };
    state status = state::absent;
    std::string value;  // decoded, when present
};

// The query parameter named `name`, percent-decoded. `malformed` when its value has a bad
// escape or does not decode to valid UTF-8; `repeated` when the name appears more than once
// (which one the client meant is unknown).
query_value query_param(std::string_view query, std::string_view name);

// query_param for a handler: false, with the 400 problem naming the parameter set, when it is
// malformed or repeated; else true, and `out` is the decoded value (nullopt when absent).
bool text_param(http::context& ctx, std::string_view name, std::optional<std::string>& out);

// false, with the 400 problem naming it set, when the query has a parameter not in `known`
// (names compared decoded; an empty query part such as "a=1&&b=2" is no parameter). An
// unknown name is a typo or a filter the endpoint does not have: ignoring it would answer
// something else than was asked (?status=failed listing every task).
bool only_params(http::context& ctx, std::initializer_list<std::string_view> known);

std::optional<std::int64_t> parse_int(std::string_view s);

// An Idempotency-Key header value: 1-255 visible ASCII characters.
bool valid_idempotency_key(std::string_view key);

// An integer query parameter within [min, max], or `fallback` when absent. On a bad value the
// 400 problem is set and nullopt returned.
std::optional<int> int_param(http::context& ctx, std::string_view name, int fallback, int min,
                             int max);

// A buffered application/json body that is one object with no key given twice, or nullopt with
// the problem set (415 for another media type, 400 otherwise).
std::optional<boost::json::object> json_object_body(http::context& ctx);

// The tenant of the request's API key, or nullopt with the 401 problem set.
std::optional<std::string> authenticate(http::context& ctx, const authenticator& auth);

}  // namespace segue::api

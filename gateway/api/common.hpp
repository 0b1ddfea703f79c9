#pragma once
// Small helpers shared by the /v1 handlers: JSON answers, query parameters, authentication.

#include <boost/json/fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace segue::http {
class context;
}

namespace segue::api {

class authenticator;

void json_response(http::context& ctx, int status, const boost::json::value& v);

// The raw (not percent-decoded) value of the first query parameter `name`.
std::optional<std::string_view> query_param(std::string_view query, std::string_view name);

std::optional<std::int64_t> parse_int(std::string_view s);

// An integer query parameter within [min, max], or `fallback` when absent. On a bad value the
// 400 problem is set and nullopt returned.
std::optional<int> int_param(http::context& ctx, std::string_view name, int fallback, int min,
                             int max);

// The tenant of the request's API key, or nullopt with the 401 problem set.
std::optional<std::string> authenticate(http::context& ctx, const authenticator& auth);

}  // namespace segue::api

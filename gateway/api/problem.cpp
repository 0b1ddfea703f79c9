#include "gateway/api/problem.hpp"

#include <boost/json/array.hpp>
#include <boost/json/object.hpp>

#include <array>

#include "gateway/util/json_text.hpp"
#include "gateway/util/utf8.hpp"

namespace segue::api {
namespace {

// Indexed by error_kind; the static_assert below keeps it in step with the enum.
constexpr std::array<error_info, 22> table{{
    {400, "bad_request", "Bad request"},
    {401, "unauthorized", "Missing or invalid API key"},
    {402, "insufficient_credits", "Insufficient credits"},
    {403, "link_expired", "Link expired"},
    {404, "not_found", "Not found"},
    {405, "method_not_allowed", "Method not allowed"},
    {406, "not_acceptable", "Not acceptable"},
    {408, "request_timeout", "Request timeout"},
    {409, "conflict", "Conflict"},
    {410, "gone", "Gone"},
    {410, "file_expired", "File expired"},
    {413, "payload_too_large", "Payload too large"},
    {415, "unsupported_media_type", "Unsupported media type"},
    {416, "range_not_satisfiable", "Range not satisfiable"},
    {422, "validation_failed", "Validation failed"},
    {422, "unprocessable_audio", "Audio cannot be processed"},
    {429, "too_many_requests", "Too many requests"},
    {431, "header_too_large", "Request header fields too large"},
    {500, "internal", "Internal error"},
    {502, "upstream_failed", "Upstream provider failed"},
    {507, "insufficient_storage", "Insufficient storage"},
    {503, "unavailable", "Service unavailable"},
}};
static_assert(table.size() == static_cast<std::size_t>(error_kind::unavailable) + 1);

}  // namespace

const error_info& info(error_kind kind) noexcept {
    return table[static_cast<std::size_t>(kind)];
}

std::span<const error_info> all_errors() noexcept {
    return table;
}

std::string type_uri(error_kind kind) {
    std::string s = "https://segue.dev/problems/";
    s.append(info(kind).code);
    return s;
}

void set_problem(http::response& res, error_kind kind, std::string_view detail,
                 std::string_view instance, const std::vector<field_error>& errors) {
    const auto& e = info(kind);
    boost::json::object o;
    o["type"] = type_uri(kind);
    o["title"] = e.title;
    o["status"] = e.status;
    o["code"] = e.code;
    // Details and field names can quote client input (a form field's name, a path): sanitized,
    // so the answer is valid JSON even when that input is not valid UTF-8.
    if (!detail.empty())
        o["detail"] = util::sanitize_utf8(detail);
    if (!instance.empty())
        o["instance"] = util::sanitize_utf8(instance);
    if (!errors.empty()) {
        boost::json::array arr;
        arr.reserve(errors.size());
        for (const auto& fe : errors) {
            boost::json::object f;
            f["field"] = util::sanitize_utf8(fe.field);
            f["message"] = util::sanitize_utf8(fe.message);
            arr.emplace_back(std::move(f));
        }
        o["errors"] = std::move(arr);
    }
    res.status = e.status;
    res.content_type = "application/problem+json";
    res.body = util::json_text(o);
}

void set_validation_problem(http::response& res, std::string_view instance,
                            const std::vector<field_error>& errors) {
    set_problem(res, error_kind::validation_failed,
                std::to_string(errors.size()) + " invalid field" + (errors.size() == 1 ? "" : "s"),
                instance, errors);
}

http::response make_problem(error_kind kind, std::string_view detail, std::string_view instance,
                            const std::vector<field_error>& errors) {
    http::response r;
    set_problem(r, kind, detail, instance, errors);
    return r;
}

}  // namespace segue::api

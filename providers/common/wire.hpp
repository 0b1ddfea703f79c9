#pragma once
// Small pieces every provider's wire transform needs (header lookups, JSON text, error
// updates), so each provider's transform.cpp holds only its own protocol. Pure, no I/O.

#include <boost/json/object.hpp>
#include <boost/json/value.hpp>

#include <cstddef>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/core/model.hpp"
#include "gateway/util/text.hpp"
#include "providers/provider.hpp"

namespace segue::providers::wire {

using header_list = std::vector<std::pair<std::string, std::string>>;

// ASCII case-insensitive comparison and search.
using util::iequals;
bool icontains(std::string_view hay, std::string_view needle);
std::string_view trim(std::string_view s);
// The first header named `name` (any case).
std::optional<std::string_view> find_header(const header_list& headers, std::string_view name);
// Shortest text that reads back as the same double ("35", "35.5", "0.1").
std::string format_number(double v);
// `s` as a JSON string literal, quotes included.
std::string json_string(std::string_view s);
const boost::json::value* field(const boost::json::object& o, std::string_view key);
// At most `max` characters of `body` for an error message, control characters blanked.
std::string printable_prefix(std::string_view body, std::size_t max);
// A `failed` update of class `cls`.
update failed(core::error_class cls, std::string code, std::string message);

// The opening every provider's webhook shares: the body as a JSON object, and the task id it
// names matched against the attempt's.
struct webhook_body {
    boost::json::object object;
    std::string task_id;  // as the payload names it, "" if it names none
    // The attempt's task id or, when the attempt has none (its submit answer was lost), the
    // payload's own.
    std::string provider_task_id;
};
// nullopt, with `error` naming `provider` ("MusicAPI"), for a body that is not a JSON object or
// that names another task than `attempt_task_id` (when both are known).
std::optional<webhook_body> open_webhook(std::string_view provider, std::string_view body,
                                         std::string_view attempt_task_id, std::string& error);

}  // namespace segue::providers::wire

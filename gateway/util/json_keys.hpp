#pragma once
// Duplicate object keys in a JSON document. RFC 8259 leaves their meaning open and parsers
// differ (Boost.JSON keeps the last value, others the first, some refuse), so a request that
// has one can mean one thing to a proxy or a WAF and another to the gateway: refused instead.

#include <optional>
#include <string>
#include <string_view>

namespace segue::util {

// The first key that appears twice in one object of `text` (at any depth), if any. Text that
// is not JSON gives nullopt: parse it for its own error first.
std::optional<std::string> duplicate_json_key(std::string_view text);

}  // namespace segue::util

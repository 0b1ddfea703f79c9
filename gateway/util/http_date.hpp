#pragma once
// HTTP-dates (RFC 9110 section 5.6.7) as recipients must accept them: IMF-fixdate
// ("Sun, 06 Nov 1994 08:49:37 GMT"), the obsolete RFC 850 form ("Sunday, 06-Nov-94 08:49:37
// GMT") and asctime ("Sun Nov  6 08:49:37 1994").

#include <cstdint>
#include <optional>
#include <string_view>

namespace segue::util {

// Unix milliseconds of an HTTP-date (whole seconds); nullopt if it is none of the three forms.
std::optional<std::int64_t> parse_http_date(std::string_view value);

}  // namespace segue::util

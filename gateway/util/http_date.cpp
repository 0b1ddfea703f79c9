#include "gateway/util/http_date.hpp"

#include <ctime>
#include <string>

namespace segue::util {

std::optional<std::int64_t> parse_http_date(std::string_view value) {
    const std::string text(value);
    for (const char* format :
         {"%a, %d %b %Y %H:%M:%S GMT", "%A, %d-%b-%y %H:%M:%S GMT", "%a %b %d %H:%M:%S %Y"}) {
        std::tm tm{};
        const char* end = strptime(text.c_str(), format, &tm);
        if (!end || *end != '\0')
            continue;
        return static_cast<std::int64_t>(timegm(&tm)) * 1000;
    }
    return std::nullopt;
}

}  // namespace segue::util

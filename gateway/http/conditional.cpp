#include "gateway/http/conditional.hpp"

#include <cstdio>
#include <ctime>

#include "gateway/http/range.hpp"

namespace segue::http {
namespace {

std::string_view opaque(std::string_view tag) {
    if (tag.starts_with("W/"))
        tag.remove_prefix(2);
    return tag;
}

}  // namespace

bool none_match(std::string_view header, std::string_view etag) {
    const auto want = opaque(etag);
    while (!header.empty()) {
        const auto comma = header.find(',');
        const auto item = trim_ows(header.substr(0, comma));
        if (item == "*" || (!item.empty() && opaque(item) == want))
            return true;
        if (comma == std::string_view::npos)
            break;
        header.remove_prefix(comma + 1);
    }
    return false;
}

bool if_range_matches(std::optional<std::string_view> if_range, std::string_view etag) {
    if (!if_range)
        return true;
    const auto v = trim_ows(*if_range);
    return !v.starts_with("W/") && v == etag;
}

std::string http_date(std::int64_t unix_ms) {
    const std::time_t secs = static_cast<std::time_t>(unix_ms / 1000);
    std::tm tm{};
    gmtime_r(&secs, &tm);
    static constexpr const char* days[] = {"Sun", "Mon", "Tue", "Wed", "Thu", "Fri", "Sat"};
    static constexpr const char* months[] = {"Jan", "Feb", "Mar", "Apr", "May", "Jun",
                                             "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"};
    char buf[40];
    std::snprintf(buf, sizeof buf, "%s, %02d %s %04d %02d:%02d:%02d GMT", days[tm.tm_wday % 7],
                  tm.tm_mday, months[tm.tm_mon % 12], tm.tm_year + 1900, tm.tm_hour, tm.tm_min,
                  tm.tm_sec);
    return buf;
}

std::string content_disposition(bool attachment, std::string_view name) {
    std::string ascii;
    std::string encoded;
    bool plain = true;
    for (unsigned char c : name) {
        const bool unsafe = c < 0x20 || c == 0x7f || c == '"' || c == '\\' || c == '/';
        if (c >= 0x80 || unsafe) {
            plain = plain && !(c >= 0x80);
            // One '_' per UTF-8 sequence in the fallback: continuation bytes add nothing.
            if (c < 0x80 || c >= 0xc0)
                ascii.push_back('_');
        } else {
            ascii.push_back(static_cast<char>(c));
        }
        // RFC 8187 attr-char: ALPHA / DIGIT / "!#$&+-.^_`|~"; everything else percent-encoded.
        const bool attr =
            (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
            std::string_view("!#$&+-.^_`|~").find(static_cast<char>(c)) != std::string_view::npos;
        if (attr) {
            encoded.push_back(static_cast<char>(c));
        } else if (unsafe) {
            encoded.append("_");
        } else {
            static constexpr char hex[] = "0123456789ABCDEF";
            encoded.push_back('%');
            encoded.push_back(hex[c >> 4]);
            encoded.push_back(hex[c & 15]);
        }
    }
    if (ascii.empty())
        ascii = "file";
    std::string out = attachment ? "attachment" : "inline";
    out += "; filename=\"" + ascii + "\"";
    if (!plain)
        out += "; filename*=UTF-8''" + encoded;
    return out;
}

}  // namespace segue::http

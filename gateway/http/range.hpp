#pragma once
// The Range request header (RFC 9110 section 14.2) for a representation of known size: one byte
// range, or the whole representation.

#include <cstdint>
#include <optional>
#include <string_view>

namespace segue::http {

struct range_request {
    enum class kind {
        whole,          // no Range, one the server may ignore (several ranges, bad syntax)
        partial,        // 206 with [first, last]
        unsatisfiable,  // 416: the range starts at or past the end
    };
    kind what = kind::whole;
    std::uint64_t first = 0;
    std::uint64_t last = 0;  // inclusive
};

// `header`: the Range value, if any. Only `bytes=first-last`, `bytes=first-` and `bytes=-suffix`
// are served as a range; several ranges are answered whole (allowed, and simpler for clients
// than multipart/byteranges), as is anything malformed.
range_request parse_range(std::optional<std::string_view> header, std::uint64_t size);

// `s` without leading and trailing spaces and tabs (HTTP's optional white space).
std::string_view trim_ows(std::string_view s);

}  // namespace segue::http

#include "gateway/http/range.hpp"

#include <charconv>

#include "gateway/util/text.hpp"

namespace segue::http {
namespace {

using util::iequals;

// Digits only (no sign, no space), without overflow.
std::optional<std::uint64_t> number(std::string_view s) {
    if (s.empty())
        return std::nullopt;
    std::uint64_t v = 0;
    auto [end, ec] = std::from_chars(s.data(), s.data() + s.size(), v);
    if (ec != std::errc() || end != s.data() + s.size())
        return std::nullopt;
    return v;
}

}  // namespace

std::string_view trim_ows(std::string_view s) {
    while (!s.empty() && (s.front() == ' ' || s.front() == '\t'))
        s.remove_prefix(1);
    while (!s.empty() && (s.back() == ' ' || s.back() == '\t'))
        s.remove_suffix(1);
    return s;
}

range_request parse_range(std::optional<std::string_view> header, std::uint64_t size) {
    range_request whole;
    if (!header)
        return whole;
    const auto eq = header->find('=');
    if (eq == std::string_view::npos || !iequals(trim_ows(header->substr(0, eq)), "bytes"))
        return whole;
    const auto spec = trim_ows(header->substr(eq + 1));
    if (spec.find(',') != std::string_view::npos)
        return whole;
    const auto dash = spec.find('-');
    if (dash == std::string_view::npos)
        return whole;
    const auto first_text = trim_ows(spec.substr(0, dash));
    const auto last_text = trim_ows(spec.substr(dash + 1));
    range_request r;
    r.what = range_request::kind::partial;
    if (first_text.empty()) {
        // The last N bytes.
        auto n = number(last_text);
        if (!n)
            return whole;
        if (*n == 0 || size == 0)
            return {range_request::kind::unsatisfiable, 0, 0};
        r.first = *n >= size ? 0 : size - *n;
        r.last = size - 1;
        return r;
    }
    auto first = number(first_text);
    if (!first)
        return whole;
    std::optional<std::uint64_t> last;
    if (!last_text.empty()) {
        last = number(last_text);
        if (!last || *last < *first)
            return whole;
    }
    if (*first >= size)
        return {range_request::kind::unsatisfiable, 0, 0};
    r.first = *first;
    r.last = last && *last < size ? *last : size - 1;
    return r;
}

}  // namespace segue::http

#pragma once
// ASCII text helpers shared by the protocol code (HTTP headers, tokens, provider fields): no
// locale, no allocation.

#include <cstddef>
#include <string_view>

namespace segue::util {

constexpr char ascii_lower(char c) noexcept {
    return c >= 'A' && c <= 'Z' ? static_cast<char>(c - 'A' + 'a') : c;
}

// The value of a hex digit (either case), or -1.
constexpr int hex_value(char c) noexcept {
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    if (c >= 'A' && c <= 'F')
        return c - 'A' + 10;
    return -1;
}

// ASCII case-insensitive equality (header names, tokens such as "bytes" or "sha256="); bytes
// outside A-Z compare exactly.
constexpr bool iequals(std::string_view a, std::string_view b) noexcept {
    if (a.size() != b.size())
        return false;
    for (std::size_t i = 0; i < a.size(); ++i)
        if (ascii_lower(a[i]) != ascii_lower(b[i]))
            return false;
    return true;
}

}  // namespace segue::util

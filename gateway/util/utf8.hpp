#pragma once
// UTF-8 checks for text that comes from clients: JSON and problem+json must carry valid UTF-8,
// and a stored request that is not would fail every later read.

#include <cstddef>
#include <string>
#include <string_view>

namespace segue::util {

// True if `s` is well-formed UTF-8 (RFC 3629): no overlong forms, no surrogates (U+D800..DFFF),
// nothing above U+10FFFF, no truncated sequence. NUL bytes are valid.
bool valid_utf8(std::string_view s) noexcept;

// The byte offset of the first ill-formed sequence, or npos if `s` is valid.
std::size_t first_invalid_utf8(std::string_view s) noexcept;

// `s` with every ill-formed sequence replaced by U+FFFD (one per maximal invalid subpart, as
// Unicode recommends); valid text is returned unchanged.
std::string sanitize_utf8(std::string_view s);

}  // namespace segue::util

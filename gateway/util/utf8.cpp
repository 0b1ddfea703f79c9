#include "gateway/util/utf8.hpp"

namespace segue::util {

namespace {

// What a lead byte promises: the sequence length and the range of its second byte. Table 3-7 of
// the Unicode Standard ("Well-Formed UTF-8 Byte Sequences"); n == 0 for a byte that cannot
// start a sequence (continuation bytes, C0, C1, F5..FF).
struct lead {
    std::size_t n = 0;
    unsigned char lo = 0x80;
    unsigned char hi = 0xBF;
};

lead lead_of(unsigned char c) noexcept {
    if (c < 0x80)
        return {1};
    if (c >= 0xC2 && c <= 0xDF)
        return {2};
    if (c == 0xE0)
        return {3, 0xA0, 0xBF};  // no overlong forms
    if (c == 0xED)
        return {3, 0x80, 0x9F};  // no surrogates
    if (c >= 0xE1 && c <= 0xEF)
        return {3};
    if (c == 0xF0)
        return {4, 0x90, 0xBF};  // no overlong forms
    if (c == 0xF4)
        return {4, 0x80, 0x8F};  // nothing above U+10FFFF
    if (c >= 0xF1 && c <= 0xF3)
        return {4};
    return {};
}

// How many bytes at s[i] belong to the sequence its lead byte starts, as far as they are
// well-formed: the whole sequence when valid, else the maximal subpart (at least 1).
std::size_t scan(std::string_view s, std::size_t i, bool& ok) noexcept {
    const lead l = lead_of(static_cast<unsigned char>(s[i]));
    ok = false;
    if (l.n == 0)
        return 1;
    if (l.n == 1) {
        ok = true;
        return 1;
    }
    std::size_t k = 1;
    for (; k < l.n && i + k < s.size(); ++k) {
        const auto c = static_cast<unsigned char>(s[i + k]);
        const unsigned char lo = k == 1 ? l.lo : 0x80;
        const unsigned char hi = k == 1 ? l.hi : 0xBF;
        if (c < lo || c > hi)
            break;
    }
    ok = k == l.n;
    return k;
}

}  // namespace

std::size_t first_invalid_utf8(std::string_view s) noexcept {
    std::size_t i = 0;
    while (i < s.size()) {
        bool ok = false;
        const std::size_t n = scan(s, i, ok);
        if (!ok)
            return i;
        i += n;
    }
    return std::string_view::npos;
}

bool valid_utf8(std::string_view s) noexcept {
    return first_invalid_utf8(s) == std::string_view::npos;
}

std::string sanitize_utf8(std::string_view s) {
    std::size_t bad = first_invalid_utf8(s);
    if (bad == std::string_view::npos)
        return std::string(s);
    std::string out(s.substr(0, bad));
    out.reserve(s.size() + 8);
    std::size_t i = bad;
    while (i < s.size()) {
        bool ok = false;
        const std::size_t n = scan(s, i, ok);
        if (ok)
            out.append(s.substr(i, n));
        else
            out += "\xEF\xBF\xBD";  // U+FFFD
        i += n;
    }
    return out;
}

}  // namespace segue::util

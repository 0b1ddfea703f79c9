#include "gateway/http/multipart.hpp"

#include <charconv>
#include <cstring>
#include <utility>

#include "gateway/util/text.hpp"

namespace segue::http {

namespace {

using util::iequals;

constexpr std::size_t max_boundary_size = 70;  // RFC 2046 section 5.1.1

bool is_alnum(unsigned char c) {
    return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

// RFC 9110 tchar.
bool is_tchar(unsigned char c) {
    if (is_alnum(c))
        return true;
    switch (c) {
        case '!':
        case '#':
        case '$':
        case '%':
        case '&':
        case '\'':
        case '*':
        case '+':
        case '-':
        case '.':
        case '^':
        case '_':
        case '`':
        case '|':
        case '~':
            return true;
        default:
            return false;
    }
}

// RFC 2046 bchars.
bool is_bchar(unsigned char c) {
    if (is_alnum(c))
        return true;
    switch (c) {
        case '\'':
        case '(':
        case ')':
        case '+':
        case '_':
        case ',':
        case '-':
        case '.':
        case '/':
        case ':':
        case '=':
        case '?':
        case ' ':
            return true;
        default:
            return false;
    }
}

// RFC 8187 attr-char.
bool is_attr_char(unsigned char c) {
    if (is_alnum(c))
        return true;
    switch (c) {
        case '!':
        case '#':
        case '$':
        case '&':
        case '+':
        case '-':
        case '.':
        case '^':
        case '_':
        case '`':
        case '|':
        case '~':
            return true;
        default:
            return false;
    }
}

bool is_ows(char c) {
    return c == ' ' || c == '\t';
}

// Control characters other than HTAB (not allowed in field values).
bool is_ctl(unsigned char c) {
    return (c < 0x20 && c != '\t') || c == 0x7f;
}

std::string to_lower(std::string_view s) {
    std::string out(s);
    for (char& c : out)
        c = util::ascii_lower(c);
    return out;
}

bool valid_boundary(std::string_view b) {
    if (b.empty() || b.size() > max_boundary_size || b.back() == ' ')
        return false;
    for (unsigned char c : b) {
        if (!is_bchar(c))
            return false;
    }
    return true;
}

// Well-formed UTF-8: no overlong forms, surrogates or code points above U+10FFFF.
bool valid_utf8(std::string_view s) {
    std::size_t i = 0;
    while (i < s.size()) {
        const auto c = static_cast<unsigned char>(s[i]);
        if (c < 0x80) {
            ++i;
            continue;
        }
        std::size_t n;
        unsigned char lo = 0x80, hi = 0xbf;  // bounds of the second byte
        if (c >= 0xc2 && c <= 0xdf) {
            n = 1;
        } else if (c >= 0xe0 && c <= 0xef) {
            n = 2;
            if (c == 0xe0)
                lo = 0xa0;
            else if (c == 0xed)
                hi = 0x9f;
        } else if (c >= 0xf0 && c <= 0xf4) {
            n = 3;
            if (c == 0xf0)
                lo = 0x90;
            else if (c == 0xf4)
                hi = 0x8f;
        } else {
            return false;
        }
        if (s.size() - i - 1 < n)
            return false;
        for (std::size_t k = 1; k <= n; ++k) {
            const auto d = static_cast<unsigned char>(s[i + k]);
            const unsigned char l = k == 1 ? lo : 0x80, h = k == 1 ? hi : 0xbf;
            if (d < l || d > h)
                return false;
        }
        i += n + 1;
    }
    return true;
}

// A cursor over a header field value: tokens, quoted strings and `; name=value` parameters.
class cursor {
  public:
    explicit cursor(std::string_view s) : s_(s) {}

    bool at_end() const { return i_ >= s_.size(); }
    char peek() const { return s_[i_]; }
    void skip_ows() {
        while (i_ < s_.size() && is_ows(s_[i_]))
            ++i_;
    }
    bool consume(char c) {
        if (i_ < s_.size() && s_[i_] == c) {
            ++i_;
            return true;
        }
        return false;
    }
    std::string_view token() {
        const std::size_t b = i_;
        while (i_ < s_.size() && is_tchar(static_cast<unsigned char>(s_[i_])))
            ++i_;
        return s_.substr(b, i_ - b);
    }
    // RFC 9110 quoted-string, at its opening quote; nullopt if unterminated or with controls.
    std::optional<std::string> quoted_string() {
        if (!consume('"'))
            return std::nullopt;
        std::string out;
        while (i_ < s_.size()) {
            const char c = s_[i_++];
            if (c == '"')
                return out;
            if (c == '\\') {
                if (i_ >= s_.size())
                    return std::nullopt;
                const char e = s_[i_++];
                if (is_ctl(static_cast<unsigned char>(e)))
                    return std::nullopt;
                out.push_back(e);
                continue;
            }
            if (is_ctl(static_cast<unsigned char>(c)))
                return std::nullopt;
            out.push_back(c);
        }
        return std::nullopt;
    }

    // `*( OWS ";" OWS [ name OWS "=" OWS ( token / quoted-string ) ] ) OWS` to the end; calls
    // f(lower-cased name, value) for each parameter. False on a syntax error or if f returns false.
    template <class F>
    bool parameters(F&& f) {
        for (;;) {
            skip_ows();
            if (at_end())
                return true;
            if (!consume(';'))
                return false;
            skip_ows();
            if (at_end() || peek() == ';')
                continue;  // empty parameter
            const auto name = token();
            if (name.empty())
                return false;
            skip_ows();
            if (!consume('='))
                return false;
            skip_ows();
            std::string value;
            if (!at_end() && peek() == '"') {
                auto q = quoted_string();
                if (!q)
                    return false;
                value = std::move(*q);
            } else {
                const auto t = token();
                if (t.empty())
                    return false;
                value = std::string(t);
            }
            if (!f(to_lower(name), std::move(value)))
                return false;
        }
    }

  private:
    std::string_view s_;
    std::size_t i_ = 0;
};

// RFC 8187 ext-value (charset "'" [ language ] "'" value-chars), UTF-8 or ISO-8859-1, decoded to
// UTF-8. nullopt if malformed, in another charset, or if it decodes to control characters.
std::optional<std::string> decode_ext_value(std::string_view v) {
    const auto q1 = v.find('\'');
    if (q1 == std::string_view::npos)
        return std::nullopt;
    const auto q2 = v.find('\'', q1 + 1);
    if (q2 == std::string_view::npos)
        return std::nullopt;
    const auto charset = v.substr(0, q1);
    const auto encoded = v.substr(q2 + 1);
    std::string raw;
    raw.reserve(encoded.size());
    for (std::size_t i = 0; i < encoded.size(); ++i) {
        const char c = encoded[i];
        if (c == '%') {
            if (encoded.size() - i < 3)
                return std::nullopt;
            const int h = util::hex_value(encoded[i + 1]), l = util::hex_value(encoded[i + 2]);
            if (h < 0 || l < 0)
                return std::nullopt;
            raw.push_back(static_cast<char>(h * 16 + l));
            i += 2;
        } else if (is_attr_char(static_cast<unsigned char>(c))) {
            raw.push_back(c);
        } else {
            return std::nullopt;
        }
    }
    std::string out;
    if (iequals(charset, "UTF-8")) {
        if (!valid_utf8(raw))
            return std::nullopt;
        out = std::move(raw);
    } else if (iequals(charset, "ISO-8859-1")) {
        for (unsigned char c : raw) {
            if (c < 0x80) {
                out.push_back(static_cast<char>(c));
            } else {
                out.push_back(static_cast<char>(0xc0 | (c >> 6)));
                out.push_back(static_cast<char>(0x80 | (c & 0x3f)));
            }
        }
    } else {
        return std::nullopt;
    }
    for (unsigned char c : out) {
        if (c < 0x20 || c == 0x7f)
            return std::nullopt;
    }
    return out;
}

// Content-Disposition: form-data; name="..."; filename="..."; filename*=UTF-8''...
multipart_error parse_disposition(std::string_view value, part_info& info) {
    cursor c(value);
    if (!iequals(c.token(), "form-data"))
        return multipart_error::malformed;
    bool have_name = false;
    std::optional<std::string> filename, filename_ext;
    bool bad = false;
    const bool ok = c.parameters([&](std::string name, std::string v) {
        if (name == "name") {
            if (have_name)
                return false;
            have_name = true;
            info.name = std::move(v);
        } else if (name == "filename") {
            if (filename)
                return false;
            filename = std::move(v);
        } else if (name == "filename*") {
            if (filename_ext)
                return false;
            filename_ext = decode_ext_value(v);
            if (!filename_ext) {
                bad = true;
                return false;
            }
        }
        return true;  // other parameters are ignored
    });
    if (!ok || bad)
        return multipart_error::malformed;
    if (!have_name || info.name.empty())
        return multipart_error::missing_name;
    info.filename = filename_ext ? std::move(filename_ext) : std::move(filename);
    return multipart_error::none;
}

// A complete header block: lines ending in CRLF, the last one empty.
multipart_error parse_part_headers(std::string_view block, part_info& info) {
    bool have_disposition = false, have_type = false;
    std::string_view disposition;
    std::size_t pos = 0;
    for (;;) {
        const auto eol = block.find("\r\n", pos);
        if (eol == std::string_view::npos)
            return multipart_error::malformed;  // unreachable: the block ends with CRLF
        const auto line = block.substr(pos, eol - pos);
        pos = eol + 2;
        if (line.empty())
            break;
        if (is_ows(line.front()))
            return multipart_error::malformed;  // obs-fold
        const auto colon = line.find(':');
        if (colon == std::string_view::npos || colon == 0)
            return multipart_error::malformed;
        const auto name = line.substr(0, colon);
        for (unsigned char ch : name) {
            if (!is_tchar(ch))
                return multipart_error::malformed;
        }
        auto value = line.substr(colon + 1);
        for (unsigned char ch : value) {
            if (is_ctl(ch))
                return multipart_error::malformed;
        }
        while (!value.empty() && is_ows(value.front()))
            value.remove_prefix(1);
        while (!value.empty() && is_ows(value.back()))
            value.remove_suffix(1);
        if (iequals(name, "Content-Disposition")) {
            if (have_disposition)
                return multipart_error::malformed;
            have_disposition = true;
            disposition = value;
        } else if (iequals(name, "Content-Type")) {
            if (have_type)
                return multipart_error::malformed;
            have_type = true;
            info.content_type = std::string(value);
        }
    }
    if (pos != block.size())
        return multipart_error::malformed;  // unreachable: the block ends at its empty line
    // The whole block is well-formed: now what it says.
    if (!have_disposition)
        return multipart_error::missing_name;
    return parse_disposition(disposition, info);
}

}  // namespace

std::optional<std::string> multipart_boundary(std::string_view content_type) {
    cursor c(content_type);
    c.skip_ows();
    const auto type = c.token();
    if (!c.consume('/'))
        return std::nullopt;
    const auto subtype = c.token();
    if (!iequals(type, "multipart") || !iequals(subtype, "form-data"))
        return std::nullopt;
    std::optional<std::string> boundary;
    const bool ok = c.parameters([&](std::string name, std::string value) {
        if (name != "boundary")
            return true;
        if (boundary)
            return false;  // duplicated: ambiguous
        boundary = std::move(value);
        return true;
    });
    if (!ok || !boundary || !valid_boundary(*boundary))
        return std::nullopt;
    return boundary;
}

bool media_type_is(std::string_view content_type, std::string_view type_subtype) {
    const auto slash = type_subtype.find('/');
    cursor c(content_type);
    c.skip_ows();
    const auto type = c.token();
    if (!c.consume('/'))
        return false;
    const auto subtype = c.token();
    return !type.empty() && !subtype.empty() && iequals(type, type_subtype.substr(0, slash)) &&
           iequals(subtype, type_subtype.substr(slash + 1)) &&
           c.parameters([](const std::string&, const std::string&) { return true; });
}

std::optional<double> accept_quality(std::string_view accept, std::string_view type_subtype,
                                     bool exact) {
    const auto slash = type_subtype.find('/');
    const auto want_type = type_subtype.substr(0, slash);
    const auto want_sub = type_subtype.substr(slash + 1);
    int best = -1;  // specificity of the best match: 2 exact, 1 type/*, 0 */*
    double quality = 0;
    std::size_t start = 0;
    while (start <= accept.size()) {
        // One element: up to the next comma outside a quoted string.
        std::size_t end = start;
        for (bool quoted = false; end < accept.size() && (quoted || accept[end] != ','); ++end) {
            if (accept[end] == '"')
                quoted = !quoted;
            else if (quoted && accept[end] == '\\')
                ++end;
        }
        cursor c(accept.substr(start, std::min(end, accept.size()) - start));
        start = end + 1;
        c.skip_ows();
        const auto type = c.token();
        if (type.empty() || !c.consume('/'))
            continue;
        const auto sub = c.token();
        if (sub.empty())
            continue;
        double q = 1;
        bool q_ok = true;
        if (!c.parameters([&](const std::string& name, const std::string& value) {
                if (name != "q")
                    return true;
                auto [p, ec] = std::from_chars(value.data(), value.data() + value.size(), q);
                q_ok = ec == std::errc() && p == value.data() + value.size() && q >= 0 && q <= 1;
                return q_ok;
            }) ||
            !q_ok)
            continue;
        int specificity = -1;
        if (iequals(type, want_type) && iequals(sub, want_sub))
            specificity = 2;
        else if (!exact && iequals(type, want_type) && sub == "*")
            specificity = 1;
        else if (!exact && type == "*" && sub == "*")
            specificity = 0;
        if (specificity > best) {
            best = specificity;
            quality = q;
        }
    }
    if (best < 0)
        return std::nullopt;
    return quality;
}

std::string_view to_string(multipart_error e) {
    switch (e) {
        case multipart_error::none:
            return "none";
        case multipart_error::malformed:
            return "malformed";
        case multipart_error::too_many_parts:
            return "too_many_parts";
        case multipart_error::part_header_too_large:
            return "part_header_too_large";
        case multipart_error::preamble_too_large:
            return "preamble_too_large";
        case multipart_error::missing_name:
            return "missing_name";
        case multipart_error::truncated:
            return "truncated";
        case multipart_error::aborted:
            return "aborted";
    }
    return "unknown";
}

multipart_parser::multipart_parser(std::string boundary, callbacks cb, multipart_limits limits)
    : cb_(std::move(cb)), limits_(limits) {
    if (!valid_boundary(boundary)) {
        error_ = multipart_error::malformed;
        held_ = 0;
        virtual_crlf_ = false;
        return;
    }
    delimiter_.reserve(boundary.size() + 4);
    delimiter_ = "\r\n--";
    delimiter_ += boundary;
}

std::size_t multipart_parser::buffered_bytes() const {
    std::size_t n = header_block_.size();
    if (stage_ == stage::preamble || stage_ == stage::data)
        n += virtual_crlf_ ? held_ - 2 : held_;
    return n;
}

multipart_error multipart_parser::fail(multipart_error e) {
    if (error_ == multipart_error::none)
        error_ = e;
    return error_;
}

multipart_error multipart_parser::finish() {
    if (error_ != multipart_error::none)
        return error_;
    if (!done())
        return fail(multipart_error::truncated);
    return multipart_error::none;
}

multipart_error multipart_parser::feed(std::string_view chunk) {
    std::size_t i = 0;
    while (error_ == multipart_error::none && i < chunk.size()) {
        switch (stage_) {
            case stage::preamble:
            case stage::data:
                i = scan(chunk, i);
                break;
            case stage::after_delimiter: {
                const char c = chunk[i++];
                if (c == '-') {
                    stage_ = stage::close_dash;
                } else if (is_ows(c)) {
                    padding_bytes_ = 1;
                    stage_ = stage::padding;
                } else if (c == '\r') {
                    stage_ = stage::padding_lf;
                } else {
                    fail(multipart_error::malformed);
                }
                break;
            }
            case stage::close_dash:
                if (chunk[i++] == '-')
                    stage_ = stage::epilogue;
                else
                    fail(multipart_error::malformed);
                break;
            case stage::padding: {
                const char c = chunk[i++];
                if (is_ows(c)) {
                    if (++padding_bytes_ > limits_.max_part_header_bytes)
                        fail(multipart_error::part_header_too_large);
                } else if (c == '\r') {
                    stage_ = stage::padding_lf;
                } else {
                    fail(multipart_error::malformed);
                }
                break;
            }
            case stage::padding_lf:
                if (chunk[i++] == '\n')
                    begin_part();
                else
                    fail(multipart_error::malformed);
                break;
            case stage::headers:
                i = scan_headers(chunk, i);
                break;
            case stage::epilogue:
                return multipart_error::none;
        }
    }
    return error_;
}

bool multipart_parser::begin_part() {
    if (parts_ >= limits_.max_parts) {
        fail(multipart_error::too_many_parts);
        return false;
    }
    ++parts_;
    header_block_.clear();
    line_start_ = 0;
    stage_ = stage::headers;
    return true;
}

// Payload that is not part of a delimiter: part data, or discarded preamble.
bool multipart_parser::emit(std::string_view payload) {
    if (payload.empty())
        return true;
    if (stage_ == stage::preamble) {
        preamble_bytes_ += payload.size();
        if (preamble_bytes_ > limits_.max_preamble_bytes) {
            fail(multipart_error::preamble_too_large);
            return false;
        }
        return true;
    }
    if (cb_.on_part_data && !cb_.on_part_data(payload)) {
        fail(multipart_error::aborted);
        return false;
    }
    return true;
}

bool multipart_parser::delimiter_found() {
    const bool in_part = stage_ == stage::data;
    held_ = 0;
    virtual_crlf_ = false;
    stage_ = stage::after_delimiter;
    if (in_part && cb_.on_part_end && !cb_.on_part_end()) {
        fail(multipart_error::aborted);
        return false;
    }
    return true;
}

// Preamble or part data: looks for the delimiter from in[i]. Bytes that cannot start a delimiter
// are emitted as large spans of `in`; only a delimiter prefix at the end of `in` is held back.
// Relies on the delimiter holding '\r' only at its start (bchars exclude it): after a mismatch,
// no match can begin inside the bytes that matched.
std::size_t multipart_parser::scan(std::string_view in, std::size_t i) {
    const std::string_view delim = delimiter_;
    const std::size_t n = in.size();

    if (held_ > 0) {  // a prefix matched at the end of earlier chunks
        while (held_ < delim.size() && i < n && in[i] == delim[held_]) {
            ++held_;
            ++i;
        }
        if (held_ == delim.size()) {
            delimiter_found();
            return i;
        }
        if (i == n)
            return n;
        // Mismatch at in[i]: the held bytes were payload. in[i] itself is scanned again.
        const std::size_t skip = virtual_crlf_ ? 2 : 0;
        virtual_crlf_ = false;
        const std::size_t held = held_;
        held_ = 0;
        if (!emit(delim.substr(skip, held - skip)))
            return n;
    }

    const std::size_t span = i;  // start of the payload not yet emitted
    while (i < n) {
        const void* cr = std::memchr(in.data() + i, '\r', n - i);
        if (cr == nullptr)
            break;
        const std::size_t start =
            static_cast<std::size_t>(static_cast<const char*>(cr) - in.data());
        std::size_t j = start + 1, k = 1;
        while (k < delim.size() && j < n && in[j] == delim[k]) {
            ++k;
            ++j;
        }
        if (k == delim.size()) {
            if (!emit(in.substr(span, start - span)))
                return n;
            delimiter_found();
            return j;
        }
        if (j == n) {  // a prefix at the end: hold it
            if (emit(in.substr(span, start - span)))
                held_ = k;
            return n;
        }
        i = j;  // in[j] mismatched; it may be the next '\r'
    }
    emit(in.substr(span, n - span));
    return n;
}

// A part's header block, up to and including its empty line.
std::size_t multipart_parser::scan_headers(std::string_view in, std::size_t i) {
    const std::size_t n = in.size();
    while (i < n) {
        const std::size_t lf = in.find('\n', i);
        const std::size_t end = lf == std::string_view::npos ? n : lf + 1;
        if (header_block_.size() + (end - i) > limits_.max_part_header_bytes) {
            fail(multipart_error::part_header_too_large);
            return n;
        }
        header_block_.append(in.data() + i, end - i);
        i = end;
        if (lf == std::string_view::npos)
            break;
        const std::string_view line = std::string_view(header_block_).substr(line_start_);
        if (line.size() < 2 || line[line.size() - 2] != '\r') {
            fail(multipart_error::malformed);  // bare LF
            return n;
        }
        if (line.size() > 2) {
            line_start_ = header_block_.size();
            continue;
        }
        // The empty line: the part begins.
        part_info info;
        const auto e = parse_part_headers(header_block_, info);
        header_block_.clear();
        line_start_ = 0;
        if (e != multipart_error::none) {
            fail(e);
            return n;
        }
        stage_ = stage::data;
        held_ = 0;
        if (cb_.on_part_begin && !cb_.on_part_begin(info)) {
            fail(multipart_error::aborted);
            return n;
        }
        return i;
    }
    return n;
}

}  // namespace segue::http

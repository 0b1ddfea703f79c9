#pragma once
// Incremental multipart/form-data parser (RFC 7578 over RFC 2046) for streamed uploads.
//
// The body is fed in chunks of any size and is never held whole: text fields and files alike are
// handed to on_part_data as they arrive, as views into the fed chunk wherever possible. The parser
// holds back at most the bytes that might still start a delimiter (boundary size + 4) while in a
// part, and one part's header block (bounded by multipart_limits::max_part_header_bytes).
//
// Strictness, deliberately: CRLF line endings only (LF-only bodies are malformed), folded part
// headers are rejected, duplicate Content-Disposition / Content-Type headers or parameters are
// rejected, and a full delimiter that is not followed by "--", transport padding or CRLF is
// malformed (RFC 2046 forbids the delimiter inside a part, so such a body is ambiguous; partial
// delimiter prefixes are ordinary data). Errors are values; nothing here throws on the data path.

#include <cstddef>
#include <functional>
#include <optional>
#include <string>
#include <string_view>

namespace segue::http {

// Extracts the boundary parameter from a Content-Type value (case-insensitive type and parameter
// name, quoted or token value, 1..70 RFC 2046 bchars); nullopt if not multipart/form-data, if the
// value is malformed, or if the boundary is missing, duplicated or invalid.
std::optional<std::string> multipart_boundary(std::string_view content_type);

// Whether a Content-Type value names `type_subtype` (e.g. "application/json"): type and subtype
// compared case-insensitively (RFC 9110 8.3.1), any well-formed parameters allowed.
bool media_type_is(std::string_view content_type, std::string_view type_subtype);

// The quality an Accept value gives `type_subtype` (RFC 9110 12.5.1), from the most specific
// media range that matches it (type/subtype, then type/*, then */*); 1 for a range without q.
// nullopt if no range matches; with `exact`, only a range naming type/subtype itself counts.
// Malformed elements are skipped.
std::optional<double> accept_quality(std::string_view accept, std::string_view type_subtype,
                                     bool exact = false);

struct multipart_limits {
    std::size_t max_parts = 32;
    std::size_t max_part_header_bytes = 8 * 1024;  // all header lines of one part
    std::size_t max_preamble_bytes = 4 * 1024;
};

struct part_info {
    std::string name;                     // from Content-Disposition: form-data; name="..."
    std::optional<std::string> filename;  // filename="..." (filename*=UTF-8''... wins if present)
    std::string content_type;             // part Content-Type, "" if absent
};

enum class multipart_error {
    none,
    malformed,
    too_many_parts,
    part_header_too_large,
    preamble_too_large,
    missing_name,  // no Content-Disposition, or no / empty name parameter
    truncated,     // finish() before the close delimiter
    aborted,       // a callback returned false
};

std::string_view to_string(multipart_error e);

class multipart_parser {
  public:
    struct callbacks {
        std::function<bool(const part_info&)> on_part_begin;      // return false to abort
        std::function<bool(std::string_view data)> on_part_data;  // bytes of the part, in order
        std::function<bool()> on_part_end;
    };

    // An invalid boundary (see multipart_boundary) makes every feed() / finish() malformed.
    // Empty callbacks are allowed (they accept).
    multipart_parser(std::string boundary, callbacks cb, multipart_limits limits = {});

    // Feeds the next chunk. Returns none on progress; an error stops the parser for good (every
    // later call returns it). on_part_data is never called with an empty view.
    multipart_error feed(std::string_view chunk);
    // Call when the body ended: returns truncated unless the closing delimiter was seen.
    multipart_error finish();
    // The closing delimiter was seen (the epilogue is ignored).
    bool done() const { return stage_ == stage::epilogue; }
    multipart_error error() const { return error_; }
    // Bytes of input the parser currently keeps (a possible delimiter prefix, or a part's header
    // block while it is incomplete). For memory-bound tests.
    std::size_t buffered_bytes() const;

  private:
    enum class stage : unsigned char {
        preamble,         // discarding bytes before the first delimiter
        data,             // in a part's body
        after_delimiter,  // a full delimiter matched: "--", padding or CRLF follows
        close_dash,       // "...--" matched one '-' of the close delimiter
        padding,          // transport padding after a delimiter
        padding_lf,       // CR after the delimiter line, LF expected
        headers,          // a part's header block
        epilogue,         // after the close delimiter: ignored
    };

    std::size_t scan(std::string_view in, std::size_t i);
    std::size_t scan_headers(std::string_view in, std::size_t i);
    bool emit(std::string_view payload);
    bool delimiter_found();
    bool begin_part();
    multipart_error fail(multipart_error e);

    std::string delimiter_;  // CRLF "--" boundary
    callbacks cb_;
    multipart_limits limits_;
    stage stage_ = stage::preamble;
    multipart_error error_ = multipart_error::none;
    // Length of the delimiter prefix matched so far whose bytes may still be payload. They equal
    // delimiter_[0, held_), so they are never copied. At the start a virtual CRLF is "held" so a
    // delimiter at the very beginning of the body needs no leading CRLF.
    std::size_t held_ = 2;
    bool virtual_crlf_ = true;
    std::size_t preamble_bytes_ = 0;
    std::size_t padding_bytes_ = 0;
    std::size_t parts_ = 0;
    std::string header_block_;
    std::size_t line_start_ = 0;  // offset of the current line in header_block_
};

}  // namespace segue::http

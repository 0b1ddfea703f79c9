#pragma once
// Validators and file metadata headers for GET of stored files: entity tags (RFC 9110 section
// 8.8.3), If-None-Match (13.1.2), If-Range (13.1.5), HTTP dates (5.6.7) and
// Content-Disposition with a non-ASCII filename (RFC 6266, RFC 8187).

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace segue::http {

// True if the If-None-Match value lists `etag` (weak comparison: W/ ignored on both sides) or
// is "*". `etag` is quoted, as sent in ETag.
bool none_match(std::string_view if_none_match, std::string_view etag);

// True if a Range may be honoured under this If-Range: no If-Range, or an entity tag equal to
// the strong `etag`. A date (this endpoint's Last-Modified is not a strong validator) or a weak
// tag does not match, so the whole representation is sent.
bool if_range_matches(std::optional<std::string_view> if_range, std::string_view etag);

// "Thu, 03 Dec 2026 21:00:00 GMT" for Unix milliseconds.
std::string http_date(std::int64_t unix_ms);

// `inline` or `attachment`, with filename="<ASCII fallback>" and, when the name is not plain
// ASCII, filename*=UTF-8''<percent-encoded>. Path separators, quotes and control characters
// never reach either form.
std::string content_disposition(bool attachment, std::string_view utf8_filename);

}  // namespace segue::http

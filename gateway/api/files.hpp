#pragma once
// Files as the web expects them: GET/HEAD /v1/files/{id} (Range, ETag and If-None-Match,
// If-Range, Content-Type, Content-Disposition, 410 for a file retention deleted) and signed,
// expiring links that work without an API key (POST /v1/files/{id}/links, and beside every
// file URL in task JSON).

#include <boost/json/fwd.hpp>

#include <chrono>
#include <cstdint>
#include <map>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/api/extensions.hpp"

namespace segue::api {

void add_file_routes(http::router& routes, const api_deps& deps);

// When a link signed now for `lifetime` expires (Unix seconds): now + lifetime rounded up to a
// step of lifetime/4 (at most an hour), so a task read twice in a row shows the same links
// (caches and <audio> elements see one URL), and a link is never shorter-lived than asked.
std::int64_t link_expiry(std::int64_t now_s, std::chrono::seconds lifetime);

// A signed link to file `id` (api.public_base_url + /v1/files/<id>?expires=..&sig=..).
std::string signed_file_url(const config::settings& s, std::string_view file_id,
                            std::int64_t expires_s);

// Adds signed links to a task document (core::task_document): beside every `<name>_url` of an
// output (and of its `audio`) that is a Segue file URL, `<name>_signed_url`; the file source
// gets `url` and `signed_url`; each object given a signed link also gets
// `signed_url_expires_at`. Provider URLs are left alone.
//
// `gone`: files retention deleted (id -> when, 0 if no longer known): instead of a signed link,
// `<name>_expired_at` (the file source: `expired_at`), when known; never a link to nothing.
using gone_files = std::map<std::string, std::int64_t, std::less<>>;
void add_signed_links(boost::json::object& task, const config::settings& s, std::int64_t now_s,
                      const gone_files& gone = {});
// The ids of the Segue files a task document names (its outputs' and its source's).
std::vector<std::string> file_ids_in(const boost::json::object& task, const config::settings& s);

}  // namespace segue::api

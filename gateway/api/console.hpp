#pragma once
// The web console: GET /console (and /console/) answers its page, GET /console/<file> its
// scripts and styles, all embedded in the binary (console_assets.hpp). Each answer has its
// Content-Type, a strong ETag (If-None-Match -> 304), Cache-Control: no-cache (revalidated, so
// a new binary's files are never stale) and a Content-Security-Policy that lets the page load
// and connect to nothing but this origin. The console itself only calls the public /v1 API.

namespace segue::http {
class router;
}

namespace segue::api {

void add_console_routes(http::router& routes);

}  // namespace segue::api

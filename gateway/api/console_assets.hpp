#pragma once
// The web console's static files (console/ in the source tree), embedded at build time by
// cmake/embed_assets.cmake into a generated source (build/generated/console_assets.cpp).

#include <span>
#include <string_view>

namespace segue::api {

struct console_asset {
    std::string_view path;          // "/console/app.js"
    std::string_view content_type;  // "text/javascript; charset=utf-8"
    std::string_view etag;          // strong, quoted: "\"3f2a...\""
    std::span<const unsigned char> body;
};

std::span<const console_asset> console_assets();

}  // namespace segue::api

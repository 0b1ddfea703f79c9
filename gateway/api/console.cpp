#include "gateway/api/console.hpp"

#include <string>

#include "gateway/api/console_assets.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/router.hpp"

namespace segue::api {
namespace {

// Self only: no inline script or style, no other origin. blob: for audio decoded from an
// authenticated fetch and for covers fetched the same way; data: for nothing but images.
constexpr std::string_view content_security_policy =
    "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' blob: data:; "
    "media-src 'self' blob:; connect-src 'self'; font-src 'self'; manifest-src 'self'; "
    "base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

// True when an If-None-Match list names `etag` (or is "*"). Weak validators compare weakly,
// as RFC 9110 asks for If-None-Match.
bool matches(std::string_view if_none_match, std::string_view etag) {
    while (!if_none_match.empty()) {
        const auto comma = if_none_match.find(',');
        auto tag = if_none_match.substr(0, comma);
        if_none_match =
            comma == std::string_view::npos ? std::string_view{} : if_none_match.substr(comma + 1);
        while (!tag.empty() && (tag.front() == ' ' || tag.front() == '\t'))
            tag.remove_prefix(1);
        while (!tag.empty() && (tag.back() == ' ' || tag.back() == '\t'))
            tag.remove_suffix(1);
        if (tag == "*")
            return true;
        if (tag.starts_with("W/"))
            tag.remove_prefix(2);
        if (tag == etag)
            return true;
    }
    return false;
}

void serve(http::context& ctx, const console_asset& a) {
    auto& r = ctx.res();
    r.set_header("ETag", std::string(a.etag));
    r.set_header("Cache-Control", "no-cache");
    r.set_header("Content-Security-Policy", std::string(content_security_policy));
    r.set_header("X-Content-Type-Options", "nosniff");
    r.set_header("Referrer-Policy", "no-referrer");
    r.set_header("Cross-Origin-Opener-Policy", "same-origin");
    if (auto inm = ctx.header("If-None-Match"); inm && matches(*inm, a.etag)) {
        r.status = 304;
        return;
    }
    r.status = 200;
    r.content_type = std::string(a.content_type);
    r.body.assign(reinterpret_cast<const char*>(a.body.data()), a.body.size());
}

}  // namespace

void add_console_routes(http::router& routes) {
    for (const auto& a : console_assets()) {
        const console_asset* asset = &a;
        auto fn = [asset](http::context& ctx) -> boost::asio::awaitable<void> {
            serve(ctx, *asset);
            co_return;
        };
        routes.add("GET", std::string(a.path), fn);
        if (a.path == "/console/index.html") {
            routes.add("GET", "/console", fn);
            routes.add("GET", "/console/", fn);
        }
    }
}

}  // namespace segue::api

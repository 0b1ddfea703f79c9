#include "gateway/api/system.hpp"

#include "gateway/api/openapi.hpp"
#include "gateway/api/problem.hpp"
#include "gateway/http/router.hpp"
#include "gateway/metrics/registry.hpp"

namespace segue::api {

void add_system_routes(http::router& routes, metrics::registry& metrics,
                       std::function<std::string()> not_ready) {
    routes.add("GET", "/healthz", [](http::context& ctx) -> boost::asio::awaitable<void> {
        auto& r = ctx.res();
        r.content_type = "application/json";
        r.body = R"({"status":"ok"})";
        co_return;
    });
    routes.add("GET", "/readyz", [not_ready](http::context& ctx) -> boost::asio::awaitable<void> {
        if (const std::string why = not_ready(); why.empty()) {
            ctx.res().content_type = "application/json";
            ctx.res().body = R"({"status":"ready"})";
        } else {
            set_problem(ctx.res(), error_kind::unavailable, why, ctx.path());
        }
        co_return;
    });
    // The contract, as committed (docs/openapi.json): no key needed, like the other system paths.
    routes.add("GET", "/openapi.json", [](http::context& ctx) -> boost::asio::awaitable<void> {
        ctx.res().content_type = "application/json";
        ctx.res().body = std::string(openapi_document());
        co_return;
    });
    routes.add("GET", "/metrics", [&metrics](http::context& ctx) -> boost::asio::awaitable<void> {
        ctx.res().content_type = "text/plain; version=0.0.4; charset=utf-8";
        ctx.res().body = metrics.serialize();
        co_return;
    });
}

}  // namespace segue::api

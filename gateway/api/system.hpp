#pragma once
// Operational endpoints: /healthz (alive), /readyz (takes traffic), /metrics (Prometheus),
// /openapi.json (the API's OpenAPI 3.1 document).

#include <functional>
#include <string>

namespace segue::http {
class router;
}
namespace segue::metrics {
class registry;
}

namespace segue::api {

// `not_ready`: why this replica should take no traffic now ("" when it should): /readyz is
// then a 503 saying so.
void add_system_routes(http::router& routes, metrics::registry& metrics,
                       std::function<std::string()> not_ready);

}  // namespace segue::api

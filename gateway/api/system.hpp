#pragma once
// Operational endpoints: /healthz (alive), /readyz (takes traffic), /metrics (Prometheus),
// /openapi.json (the API's OpenAPI 3.1 document).

#include <functional>

namespace segue::http {
class router;
}
namespace segue::metrics {
class registry;
}

namespace segue::api {

void add_system_routes(http::router& routes, metrics::registry& metrics,
                       std::function<bool()> ready);

}  // namespace segue::api

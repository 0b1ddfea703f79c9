#pragma once
// /v1/deliveries: webhook deliveries of the tenant's tasks, dead letters and redelivery.

namespace segue::http {
class router;
}
namespace segue::store {
class db;
}

namespace segue::api {

class authenticator;

struct delivery_deps {
    store::db& db;
    const authenticator& auth;
};

void add_delivery_routes(http::router& routes, const delivery_deps& deps);

}  // namespace segue::api

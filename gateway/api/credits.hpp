#pragma once
// /v1/credits: a tenant's credit balance and ledger; /v1/admin/credits: operator top-ups.

#include <cstdint>
#include <functional>
#include <string>
#include <string_view>

namespace segue::http {
class router;
}
namespace segue::store {
class db;
}

namespace segue::api {

class authenticator;

struct credits_deps {
    store::db& db;
    const authenticator& auth;
    // The operator's key for POST /v1/admin/credits ("Authorization: Bearer <key>"); "" disables
    // the endpoint (it answers 404).
    std::string admin_key;
    // The tenant's initial grant from config, in milli-credits (0 if none). Written to the
    // ledger once, the first time anything asks (store::transaction::ensure_grant).
    std::function<std::int64_t(std::string_view tenant)> initial_grant;
    // Whether a tenant of that name is configured (the admin endpoint refuses others).
    std::function<bool(std::string_view tenant)> tenant_exists;
};

void add_credit_routes(http::router& routes, const credits_deps& deps);

}  // namespace segue::api

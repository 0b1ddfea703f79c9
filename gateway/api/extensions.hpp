#pragma once
// The public extend API (v1): submit, read, events (JSON and Server-Sent Events), cancel, files.

#include <memory>

#include "gateway/config/settings.hpp"

namespace segue::http {
class router;
}
namespace segue::store {
class db;
class blob_store;
}  // namespace segue::store
namespace segue::core {
class engine;
}
namespace segue::providers {
class registry;
}
namespace segue::runtime {
class blocking_pool;
}
namespace segue::metrics {
class registry;
}
namespace segue::events {
class event_hub;
}  // namespace segue::events
namespace segue::net {
struct url_policy;
}

namespace segue::api {
namespace create {
struct flow_state;
}  // namespace create

class authenticator;

struct api_deps {
    const config::settings& settings;
    store::db& db;
    store::blob_store& blobs;  // uploads are stored and files served from here
    core::engine& engine;
    providers::registry& providers;
    runtime::blocking_pool& blocking;
    const authenticator& auth;
    metrics::registry& metrics;
    // The URL guard: audio_url and webhook_url are refused at submit (422) when it would
    // refuse them later.
    std::shared_ptr<const net::url_policy> url_policy;
    // Wakes SSE streams when their task's events are committed (by any replica).
    events::event_hub& events;
    // What the process's create flows (this API and the drop-in shapes) share:
    // create::make_flow_state().
    std::shared_ptr<create::flow_state> creates;
};

void add_extension_routes(http::router& routes, const api_deps& deps);

}  // namespace segue::api

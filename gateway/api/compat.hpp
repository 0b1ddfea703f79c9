#pragma once
// Drop-in APIs: a provider's own request and response shapes, served by the gateway (a client
// written against that provider changes only its base URL and key). Each lives beside the
// provider it mirrors (providers/<name>/compat/) and installs itself through its descriptor;
// nothing here knows a provider. Behind every shape is the neutral create (create_flow.hpp),
// routing, failover, the ledger and the outbox; these helpers are what the shapes share.

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>

#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/api/extensions.hpp"
#include "gateway/core/model.hpp"
#include "gateway/store/store.hpp"

namespace segue::http {
class router;
}
namespace segue::events {
class webhook_formats;
}

namespace segue::api {

// What a drop-in API is given to install itself: the routes to add its paths to, what the
// neutral API runs on, and the registry of delivery formats (events/webhook_format.hpp) for
// its webhook shapes.
struct compat_host {
    http::router& routes;
    const api_deps& deps;
    events::webhook_formats& formats;
};

// The tenant of an API key sent raw ("Authorization: <key>") or as "Bearer <key>".
std::optional<std::string> tenant_of_key(const authenticator& auth,
                                         std::optional<std::string_view> authorization);

// A task status in a provider's four words: waiting (queued, submitted), working (running),
// done (succeeded, partially_succeeded), failed (failed, canceled).
struct status_words {
    std::string_view waiting, working, done, failed;
};
std::string_view status_in(std::string_view task_status, const status_words& words);

// One task as a drop-in API reads it (the tenant's own; nullopt for another's or none).
struct task_snapshot {
    store::task_row task;
    std::vector<store::output_row> outputs;
    core::extend_request request;  // parsed from the task
    store::task_ledger ledger;     // its credits: held, captured, released
};
boost::asio::awaitable<std::optional<task_snapshot>> load_task(store::db& db, std::string id,
                                                               std::string tenant);

// An output's audio URL as a client outside the gateway can fetch it: a file the gateway
// holds becomes a signed, expiring link (no key needed), absolute under api.public_base_url and
// relative ("/v1/files/<id>?expires=…&sig=…") without it; a provider's URL stays as it is.
// `kind` is "mp3" or "wav"; "" when the output has none.
std::string public_audio_url(const config::settings& settings, const boost::json::object& output,
                             std::string_view kind);
// The same for a URL field that may name a gateway file ("/v1/files/<id>", e.g. a cover).
std::string public_url(const config::settings& settings, std::string_view url);

// Why a task failed, as a drop-in shape tells its client: the task's error message; when that
// only says no output was produced (each output failed on its own, e.g. by the provider's
// failure webhooks), the first failed output's own error, the provider's reason. "" for none.
std::string failure_message(const store::task_row& task,
                            const std::vector<store::output_row>& outputs);

// An output row's data as an object ({} when empty or unreadable).
boost::json::object output_data(const store::output_row& o);

// The id of output `index` of a task, as drop-in shapes hand it out: "<task id>-<index>";
// and back (nullopt for anything else).
std::string output_id(std::string_view task_id, int index);
struct output_ref {
    std::string task_id;
    int index = 0;
};
std::optional<output_ref> parse_output_id(std::string_view id);

}  // namespace segue::api

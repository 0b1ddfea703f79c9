#pragma once
// The control plane every fake shares, under /_control (never recorded, never faulted):
//   GET  /_control/health     {"ok":true}
//   GET  /_control            {"settings":{…fake-specific…},"faults":[…rules with counts…]}
//   POST /_control            a JSON object: "faults":[rules] replaces the fault list,
//                             "add_faults":[rules] appends, every other key is fake-specific;
//                             all-or-nothing: 400 {"error":"…"} changes nothing.
//                             Answers like GET /_control.
//   POST /_control/reset      back to the start-up state (flags / --control / --fault), the
//                             request and webhook logs emptied, pending webhooks canceled.
//   GET  /_control/requests   {"requests":[…]} (see recorder.hpp); ?path=/x or ?route=submit
//   GET  /_control/webhooks   {"webhooks":[…],"in_flight":N} (see webhooks.hpp)
// plus whatever routes the fake adds under /_control/.

#include <boost/json/object.hpp>

#include <cstdint>
#include <functional>
#include <optional>
#include <string>
#include <vector>

#include "tests/fakes/common/faults.hpp"
#include "tests/fakes/common/http.hpp"
#include "tests/fakes/common/json_text.hpp"
#include "tests/fakes/common/recorder.hpp"
#include "tests/fakes/common/webhooks.hpp"

namespace segue::fakes {

fake_reply json_reply(int status, const boost::json::value& v);

struct control_hooks {
    fault_table* faults = nullptr;
    request_log* requests = nullptr;
    webhook_sender* webhooks = nullptr;
    // Validates and applies the fake's own keys (every key but faults / add_faults). Returns ""
    // or why it refused; must change nothing when it refuses.
    std::function<std::string(const boost::json::object&)> apply;
    // The fake's current settings.
    std::function<boost::json::object()> describe;
    // Restores the fake's start-up settings and faults (logs are emptied by the caller).
    std::function<void()> reset;
    // Fake-specific /_control/… routes; nullopt if not one of them.
    std::function<std::optional<fake_reply>(const fake_request&)> extra;
};

bool is_control_path(std::string_view path);
// Answers a /_control request.
fake_reply handle_control(const fake_request& request, control_hooks& hooks);

// Command-line helpers.
// Writes the port to `path` atomically (temporary file + rename), like `segue --port-file`.
void write_port_file(const std::string& path, std::uint16_t port);

}  // namespace segue::fakes

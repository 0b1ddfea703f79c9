#pragma once
// Delivery formats: other shapes of a task's webhook deliveries than Segue's own event body.
//
// A drop-in API (providers/<name>/compat/) registers a format under a name and stores that name
// with the tasks it creates (core::extend_request::webhook_format). The dispatcher still sends
// every delivery from the outbox (leases, retries, order, dead letters, redelivery), signed
// with the Standard Webhooks headers over the body it sends, and names the format in a
// `Segue-Webhook-Format` header; a format only chooses that body,
// may add headers of its own (e.g. a provider's signature scheme), and may have no callback for
// an event at all (the delivery is then recorded as delivered without a request).

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/core/model.hpp"
#include "gateway/store/store.hpp"

namespace segue::events {

// What a format sees of one delivery: the delivery (its event type and data), the task as it
// is now, its outputs and its request.
struct format_input {
    const store::delivery_row& delivery;
    const store::task_row& task;
    const std::vector<store::output_row>& outputs;
    const core::extend_request& request;
    std::int64_t timestamp_s = 0;  // the attempt's time, as in webhook-timestamp
};

struct formatted {
    std::string body;                                          // JSON
    std::vector<std::pair<std::string, std::string>> headers;  // sent with the Standard ones
    // The format's name, sent as Segue-Webhook-Format (set by the dispatcher).
    std::string format;
};

// nullopt: the format has no callback for this event.
using formatter = std::function<std::optional<formatted>(const format_input&)>;

// Formats by name. Filled while the app is wired, read-only once the dispatcher runs.
class webhook_formats {
  public:
    // Throws std::invalid_argument for a duplicate or empty name.
    void add(std::string name, formatter f);
    const formatter* find(std::string_view name) const;
    bool empty() const { return formats_.empty(); }

  private:
    std::map<std::string, formatter, std::less<>> formats_;
};

}  // namespace segue::events

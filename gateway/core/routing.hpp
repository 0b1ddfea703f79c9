#pragma once
// Routing: which providers a task may try, in which order (ARCHITECTURE.md, reliability rules:
// "fail over along the route"). Pure: no I/O, no globals; the capability lookup and the random
// draw are parameters, so a plan is reproducible and testable.
//
// A route is an ordered failover chain of providers:
//   - The FIRST provider is picked by weight among the capable entries with a weight > 0
//     (weighted random with `unit_random` in [0, 1): entry i wins when
//     unit_random < (w_0 + .. + w_i) / sum(w)). If no capable entry has a weight, the first
//     capable entry in chain order is first. Weights say nothing about the later positions.
//   - The remaining capable entries follow in chain order (failover order).
//   - A provider that cannot serve the request is skipped: the source kind (file/url/clip) it
//     does not accept, a requested `length` it does not honour, more outputs than its
//     max_outputs. Providers missing from the capability lookup (not configured) are skipped.
//   - A provider listed twice counts once, at its first position (with that entry's weight).
//   - Non-finite or non-positive weights are "no weight".
// Pins override the route (its entries are then not consulted):
//   - A `clip` source belongs to the provider that made the clip: the plan is exactly
//     [clip_provider] if it is configured and capable, else empty. A pinned provider that
//     differs from the clip's owner is a conflict (empty plan).
//   - A pinned provider (request `provider`) gives exactly [pinned] if configured and capable.
// An empty plan means the task cannot be routed; `why_empty` (if given) then says why in words
// fit for a problem+json `detail`, e.g. "no provider in route 'fast' accepts clip sources". On a
// non-empty plan `why_empty` is cleared.

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/core/model.hpp"

namespace segue::providers {
struct capabilities;  // providers/provider.hpp (kept out of this header: it pulls in Asio)
}

namespace segue::core {

struct route_entry {
    std::string provider;
    double weight = 0;  // > 0: a candidate for the first pick
};

struct route {
    std::string name;
    std::vector<route_entry> chain;  // failover order
};

// What of a request matters for routing (see extend_request).
struct routing_request {
    source_kind source = source_kind::file;
    std::string clip_provider;  // clip sources: the provider that owns the clip
    int num_outputs = 1;
    bool wants_length = false;                   // the request asks for a `length`
    std::optional<std::string> pinned_provider;  // the request's `provider`
    // The gateway has api.public_base_url: providers that fetch a file source by its link
    // (capabilities::file_by_public_url) can take one.
    bool public_url = true;
};

// The routing view of a normalized request.
routing_request make_routing_request(const extend_request& request);

// The capabilities of a configured provider, or nullptr if there is no such provider.
using capability_lookup = std::function<const providers::capabilities*(std::string_view)>;

// The ordered candidate providers for one task (see the top of this file). `unit_random` is
// expected in [0, 1); values outside are clamped and NaN reads as 0. `why_empty` may be null.
std::vector<std::string> plan_route(const route& r, const routing_request& request,
                                    const capability_lookup& caps, double unit_random,
                                    std::string* why_empty);

}  // namespace segue::core

#pragma once
// What a provider call that did not get an HTTP answer means for the task: the one mapping of
// net::result failures every provider shares.

#include <string_view>

#include "providers/provider.hpp"

namespace segue::net {
struct result;
}

namespace segue::providers::wire {

// The `failed` update for a call that got no answer (`what` names the call: "submit"). Timeouts
// and unreachable hosts are transient; TLS, URL and address-policy refusals are a
// misconfiguration (unknown). When request bytes may have reached `provider` ("MusicGPT") the
// update is ambiguous: the task may exist upstream (reconcile before resubmitting).
update transport_failure(const net::result& r, std::string_view provider, std::string_view what);

}  // namespace segue::providers::wire

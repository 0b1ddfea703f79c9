#include "providers/common/transport.hpp"

#include <string>

#include "gateway/net/http_client.hpp"
#include "providers/common/wire.hpp"

namespace segue::providers::wire {

update transport_failure(const net::result& r, std::string_view provider, std::string_view what) {
    auto u = failed(core::error_class::transient,
                    r.error == net::failure::timeout ? "upstream_timeout" : "upstream_unreachable",
                    std::string(what) + ": " + std::string(net::to_string(r.error)) +
                        (r.message.empty() ? "" : " (" + r.message + ")"));
    if (r.error == net::failure::tls || r.error == net::failure::bad_url ||
        r.error == net::failure::plain_http_refused || r.error == net::failure::refused_address) {
        u.error = core::error_class::unknown;
        u.error_code = "upstream_misconfigured";
    }
    u.ambiguous = r.request_sent;
    if (r.request_sent)
        u.error_message += "; the request may have reached " + std::string(provider) +
                           " (ambiguous: reconcile before resubmitting)";
    return u;
}

}  // namespace segue::providers::wire

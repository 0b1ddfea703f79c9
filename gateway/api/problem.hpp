#pragma once
// RFC 9457 problem details. Every error the gateway answers comes from this one table of kinds,
// so a kind always maps to the same status, `type` URI and `code`.

#include <span>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/http/message.hpp"

namespace segue::api {

enum class error_kind {
    bad_request,             // 400 malformed request
    unauthorized,            // 401
    payment_required,        // 402 insufficient credits
    link_expired,            // 403 a signed file link past its expiry
    not_found,               // 404 unknown route or resource
    method_not_allowed,      // 405
    not_acceptable,          // 406
    request_timeout,         // 408 client too slow
    conflict,                // 409 idempotency key reused with another body
    gone,                    // 410
    file_expired,            // 410 a file deleted by retention
    payload_too_large,       // 413
    unsupported_media_type,  // 415
    range_not_satisfiable,   // 416 a Range past the end of a file
    validation_failed,       // 422 fields invalid
    unprocessable_audio,     // 422 audio not decodable / too short
    too_many_requests,       // 429
    header_too_large,        // 431
    internal,                // 500
    upstream_failed,         // 502
    insufficient_storage,    // 507 the data volume is below storage.min_free_bytes
    unavailable,             // 503 draining or over capacity
};

struct error_info {
    int status;
    std::string_view code;   // stable machine-readable code, e.g. "not_found"
    std::string_view title;  // short human summary, fixed per kind
};

const error_info& info(error_kind kind) noexcept;
// Every kind's entry, in enum order (the OpenAPI document must list each code: a unit test).
std::span<const error_info> all_errors() noexcept;

// One offending field in a validation error.
struct field_error {
    std::string field;
    std::string message;
};

// Fills `res` with an application/problem+json body for `kind`.
void set_problem(http::response& res, error_kind kind, std::string_view detail,
                 std::string_view instance = {}, const std::vector<field_error>& errors = {});

// A 422 naming every field in `errors` ("2 invalid fields").
void set_validation_problem(http::response& res, std::string_view instance,
                            const std::vector<field_error>& errors);

http::response make_problem(error_kind kind, std::string_view detail,
                            std::string_view instance = {},
                            const std::vector<field_error>& errors = {});

// The `type` URI of a kind: "https://segue.dev/problems/<code>".
std::string type_uri(error_kind kind);

}  // namespace segue::api

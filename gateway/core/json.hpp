#pragma once
// JSON forms of the domain types: the stored request, and the public task/event documents.

#include <boost/json/fwd.hpp>

#include <string>
#include <vector>

#include "gateway/core/model.hpp"
#include "gateway/store/store.hpp"

namespace segue::core {

std::string request_to_json(const extend_request& r);
// The text Idempotency-Key hashes are taken over: request_to_json as it was before whole
// seconds became integers (every number a double), so keys stored by older versions still
// match the same request after an upgrade. Never change its output.
std::string request_fingerprint(const extend_request& r);
extend_request request_from_json(const std::string& text);

// The public request echo (no internal paths).
boost::json::object public_request(const extend_request& r);

// The public task document: status, request, outputs, attempts, error, warnings, metadata.
boost::json::object task_document(const store::task_row& t,
                                  const std::vector<store::output_row>& outputs,
                                  const std::vector<store::attempt_row>& attempts);

// The public event envelope: {id, type, task_id, seq, created_at, data}.
boost::json::object event_document(const store::event_row& e);

std::string iso8601(store::millis ms);
store::millis now_ms();

}  // namespace segue::core

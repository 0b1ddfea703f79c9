#pragma once
// The contract log: with SEGUE_CONTRACT_LOG set to a directory, every response the test HTTP
// client receives is appended there as one JSON line (<pid>.jsonl), for tests/contract/validate.js
// to check against docs/openapi.json after the integration tests (CTest fixture contract_log).

#include <string>

namespace segue::test {

struct http_response;

// Appends `r` (the answer to `method target`) to the log; does nothing when the variable is unset.
void record_response(const std::string& method, const std::string& target, const http_response& r);

}  // namespace segue::test

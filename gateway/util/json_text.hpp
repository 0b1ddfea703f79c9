#pragma once
// JSON text for every document the gateway returns or stores (tasks, events, outputs, credits,
// problems). Boost.JSON 1.81 writes doubles in exponent form (2.5 -> "2.5E0", 50.0 -> "5E1");
// here a double is its shortest round-trip decimal without an exponent ("2.5", "50", "0.1",
// "1000000000000000000000" for 1e21, "0.0000001" for 1e-7), -0 is "0", and a NaN or infinity is
// null (JSON has neither). Everything else (strings and their escapes, integers, bools, null,
// key order) is exactly what boost::json::serialize writes.
//
// Not for request_fingerprint: Idempotency-Key hashes are over Boost's own text, forever.

#include <boost/json/fwd.hpp>

#include <string>

namespace segue::util {

std::string json_text(const boost::json::value& v);
std::string json_text(const boost::json::object& o);
std::string json_text(const boost::json::array& a);

}  // namespace segue::util

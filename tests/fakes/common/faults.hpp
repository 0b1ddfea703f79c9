#pragma once
// Fault injection for the fakes: rules that match a route and make the answer an error, slow,
// a connection reset or a silent close; one-shot ("times": N) or sticky.
//
// A rule, as JSON (every key optional except that a rule must do something):
//   {"match":"submit",        route name the fake gives the request, or "any" (default)
//    "status":429,            answer this status instead of the real answer
//    "style":"message",       error body: "detail" | "message" | "error" | "mix" (rotates) |
//                             "code_message" ({"code":<status>,"message":"…"}, MusicAPI.ai) |
//                             "auto" (default: 401 error, 402 message INSUFFICIENT FUNDS,
//                             422 detail[], 429 message, 404 error, others detail; a fake
//                             may pick its own style for "auto" before building the reply)
//    "message":"…",           text in the body (defaults by status)
//    "body":"…",              exact body instead (with "content_type", default JSON)
//    "retry_after":3,         seconds: a `retry_after` body field and a Retry-After header
//                             (default 1 for 429)
//    "delay_ms":2000,         wait before acting (alone: a slow but otherwise normal answer)
//    "reset":true,            read the request, then reset the connection (RST), no answer
//    "close":true,            read the request, then close (FIN), no answer
//    "skip":0,                let this many matching requests through first
//    "times":1}               apply this many times, then the rule is spent (absent: sticky)

#include <boost/json/fwd.hpp>

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "tests/fakes/common/http.hpp"

namespace segue::fakes {

struct fault_rule {
    std::string match = "any";
    int status = 0;
    std::string style = "auto";
    std::string message;
    std::optional<std::string> body;
    std::string content_type = "application/json";
    std::optional<double> retry_after;
    std::int64_t delay_ms = 0;
    bool reset = false;
    bool close = false;
    int skip = 0;
    std::optional<int> times;  // remaining; nullopt: sticky
    int applied = 0;

    // What the rule does, for logs ("status 429, delay 200 ms").
    std::string describe() const;
};

// Parses one rule; "" on success, else the reason.
std::string parse_fault(const boost::json::value& v, fault_rule& out);

// The error body of `status` in a given style (see the top of this file). `rotation` picks the
// style for "mix".
fake_reply error_reply(int status, std::string_view style, std::string message,
                       std::optional<double> retry_after, unsigned rotation = 0);

class fault_table {
  public:
    // Replaces (or appends to) the rules from a JSON array; "" on success, else the reason (and
    // nothing changes).
    std::string load(const boost::json::value& rules, bool append);
    void add(fault_rule r) { rules_.push_back(std::move(r)); }
    void clear() { rules_.clear(); }

    // The first live rule matching `route` (counting skip / times down), or nullopt.
    std::optional<fault_rule> take(std::string_view route);

    // Turns a taken rule into the reply to send, or nullopt when the rule only delays (then
    // answer normally, after `delay_ms`).
    std::optional<fake_reply> reply_for(const fault_rule& rule);

    boost::json::array to_json() const;

  private:
    std::vector<fault_rule> rules_;
    unsigned rotation_ = 0;
};

}  // namespace segue::fakes

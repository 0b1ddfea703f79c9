#pragma once
// A Server-Sent Events parser (the WHATWG "event stream" format): bytes in, whole events out.
// Used by the CLI to follow GET /v1/extensions/{id}/events; independent of any transport.

#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace segue::client {

struct sse_event {
    std::string id;    // the last `id:` seen (it carries over to later events, per the spec)
    std::string type;  // `event:`, "message" when absent
    std::string data;  // the `data:` lines joined with '\n'
};

class sse_parser {
  public:
    // Feeds a chunk (any split, even inside a line or a CRLF pair); returns the events it
    // completed. Comments (": keep-alive") and unknown fields are skipped.
    std::vector<sse_event> feed(std::string_view chunk);
    // The last event id received (for Last-Event-ID on a reconnect); empty if none.
    const std::string& last_id() const { return last_id_; }
    // The server's `retry:` in milliseconds, if it sent one.
    std::optional<long> retry_ms() const { return retry_ms_; }

  private:
    void line(std::string_view l, std::vector<sse_event>& out);

    std::string buffer_;    // an incomplete line
    bool skip_lf_ = false;  // the previous chunk ended on CR: a leading LF belongs to it
    std::string type_;
    std::string data_;
    bool has_data_ = false;
    std::string last_id_;
    std::optional<long> retry_ms_;
};

}  // namespace segue::client

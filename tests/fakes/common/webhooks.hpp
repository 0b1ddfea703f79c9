#pragma once
// Outbound webhooks from a fake: plain HTTP POSTs sent in a given order after a delay, each
// retried a few times (connection errors, 5xx and 429), all logged for GET /_control/webhooks.

#include <boost/json/array.hpp>

#include <chrono>
#include <cstdint>
#include <string>
#include <vector>

#include "tests/fakes/common/http.hpp"

namespace segue::fakes {

struct outbound_webhook {
    std::string kind;  // fake-defined: "audio", "lyrics", "cover", …
    std::string task_id;
    int output = 0;  // 1-based output index, 0 for task-level webhooks
    std::string url;
    std::string body;
    std::string content_type = "application/json";
    header_pairs headers;
    bool duplicate = false;  // a repeated delivery of an earlier webhook
    bool malformed = false;  // the body was broken on purpose
    bool dropped = false;    // logged, never sent
};

struct webhook_options {
    int max_attempts = 4;
    std::int64_t backoff_ms = 200;  // doubles after each failed attempt
    std::chrono::milliseconds timeout{5000};
};

// Log entry (GET /_control/webhooks):
//   {"seq":1,"kind":"audio","task_id":"…","output":1,"url":"…","body":"…","duplicate":false,
//    "malformed":false,"state":"scheduled|sending|delivered|failed|dropped|canceled",
//    "attempts":1,"status":200,"error":"","scheduled_at_ms":…,"finished_at_ms":…}
class webhook_sender {
  public:
    explicit webhook_sender(net::io_context& ioc) : ioc_(ioc) {}

    // Sends `items` one after another, in order, `delay_ms` from now and `gap_ms` apart
    // (dropped items are logged as dropped and skipped).
    void schedule(std::vector<outbound_webhook> items, std::int64_t delay_ms, std::int64_t gap_ms,
                  webhook_options options);
    boost::json::array log() const;
    // Forgets the log; sequences still waiting stop (their entries are gone).
    void reset();
    // Entries not yet delivered, failed or dropped.
    std::size_t in_flight() const;

  private:
    struct entry {
        outbound_webhook hook;
        std::int64_t seq = 0;
        std::string state = "scheduled";
        int attempts = 0;
        int status = 0;
        std::string error;
        std::int64_t scheduled_at_ms = 0;
        std::int64_t finished_at_ms = 0;
    };
    static net::awaitable<void> run(webhook_sender* self, std::vector<std::int64_t> seqs,
                                    std::int64_t delay_ms, std::int64_t gap_ms,
                                    webhook_options options, std::uint64_t generation);
    entry* find(std::int64_t seq);

    net::io_context& ioc_;
    std::vector<entry> entries_;
    std::int64_t next_seq_ = 1;
    std::uint64_t generation_ = 0;
};

}  // namespace segue::fakes

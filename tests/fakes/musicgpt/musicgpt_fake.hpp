#pragma once
// A fake MusicGPT (https://api.musicgpt.com/api/public) for integration tests: the extend submit
// (multipart/form-data, urlencoded form or JSON, validated like the docs), the task-level `byId`
// poll, the five webhooks per task (2 audio, 2 timestamped lyrics, 1 album cover; shuffled), real
// audio files served at the URLs it hands out, and fault injection through /_control.
// Sources: shared/seeds/000_*, 001_* and shared/PROVIDERS.md section 1.

#include <boost/json/object.hpp>

#include <cstdint>
#include <map>
#include <set>
#include <string>
#include <vector>

#include "tests/fakes/common/control.hpp"
#include "tests/fakes/common/faults.hpp"
#include "tests/fakes/common/http.hpp"
#include "tests/fakes/common/recorder.hpp"
#include "tests/fakes/common/webhooks.hpp"

namespace segue::fakes::musicgpt {

// Every key is also a POST /_control key (same name, same JSON type).
struct settings {
    std::string api_key;   // "" accepts any non-empty raw key (never "Bearer …")
    std::string base_url;  // prefix of the file URLs handed out ("http://127.0.0.1:PORT")
    std::int64_t webhook_delay_ms = 200;    // submit -> first webhook
    std::int64_t webhook_gap_ms = 0;        // between webhooks
    int webhook_attempts = 4;               // per webhook (retries on errors, 5xx, 429)
    std::int64_t webhook_backoff_ms = 200;  // doubling
    std::int64_t complete_after_ms = -1;    // byId shows the task done after this; -1: the delay
    std::vector<std::string> pending_statuses{"IN_QUEUE"};  // spread over the pending time
    std::string failed_status = "FAILED";                   // or "ERROR"
    std::string status_override;  // byId always says this status ("" off): unknown statuses
    std::set<int> fail_outputs;   // these outputs fail (success:false webhooks, no byId audio)
    std::set<int> flag_outputs;   // these outputs are flagged (is_flagged:true, reason)
    std::string flag_reason = "Flagged by content moderation";
    bool task_fails = false;  // every output fails, byId says failed_status
    std::string fail_message = "Conversion failed";
    bool drop_all_webhooks = false;
    std::set<std::string> drop_webhooks;  // kinds never sent: "audio", "lyrics", "cover"
    std::set<int> drop_outputs;           // audio + lyrics webhooks of these outputs never sent
    int duplicate_webhooks = 0;           // every sent webhook is delivered 1 + N times
    std::set<std::string> malformed_webhooks;  // kinds sent as broken JSON
    bool shuffle_webhooks = true;
    std::uint64_t seed = 0;           // shuffle seed (0: random)
    bool fetch_audio_url = false;     // GET the submitted audio_url (http only), record size/sha256
    std::set<int> silent_outputs;     // these outputs' files are digital silence
    std::set<int> truncated_outputs;  // these outputs' files stop halfway (the header says more)
    bool files_gone = false;          // every file URL answers 404 (links expired)
    int eta = 38;
    int credits_per_output = 21;
};

// Applies the keys of `o` to a copy of `s`; "" and the copy committed, or the reason.
std::string apply_settings(const boost::json::object& o, settings& s);
boost::json::object settings_json(const settings& s);

struct audio_asset {
    std::string mp3;
    std::string wav;
    double duration = 0;
};

class fake final : public request_handler {
  public:
    fake(net::io_context& ioc, settings initial, std::vector<fault_rule> initial_faults,
         std::vector<audio_asset> assets);

    // The prefix of the file URLs, once the port is known (also what /_control/reset restores).
    // What the outputs in silent_outputs serve.
    void set_silent_asset(audio_asset a) { silent_ = std::move(a); }

    void set_base_url(const std::string& url) {
        initial_.base_url = url;
        s_.base_url = url;
    }

    net::awaitable<fake_reply> handle(fake_request& request) override;
    void replied(const fake_request& request, const fake_reply& reply) override;

  private:
    struct output {
        int index = 1;
        std::string conversion_id;
        std::string title;
        std::string lyrics;
        std::string lyrics_timestamped;  // JSON text (MusicGPT sends it as a string)
        double duration = 0;
        bool failed = false;
        bool flagged = false;
    };
    struct task {
        std::string task_id;
        std::vector<output> outputs;
        std::string webhook_url;
        std::int64_t created_steady_ms = 0;
        std::int64_t created_unix_ms = 0;
        std::int64_t complete_after_ms = 0;
        bool fails = false;
        std::string fail_message;
        std::string flag_reason;
        std::string source;  // "file" | "url"
        std::string audio_url;
        boost::json::object audio_file;  // filename, content_type, size, sha256
        boost::json::object fields;      // the text fields as received
        boost::json::object fetch;       // audio_url download result (fetch_audio_url)
    };

    fake_reply submit(const fake_request& req, const parsed_body& body);
    fake_reply by_id(const fake_request& req);
    fake_reply file(const fake_request& req);
    std::optional<fake_reply> check_auth(const fake_request& req) const;
    void send_webhooks(const task& t);
    std::string status_of(const task& t, bool& done) const;
    boost::json::object task_json(const task& t) const;
    std::string file_url(const std::string& name) const;
    std::optional<fake_reply> control_extra(const fake_request& req);
    static net::awaitable<void> fetch_audio(fake* self, std::string task_id, std::string url,
                                            std::uint64_t generation);

    net::io_context& ioc_;
    settings initial_;
    const std::vector<fault_rule> initial_faults_;
    settings s_;
    std::vector<audio_asset> assets_;
    audio_asset silent_;
    fault_table faults_;
    request_log requests_;
    webhook_sender webhooks_;
    control_hooks hooks_;
    std::map<std::string, task> tasks_;
    std::vector<std::string> task_order_;
    std::map<std::string, std::pair<std::string, int>> conversions_;  // id -> (task, index)
    std::uint64_t generation_ = 0;
    std::uint64_t shuffles_ = 0;
};

}  // namespace segue::fakes::musicgpt

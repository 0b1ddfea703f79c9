#pragma once
// A fake MusicAPI.ai Producer (https://api.musicapi.ai/api/v1) for integration tests:
//   POST /api/v1/producer/upload   {"audio_url"}: 2 credits, asynchronous; the fake downloads the
//                                  URL itself (plain http://), records size + SHA-256, probes the
//                                  audio and makes a clip of it (or FAILED, credits refunded)
//   POST /api/v1/producer/create   task_type "extend_music" (validated, moderated, 12 credits);
//                                  music_variation / swap_music_vocals / swap_music_sound: 410
//   GET  /api/v1/producer/task/{id} PENDING -> RUNNING -> SUCCESS | FAILED on a timer, in the
//                                  "newer" or the "legacy" client shape (optionally HTTP 202
//                                  while processing)
//   GET  /api/v1/get-credits       {"code":200,"credits":N}
//   GET  /files/{clip}.mp3|.wav|.png, /files/{clip}.{format} for uploaded clips (the bytes the
//                                  fake downloaded): real audio for every clip it hands out
// plus signed webhooks (X-Webhook-Signature: sha256=HMAC(secret, ts + "." + body)), a credit
// ledger (charges and refunds), and fault injection / settings through /_control.
// Sources: shared/seeds/002_* and shared/PROVIDERS.md section 2; what the docs do not show is
// marked INFERRED where it is implemented.

#include <boost/json/object.hpp>

#include <cstdint>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <vector>

#include "tests/fakes/common/control.hpp"
#include "tests/fakes/common/faults.hpp"
#include "tests/fakes/common/http.hpp"
#include "tests/fakes/common/recorder.hpp"
#include "tests/fakes/common/webhooks.hpp"

namespace segue::fakes::musicapi {

// Every key is also a POST /_control key (same name, same JSON type).
struct settings {
    std::string api_key;          // the only accepted Bearer token ("" accepts any non-empty token)
    std::string base_url;         // prefix of the file URLs handed out ("http://127.0.0.1:PORT")
    std::string shape = "newer";  // task GET body: "newer" | "legacy"
    bool legacy_processing_202 = false;   // legacy shape: HTTP 202 {"code":202,"type":…} while
                                          // PENDING / RUNNING
    std::int64_t running_after_ms = 100;  // creation -> RUNNING
    std::int64_t finish_after_ms = 400;   // creation -> SUCCESS | FAILED (uploads: and the
                                          // download done)
    bool never_finish = false;            // tasks created now stay RUNNING forever
    int clips = 1;                        // clips per extend (1 or 2)
    std::string outcome = "success";      // extends: "success" | "fail" (sticky)
    int fail_next = 0;                    // the next N extends fail (before `outcome`)
    std::string fail_reason = "upstream generation error";
    std::string moderation_marker = "COPYRIGHTED";  // lyrics containing it: 403 ("" off)
    std::int64_t extend_cost = 12;
    std::int64_t upload_cost = 2;
    double upload_max_seconds = 240;  // INFERRED 4-minute limit; longer uploads fail (0: none)
    std::int64_t upload_fetch_timeout_ms = 30000;
    std::string upload_lyrics = "[Verse]\nHumming along to the fake transcription";
    std::string webhook_secret = "musicapi-default-webhook-secret";  // when none in the request
    std::int64_t webhook_delay_ms = 0;       // task finished (and webhook signed) -> webhook sent
    int webhook_attempts = 4;                // per delivery (retries on errors, 5xx, 429)
    std::int64_t webhook_backoff_ms = 200;   // doubling
    int webhook_duplicates = 0;              // every webhook is delivered 1 + N times
    bool webhook_duplicate_same_id = false;  // duplicates reuse X-Webhook-Id (else fresh ids)
    bool webhook_bad_signature = false;      // sign with a wrong secret
    bool webhook_malformed = false;          // cut the body mid-document (signed as sent)
    bool webhook_drop = false;               // logged as dropped, never sent
    std::set<int> silent_outputs;            // these extend clips (1, 2) serve digital silence
    std::set<int> truncated_outputs;         // these extend clips' files stop halfway
    bool files_gone = false;                 // every file URL answers 404 (links expired)
};

// A clip known to the fake without an upload (--clip ID:SECONDS, "add_clips").
struct seed_clip {
    std::string id;
    double duration = 0;
};

// /_control keys that are not settings: "credits" sets the balance now (a ledger "set" entry),
// "add_clips" adds clips ([{"id":"c1","duration":30}] or ["c1:30"]).
struct control_extras {
    std::optional<std::int64_t> credits;
    std::vector<seed_clip> add_clips;
};

// Applies the keys of `o` to a copy of `s` (and `x`); "" and the copies committed, or the reason.
std::string apply_settings(const boost::json::object& o, settings& s, control_extras& x);
boost::json::object settings_json(const settings& s);
// "ID:SECONDS" -> clip; "" or the reason.
std::string parse_seed_clip(const std::string& text, seed_clip& out);

struct audio_asset {
    std::string mp3;
    std::string wav;
    double duration = 0;
};

class fake final : public request_handler {
  public:
    fake(net::io_context& ioc, settings initial, std::int64_t credits, std::vector<seed_clip> seeds,
         std::vector<fault_rule> initial_faults, std::vector<audio_asset> assets);

    // The prefix of the file URLs, once the port is known (also what /_control/reset restores).
    // What the clips in silent_outputs serve.
    void set_silent_asset(audio_asset a) { silent_ = std::move(a); }

    void set_base_url(const std::string& url) {
        initial_.base_url = url;
        s_.base_url = url;
    }

    net::awaitable<fake_reply> handle(fake_request& request) override;
    void replied(const fake_request& request, const fake_reply& reply) override;

  private:
    struct clip {
        std::string id;
        std::string title;
        std::string lyrics;
        std::string tags;
        std::string prompt;  // the extend instruction
        double duration = 0;
        std::string source;   // "seed" | "upload" | "extend"
        std::string task_id;  // the task that made it ("" for seeds)
        int asset = 0;        // generated audio (seeds, extends)
        std::string bytes;    // uploads: the downloaded file, served as is
        std::string format;   // uploads: probed format ("wav", "mp3", …)
        std::int64_t created_unix_ms = 0;
    };
    struct task {
        std::string task_id;
        std::string type;  // "upload" | "extend_music"
        std::int64_t created_steady_ms = 0;
        std::int64_t created_unix_ms = 0;
        std::int64_t running_after_ms = 0;
        std::int64_t finish_after_ms = 0;
        bool never_finish = false;
        bool fails = false;        // extends: decided at creation
        std::string final_status;  // "" while processing, then "SUCCESS" | "FAILED"
        std::string message;       // the FAILED message
        std::int64_t finished_unix_ms = 0;
        std::int64_t cost = 0;
        bool refunded = false;
        std::vector<clip> clips;      // the clips it makes (registered in clips_ on SUCCESS)
        boost::json::object request;  // the JSON body as received
        std::string webhook_url;
        std::string webhook_secret;   // "" -> the setting
        boost::json::object webhook;  // what was sent: id, event, timestamp, signature
        // Uploads.
        std::string audio_url;
        boost::json::object download;  // ok, status, size, sha256, error, format, duration
        bool downloaded = false;       // the download (and probe) is over
        std::string problem;           // why the upload fails ("" if it does not)
        // Extends.
        std::string source_clip;
        double starts_at = 0;
        double length = 0;
    };

    fake_reply upload(const fake_request& req, const parsed_body& body);
    fake_reply create(const fake_request& req, const parsed_body& body);
    fake_reply get_task(const fake_request& req);
    fake_reply credits(const fake_request& req);
    fake_reply file(const fake_request& req);
    std::optional<fake_reply> check_auth(const fake_request& req) const;

    std::string status_of(const task& t) const;
    boost::json::object clip_json(const task& t, const clip& c, const std::string& state) const;
    boost::json::object task_json(const task& t) const;  // GET /_control/tasks
    std::string file_url(const std::string& name) const;
    std::string audio_url_of(const clip& c) const;
    void charge(task& t, std::int64_t amount, const std::string& reason);
    void refund(task& t, const std::string& reason);
    void ledger_add(const std::string& kind, std::int64_t amount, const std::string& task_id,
                    const std::string& task_type, const std::string& reason);
    void start(task t);
    void finish(task& t, bool success, const std::string& message);
    void send_webhook(task& t);
    void restore_startup();
    std::string apply_control(const boost::json::object& o);
    std::optional<fake_reply> control_extra(const fake_request& req);
    static net::awaitable<void> run_task(fake* self, std::string task_id, std::uint64_t generation);

    net::io_context& ioc_;
    settings initial_;
    const std::int64_t initial_credits_;
    const std::vector<seed_clip> seeds_;
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
    std::map<std::string, clip> clips_;
    std::int64_t balance_ = 0;
    boost::json::array ledger_;
    std::int64_t ledger_seq_ = 1;
    std::uint64_t generation_ = 0;
};

}  // namespace segue::fakes::musicapi

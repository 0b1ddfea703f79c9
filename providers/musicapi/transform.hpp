#pragma once
// MusicAPI.ai's producer protocol as pure functions (no I/O, no globals, the clock only as a
// parameter): audio becomes a clip through an asynchronous upload task, the clip is extended
// with `task_type:"extend_music"`, and both tasks are polled (or the extend reports by webhook).
// The provider class does the HTTP and wires these into the engine. Sources:
// shared/seeds/002_* (MusicAPI's producer extend docs) and PROVIDERS.md section 2.
//
// The flow, one attempt:
//   POST <base>/producer/upload {audio_url}          -> parse_upload_response  (phase "upload")
//   GET  <base>/producer/task/{upload task id} ...   -> parse_upload_task      (until ready)
//   POST <base>/producer/create  build_extend(...)   -> parse_create_response  (phase "extend")
//   GET  <base>/producer/task/{extend task id} ...   -> parse_extend_task      (until done)
//   or a webhook on the attempt's callback URL       -> verify_webhook_signature, parse_webhook
// A clip source skips the upload: its clip id goes straight into build_extend.
//
// Persisted attempt state (update::state_json):
//   {"phase":"upload"|"extend","upload_task_id":"…","clip_id":"…","task_id":"…","polls":3,
//    "phase_started_ms":1700000000000,"clip_duration":181.2}
// Empty strings and an absent clip_duration are omitted. The attempt's callback URL is never
// part of it (it holds the webhook token): it comes from task_view::callback_url.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/core/model.hpp"
#include "providers/provider.hpp"

namespace segue::providers::musicapi {

// Paths relative to the configured base URL (e.g. https://api.musicapi.ai/api/v1).
inline constexpr std::string_view upload_path = "/producer/upload";
inline constexpr std::string_view create_path = "/producer/create";
inline constexpr std::string_view task_path_prefix = "/producer/task/";

// "/producer/task/<id>", the id percent-encoded (unreserved characters kept).
std::string task_path(std::string_view task_id);

// MusicAPI takes a bearer token: `Authorization: Bearer <key>`.
inline std::string authorization_value(std::string_view api_key) {
    return "Bearer " + std::string(api_key);
}

// Lower-case header names, as in inbound_webhook::headers (lookups here ignore case anyway).
using header_list = std::vector<std::pair<std::string, std::string>>;

// What update::state_json carries for one attempt (see the top of this file).
struct attempt_state {
    std::string phase;           // "upload" then "extend"; "" before anything was accepted
    std::string upload_task_id;  // the upload task (phase "upload")
    std::string clip_id;         // the clip to extend: from the upload task, or the clip source
    std::string task_id;         // the extend task (phase "extend")
    int polls = 0;               // polls done in the current phase
    std::int64_t phase_started_ms = 0;    // Unix ms when the phase's task was accepted (0: unknown)
    std::optional<double> clip_duration;  // seconds, when the upload task reported it
    std::int64_t started_ms = 0;          // Unix ms of the submission (the overall deadline)
    // Never persisted: state_to_json leaves it out and parse_state ignores it (older states
    // have it), because the URL holds the attempt's secret webhook token, which the store keeps
    // only as a SHA-256. The provider takes the URL from task_view::callback_url when it
    // creates the extend. Deprecated: kept only so that callers still compile.
    std::string callback_url;
};
// "" or unparsable text gives an empty state.
attempt_state parse_state(std::string_view state_json);
std::string state_to_json(const attempt_state& state);

// The upload body: {"audio_url":"…"}. POST it to <base>/producer/upload with
// `Authorization: Bearer <key>` and `Content-Type: application/json`.
std::string build_upload(std::string_view audio_url);

// The extend request to POST to <base>/producer/create.
struct create_request {
    bool ok = false;  // false: cannot be sent (see error); fail the attempt as rejected
    std::string json_body;
    std::vector<std::string> warnings;  // neutral fields MusicAPI has no equivalent for
    std::string error_code;             // !ok: e.g. "missing_clip"
    std::string error;                  // !ok: why
};

// {"task_type":"extend_music","clip_id":…,"starts_at":<extend_after>,"instruction":…,
//  "lyrics":…,"length":…,"webhook_url":…,"webhook_secret":…}. Only the new field names are sent
// (the migration note in the docs prefers them to `starts` / `lyrics_text`). `webhook_url` is
// the gateway's own inbound URL for this attempt, never the tenant's ("" omits it, and then
// `webhook_secret` too). Every neutral field is decided in the table in transform.cpp; those
// MusicAPI cannot honour become warnings.
create_request build_extend(const core::extend_request& request, std::string_view clip_id,
                            std::string_view webhook_url, std::string_view webhook_secret);

// An error, classified. `code` is stable (the table below).
struct error_info {
    core::error_class error = core::error_class::unknown;
    std::string code;
    // The message says the credits for the task were given back (504 "… Credits were
    // previously refunded.").
    bool provider_refunded = false;
};
// HTTP status + the upstream's message ->
//   400                       rejected      upstream_rejected ("task not found." ->
//                                           upstream_task_not_found)
//   401                       credential    upstream_unauthorized
//   402/403/429 + credits     quota         insufficient_credits
//   403 + "subscription"      quota         no_subscription (a billing state, like credits: the
//                                           key is fine, no retry can help, another provider can)
//   403 + moderation words    rejected      upstream_moderation (the lyrics/description)
//   other 403                 rejected      upstream_forbidden
//   404                       rejected      upstream_not_found
//   410                       rejected      unsupported_task_type (removed task types)
//   other 4xx                 rejected      upstream_rejected
//   429                       rate_limited  upstream_rate_limited
//   504 / 408 / "timeout"     transient     upstream_timeout (provider_refunded when the message
//                                           says so: "Credits were previously refunded.")
//   425 / other 5xx           transient     upstream_unavailable (provider_refunded likewise)
//   anything else (0/1xx/3xx) unknown       upstream_unexpected_status
error_info describe_error(int status, std::string_view message);
inline core::error_class classify(int status, std::string_view message) {
    return describe_error(status, message).error;
}

// The human text of an error body: {"code":N,"message":"…"}, {"error":"…"},
// {"type":"…","error":"…"}, {"detail":"…"}; a short prefix of a non-JSON body; "" if nothing.
std::string error_text(std::string_view body);

// Retry-After (delta-seconds or an HTTP-date relative to now_unix_ms; a date without a clock is
// ignored). nullopt if absent or unparsable. Shared with the core: core::parse_retry_after.
std::optional<std::int64_t> retry_after_ms(std::string_view value,
                                           std::optional<std::int64_t> now_unix_ms);

// The upload answer: 200 {"message":"success","task_id":"…"} -> `accepted` (provider_task_id =
// the upload task id, state phase "upload", phase_started_ms = now). If the answer already names
// the clip (a synchronous upload), state.clip_id is set and no upload poll is needed. Otherwise
// `failed` as describe_error says, with retry_after_ms from Retry-After; a 2xx without task_id
// is `failed`, transient, malformed_response.
// A 2xx whose body carries an error "code" >= 400 is read as that status (these vendors put the
// status in the body too).
update parse_upload_response(int status, std::string_view body, const header_list& headers,
                             std::optional<std::int64_t> now_unix_ms = {});

// The extend submit answer, with the state the upload phase left (clip_id etc. are kept):
// 200 {"message":"success","task_id"} -> `accepted` (provider_task_id = the extend task id,
// state phase "extend", task_id set, polls 0, phase_started_ms = now). Failures as for the
// upload; a 2xx without task_id is transient malformed_response (the task MAY exist upstream:
// reconcile before resubmitting).
update parse_create_response(const std::string& state_json, int status, std::string_view body,
                             const header_list& headers,
                             std::optional<std::int64_t> now_unix_ms = {});

// One poll of the upload task (GET /producer/task/{upload task id}).
struct upload_poll {
    enum class kind {
        running,  // poll again (also after a transient poll error: error_code says which)
        ready,    // clip_id (and perhaps duration) known: build_extend next
        failed,   // the upload failed: return `failure` as the attempt's update
    };
    kind what = kind::running;
    std::string clip_id;
    std::optional<double> duration;  // seconds
    // failed: a `failed` update (class, code, message, provider_refunded, retry_after_ms).
    // running after a poll error: a `running` update with error/error_code/error_message and
    // retry_after_ms / poll_after_ms, ready to return as is. Otherwise default. Its
    // provider_task_id is left empty: the caller knows the task.
    update failure;
    std::optional<std::int64_t> retry_after_ms;
    std::string error_code;  // "" on a clean poll
};
//   status PENDING / RUNNING, legacy data[0].state pending / running / streaming, or the legacy
//   HTTP 202 {"code":202,"type":"processing",…}                       running
//   SUCCESS or legacy data[0].state succeeded       ready: data[0].clip_id (or data[0].id),
//                                                   duration (number or numeric string)
//   SUCCESS without a clip id                       failed, unknown, malformed_response
//   FAILED / legacy state failed                    failed, rejected, upstream_upload_failed
//                                                   (provider_refunded when the message says so)
//   anything else                                   failed, unknown, unknown_upstream_status
// HTTP failures of the poll itself: 429 / 408 / 425 / 5xx / an unparsable 2xx -> running with
// error_code poll_rate_limited / poll_unavailable / malformed_poll_response (keep polling),
// except a 5xx that says the task failed (504 "Task failed due to timeout…"): failed, transient,
// upstream_timeout. 400 "task not found." and 404 -> failed, rejected, upstream_task_not_found;
// 401 / 403 / others -> failed as describe_error says.
upload_poll parse_upload_task(int status, std::string_view body, const header_list& headers = {},
                              std::optional<std::int64_t> now_unix_ms = {});

// One poll of the extend task (GET /producer/task/{extend task id}), both shapes:
//   newer  {"code":200,"status":"PENDING|RUNNING|SUCCESS|FAILED","message","data":[clip…]}
//   legacy {"code":200,"message","data":[{clip_id,…,"state":"pending|running|succeeded|failed"}]}
//          (no top-level status: derived from the clips), and the HTTP 202 processing body.
//   PENDING / RUNNING (legacy: any clip pending, running or streaming)    running
//   SUCCESS (legacy: every clip final, at least one succeeded)            done, one output per
//       clip in order (index 1..N): ready with mp3_url = audio_url, wav_url, duration, title,
//       lyrics, cover_url = its own image_url; a clip without audio_url, or failed, is a failed
//       output. update::cover_url (the task's) = the first non-empty image_url. method =
//       "musicapi producer extend_music".
//   FAILED (legacy: every clip failed)  failed, rejected, upstream_failed, error_message = the
//       upstream message, provider_refunded = true (MusicAPI documents that a failed extend is
//       refunded automatically; the message only says whether it has happened yet).
//   anything else   failed, unknown, unknown_upstream_status (never read as running).
// HTTP failures of the poll itself as for parse_upload_task, as `running` with error set (keep
// polling) or `failed`. A `running` update carries state_json with polls + 1.
update parse_extend_task(const std::string& state_json, int status, std::string_view body,
                         const header_list& headers = {},
                         std::optional<std::int64_t> now_unix_ms = {});

// Checks an inbound webhook's signature (docs.musicapi.ai/webhook-guide):
//   X-Webhook-Signature: sha256=<hex>  ==  hex(HMAC_SHA256(secret, X-Webhook-Timestamp + "." +
//   raw body)), compared in constant time, and the timestamp (Unix seconds) within
//   `tolerance_s` of `now_unix_s` either way (a replayed delivery is refused).
// False with `error` set when the secret is empty, a header is missing or malformed, the
// timestamp is stale or the signature differs. (The older sunoapi.com `X-Signature` scheme,
// HMAC over the body alone, is not accepted.)
bool verify_webhook_signature(std::string_view secret, const header_list& headers,
                              std::string_view raw_body, std::int64_t now_unix_s,
                              std::int64_t tolerance_s, std::string& error);
// hex(HMAC_SHA256(secret, timestamp + "." + raw body)): the <hex> of "sha256=<hex>", checked
// above and sent by the drop-in API's webhooks (compat/).
std::string signature_hex(std::string_view secret, std::string_view timestamp,
                          std::string_view raw_body);

// MusicAPI's spellings, shared by the provider (reading them) and its drop-in API (compat/,
// writing them).
namespace spelling {
inline constexpr std::string_view task_extend = "extend_music";
// Task statuses (the newer shape) and clip states (the legacy shape, and webhooks).
inline constexpr std::string_view status_pending = "PENDING";
inline constexpr std::string_view status_running = "RUNNING";
inline constexpr std::string_view status_success = "SUCCESS";
inline constexpr std::string_view status_failed = "FAILED";
inline constexpr std::string_view state_pending = "pending";
inline constexpr std::string_view state_running = "running";
inline constexpr std::string_view state_succeeded = "succeeded";
inline constexpr std::string_view state_failed = "failed";
inline constexpr std::string_view event_completed = "song.completed";
inline constexpr std::string_view event_failed = "song.failed";
}  // namespace spelling

// One inbound webhook {"code":200,"task_id"?,"message"?,"data":[{clip_id,state,title,tags,
// lyrics,image_url,audio_url,wav_url?,video_url,created_at,duration:"104.88",mv}]} -> an update
// with webhook_kind set from the content:
//   every clip succeeded (or some failed)   done, outputs as in parse_extend_task
//                                           ("song.completed")
//   every clip failed (or an error code and no clips)  failed as FAILED above ("song.failed")
//   a clip still pending / running / streaming         running, nothing recorded
//                                                      ("song.streaming")
// nullopt with `error` for a malformed payload, a task_id other than the state's extend task
// (foreign), or an unknown clip state.
std::optional<update> parse_webhook(const std::string& state_json, std::string_view body,
                                    std::string& error);

// A duration: a non-negative finite number, or a string holding one ("104.88"). nullopt
// otherwise (negative, NaN, infinite, empty, "abc").
std::optional<double> parse_duration(std::string_view json_value);

}  // namespace segue::providers::musicapi

#pragma once
// MusicGPT's wire protocol as pure functions (no I/O, no clock unless asked, no globals): build
// the extend submit, and turn submit responses, the five kinds of webhooks and `byId` poll results
// into normalized provider updates. The provider class does the HTTP and wires these into the
// engine. Sources: shared/seeds/000_*, 001_* (MusicGPT's extend docs) and PROVIDERS.md section 1.
//
// Persisted attempt state (update::state_json, written on `accepted`):
//   {"task_id":"…","conversion_id_1":"…","conversion_id_2":"…","eta":38,"credit_estimate":42}
// conversion_id_2 is absent for one output; eta / credit_estimate only when MusicGPT sent them.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <utility>
#include <vector>

#include "gateway/core/model.hpp"
#include "providers/provider.hpp"

namespace segue::providers::musicgpt {

// Paths relative to the configured base URL (e.g. https://api.musicgpt.com/api/public).
inline constexpr std::string_view extend_path = "/v1/extend";
inline constexpr std::string_view by_id_path = "/v1/byId";

// MusicGPT's spellings, shared by the provider (reading them) and its drop-in API (compat/,
// writing them).
namespace spelling {
inline constexpr std::string_view conversion_type_extend = "Extend";  // webhooks
inline constexpr std::string_view by_id_type_extend = "EXTEND";       // byId conversionType
inline constexpr std::string_view subtype_lyrics = "lyrics_timestamped";
inline constexpr std::string_view subtype_cover = "album_cover_generation";
// byId statuses (the documented four, and the older rendering's PROCESSING).
inline constexpr std::string_view status_in_queue = "IN_QUEUE";
inline constexpr std::string_view status_processing = "PROCESSING";
inline constexpr std::string_view status_completed = "COMPLETED";
inline constexpr std::string_view status_failed = "FAILED";
inline constexpr std::string_view status_error = "ERROR";
// A task-level field of output `index` (1-based): "conversion_path_2".
inline std::string numbered(std::string_view field, int index) {
    return std::string(field) + "_" + std::to_string(index);
}
}  // namespace spelling

// Lower-case header names, as in inbound_webhook::headers (lookups here ignore case anyway).
using header_list = std::vector<std::pair<std::string, std::string>>;

// MusicGPT takes the key raw: `Authorization: <key>`, never "Bearer <key>".
inline std::string authorization_value(std::string_view api_key) {
    return std::string(api_key);
}

struct form_field {
    std::string name;
    std::string value;
};

// The extend request to send. POST it to <base>/v1/extend with `Authorization: <key>` and
// `Accept: application/json`.
struct submit_request {
    enum class body_kind {
        json,       // URL source: send json_body as application/json
        multipart,  // file source: send `fields` as text parts, in order, then the file part
        none,       // cannot be sent (see error): fail the attempt as rejected, no retry
    };
    body_kind kind = body_kind::none;
    std::string json_body;
    std::vector<form_field> fields;
    std::string file_field;             // "audio_file"
    std::string file_name;              // filename="…" of the file part
    std::string file_content_type;      // Content-Type of the file part
    std::vector<std::string> warnings;  // neutral fields MusicGPT has no equivalent for
    std::string error_code;             // kind == none: e.g. "unsupported_source"
    std::string error;                  // kind == none: why
};

// Maps every field of the neutral request: audio_url (JSON) or audio_file (multipart),
// extend_after, prompt, lyrics, lyrics_section_to_extend, gender, num_outputs, and
// `webhook_url` (the gateway's own inbound URL for this attempt, never the tenant's; "" omits
// it). Absent optionals are omitted. A clip source cannot be sent (kind none); `length` has no
// MusicGPT equivalent and becomes a warning.
submit_request build_submit(const core::extend_request& request, const std::string& webhook_url);

// The attempt state as persisted in update::state_json (see the top of this file).
struct attempt_state {
    std::string task_id;
    std::vector<std::string> conversion_ids;  // [0] is conversion_id_1, [1] conversion_id_2
    std::optional<double> eta_seconds;
    std::optional<double> credit_estimate;
    // A conversion of the attempt that a callback named while the attempt knew no task (its
    // submit's answer lost): byId finds the task by it ("" if none).
    std::string lookup_conversion_id;
};
// "" or unparsable text gives an empty state.
attempt_state parse_state(std::string_view state_json);
std::string state_to_json(const attempt_state& state);
// 1-based output index of a conversion id in the state, 0 if unknown.
int output_index(const attempt_state& state, std::string_view conversion_id);

// The `byId` request target for polling: "/v1/byId?conversionType=EXTEND&task_id=…" (relative to
// the base URL; the query value is percent-encoded). Exactly one of task_id / conversion_id.
std::string by_id_target(std::string_view task_id);
std::string by_id_target_for_conversion(std::string_view conversion_id);

// HTTP status -> error class: 2xx none; 401/403 credential; 402 quota; 429 rate_limited;
// 408/425/5xx transient; other 4xx rejected; anything else (0, 1xx, 3xx) unknown.
core::error_class classify_http(int status);

// Retry-After: delta-seconds (integer or decimal) or an HTTP-date (relative to now_unix_ms, or
// the system clock when not given). nullopt if absent or unparsable. Never negative.
std::optional<std::int64_t> retry_after_ms(std::string_view value,
                                           std::optional<std::int64_t> now_unix_ms = {});

// The human text of an error body: FastAPI `detail` (string, or a list rendered as
// "body.extend_after: field required; …"), `message`, `error`, `status_msg` or `reason`.
// Falls back to a short prefix of a non-JSON body. "" if nothing useful.
std::string error_text(std::string_view body);

// The submit answer -> `accepted` (provider_task_id = task_id, state_json as above,
// poll_after_ms = eta) or `failed` with a class and a stable error_code:
//   402 or "INSUFFICIENT FUNDS"  quota         insufficient_funds
//   401 / 403                    credential    upstream_unauthorized / upstream_forbidden
//   400 / 404 / 422 / other 4xx  rejected      upstream_rejected (error_message: the detail text)
//   429                          rate_limited  upstream_rate_limited, retry_after_ms from the
//                                              body's `retry_after` (seconds) or Retry-After
//   5xx / 408                    transient     upstream_unavailable
//   200 success:false            rejected      upstream_refused (unknown if no message at all)
//   2xx unparsable / no task_id  transient     malformed_response (the task MAY exist upstream:
//                                              reconcile before resubmitting)
update parse_submit_response(int status, std::string_view body, const header_list& headers,
                             std::optional<std::int64_t> now_unix_ms = {});

// One inbound webhook -> a `progress` update (provider_task_id from the state), or nullopt with
// `error` set for a malformed, foreign or unmatchable payload. The kinds:
//   audio   {success, conversion_type:"Extend", task_id, conversion_id, conversion_path, …}
//           -> the output whose conversion_id matches: ready (mp3_url, wav_url, duration, title,
//              lyrics, flagged/flag_reason) or failed (success:false or status FAILED/ERROR).
//   lyrics  {subtype:"lyrics_timestamped", conversion_id, lyrics_timestamped:"[…]" (a JSON
//           string, ms)} -> that output, still pending, with only lyrics_timestamped set.
//   cover   {subtype:"album_cover_generation", success, task_id, image_path, conversion_id_1/_2}
//           -> cover_url (a success:false cover is a warning, not a failure).
//   the docs' generic sample {task_id, status, audio_url, …} -> like audio when it names a
//           conversion_id or the task has one output.
// Duplicates are not filtered here: the engine only moves an output out of pending once.
// `too_early` (if given) is set when the payload names a conversion while the attempt knows
// none yet (the submit's answer is not recorded): the same payload applies once it is. Then
// `upstream_task_id` (if given) is the MusicGPT task the payload names, if any, and `state_with`
// (if given) the attempt's state with the conversion it names to look the task up by.
std::optional<update> parse_webhook(const std::string& state_json, std::string_view body,
                                    std::string& error, bool* too_early = nullptr,
                                    std::string* upstream_task_id = nullptr,
                                    std::string* state_with = nullptr);

// A `byId` answer (the task-level numbered shape, or the documented single-conversion shape):
//   IN_QUEUE / PENDING / PROCESSING (and QUEUED)  running
//   COMPLETED                  done, one output per conversion (matched by conversion_id_N
//                              against the state; an output without audio is failed)
//   FAILED                     failed, rejected, upstream_failed, message = status_msg
//   ERROR                      failed, unknown, upstream_error, message = status_msg
//   anything else              failed, unknown, unknown_upstream_status (never read as queued)
// HTTP failures of the poll itself: 429 / 5xx / 408 / an unparsable 2xx body give `running` with
// error, error_code ("poll_rate_limited", "poll_unavailable", "malformed_poll_response") and
// poll_after_ms / retry_after_ms set: keep polling and count it. 401/403, 402, 404 and other
// 4xx give `failed` (credential, quota, rejected "upstream_task_not_found", rejected).
update parse_by_id(const std::string& state_json, int status, std::string_view body,
                   const header_list& headers = {}, std::optional<std::int64_t> now_unix_ms = {});

// MusicGPT's timestamped lyrics ("[{\"index\":0,\"text\":…,\"start\":8173,\"end\":9000},…]",
// or the array itself) -> lines in milliseconds. nullopt if malformed.
std::optional<std::vector<core::lyric_line>> parse_lyrics_timestamped(std::string_view json_text);

}  // namespace segue::providers::musicgpt

#pragma once
// MusicGPT's own API, served by Segue: a client written against MusicGPT changes only its base
// URL (…/api/public) and its key (a Segue API key, raw in Authorization as MusicGPT takes it, or
// as Bearer). Behind it is Segue's create (routing, failover, ledger, idempotency, the
// outbox), so a task asked for in MusicGPT's shape may be served by any provider.
//
//   POST /api/public/v1/extend   multipart (audio_file), form-encoded or JSON: MusicGPT's fields
//                                (audio_url, extend_after, prompt, lyrics,
//                                lyrics_section_to_extend, gender, num_outputs, webhook_url;
//                                others MusicGPT takes, e.g. title, are accepted and unused)
//                                -> {success, message, task_id, conversion_id_1[, _2], eta,
//                                    credit_estimate, provider}
//   GET  /api/public/v1/byId     ?conversionType=EXTEND&task_id=… | conversion_id=… (one of)
//                                -> {success, conversion:{task_id, conversion_id_1/_2, status
//                                   IN_QUEUE|PROCESSING|COMPLETED|FAILED, status_msg, numbered
//                                   _1/_2 fields (status_N, status_msg_N too), album_cover_path,
//                                   conversion_cost, …}}; by conversion_id, status and
//                                   status_msg are that conversion's (FAILED when it failed)
//   webhooks (delivery format "musicgpt") to the request's webhook_url, one per MusicGPT
//   callback kind: audio per conversion (success true or false), timestamped lyrics per
//   conversion, the album cover once; also signed with the Standard Webhooks headers.
//
// Ids: task_id is the Segue task id (GET /v1/extensions/{task_id} works too); conversion_id_N
// is "<task id>-N". Errors come in MusicGPT's shapes: 422 {"detail":[{"loc","msg","type"}]} for
// fields, {"success":false,"message"} otherwise (402 "INSUFFICIENT FUNDS").

#include <optional>
#include <string>

#include "gateway/api/compat.hpp"
#include "gateway/api/create_pipeline.hpp"
#include "gateway/events/webhook_format.hpp"

namespace segue::providers::musicgpt::compat {

inline constexpr std::string_view format_name = "musicgpt";

// Installs the routes and the delivery format (the descriptor's `compat`).
void install(api::compat_host& host);

// --- the pure parts, for tests ---

// MusicGPT's fields -> the neutral ones, in place: what MusicGPT has and Segue too is kept,
// what MusicGPT accepts and Segue has no use for is dropped, anything else is dropped as
// MusicGPT (FastAPI) ignores it.
void translate_fields(api::create::submission& s);

// The answer to a refused create, in MusicGPT's shapes.
struct error_answer {
    int status = 400;
    std::string body;
};
error_answer error_of(const api::create::refusal& r);

// The byId status of a Segue task status.
std::string_view status_of(std::string_view task_status);

// The byId document; `conversion` (1-based) adds the singular fields of that conversion, and
// its own status (FAILED, with why, when it failed or was not made).
std::string by_id_document(const api::task_snapshot& t, const config::settings& settings,
                           std::optional<int> conversion);

// The webhook body of one delivery, or nullopt when MusicGPT has no callback for the event.
std::optional<events::formatted> format_webhook(const events::format_input& in,
                                                const config::settings& settings);

}  // namespace segue::providers::musicgpt::compat

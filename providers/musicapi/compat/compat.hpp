#pragma once
// MusicAPI.ai's producer API, served by Segue: a client written against MusicAPI changes only
// its base URL (…/api/v1) and its key (a Segue API key, as Bearer). Behind it is Segue's
// create (routing, failover, ledger, idempotency, the outbox), so a task asked for in
// MusicAPI's shape may be served by any provider.
//
//   POST /api/v1/producer/upload   {"audio_url"} -> {"message":"success","task_id"}; the task
//                                  (GET below) is SUCCESS at once with the clip: an id that
//                                  stands for that URL (signed, bound to the tenant), so nothing
//                                  is stored until a create uses it
//   POST /api/v1/producer/create   {"task_type":"extend_music","clip_id","starts_at" (legacy
//                                  "starts"),"instruction","length","lyrics" (legacy
//                                  "lyrics_text"),"webhook_url","webhook_secret"}
//                                  -> {"message":"success","task_id"}
//   GET  /api/v1/producer/task/{id} one document readable as both of MusicAPI's task shapes:
//                                  {"code":200,"status":PENDING|RUNNING|SUCCESS|FAILED,"message",
//                                   "data":[{clip_id,state pending|running|succeeded|failed,
//                                   title,lyrics,image_url,audio_url,wav_url,duration,…}]}
//   webhooks (delivery format "musicapi") to webhook_url when the task ends: {"code":200,
//   "task_id","data":[clips, duration as a string]} with X-Webhook-Id, Idempotency-Key,
//   X-Webhook-Event (song.completed / song.failed), X-Webhook-Timestamp and, with a
//   webhook_secret, X-Webhook-Signature: sha256=<hex HMAC(secret, ts.body)>; also the Standard
//   Webhooks headers.
//
// Ids: task_id is the Segue task id. A clip id is, in order of lookup: an upload's id (an
// "upl_" id that does not verify is refused, 400 "clip not found."); "<task id>-N", output N
// of a Segue task (the clip id of outputs not made by MusicAPI); or MusicAPI's own clip id,
// extended at MusicAPI (outputs MusicAPI made carry theirs, so the same id is a
// neutral `{"clip":{"provider":"musicapi","id":…}}` source). Errors come in MusicAPI's shape
// {"code","message"} (400 for fields and unknown tasks, 401, 403 for credits, 410 for the
// removed task types).

#include <optional>
#include <string>

#include "gateway/api/compat.hpp"
#include "gateway/api/create_pipeline.hpp"
#include "gateway/events/webhook_format.hpp"

namespace segue::providers::musicapi::compat {

inline constexpr std::string_view format_name = "musicapi";

// Installs the routes and the delivery format (the descriptor's `compat`).
void install(api::compat_host& host);

// --- the pure parts, for tests ---

struct error_answer {
    int status = 400;
    std::string body;
};
// A refused create in MusicAPI's shape.
error_answer error_of(const api::create::refusal& r);

// The upload id of `url` for `tenant` ("upl_<base64url of the URL sealed with AES-256-GCM>"),
// and back (the URL, or nullopt for anything not made by upload_id under that key for that
// tenant; ids of the earlier form "upl_<base64url of the URL>.<signature>" are still read).
std::string upload_id(std::string_view key, std::string_view tenant, std::string_view url);
std::optional<std::string> upload_url(std::string_view key, std::string_view tenant,
                                      std::string_view id);

// The task document (see the top); `clip_ids` as the clips are named.
std::string task_document(const api::task_snapshot& t, const config::settings& settings);

// The webhook of one delivery, or nullopt when MusicAPI has no callback for the event.
std::optional<events::formatted> format_webhook(const events::format_input& in,
                                                const config::settings& settings);

}  // namespace segue::providers::musicapi::compat

#pragma once
// The provider interface. A provider is mostly transformation: it turns a neutral request into
// its upstream calls and the upstream's answers (submit responses, poll results, webhooks) into
// normalized updates. The core owns the store, retries, timeouts, metrics and events; providers
// never read the environment or globals, only the settings and services they are given.

#include <boost/asio/awaitable.hpp>

#include <chrono>
#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/core/model.hpp"

namespace segue::runtime {
class blocking_pool;
}
namespace segue::net {
class http_client;
struct url_policy;
}  // namespace segue::net

namespace segue::providers {

// What a provider can do; routing skips providers that lack what a request needs.
struct capabilities {
    bool source_file = false;
    bool source_url = false;
    bool source_clip = false;
    bool length = false;  // honours a requested length of new audio
    int max_outputs = 1;
    // The provider decides how many outputs it makes (up to max_outputs), not the request:
    // when a request did not name num_outputs, the outputs it did not make are dropped from the
    // task (not failed), and their share of the hold goes back.
    bool output_count_varies = false;
    bool webhooks = false;  // results arrive by webhook
    bool polling = false;   // results can be polled
    // Lyrics and the cover arrive on their own, after the audio (MusicGPT's webhooks): a task
    // is finished by a progress update only once every ready output has them; otherwise a
    // poll that reports `done` settles it.
    bool separate_artifacts = false;
    // How long an ambiguous submit (a timeout or reset after sending, a crash mid-submit) is
    // given to show up (its callback, an upstream id) before the core treats it as never
    // received and submits again.
    std::int64_t reconcile_window_ms = 0;
    // A file source reaches it as a signed link of the gateway, which it fetches (MusicAPI): it
    // takes file sources only when api.public_base_url is set, and routing skips it otherwise.
    bool file_by_public_url = false;
};

// One attempt of one task, as the provider sees it.
struct task_view {
    std::string task_id;
    std::string tenant;
    int attempt = 1;
    core::extend_request request;
    std::string input_path;        // file source: absolute path of the spooled upload
    std::string provider_task_id;  // after acceptance
    std::string callback_token;    // submit only: this attempt's secret webhook token
    std::string callback_url;      // submit only: absolute URL for webhooks ("" if not reachable)
    // What the provider last asked to persist ("" at first). At a submit that follows a
    // `prepared` attempt at the same provider: that attempt's state.
    std::string state_json;
};

// A file the provider produced locally; the core registers it and serves it.
struct local_file {
    std::string path;  // absolute
    std::string content_type;
};

struct output_update {
    int index = 1;
    core::output_status status = core::output_status::pending;
    // The provider's own id of this output (MusicAPI's clip id), "" if it has none: kept with
    // the output, so a client can extend it again at that provider (a `clip` source).
    std::string provider_output_id;
    std::optional<local_file> mp3, wav;  // produced locally (sandbox)
    std::string mp3_url, wav_url;        // remote (real providers)
    std::optional<double> duration;
    std::optional<std::string> title;
    std::optional<std::string> lyrics;
    std::optional<std::vector<core::lyric_line>> lyrics_timestamped;
    bool flagged = false;
    std::string flag_reason;
    std::string cover_url;  // this output's own cover, "" if the task's applies
    std::string error;      // failed outputs
    // Set by the core, not by providers: the `verification` object (JSON) of local files.
    std::string verification_json;
};

// A normalized result of submit, poll or an inbound webhook.
struct update {
    enum class kind {
        accepted,  // the provider took the task (provider_task_id set)
        running,   // still working; poll again after poll_after
        progress,  // some outputs or artifacts are ready, more to come
        done,      // every output has reached a final state
        failed,    // the task failed as a whole (error_* set)
        // A preparation step finished (MusicAPI: the upload became a clip) and the next
        // upstream call is a new non-idempotent request (the extend create). The core closes
        // this attempt as "prepared" (state_json kept) and runs that call as a submit of a new
        // attempt: its intent recorded first, its failures retried and failed over like any
        // submit's. The new attempt's task_view::state_json is this state.
        prepared,
    };
    kind what = kind::running;
    std::string provider_task_id;
    std::optional<std::int64_t> poll_after_ms;  // ask the core to poll again after this delay
    std::string state_json;                     // persisted with the attempt if non-empty
    // Set by the core, not by providers: state_json is persisted only if the attempt's state is
    // still this (a state derived from an older read of the attempt).
    std::optional<std::string> state_if;
    std::vector<output_update> outputs;
    std::optional<local_file> cover_file;
    std::string cover_url;
    std::vector<std::string> warnings;  // e.g. neutral fields with no upstream equivalent
    std::string method;                 // how the result was produced (shown in the task)
    core::error_class error = core::error_class::none;
    std::string error_code;     // stable, e.g. "upstream_rejected"
    std::string error_message;  // human readable
    std::optional<std::int64_t> retry_after_ms;
    // failed: the provider says it refunded its own credits for this task (MusicAPI does on
    // FAILED and 504); recorded with the task's error.
    bool provider_refunded = false;
    // failed: the request may have reached the provider (a timeout or reset after it was sent,
    // or an unreadable 2xx). The core reconciles (waits for the attempt's callback, asks the
    // provider) before it ever submits again.
    bool ambiguous = false;
    // failed: the request's own source (its audio_url) could not be fetched. That says nothing
    // about the provider's health: its circuit breaker does not count it.
    bool source_failure = false;
    std::string webhook_kind;  // inbound webhooks: what it carried ("audio", "lyrics", ...)
};

// A webhook a provider sent us (on /v1/providers/{name}/webhooks/{token}); the core has
// already matched the token to the attempt.
struct inbound_webhook {
    std::string body;
    std::vector<std::pair<std::string, std::string>> headers;  // lower-case names
};

// Why a provider refused an inbound webhook (provider::on_webhook).
struct webhook_refusal {
    std::string message;
    // The payload belongs to the attempt but names what the attempt does not know yet: a
    // callback that overtook the submit's answer (the provider called back before its HTTP
    // answer was read and recorded). The core reads the attempt again for a moment before it
    // refuses the payload.
    bool too_early = false;
    // The upstream task a too-early payload names, if it names one. A callback is the
    // provider's word that the attempt exists upstream: should the attempt still know no
    // upstream task once the wait is over (its submit's answer was lost: a timeout or a reset
    // after sending), the core records this one, so the attempt is followed (polled) and never
    // submitted again, even though the payload itself is refused.
    std::string upstream_task_id;
    // The attempt's state with what a too-early payload names that the provider can look the
    // attempt up by (MusicGPT: a conversion, for byId), "" if nothing: recorded with the sign of
    // life, unless the attempt's state changed meanwhile (update::state_if).
    std::string state_json;
};

// What the core lends a provider.
struct services {
    runtime::blocking_pool& blocking;
    std::string work_dir;               // where a provider may write files for this attempt
    net::http_client* http = nullptr;   // the upstream client (owned by the core)
    net::http_client* fetch = nullptr;  // for user-given URLs: public addresses only
    std::uint64_t max_fetch_bytes = 0;
    // The URL guard's policy, to re-check redirects hop by hop (net::download_following).
    std::shared_ptr<const net::url_policy> url_policy;
    // An absolute, expiring, signed URL of one of the task's files (the spooled upload) that a
    // provider may fetch without credentials; empty when the gateway has no public_base_url.
    std::function<std::string(const std::string& file_id, std::chrono::seconds ttl)>
        signed_file_url;
};

class provider {
  public:
    virtual ~provider() = default;
    virtual std::string_view name() const = 0;
    virtual const capabilities& caps() const = 0;
    // Starts the task upstream. Returns accepted (or done/failed for synchronous providers).
    virtual boost::asio::awaitable<update> submit(const task_view& task, services& svc) = 0;
    // Asks for the task's state; only called for providers that asked for polling.
    virtual boost::asio::awaitable<update> poll(const task_view& task, services& svc) = 0;
    // Best effort; the core has already marked the task canceled.
    virtual boost::asio::awaitable<void> cancel(const task_view& task, services& svc);
    // Turns an inbound webhook into an update (usually `progress` with what it carries). A
    // malformed or unexpected payload returns nullopt and says why in `refused`; the core counts
    // it and answers the sender 400 (when `refused.too_early`, only if the attempt still does
    // not know what it names after engine::early_webhook_wait). Pure transformation: no I/O.
    virtual std::optional<update> on_webhook(const task_view& task, const inbound_webhook& hook,
                                             webhook_refusal& refused) const;
};

}  // namespace segue::providers

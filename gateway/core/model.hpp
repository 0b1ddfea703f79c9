#pragma once
// The provider-neutral domain: a task (one extend request), its outputs, attempts and events.
// Everything past providers/ speaks only these types.

#include <cstdint>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace segue::core {

enum class task_status {
    queued,
    submitted,
    running,
    succeeded,
    partially_succeeded,
    failed,
    canceled
};
enum class output_status { pending, ready, failed, canceled };
enum class source_kind { file, url, clip };

std::string_view to_string(task_status s) noexcept;
std::optional<task_status> parse_task_status(std::string_view s) noexcept;
std::string_view to_string(output_status s) noexcept;
std::optional<output_status> parse_output_status(std::string_view s) noexcept;
std::string_view to_string(source_kind s) noexcept;
std::optional<source_kind> parse_source_kind(std::string_view s) noexcept;
bool is_terminal(task_status s) noexcept;

// Normalized error classes (ARCHITECTURE.md): they drive retries and failover.
enum class error_class { none, transient, rate_limited, quota, credential, rejected, unknown };
std::string_view to_string(error_class c) noexcept;
std::optional<error_class> parse_error_class(std::string_view s) noexcept;

// Event types, the one vocabulary of the webhook, SSE and the log.
namespace event_type {
inline constexpr std::string_view queued = "extension.queued";
inline constexpr std::string_view submitted = "extension.submitted";
inline constexpr std::string_view retrying = "extension.retrying";
inline constexpr std::string_view output_ready = "extension.output.ready";
inline constexpr std::string_view output_failed = "extension.output.failed";
inline constexpr std::string_view lyrics_ready = "extension.lyrics.ready";
inline constexpr std::string_view cover_ready = "extension.cover.ready";
inline constexpr std::string_view succeeded = "extension.succeeded";
// The last event of a task that ended with some outputs ready and some not.
inline constexpr std::string_view partially_succeeded = "extension.partially_succeeded";
inline constexpr std::string_view failed = "extension.failed";
inline constexpr std::string_view canceled = "extension.canceled";
inline constexpr std::string_view credits_refunded = "extension.credits.refunded";
}  // namespace event_type

struct lyric_line {
    std::string text;
    std::int64_t start_ms = 0;
    std::int64_t end_ms = 0;
};

// The validated, normalized extend request as stored with the task (JSON in the store).
struct extend_request {
    source_kind source = source_kind::file;
    std::string audio_file_id;   // file source: blob id of the spooled upload
    std::string audio_filename;  // as uploaded (informational)
    std::string audio_url;       // url source
    std::string clip_provider;   // clip source
    std::string clip_id;
    double extend_after = 0;
    std::optional<std::string> prompt;
    std::optional<std::string> lyrics;
    std::optional<std::string> lyrics_section_to_extend;
    std::optional<std::string> gender;  // male | female | neutral
    int num_outputs = 2;
    // The client sent num_outputs (else 2 is the default): a provider that cannot honour the
    // count warns only about a count that was asked for. Absent in requests stored before this
    // field existed, which read as not sent.
    bool num_outputs_given = false;
    std::optional<double> length;
    std::optional<std::string> webhook_url;
    std::optional<std::string> provider;
    std::optional<std::string> route;
    std::string metadata_json;  // object, "" if none
    // The shape of the webhook deliveries: "" is Segue's own event body; another name is a
    // delivery format registered by a drop-in API (events/webhook_format.hpp), which may also
    // sign with `webhook_format_secret` (the caller's own secret for that shape; never shown).
    std::string webhook_format;
    std::string webhook_format_secret;
    // From probing a file source.
    double source_duration = 0;
    int source_sample_rate = 0;
    int source_channels = 0;
    // Routing, decided at submit: the providers to try, in order (failover), and whether a task
    // that failed after acceptance may be generated again at the next one.
    std::vector<std::string> route_chain;
    bool route_regenerate = false;
    std::int64_t hold_milli = 0;  // credits held at submit (ledger), in milli-credits
};

}  // namespace segue::core

#pragma once
// POST /v1/extensions as a pipeline of named steps, each testable alone. The handler
// (extensions.cpp) runs them in this order and answers the first refusal:
//
//   read      read_idempotency_key   the Idempotency-Key header, checked
//             read_submission        the form (file spooled to disk) or the JSON body -> submission
//   validate  validate_submission    fields -> the neutral request, its route planned (pure)
//             guard_urls             audio_url and webhook_url through the URL guard (bounded DNS)
//             require_webhook_secret a webhook_url needs a signing secret for the tenant (pure)
//             invalid_fields         the 422 naming every invalid field (pure)
//   prepare   probe_upload           decode the spooled upload's header (blocking pool)
//             accept_probe           the probe into the request: decodable, extend_after within
//             store_upload           the spool into the blob store (blocking pool), before the
//                                    task that points at it exists
//   admit     plan_admission         the task row, outputs, 202 body, request hash, hold (pure)
//             judge_idempotency      a prior key: replay, conflict or expired (pure)
//             admit                  idempotency, balance, hold, task, file: one transaction
//             refused_admission      the 402 / 409 an admission can end in (pure)
//             discard_upload         a stored upload no task points at (a refusal, a replay)
//
// Beast stays out of here (http::context is the handlers' interface); only Asio's awaitable.

#include <boost/asio/awaitable.hpp>
#include <boost/json/object.hpp>

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <string_view>
#include <variant>
#include <vector>

#include "gateway/api/problem.hpp"
#include "gateway/audio/audio.hpp"
#include "gateway/core/engine.hpp"
#include "gateway/core/model.hpp"
#include "gateway/core/routing.hpp"
#include "gateway/store/store.hpp"

namespace segue::config {
struct settings;
}
namespace segue::http {
class context;
}
namespace segue::metrics {
class counter;
class gauge;
}  // namespace segue::metrics
namespace segue::net {
struct url_policy;
}
namespace segue::runtime {
class blocking_pool;
}
namespace segue::store {
class blob_store;
}

namespace segue::api::create {

// A step's "no": the problem to answer and the reason counted in segue_api_rejected_total.
struct refusal {
    error_kind kind = error_kind::bad_request;
    std::string reason;
    std::string detail;
    std::vector<field_error> errors;
};

// What a step makes, or why it would not.
template <class T>
using outcome = std::variant<T, refusal>;

// ---------------------------------------------------------------------------------------------
// read

// The key (nullopt without the header), or the 400 for a malformed one (valid_idempotency_key).
outcome<std::optional<std::string>> read_idempotency_key(std::optional<std::string_view> header);

// An upload being spooled to disk. Removed on destruction unless kept.
class spool_file {
  public:
    spool_file(runtime::blocking_pool& blocking, std::string path);
    ~spool_file();
    spool_file(const spool_file&) = delete;
    spool_file& operator=(const spool_file&) = delete;
    boost::asio::awaitable<bool> open();
    // Writes what is pending off the IO thread, and clears it.
    boost::asio::awaitable<bool> flush(std::string& pending);
    // Closes the file (durability is the blob store's, which takes it: store_upload).
    boost::asio::awaitable<bool> close();
    void keep() { keep_ = true; }
    const std::string& path() const { return path_; }
    std::uint64_t size() const { return size_; }
    // The errno of the last failed open, write or close (ENOSPC: the disk is full); 0 if none.
    int error() const { return error_; }

  private:
    runtime::blocking_pool& blocking_;
    std::string path_;
    int fd_ = -1;
    bool opened_ = false;
    bool keep_ = false;
    std::uint64_t size_ = 0;
    int error_ = 0;
};

// The audio_file part of a form, spooled to <blob_dir>/spool/<file_id>, then stored in the
// blob store under upload_key(file_id).
struct upload {
    std::unique_ptr<spool_file> spool;
    std::string file_id;
    std::string name;    // the client's filename as valid UTF-8 (informational only)
    std::string sha256;  // hex, of the bytes as received
    std::string content_type = "application/octet-stream";  // as probed (accept_probe)
    bool stored = false;                                    // in the blob store (store_upload)
};

// The blob store key of an upload: "uploads/<file id>" (the file row's path).
std::string upload_key(std::string_view file_id);

// What the client sent: the fields as JSON (from a form every value is a string) and the file.
struct submission {
    boost::json::object fields;
    bool from_form = false;
    // A JSON body whose numbers may be strings (a drop-in for an API that coerces them).
    bool text_numbers = false;
    std::optional<upload> file;
};

// What a create's body may hold beyond its file (api.max_upload_bytes): multipart framing and
// the form's text fields.
inline constexpr std::uint64_t form_slack_bytes = 64 * 1024;

struct read_env {
    std::uint64_t max_upload_bytes = 0;
    std::uint64_t max_json_bytes = 0;
    std::string spool_dir;  // where uploads are spooled (local, on blob_dir's file system)
    runtime::blocking_pool& blocking;
    metrics::counter& upload_bytes;  // bytes of uploads received
    metrics::gauge& spool_bytes;     // bytes being written to the spool right now
};

// multipart/form-data (streamed; the file never all in memory), application/json, or
// application/x-www-form-urlencoded (text fields only, parsed as a form's).
boost::asio::awaitable<outcome<submission>> read_submission(http::context& ctx,
                                                            const read_env& env);

// ---------------------------------------------------------------------------------------------
// validate

struct validate_env {
    const config::settings& settings;
    std::function<bool(std::string_view)> provider_exists;
    core::capability_lookup capabilities;
    double draw = 0;  // uniform in [0, 1): picks the first provider of a weighted route
};

// The request as far as it is known, and every field in the way so far.
struct checked {
    core::extend_request request;
    std::vector<field_error> errors;
    bool unroutable = false;  // the fields are valid, and no provider can serve them
};

// The fields into the neutral request and, when they are valid, its failover chain
// (request.route_chain). No route that can serve it: an error naming the field in the way.
checked validate_submission(const submission& s, const validate_env& env);

// The field to blame when no provider can serve `req` (`why` from core::plan_route).
field_error unroutable(const core::extend_request& req, const std::string& why);

// The URL guard now rather than when the URL is used: a refused URL is the client's error.
// Runs only on an otherwise valid request. Syntax first (no DNS), then the resolved addresses
// within 300 ms: a slow resolver must not hold the submit (every later use checks again).
boost::asio::awaitable<void> guard_urls(checked& c, std::shared_ptr<const net::url_policy> policy);

// Deliveries are signed: a webhook_url needs the tenant to have a webhook secret.
void require_webhook_secret(checked& c, const config::settings& settings, std::string_view tenant);

// The 422 listing every invalid field, or nullopt when there is none.
std::optional<refusal> invalid_fields(const checked& c);

// ---------------------------------------------------------------------------------------------
// prepare the source

boost::asio::awaitable<audio::probe_result> probe_upload(const upload& up,
                                                         runtime::blocking_pool& blocking);

// The probe into the request (file id, name, duration, rate, channels) and the upload's
// content type; the 422 when the file is not audio or extend_after is past its end.
std::optional<refusal> accept_probe(const audio::probe_result& probe, upload& up,
                                    core::extend_request& req);

// The spool into the blob store under upload_key (it takes the spool file: renamed into place
// by the directory backend, streamed and removed by the others); the 500 if it cannot be.
boost::asio::awaitable<std::optional<refusal>> store_upload(upload& up, store::blob_store& blobs,
                                                            runtime::blocking_pool& blocking);

// ---------------------------------------------------------------------------------------------
// admit

// The idempotency fingerprint: what the client sent (and the upload's bytes), not what the
// gateway drew or derived (route chain, hold, file id); a drop-in shape's webhook format and
// secret count.
std::string request_hash(const core::extend_request& req, std::string_view upload_sha256);

// Everything the admit transaction writes, decided before it.
struct admission {
    core::extend_request request;  // with its hold
    std::string tenant;
    store::task_row task;
    std::vector<store::output_row> outputs;
    core::engine::event_context events;
    std::string response_body;  // the 202, also kept for replays
    std::optional<std::string> idempotency_key;
    std::string request_hash;      // with a key
    std::int64_t grant_milli = 0;  // the tenant's configured grant
    std::optional<store::ledger_row> hold;
    std::optional<store::file_row> file;
};

admission plan_admission(const core::extend_request& req, std::string_view tenant,
                         const std::optional<std::string>& idempotency_key, const upload* up,
                         const config::settings& settings, store::millis now);

enum class idempotency_verdict {
    expired,   // older than the retention: forgotten, the request is new
    replay,    // the same request again: answer what was answered
    conflict,  // another request under the same key: 409
};
idempotency_verdict judge_idempotency(const store::idempotency_row& prior,
                                      std::string_view request_hash, store::millis now,
                                      store::millis retention);

struct admitted {
    enum class kind { created, replay, conflict, insufficient } what = kind::created;
    store::idempotency_row prior;      // replay: the stored answer
    std::int64_t available_milli = 0;  // insufficient: the tenant's available balance
};

// The balance check and the hold in one transaction (one writer): two submits can never both
// spend the same credits. Run inside store::db::write. With `h` (a reserved hand-off), the
// submit job is written leased to the local engine (core::engine::create_task).
admitted admit(store::transaction& tx, const admission& a, store::millis now,
               store::millis retention, core::engine::handoff* h = nullptr);

// The 402 (insufficient credits) or 409 (key reused) an admission ended in; nullopt otherwise.
std::optional<refusal> refused_admission(const admitted& result, const admission& a);

// Removes a stored upload that no task points at (its request was refused or replayed).
boost::asio::awaitable<void> discard_upload(const upload& up, store::blob_store& blobs,
                                            runtime::blocking_pool& blocking);

}  // namespace segue::api::create

#pragma once
// The create as one call, for every API shape that creates tasks: the neutral POST
// /v1/extensions (extensions.cpp) and the drop-in shapes that providers add
// (providers/<name>/compat/). Runs the steps of create_pipeline.hpp in order and says how it
// ended; the caller answers in its own shape. Counts what it refuses and creates. A `clip`
// source may name an output of the tenant's own tasks (resolve_output_clip).

#include <boost/asio/awaitable.hpp>

#include <functional>
#include <memory>
#include <optional>
#include <string>
#include <vector>

#include "gateway/api/create_pipeline.hpp"
#include "gateway/api/extensions.hpp"
#include "gateway/store/disk.hpp"

namespace segue::metrics {
template <class T>
class family;
}  // namespace segue::metrics

namespace segue::api::create {

// What a shape may change on the way. Each hook is optional.
struct flow_hooks {
    // After reading: the shape's fields into the neutral ones (renames, defaults, lookups of
    // its own ids). A refusal ends the create with it.
    std::function<boost::asio::awaitable<std::optional<refusal>>(submission&)> translate;
    // After validation, before admission: e.g. the shape's webhook format for the task.
    std::function<void(core::extend_request&)> decorate;
    // Fields the shape's clients send as hints: when no provider on the route can honour one
    // (e.g. `length` on a route of providers without it), it is left out and the task says so
    // in its warnings, instead of refusing the request. An invalid value is still refused.
    std::vector<std::string> best_effort;
};

struct flow_result {
    enum class kind { refused, created, replay } what = kind::refused;
    refusal refused;               // refused
    admission admitted;            // created (and, for its request and task, replay too)
    store::idempotency_row prior;  // replay: the stored answer of the first create
};

// What a 507 (insufficient_storage) asks the client to wait before trying again (Retry-After,
// set by flow::run).
constexpr int disk_retry_after_s = 60;

// What the create flows of one process (the extensions API and each drop-in shape) share, so
// they measure the data volume and look up tenants' grants once between them, not once each:
// the free-space gate of storage.min_free_bytes (store::space_gate), and the tenants whose
// initial grant is known to be in the ledger (a create committed after ensuring it; a grant is
// never removed, so what is known stays true): their creates skip the lookup, one round trip on
// PostgreSQL.
struct flow_state;
std::shared_ptr<flow_state> make_flow_state();

class flow {
  public:
    explicit flow(const api_deps& deps);
    // Runs the create for `tenant` (already authenticated). The created task is committed and
    // the engine told before it returns. A refusal's headers (Retry-After on a full disk) are
    // set on the response here; the caller writes its status and body in its own shape.
    boost::asio::awaitable<flow_result> run(http::context& ctx, const std::string& tenant,
                                            const flow_hooks& hooks = {});
    // Counts a refusal made outside run() (e.g. authentication) under segue_api_rejected_total.
    void count_refusal(std::string_view reason);

  private:
    // A `clip` that is an output of one of the tenant's tasks ("<task id>-N", as the drop-in
    // shapes name outputs): the provider's own clip when it names the provider that made it
    // and that provider gave one, else the output's audio by its signed link (an audio_url).
    // `duration` is set to the output's length in seconds when it is known (extend_after is
    // checked against it with the other fields). An id of that form whose output does not
    // exist, is not ready, or whose files retention deleted is refused, never sent to a
    // provider as one of its own clips. `ours` says the id has that form (whatever became of it).
    boost::asio::awaitable<std::optional<refusal>> resolve_output_clip(
        submission& s, const std::string& tenant, std::optional<double>& duration, bool& ours);
    // storage.min_free_bytes: the 507 for a new upload of `incoming` bytes (0: not known yet)
    // when the data volume is, or would be, below it. Measured (statvfs, off the IO thread)
    // unless a measurement of the last second left far more than enough (store::space_gate);
    // a refusal is always measured now, so uploads are taken again the moment space returns.
    boost::asio::awaitable<std::optional<refusal>> room_for(std::uint64_t incoming);
    read_env reading();
    validate_env validating();

    api_deps deps_;
    std::shared_ptr<flow_state> shared_;  // deps_.creates, or one of its own without it
    metrics::family<metrics::counter>& created_;
    metrics::family<metrics::counter>& rejected_;
    metrics::counter& upload_bytes_;
    metrics::gauge& spool_bytes_;
};

}  // namespace segue::api::create

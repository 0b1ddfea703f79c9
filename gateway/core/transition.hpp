#pragma once
// A provider's update applied to a task, as a state transition with no I/O of its own.
//
// The engine loads what a transition reads (the task, its outputs and attempts, its ledger, the
// tenant's available credits) into a `task_work`, an in-memory store::transaction that serves
// those reads and records every write in order; `transition::apply` decides (new task, output
// and attempt rows, events, ledger entries, job changes, metrics); the engine then saves the
// recorded effects into the real transaction, checking its job lease as it does. So the whole
// decision runs, and is table-tested, without a store (tests/unit/transition_test.cpp).

#include <boost/json/object.hpp>

#include <cstdint>
#include <functional>
#include <map>
#include <optional>
#include <set>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config/settings.hpp"
#include "gateway/core/retry_policy.hpp"
#include "gateway/store/store.hpp"
#include "providers/provider.hpp"

namespace segue::core {

// {} unless `text` is a JSON object.
boost::json::object parse_object(const std::string& text);
// A normalized error: {"code", "class", "message", "provider"}.
boost::json::object error_object(std::string_view code, error_class cls, std::string_view message,
                                 std::string_view provider);

// What a mirror job (core/mirror.hpp) brings back for one output's audio or one cover.
struct mirror_outcome {
    int index = 0;       // the output (audio), or the cover's output (0: the task's cover)
    bool cover = false;  // a cover image, not the output's audio
    bool ok = false;     // every file was stored
    std::string error;   // why not (the last failure), when !ok
    bool gone = false;   // !ok, and the last failure was the provider's 404 or 410 (no file)
    struct file {
        std::string format;  // "mp3", "wav", "cover"
        std::string provider_url;
        store::file_row row;  // id, kind, content type, key, size and sha256 set
    };
    std::vector<file> files;
    std::string verification_json;  // the output's `verification` object, "" if none
};

// The output data a client sees: internal bookkeeping (keys that start with '_') left out.
boost::json::object public_output(const boost::json::object& data);
// Whether an output's audio or a cover of the task is still being mirrored.
bool waits_for_mirror(const std::vector<store::output_row>& outs);
// Whether the provider is known to have this attempt: it named its upstream task, or a callback
// with the attempt's token came (store::attempt_row::seen_at). Such an attempt is followed,
// never submitted again.
inline bool seen_upstream(const store::attempt_row& a) {
    return !a.provider_task_id.empty() || a.seen_at > 0;
}

// A metric change a transition decided; the engine applies it once the transaction committed.
struct metric_effect {
    enum class family {
        credits,   // segue_credits_total {tenant, provider, kind}
        failures,  // segue_provider_failures_total {provider, code}
        retries,   // segue_task_retries_total {provider, decision, reason}
    };
    family which = family::credits;
    std::vector<std::string> labels;
    double amount = 1;
};

// The in-memory transaction of one transition (see the top of this file). Reads come from the
// snapshot (kept up to date by the recorded writes); writes are recorded, in order. Operations a
// transition never uses throw std::logic_error.
class task_work final : public store::transaction {
  public:
    struct snapshot {
        std::optional<store::task_row> task;
        std::vector<store::output_row> outputs;
        std::vector<store::attempt_row> attempts;
        store::task_ledger ledger;
        std::set<std::string> ledger_keys;  // the task's entries that exist (see key_of)
        std::int64_t tenant_available = 0;  // milli-credits
        bool endpoint_gone = false;         // the task's webhook_url answered 410 earlier
    };
    struct effect {
        enum class kind {
            complete_job,
            reschedule_job,
            insert_file,
            upsert_output,
            delete_output,
            upsert_attempt,
            update_task,
            append_event,
            insert_delivery,
            add_ledger,
            delete_jobs,
            schedule_job,
        };
        explicit effect(kind k) : what(k) {}
        kind what;
        store::task_row task;
        store::output_row output;
        store::attempt_row attempt;
        store::event_row event;
        store::delivery_row delivery;
        store::ledger_row ledger;
        store::job_row job;
        store::file_row file;
        bool unique = false;
        store::millis due_at = 0;
        std::string payload_json;
    };

    // What a transition of `task_id` by its attempt `attempt_number` reads, from the real
    // transaction.
    static snapshot load(store::transaction& tx, std::string_view task_id, int attempt_number);
    // Writes `effects` in order. The current job's completion or reschedule names `job` (the
    // claim's lease); false if the claim no longer holds it (nothing more is written then, and
    // the caller rolls the unit back).
    static bool save(store::transaction& tx, const std::vector<effect>& effects,
                     const std::optional<store::lease_ref>& job);
    static std::string key_of(int output, std::string_view kind, std::string_view key);

    explicit task_work(snapshot s) : s_(std::move(s)) {}
    const std::vector<effect>& effects() const noexcept { return effects_; }
    // Whether saving the effects changes what the task shows or does, against the state `before`
    // the transition: a timestamp alone is no change. A webhook that changes nothing repeats
    // one already applied.
    bool changes(const snapshot& before) const;
    const snapshot& state() const noexcept { return s_; }

    void insert_task(const store::task_row&) override { no("insert_task"); }
    std::int64_t update_task(const store::task_row& t) override;
    std::optional<store::task_row> get_task(std::string_view id) override;
    std::vector<store::task_row> list_tasks(std::string_view, int, std::string_view) override {
        no("list_tasks");
    }
    void upsert_output(const store::output_row& o) override;
    std::vector<store::output_row> get_outputs(std::string_view task_id) override;
    void delete_output(std::string_view task_id, int index) override;
    void upsert_attempt(const store::attempt_row& a) override;
    std::vector<store::attempt_row> get_attempts(std::string_view task_id) override;
    std::optional<store::attempt_row> find_attempt_by_token(std::string_view) override {
        no("find_attempt_by_token");
    }
    store::event_row append_event(store::event_row e) override;
    std::vector<store::event_row> get_events(std::string_view, std::int64_t, int) override {
        no("get_events");
    }
    std::int64_t schedule_job(const store::job_row& j, bool unique) override;
    std::vector<store::job_row> claim_jobs(std::string_view, store::millis, store::millis, int,
                                           const std::vector<std::int64_t>&,
                                           store::job_lane) override {
        no("claim_jobs");
    }
    bool complete_job(const store::lease_ref& lease) override;
    bool reschedule_job(const store::lease_ref& lease, store::millis due_at,
                        std::string_view payload_json) override;
    bool fail_job(const store::lease_ref&, store::millis) override { no("fail_job"); }
    std::vector<std::int64_t> renew_jobs(std::string_view,
                                         const std::vector<std::pair<std::int64_t, std::int64_t>>&,
                                         store::millis) override {
        no("renew_jobs");
    }
    void delete_jobs_for_task(std::string_view task_id) override;
    std::optional<store::millis> next_job_due() override { no("next_job_due"); }
    std::optional<store::idempotency_row> get_idempotency(std::string_view,
                                                          std::string_view) override {
        no("get_idempotency");
    }
    bool insert_idempotency(const store::idempotency_row&) override { no("insert_idempotency"); }
    int delete_idempotency_before(store::millis) override { no("delete_idempotency_before"); }
    void insert_file(const store::file_row& f) override;
    std::optional<store::file_row> get_file(std::string_view) override { no("get_file"); }
    std::optional<store::file_tombstone_row> get_file_tombstone(std::string_view) override {
        no("get_file_tombstone");
    }
    int expire_files(std::string_view, store::millis, store::millis, int) override {
        no("expire_files");
    }
    int reap_tasks(store::millis, store::millis, int) override { no("reap_tasks"); }
    std::vector<std::string> tasks_without_work(store::millis, int) override {
        no("tasks_without_work");
    }
    std::vector<store::file_tombstone_row> claim_purges(store::millis, store::millis,
                                                        int) override {
        no("claim_purges");
    }
    void mark_purged(const std::vector<std::string>&) override { no("mark_purged"); }
    int delete_tombstones_before(store::millis, int) override { no("delete_tombstones_before"); }
    int delete_idempotency_batch(store::millis, int) override { no("delete_idempotency_batch"); }
    store::storage_totals totals() override { no("totals"); }
    void insert_delivery(const store::delivery_row& d) override;
    std::vector<store::delivery_row> claim_deliveries(std::string_view, store::millis,
                                                      store::millis, int,
                                                      const std::vector<std::string>&) override {
        no("claim_deliveries");
    }
    bool finish_delivery(const store::delivery_row&, std::string_view) override {
        no("finish_delivery");
    }
    std::vector<std::string> renew_deliveries(
        std::string_view, const std::vector<std::pair<std::string, std::int64_t>>&,
        store::millis) override {
        no("renew_deliveries");
    }
    std::optional<store::delivery_row> get_delivery(std::string_view) override {
        no("get_delivery");
    }
    std::vector<store::delivery_row> list_deliveries(std::string_view, std::string_view,
                                                     std::string_view, int,
                                                     std::string_view) override {
        no("list_deliveries");
    }
    bool redeliver(std::string_view, store::millis) override { no("redeliver"); }
    int kill_deliveries_to(std::string_view, std::string_view, std::string_view,
                           store::millis) override {
        no("kill_deliveries_to");
    }
    void set_endpoint_gone(std::string_view, std::string_view, bool, store::millis) override {
        no("set_endpoint_gone");
    }
    bool endpoint_gone(std::string_view, std::string_view) override { return s_.endpoint_gone; }
    std::optional<store::millis> next_delivery_due() override { no("next_delivery_due"); }
    store::delivery_summary summarize_deliveries() override { no("summarize_deliveries"); }
    bool add_ledger_entry(const store::ledger_row& e) override;
    std::optional<store::ledger_row> find_ledger_entry(std::string_view, std::string_view, int,
                                                       std::string_view,
                                                       std::string_view) override {
        no("find_ledger_entry");
    }
    store::ledger_balance ledger_totals(std::string_view tenant) override;
    store::task_ledger ledger_for_task(std::string_view task_id) override;
    std::vector<store::ledger_row> list_ledger(std::string_view, int, std::int64_t) override {
        no("list_ledger");
    }
    std::string ensure_secret(std::string_view, std::string_view, store::millis) override {
        no("ensure_secret");
    }
    bool ensure_grant(std::string_view, std::int64_t, store::millis) override {
        no("ensure_grant");
    }

  private:
    [[noreturn]] static void no(const char* what);
    void record(effect e) { effects_.push_back(std::move(e)); }
    snapshot s_;
    std::vector<effect> effects_;
};

// Applies provider updates to tasks: the decisions of the engine, over any store::transaction
// (a task_work in the engine and the tests; finalize and release_outstanding also run on the
// real transaction for cancels and poisoned jobs).
class transition {
  public:
    struct env {
        const config::settings& settings;  // prices, public_base_url
        retry_settings retry;
        // A provider's capabilities by name; nullptr for one that is not configured.
        std::function<const providers::capabilities*(std::string_view)> caps_of;
        std::function<double()> random;  // in [0, 1): the jitter of retry delays
    };
    struct result {
        bool superseded = false;   // a webhook of an attempt that is no longer current
        bool notify = false;       // new work is due: wake the engine
        std::string final_status;  // the task reached it in this transition
        store::millis created_at = 0;
        std::string provider;   // the task's, when final_status is set by mirror_done
        bool mirrored = false;  // mirror_done used the outcome (else it was not awaited)
        std::vector<metric_effect> metrics;
    };

    explicit transition(env e) : env_(std::move(e)) {}

    // Applies `u` from `provider_name`'s attempt `attempt_number` to task `task_id` at `now`.
    // `job` is the job that produced it (finished or rescheduled here), or null for an inbound
    // webhook. `files` are the files the update produced locally, by absolute path, with their
    // id, kind, type, path and size set (tenant, task and time are set here).
    result apply(store::transaction& tx, const std::string& task_id, const store::job_row* job,
                 const std::string& provider_name, int attempt_number, const providers::update& u,
                 std::map<std::string, store::file_row> files, store::millis now) const;

    // A mirror job's outcome, applied to the task: the output becomes ready (or failed, with
    // outputs.mirror.fail_output) with the gateway's own URLs, or the cover is set; the task
    // finishes when nothing is left to wait for. The caller completes the mirror job first.
    result mirror_done(store::transaction& tx, const std::string& task_id, const mirror_outcome& m,
                       store::millis now) const;

    // The end of a task: pending outputs fail, the status is decided, what is held and not
    // captured is released, the final event written, the task's jobs removed.
    void finalize(store::transaction& tx, store::task_row& t, std::vector<store::output_row>& outs,
                  store::attempt_row* attempt, std::optional<boost::json::object> error,
                  result& res) const;
    // At the end (or a cancel) what is held and not captured goes back, once, and the task
    // says so (extension.credits.refunded).
    static void release_outstanding(store::transaction& tx, const store::task_row& t, result& res);
    // How much more a failover to `next` would hold (0 when nothing more, or nothing held).
    std::int64_t failover_extra_hold(store::transaction& tx, const store::task_row& t,
                                     const std::string& next) const;

    // When attempt `a` must have finished: retry.attempt_deadline after it was submitted, for
    // an attempt a provider accepted (or may have: status "unknown"); nullopt when no bound
    // applies. Every accepted attempt has a poll job (scheduled at acceptance, whether the
    // provider polls or waits for webhooks), and a poll is never due later than this, so that
    // job is what ends an attempt the provider never finishes.
    std::optional<store::millis> attempt_due_by(const store::attempt_row& a) const;
    // The update that ends attempt `a` at that deadline, with no further call to its provider:
    // failed (upstream_deadline, class transient), applied like any failure after acceptance
    // (what was made is kept, the rest fails and is released, made again only on a route that
    // regenerates); or done when every output is made already and only what a provider sends
    // on its own (lyrics, a cover) is missing.
    providers::update deadline_update(const store::attempt_row& a,
                                      const std::vector<store::output_row>& outs,
                                      store::millis now) const;

  private:
    // Mirroring (mirror_transition.cpp): a provider's remote output or cover is handed to a
    // mirror job instead of being shown as it is.
    bool mirroring() const;
    void request_audio_mirror(store::transaction& tx, const store::task_row& t,
                              boost::json::object& d, boost::json::object audio, int index,
                              store::millis now, result& res) const;
    void request_cover_mirror(store::transaction& tx, const store::task_row& t,
                              std::vector<store::output_row>& outs, int index,
                              const std::string& url, store::millis now, result& res) const;
    void schedule_mirror_job(store::transaction& tx, const store::task_row& t,
                             boost::json::object payload, store::millis now, result& res) const;
    // The task finishes if nothing it waits for is left (outputs, mirrors, artifacts).
    void settle_if_done(store::transaction& tx, store::task_row& t,
                        std::vector<store::output_row>& outs, store::millis now, result& res) const;
    static void reconciled_submitted(store::transaction& tx, const store::task_row& t,
                                     const store::attempt_row* attempt, int attempt_number);
    void drop_unmade_outputs(store::transaction& tx, store::task_row& t,
                             std::vector<store::output_row>& outs,
                             const std::string& provider) const;
    // On failover, moves the task's hold to `next`'s price; a release (a cheaper provider) is
    // returned as the data of the extension.credits.refunded event the caller appends.
    std::optional<boost::json::object> retarget_hold(store::transaction& tx,
                                                     const store::task_row& t,
                                                     const std::string& next, int attempt_number,
                                                     result& res) const;
    void capture_output(store::transaction& tx, const store::task_row& t, int index,
                        const std::string& provider, result& res) const;
    decision plan_recovery(const store::task_row& t,
                           const std::vector<store::attempt_row>& attempts,
                           const store::attempt_row* attempt, const std::string& provider_name,
                           const providers::update& u, const std::vector<store::output_row>& outs,
                           store::millis now) const;
    std::string file_url(const std::string& id) const;
    // A poll `delay_ms` after `now`, but not later than the attempt's deadline.
    store::millis poll_due(const store::attempt_row* a, store::millis now,
                           std::int64_t delay_ms) const;

    env env_;
};

}  // namespace segue::core

#include "gateway/core/engine.hpp"

#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/post.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <filesystem>
#include <iterator>
#include <map>
#include <random>
#include <system_error>

#include "gateway/core/backoff.hpp"
#include "gateway/core/breaker.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/lease_worker.hpp"
#include "gateway/core/ledger.hpp"
#include "gateway/core/mirror.hpp"
#include "gateway/core/model.hpp"
#include "gateway/core/recent_outcomes.hpp"
#include "gateway/core/retry_policy.hpp"
#include "gateway/core/signed_url.hpp"
#include "gateway/core/transition.hpp"
#include "gateway/events/event_hub.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/store/blob_store.hpp"
#include "gateway/store/db.hpp"
#include "gateway/util/crypto.hpp"
#include "gateway/util/json_text.hpp"
#include "providers/provider.hpp"
#include "providers/registry.hpp"

namespace segue::core {

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;

namespace {

// The engine's lanes of work (lease_worker lanes): new tasks' submits, and everything else.
constexpr int submit_lane = 0;
constexpr int other_lane = 1;
// A job of a kind this version does not know is claimed again after this (run_job).
constexpr store::millis unknown_kind_retry_ms = 30'000;
int lane_of(std::string_view kind) {
    return kind == store::submit_job_kind ? submit_lane : other_lane;
}
// The job kinds run_job runs; any other was scheduled by a newer version.
bool known_job_kind(std::string_view kind) {
    return kind == store::submit_job_kind || kind == "poll" || kind == "reconcile" ||
           kind == "mirror";
}

// Thrown inside a unit of work when this replica no longer holds the job's lease: the unit
// rolls back and the engine drops the result (the new lease holder redoes the work).
struct lease_lost : std::runtime_error {
    lease_lost() : std::runtime_error("job lease lost") {}
};

class_policy class_policy_from(const config::class_retry_settings& c) {
    class_policy p;
    p.max_attempts = c.max_attempts;
    p.failover = c.failover;
    p.backoff.initial_ms = c.initial.count();
    p.backoff.max_ms = c.max.count();
    p.backoff.multiplier = c.multiplier;
    p.backoff.jitter = c.jitter;
    return p;
}

retry_settings retry_from(const config::retry_settings& r) {
    retry_settings s;
    s.transient = class_policy_from(r.transient);
    s.rate_limited = class_policy_from(r.rate_limited);
    s.quota = class_policy_from(r.quota);
    s.credential = class_policy_from(r.credential);
    s.rejected = class_policy_from(r.rejected);
    s.unknown = class_policy_from(r.unknown);
    s.attempt_budget = r.attempt_budget;
    s.deadline_ms = r.deadline.count();
    s.attempt_deadline_ms = r.attempt_deadline.count();
    return s;
}

breaker_settings breaker_from(const config::breaker_settings& b) {
    breaker_settings s;
    s.consecutive_failures = b.consecutive_failures;
    s.failure_ratio = b.failure_ratio;
    s.min_requests = b.min_requests;
    s.window_ms = b.window.count();
    s.open_ms = b.open.count();
    s.max_open_ms = b.max_open.count();
    s.half_open_probes = b.half_open_probes;
    s.max_concurrency = b.max_concurrency;
    return s;
}

// The breakers' clock: monotonic, so a wall-clock step never opens or closes a circuit.
std::int64_t steady_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::steady_clock::now().time_since_epoch())
        .count();
}

double unit_random() {
    thread_local std::mt19937_64 rng{std::random_device{}()};
    return std::uniform_real_distribution<double>(0.0, 1.0)(rng);
}

// The intent of a task's next attempt, at `provider`: "submitting", and only the callback
// token's hash (the database never holds a usable callback URL). A preparation at this provider
// (e.g. an upload that became a clip) hands its state on: the call needs it, and a lost answer's
// webhook fits it.
store::attempt_row next_intent(const std::string& task_id, const std::string& provider,
                               const std::vector<store::attempt_row>& attempts,
                               const std::string& callback_token, store::millis started_at) {
    store::attempt_row a;
    a.task_id = task_id;
    a.number = attempts.empty() ? 1 : attempts.back().number + 1;
    a.provider = provider;
    a.callback_token = util::sha256_hex(callback_token);
    a.status = "submitting";
    for (auto it = attempts.rbegin(); it != attempts.rend(); ++it)
        if (it->provider == provider && it->status == "prepared") {
            a.state_json = it->state_json;
            break;
        }
    a.started_at = started_at;
    return a;
}

// A provider call that threw: a failure of unknown class.
providers::update provider_error(const std::exception& e) {
    providers::update u;
    u.what = providers::update::kind::failed;
    u.error = error_class::unknown;
    u.error_code = "provider_error";
    u.error_message = e.what();
    return u;
}

// A slot taken from a provider's breaker: given back (no outcome) unless take()n for a call
// whose outcome is then recorded.
class breaker_slot {
  public:
    breaker_slot() = default;
    explicit breaker_slot(circuit_breaker* b) : b_(b) {}
    breaker_slot(breaker_slot&& o) noexcept : b_(std::exchange(o.b_, nullptr)) {}
    breaker_slot& operator=(breaker_slot&& o) noexcept {
        if (this != &o) {
            reset();
            b_ = std::exchange(o.b_, nullptr);
        }
        return *this;
    }
    ~breaker_slot() { reset(); }
    explicit operator bool() const { return b_ != nullptr; }
    circuit_breaker* take() { return std::exchange(b_, nullptr); }
    void reset() {
        if (b_)
            std::exchange(b_, nullptr)->release();
    }

  private:
    circuit_breaker* b_ = nullptr;
};

}  // namespace

struct engine::impl : std::enable_shared_from_this<engine::impl> {
    impl(asio::io_context& io, store::db& d, store::blob_store& bl, providers::registry& p,
         runtime::blocking_pool& b, const config::settings& s, metrics::registry& m,
         net::http_client* h, net::http_client* f, std::shared_ptr<const net::url_policy> up)
        : http(h),
          fetch(f),
          url_policy(std::move(up)),
          ioc(io),
          db(d),
          blobs(bl),
          registry(p),
          blocking(b),
          settings(s),
          owner(util::random_id("eng_")),
          jobs(m.counter_family("segue_engine_jobs_total",
                                "Jobs run by the task engine, by kind and outcome (e.g. ok; "
                                "task_ended: the task ended while the job ran, so its result "
                                "was not needed; lease_lost: another claim took the job).",
                                {"kind", "outcome"})),
          tasks_created(m.counter_family("segue_tasks_created_total",
                                         "Tasks accepted, by provider.", {"provider"})),
          tasks_finished(m.counter_family("segue_tasks_finished_total",
                                          "Tasks that reached a final status.",
                                          {"provider", "status"})),
          task_duration(m.histogram_family(
              "segue_task_duration_seconds", "From acceptance to a final status, by provider.",
              {"provider"}, {0.5, 1, 2, 5, 10, 30, 60, 120, 300, 600, 1800, 3600})),
          running_gauge(m.make_gauge("segue_engine_jobs_running", "Jobs being run right now.")),
          count_freed(count_freed_leases(m)),
          handoffs(m.counter_family(
              "segue_engine_handoffs_total",
              "New tasks' submit jobs handed to this process's engine in memory (handed_off), "
              "or written unleased for a claim because the engine was at engine.batch "
              "(saturated).",
              {"outcome"})),
          failures(m.counter_family("segue_provider_failures_total",
                                    "Attempts that failed, by provider and normalized error code.",
                                    {"provider", "code"})),
          webhooks(m.counter_family("segue_provider_webhooks_total",
                                    "Inbound provider webhooks, by provider, kind and outcome: "
                                    "applied (it changed the task), duplicate (it repeated "
                                    "what the task knew), superseded (its attempt is no longer "
                                    "the task's), late (the task had ended), too_early "
                                    "(refused before its submit's answer), upstream_recorded "
                                    "(refused, but proof the provider has the attempt), "
                                    "rejected, unknown_token.",
                                    {"provider", "kind", "outcome"})),
          early_waits(m.counter_family(
              "segue_provider_webhook_waits_total",
              "Waits of inbound provider webhooks that overtook their submit's answer, by "
              "provider and what ended the wait: the commit of the task's next events "
              "(commit), the fallback timer (timer).",
              {"provider", "ended_by"})),
          retries(m.counter_family(
              "segue_task_retries_total",
              "Retries (decision retry_same or reconcile) and failovers after a provider failure, "
              "by the provider that failed and the reason.",
              {"provider", "decision", "reason"})),
          breaker_state(m.gauge_family("segue_provider_circuit_state",
                                       "Circuit breaker state per provider: 0 closed, 1 half-open, "
                                       "2 open.",
                                       {"provider"})),
          breaker_opened(m.counter_family("segue_provider_circuit_opened_total",
                                          "Times a provider's circuit opened.", {"provider"})),
          credits(m.counter_family("segue_credits_total",
                                   "Credits held at submit, captured by ready outputs and "
                                   "refunded (released) when outputs failed or were canceled.",
                                   {"tenant", "provider", "kind"})),
          retry(retry_from(s.retry)),
          trans({s, retry_from(s.retry),
                 [&p](std::string_view name) -> const providers::capabilities* {
                     const auto* prov = p.find(std::string(name));
                     return prov ? &prov->caps() : nullptr;
                 },
                 unit_random}) {
        mirror = std::make_unique<output_mirror>(output_mirror::deps{
            d, bl, b, f, url_policy, s, trans, m, owner,
            [this](const std::string& task_id) { return work_dir_of(task_id); }});
        for (auto* prov : p.all()) {
            breakers.emplace(std::string(prov->name()),
                             std::make_unique<circuit_breaker>(breaker_from(s.breakers)));
            outcomes.emplace(std::string(prov->name()), std::make_unique<recent_outcomes>());
            breaker_state.with({std::string(prov->name())}).set(0);
        }
    }

    circuit_breaker* breaker_for(std::string_view name) {
        auto it = breakers.find(name);
        return it == breakers.end() ? nullptr : it->second.get();
    }
    void breaker_result(std::string_view name, bool ok) {
        if (auto it = outcomes.find(name); it != outcomes.end())
            it->second->record(ok, steady_ms());
        auto* b = breaker_for(name);
        if (!b)
            return;
        const auto now = steady_ms();
        const auto before = b->snap(now);
        b->on_result(ok, now);
        const auto snap = b->snap(now);
        // The two moments an operator wants in the log: calls to a provider stop, and start again.
        if (snap.times_opened > before.times_opened) {
            breaker_opened.with({std::string(name)}).inc();
            log::warn("provider circuit opened: no calls to it until it is probed again",
                      {{"provider", name},
                       {"for_ms", std::max<std::int64_t>(0, snap.open_until_ms - now)},
                       {"times_opened", snap.times_opened}});
        } else if (before.st != circuit_breaker::state::closed &&
                   snap.st == circuit_breaker::state::closed) {
            log::info("provider circuit closed: calls to it go on", {{"provider", name}});
        }
        breaker_state.with({std::string(name)})
            .set(snap.st == circuit_breaker::state::open        ? 2
                 : snap.st == circuit_breaker::state::half_open ? 1
                                                                : 0);
    }

    // This claim of `job`: every write that depends on the job's lease names it. A write that
    // releases the row marks `lease` released, for the heartbeat.
    store::lease_ref lease_of(const store::job_row& job, const lease_state& lease) const {
        return {job.id, owner, job.attempts, &lease.released};
    }
    void make_worker();
    // What a run needs of its task, handed over by the create: the run then starts without a
    // read of its own.
    struct prefetched {
        std::optional<store::task_row> task;
        std::vector<store::attempt_row> attempts;
        // Set when the create wrote attempt 1's intent (engine::handoff): the call's breaker
        // slot (shared: a lease_worker item is copyable) and the plain callback token.
        std::shared_ptr<breaker_slot> slot;
        std::string callback_token;
    };
    // The provider a task's next call goes to.
    std::string provider_of(const store::task_row& task, const extend_request& req) const {
        return !task.provider.empty() ? task.provider
                                      : req.provider.value_or(settings.api.default_provider);
    }
    // The callback token of this attempt, and the URL the provider calls back on.
    void set_callback(providers::task_view& view, const std::string& provider,
                      std::string token) const {
        view.callback_token = std::move(token);
        if (!settings.api.public_base_url.empty())
            view.callback_url = settings.api.public_base_url + "/v1/providers/" + provider +
                                "/webhooks/" + view.callback_token;
    }
    // The provider call of a submit whose intent is durable; `acquired`: it holds a slot of the
    // provider's breaker, whose outcome it records.
    asio::awaitable<providers::update> call_provider(providers::provider& p,
                                                     const providers::task_view& view,
                                                     providers::services& svc,
                                                     const std::string& provider_name,
                                                     bool acquired);
    lease_worker::item item_of(store::job_row job, std::optional<prefetched> pre);
    // Inside the claim's write unit, for a claimed submit job that will call its provider: the
    // attempt's intent, written in the claim's commit (as a handed-off create writes it in its
    // own), with the breaker slot it takes. Nothing when the job's run decides otherwise (see
    // the function).
    std::optional<prefetched> claim_intent(store::transaction& tx, const store::job_row& job);
    // One claimed job: the poison check, the run, and a failed run's record.
    asio::awaitable<void> run_claimed(store::job_row job, std::shared_ptr<const lease_state> lease,
                                      std::optional<prefetched> pre);
    asio::awaitable<void> run_job(store::job_row job, const lease_state& lease,
                                  std::optional<prefetched> pre);
    // A job failed max_job_failures runs in a row: its task fails (internal), its hold goes back.
    asio::awaitable<void> fail_poisoned(const store::job_row& job, const lease_state& lease);
    // Applies a provider's update to the task. `job` is the job that produced it (finished or
    // rescheduled in the same transaction) under its claim's `lease`, or both are null for an
    // inbound webhook. Says whether the update changed the task, or repeated what it knew, or
    // came from an attempt that is no longer the task's.
    enum class applied { changed, unchanged, superseded };
    asio::awaitable<applied> apply(const std::string& task_id, const store::job_row* job,
                                   const lease_state* lease, const std::string& provider_name,
                                   int attempt_number, providers::update u);
    // The provider's word that `attempt_number` exists upstream (a callback with its token, or
    // a submit's answer that came too late to be recorded with its job): recorded as an
    // applied callback would be (store::attempt_row::seen_at, the task it names, its state
    // unless one was recorded meanwhile, i.e. unless it is no longer `state_if`), so the
    // attempt is followed and its submit never sent again. Nothing changes if a newer attempt
    // replaced it. Throws what apply throws.
    asio::awaitable<void> record_upstream(const std::string& task_id,
                                          const std::string& provider_name, int attempt_number,
                                          std::string upstream_task, std::string state_json,
                                          std::string state_if) {
        providers::update sign;
        sign.what = providers::update::kind::progress;
        sign.provider_task_id = std::move(upstream_task);
        if (!state_json.empty()) {
            sign.state_json = std::move(state_json);
            sign.state_if = std::move(state_if);
        }
        co_await apply(task_id, nullptr, nullptr, provider_name, attempt_number, std::move(sign));
    }
    // Where a provider writes a task's files (scratch, on blob_dir's file system) before the
    // engine puts them in the blob store; removed when the task is final.
    std::string work_dir_of(const std::string& task_id) const {
        return (fs::path(settings.storage.blob_dir) / "work" / task_id).string();
    }
    asio::awaitable<void> remove_work_dir(const std::string& task_id) {
        co_await blocking.run([dir = work_dir_of(task_id)] {
            std::error_code ec;
            fs::remove_all(dir, ec);
        });
    }
    // After a job run that failed (`error`): if its task has ended meanwhile (a cancel, or a
    // webhook that finished it first), its jobs went with it and nothing is lost. A cancel
    // also removed the scratch directory, which may be what the run failed on; what the run
    // wrote there since has no one left to remove it. Then the run is counted as task_ended,
    // logged at info, its scratch removed, and true is returned. Throws what the read throws.
    asio::awaitable<void> run_again_soon(const store::job_row& job, const lease_state& lease,
                                         const std::string& provider_name, int attempt_number,
                                         const std::string& upstream_task,
                                         const std::string& upstream_state,
                                         const std::string& state_if);
    asio::awaitable<bool> done_if_task_ended(const store::job_row& job, const std::string& error) {
        bool final = false;
        std::string status;
        co_await db.read([&](store::transaction& tx) {
            const auto t = tx.get_task(job.task_id);
            status = t ? t->status : "";
            final = !t || is_terminal(parse_task_status(t->status).value_or(task_status::failed));
        });
        if (!final)
            co_return false;
        jobs.with({job.kind, "task_ended"}).inc();
        log::info(
            "job finished after its task had ended; its result is not needed",
            {{"task_id", job.task_id}, {"kind", job.kind}, {"status", status}, {"error", error}});
        co_await remove_work_dir(job.task_id);
        co_return true;
    }
    // A task's upload as a local file for its provider, held while the provider runs. A blob
    // that cannot be read throws: the job runs again later (a database hiccup passes), up to
    // max_job_failures times.
    asio::awaitable<store::local_blob> local_input(const store::file_row& f) {
        std::optional<store::blob_result<store::local_blob>> got;
        co_await blocking.run([&] { got = blobs.materialize(f.path); });
        if (!*got)
            throw store::blob_failure(  // its code kept: a backend out of reach is an outage
                {got->error().code, "the upload " + f.id + " cannot be read from the blob store (" +
                                        std::string(blobs.backend()) +
                                        "): " + got->error().message});
        co_return std::move(**got);
    }
    // After a transition: its metrics, a finished task's bookkeeping, new work.
    asio::awaitable<void> after(const transition::result& res, const std::string& task_id,
                                const std::string& provider_name) {
        count(res.metrics);
        if (!res.final_status.empty()) {
            co_await remove_work_dir(task_id);
            finished(task_id, provider_name, res.final_status, res.created_at);
        }
        if (res.notify)
            worker->notify();
    }
    // A task reached a final status (committed): counted, timed from its acceptance (when
    // known: a cancel's is not), and one log line, so the log tells each task's end.
    void finished(const std::string& task_id, const std::string& provider,
                  const std::string& status, store::millis created_at) {
        tasks_finished.with({provider, status}).inc();
        if (created_at <= 0) {
            log::info("task finished",
                      {{"task_id", task_id}, {"status", status}, {"provider", provider}});
            return;
        }
        const auto ms = std::max<store::millis>(0, now_ms() - created_at);
        task_duration.with({provider}).observe(static_cast<double>(ms) / 1000.0);
        log::info("task finished", {{"task_id", task_id},
                                    {"status", status},
                                    {"provider", provider},
                                    {"duration_ms", static_cast<std::int64_t>(ms)}});
    }
    // Local files a provider produced: verified (decoded) before they are stored.
    asio::awaitable<void> verify_local(providers::update& u, const extend_request& req) {
        if (!settings.outputs.verify)
            co_return;
        co_await blocking.run([&] {
            for (auto& o : u.outputs) {
                std::vector<verify_file> files;
                if (o.mp3)
                    files.push_back({"mp3", o.mp3->path});
                if (o.wav)
                    files.push_back({"wav", o.wav->path});
                verify_request vr;
                vr.extend_after = req.extend_after;
                vr.length = req.length;
                vr.reported_duration = o.duration;
                o.verification_json = verify_output(files, vr);
            }
        });
    }
    // Metric changes a transition decided, once its transaction committed.
    void count(const std::vector<metric_effect>& effects) {
        for (const auto& m : effects) {
            auto& fam = m.which == metric_effect::family::credits    ? credits
                        : m.which == metric_effect::family::failures ? failures
                                                                     : retries;
            fam.with(m.labels).inc(m.amount);
        }
    }

    net::http_client* http;
    net::http_client* fetch;
    std::shared_ptr<const net::url_policy> url_policy;
    asio::io_context& ioc;
    store::db& db;
    store::blob_store& blobs;
    providers::registry& registry;
    runtime::blocking_pool& blocking;
    const config::settings& settings;
    std::string owner;
    std::unique_ptr<lease_worker> worker;
    events::event_hub* hub = nullptr;  // set_event_hub

    metrics::family<metrics::counter>& jobs;
    metrics::family<metrics::counter>& tasks_created;
    metrics::family<metrics::counter>& tasks_finished;
    metrics::family<metrics::histogram>& task_duration;
    metrics::gauge& running_gauge;
    std::function<void(const store::transaction::freed_leases&)> count_freed;
    metrics::family<metrics::counter>& handoffs;
    metrics::family<metrics::counter>& failures;
    metrics::family<metrics::counter>& webhooks;
    metrics::family<metrics::counter>& early_waits;
    metrics::family<metrics::counter>& retries;
    metrics::family<metrics::gauge>& breaker_state;
    metrics::family<metrics::counter>& breaker_opened;
    metrics::family<metrics::counter>& credits;
    retry_settings retry;
    std::map<std::string, std::unique_ptr<circuit_breaker>, std::less<>> breakers;
    std::map<std::string, std::unique_ptr<recent_outcomes>, std::less<>> outcomes;
    transition trans;
    std::unique_ptr<output_mirror> mirror;
    // Claim rounds so far: which lane claims first alternates by round.
    std::atomic<unsigned> claim_rounds{0};
};

engine::engine(asio::io_context& ioc, store::db& db, store::blob_store& blobs,
               providers::registry& providers, runtime::blocking_pool& blocking,
               const config::settings& settings, metrics::registry& metrics, net::http_client* http,
               net::http_client* fetch, std::shared_ptr<const net::url_policy> url_policy)
    : impl_(std::make_shared<impl>(ioc, db, blobs, providers, blocking, settings, metrics, http,
                                   fetch, std::move(url_policy))) {
    impl_->make_worker();
}

engine::~engine() = default;

lease_worker::item engine::impl::item_of(store::job_row job, std::optional<prefetched> pre) {
    lease_worker::item it;
    it.id = std::to_string(job.id);
    it.fence = job.attempts;
    it.lane = lane_of(job.kind);
    it.run = [self = shared_from_this(), job = std::move(job),
              pre = std::move(pre)](std::shared_ptr<const lease_state> l) mutable {
        return self->run_claimed(std::move(job), std::move(l), std::move(pre));
    };
    return it;
}

std::optional<engine::impl::prefetched> engine::impl::claim_intent(store::transaction& tx,
                                                                   const store::job_row& job) {
    // A poisoned job fails its task instead (run_claimed).
    if (job.failures >= settings.engine.max_job_failures)
        return std::nullopt;
    auto task = tx.get_task_if_unlocked(job.task_id);
    if (!task || is_terminal(parse_task_status(task->status).value_or(task_status::failed)))
        return std::nullopt;
    auto attempts = tx.get_attempts(task->id);
    // An interrupted submit is reconciled, and a task a provider already took is not sent
    // again: run_job decides both.
    if (!attempts.empty() &&
        (attempts.back().status == "submitting" || attempts.back().status == "accepted" ||
         attempts.back().status == "succeeded"))
        return std::nullopt;
    std::string provider_name = task->provider;  // set at create: the request is parsed rarely
    if (provider_name.empty()) {
        try {
            provider_name = provider_of(*task, request_from_json(task->request_json));
        } catch (const std::exception&) {
            return std::nullopt;  // the run fails it (a task whose data the engine cannot use)
        }
    }
    auto* br = breaker_for(provider_name);
    if (!registry.find(provider_name) || !br)
        return std::nullopt;
    // Throttled or open: the run reschedules it or fails the attempt, as for any claimed submit.
    if (!br->try_acquire(steady_ms()))
        return std::nullopt;
    // Held by the item from here: if this unit fails or runs again, the items it built are
    // dropped and their slots go back (breaker_slot), so a unit run twice takes one slot.
    prefetched pre;
    pre.slot = std::make_shared<breaker_slot>(br);
    pre.callback_token = util::random_id("cb_");
    auto a = next_intent(task->id, provider_name, attempts, pre.callback_token, now_ms());
    task->provider = provider_name;
    task->updated_at = a.started_at;
    task->version = tx.update_task(*task);
    tx.upsert_attempt(a);
    attempts.push_back(std::move(a));
    pre.task = std::move(task);
    pre.attempts = std::move(attempts);
    return pre;
}

void engine::impl::make_worker() {
    lease_worker::hooks h;
    h.name = "engine";
    // Hooks run on the worker (this impl's io_context) while the engine lives.
    h.claim = [this](store::transaction& tx, const std::string& who, store::millis now,
                     store::millis lease_ms, int limit, const std::vector<int>& lane_limits,
                     const std::vector<std::string>& exclude,
                     std::optional<store::millis>& next_due) {
        std::vector<std::int64_t> ids;
        for (const auto& id : exclude)
            ids.push_back(std::stoll(id));
        // Both lanes, each up to its room and together up to `limit`. Which goes first
        // alternates by round, so that neither always gets the last free slots.
        const bool submits_first = (claim_rounds.fetch_add(1) & 1) == 0;
        std::vector<store::job_row> claimed;
        for (int n = 0; n < 2; ++n) {
            const int lane = (n == 0) == submits_first ? submit_lane : other_lane;
            const int want = std::min(lane_limits[static_cast<std::size_t>(lane)],
                                      limit - static_cast<int>(claimed.size()));
            if (want <= 0)
                continue;
            auto got = tx.claim_jobs(
                who, now, lease_ms, want, ids,
                lane == submit_lane ? store::job_lane::submit : store::job_lane::other);
            std::move(got.begin(), got.end(), std::back_inserter(claimed));
        }
        if (static_cast<int>(claimed.size()) < limit)
            next_due = tx.next_job_due();
        std::vector<lease_worker::item> items;
        // A claimed submit that can call its provider now writes its attempt's intent in this
        // commit (claim_intent). Any other job reads its task in a read of its own (run_job):
        // in a write unit get_task locks the task until the batch commits (store.hpp), and a
        // claim that waits for one task's lock holds up the whole work lane (the renewals and
        // the dispatcher's records behind it: leases expired and webhooks went out twice in
        // the replicas chaos test with a waiting read folded in here). claim_intent never
        // waits: a task locked elsewhere is left to the run.
        for (auto& j : claimed) {
            auto pre = j.kind == "submit" ? claim_intent(tx, j) : std::nullopt;
            items.push_back(item_of(std::move(j), std::move(pre)));
        }
        return items;
    };
    h.renew = renew_job_leases;
    h.slots = [this](int running) { return settings.engine.batch - running; };
    h.on_running = [this](int running) { running_gauge.set(running); };
    h.on_lost = [this](const std::string&) { jobs.with({"any", "lease_lost"}).inc(); };
    h.on_freed = count_freed;
    lease_worker::timing t;
    t.lease = std::chrono::duration_cast<std::chrono::milliseconds>(settings.engine.lease);
    t.poll_interval =
        std::chrono::duration_cast<std::chrono::milliseconds>(settings.engine.poll_interval);
    // A quarter of the batch stays for claimed work whatever the rate of creates.
    t.keep_for_claims = settings.engine.batch / 4;
    // Submits and all other jobs in lanes of their own, each holding at most three quarters
    // of the batch: a quarter always stays for the other lane. Without it, polls whose work
    // waits for the blocking threads (the sandbox's audio, a mirror's verify) took every slot
    // while a backlog of cheap submits waited, each claim round finding one or two slots free.
    t.lanes = 2;
    t.lane_cap = std::max(1, settings.engine.batch - settings.engine.batch / 4);
    if (settings.storage.engine == config::storage_engine::postgres)
        t.liveness = std::chrono::duration_cast<std::chrono::milliseconds>(
            settings.storage.postgres.replica_timeout);
    worker = std::make_unique<lease_worker>(ioc, db, owner, t, std::move(h));
}

void engine::start() {
    impl_->worker->start();
}

void engine::notify() {
    impl_->worker->notify();
}

void engine::set_event_hub(events::event_hub* hub) {
    impl_->hub = hub;
}

asio::awaitable<void> engine::stop(std::chrono::milliseconds deadline) {
    auto self = impl_;
    co_await self->worker->stop(deadline);
}

asio::awaitable<void> engine::impl::run_claimed(store::job_row job,
                                                std::shared_ptr<const lease_state> lease,
                                                std::optional<prefetched> pre) {
    auto self = shared_from_this();
    if (job.failures >= settings.engine.max_job_failures) {
        co_await fail_poisoned(job, *lease);
        co_return;
    }
    std::string error;
    bool outage = false;  // the store (database, blob store) was out of reach or too busy
    try {
        co_await run_job(job, *lease, std::move(pre));
        co_return;
    } catch (const store::blob_failure& e) {
        error = e.what();
        outage = e.error.code == store::blob_errc::backend;
    } catch (const store::store_error& e) {
        error = e.what();
        outage = e.busy();
    } catch (const std::exception& e) {
        error = e.what();
    }
    // A run that threw because its task ended under it (a cancel removes the scratch files a
    // mirror was writing) is not a failure: its jobs went with the task, so it would never run
    // again, and saying so at error level misled (found by a black-box run).
    bool ended = false;
    try {
        ended = co_await done_if_task_ended(job, error);
    } catch (const std::exception&) {
        // Unknown: counted as a failed run below, as before.
    }
    if (ended)
        co_return;
    // The run threw (a task whose data the engine cannot use, a store failure): record a failed
    // run and try again later, up to max_job_failures runs in a row.
    jobs.with({job.kind, outage ? "store_error" : "crashed"}).inc();
    log::write(outage ? log::level::warn : log::level::error,
               outage ? "job failed: the store was out of reach or too busy; it runs again later"
                      : "job failed; it runs again later",
               {{"task_id", job.task_id},
                {"kind", job.kind},
                {"failures", job.failures + 1},
                {"error", error}});
    // A run the store failed (an outage, a connection-slot shortage) waits longer before the
    // next: engine.max_job_failures such runs then span minutes, not seconds, so a short outage
    // does not fail a task whose outputs the provider has made (found by a black-box run); one
    // that lasts still ends it, bounded.
    const std::int64_t delay =
        std::min<std::int64_t>(60'000, (outage ? 5000LL : 500LL) << std::min(job.failures, 7));
    try {
        co_await db.write(
            [&](store::transaction& tx) { tx.fail_job(lease_of(job, *lease), now_ms() + delay); });
    } catch (const std::exception& e) {
        // The lease expires instead, which counts as a failed run too.
        log::error("recording a failed job run failed", {{"error", e.what()}});
    }
    worker->notify();
}

asio::awaitable<void> engine::impl::fail_poisoned(const store::job_row& job,
                                                  const lease_state& lease) {
    auto self = shared_from_this();
    std::string final_status, provider = "none";
    store::millis created_at = 0;
    transition::result res;
    co_await db.write([&](store::transaction& tx) {
        res = {};
        if (!tx.complete_job(lease_of(job, lease)))
            return;
        auto t = tx.get_task(job.task_id);
        if (!t || is_terminal(parse_task_status(t->status).value_or(task_status::failed)))
            return;
        auto outs = tx.get_outputs(t->id);
        auto attempts = tx.get_attempts(t->id);
        store::attempt_row* attempt = nullptr;
        if (!attempts.empty() && attempts.back().finished_at == 0)
            attempt = &attempts.back();
        auto err = error_object("internal", error_class::unknown,
                                "the gateway could not run this task's " + job.kind + " job (" +
                                    std::to_string(job.failures) +
                                    " failed runs in a row); it was stopped",
                                t->provider);
        if (attempt) {
            attempt->status = "failed";
            attempt->finished_at = now_ms();
            attempt->error_json = util::json_text(err);
        }
        trans.finalize(tx, *t, outs, attempt, err, res);
        if (attempt)
            tx.upsert_attempt(*attempt);
        final_status = t->status;
        created_at = t->created_at;
        if (!t->provider.empty())
            provider = t->provider;
    });
    count(res.metrics);
    jobs.with({job.kind, "poisoned"}).inc();
    if (!final_status.empty()) {
        log::error("job failed too often; its task failed",
                   {{"task_id", job.task_id}, {"kind", job.kind}, {"failures", job.failures}});
        finished(job.task_id, provider, final_status, created_at);
    }
}

asio::awaitable<providers::update> engine::impl::call_provider(providers::provider& p,
                                                               const providers::task_view& view,
                                                               providers::services& svc,
                                                               const std::string& provider_name,
                                                               bool acquired) {
    providers::update u;
    try {
        u = co_await p.submit(view, svc);
    } catch (const std::exception& e) {
        u = provider_error(e);
    }
    // Only failures that say something about the provider's health count (not a source host
    // that is down).
    if (acquired)
        breaker_result(
            provider_name,
            !(u.what == providers::update::kind::failed && !u.source_failure &&
              (u.error == error_class::transient || u.error == error_class::rate_limited)));
    co_return u;
}

asio::awaitable<void> engine::impl::run_job(store::job_row job, const lease_state& lease,
                                            std::optional<prefetched> pre) {
    auto self = shared_from_this();
    if (!known_job_kind(job.kind)) {
        // A kind a newer version schedules: this replica is the older one of a rolling upgrade
        // (or the fleet was rolled back). Left for a replica that knows it, never dropped: a
        // dropped job is a task that waits forever with its credits held.
        log::warn("a job of a kind this version does not know; left for a newer replica",
                  {{"kind", job.kind}, {"task_id", job.task_id}});
        co_await db.write([&](store::transaction& tx) {
            tx.reschedule_job(lease_of(job, lease), now_ms() + unknown_kind_retry_ms,
                              job.payload_json);
        });
        jobs.with({"unknown", "postponed"}).inc();
        co_return;
    }
    if (job.kind == "mirror") {
        // Copying a provider's files into the blob store (core/mirror.hpp).
        auto res = co_await mirror->run(job, lease);
        co_await after(res, job.task_id, res.provider);
        jobs.with({"mirror", "ok"}).inc();
        co_return;
    }
    std::optional<store::task_row> task;
    std::vector<store::attempt_row> attempts;
    breaker_slot slot;         // attempt 1's call slot, when the create wrote its intent
    std::string intent_token;  // and its callback token
    if (pre) {
        task = std::move(pre->task);
        attempts = std::move(pre->attempts);
        if (pre->slot)
            slot = std::move(*pre->slot);
        intent_token = std::move(pre->callback_token);
    } else {
        co_await db.read([&](store::transaction& tx) {
            task = tx.get_task(job.task_id);
            if (task)
                attempts = tx.get_attempts(job.task_id);
        });
    }
    if (!task || is_terminal(parse_task_status(task->status).value_or(task_status::failed))) {
        co_await db.write([&](store::transaction& tx) { tx.complete_job(lease_of(job, lease)); });
        co_await remove_work_dir(job.task_id);  // e.g. canceled while a poll was due
        jobs.with({job.kind, "obsolete"}).inc();
        co_return;
    }
    extend_request req = request_from_json(task->request_json);
    const std::string provider_name = provider_of(*task, req);
    providers::provider* p = registry.find(provider_name);

    providers::task_view view;
    view.task_id = task->id;
    view.tenant = task->tenant;
    view.request = req;
    store::local_blob input;  // the upload's local copy, held until the provider is done
    if (req.source == source_kind::file && !req.audio_file_id.empty() &&
        (job.kind == "submit" || job.kind == "poll")) {
        std::optional<store::file_row> f;
        co_await db.read([&](store::transaction& tx) { f = tx.get_file(req.audio_file_id); });
        if (f) {
            input = co_await local_input(*f);
            view.input_path = input.path;
        }
    }
    const store::attempt_row* latest = attempts.empty() ? nullptr : &attempts.back();
    int attempt_number = latest ? latest->number : 0;
    const fs::path work = work_dir_of(task->id);
    providers::services svc{
        blocking, work.string(), http, fetch, settings.api.max_upload_bytes, url_policy, {}};
    if (!settings.api.public_base_url.empty())
        svc.signed_file_url = [this](const std::string& file_id, std::chrono::seconds ttl) {
            return settings.api.public_base_url +
                   core::signed_file_path(settings.api.url_signing_key, file_id,
                                          now_ms() / 1000 + ttl.count());
        };

    // Asks the provider for the latest attempt's state (p and latest set).
    auto poll_latest = [&]() -> asio::awaitable<providers::update> {
        view.attempt = latest->number;
        view.provider_task_id = latest->provider_task_id;
        view.state_json = latest->state_json;
        co_await blocking.run([work] { fs::create_directories(work); });
        try {
            co_return co_await p->poll(view, svc);
        } catch (const std::exception& e) {
            co_return provider_error(e);
        }
    };
    providers::update u;
    if (!p) {
        u.what = providers::update::kind::failed;
        u.error = error_class::rejected;
        u.error_code = "unknown_provider";
        u.error_message = "provider '" + provider_name + "' is not configured";
    } else if (job.kind == "submit" && slot && latest && latest->status == "submitting") {
        // Handed off by the create, or claimed, whose commit wrote this attempt's intent: the
        // call goes out now. A lost lease sends nothing; the job's next claim then reconciles
        // the intent as an interrupted submit.
        view.attempt = attempt_number;
        view.state_json = latest->state_json;  // a preparation's state (claim_intent)
        set_callback(view, provider_name, std::move(intent_token));
        if (lease.lost) {
            jobs.with({"submit", "lease_lost"}).inc();
            co_return;
        }
        u = co_await call_provider(*p, view, svc, provider_name, slot.take() != nullptr);
    } else if (job.kind == "submit" && latest && latest->status == "submitting") {
        // The previous run of this job died mid-submit (a crash, a kill): the request may have
        // reached the provider. Never resubmit blindly: reconcile it like any ambiguous submit.
        u.what = providers::update::kind::failed;
        u.error = error_class::transient;
        u.error_code = "interrupted_submit";
        u.error_message =
            "the submit's outcome was not recorded (the gateway stopped, or lost its database, "
            "while submitting); the provider may have the task";
        u.ambiguous = true;
        jobs.with({"submit", "interrupted"}).inc();
    } else if (job.kind == "submit") {
        // The provider's circuit breaker and concurrency limit come first.
        auto* br = breaker_for(provider_name);
        bool circuit_open = false;
        std::int64_t open_left_ms = 0;
        bool acquired = false;
        if (br) {
            const auto now = steady_ms();
            acquired = br->try_acquire(now);
            if (!acquired) {
                if (br->current(now) != circuit_breaker::state::open) {
                    // At the concurrency limit (or a half-open probe is out): wait a moment,
                    // without spending an attempt.
                    co_await db.write([&](store::transaction& tx) {
                        tx.reschedule_job(lease_of(job, lease), now_ms() + 250, job.payload_json);
                    });
                    jobs.with({"submit", "throttled"}).inc();
                    co_return;
                }
                circuit_open = true;
                open_left_ms = std::max<std::int64_t>(0, br->open_until_ms() - now);
            }
        }
        set_callback(view, provider_name, util::random_id("cb_"));
        // The intent: the attempt is recorded ("submitting") and durable before anything
        // leaves, so a crash or a lost lease mid-submit is visible and reconciled, never
        // resubmitted blindly. Written only while this claim still holds the job (fenced):
        // a claim that lost its lease sends nothing.
        const auto a =
            next_intent(task->id, provider_name, attempts, view.callback_token, now_ms());
        attempt_number = a.number;
        view.attempt = attempt_number;
        view.state_json = a.state_json;
        bool intent = false;
        bool stale = false;
        try {
            if (lease.lost)
                throw lease_lost();
            co_await db.write([&](store::transaction& tx) {
                const auto now = now_ms();
                const auto until =
                    tx.clock_ms() + static_cast<store::millis>(settings.engine.lease.count());
                if (!tx.renew_jobs(owner, {{job.id, job.attempts}}, until).empty())
                    throw lease_lost();
                auto t = tx.get_task(task->id);
                if (!t || is_terminal(parse_task_status(t->status).value_or(task_status::failed)))
                    return;
                // A provider already took this task (a run of this job that outlived its lease,
                // and the task still waits for its mirrors): submitting again would generate it
                // twice upstream. The job is done.
                if (const auto cur = tx.get_attempts(task->id);
                    !cur.empty() &&
                    (cur.back().status == "accepted" || cur.back().status == "succeeded")) {
                    tx.complete_job(lease_of(job, lease));
                    stale = true;
                    return;
                }
                t->provider = provider_name;
                t->updated_at = now;
                tx.update_task(*t);
                tx.upsert_attempt(a);
                intent = true;
            });
        } catch (const lease_lost&) {
            if (acquired)
                br->release();  // nothing was sent: the slot (maybe a half-open probe) goes back
            jobs.with({"submit", "lease_lost"}).inc();
            co_return;
        } catch (...) {
            if (acquired)
                br->release();
            throw;
        }
        if (!intent) {
            if (acquired)
                br->release();
            if (stale)
                jobs.with({"submit", "obsolete"}).inc();
            co_return;  // canceled meanwhile (the cancel removed the job), or stale (done above)
        }
        if (circuit_open) {
            u.what = providers::update::kind::failed;
            u.error = error_class::transient;
            u.error_code = "circuit_open";
            u.error_message = "provider '" + provider_name +
                              "' is failing: its circuit is open for another " +
                              std::to_string(open_left_ms) + " ms; nothing was sent";
            u.retry_after_ms = open_left_ms;
        } else {
            u = co_await call_provider(*p, view, svc, provider_name, acquired);
        }
    } else if (job.kind == "poll") {
        if (!latest) {
            co_await db.write(
                [&](store::transaction& tx) { tx.complete_job(lease_of(job, lease)); });
            co_return;
        }
        // An attempt the provider accepted and never finished (no webhook, and polls that
        // only ever say it is queued) ends at retry.attempt_deadline, without asking again.
        if (const auto by = trans.attempt_due_by(*latest); by && now_ms() >= *by) {
            std::vector<store::output_row> outs;
            co_await db.read([&](store::transaction& tx) { outs = tx.get_outputs(task->id); });
            u = trans.deadline_update(*latest, outs, now_ms());
        } else {
            u = co_await poll_latest();
        }
    } else if (job.kind == "reconcile") {
        // An ambiguous submit (timeout or reset after sending): did the attempt show up since
        // (its callback came, it got an upstream id, outputs moved)? Then it lives upstream:
        // keep following it. Otherwise it never arrived, and the failure is decided again as
        // a plain transient one (retry or fail over) — never a blind resubmit before this.
        if (!latest) {
            co_await db.write(
                [&](store::transaction& tx) { tx.complete_job(lease_of(job, lease)); });
            co_return;
        }
        bool evidence = latest->status != "unknown" || seen_upstream(*latest);
        co_await db.read([&](store::transaction& tx) {
            for (const auto& o : tx.get_outputs(task->id))
                if (o.status != to_string(output_status::pending))
                    evidence = true;
        });
        // Upstream, but known by no id to poll it by (only callbacks that name no upstream
        // task came, e.g. MusicGPT's lyrics): ask the provider, which may look the attempt up by
        // what those callbacks named (MusicGPT: a conversion); if it cannot yet, look again
        // after the provider's window, by when another callback may have named the task, until
        // the task's retry deadline. Then the attempt has failed as a task the provider took
        // and never delivered: never sent again.
        const bool unnamed = evidence && latest->provider_task_id.empty() && p &&
                             p->caps().polling && seen_upstream(*latest);
        const auto now = now_ms();
        const store::millis give_up = retry.deadline_ms > 0
                                          ? task->created_at + retry.deadline_ms
                                          : latest->started_at + 3'600'000;  // no deadline: an hour
        std::optional<providers::update> found;
        if (unnamed && now < give_up) {
            found = co_await poll_latest();
            // Nothing learned (still running, no task named): look again later.
            if (found->what == providers::update::kind::running && found->provider_task_id.empty())
                found.reset();
        }
        if (found) {
            // Applied as a poll's answer: it names the task (this job, kept, then finds it
            // named and hands over to a poll), or delivers, or fails the attempt upstream.
            attempt_number = latest->number;
            u = std::move(*found);
            jobs.with({"reconcile", "looked_up"}).inc();
        } else if (evidence && !(unnamed && now >= give_up)) {
            const auto again =
                now + std::max<std::int64_t>(1000, p ? p->caps().reconcile_window_ms : 0);
            co_await db.write([&](store::transaction& tx) {
                if (unnamed) {
                    tx.reschedule_job(lease_of(job, lease), again, job.payload_json);
                    return;
                }
                if (!tx.complete_job(lease_of(job, lease)))
                    return;
                if (!latest->provider_task_id.empty() && p && p->caps().polling) {
                    store::job_row poll;
                    poll.kind = "poll";
                    poll.task_id = task->id;
                    poll.due_at = now_ms();
                    tx.schedule_job(poll, true);
                }
            });
            jobs.with({"reconcile", unnamed ? "unnamed_upstream" : "found_upstream"}).inc();
            co_return;
        } else {
            attempt_number = latest->number;
            u.what = providers::update::kind::failed;
            u.error = error_class::transient;
            if (unnamed) {
                u.error_code = "upstream_silent";
                u.error_message =
                    "the provider took the attempt (its callbacks came) but never named its "
                    "task nor delivered it before the task's retry deadline";
            } else {
                u.error_code = "ambiguous_unresolved";
                u.error_message =
                    "the submit's outcome stayed unknown (no callback, no upstream id): "
                    "treated as not received";
            }
        }
    } else {
        throw std::logic_error("job kind " + job.kind + " was checked at the top of run_job");
    }
    // What a submit's answer says of the provider's task, kept in case the result cannot be
    // applied for a lost lease (below).
    const bool named_upstream = job.kind == "submit" && !u.provider_task_id.empty() &&
                                u.what != providers::update::kind::failed &&
                                u.what != providers::update::kind::prepared;
    const std::string upstream_task = named_upstream ? u.provider_task_id : std::string();
    const std::string upstream_state = named_upstream ? u.state_json : std::string();
    bool lost = false;
    std::string failure;  // why applying the result failed, other than a lost lease
    try {
        if (std::any_of(u.outputs.begin(), u.outputs.end(),
                        [](const providers::output_update& o) { return o.mp3 || o.wav; }))
            co_await verify_local(u, req);
        co_await apply(job.task_id, &job, &lease, provider_name, attempt_number, std::move(u));
        jobs.with({job.kind, "ok"}).inc();
    } catch (const lease_lost&) {
        lost = true;
    } catch (const std::exception& e) {
        failure = e.what();
    }
    if (!lost && failure.empty())
        co_return;
    if (co_await done_if_task_ended(job, failure))
        co_return;
    if (lost && named_upstream) {
        // The provider took the submit and named its task, but this claim's lease ended before
        // the answer could be recorded (the store was out of reach longer than engine.lease,
        // or the process stalled): another claim has found the submit interrupted and waits
        // to reconcile it. The answer is the provider's word that the attempt exists: record
        // it (its task, unless a newer attempt replaced this one), as a callback would be, so
        // the attempt is followed by polls and the song is never submitted again.
        jobs.with({job.kind, "lease_lost"}).inc();
        try {
            co_await record_upstream(job.task_id, provider_name, attempt_number, upstream_task,
                                     upstream_state, view.state_json);
            log::warn(
                "job lease lost after the provider took the submit; recorded its task so "
                "the submit is not sent again",
                {{"task_id", job.task_id},
                 {"attempt", attempt_number},
                 {"provider", provider_name},
                 {"provider_task_id", upstream_task}});
        } catch (const std::exception& e) {
            log::error(
                "job lease lost after the provider took the submit; recording its task "
                "failed",
                {{"task_id", job.task_id},
                 {"provider_task_id", upstream_task},
                 {"error", e.what()}});
        }
    } else if (lost) {
        jobs.with({job.kind, "lease_lost"}).inc();
        log::warn("job lease lost; result dropped", {{"task_id", job.task_id}, {"kind", job.kind}});
    } else {
        jobs.with({job.kind, "store_error"}).inc();
        log::error("applying job result failed; the job runs again once the store takes a write",
                   {{"task_id", job.task_id}, {"kind", job.kind}, {"error", failure}});
        co_await run_again_soon(job, lease, provider_name, attempt_number, upstream_task,
                                upstream_state, view.state_json);
    }
}

// A result the store did not take (the database out of reach or too busy, the blob store out of
// connections): the job runs again as soon as the store takes a write, instead of when its
// lease ends (engine.lease, minutes). A submit the provider named is first recorded as the
// provider's word, as after a lost lease, so the run again finds the attempt upstream and
// follows it; an unnamed one is reconciled as an interrupted submit, never sent blindly. Tried
// with backoff while this claim's lease may still hold; after that another claim takes the job.
asio::awaitable<void> engine::impl::run_again_soon(
    const store::job_row& job, const lease_state& lease, const std::string& provider_name,
    int attempt_number, const std::string& upstream_task, const std::string& upstream_state,
    const std::string& state_if) {
    const auto give_up = std::chrono::steady_clock::now() + settings.engine.lease;
    bool recorded = upstream_task.empty();
    auto timer = asio::steady_timer(co_await asio::this_coro::executor);
    for (int tries = 0;; ++tries) {
        const std::chrono::milliseconds delay(backoff_ceiling_ms(store_retry_backoff, tries));
        if (lease.lost || std::chrono::steady_clock::now() + delay >= give_up)
            break;
        timer.expires_after(delay);
        co_await timer.async_wait(asio::as_tuple(asio::use_awaitable));
        try {
            if (!recorded) {
                co_await record_upstream(job.task_id, provider_name, attempt_number, upstream_task,
                                         upstream_state, state_if);
                recorded = true;
            }
            co_await db.write([&](store::transaction& tx) {
                tx.reschedule_job(lease_of(job, lease), now_ms(), job.payload_json);
            });
            log::info("the job whose result the store did not take runs again",
                      {{"task_id", job.task_id}, {"kind", job.kind}});
            co_return;
        } catch (const std::exception&) {
            // Still out of reach: wait longer.
        }
    }
}

asio::awaitable<engine::impl::applied> engine::impl::apply(
    const std::string& task_id, const store::job_row* job, const lease_state* lease,
    const std::string& provider_name, int attempt_number, providers::update u) {
    // Locally produced files go into the blob store (off the IO thread), each under a key of
    // its own, then are registered in the same transaction as the outputs that point at them.
    std::map<std::string, store::file_row> files;  // by local path
    auto stage = [&](const providers::local_file& lf) {
        if (files.count(lf.path))
            return;
        store::file_row f;
        f.id = util::sortable_id("file_");
        f.kind = "output";
        f.content_type = lf.content_type;
        f.path = "outputs/" + task_id + "/" + f.id + "-" + fs::path(lf.path).filename().string();
        files[lf.path] = f;
    };
    for (const auto& o : u.outputs) {
        if (o.mp3)
            stage(*o.mp3);
        if (o.wav)
            stage(*o.wav);
    }
    if (u.cover_file)
        stage(*u.cover_file);
    // Removes what was stored of `files` when nothing will point at it.
    auto unstore = [this, &files] {
        for (const auto& [path, f] : files)
            if (f.size >= 0)
                (void)blobs.remove(f.path);
    };
    if (!files.empty()) {
        // A file that cannot be stored throws: the job runs again later and the provider makes
        // it again (the files it made are taken by the store, or left where they were).
        co_await blocking.run([&] {
            for (auto& [path, f] : files)
                f.size = -1;
            try {
                std::vector<store::blob_put> set;
                for (auto& [path, f] : files) {
                    f.sha256 = util::sha256_file_hex(path);
                    set.push_back({f.path, path});
                }
                const auto sizes = blobs.put_all(set, store::put_mode::take).value();
                std::size_t i = 0;
                for (auto& [path, f] : files)
                    f.size = static_cast<std::int64_t>(sizes[i++]);
            } catch (...) {
                unstore();
                throw;
            }
        });
    }

    // Load, apply (no I/O: core/transition), save.
    transition::result res;
    bool changed = false;
    std::exception_ptr failed;
    try {
        co_await db.write([&](store::transaction& tx) {
            task_work work(task_work::load(tx, task_id, attempt_number));
            // Only a webhook's outcome says whether it changed anything (duplicate or applied):
            // a job's run keeps no copy of what it loaded.
            std::optional<task_work::snapshot> before;
            if (!job)
                before = work.state();
            res =
                trans.apply(work, task_id, job, provider_name, attempt_number, u, files, now_ms());
            changed = !before || work.changes(*before);
            if (!task_work::save(
                    tx, work.effects(),
                    job ? std::optional<store::lease_ref>(lease_of(*job, *lease)) : std::nullopt))
                throw lease_lost();
        });
    } catch (...) {
        failed = std::current_exception();
    }
    if (failed) {
        // Nothing points at the files just stored (a new run stores its own).
        if (!files.empty())
            co_await blocking.run(unstore);
        std::rethrow_exception(failed);
    }
    // Webhooks apply on whichever IO thread took them: the worker is told by a post.
    co_await after(res, task_id, provider_name);
    co_return res.superseded ? applied::superseded
    : changed                ? applied::changed
                             : applied::unchanged;
}

engine::event_context engine::event_context_of(const std::string& request_json) {
    event_context c;
    try {
        auto req = request_from_json(request_json);
        // Re-serialized from the parsed object: the text spliced into events is valid JSON.
        if (auto md = parse_object(req.metadata_json); !md.empty())
            c.metadata_json = util::json_text(md);
        c.webhook_url = req.webhook_url.value_or("");
    } catch (const std::exception&) {
        // A request that does not parse: its events carry no metadata and go nowhere.
    }
    return c;
}

engine::event_context engine::event_context_of(const extend_request& req) {
    event_context c;
    // The validator stores metadata as serialized JSON of an object.
    if (req.metadata_json != "{}")
        c.metadata_json = req.metadata_json;
    c.webhook_url = req.webhook_url.value_or("");
    return c;
}

store::event_row engine::append_event(store::transaction& tx, const store::task_row& task,
                                      std::string_view type, json::object data,
                                      const event_context* ctx) {
    data["task_id"] = task.id;
    data["status"] = task.status;
    if (!task.provider.empty())
        data["provider"] = task.provider;
    event_context parsed;
    if (ctx == nullptr) {
        parsed = event_context_of(task.request_json);
        ctx = &parsed;
    }
    const std::string& webhook_url = ctx->webhook_url;
    store::event_row e;
    e.task_id = task.id;
    e.tenant = task.tenant;
    e.type = std::string(type);
    e.data_json = util::json_text(data);
    if (!ctx->metadata_json.empty() && !data.contains("metadata")) {
        // Spliced in as text, last (data is a non-empty object: it has task_id).
        e.data_json.pop_back();
        e.data_json.append(",\"metadata\":").append(ctx->metadata_json).push_back('}');
    }
    auto row = tx.append_event(std::move(e));
    // The outbox: the delivery commits with the event, or neither does.
    if (!webhook_url.empty()) {
        store::delivery_row d;
        d.id = util::sortable_id("dlv_");
        d.event_id = row.id;
        d.task_id = row.task_id;
        d.tenant = row.tenant;
        d.seq = row.seq;
        d.url = webhook_url;
        d.event_at = d.created_at = d.updated_at = d.next_at = row.created_at;
        if (tx.endpoint_gone(d.tenant, d.url)) {
            d.status = "dead";
            d.last_error = "the endpoint answered 410 Gone earlier; redeliver to resume";
        } else {
            d.status = "pending";
        }
        tx.insert_delivery(d);
    }
    return row;
}

engine::handoff::handoff(handoff&& o) noexcept
    : engine_(std::move(o.engine_)),
      owner_(std::move(o.owner_)),
      lease_ms_(o.lease_ms_),
      job_id_(o.job_id_),
      slot_(std::exchange(o.slot_, nullptr)),
      provider_(std::move(o.provider_)),
      callback_token_(std::move(o.callback_token_)),
      intent_(std::move(o.intent_)) {
    o.engine_.reset();
}

engine::handoff& engine::handoff::operator=(handoff&& o) noexcept {
    if (this != &o) {
        handoff old(std::move(*this));  // frees what this one held
        engine_ = std::move(o.engine_);
        o.engine_.reset();
        owner_ = std::move(o.owner_);
        lease_ms_ = o.lease_ms_;
        job_id_ = o.job_id_;
        slot_ = std::exchange(o.slot_, nullptr);
        provider_ = std::move(o.provider_);
        callback_token_ = std::move(o.callback_token_);
        intent_ = std::move(o.intent_);
    }
    return *this;
}

engine::handoff::~handoff() {
    if (slot_)
        slot_->release();  // no call was made
    if (engine_)
        engine_->worker->unreserve(submit_lane);
}

engine::handoff engine::reserve(std::string_view provider) {
    handoff h;
    if (!impl_->worker->reserve(submit_lane)) {
        impl_->handoffs.with({"saturated"}).inc();
        return h;
    }
    h.engine_ = impl_;
    h.owner_ = impl_->owner;
    h.lease_ms_ = static_cast<store::millis>(
        std::chrono::duration_cast<std::chrono::milliseconds>(impl_->settings.engine.lease)
            .count());
    // The provider call's slot now, so the create can write the call's intent with the task.
    if (impl_->registry.find(provider))
        if (auto* br = impl_->breaker_for(provider); br && br->try_acquire(steady_ms())) {
            h.slot_ = br;
            h.provider_ = std::string(provider);
            h.callback_token_ = util::random_id("cb_");
        }
    return h;
}

void engine::hand_off(handoff h, const store::task_row& task) {
    if (!h)
        return;
    if (h.job_id_ == 0) {
        // The create wrote no job: nothing to run; the destructor frees the slot.
        return;
    }
    auto self = std::move(h.engine_);  // the reservation passes to adopt()
    store::job_row j;
    j.id = h.job_id_;
    j.kind = "submit";
    j.task_id = task.id;
    j.due_at = task.created_at;
    j.lease_owner = self->owner;
    j.attempts = 1;
    impl::prefetched pre;
    pre.task = task;  // as create_task wrote it; a new task has no attempts but its intent
    if (h.intent_) {
        pre.attempts.push_back(std::move(*h.intent_));
        pre.slot = std::make_shared<breaker_slot>(std::exchange(h.slot_, nullptr));
        pre.callback_token = std::move(h.callback_token_);
    }
    self->handoffs.with({"handed_off"}).inc();
    self->worker->adopt(self->item_of(std::move(j), std::move(pre)));
}

void engine::create_task(store::transaction& tx, const store::task_row& task,
                         const event_context* ctx, handoff* h) {
    tx.insert_task(task);
    for (int i = 1; i <= task.num_outputs; ++i) {
        store::output_row o;
        o.task_id = task.id;
        o.index = i;
        o.status = std::string(to_string(output_status::pending));
        o.data_json = "{}";
        o.updated_at = task.created_at;
        tx.upsert_output(o);
    }
    json::object d;
    d["num_outputs"] = task.num_outputs;
    append_event(tx, task, event_type::queued, std::move(d), ctx);
    store::job_row j;
    j.kind = "submit";
    j.task_id = task.id;
    j.due_at = task.created_at;
    if (h && *h) {
        // Leased to the local engine (fence 1, as a first claim), by the store's clock as
        // claims are: no claim round takes it until the lease expires unrenewed.
        j.lease_owner = h->owner_;
        j.lease_for = h->lease_ms_;  // from the store's clock, in the insert
        j.attempts = 1;
    }
    // Not `unique`: the task is new, no job of it can exist (saves a lookup per create).
    const auto id = tx.schedule_job(j, false);
    if (h) {
        h->job_id_ = id;
        // The first attempt's intent, in this commit (see handoff): the job sends at once.
        if (*h && h->slot_ && h->provider_ == task.provider) {
            h->intent_ =
                next_intent(task.id, h->provider_, {}, h->callback_token_, task.created_at);
            tx.upsert_attempt(*h->intent_);
        }
    }
}

asio::awaitable<engine::webhook_outcome> engine::handle_webhook(std::string provider,
                                                                std::string token,
                                                                providers::inbound_webhook hook,
                                                                std::string* error) {
    auto self = impl_;
    auto& counter = self->webhooks;
    // Tokens are looked up by their SHA-256: timing can reveal nothing usable about a token.
    const std::string hash = util::sha256_hex(token);
    // Only configured providers' names ever reach a metric label.
    providers::provider* p = self->registry.find(provider);
    if (!p)
        co_return webhook_outcome::unknown_token;
    std::optional<store::attempt_row> attempt;
    std::optional<store::task_row> task;
    std::optional<providers::update> u;
    providers::webhook_refusal refused;
    // A callback that overtook the submit's answer names what the attempt learns from that
    // answer a moment later (on this replica or another): read the attempt again, for up to
    // early_webhook_wait, before refusing it. The sender's request stays open meanwhile; no
    // thread waits. With the event hub, the read comes when the task's next events commit
    // (the answer's commit always appends extension.submitted, here or on another replica;
    // a lost notification channel wakes every waiter), and once more at the deadline;
    // without it, reads back off from 20 to 200 ms.
    const auto until = std::chrono::steady_clock::now() + early_webhook_wait;
    std::chrono::milliseconds pause =
        self->hub ? early_webhook_wait : std::chrono::milliseconds(20);
    const auto pause_cap = self->hub ? early_webhook_wait : std::chrono::milliseconds(200);
    std::unique_ptr<events::event_hub::subscription> sub;
    std::shared_ptr<asio::steady_timer> wait_timer;
    auto woken = std::make_shared<std::atomic<bool>>(false);
    for (;;) {
        attempt.reset();
        task.reset();
        co_await self->db.read([&](store::transaction& tx) {
            attempt = tx.find_attempt_by_token(hash);
            if (attempt)
                task = tx.get_task(attempt->task_id);
        });
        if (!attempt || !task || attempt->provider != provider ||
            !util::constant_time_equal(attempt->callback_token, hash)) {
            counter.with({provider, "unknown", "unknown_token"}).inc();
            co_return webhook_outcome::unknown_token;
        }
        providers::task_view view;
        view.task_id = task->id;
        view.tenant = task->tenant;
        view.attempt = attempt->number;
        view.request = request_from_json(task->request_json);
        view.provider_task_id = attempt->provider_task_id;
        view.state_json = attempt->state_json;
        refused = {};
        u = p->on_webhook(view, hook, refused);
        // An attempt whose submit's outcome is unknown ("unknown": the answer was lost, or the
        // process that sent it died) waits for no answer, only for its reconcile, which would
        // take a callback held here for not received and send the song again: recorded now.
        if (u || !refused.too_early || std::chrono::steady_clock::now() >= until ||
            attempt->status == "unknown" ||
            is_terminal(parse_task_status(task->status).value_or(task_status::failed)))
            break;
        const auto executor = co_await asio::this_coro::executor;
        if (!wait_timer)
            wait_timer = std::make_shared<asio::steady_timer>(executor);
        if (self->hub && !sub) {
            // Read once more at once after subscribing: a commit before it woke nobody.
            sub = self->hub->subscribe(task->id, [t = wait_timer, woken, executor] {
                woken->store(true);
                // Expiring (not just cancelling) also ends a wait that starts after this runs.
                asio::post(executor, [t] { t->expires_at(asio::steady_timer::time_point::min()); });
            });
            continue;
        }
        bool by_commit = woken->exchange(false);
        if (!by_commit) {
            wait_timer->expires_after(std::min<std::chrono::steady_clock::duration>(
                pause, until - std::chrono::steady_clock::now()));
            co_await wait_timer->async_wait(asio::as_tuple(asio::use_awaitable));
            by_commit = woken->exchange(false);
        }
        if (self->hub)
            self->early_waits.with({provider, by_commit ? "commit" : "timer"}).inc();
        pause = std::min(pause * 2, pause_cap);
    }
    const bool names_new_task =
        !refused.upstream_task_id.empty() && attempt->provider_task_id.empty();
    if (!u && refused.too_early && (names_new_task || attempt->seen_at == 0) &&
        !is_terminal(parse_task_status(task->status).value_or(task_status::failed))) {
        // The wait is over and the attempt still knows nothing of what the callback names: its
        // submit's answer is lost (a timeout or a reset after sending) or very late. The
        // callback, which carries the attempt's own token, is the provider's word that the
        // attempt exists upstream: record that (store::attempt_row::seen_at) and the task it
        // names, if it names one, as an applied callback would, so the attempt is followed
        // (polled) and its submit is never sent again. The payload itself stays refused; its
        // content comes from the polls.
        try {
            co_await self->record_upstream(task->id, provider, attempt->number,
                                           refused.upstream_task_id, refused.state_json,
                                           attempt->state_json);
            counter.with({provider, "unknown", "upstream_recorded"}).inc();
            log::info(
                "refused provider webhook: recorded that the provider has the attempt (unless "
                "a newer attempt replaced it)",
                {{"provider", provider},
                 {"task_id", task->id},
                 {"attempt", attempt->number},
                 {"provider_task_id", refused.upstream_task_id}});
        } catch (const std::exception& e) {
            log::error("recording a refused webhook's upstream task failed",
                       {{"provider", provider}, {"task_id", task->id}, {"error", e.what()}});
        }
    }
    if (!u) {
        counter.with({provider, "unknown", refused.too_early ? "too_early" : "rejected"}).inc();
        log::warn("provider webhook refused", {{"provider", provider},
                                               {"task_id", task->id},
                                               {"error", refused.message},
                                               {"too_early", refused.too_early}});
        if (error)
            *error = refused.message;
        co_return webhook_outcome::rejected;
    }
    if (is_terminal(parse_task_status(task->status).value_or(task_status::failed))) {
        counter.with({provider, u->webhook_kind.empty() ? "unknown" : u->webhook_kind, "late"})
            .inc();
        co_return webhook_outcome::ignored;
    }
    const std::string kind = u->webhook_kind.empty() ? "unknown" : u->webhook_kind;
    const auto done =
        co_await self->apply(task->id, nullptr, nullptr, provider, attempt->number, std::move(*u));
    counter
        .with({provider, kind,
               done == impl::applied::changed     ? "applied"
               : done == impl::applied::unchanged ? "duplicate"
                                                  : "superseded"})
        .inc();
    co_return webhook_outcome::applied;
}

// Why an output a cancel ended was not made (its data's error, its output.failed event).
constexpr std::string_view canceled_output_error = "the task was canceled";

asio::awaitable<engine::cancel_outcome> engine::cancel(const std::string& task_id,
                                                       const std::string& tenant) {
    auto self = impl_;
    cancel_outcome outcome = cancel_outcome::not_found;
    std::string provider;
    int finish_attempt = 0;
    transition::result res;
    co_await self->db.write([&](store::transaction& tx) {
        res = {};
        outcome = cancel_outcome::not_found;
        auto t = tx.get_task(task_id);
        if (!t || t->tenant != tenant)
            return;
        if (is_terminal(parse_task_status(t->status).value_or(task_status::failed))) {
            outcome = cancel_outcome::already_final;
            return;
        }
        const auto now = now_ms();
        auto outs = tx.get_outputs(t->id);
        if (std::all_of(outs.begin(), outs.end(),
                        [](const store::output_row& o) {
                            return o.status == to_string(output_status::ready);
                        }) &&
            !outs.empty()) {
            // Every output is ready (in the gateway's hands: an output still being copied is
            // not, and is canceled and refunded like any other): nothing is left to stop but
            // the wait for lyrics or a cover. Finished below, not canceled, which would have
            // ended a fully made and charged task as "canceled".
            auto attempts = tx.get_attempts(t->id);
            if (!attempts.empty()) {
                outcome = cancel_outcome::finished;
                provider = attempts.back().provider;
                finish_attempt = attempts.back().number;
                return;
            }
        }
        t->status = std::string(to_string(task_status::canceled));
        for (auto& o : outs) {
            if (o.status != to_string(output_status::pending))
                continue;
            o.status = std::string(to_string(output_status::canceled));
            auto d = parse_object(o.data_json);
            d["error"] = std::string(canceled_output_error);
            o.data_json = util::json_text(d);
            o.updated_at = now;
            tx.upsert_output(o);
            // Every output ends with one event of its own, as one a provider did not make:
            // a client told per output (MusicGPT's callbacks) learns this one will not come.
            json::object e;
            e["index"] = o.index;
            e["output"] = public_output(d);
            append_event(tx, *t, event_type::output_failed, std::move(e));
        }
        auto attempts = tx.get_attempts(t->id);
        if (!attempts.empty() && attempts.back().finished_at == 0) {
            attempts.back().status = "canceled";
            attempts.back().finished_at = now;
            tx.upsert_attempt(attempts.back());
        }
        t->updated_at = now;
        tx.update_task(*t);
        transition::release_outstanding(tx, *t, res);
        append_event(tx, *t, event_type::canceled, {});
        tx.delete_jobs_for_task(t->id);
        provider = t->provider;
        outcome = cancel_outcome::canceled;
    });
    if (outcome == cancel_outcome::finished) {
        // As the attempt's deadline would: the provider's work counts as done.
        providers::update done;
        done.what = providers::update::kind::done;
        co_await self->apply(task_id, nullptr, nullptr, provider, finish_attempt, std::move(done));
        co_return outcome;
    }
    self->count(res.metrics);
    if (outcome == cancel_outcome::canceled) {
        self->finished(task_id, provider.empty() ? "none" : provider, "canceled", 0);
        // Its jobs are gone, so no run of them will remove its scratch files (a run already
        // under way removes them when it finds its lease gone).
        co_await self->remove_work_dir(task_id);
    }
    co_return outcome;
}

std::string engine::providers_json() const {
    const auto now = steady_ms();
    const auto wall = now_ms();
    json::array out;
    for (auto* p : impl_->registry.all()) {
        const std::string name(p->name());
        const auto& c = p->caps();
        json::object o;
        o["name"] = name;
        json::array sources;
        if (c.source_file &&
            (!c.file_by_public_url || !impl_->settings.api.public_base_url.empty()))
            sources.emplace_back("file");
        if (c.source_url)
            sources.emplace_back("url");
        if (c.source_clip)
            sources.emplace_back("clip");
        json::object caps;
        caps["sources"] = std::move(sources);
        caps["length"] = c.length;
        caps["max_outputs"] = c.max_outputs;
        caps["webhooks"] = c.webhooks;
        caps["polling"] = c.polling;
        o["capabilities"] = std::move(caps);
        o["price_per_output"] = credits_value(provider_price_milli(impl_->settings, name));
        if (auto* b = impl_->breaker_for(name)) {
            const auto s = b->snap(now);
            json::object br;
            br["state"] = to_string(s.st);
            br["consecutive_failures"] = s.consecutive_failures;
            br["window_requests"] = s.window_requests;
            br["window_failures"] = s.window_failures;
            br["in_flight"] = s.in_flight;
            br["times_opened"] = s.times_opened;
            if (s.st != circuit_breaker::state::closed && s.open_until_ms > 0)
                br["open_until"] = iso8601(wall + (s.open_until_ms - now));
            o["circuit"] = std::move(br);
            o["healthy"] = s.st == circuit_breaker::state::closed;
        }
        if (auto it = impl_->outcomes.find(name); it != impl_->outcomes.end()) {
            // Upstream results this replica saw: requests, failures and their ratio (null
            // without requests) over the last 5 and 60 minutes.
            json::object recent;
            for (const int span : {5, 60}) {
                const auto c = it->second->over(span, now);
                json::object w;
                w["requests"] = c.requests;
                w["failures"] = c.failures;
                w["error_rate"] = c.requests > 0 ? json::value(static_cast<double>(c.failures) /
                                                               static_cast<double>(c.requests))
                                                 : json::value(nullptr);
                recent[span == 5 ? "last_5m" : "last_60m"] = std::move(w);
            }
            o["recent"] = std::move(recent);
        }
        out.emplace_back(std::move(o));
    }
    json::object doc;
    doc["data"] = std::move(out);
    return util::json_text(doc);
}

}  // namespace segue::core

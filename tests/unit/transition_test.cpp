// core::transition without a store: a task snapshot and a provider update in, the recorded
// effects (task, outputs, attempts, events, ledger entries, jobs) out. One table of cases.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <algorithm>
#include <functional>
#include <string>
#include <vector>

#include "gateway/config/provider_config.hpp"
#include "gateway/config/settings.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/model.hpp"
#include "gateway/core/transition.hpp"

namespace json = boost::json;
using segue::core::task_work;
using segue::core::transition;
using segue::providers::update;
using kind = task_work::effect::kind;

namespace {

constexpr segue::store::millis now = 1'700'000'000'000;

// alpha costs 10 credits per output, beta 30.
struct priced final : segue::config::provider_config {
    explicit priced(double p) : p_(p) {}
    bool enabled() const override { return true; }
    double price() const override { return p_; }
    double p_;
};

segue::config::settings make_settings(bool mirror = false) {
    segue::config::settings s;
    // The tables below are about the provider's own updates; mirroring has its own (Mirror*).
    s.outputs.mirror.enabled = mirror;
    s.providers["alpha"] = std::make_shared<priced>(10);
    s.providers["beta"] = std::make_shared<priced>(30);
    return s;
}

segue::store::attempt_row attempt(int n, std::string provider, std::string status,
                                  std::string upstream = "") {
    segue::store::attempt_row a;
    a.task_id = "ext_t";
    a.number = n;
    a.provider = std::move(provider);
    a.status = std::move(status);
    a.provider_task_id = std::move(upstream);
    a.started_at = now - 10'000;
    return a;
}

// A task of `outputs` outputs at `provider` with `status`, a route of [alpha, beta], a hold of
// `hold` milli-credits, and `attempts`.
task_work::snapshot task(std::string status, int outputs,
                         std::vector<segue::store::attempt_row> attempts, std::int64_t hold = 0,
                         std::int64_t available = 1'000'000) {
    task_work::snapshot s;
    segue::store::task_row t;
    t.id = "ext_t";
    t.tenant = "acme";
    t.status = std::move(status);
    t.provider = "alpha";
    segue::core::extend_request r;
    r.source = segue::core::source_kind::url;
    r.audio_url = "https://cdn.example/in.mp3";
    r.num_outputs = outputs;
    r.route_chain = {"alpha", "beta"};
    t.request_json = segue::core::request_to_json(r);
    t.num_outputs = outputs;
    t.created_at = t.updated_at = now - 60'000;
    s.task = t;
    for (int i = 1; i <= outputs; ++i)
        s.outputs.push_back({"ext_t", i, "pending", "{}", t.created_at});
    s.attempts = std::move(attempts);
    s.ledger.hold = hold;
    s.tenant_available = available;
    return s;
}

segue::providers::output_update ready(int index) {
    segue::providers::output_update o;
    o.index = index;
    o.status = segue::core::output_status::ready;
    o.mp3_url = "https://cdn.example/out" + std::to_string(index) + ".mp3";
    o.title = "Out " + std::to_string(index);
    return o;
}

update failed(segue::core::error_class cls, std::string code) {
    update u;
    u.what = update::kind::failed;
    u.error = cls;
    u.error_code = std::move(code);
    u.error_message = "it failed";
    return u;
}

struct outcome {
    transition::result res;
    std::vector<task_work::effect> effects;
    task_work::snapshot after;

    std::vector<std::string> events() const {
        std::vector<std::string> out;
        for (const auto& e : effects)
            if (e.what == kind::append_event)
                out.push_back(e.event.type);
        return out;
    }
    std::vector<std::string> jobs() const {  // job effects, in order
        std::vector<std::string> out;
        for (const auto& e : effects) {
            if (e.what == kind::complete_job)
                out.push_back("complete");
            else if (e.what == kind::reschedule_job)
                out.push_back("reschedule");
            else if (e.what == kind::delete_jobs)
                out.push_back("delete_all");
            else if (e.what == kind::schedule_job)
                out.push_back("schedule " + e.job.kind);
        }
        return out;
    }
    std::vector<std::string> ledger() const {  // "kind:output:amount"
        std::vector<std::string> out;
        for (const auto& e : effects)
            if (e.what == kind::add_ledger)
                out.push_back(e.ledger.kind + ":" + std::to_string(e.ledger.output) + ":" +
                              std::to_string(e.ledger.amount_milli));
        return out;
    }
    std::string status() const { return after.task ? after.task->status : ""; }
    std::string attempt_status(int n) const {
        for (const auto& a : after.attempts)
            if (a.number == n)
                return a.status;
        return "";
    }
};

struct row {
    const char* name;
    std::function<task_work::snapshot()> given;
    bool from_job;  // the update came from a job (else a webhook)
    int attempt;
    std::function<update()> update_of;
    std::function<void(const outcome&)> expect;
    const char* job_kind = "poll";  // the job's kind, when from_job
};

outcome run(const row& r, bool mirror = false) {
    const auto settings = make_settings(mirror);
    segue::providers::capabilities polling;
    polling.polling = true;
    polling.reconcile_window_ms = 5000;
    segue::core::retry_settings retry;  // defaults: transient 3 tries, failover on
    retry.transient.max_attempts = 3;
    retry.transient.failover = true;
    retry.quota.max_attempts = 1;
    retry.quota.failover = true;
    retry.attempt_budget = 6;
    retry.deadline_ms = 3'600'000;
    retry.attempt_deadline_ms = 30 * 60'000;
    transition tr({settings, retry,
                   [&](std::string_view name) -> const segue::providers::capabilities* {
                       return name == "alpha" || name == "beta" ? &polling : nullptr;
                   },
                   [] { return 0.5; }});
    task_work w(r.given());
    segue::store::job_row job;
    job.id = 7;
    job.kind = r.job_kind;
    job.task_id = "ext_t";
    job.attempts = 1;
    outcome o;
    o.res = tr.apply(w, "ext_t", r.from_job ? &job : nullptr, "alpha", r.attempt, r.update_of(), {},
                     now);
    o.effects = w.effects();
    o.after = w.state();
    return o;
}

}  // namespace

TEST(Transition, Table) {
    using segue::core::error_class;
    const std::vector<row> rows = {
        {"accepted: submitted, a poll scheduled, the submit job done",
         [] { return task("queued", 2, {attempt(1, "alpha", "submitting")}, 20'000); }, true, 1,
         [] {
             update u;
             u.what = update::kind::accepted;
             u.provider_task_id = "up-1";
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.status(), "submitted");
             EXPECT_EQ(o.attempt_status(1), "accepted");
             EXPECT_EQ(o.events(), (std::vector<std::string>{"extension.submitted"}));
             EXPECT_EQ(o.jobs(), (std::vector<std::string>{"complete", "schedule poll"}));
             EXPECT_TRUE(o.ledger().empty());
             EXPECT_TRUE(o.res.notify);
         }},
        {"prepared: the attempt closes prepared, a submit of the next step is due",
         [] { return task("submitted", 1, {attempt(1, "alpha", "accepted", "upl-1")}); }, true, 1,
         [] {
             update u;
             u.what = update::kind::prepared;
             u.state_json = R"({"phase":"extend","clip_id":"c1"})";
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.attempt_status(1), "prepared");
             EXPECT_EQ(o.jobs(),
                       (std::vector<std::string>{"complete", "delete_all", "schedule submit"}));
             EXPECT_TRUE(o.events().empty());
             EXPECT_EQ(o.status(), "submitted");
         }},
        {"a transient submit failure: retried at the same provider",
         [] { return task("queued", 1, {attempt(1, "alpha", "submitting")}, 10'000); }, true, 1,
         [] { return failed(error_class::transient, "upstream_unavailable"); },
         [](const outcome& o) {
             EXPECT_EQ(o.attempt_status(1), "failed");
             EXPECT_EQ(o.events(), (std::vector<std::string>{"extension.retrying"}));
             EXPECT_EQ(o.jobs(),
                       (std::vector<std::string>{"complete", "delete_all", "schedule submit"}));
             EXPECT_EQ(o.after.task->provider, "alpha");
             ASSERT_EQ(o.res.metrics.size(), 2u);  // a failure and a retry, counted after commit
         }},
        {"refusals by an open circuit spend no attempt budget: nothing was sent",
         [] {
             // Six refusals already (the budget is 6): the seventh still fails over.
             std::vector<segue::store::attempt_row> as;
             for (int n = 1; n <= 6; ++n) {
                 auto a = attempt(n, "alpha", "failed");
                 a.error_json = R"({"code":"circuit_open","class":"transient"})";
                 as.push_back(a);
             }
             as.push_back(attempt(7, "alpha", "submitting"));
             return task("queued", 1, as, 10'000);
         },
         true, 7,
         [] {
             auto u = failed(error_class::transient, "circuit_open");
             u.retry_after_ms = 5000;
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.status(), "queued");
             EXPECT_EQ(o.after.task->provider, "beta");
             EXPECT_EQ(o.events(), (std::vector<std::string>{"extension.retrying"}));
         }},
        {"quota: failed over to the next provider, the hold re-priced",
         [] {
             // beta's default price differs from what is held: the hold follows it.
             return task("queued", 1, {attempt(1, "alpha", "submitting")}, 10'000);
         },
         true, 1, [] { return failed(error_class::quota, "insufficient_funds"); },
         [](const outcome& o) {
             EXPECT_EQ(o.after.task->provider, "beta");
             EXPECT_EQ(o.status(), "queued");
             EXPECT_EQ(o.events(), (std::vector<std::string>{"extension.retrying"}));
             EXPECT_EQ(o.jobs(),
                       (std::vector<std::string>{"complete", "delete_all", "schedule submit"}));
             EXPECT_EQ(o.ledger(), (std::vector<std::string>{"hold:0:20000"}));  // 10 -> 30
         }},
        {"quota, and the tenant cannot cover the pricier next provider: failed, hold released",
         [] { return task("queued", 1, {attempt(1, "alpha", "submitting")}, 10'000, 5'000); }, true,
         1, [] { return failed(error_class::quota, "insufficient_funds"); },
         [](const outcome& o) {
             // beta needs 20 more credits than the 10 held; 5 are available.
             EXPECT_EQ(o.status(), "failed");
             EXPECT_NE(o.after.task->error_json.find("insufficient_credits"), std::string::npos)
                 << o.after.task->error_json;
             // The attempt that was sent keeps what its provider answered.
             ASSERT_EQ(o.after.attempts.size(), 1u);
             EXPECT_EQ(o.attempt_status(1), "failed");
             EXPECT_NE(o.after.attempts[0].error_json.find("insufficient_funds"), std::string::npos)
                 << o.after.attempts[0].error_json;
             EXPECT_EQ(o.after.attempts[0].error_json.find("insufficient_credits"),
                       std::string::npos)
                 << o.after.attempts[0].error_json;
             EXPECT_EQ(o.ledger(), (std::vector<std::string>{"release:0:10000"}));
             EXPECT_EQ(o.events().back(), "extension.failed");
         }},
        {"a rejected submit: failed, pending outputs failed, the hold released",
         [] { return task("queued", 2, {attempt(1, "alpha", "submitting")}, 20'000); }, true, 1,
         [] { return failed(error_class::rejected, "upstream_rejected"); },
         [](const outcome& o) {
             EXPECT_EQ(o.status(), "failed");
             EXPECT_EQ(o.events(), (std::vector<std::string>{
                                       "extension.output.failed", "extension.output.failed",
                                       "extension.credits.refunded", "extension.failed"}));
             EXPECT_EQ(o.ledger(), (std::vector<std::string>{"release:0:20000"}));
             EXPECT_EQ(o.jobs(), (std::vector<std::string>{"complete", "delete_all"}));
             EXPECT_EQ(o.res.final_status, "failed");
         }},
        {"lyrics for an output that has failed: no lyrics.ready after its output.failed",
         [] {
             auto s = task("running", 2, {attempt(1, "alpha", "accepted", "up-1")}, 20'000);
             s.outputs[1].status = "failed";
             return s;
         },
         false, 1,
         [] {
             update u;
             u.what = update::kind::progress;
             for (int index : {1, 2}) {
                 segue::providers::output_update o;
                 o.index = index;
                 o.lyrics_timestamped = std::vector<segue::core::lyric_line>{{"la", 0, 900}};
                 u.outputs.push_back(o);
             }
             return u;
         },
         [](const outcome& o) {
             // Output 1, still being made, has its lyrics; output 2 ended with its failure.
             EXPECT_EQ(o.events(), (std::vector<std::string>{"extension.lyrics.ready"}));
             for (const auto& e : o.effects)
                 if (e.what == kind::append_event)
                     EXPECT_NE(e.event.data_json.find("\"index\":1"), std::string::npos)
                         << e.event.data_json;
         }},
        {"an ambiguous submit: reconciled after the provider's window, never resent at once",
         [] { return task("queued", 1, {attempt(1, "alpha", "submitting")}, 10'000); }, true, 1,
         [] {
             auto u = failed(error_class::transient, "upstream_timeout");
             u.ambiguous = true;
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.attempt_status(1), "unknown");
             EXPECT_EQ(o.jobs(),
                       (std::vector<std::string>{"complete", "delete_all", "schedule reconcile"}));
             for (const auto& e : o.effects)
                 if (e.what == kind::schedule_job)
                     EXPECT_GE(e.job.due_at, now + 5000);  // the reconcile window
         }},
        {"an ambiguous attempt's sign of life: accepted, and the timeout is not its error now",
         [] {
             auto a = attempt(1, "alpha", "unknown");
             a.error_json = R"({"code":"upstream_timeout","class":"transient"})";
             a.finished_at = now - 5'000;
             return task("queued", 1, {a}, 10'000);
         },
         false, 1,
         [] {
             update u;
             u.what = update::kind::running;
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.attempt_status(1), "accepted");
             ASSERT_EQ(o.after.attempts.size(), 1u);
             EXPECT_EQ(o.after.attempts[0].error_json, "");
         }},
        {"an attempt that made its outputs succeeded: whatever error it had is gone (OpenAPI "
         "Attempt: a failed one's error says why it made none)",
         [] {
             auto a = attempt(1, "alpha", "accepted", "up-1");
             a.error_json = R"({"code":"upstream_timeout","class":"transient"})";
             return task("running", 1, {a}, 10'000);
         },
         true, 1,
         [] {
             update u;
             u.what = update::kind::done;
             u.outputs = {ready(1)};
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.status(), "succeeded");
             EXPECT_EQ(o.attempt_status(1), "succeeded");
             ASSERT_EQ(o.after.attempts.size(), 1u);
             EXPECT_EQ(o.after.attempts[0].error_json, "");
         }},
        {"a callback marks its attempt seen upstream, whatever it carries",
         [] { return task("queued", 1, {attempt(1, "alpha", "submitting")}, 10'000); }, false, 1,
         [] {
             update u;
             u.what = update::kind::progress;  // a refused callback's sign of life: no outputs
             return u;
         },
         [](const outcome& o) {
             ASSERT_EQ(o.after.attempts.size(), 1u);
             EXPECT_EQ(o.after.attempts[0].seen_at, now);
             EXPECT_EQ(o.attempt_status(1), "submitting");
             EXPECT_TRUE(o.ledger().empty());
         }},
        {"a submit answer lost after a callback that named no upstream task: followed, "
         "reconciled again after the window, never resent",
         [] {
             auto a = attempt(1, "alpha", "submitting");
             a.seen_at = now - 2000;
             return task("queued", 1, {a}, 10'000);
         },
         true, 1,
         [] {
             auto u = failed(error_class::transient, "upstream_timeout");
             u.ambiguous = true;
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.attempt_status(1), "accepted");
             EXPECT_EQ(o.status(), "submitted");
             EXPECT_EQ(o.jobs(), (std::vector<std::string>{"complete", "schedule reconcile"}));
             for (const auto& e : o.effects)
                 if (e.what == kind::schedule_job)
                     EXPECT_GE(e.job.due_at, now + 5000);  // the reconcile window
             EXPECT_EQ(o.events(), (std::vector<std::string>{"extension.submitted"}));
             for (const auto& e : o.effects)
                 if (e.what == kind::append_event)  // no upstream id to name yet
                     EXPECT_NE(e.event.data_json.find(R"("provider_task_id":null)"),
                               std::string::npos)
                         << e.event.data_json;
             EXPECT_TRUE(o.ledger().empty());
         },
         "submit"},
        {"an attempt seen upstream that never delivered: failed, never generated again",
         [] {
             auto a = attempt(1, "alpha", "accepted");
             a.seen_at = now - 2000;
             return task("submitted", 1, {a}, 10'000);
         },
         true, 1, [] { return failed(error_class::transient, "upstream_silent"); },
         [](const outcome& o) {
             EXPECT_EQ(o.status(), "failed");
             EXPECT_EQ(o.ledger(), (std::vector<std::string>{"release:0:10000"}));
             for (const auto& j : o.jobs())
                 EXPECT_NE(j, "schedule submit");
         },
         "reconcile"},
        {"one of two outputs ready: captured, the poll goes on",
         [] { return task("submitted", 2, {attempt(1, "alpha", "accepted", "up-1")}, 20'000); },
         true, 1,
         [] {
             update u;
             u.what = update::kind::progress;
             u.outputs = {ready(1)};
             u.poll_after_ms = 2000;
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.status(), "running");
             EXPECT_EQ(o.events(), (std::vector<std::string>{"extension.output.ready"}));
             EXPECT_EQ(o.ledger(), (std::vector<std::string>{"capture:1:10000"}));
             EXPECT_EQ(o.jobs(), (std::vector<std::string>{"reschedule"}));
         }},
        {"done with one output failed: partially_succeeded, the rest released",
         [] { return task("running", 2, {attempt(1, "alpha", "accepted", "up-1")}, 20'000); }, true,
         1,
         [] {
             update u;
             u.what = update::kind::done;
             auto bad = ready(2);
             bad.status = segue::core::output_status::failed;
             bad.error = "moderated";
             u.outputs = {ready(1), bad};
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.status(), "partially_succeeded");
             EXPECT_EQ(o.ledger(),
                       (std::vector<std::string>{"capture:1:10000", "release:0:10000"}));
             EXPECT_EQ(o.events(),
                       (std::vector<std::string>{
                           "extension.output.ready", "extension.output.failed",
                           "extension.credits.refunded", "extension.partially_succeeded"}));
             EXPECT_EQ(o.attempt_status(1), "succeeded");
         }},
        // retry.attempt_deadline (30 min by default, from the attempt's start): a provider
        // that asks to be polled later than that is polled at the deadline, where the engine
        // fails the attempt (upstream_deadline) rather than ask again.
        {"a poll asked for after the attempt's deadline is due at the deadline",
         [] { return task("running", 1, {attempt(1, "alpha", "accepted", "up-1")}, 10'000); }, true,
         1,
         [] {
             update u;
             u.what = update::kind::running;
             u.poll_after_ms = 2 * 3'600'000;
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.jobs(), (std::vector<std::string>{"reschedule"}));
             for (const auto& e : o.effects)
                 if (e.what == kind::reschedule_job)
                     EXPECT_EQ(e.due_at, now - 10'000 + 30 * 60'000);
         }},
        {"an acceptance's first poll is due by the attempt's deadline at the latest",
         [] { return task("queued", 1, {attempt(1, "alpha", "submitting")}, 10'000); }, true, 1,
         [] {
             update u;
             u.what = update::kind::accepted;
             u.provider_task_id = "up-1";
             u.poll_after_ms = 2 * 3'600'000;
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.jobs(), (std::vector<std::string>{"complete", "schedule poll"}));
             for (const auto& e : o.effects)
                 if (e.what == kind::schedule_job)
                     EXPECT_EQ(e.job.due_at, now - 10'000 + 30 * 60'000);
         },
         "submit"},
        {"an attempt past its deadline with nothing made: failed, released, not sent again",
         [] { return task("running", 2, {attempt(1, "alpha", "accepted", "up-1")}, 20'000); }, true,
         1, [] { return failed(error_class::transient, "upstream_deadline"); },
         [](const outcome& o) {
             EXPECT_EQ(o.status(), "failed");
             EXPECT_EQ(o.attempt_status(1), "failed");
             EXPECT_EQ(o.ledger(), (std::vector<std::string>{"release:0:20000"}));
             EXPECT_EQ(o.events(), (std::vector<std::string>{
                                       "extension.output.failed", "extension.output.failed",
                                       "extension.credits.refunded", "extension.failed"}));
             EXPECT_EQ(o.jobs(), (std::vector<std::string>{"complete", "delete_all"}));
             ASSERT_TRUE(o.after.task);
             EXPECT_NE(o.after.task->error_json.find("upstream_deadline"), std::string::npos);
         }},
        {"an attempt past its deadline with one output made: partially_succeeded",
         [] {
             auto s = task("running", 2, {attempt(1, "alpha", "accepted", "up-1")}, 20'000);
             s.outputs[0].status = "ready";
             s.ledger.captured = 10'000;
             s.ledger_keys.insert(task_work::key_of(1, "capture", ""));
             return s;
         },
         true, 1, [] { return failed(error_class::transient, "upstream_deadline"); },
         [](const outcome& o) {
             EXPECT_EQ(o.status(), "partially_succeeded");
             EXPECT_EQ(o.ledger(), (std::vector<std::string>{"release:0:10000"}));
             EXPECT_EQ(o.events(), (std::vector<std::string>{"extension.output.failed",
                                                             "extension.credits.refunded",
                                                             "extension.partially_succeeded"}));
         }},
        {"an attempt past its deadline on a route that regenerates: made again, as after any "
         "asynchronous failure (transient: at the same provider first)",
         [] {
             auto s = task("running", 1, {attempt(1, "alpha", "accepted", "up-1")}, 10'000);
             auto r = segue::core::request_from_json(s.task->request_json);
             r.route_regenerate = true;
             s.task->request_json = segue::core::request_to_json(r);
             return s;
         },
         true, 1, [] { return failed(error_class::transient, "upstream_deadline"); },
         [](const outcome& o) {
             EXPECT_EQ(o.status(), "queued");
             EXPECT_EQ(o.after.task->provider, "alpha");
             EXPECT_EQ(o.attempt_status(1), "failed");
             EXPECT_EQ(o.events(), (std::vector<std::string>{"extension.retrying"}));
             EXPECT_EQ(o.jobs(),
                       (std::vector<std::string>{"complete", "delete_all", "schedule submit"}));
         }},
        // (An attempt that failed at its deadline is such an attempt: its late callbacks are
        // superseded.)
        {"a webhook of a superseded attempt changes nothing",
         [] {
             return task("queued", 1,
                         {attempt(1, "alpha", "failed"), attempt(2, "alpha", "submitting")});
         },
         false, 1,
         [] {
             update u;
             u.what = update::kind::done;
             u.outputs = {ready(1)};
             return u;
         },
         [](const outcome& o) {
             EXPECT_TRUE(o.res.superseded);
             EXPECT_TRUE(o.events().empty());
             EXPECT_TRUE(o.ledger().empty());
             EXPECT_TRUE(o.jobs().empty());
         }},
        {"a final task takes nothing but its job's completion",
         [] { return task("succeeded", 1, {attempt(1, "alpha", "succeeded", "up-1")}); }, true, 1,
         [] {
             update u;
             u.what = update::kind::done;
             u.outputs = {ready(1)};
             return u;
         },
         [](const outcome& o) {
             EXPECT_EQ(o.jobs(), (std::vector<std::string>{"complete"}));
             EXPECT_TRUE(o.events().empty());
         }},
    };
    for (const auto& r : rows) {
        SCOPED_TRACE(r.name);
        r.expect(run(r));
    }
}

// retry.attempt_deadline: which attempts it bounds, from when, and how one that ran out ends.
TEST(Transition, AttemptDeadline) {
    const auto settings = make_settings();
    segue::core::retry_settings retry;
    retry.attempt_deadline_ms = 60'000;
    const transition tr(
        {settings, retry,
         [](std::string_view) -> const segue::providers::capabilities* { return nullptr; },
         [] { return 0.5; }});
    auto a = attempt(2, "alpha", "accepted", "up-1");  // submitted 10 s before `now`
    ASSERT_TRUE(tr.attempt_due_by(a));
    EXPECT_EQ(*tr.attempt_due_by(a), now - 10'000 + 60'000);  // from its own submit
    a.status = "unknown";  // an ambiguous submit found upstream is bounded too
    EXPECT_TRUE(tr.attempt_due_by(a));
    for (const char* st : {"submitting", "prepared", "succeeded", "failed", "canceled"}) {
        a.status = st;
        EXPECT_FALSE(tr.attempt_due_by(a)) << st;
    }
    a.status = "accepted";

    auto s = task("running", 2, {a});
    auto u = tr.deadline_update(a, s.outputs, now + 50'000);
    EXPECT_EQ(u.what, update::kind::failed);
    EXPECT_EQ(u.error, segue::core::error_class::transient);
    EXPECT_EQ(u.error_code, "upstream_deadline");
    EXPECT_NE(u.error_message.find("attempt 2 60 s ago"), std::string::npos) << u.error_message;
    EXPECT_NE(u.error_message.find("retry.attempt_deadline: 60 s"), std::string::npos);

    // One output made, one not: a failure (the made one is kept: partially_succeeded).
    s.outputs[0].status = "ready";
    EXPECT_EQ(tr.deadline_update(a, s.outputs, now).what, update::kind::failed);
    // Every output made (one still being mirrored): only the provider's lyrics or cover are
    // missing, and the task finishes without them.
    s.outputs[1].data_json = R"({"_mirror":{"state":"pending"}})";
    EXPECT_EQ(tr.deadline_update(a, s.outputs, now).what, update::kind::done);

    retry.attempt_deadline_ms = 0;  // none
    const transition unbounded(
        {settings, retry,
         [](std::string_view) -> const segue::providers::capabilities* { return nullptr; },
         [] { return 0.5; }});
    EXPECT_FALSE(unbounded.attempt_due_by(a));
}

// A capture that exists already (a job that runs twice) is not written again, and the release
// at the end counts only what is left: the snapshot's ledger keys decide, not the store.
TEST(Transition, LedgerEntriesAreWrittenOnce) {
    auto s = task("running", 1, {attempt(1, "alpha", "accepted", "up-1")}, 10'000);
    s.ledger.captured = 10'000;
    s.ledger_keys.insert(task_work::key_of(1, "capture", ""));
    task_work w(std::move(s));
    EXPECT_FALSE(
        w.add_ledger_entry({0, "acme", "ext_t", 1, "capture", "", 10'000, "alpha", "", 1}));
    EXPECT_TRUE(w.effects().empty());
    EXPECT_EQ(w.ledger_for_task("ext_t").outstanding(), 0);
    EXPECT_TRUE(w.add_ledger_entry({0, "acme", "ext_t", 0, "release", "", 5, "alpha", "", 1}));
    EXPECT_EQ(w.effects().size(), 1u);
    EXPECT_THROW(w.claim_jobs("x", 0, 0, 1, {}, segue::store::job_lane::any),
                 std::logic_error);  // not a transition's
}

// Mirroring (core/mirror_transition.cpp): a remote output waits, pending, for its mirror job;
// the job's outcome readies it with the gateway's URLs and finishes the task.
TEST(Transition, MirrorHoldsARemoteOutputUntilItsFilesAreCopied) {
    row r{"two remote outputs and done while mirroring",
          [] { return task("running", 2, {attempt(1, "alpha", "accepted", "up-1")}, 20'000); },
          true,
          1,
          [] {
              update u;
              u.what = update::kind::done;
              u.outputs = {ready(1), ready(2)};
              u.cover_url = "https://cdn.example/cover.png";
              return u;
          },
          {}};
    const auto o = run(r, true);
    // Nothing ready, nothing captured, nothing final: three mirror jobs (two audio, a cover).
    EXPECT_TRUE(o.events().empty()) << o.events().front();
    EXPECT_TRUE(o.ledger().empty());
    EXPECT_TRUE(o.res.final_status.empty());
    EXPECT_EQ(o.jobs(), (std::vector<std::string>{"schedule mirror", "schedule mirror",
                                                  "schedule mirror", "complete"}));
    for (const auto& out : o.after.outputs) {
        EXPECT_EQ(out.status, "pending");
        EXPECT_NE(out.data_json.find("\"_mirror\""), std::string::npos) << out.data_json;
        EXPECT_NE(out.data_json.find("\"_settle\":true"), std::string::npos) << out.data_json;
        EXPECT_NE(out.data_json.find("https://cdn.example/out"), std::string::npos);
    }
    EXPECT_EQ(o.attempt_status(1), "succeeded");

    // The same report again (a webhook retried, the next poll): no second mirror job.
    row again = r;
    again.given = [&] { return o.after; };
    again.update_of = [] {
        update u;
        u.what = update::kind::progress;
        u.outputs = {ready(1), ready(2)};
        u.cover_url = "https://cdn.example/cover.png";
        return u;
    };
    const auto o2 = run(again, true);
    for (const auto& j : o2.jobs())
        EXPECT_NE(j, "schedule mirror");
    EXPECT_TRUE(o2.events().empty());

    // The mirror jobs report back: each output ready with the gateway's URL, then the task ends.
    const auto settings = make_settings(true);
    segue::providers::capabilities caps;
    transition tr({settings, {}, [&](std::string_view) { return &caps; }, [] { return 0.5; }});
    task_work::snapshot s = o.after;
    s.ledger.hold = 20'000;
    task_work w(s);
    auto done = [&](int index, bool cover) {
        segue::core::mirror_outcome m;
        m.index = index;
        m.cover = cover;
        m.ok = true;
        segue::core::mirror_outcome::file f;
        f.format = cover ? "cover" : "mp3";
        f.provider_url = cover ? "https://cdn.example/cover.png"
                               : "https://cdn.example/out" + std::to_string(index) + ".mp3";
        f.row.id = "file_" + std::to_string(index) + (cover ? "c" : "a");
        f.row.sha256 = std::string(64, 'a');
        f.row.size = 1234;
        m.files.push_back(f);
        return tr.mirror_done(w, "ext_t", m, now);
    };
    EXPECT_TRUE(done(1, false).final_status.empty());
    EXPECT_TRUE(done(0, true).final_status.empty());
    const auto last = done(2, false);
    EXPECT_EQ(last.final_status, "succeeded");
    std::vector<std::string> events;
    for (const auto& e : w.effects())
        if (e.what == kind::append_event)
            events.push_back(e.event.type);
    EXPECT_EQ(events, (std::vector<std::string>{"extension.output.ready", "extension.cover.ready",
                                                "extension.output.ready", "extension.succeeded"}));
    for (const auto& out : w.state().outputs) {
        EXPECT_EQ(out.status, "ready");
        EXPECT_EQ(out.data_json.find("\"_"), std::string::npos) << out.data_json;
        EXPECT_NE(out.data_json.find("\"mp3_url\":\"/v1/files/file_"), std::string::npos)
            << out.data_json;
        EXPECT_NE(out.data_json.find("\"mp3_provider_url\":\"https://cdn.example/out"),
                  std::string::npos);
        EXPECT_NE(out.data_json.find("\"cover_url\":\"/v1/files/file_0c\""), std::string::npos)
            << out.data_json;
    }
    int captures = 0;
    for (const auto& e : w.effects())
        captures += e.what == kind::add_ledger && e.ledger.kind == "capture";
    EXPECT_EQ(captures, 2);
    // A second report of the same output (a job run twice) changes nothing.
    const auto before = w.effects().size();
    EXPECT_TRUE(done(1, false).final_status.empty());
    EXPECT_EQ(w.effects().size(), before);
}

// A mirror is retried within the task's deadline (retry.deadline from its creation) as well as
// its own (outputs.mirror.deadline from the report): each mirror job carries the earlier of the
// two as `retry_until`; its own deadline stays `deadline` (what bounds one download).
TEST(Transition, MirrorRetriesStopAtTheTasksDeadlineWhenItComesFirst) {
    struct deadline_case {
        const char* name;
        std::int64_t task_deadline_ms;  // retry.deadline; 0: none
        std::int64_t retry_until;       // expected, from now
    };
    // The task was created a minute ago; the mirror's own deadline is 10 minutes after the report.
    const std::int64_t own = 10 * 60'000;
    for (const auto& c : std::vector<deadline_case>{
             {"the task's deadline first", 2 * 60'000, 60'000},
             {"the task's deadline already past", 30'000, -30'000},
             {"the mirror's deadline first", 60 * 60'000, own},
             {"no task deadline", 0, own},
         }) {
        SCOPED_TRACE(c.name);
        auto settings = make_settings(true);
        settings.outputs.mirror.deadline = std::chrono::minutes(10);
        segue::core::retry_settings retry;
        retry.deadline_ms = c.task_deadline_ms;
        segue::providers::capabilities caps;
        transition tr(
            {settings, retry, [&](std::string_view) { return &caps; }, [] { return 0.5; }});
        task_work w(task("running", 2, {attempt(1, "alpha", "accepted", "up-1")}, 20'000));
        update u;
        u.what = update::kind::done;
        u.outputs = {ready(1), ready(2)};
        u.cover_url = "https://cdn.example/cover.png";
        segue::store::job_row job;
        job.id = 7;
        job.kind = "poll";
        job.task_id = "ext_t";
        job.attempts = 1;
        tr.apply(w, "ext_t", &job, "alpha", 1, u, {}, now);
        int mirrors = 0;
        for (const auto& e : w.effects()) {
            if (e.what != kind::schedule_job || e.job.kind != "mirror")
                continue;
            ++mirrors;
            const auto p = json::parse(e.job.payload_json).as_object();
            EXPECT_EQ(p.at("deadline").to_number<std::int64_t>(), now + own) << e.job.payload_json;
            ASSERT_TRUE(p.contains("retry_until")) << e.job.payload_json;
            EXPECT_EQ(p.at("retry_until").to_number<std::int64_t>(), now + c.retry_until)
                << e.job.payload_json;
        }
        EXPECT_EQ(mirrors, 3);  // two outputs' audio, the cover
    }
}

#include "gateway/core/transition.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <stdexcept>

#include "gateway/core/engine.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/ledger.hpp"
#include "gateway/core/model.hpp"
#include "gateway/log/log.hpp"
#include "gateway/util/json_text.hpp"

namespace segue::core {

namespace json = boost::json;

json::object parse_object(const std::string& text) {
    if (text.empty())
        return {};
    boost::system::error_code ec;
    auto v = json::parse(text, ec);
    if (ec || !v.is_object())
        return {};
    return v.as_object();
}

json::object error_object(std::string_view code, error_class cls, std::string_view message,
                          std::string_view provider) {
    json::object e;
    e["code"] = code;
    e["class"] = to_string(cls);
    e["message"] = message;
    if (!provider.empty())
        e["provider"] = provider;
    return e;
}

namespace {

// An attempt the provider's open circuit refused before anything was sent: its error's code
// (the error as transition stores it, a JSON object) is "circuit_open".
bool refused_by_open_circuit(const store::attempt_row& a) {
    const auto e = parse_object(a.error_json);
    const auto* code = e.if_contains("code");
    return code && code->is_string() && code->as_string() == "circuit_open";
}

json::array lyrics_array(const std::vector<lyric_line>& lines) {
    json::array a;
    for (const auto& l : lines) {
        json::object o;
        o["text"] = l.text;
        o["start_ms"] = l.start_ms;
        o["end_ms"] = l.end_ms;
        a.emplace_back(std::move(o));
    }
    return a;
}

// Edits a task's warnings (a JSON array of strings, "" when none) in place.
template <class F>
void edit_warnings(store::task_row& t, F&& edit) {
    json::array w;
    auto old = parse_object(
        "{\"w\":" + (t.warnings_json.empty() ? std::string("[]") : t.warnings_json) + "}");
    if (old.contains("w") && old["w"].is_array())
        w = std::move(old["w"].as_array());
    edit(w);
    t.warnings_json = w.empty() ? std::string() : util::json_text(w);
}

// A job lease as a transition names it: the recorder does not check it, the engine's save
// writes it with the claim's owner.
store::lease_ref job_lease(const store::job_row& job) {
    return {job.id, {}, job.attempts};
}

}  // namespace

// ---- task_work ------------------------------------------------------------------------------

void task_work::no(const char* what) {
    throw std::logic_error(std::string("task_work: ") + what + " is not part of a task transition");
}

std::string task_work::key_of(int output, std::string_view kind, std::string_view key) {
    return std::to_string(output) + "/" + std::string(kind) + "/" + std::string(key);
}

task_work::snapshot task_work::load(store::transaction& tx, std::string_view task_id,
                                    int attempt_number) {
    snapshot s;
    s.task = tx.get_task(task_id);
    if (!s.task)
        return s;
    const auto& t = *s.task;
    s.outputs = tx.get_outputs(t.id);
    s.attempts = tx.get_attempts(t.id);
    s.ledger = tx.ledger_for_task(t.id);
    s.tenant_available = tx.ledger_totals(t.tenant).available;
    const auto ctx = engine::event_context_of(t.request_json);
    s.endpoint_gone = !ctx.webhook_url.empty() && tx.endpoint_gone(t.tenant, ctx.webhook_url);
    // The unique entries a transition may write: captures, the final release and this
    // attempt's failover adjustment. Nothing held (a free provider so far): only a failover to
    // a paid one writes an entry, its first hold.
    auto note = [&](int output, std::string_view kind, std::string_view key) {
        if (tx.find_ledger_entry(t.tenant, t.id, output, kind, key))
            s.ledger_keys.insert(key_of(output, kind, key));
    };
    if (s.ledger.hold == 0) {
        note(0, "hold", "failover-" + std::to_string(attempt_number));
        return s;
    }
    for (int i = 1; i <= t.num_outputs; ++i)
        note(i, "capture", "");
    note(0, "release", "");
    const std::string failover = "failover-" + std::to_string(attempt_number);
    note(0, "hold", failover);
    note(0, "release", failover);
    return s;
}

bool task_work::save(store::transaction& tx, const std::vector<effect>& effects,
                     const std::optional<store::lease_ref>& job) {
    store::event_row last_event;
    for (const auto& e : effects) {
        switch (e.what) {
            case effect::kind::complete_job:
                if (!job || !tx.complete_job(*job))
                    return false;
                break;
            case effect::kind::reschedule_job:
                if (!job || !tx.reschedule_job(*job, e.due_at, e.payload_json))
                    return false;
                break;
            case effect::kind::insert_file:
                tx.insert_file(e.file);
                break;
            case effect::kind::upsert_output:
                tx.upsert_output(e.output);
                break;
            case effect::kind::delete_output:
                tx.delete_output(e.output.task_id, e.output.index);
                break;
            case effect::kind::upsert_attempt:
                tx.upsert_attempt(e.attempt);
                break;
            case effect::kind::update_task:
                tx.update_task(e.task);
                break;
            case effect::kind::append_event:
                last_event = tx.append_event(e.event);
                break;
            case effect::kind::insert_delivery: {
                // Recorded before the store gave the event its id and seq: they come from it.
                auto d = e.delivery;
                d.event_id = last_event.id;
                d.seq = last_event.seq;
                d.event_at = d.created_at = d.updated_at = d.next_at = last_event.created_at;
                tx.insert_delivery(d);
                break;
            }
            case effect::kind::add_ledger:
                tx.add_ledger_entry(e.ledger);
                break;
            case effect::kind::delete_jobs:
                tx.delete_jobs_for_task(e.task.id);
                break;
            case effect::kind::schedule_job:
                tx.schedule_job(e.job, e.unique);
                break;
        }
    }
    return true;
}

bool task_work::changes(const snapshot& before) const {
    for (const auto& e : effects_) {
        switch (e.what) {
            case effect::kind::update_task: {
                const auto& b = before.task;
                if (!b || b->status != e.task.status || b->provider != e.task.provider ||
                    b->error_json != e.task.error_json || b->warnings_json != e.task.warnings_json)
                    return true;
                break;
            }
            case effect::kind::upsert_output: {
                auto it = std::find_if(before.outputs.begin(), before.outputs.end(),
                                       [&](const auto& r) { return r.index == e.output.index; });
                if (it == before.outputs.end() || it->status != e.output.status ||
                    it->data_json != e.output.data_json)
                    return true;
                break;
            }
            case effect::kind::upsert_attempt: {
                auto it = std::find_if(before.attempts.begin(), before.attempts.end(),
                                       [&](const auto& r) { return r.number == e.attempt.number; });
                if (it == before.attempts.end() || it->status != e.attempt.status ||
                    it->provider_task_id != e.attempt.provider_task_id ||
                    it->state_json != e.attempt.state_json || it->seen_at != e.attempt.seen_at ||
                    it->error_json != e.attempt.error_json ||
                    it->finished_at != e.attempt.finished_at)
                    return true;
                break;
            }
            default:
                return true;  // an event, a job, a file, a ledger entry, a delivery
        }
    }
    return false;
}

std::optional<store::task_row> task_work::get_task(std::string_view id) {
    if (s_.task && s_.task->id == id)
        return s_.task;
    return std::nullopt;
}

std::int64_t task_work::update_task(const store::task_row& t) {
    effect e{effect::kind::update_task};
    e.task = t;
    record(std::move(e));
    s_.task = t;
    return ++s_.task->version;
}

void task_work::upsert_output(const store::output_row& o) {
    effect e{effect::kind::upsert_output};
    e.output = o;
    record(std::move(e));
    auto it = std::find_if(s_.outputs.begin(), s_.outputs.end(),
                           [&](const auto& r) { return r.index == o.index; });
    if (it != s_.outputs.end())
        *it = o;
    else
        s_.outputs.push_back(o);
}

void task_work::delete_output(std::string_view task_id, int index) {
    effect e{effect::kind::delete_output};
    e.output.task_id = std::string(task_id);
    e.output.index = index;
    record(std::move(e));
    std::erase_if(s_.outputs, [&](const auto& r) { return r.index == index; });
}

std::vector<store::output_row> task_work::get_outputs(std::string_view) {
    return s_.outputs;
}

void task_work::upsert_attempt(const store::attempt_row& a) {
    effect e{effect::kind::upsert_attempt};
    e.attempt = a;
    record(std::move(e));
    auto it = std::find_if(s_.attempts.begin(), s_.attempts.end(),
                           [&](const auto& r) { return r.number == a.number; });
    if (it != s_.attempts.end())
        *it = a;
    else
        s_.attempts.push_back(a);
}

std::vector<store::attempt_row> task_work::get_attempts(std::string_view) {
    return s_.attempts;
}

store::event_row task_work::append_event(store::event_row ev) {
    effect e{effect::kind::append_event};
    e.event = ev;
    record(std::move(e));
    return ev;  // id and seq come from the store when it is saved
}

std::int64_t task_work::schedule_job(const store::job_row& j, bool unique) {
    effect e{effect::kind::schedule_job};
    e.job = j;
    e.unique = unique;
    record(std::move(e));
    return 0;
}

bool task_work::complete_job(const store::lease_ref&) {
    record(effect{effect::kind::complete_job});
    return true;
}

bool task_work::reschedule_job(const store::lease_ref&, store::millis due_at,
                               std::string_view payload_json) {
    effect e{effect::kind::reschedule_job};
    e.due_at = due_at;
    e.payload_json = std::string(payload_json);
    record(std::move(e));
    return true;
}

void task_work::delete_jobs_for_task(std::string_view task_id) {
    effect e{effect::kind::delete_jobs};
    e.task.id = std::string(task_id);
    record(std::move(e));
}

void task_work::insert_file(const store::file_row& f) {
    effect e{effect::kind::insert_file};
    e.file = f;
    record(std::move(e));
}

void task_work::insert_delivery(const store::delivery_row& d) {
    effect e{effect::kind::insert_delivery};
    e.delivery = d;
    record(std::move(e));
}

bool task_work::add_ledger_entry(const store::ledger_row& l) {
    const auto key = key_of(l.output, l.kind, l.key);
    if (!s_.ledger_keys.insert(key).second)
        return false;  // unique per (task, output, kind, key): it exists
    effect e{effect::kind::add_ledger};
    e.ledger = l;
    record(std::move(e));
    if (l.kind == "hold") {
        s_.ledger.hold += l.amount_milli;
        s_.tenant_available -= l.amount_milli;
    } else if (l.kind == "capture") {
        s_.ledger.captured += l.amount_milli;
    } else if (l.kind == "release") {
        s_.ledger.released += l.amount_milli;
        s_.tenant_available += l.amount_milli;
    }
    return true;
}

store::ledger_balance task_work::ledger_totals(std::string_view) {
    store::ledger_balance b;
    b.available = s_.tenant_available;  // the one figure a transition reads
    return b;
}

store::task_ledger task_work::ledger_for_task(std::string_view) {
    return s_.ledger;
}

// ---- transition -----------------------------------------------------------------------------

transition::result transition::apply(store::transaction& tx, const std::string& task_id,
                                     const store::job_row* job, const std::string& provider_name,
                                     int attempt_number, const providers::update& u,
                                     std::map<std::string, store::file_row> files,
                                     store::millis now) const {
    result res;
    auto t = tx.get_task(task_id);
    if (!t || is_terminal(parse_task_status(t->status).value_or(task_status::failed))) {
        if (job)
            tx.complete_job(job_lease(*job));
        return res;
    }
    const auto status = parse_task_status(t->status).value_or(task_status::failed);
    auto attempts = tx.get_attempts(t->id);
    store::attempt_row* attempt = nullptr;
    for (auto& a : attempts)
        if (a.number == attempt_number)
            attempt = &a;
    auto outs = tx.get_outputs(t->id);

    // Keep the job (polled again later) or finish it; either way only while we hold it.
    auto keep_or_finish = [&](bool keep, std::int64_t delay_ms) {
        if (!job)
            return;  // a webhook: the task's own poll job stays as it is
        // A poll is never due after the attempt's deadline, where the engine ends it.
        const auto due = job->kind == "poll" ? poll_due(attempt, now, delay_ms) : now + delay_ms;
        bool ok = keep ? tx.reschedule_job(job_lease(*job), due, job->payload_json)
                       : tx.complete_job(job_lease(*job));
        (void)ok;  // recorded: the engine's save checks the lease when it writes it
    };

    for (auto& [path, f] : files) {
        f.tenant = t->tenant;
        f.task_id = t->id;
        f.created_at = now;
        tx.insert_file(f);
    }
    // A webhook for an attempt that is no longer the task's current one (it failed, or a
    // later attempt replaced it) must not touch the task.
    if (!job && attempt &&
        (attempt->number != attempts.back().number || attempt->status == "failed" ||
         attempt->status == "canceled")) {
        res.superseded = true;
        return res;
    }
    if (attempt && !u.state_json.empty() && (!u.state_if || *u.state_if == attempt->state_json))
        attempt->state_json = u.state_json;
    // A callback (an update with no job) carries the attempt's own token: the provider has
    // this attempt, whatever the callback says. Recorded once, it keeps the attempt from ever
    // being submitted again (see the failed case below and plan_recovery).
    if (attempt && !job && attempt->seen_at == 0)
        attempt->seen_at = now;
    // A sign of life from an attempt whose submit was ambiguous: it exists upstream, and the
    // error that made it ambiguous (a timeout, a reset) no longer says anything about it.
    if (attempt && attempt->status == "unknown" && u.what != providers::update::kind::failed) {
        attempt->status = "accepted";
        attempt->error_json.clear();
    }
    // A provider may move to another upstream task (e.g. an upload, then the extend).
    if (attempt && !u.provider_task_id.empty() && u.what != providers::update::kind::accepted)
        attempt->provider_task_id = u.provider_task_id;
    if (!u.warnings.empty())
        edit_warnings(*t, [&](json::array& w) {
            for (const auto& s : u.warnings)
                if (std::find(w.begin(), w.end(), json::value(s)) == w.end())
                    w.emplace_back(s);
        });
    if (!u.method.empty()) {
        // Shown on every output: how it was made (an offline provider says it is not AI). An
        // output not made yet takes the method of whoever reports now: after a failover, the
        // provider that makes it, not the one an earlier attempt (an upload) reported.
        for (auto& o : outs) {
            auto d = parse_object(o.data_json);
            const auto* m = d.if_contains("method");
            if (!m ||
                (o.status == to_string(output_status::pending) && *m != json::value(u.method))) {
                d["method"] = u.method;
                o.data_json = util::json_text(d);
                tx.upsert_output(o);
            }
        }
    }

    switch (u.what) {
        case providers::update::kind::accepted: {
            if (attempt) {
                attempt->status = "accepted";
                attempt->error_json.clear();  // e.g. the timeout of an ambiguous submit
                attempt->provider_task_id = u.provider_task_id;
                tx.upsert_attempt(*attempt);
            }
            // A second step's acceptance (a create after an upload) keeps a task
            // that runs running; the event names the new upstream task either way.
            if (status == task_status::queued)
                t->status = std::string(to_string(task_status::submitted));
            t->provider = provider_name;
            t->updated_at = now;
            tx.update_task(*t);
            json::object d;
            d["attempt"] = attempt_number;
            d["provider_task_id"] = u.provider_task_id;
            engine::append_event(tx, *t, event_type::submitted, std::move(d));
            keep_or_finish(false, 0);
            store::job_row poll;
            poll.kind = "poll";
            poll.task_id = t->id;
            poll.due_at = poll_due(attempt, now, u.poll_after_ms.value_or(1000));
            tx.schedule_job(poll, true);
            res.notify = true;
            return res;
        }
        case providers::update::kind::failed: {
            if (attempt && attempt->status == "succeeded" && waits_for_mirror(outs)) {
                // The provider delivered everything (the task waits only for its mirrors): a
                // late failure of this attempt's call (a submit answer lost, a poll error) is
                // stale, never a reason to generate again.
                keep_or_finish(false, 0);
                return res;
            }
            res.metrics.push_back(
                {metric_effect::family::failures,
                 {provider_name, u.error_code.empty() ? "unknown" : u.error_code}});
            log::warn("provider attempt failed", {{"task_id", t->id},
                                                  {"provider", provider_name},
                                                  {"code", u.error_code},
                                                  {"class", to_string(u.error)},
                                                  {"message", u.error_message}});
            auto err = error_object(u.error_code.empty() ? "provider_failed" : u.error_code,
                                    u.error, u.error_message, provider_name);
            if (u.provider_refunded)
                err["provider_refunded"] = true;  // the provider gave its credits back
            if (attempt) {
                attempt->status = "failed";
                attempt->finished_at = now;
                attempt->error_json = util::json_text(err);
            }
            // The provider's own callback already proved this attempt exists upstream (it
            // came while the submit answer was late or lost): the failed answer is not the
            // attempt's outcome. Follow the task instead of submitting again: poll it by the
            // upstream id a callback named, or, when none named one (MusicGPT's lyrics
            // callbacks do not), reconcile it again after the provider's window, by when a
            // callback may have named it.
            if (job && job->kind == "submit" && attempt && seen_upstream(*attempt)) {
                attempt->status = "accepted";
                attempt->finished_at = 0;
                attempt->error_json.clear();
                tx.upsert_attempt(*attempt);
                keep_or_finish(false, 0);
                const auto* prov = env_.caps_of(provider_name);
                if (prov && prov->polling && !attempt->provider_task_id.empty()) {
                    store::job_row poll;
                    poll.kind = "poll";
                    poll.task_id = t->id;
                    poll.due_at = now + 1000;
                    tx.schedule_job(poll, true);
                } else if (attempt->provider_task_id.empty()) {
                    store::job_row again;
                    again.kind = "reconcile";
                    again.task_id = t->id;
                    again.due_at =
                        now +
                        (prov ? std::max<std::int64_t>(1000, prov->reconcile_window_ms) : 1000);
                    again.payload_json = "{\"attempt\":" + std::to_string(attempt_number) + "}";
                    tx.schedule_job(again, true);
                }
                // Submitted now, unless the callback that proved it already said so (and
                // moved the task on: see reconciled_submitted below).
                if (t->status == to_string(task_status::queued)) {
                    t->status = std::string(to_string(task_status::submitted));
                    t->updated_at = now;
                    tx.update_task(*t);
                    reconciled_submitted(tx, *t, attempt, attempt_number);
                }
                res.metrics.push_back({metric_effect::family::retries,
                                       {provider_name, "reconciled", "callback_seen"}});
                res.notify = true;
                return res;
            }
            // Retry here, fail over along the route, reconcile an ambiguous submit, or fail.
            auto d = plan_recovery(*t, attempts, attempt, provider_name, u, outs, now);
            std::string next = provider_name;
            if (d.what == decision_kind::failover) {
                const auto req = request_from_json(t->request_json);
                auto it = std::find(req.route_chain.begin(), req.route_chain.end(), provider_name);
                if (it != req.route_chain.end() && it + 1 != req.route_chain.end())
                    next = *(it + 1);
                // The hold follows the next provider's price: a pricier one needs credits
                // the tenant has, or the task fails here (nothing is sent to it).
                if (const auto extra = failover_extra_hold(tx, *t, next);
                    extra > 0 && tx.ledger_totals(t->tenant).available < extra) {
                    auto cause = err;
                    err = error_object(
                        "insufficient_credits", error_class::quota,
                        "failing over to " + next + " would hold " + format_credits(extra) +
                            " more credits, and the tenant has " +
                            format_credits(tx.ledger_totals(t->tenant).available) +
                            " available (the first provider failed: " + u.error_message + ")",
                        provider_name);
                    err["cause"] = std::move(cause);
                    // The task's error; the attempt keeps its own (what its provider answered:
                    // it was sent, the failover was not).
                    d.what = decision_kind::fail;
                }
            }
            if (d.what != decision_kind::fail) {
                if (d.what == decision_kind::reconcile)
                    if (const auto* prov = env_.caps_of(provider_name))
                        d.delay_ms = std::max(d.delay_ms, prov->reconcile_window_ms);
                keep_or_finish(false, 0);
                tx.delete_jobs_for_task(t->id);
                store::job_row j;
                j.kind = d.what == decision_kind::reconcile ? "reconcile" : "submit";
                j.task_id = t->id;
                j.due_at = now + d.delay_ms;
                j.payload_json = "{\"attempt\":" + std::to_string(attempt_number) + "}";
                tx.schedule_job(j, true);
                if (attempt) {
                    if (d.what == decision_kind::reconcile)
                        attempt->status = "unknown";  // it may exist upstream
                    tx.upsert_attempt(*attempt);
                }
                if (d.what != decision_kind::reconcile)
                    t->status = std::string(to_string(task_status::queued));
                std::optional<json::object> refunded;
                if (next != provider_name) {
                    refunded = retarget_hold(tx, *t, next, attempt_number, res);
                    // What the provider that gave up said of the request (how it would have
                    // sent it) is not how the next one makes it.
                    const std::string own = provider_name + ":";
                    edit_warnings(*t, [&](json::array& w) {
                        const auto gone =
                            std::remove_if(w.begin(), w.end(), [&](const json::value& v) {
                                return v.is_string() && v.get_string().starts_with(own);
                            });
                        // Boost 1.81's erase of an empty range writes the size of the array,
                        // and an empty array's is a table shared by every thread (TSAN).
                        if (gone != w.end())
                            w.erase(gone, w.end());
                    });
                    // How the outputs will be made is the next provider's to say (an upload
                    // at this one may have said it already).
                    for (auto& o : outs) {
                        auto d = parse_object(o.data_json);
                        if (o.status == to_string(output_status::pending) && d.erase("method")) {
                            o.data_json = util::json_text(d);
                            tx.upsert_output(o);
                        }
                    }
                }
                t->provider = next;
                t->updated_at = now;
                tx.update_task(*t);
                json::object e;
                e["attempt"] = attempt_number;
                e["failed_provider"] = provider_name;
                e["next_provider"] = next;
                e["decision"] = to_string(d.what);
                e["reason"] = d.reason;
                e["delay_ms"] = d.delay_ms;
                e["error"] = err;
                engine::append_event(tx, *t, event_type::retrying, std::move(e));
                if (refunded)  // the next provider costs less: the difference went back
                    engine::append_event(tx, *t, event_type::credits_refunded,
                                         std::move(*refunded));
                res.metrics.push_back({metric_effect::family::retries,
                                       {provider_name, std::string(to_string(d.what)), d.reason}});
                res.notify = true;
                return res;
            }
            // The job first: finalize removes the task's jobs, ours included.
            keep_or_finish(false, 0);
            finalize(tx, *t, outs, attempt, err, res);
            if (attempt)
                tx.upsert_attempt(*attempt);
            res.final_status = t->status;
            res.created_at = t->created_at;
            return res;
        }
        case providers::update::kind::prepared: {
            // The preparation step is done; the next upstream call runs as a submit of a
            // new attempt (intent first, retried and failed over like any submit).
            if (attempt) {
                attempt->status = "prepared";
                if (!u.provider_task_id.empty())
                    attempt->provider_task_id = u.provider_task_id;
                attempt->finished_at = now;
                tx.upsert_attempt(*attempt);
            }
            keep_or_finish(false, 0);
            tx.delete_jobs_for_task(t->id);  // the preparation's poll, if a webhook did it
            store::job_row next;
            next.kind = "submit";
            next.task_id = t->id;
            next.due_at = now;
            next.payload_json = "{\"step\":\"after_prepared\"}";
            tx.schedule_job(next, true);
            t->updated_at = now;
            tx.update_task(*t);
            res.notify = true;
            return res;
        }
        case providers::update::kind::running:
        case providers::update::kind::progress:
        case providers::update::kind::done:
            break;
    }

    // The event model: extension.submitted comes before anything the provider made. A task
    // still queued here learns from this update (a callback, or a poll, settling a submit whose
    // answer was lost or is late) that its attempt exists upstream: submitted first, in this
    // commit, before the events of what the update brings.
    if (status == task_status::queued) {
        t->provider = provider_name;
        reconciled_submitted(tx, *t, attempt, attempt_number);
    }
    if (status == task_status::submitted || status == task_status::queued) {
        t->status = std::string(to_string(task_status::running));
        t->updated_at = now;
    }
    // Cover: one event per task, the URL shown on every output.
    std::string cover_url = u.cover_url;
    if (u.cover_file)
        cover_url = file_url(files[u.cover_file->path].id);
    if (!cover_url.empty() && !u.cover_file && mirroring()) {
        // A remote cover is shown once it is the gateway's own (a mirror job).
        request_cover_mirror(tx, *t, outs, 0, cover_url, now, res);
    } else if (!cover_url.empty()) {
        bool had = false;
        for (auto& o : outs) {
            auto d = parse_object(o.data_json);
            if (d.contains("cover_url"))
                had = true;
            d["cover_url"] = cover_url;
            o.data_json = util::json_text(d);
            o.updated_at = now;
            tx.upsert_output(o);
        }
        if (!had) {
            json::object d;
            d["cover_url"] = cover_url;
            engine::append_event(tx, *t, event_type::cover_ready, std::move(d));
        }
    }
    for (const auto& ou : u.outputs) {
        auto it = std::find_if(outs.begin(), outs.end(),
                               [&](const store::output_row& r) { return r.index == ou.index; });
        if (it == outs.end())
            continue;
        auto current = parse_output_status(it->status).value_or(output_status::pending);
        auto d = parse_object(it->data_json);
        if (!ou.cover_url.empty() && mirroring()) {
            // Its own cover, mirrored first; the task's cover no longer replaces it.
            if (!d.contains("_cover_own")) {
                d["_cover_own"] = true;
                d["_own_cover_pending"] = ou.cover_url;
                json::object p;
                p["cover"] = ou.index;
                p["url"] = ou.cover_url;
                schedule_mirror_job(tx, *t, std::move(p), now, res);
            }
        } else if (!ou.cover_url.empty()) {
            d["cover_url"] = ou.cover_url;  // this output's own cover over the task's
        }
        // Timestamped lyrics may come on their own (some providers send them separately). An
        // output that has ended without audio (failed, canceled) gets none: its own end was
        // its last event (found by a black-box run: MusicGPT's lyrics callback after the
        // output's failed audio callback gave output.failed, then lyrics.ready).
        const auto ended_without_audio = [](output_status s) {
            return s == output_status::failed || s == output_status::canceled;
        };
        if (ou.lyrics_timestamped && !d.contains("lyrics_timestamped") &&
            !ended_without_audio(current) && !ended_without_audio(ou.status)) {
            d["lyrics_timestamped"] = lyrics_array(*ou.lyrics_timestamped);
            json::object e;
            e["index"] = ou.index;
            e["lyrics_timestamped"] = lyrics_array(*ou.lyrics_timestamped);
            engine::append_event(tx, *t, event_type::lyrics_ready, std::move(e));
        }
        if (current == output_status::pending && ou.status != output_status::pending) {
            json::object audio;
            if (ou.mp3) {
                const auto& f = files[ou.mp3->path];
                audio["mp3_url"] = file_url(f.id);
                audio["mp3_file_id"] = f.id;
                if (!f.sha256.empty())
                    audio["mp3_sha256"] = f.sha256;
                audio["mp3_size"] = f.size;
            } else if (!ou.mp3_url.empty()) {
                audio["mp3_url"] = ou.mp3_url;
            }
            if (ou.wav) {
                const auto& f = files[ou.wav->path];
                audio["wav_url"] = file_url(f.id);
                audio["wav_file_id"] = f.id;
                if (!f.sha256.empty())
                    audio["wav_sha256"] = f.sha256;
                audio["wav_size"] = f.size;
            } else if (!ou.wav_url.empty()) {
                audio["wav_url"] = ou.wav_url;
            }
            if (ou.duration)
                audio["duration"] = *ou.duration;
            if (ou.status == output_status::ready)
                d["audio"] = audio;
            if (!ou.provider_output_id.empty())
                d["provider_output_id"] = ou.provider_output_id;
            if (ou.title)
                d["title"] = *ou.title;
            if (ou.lyrics)
                d["lyrics"] = *ou.lyrics;
            d["flagged"] = ou.flagged;
            if (!ou.flag_reason.empty())
                d["flag_reason"] = ou.flag_reason;
            if (ou.status == output_status::failed)
                d["error"] = ou.error.empty() ? "generation failed" : ou.error;
            if (!ou.verification_json.empty())
                d["verification"] = parse_object(ou.verification_json);
            const bool remote = !ou.mp3 && !ou.wav && (!ou.mp3_url.empty() || !ou.wav_url.empty());
            if (ou.status == output_status::ready && remote && mirroring() &&
                d.contains("_mirror")) {
                continue;  // a repeated report while its mirror runs: one job is enough
            }
            if (ou.status == output_status::ready && remote && mirroring()) {
                // Ready once its files are the gateway's own: a mirror job finishes it.
                d.erase("audio");
                request_audio_mirror(tx, *t, d, std::move(audio), ou.index, now, res);
                it->data_json = util::json_text(d);
                it->updated_at = now;
                tx.upsert_output(*it);
                continue;
            }
            it->status = std::string(to_string(ou.status));
            if (ou.status == output_status::ready)
                capture_output(tx, *t, ou.index, provider_name, res);
            json::object e;
            e["index"] = ou.index;
            e["output"] = public_output(d);
            engine::append_event(tx, *t,
                                 ou.status == output_status::ready ? event_type::output_ready
                                                                   : event_type::output_failed,
                                 std::move(e));
        }
        it->data_json = util::json_text(d);
        it->updated_at = now;
        tx.upsert_output(*it);
    }
    if (u.what == providers::update::kind::done)
        drop_unmade_outputs(tx, *t, outs, provider_name);
    bool all_final = std::all_of(outs.begin(), outs.end(), [](const store::output_row& o) {
        return o.status != to_string(output_status::pending);
    });
    const auto* prov = env_.caps_of(provider_name);
    if (all_final && prov && prov->separate_artifacts) {
        // Wait for the lyrics and cover that come on their own; the poll settles it if
        // they never do.
        all_final = std::all_of(outs.begin(), outs.end(), [](const store::output_row& o) {
            if (o.status != to_string(output_status::ready))
                return true;
            auto d = parse_object(o.data_json);
            return d.contains("lyrics_timestamped") && d.contains("cover_url");
        });
    }
    if ((all_final || u.what == providers::update::kind::done) && waits_for_mirror(outs)) {
        // The provider is done, the gateway is not: the last mirror job finishes the task.
        for (auto& o : outs) {
            auto d = parse_object(o.data_json);
            if (o.status == to_string(output_status::pending) && !d.contains("_mirror")) {
                o.status = std::string(to_string(output_status::failed));
                d["error"] = "not produced";
                json::object e;
                e["index"] = o.index;
                e["output"] = public_output(d);
                engine::append_event(tx, *t, event_type::output_failed, std::move(e));
            }
            d["_settle"] = true;
            o.data_json = util::json_text(d);
            o.updated_at = now;
            tx.upsert_output(o);
        }
        if (attempt) {
            attempt->status = "succeeded";
            attempt->error_json.clear();  // an attempt's error says why it made nothing
            attempt->finished_at = now;
        }
        keep_or_finish(false, 0);
        t->updated_at = now;
        tx.update_task(*t);
    } else if (all_final || u.what == providers::update::kind::done) {
        if (attempt) {
            attempt->status = "succeeded";
            attempt->error_json.clear();  // an attempt's error says why it made nothing
            attempt->finished_at = now;
        }
        keep_or_finish(false, 0);
        finalize(tx, *t, outs, attempt, std::nullopt, res);
        res.final_status = t->status;
        res.created_at = t->created_at;
    } else {
        t->updated_at = now;
        tx.update_task(*t);
        keep_or_finish(true, u.poll_after_ms.value_or(1000));
        res.notify = true;
    }
    if (attempt)
        tx.upsert_attempt(*attempt);
    return res;
}

void transition::finalize(store::transaction& tx, store::task_row& t,
                          std::vector<store::output_row>& outs, store::attempt_row* attempt,
                          std::optional<json::object> error, result& res) const {
    const auto now = now_ms();
    int ready = 0;
    for (auto& o : outs) {
        if (o.status == to_string(output_status::ready)) {
            ++ready;
        } else if (o.status == to_string(output_status::pending)) {
            o.status = std::string(to_string(output_status::failed));
            auto d = parse_object(o.data_json);
            d["error"] = error && error->contains("message") ? (*error)["message"]
                                                             : json::value("not produced");
            o.data_json = util::json_text(d);
            o.updated_at = now;
            tx.upsert_output(o);
            json::object e;
            e["index"] = o.index;
            e["output"] = public_output(d);
            engine::append_event(tx, t, event_type::output_failed, std::move(e));
        }
    }
    task_status final_status;
    if (ready == static_cast<int>(outs.size()) && ready > 0 && !error)
        final_status = task_status::succeeded;
    else if (ready > 0)
        final_status = task_status::partially_succeeded;
    else
        final_status = task_status::failed;
    if (final_status == task_status::failed && !error) {
        // The outputs' one reason, when they share one (e.g. the sandbox's "extend_after is
        // past the end of the audio"): the task's error then says why, not only that.
        std::string reason;
        bool shared = true;
        for (const auto& o : outs) {
            const auto d = parse_object(o.data_json);
            const auto* e = d.if_contains("error");
            const std::string m = e && e->is_string() ? std::string(e->as_string()) : "";
            if (m.empty() || m == "not produced" || (!reason.empty() && m != reason))
                shared = false;
            reason = m;
        }
        error = error_object("no_outputs", error_class::unknown,
                             shared && !reason.empty() ? "no output was produced: " + reason
                                                       : std::string("no output was produced"),
                             t.provider);
    }
    t.status = std::string(to_string(final_status));
    if (error)
        t.error_json = util::json_text(*error);
    t.updated_at = now;
    tx.update_task(t);
    if (attempt && attempt->finished_at == 0)
        attempt->finished_at = now;
    // An attempt that made nothing failed, whatever the provider said of the task.
    if (attempt && final_status == task_status::failed && attempt->status == "succeeded") {
        attempt->status = "failed";
        if (attempt->error_json.empty() && error)
            attempt->error_json = util::json_text(*error);
    }
    release_outstanding(tx, t, res);
    json::object d;
    d["outputs_ready"] = ready;
    if (error)
        d["error"] = *error;
    engine::append_event(tx, t,
                         final_status == task_status::failed      ? event_type::failed
                         : final_status == task_status::succeeded ? event_type::succeeded
                                                                  : event_type::partially_succeeded,
                         std::move(d));
    tx.delete_jobs_for_task(t.id);
}

// Ledger: at the end (or a cancel) what is held and not captured goes back, once, and the
// task says so (extension.credits.refunded).
void transition::release_outstanding(store::transaction& tx, const store::task_row& t,
                                     result& res) {
    const auto l = tx.ledger_for_task(t.id);
    const auto out = l.outstanding();
    if (out <= 0)
        return;
    store::ledger_row r;
    r.tenant = t.tenant;
    r.task_id = t.id;
    r.kind = "release";
    r.amount_milli = out;
    r.provider = t.provider;
    r.note = t.status == to_string(task_status::canceled) ? "canceled" : "not produced";
    r.created_at = now_ms();
    if (!tx.add_ledger_entry(r))
        return;
    res.metrics.push_back({metric_effect::family::credits,
                           {t.tenant, t.provider, "refunded"},
                           milli_to_credits(out)});
    json::object d;
    d["amount"] = credits_value(out);
    d["held"] = credits_value(l.hold);
    d["captured"] = credits_value(l.captured);
    d["unit"] = "credits";
    engine::append_event(tx, t, event_type::credits_refunded, std::move(d));
}

// Ledger: on failover the hold follows the next provider's price (the tenant pays for what
// makes the outputs), as an extra hold or a partial release keyed by the attempt.
// extension.submitted for an attempt known upstream by its callbacks or a poll rather than by
// its submit's answer (reconciled), naming its upstream task when one is known.
void transition::reconciled_submitted(store::transaction& tx, const store::task_row& t,
                                      const store::attempt_row* attempt, int attempt_number) {
    json::object e;
    e["attempt"] = attempt_number;
    if (!attempt || attempt->provider_task_id.empty())
        e["provider_task_id"] = nullptr;  // known upstream by its callbacks only
    else
        e["provider_task_id"] = attempt->provider_task_id;
    e["reconciled"] = true;
    engine::append_event(tx, t, event_type::submitted, std::move(e));
}

// A provider that decides how many outputs it makes (capabilities::output_count_varies) is
// done, and the request left num_outputs to it: the outputs it did not make (still pending, no
// mirror on the way) are not failures, and are dropped; the task says so in its warnings.
// Their share of the hold is never captured, so the final release gives it back. Nothing is
// dropped when nothing was made (the task fails as usual).
void transition::drop_unmade_outputs(store::transaction& tx, store::task_row& t,
                                     std::vector<store::output_row>& outs,
                                     const std::string& provider) const {
    const auto* caps = env_.caps_of(provider);
    if (!caps || !caps->output_count_varies)
        return;
    auto unmade = [](const store::output_row& o) {
        return o.status == to_string(output_status::pending) &&
               !parse_object(o.data_json).contains("_mirror");
    };
    const auto made = std::count_if(outs.begin(), outs.end(), [&](const auto& o) {
        return !unmade(o) && o.status != to_string(output_status::failed);
    });
    if (made == 0 || made == static_cast<std::ptrdiff_t>(outs.size()))
        return;
    if (request_from_json(t.request_json).num_outputs_given)
        return;  // asked for: an output not made fails as "not produced"
    for (const auto& o : outs)
        if (unmade(o))
            tx.delete_output(t.id, o.index);
    const auto dropped = std::erase_if(outs, unmade);
    if (dropped == 0)
        return;
    edit_warnings(t, [&](json::array& w) {
        w.emplace_back(provider + " made " + std::to_string(made) + " of the " +
                       std::to_string(made + static_cast<std::ptrdiff_t>(dropped)) +
                       " outputs (num_outputs was not given, so it decides): the rest are not "
                       "charged");
    });
}

std::optional<json::object> transition::retarget_hold(store::transaction& tx,
                                                      const store::task_row& t,
                                                      const std::string& next, int attempt_number,
                                                      result& res) const {
    // Nothing held (a free provider so far): a paid next provider is held for like at submit.
    const auto l = tx.ledger_for_task(t.id);
    const std::int64_t current = l.hold - l.released;
    const std::int64_t target = estimate_hold_milli(env_.settings, next, t.num_outputs);
    if (target == current)
        return std::nullopt;
    store::ledger_row e;
    e.tenant = t.tenant;
    e.task_id = t.id;
    e.kind = target > current ? "hold" : "release";
    e.key = "failover-" + std::to_string(attempt_number);
    e.amount_milli = target > current ? target - current : current - target;
    e.provider = next;
    e.note = "failover to " + next;
    e.created_at = now_ms();
    if (!tx.add_ledger_entry(e) || e.kind != "release")
        return std::nullopt;
    // A release is a refund like the one at the end (release_outstanding): the tenant hears
    // of it (extension.credits.refunded, after the failover's event) and it is counted.
    res.metrics.push_back({metric_effect::family::credits,
                           {t.tenant, t.provider, "refunded"},
                           milli_to_credits(e.amount_milli)});
    json::object d;
    d["amount"] = credits_value(e.amount_milli);
    d["held"] = credits_value(l.hold);
    d["captured"] = credits_value(l.captured);
    d["unit"] = "credits";
    return d;
}

// Ledger: how much more a failover to `next` would hold (0 when nothing more; all of its price
// when nothing was held, a free provider first).
std::int64_t transition::failover_extra_hold(store::transaction& tx, const store::task_row& t,
                                             const std::string& next) const {
    const auto l = tx.ledger_for_task(t.id);
    const std::int64_t current = l.hold - l.released;
    return std::max<std::int64_t>(
        0, estimate_hold_milli(env_.settings, next, t.num_outputs) - current);
}

// Ledger: a ready output captures its share of the task's hold, once (unique key).
void transition::capture_output(store::transaction& tx, const store::task_row& t, int index,
                                const std::string& provider, transition::result& res) const {
    const auto l = tx.ledger_for_task(t.id);
    const std::int64_t hold = l.hold - l.released;
    if (hold <= 0 || index < 1 || index > t.num_outputs)
        return;
    store::ledger_row c;
    c.tenant = t.tenant;
    c.task_id = t.id;
    c.output = index;
    c.kind = "capture";
    c.amount_milli = share_of(hold, t.num_outputs, index);
    c.provider = provider;
    c.note = "output " + std::to_string(index) + " ready";
    c.created_at = now_ms();
    if (c.amount_milli > 0 && tx.add_ledger_entry(c))
        res.metrics.push_back({metric_effect::family::credits,
                               {t.tenant, provider, "captured"},
                               milli_to_credits(c.amount_milli)});
}
// What to do about a failed attempt (see core/retry_policy.hpp): the decision's inputs come
// from the task's attempts and route. Never retries once an output is ready.
decision transition::plan_recovery(const store::task_row& t,
                                   const std::vector<store::attempt_row>& attempts,
                                   const store::attempt_row* attempt,
                                   const std::string& provider_name, const providers::update& u,
                                   const std::vector<store::output_row>& outs,
                                   store::millis now) const {
    decision none;
    none.what = decision_kind::fail;
    for (const auto& o : outs)
        if (o.status == to_string(output_status::ready) ||
            o.data_json.find("\"_mirror\"") != std::string::npos)
            return none;
    if (waits_for_mirror(outs))
        return none;
    extend_request req;
    try {
        req = request_from_json(t.request_json);
    } catch (const std::exception&) {
        return none;
    }
    failure_info fi;
    fi.cls = u.error;
    fi.retry_after_ms = u.retry_after_ms;
    fi.circuit_open = u.error_code == "circuit_open";
    fi.async_failure = attempt && seen_upstream(*attempt);
    fi.accepted_by_provider = fi.async_failure;
    fi.ambiguous = u.ambiguous && !fi.async_failure;
    retry_state rs;
    // A preparation step that succeeded (status "prepared") is not a try of the call.
    rs.attempts_total = 0;
    rs.attempts_at_provider = 0;
    // Nor is a refusal by the provider's open circuit: it sent nothing, so it spends neither
    // the provider's tries nor the task's budget (else every task behind a circuit that stays
    // open a few cycles would fail with nothing ever sent; retry.deadline bounds the wait).
    for (const auto& a : attempts) {
        if (a.status == "prepared" || refused_by_open_circuit(a))
            continue;
        ++rs.attempts_total;
        if (a.provider == provider_name)
            ++rs.attempts_at_provider;
    }
    rs.attempts_at_provider = std::max(1, rs.attempts_at_provider);
    rs.task_age_ms = now - t.created_at;
    auto it = std::find(req.route_chain.begin(), req.route_chain.end(), provider_name);
    rs.has_next_provider = it != req.route_chain.end() && it + 1 != req.route_chain.end();
    rs.route_allows_regeneration = req.route_regenerate;
    return decide(env_.retry, fi, rs, env_.random());
}
std::string transition::file_url(const std::string& id) const {
    return env_.settings.api.public_base_url + "/v1/files/" + id;
}

std::optional<store::millis> transition::attempt_due_by(const store::attempt_row& a) const {
    if (env_.retry.attempt_deadline_ms <= 0 || a.started_at <= 0 ||
        (a.status != "accepted" && a.status != "unknown"))
        return std::nullopt;
    return a.started_at + env_.retry.attempt_deadline_ms;
}

store::millis transition::poll_due(const store::attempt_row* a, store::millis now,
                                   std::int64_t delay_ms) const {
    const store::millis due = now + std::max<std::int64_t>(0, delay_ms);
    const auto by = a ? attempt_due_by(*a) : std::nullopt;
    return by ? std::min(due, std::max(now, *by)) : due;
}

providers::update transition::deadline_update(const store::attempt_row& a,
                                              const std::vector<store::output_row>& outs,
                                              store::millis now) const {
    providers::update u;
    // Every output made: ready, or made and being copied (a mirror job finishes it).
    const bool made = !outs.empty() && std::all_of(outs.begin(), outs.end(), [](const auto& o) {
        return o.status == to_string(output_status::ready) ||
               parse_object(o.data_json).contains("_mirror");
    });
    if (made) {
        u.what = providers::update::kind::done;
        return u;
    }
    u.what = providers::update::kind::failed;
    u.error = error_class::transient;
    u.error_code = "upstream_deadline";
    u.error_message = "the provider accepted attempt " + std::to_string(a.number) + " " +
                      std::to_string(std::max<store::millis>(0, now - a.started_at) / 1000) +
                      " s ago and has not finished it (retry.attempt_deadline: " +
                      std::to_string(env_.retry.attempt_deadline_ms / 1000) + " s)";
    return u;
}

}  // namespace segue::core

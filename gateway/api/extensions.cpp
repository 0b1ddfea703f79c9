#include "gateway/api/extensions.hpp"

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <array>
#include <atomic>
#include <cerrno>
#include <chrono>
#include <deque>
#include <filesystem>
#include <map>
#include <memory>

#include "gateway/api/auth.hpp"
#include "gateway/api/common.hpp"
#include "gateway/api/create_flow.hpp"
#include "gateway/api/create_pipeline.hpp"
#include "gateway/api/files.hpp"
#include "gateway/api/problem.hpp"
#include "gateway/core/engine.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/ledger.hpp"
#include "gateway/events/event_hub.hpp"
#include "gateway/http/conditional.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/multipart.hpp"
#include "gateway/http/router.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/store/blob_store.hpp"
#include "gateway/store/db.hpp"
#include "gateway/util/crypto.hpp"
#include "gateway/util/json_text.hpp"
#include "providers/provider.hpp"
#include "providers/registry.hpp"

namespace segue::api {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using asio::awaitable;
constexpr auto use_tuple = asio::as_tuple(asio::use_awaitable);

bool is_final(const store::task_row& t) {
    return core::is_terminal(core::parse_task_status(t.status).value_or(core::task_status::failed));
}

// One event as a Server-Sent Events frame (the id is what a reconnecting client sends back).
std::string sse_frame(const store::event_row& e) {
    return "id: " + std::to_string(e.seq) + "\nevent: " + e.type +
           "\ndata: " + util::json_text(core::event_document(e)) + "\n\n";
}

// The event hub's read: a task's events after `after`, formatted once for all its followers.
events::event_hub::reader hub_reader(store::store& st) {
    return [&st](const std::string& task, std::int64_t after, int limit,
                 std::function<void(events::event_batch)> done) {
        auto b = std::make_shared<events::event_batch>();
        st.submit_read(
            [b, task, after, limit](store::transaction& tx) {
                auto t = tx.get_task(task);
                if (!t) {
                    b->found = false;
                    return;
                }
                auto evs = tx.get_events(task, after, limit + 1);
                b->more = static_cast<int>(evs.size()) > limit;
                if (b->more)
                    evs.resize(static_cast<std::size_t>(limit));
                for (const auto& e : evs)
                    b->frames.emplace_back(e.seq, sse_frame(e));
                b->to = evs.empty() ? after : evs.back().seq;
                b->final = !b->more && is_final(*t);
            },
            [b, done = std::move(done)](std::exception_ptr e) {
                if (e)
                    b->failed = true;
                done(std::move(*b));
            });
    };
}

// Server-Sent Events when the client names text/event-stream in Accept (not through */*) and
// does not prefer JSON to it by its q-values.
bool accepts_event_stream(http::context& ctx) {
    auto a = ctx.header("Accept");
    if (!a)
        return false;
    const auto sse = http::accept_quality(*a, "text/event-stream", true);
    const auto json = http::accept_quality(*a, "application/json");
    return sse && *sse > 0 && *sse >= json.value_or(0);
}

// What one task's credits did, in credits: held at submit, captured by ready outputs, refunded
// (released) for failed or canceled ones, and what is held still.
json::object credits_document(const store::task_ledger& l) {
    return {{"held", core::credits_value(l.hold)},
            {"captured", core::credits_value(l.captured)},
            {"refunded", core::credits_value(l.released)},
            {"outstanding", core::credits_value(l.outstanding())}};
}

// A task as the list shows it.
struct task_summary {
    store::task_row task;
    store::task_ledger ledger;
};

std::vector<task_summary> read_summaries(store::transaction& tx, std::string_view tenant, int limit,
                                         std::string_view before) {
    std::vector<task_summary> out;
    for (auto& t : tx.list_tasks(tenant, limit, before)) {
        auto l = tx.ledger_for_task(t.id);
        out.push_back({std::move(t), l});
    }
    return out;
}

json::object summary_document(const task_summary& s) {
    const auto& t = s.task;
    json::object o;
    o["id"] = t.id;
    o["status"] = t.status;
    o["provider"] = t.provider;
    o["num_outputs"] = t.num_outputs;
    o["created_at"] = core::iso8601(t.created_at);
    o["updated_at"] = core::iso8601(t.updated_at);
    o["credits"] = credits_document(s.ledger);
    return o;
}

struct handlers : std::enable_shared_from_this<handlers> {
    explicit handlers(const api_deps& d)
        : deps(d),
          creating(d),
          rejected(d.metrics.counter_family("segue_api_rejected_total",
                                            "Requests refused by the API, by reason.", {"reason"})),
          sse_clients(
              d.metrics.make_gauge("segue_sse_clients", "Open Server-Sent Events streams.")) {}

    // A task as its owner reads it: with signed links to its files (files.hpp).
    json::object task_json(const store::task_row& t, const std::vector<store::output_row>& outs,
                           const std::vector<store::attempt_row>& atts,
                           const gone_files& gone = {}) const {
        auto doc = core::task_document(t, outs, atts);
        sign(doc, gone);
        return doc;
    }
    void sign(json::object& doc, const gone_files& gone) const {
        add_signed_links(doc, deps.settings,
                         std::chrono::duration_cast<std::chrono::seconds>(
                             std::chrono::system_clock::now().time_since_epoch())
                             .count(),
                         gone);
    }

    // --- auth ---
    std::optional<std::string> tenant_of(http::context& ctx) {
        auto t = authenticate(ctx, deps.auth);
        if (!t)
            rejected.with({"unauthorized"}).inc();
        return t;
    }

    // The 202 for a new task, or the stored answer replayed.
    void answer_created(http::context& ctx, const create::admission& a);
    void answer_replay(http::context& ctx, const store::idempotency_row& prior);

    awaitable<void> create(http::context& ctx);
    awaitable<void> providers(http::context& ctx) {
        auto self = shared_from_this();
        if (!tenant_of(ctx) || !only_params(ctx, {}))
            co_return;
        ctx.res().status = 200;
        ctx.res().content_type = "application/json";
        ctx.res().body = deps.engine.providers_json();
    }
    awaitable<void> get(http::context& ctx);
    awaitable<void> events(http::context& ctx);
    awaitable<void> follow(http::context& ctx, const std::string& id, std::int64_t after);
    awaitable<std::optional<bool>> stream_from_store(http::context& ctx, const std::string& id,
                                                     std::int64_t& after);
    awaitable<void> cancel(http::context& ctx);
    awaitable<void> list(http::context& ctx);
    awaitable<void> list_stream(http::context& ctx, std::string tenant, int limit);

    // An open Server-Sent Events response, counted in segue_sse_clients while it lasts, with
    // a hub subscription that sets `woken` and ends the current wait on `timer` the moment
    // the task's next events are committed (here or on another replica). `woken` starts true:
    // an event committed before the subscription woke nobody, so the stream reads once first.
    struct sse_stream {
        metrics::gauge& clients;
        std::shared_ptr<asio::steady_timer> timer;
        std::shared_ptr<std::atomic<bool>> woken = std::make_shared<std::atomic<bool>>(true);
        std::unique_ptr<events::event_hub::subscription> sub;
        ~sse_stream() {
            sub.reset();
            clients.dec();
        }
    };
    // Sends the stream's head and retry hint, then, unless `task` is empty, subscribes to it
    // (event_hub::any_task: woken by every commit with events); nullptr when the client is gone.
    awaitable<std::unique_ptr<sse_stream>> open_sse(http::context& ctx, std::string task) {
        ctx.res().set_header("X-Accel-Buffering", "no");  // nginx-style proxies must not buffer
        if (!co_await ctx.begin_stream(200, "text/event-stream"))
            co_return nullptr;
        sse_clients.inc();
        const auto executor = co_await asio::this_coro::executor;
        std::unique_ptr<sse_stream> s(
            new sse_stream{sse_clients, std::make_shared<asio::steady_timer>(executor),
                           std::make_shared<std::atomic<bool>>(true), nullptr});
        if (!co_await ctx.write_stream("retry: 1000\n\n"))
            co_return nullptr;
        if (!task.empty())
            s->sub = deps.events.subscribe(
                std::move(task), [timer = s->timer, woken = s->woken, executor] {
                    woken->store(true);
                    // Expiring (not just cancelling) also ends a wait that starts after this
                    // runs.
                    asio::post(executor, [timer] {
                        timer->expires_at(asio::steady_timer::time_point::min());
                    });
                });
        co_return s;
    }
    awaitable<void> provider_webhook(http::context& ctx);

    api_deps deps;
    create::flow creating;
    metrics::family<metrics::counter>& rejected;
    metrics::gauge& sse_clients;
};

// POST /v1/extensions: read -> validate -> prepare the source -> admit (create_flow.hpp).
awaitable<void> handlers::create(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant || !only_params(ctx, {}))
        co_return;
    auto r = co_await creating.run(ctx, *tenant);
    switch (r.what) {
        case create::flow_result::kind::refused:
            set_problem(ctx.res(), r.refused.kind, r.refused.detail, ctx.path(), r.refused.errors);
            break;
        case create::flow_result::kind::replay:
            answer_replay(ctx, r.prior);
            break;
        case create::flow_result::kind::created:
            answer_created(ctx, r.admitted);
            break;
    }
}

void handlers::answer_replay(http::context& ctx, const store::idempotency_row& prior) {
    ctx.res().status = prior.response_status;
    ctx.res().content_type = "application/json";
    ctx.res().body = prior.response_body;
    ctx.res().set_header("Location", "/v1/extensions/" + prior.task_id);
    ctx.res().set_header("Idempotent-Replayed", "true");
}

void handlers::answer_created(http::context& ctx, const create::admission& a) {
    ctx.res().status = 202;
    ctx.res().content_type = "application/json";
    ctx.res().body = a.response_body;
    ctx.res().set_header("Location", "/v1/extensions/" + a.task.id);
}

awaitable<void> handlers::get(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant || !only_params(ctx, {}))
        co_return;
    const std::string id(ctx.param("id"));
    std::optional<store::task_row> t;
    std::vector<store::output_row> outs;
    std::vector<store::attempt_row> atts;
    store::task_ledger ledger;
    co_await deps.db.read([&](store::transaction& tx) {
        t = tx.get_task(id);
        if (!t || t->tenant != *tenant)
            return;
        outs = tx.get_outputs(id);
        atts = tx.get_attempts(id);
        ledger = tx.ledger_for_task(id);
    });
    // Another tenant's task answers exactly like a missing one.
    if (!t || t->tenant != *tenant) {
        set_problem(ctx.res(), error_kind::not_found, "no such extension", ctx.path());
        co_return;
    }
    // Files retention deleted say so (and get no signed link): looked up by id, a point read
    // each, only for the files the task names, and only once the task is old enough for
    // retention to have deleted any (a recent task costs no second read).
    auto doc = core::task_document(*t, outs, atts);
    const auto& keep = deps.settings.retention;
    std::int64_t shortest = 0;
    for (const auto d : {keep.uploads, keep.outputs})
        if (const auto ms = std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
            ms > 0 && (shortest == 0 || ms < shortest))
            shortest = ms;
    const auto ids = shortest > 0 && t->created_at < core::now_ms() - shortest
                         ? file_ids_in(doc, deps.settings)
                         : std::vector<std::string>{};
    gone_files gone;
    if (!ids.empty())
        co_await deps.db.read([&](store::transaction& tx) {
            for (const auto& f : ids)
                if (!tx.get_file(f)) {
                    const auto g = tx.get_file_tombstone(f);
                    gone[f] = g ? g->deleted_at : 0;
                }
        });
    sign(doc, gone);
    doc["credits"] = credits_document(ledger);
    json_response(ctx, 200, doc);
    // The version and a digest of the document: its signed links are renewed (their expiry is
    // rounded to a step, so reads in between give the same bytes) and retention may delete its
    // files at the same version, and either changes the tag. Weak: the same task, not the same
    // bytes in every encoding. A poller that names it gets a 304 until something changes.
    const std::string etag = "W/\"" + std::to_string(t->version) + "-" +
                             util::sha256_hex(ctx.res().body).substr(0, 16) + "\"";
    ctx.res().set_header("ETag", etag);
    if (const auto inm = ctx.header("If-None-Match"); inm && http::none_match(*inm, etag)) {
        ctx.res().status = 304;
        ctx.res().body.clear();
        ctx.res().content_type.clear();
    }
}

awaitable<void> handlers::list(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant || !only_params(ctx, {"limit", "before"}))
        co_return;
    auto limit = int_param(ctx, "limit", 20, 1, 100);
    if (!limit)
        co_return;
    std::optional<std::string> before_param;
    if (!text_param(ctx, "before", before_param))
        co_return;
    if (before_param && before_param->empty()) {
        set_problem(ctx.res(), error_kind::bad_request, "before must not be empty", ctx.path(),
                    {{"before", "must be the id of one of your tasks"}});
        co_return;
    }
    const std::string before = before_param.value_or("");
    if (accepts_event_stream(ctx)) {
        if (!before.empty()) {
            set_problem(ctx.res(), error_kind::bad_request,
                        "the live list starts at the newest task: no before", ctx.path(),
                        {{"before", "not allowed with Accept: text/event-stream"}});
            co_return;
        }
        co_return co_await list_stream(ctx, *tenant, *limit);
    }
    std::vector<task_summary> rows;
    bool cursor_known = true;
    co_await deps.db.read([&](store::transaction& tx) {
        // A cursor that names no task of the tenant would page to an empty "end of list":
        // refused, so a typo or a stale cursor is noticed.
        if (!before.empty()) {
            const auto t = tx.get_task(before);
            cursor_known = t && t->tenant == *tenant;
            if (!cursor_known)
                return;
        }
        rows = read_summaries(tx, *tenant, *limit + 1, before);
    });
    if (!cursor_known) {
        set_problem(ctx.res(), error_kind::bad_request,
                    "before must be the id of one of your tasks", ctx.path(),
                    {{"before", "no such task"}});
        co_return;
    }
    json::array data;
    const bool more = static_cast<int>(rows.size()) > *limit;
    for (int i = 0; i < static_cast<int>(rows.size()) && i < *limit; ++i)
        data.emplace_back(summary_document(rows[i]));
    json::object body;
    body["data"] = std::move(data);
    body["has_more"] = more;
    json_response(ctx, 200, body);
}

// The tenant's newest `limit` tasks as Server-Sent Events: one `task` frame per task at the
// start, then one whenever a task of the first page changes (or a new one arrives), until the
// client leaves or the server drains. Woken by any task's commit (the hub has no tenant index),
// it re-reads the page (one indexed query) and the credits of the tasks that may have moved,
// and sends only what changed.
awaitable<void> handlers::list_stream(http::context& ctx, std::string tenant, int limit) {
    auto self = shared_from_this();
    const auto stream = co_await open_sse(ctx, std::string(events::event_hub::any_task));
    if (!stream)
        co_return;
    auto& timer = stream->timer;
    auto& woken = stream->woken;
    // A client that leaves is noticed at once (a read kept pending on its socket), as on a
    // task's stream, not at the next keep-alive write.
    auto closed = std::make_shared<bool>(false);
    ctx.watch_peer_close([closed, timer] {
        *closed = true;
        timer->expires_at(asio::steady_timer::time_point::min());
    });
    const auto keep_alive = deps.settings.api.sse_keep_alive;
    struct shown {
        std::int64_t version = 0;
        store::task_ledger ledger;
        bool same(const task_summary& s) const {
            return version == s.task.version && ledger.hold == s.ledger.hold &&
                   ledger.captured == s.ledger.captured && ledger.released == s.ledger.released;
        }
    };
    std::map<std::string, shown> sent;  // what the client was last sent of each task
    int idle_seconds = 0;
    auto last_write = std::chrono::steady_clock::now();
    for (;;) {
        if (woken->exchange(false)) {
            std::vector<std::string> page;      // the ids on the page, newest first
            std::vector<task_summary> changed;  // newest first
            co_await deps.db.read([&](store::transaction& tx) {
                for (auto& t : tx.list_tasks(tenant, limit, "")) {
                    page.push_back(t.id);
                    // A final task shown at its version changes no more; a running one may
                    // capture credits without a new version, so its ledger is read again.
                    const auto s = sent.find(t.id);
                    if (s != sent.end() && s->second.version == t.version &&
                        core::is_terminal(
                            core::parse_task_status(t.status).value_or(core::task_status::failed)))
                        continue;
                    auto l = tx.ledger_for_task(t.id);
                    changed.push_back({std::move(t), l});
                }
            });
            // Oldest first, so a client that prepends what is new keeps the newest on top.
            for (auto it = changed.rbegin(); it != changed.rend(); ++it) {
                auto [last, fresh] = sent.try_emplace(it->task.id);
                if (!fresh && last->second.same(*it))
                    continue;
                last->second = {it->task.version, it->ledger};
                if (!co_await ctx.write_stream(
                        "event: task\ndata: " + util::json_text(summary_document(*it)) + "\n\n"))
                    co_return;
                last_write = std::chrono::steady_clock::now();
            }
            // Forget tasks that fell off the page, so the map stays at most `limit` long.
            if (sent.size() > page.size()) {
                std::map<std::string, shown> kept;
                for (const auto& id : page)
                    if (auto s = sent.find(id); s != sent.end())
                        kept.insert(std::move(*s));
                sent = std::move(kept);
            }
        }
        if (*closed || ctx.draining())
            co_return;
        if (std::chrono::steady_clock::now() - last_write >= keep_alive) {
            if (!co_await ctx.write_stream(": keep-alive\n\n"))
                co_return;
            last_write = std::chrono::steady_clock::now();
        }
        // Commits come in bursts: a short pause lets one re-read cover a burst. Then wait for
        // a wake-up, looking at draining every second and re-reading every 5 s anyway (a lost
        // wake-up).
        timer->expires_after(std::chrono::milliseconds(100));
        co_await timer->async_wait(use_tuple);
        if (!woken->load() && !*closed) {
            timer->expires_after(
                std::min<std::chrono::steady_clock::duration>(std::chrono::seconds(1), keep_alive));
            co_await timer->async_wait(use_tuple);
            if (!woken->load() && ++idle_seconds >= 5)
                woken->store(true);
        }
        if (woken->load())
            idle_seconds = 0;
    }
}

awaitable<void> handlers::events(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant)
        co_return;
    if (!only_params(ctx, {"after", "limit"}))
        co_return;
    const std::string id(ctx.param("id"));
    std::int64_t after = 0;
    std::optional<std::string> a;
    if (!text_param(ctx, "after", a))
        co_return;
    if (a) {
        auto n = parse_int(*a);
        if (!n || *n < 0) {
            set_problem(ctx.res(), error_kind::bad_request, "after must be a sequence number",
                        ctx.path(), {{"after", "must be an integer >= 0"}});
            co_return;
        }
        after = *n;
    }
    const bool sse = accepts_event_stream(ctx);
    std::optional<std::int64_t> resumed_at;  // the Last-Event-ID that set `after`
    if (sse) {
        // Reconnecting EventSource clients send the last id they saw: a seq this stream sent
        // in its `id:` lines. Anything else (an event's `evt_` id, a negative number) is a
        // client's mistake; replaying the whole log for it would be a guess.
        if (auto last = ctx.header("Last-Event-ID"); last && !last->empty()) {
            auto n = parse_int(*last);
            if (!n || *n < 0) {
                set_problem(ctx.res(), error_kind::bad_request,
                            "Last-Event-ID must be the id: of an event of this stream", ctx.path(),
                            {{"Last-Event-ID",
                              "must be a sequence number >= 0 (the SSE id: "
                              "field, not the event's evt_ id)"}});
                co_return;
            }
            if (*n > after)
                resumed_at = *n;
            after = std::max(after, *n);
        }
    }
    auto limit_param = int_param(ctx, "limit", 100, 1, 1000);
    if (!limit_param)
        co_return;
    const int limit = *limit_param;

    std::optional<store::task_row> t;
    std::vector<store::event_row> evs;
    bool past_the_end = false;  // `after` names no event the task has
    co_await deps.db.read([&](store::transaction& tx) {
        t = tx.get_task(id);
        if (t && t->tenant == *tenant) {
            evs = tx.get_events(id, after, limit + 1);
            if (sse && evs.empty() && after > 0)
                past_the_end = tx.get_events(id, after - 1, 1).empty();
        }
    });
    if (!t || t->tenant != *tenant) {
        set_problem(ctx.res(), error_kind::not_found, "no such extension", ctx.path());
        co_return;
    }
    if (past_the_end) {
        // A stream from there would wait for events the client already has by its own
        // account, and never send the ones it does not (found by a black-box run: 200 and an
        // empty stream for Last-Event-ID 50 on a task of 8 events).
        const std::string field = resumed_at ? "Last-Event-ID" : "after";
        set_problem(ctx.res(), error_kind::bad_request,
                    field + " " + std::to_string(after) +
                        " is past this task's last event: it was not sent by this stream",
                    ctx.path(), {{field, "must be the seq of an event of this task, or 0"}});
        co_return;
    }

    if (!sse) {
        json::array data;
        const bool more = static_cast<int>(evs.size()) > limit;
        std::int64_t last = after;
        for (int i = 0; i < static_cast<int>(evs.size()) && i < limit; ++i) {
            data.emplace_back(core::event_document(evs[i]));
            last = evs[i].seq;
        }
        json::object body;
        body["data"] = std::move(data);
        body["has_more"] = more;
        body["next_after"] = last;
        json_response(ctx, 200, body);
        co_return;
    }

    // Server-Sent Events: the log from `after`, then live until the task is final.
    // No wake-up subscription: follow() takes the task's batches from the hub instead.
    const auto stream = co_await open_sse(ctx, {});
    if (!stream)
        co_return;
    for (const auto& e : evs) {
        if (!co_await ctx.write_stream(sse_frame(e)))
            co_return;
        after = e.seq;
    }
    if (static_cast<int>(evs.size()) > limit) {
        auto r = co_await stream_from_store(ctx, id, after);
        if (!r || *r)
            co_return;
    } else if (is_final(*t)) {
        co_return;  // everything up to the final event was sent
    }
    co_await follow(ctx, id, after);
}

// Live part of an SSE stream: batches pushed by the event hub, keep-alives, nothing else. The
// coroutine sleeps on one timer that the hub (new events), the socket (client gone) and the
// keep-alive interval wake; an idle stream costs no reads and no CPU.
awaitable<void> handlers::follow(http::context& ctx, const std::string& id, std::int64_t after) {
    struct follower {
        explicit follower(const asio::any_io_executor& ex) : timer(ex) {}
        asio::steady_timer timer;
        std::deque<events::batch_ptr> batches;
        bool closed = false;
    };
    const auto executor = co_await asio::this_coro::executor;
    auto f = std::make_shared<follower>(executor);
    ctx.watch_peer_close([f] {
        f->closed = true;
        f->timer.cancel();
    });
    // Each batch is posted to this stream's IO thread, where the coroutine runs: no locks, and
    // the check below and the wait cannot miss a wake.
    const auto sub = deps.events.subscribe(id, after, [f, executor](events::batch_ptr b) {
        asio::post(executor, [f, b = std::move(b)]() mutable {
            f->batches.push_back(std::move(b));
            f->timer.cancel();
        });
    });
    if (sub->behind_until() > after) {
        // The task's channel had already handed out events this stream has not seen.
        auto r = co_await stream_from_store(ctx, id, after);
        if (!r || *r)
            co_return;
    }
    const auto keep_alive = deps.settings.api.sse_keep_alive;
    auto last_write = std::chrono::steady_clock::now();
    for (;;) {
        while (!f->batches.empty() && !f->closed) {
            auto b = std::move(f->batches.front());
            f->batches.pop_front();
            if (!b->found)
                co_return;
            if (b->failed || b->from > after) {
                // The hub's read failed, or this batch starts past what the stream has: read
                // the store for this stream alone.
                auto r = co_await stream_from_store(ctx, id, after);
                if (!r || *r)
                    co_return;
                last_write = std::chrono::steady_clock::now();
                continue;
            }
            for (const auto& [seq, text] : b->frames) {
                if (seq <= after)
                    continue;
                if (!co_await ctx.write_stream(text))
                    co_return;
                after = seq;
                last_write = std::chrono::steady_clock::now();
            }
            if (b->final && after >= b->to)
                co_return;  // everything up to the final event was sent
        }
        if (f->closed || ctx.draining())
            co_return;
        const auto now = std::chrono::steady_clock::now();
        if (now - last_write >= keep_alive) {
            if (!co_await ctx.write_stream(": keep-alive\n\n"))
                co_return;
            last_write = now;
            continue;
        }
        f->timer.expires_at(last_write + keep_alive);
        if (f->batches.empty() && !f->closed)
            co_await f->timer.async_wait(use_tuple);
    }
}

// Sends the stored events after `after` (advancing it) in pages until none are left. The task's
// final state when caught up (true: the stream is complete), or nullopt when the client is gone,
// the task vanished or the store failed.
awaitable<std::optional<bool>> handlers::stream_from_store(http::context& ctx,
                                                           const std::string& id,
                                                           std::int64_t& after) {
    constexpr int page = 100;
    for (;;) {
        std::optional<store::task_row> t;
        std::vector<store::event_row> evs;
        try {
            co_await deps.db.read([&](store::transaction& tx) {
                t = tx.get_task(id);
                evs = tx.get_events(id, after, page);
            });
        } catch (const std::exception&) {
            co_return std::nullopt;  // the client reconnects with Last-Event-ID
        }
        if (!t)
            co_return std::nullopt;
        for (const auto& e : evs) {
            if (!co_await ctx.write_stream(sse_frame(e)))
                co_return std::nullopt;
            after = e.seq;
        }
        if (static_cast<int>(evs.size()) < page)
            co_return is_final(*t);
    }
}

awaitable<void> handlers::cancel(http::context& ctx) {
    auto self = shared_from_this();
    auto tenant = tenant_of(ctx);
    if (!tenant || !only_params(ctx, {}))
        co_return;
    const std::string id(ctx.param("id"));
    // The cancel's unit is the engine's, which waits for an unreachable database: refused here
    // instead, as every other API unit is, with nothing done.
    deps.db.refuse_if_unreachable();
    auto outcome = co_await deps.engine.cancel(id, *tenant);
    if (outcome == core::engine::cancel_outcome::not_found) {
        set_problem(ctx.res(), error_kind::not_found, "no such extension", ctx.path());
        co_return;
    }
    std::optional<store::task_row> t;
    std::vector<store::output_row> outs;
    std::vector<store::attempt_row> atts;
    store::task_ledger ledger;
    co_await deps.db.read([&](store::transaction& tx) {
        t = tx.get_task(id);
        outs = tx.get_outputs(id);
        atts = tx.get_attempts(id);
        ledger = tx.ledger_for_task(id);
    });
    if (outcome == core::engine::cancel_outcome::already_final) {
        set_problem(
            ctx.res(), error_kind::conflict,
            "the extension has already ended" + (t ? " (" + t->status + ")" : std::string()),
            ctx.path());
        co_return;
    }
    auto doc = task_json(*t, outs, atts);
    doc["credits"] = credits_document(ledger);
    json_response(ctx, 200, doc);
}

awaitable<void> handlers::provider_webhook(http::context& ctx) {
    auto self = shared_from_this();
    // No API key here: the unguessable per-attempt token in the path is the credential.
    // Only a configured provider's name goes further: the engine labels metrics with it, and
    // this route is open to anyone, so any other name would be a new series per request.
    const std::string name(ctx.param("name"));
    if (deps.providers.find(name) == nullptr) {
        // The same answer as an unknown token (which configured providers exist is not told to
        // an outsider); the instance is left out: the path holds the token.
        set_problem(ctx.res(), error_kind::not_found, "unknown webhook");
        co_return;
    }
    providers::inbound_webhook hook;
    hook.body = ctx.body();
    hook.headers = ctx.headers();
    std::string error;
    auto outcome = co_await deps.engine.handle_webhook(name, std::string(ctx.param("token")),
                                                       std::move(hook), &error);
    switch (outcome) {
        case core::engine::webhook_outcome::applied:
        case core::engine::webhook_outcome::ignored:
            json_response(ctx, 200, json::object{{"received", true}});
            break;
        case core::engine::webhook_outcome::unknown_token:
            // The instance is left out: it would echo the token into logs and responses.
            set_problem(ctx.res(), error_kind::not_found, "unknown webhook");
            break;
        case core::engine::webhook_outcome::rejected:
            set_problem(ctx.res(), error_kind::bad_request, "webhook payload refused: " + error);
            break;
    }
}

}  // namespace

void add_extension_routes(http::router& routes, const api_deps& deps) {
    auto h = std::make_shared<handlers>(deps);
    deps.events.set_reader(hub_reader(deps.db.raw()));
    const auto& s = deps.settings;
    const std::uint64_t max_body =
        std::max<std::uint64_t>(s.api.max_upload_bytes, s.api.max_json_bytes) +
        create::form_slack_bytes;
    routes.add("POST", "/v1/extensions", [h](http::context& c) { return h->create(c); },
               {.body = http::body_mode::streamed,
                .max_body_bytes = max_body,
                .body_limit_detail = "upload exceeds " + std::to_string(s.api.max_upload_bytes) +
                                     " bytes (api.max_upload_bytes)"});
    routes.add("GET", "/v1/extensions", [h](http::context& c) { return h->list(c); });
    routes.add("GET", "/v1/extensions/{id}", [h](http::context& c) { return h->get(c); });
    routes.add("GET", "/v1/extensions/{id}/events", [h](http::context& c) { return h->events(c); });
    routes.add("POST", "/v1/extensions/{id}/cancel",
               [h](http::context& c) { return h->cancel(c); });
    routes.add("GET", "/v1/providers", [h](http::context& c) { return h->providers(c); });
    add_file_routes(routes, deps);
    routes.add("POST", "/v1/providers/{name}/webhooks/{token}",
               [h](http::context& c) { return h->provider_webhook(c); });
}

}  // namespace segue::api

// /v1/deliveries: the tenant's webhook deliveries (the outbox), dead letters and redelivery.
//
//   GET  /v1/deliveries?status=pending|delivered|dead&task_id=…&limit=…&before=<id>
//   GET  /v1/deliveries/{id}
//   POST /v1/deliveries/{id}/redeliver   dead or delivered -> pending now, fresh schedule;
//                                        also re-enables an endpoint that answered 410
//   POST /v1/deliveries/redeliver        {"task_id", "status": dead|delivered}: all of a
//                                        task's, in one commit, so they go in seq order

#include "gateway/api/deliveries.hpp"

#include <boost/json.hpp>

#include <algorithm>
#include <chrono>
#include <memory>
#include <set>
#include <vector>

#include "gateway/api/auth.hpp"
#include "gateway/api/common.hpp"
#include "gateway/api/problem.hpp"
#include "gateway/core/json.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/router.hpp"
#include "gateway/store/db.hpp"

namespace segue::api {
namespace {

namespace json = boost::json;
using boost::asio::awaitable;

store::millis now_ms() {
    return std::chrono::duration_cast<std::chrono::milliseconds>(
               std::chrono::system_clock::now().time_since_epoch())
        .count();
}

json::object delivery_document(const store::delivery_row& d, store::millis now) {
    json::object o;
    o["id"] = d.id;
    o["event_id"] = d.event_id;
    o["task_id"] = d.task_id;
    o["seq"] = d.seq;
    o["url"] = d.url;
    o["status"] = d.status;
    o["attempts"] = d.attempts;
    if (d.status == "pending")
        o["next_attempt_at"] = core::iso8601(d.next_at);
    // A replica holds it: sending it now, or it stopped while sending (then the delivery is
    // tried again once this time passes, whatever next_attempt_at says).
    if (d.status == "pending" && d.lease_until > now)
        o["claimed_until"] = core::iso8601(d.lease_until);
    if (d.last_status != 0)
        o["last_status"] = d.last_status;
    if (!d.last_error.empty())
        o["last_error"] = d.last_error;
    o["event_at"] = core::iso8601(d.event_at);
    o["created_at"] = core::iso8601(d.created_at);
    o["updated_at"] = core::iso8601(d.updated_at);
    if (d.delivered_at != 0)
        o["delivered_at"] = core::iso8601(d.delivered_at);
    return o;
}

struct delivery_handlers : std::enable_shared_from_this<delivery_handlers> {
    explicit delivery_handlers(const delivery_deps& d) : deps(d) {}

    awaitable<void> list(http::context& ctx) {
        auto self = shared_from_this();
        auto tenant = authenticate(ctx, deps.auth);
        if (!tenant || !only_params(ctx, {"limit", "status", "task_id", "before"}))
            co_return;
        auto limit = int_param(ctx, "limit", 50, 1, 500);
        if (!limit)
            co_return;
        std::optional<std::string> status_param;
        std::optional<std::string> task_id_param;
        std::optional<std::string> before_param;
        if (!text_param(ctx, "status", status_param) ||
            !text_param(ctx, "task_id", task_id_param) || !text_param(ctx, "before", before_param))
            co_return;
        const std::string status = status_param.value_or("");
        if (status_param && status != "pending" && status != "delivered" && status != "dead") {
            set_problem(ctx.res(), error_kind::bad_request,
                        "status must be pending, delivered or dead", ctx.path(),
                        {{"status", "must be pending, delivered or dead"}});
            co_return;
        }
        // An empty filter is a client's mistake (a variable it did not set): listing every
        // task's deliveries instead would hide it.
        if (task_id_param && task_id_param->empty()) {
            set_problem(ctx.res(), error_kind::bad_request, "task_id must not be empty", ctx.path(),
                        {{"task_id", "must not be empty"}});
            co_return;
        }
        if (before_param && before_param->empty()) {
            set_problem(ctx.res(), error_kind::bad_request, "before must not be empty", ctx.path(),
                        {{"before", "must be the id of one of your deliveries"}});
            co_return;
        }
        const std::string task_id = task_id_param.value_or("");
        const std::string before = before_param.value_or("");
        std::vector<store::delivery_row> rows;
        bool cursor_known = true;
        bool task_known = true;
        co_await deps.db.read([&](store::transaction& tx) {
            // A task that is not the tenant's (a typo, another tenant's, one retention removed
            // with its deliveries) would list as "no deliveries": refused instead, as the
            // redelivery of such a task is.
            if (!task_id.empty()) {
                const auto t = tx.get_task(task_id);
                task_known = t && t->tenant == *tenant;
                if (!task_known)
                    return;
            }
            // An unknown cursor would page to an empty "end of list": refused instead.
            if (!before.empty()) {
                const auto d = tx.get_delivery(before);
                cursor_known = d && d->tenant == *tenant;
                if (!cursor_known)
                    return;
            }
            rows = tx.list_deliveries(*tenant, status, task_id, *limit + 1, before);
        });
        if (!task_known) {
            set_problem(ctx.res(), error_kind::bad_request,
                        "task_id must be the id of one of your tasks", ctx.path(),
                        {{"task_id", "no such extension"}});
            co_return;
        }
        if (!cursor_known) {
            set_problem(ctx.res(), error_kind::bad_request,
                        "before must be the id of one of your deliveries", ctx.path(),
                        {{"before", "no such delivery"}});
            co_return;
        }
        json::array data;
        const bool more = static_cast<int>(rows.size()) > *limit;
        const auto now = now_ms();
        for (int i = 0; i < static_cast<int>(rows.size()) && i < *limit; ++i)
            data.emplace_back(delivery_document(rows[i], now));
        json::object body;
        body["data"] = std::move(data);
        body["has_more"] = more;
        json_response(ctx, 200, body);
    }

    awaitable<void> get(http::context& ctx) {
        auto self = shared_from_this();
        auto tenant = authenticate(ctx, deps.auth);
        if (!tenant || !only_params(ctx, {}))
            co_return;
        const std::string id(ctx.param("id"));
        std::optional<store::delivery_row> d;
        co_await deps.db.read([&](store::transaction& tx) { d = tx.get_delivery(id); });
        if (!d || d->tenant != *tenant) {
            set_problem(ctx.res(), error_kind::not_found, "no such delivery", ctx.path());
            co_return;
        }
        json_response(ctx, 200, delivery_document(*d, now_ms()));
    }

    awaitable<void> redeliver(http::context& ctx) {
        auto self = shared_from_this();
        auto tenant = authenticate(ctx, deps.auth);
        if (!tenant || !only_params(ctx, {}))
            co_return;
        const std::string id(ctx.param("id"));
        enum class outcome { done, not_found, pending } out = outcome::not_found;
        std::optional<store::delivery_row> after;
        const auto now = now_ms();
        co_await deps.db.write([&](store::transaction& tx) {
            auto d = tx.get_delivery(id);
            if (!d || d->tenant != *tenant)
                return;
            if (d->status == "pending") {
                out = outcome::pending;
                after = d;
                return;
            }
            // The update decides, not the read above: on PostgreSQL a redeliver on another
            // replica may have made it pending (and a claim taken it) since.
            if (!tx.redeliver(id, now)) {
                out = outcome::pending;
                after = tx.get_delivery(id);
                if (!after)
                    out = outcome::not_found;
                return;
            }
            // A redelivery says the endpoint is back: lift a 410 stop for it.
            tx.set_endpoint_gone(d->tenant, d->url, false, now);
            after = tx.get_delivery(id);
            out = outcome::done;
        });
        switch (out) {
            case outcome::not_found:
                set_problem(ctx.res(), error_kind::not_found, "no such delivery", ctx.path());
                break;
            case outcome::pending:
                // A delivery whose time has passed waits behind an earlier undelivered event of
                // its task (each task's events go in order): no time can be promised then.
                set_problem(ctx.res(), error_kind::conflict,
                            after->next_at > now_ms()
                                ? "the delivery is still pending; it will be attempted again at " +
                                      core::iso8601(after->next_at)
                                : std::string("the delivery is still pending: due now, or waiting "
                                              "behind an earlier event of its task that is not "
                                              "delivered yet"),
                            ctx.path());
                break;
            case outcome::done:
                json_response(ctx, 202, delivery_document(*after, now_ms()));
                break;
        }
    }

    // A task's dead (or delivered) deliveries, pending again in one commit: each (task, url)
    // queue sends its head first, so they arrive in seq order. One by one, a redelivery is
    // sent as soon as nothing earlier of its task is pending, in the order they were asked for.
    awaitable<void> redeliver_task(http::context& ctx) {
        auto self = shared_from_this();
        auto tenant = authenticate(ctx, deps.auth);
        if (!tenant || !only_params(ctx, {}))
            co_return;
        auto body = json_object_body(ctx);
        if (!body)
            co_return;
        std::vector<field_error> errors;
        std::string task_id, status = "dead";
        for (const auto& kv : *body) {
            if (kv.key() == "task_id") {
                if (kv.value().is_string() && !kv.value().get_string().empty())
                    task_id = kv.value().get_string();
                else
                    errors.push_back({"task_id", "must be a task id"});
            } else if (kv.key() == "status") {
                if (kv.value().is_string() &&
                    (kv.value().get_string() == "dead" || kv.value().get_string() == "delivered"))
                    status = kv.value().get_string();
                else
                    errors.push_back({"status", "must be dead or delivered"});
            } else {
                errors.push_back({std::string(kv.key()), "unknown field"});
            }
        }
        if (task_id.empty() && !body->contains("task_id"))
            errors.push_back({"task_id", "is required"});
        if (!errors.empty()) {
            set_validation_problem(ctx.res(), ctx.path(), errors);
            co_return;
        }
        bool found = false;
        std::vector<store::delivery_row> done;
        const auto now = now_ms();
        co_await deps.db.write([&](store::transaction& tx) {
            done.clear();
            auto t = tx.get_task(task_id);
            found = t && t->tenant == *tenant;
            if (!found)
                return;
            // A task has a few dozen events at most: one page holds them all.
            auto rows = tx.list_deliveries(*tenant, status, task_id, 10'000, "");
            std::sort(rows.begin(), rows.end(),
                      [](const auto& a, const auto& b) { return a.seq < b.seq; });
            std::set<std::string> urls;
            for (const auto& d : rows)
                if (tx.redeliver(d.id, now)) {
                    urls.insert(d.url);
                    if (auto after = tx.get_delivery(d.id))
                        done.push_back(std::move(*after));
                }
            for (const auto& u : urls)
                tx.set_endpoint_gone(*tenant, u, false, now);
        });
        if (!found) {
            set_problem(ctx.res(), error_kind::not_found, "no such extension", ctx.path(),
                        {{"task_id", "no such extension"}});
            co_return;
        }
        json::array data;
        for (const auto& d : done)
            data.emplace_back(delivery_document(d, now));
        json::object out;
        out["data"] = std::move(data);
        json_response(ctx, 202, out);
    }

    delivery_deps deps;
};

}  // namespace

void add_delivery_routes(http::router& routes, const delivery_deps& deps) {
    auto h = std::make_shared<delivery_handlers>(deps);
    routes.add("GET", "/v1/deliveries", [h](http::context& c) { return h->list(c); });
    routes.add("GET", "/v1/deliveries/{id}", [h](http::context& c) { return h->get(c); });
    routes.add("POST", "/v1/deliveries/{id}/redeliver",
               [h](http::context& c) { return h->redeliver(c); });
    routes.add("POST", "/v1/deliveries/redeliver",
               [h](http::context& c) { return h->redeliver_task(c); });
}

}  // namespace segue::api

// Credits: the tenant's balance and ledger, and operator top-ups.
//
//   GET  /v1/credits?limit=…&before=<entry id>
//        {"tenant", "balance", "held", "available", "captured", "granted", "unit": "credits",
//         "entries": [newest first], "has_more"}; amounts are JSON numbers of credits.
//   POST /v1/admin/credits   Authorization: Bearer <admin key>; Idempotency-Key optional
//        {"tenant": "t", "amount": 100, "note": "…"} -> 201 with the totals and the entry; a
//        replay of the same Idempotency-Key adds nothing and answers 200 with the current totals.
//
// The tenant's initial grant (config) is written lazily and idempotently: the first read of its
// credits (or top-up, or task creation) writes it.

#include "gateway/api/credits.hpp"

#include <boost/json.hpp>

#include <cmath>
#include <limits>
#include <memory>
#include <mutex>
#include <set>

#include "gateway/api/auth.hpp"
#include "gateway/api/common.hpp"
#include "gateway/api/problem.hpp"
#include "gateway/api/validate.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/ledger.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/multipart.hpp"
#include "gateway/http/router.hpp"
#include "gateway/log/log.hpp"
#include "gateway/store/db.hpp"
#include "gateway/util/crypto.hpp"
#include "gateway/util/json_keys.hpp"

namespace segue::api {
namespace {

namespace json = boost::json;
using boost::asio::awaitable;

constexpr double max_topup_credits = 1e9;
constexpr std::size_t max_note_chars = 500;

struct topup_request {
    std::string tenant;
    std::int64_t amount_milli = 0;
    std::string note;
};

// Every bad field at once, like POST /v1/extensions.
std::vector<field_error> validate_topup(const json::object& body, const credits_deps& deps,
                                        topup_request& out) {
    std::vector<field_error> errors;
    for (const auto& kv : body) {
        const std::string_view k = kv.key();
        if (k != "tenant" && k != "amount" && k != "note")
            errors.push_back({std::string(k), "unknown field"});
    }

    const auto* tenant = body.if_contains("tenant");
    if (tenant == nullptr || !tenant->is_string() || tenant->as_string().empty()) {
        errors.push_back({"tenant", tenant == nullptr ? "required: the name of a configured tenant"
                                                      : "must be the name of a configured tenant"});
    } else {
        out.tenant = std::string(tenant->as_string());
        if (!deps.tenant_exists || !deps.tenant_exists(out.tenant))
            errors.push_back({"tenant", "no such tenant"});
    }

    const auto* amount = body.if_contains("amount");
    if (amount == nullptr) {
        errors.push_back({"amount", "required: a number of credits"});
    } else if (!amount->is_number()) {
        errors.push_back({"amount", "must be a JSON number of credits (5, not \"5\")"});
    } else {
        // Credits are kept in thousandths: an amount with more decimals would be rounded, so
        // more (or less) would be credited than asked, and a replay of 1.0001 would match 1.
        const double credits = amount->to_number<double>();
        const auto milli = core::credits_to_milli(credits);
        const double thousandths = credits * 1000;
        if (!std::isfinite(credits) || credits < 0.001 || credits > max_topup_credits || !milli ||
            *milli < 1 ||
            // A few units in the last place of the product: 1.23 is 1230 to that precision,
            // 1.000001 and 999999999.9999 are not.
            std::abs(thousandths - std::round(thousandths)) >
                8 * std::numeric_limits<double>::epsilon() * std::max(1.0, thousandths))
            errors.push_back({"amount",
                              "must be from 0.001 to 1000000000 credits, with at most three "
                              "decimals (credits are kept in thousandths)"});
        else
            out.amount_milli = *milli;
    }

    if (const auto* note = body.if_contains("note")) {
        if (!note->is_string())
            errors.push_back({"note", "must be a string"});
        else if (utf8_length(note->as_string()) > max_note_chars)
            errors.push_back({"note", "must be at most 500 characters"});
        else
            out.note = std::string(note->as_string());
    }
    return errors;
}

struct credit_handlers : std::enable_shared_from_this<credit_handlers> {
    explicit credit_handlers(const credits_deps& d)
        : deps(d), admin_digest(d.admin_key.empty() ? "" : util::sha256_raw(d.admin_key)) {}

    // Writes the tenant's initial grant unless this process already saw it in place. The store
    // call is idempotent; the set only saves the writer a unit per read.
    awaitable<void> ensure_initial_grant(const std::string& tenant) {
        auto self = shared_from_this();
        const std::int64_t amount = deps.initial_grant ? deps.initial_grant(tenant) : 0;
        if (amount <= 0)
            co_return;
        {
            std::lock_guard lk(granted_mutex);
            if (granted.contains(tenant))
                co_return;
        }
        const auto now = core::now_ms();
        co_await deps.db.write(
            [&](store::transaction& tx) { tx.ensure_grant(tenant, amount, now); });
        std::lock_guard lk(granted_mutex);
        granted.insert(tenant);
    }

    awaitable<void> show(http::context& ctx) {
        auto self = shared_from_this();
        auto tenant = authenticate(ctx, deps.auth);
        if (!tenant || !only_params(ctx, {"limit", "before"}))
            co_return;
        auto limit = int_param(ctx, "limit", 50, 1, 500);
        if (!limit)
            co_return;
        std::int64_t before = 0;
        std::optional<std::string> b;
        if (!text_param(ctx, "before", b))
            co_return;
        if (b) {
            auto n = parse_int(*b);
            if (!n || *n < 1) {
                set_problem(ctx.res(), error_kind::bad_request,
                            "before must be the id of a ledger entry", ctx.path(),
                            {{"before", "must be a positive integer (an entry id)"}});
                co_return;
            }
            before = *n;
        }
        co_await ensure_initial_grant(*tenant);
        store::ledger_balance totals;
        std::vector<store::ledger_row> rows;
        bool cursor_known = true;
        co_await deps.db.read([&](store::transaction& tx) {
            // An unknown cursor would page to an empty "end of list": refused instead. The
            // entry itself is the first of the page that starts just after it (by the same
            // index as the page).
            if (before > 0) {
                const auto at = tx.list_ledger(*tenant, 1, before + 1);
                cursor_known = !at.empty() && at.front().id == before;
                if (!cursor_known)
                    return;
            }
            totals = tx.ledger_totals(*tenant);
            rows = tx.list_ledger(*tenant, *limit + 1, before);
        });
        if (!cursor_known) {
            set_problem(ctx.res(), error_kind::bad_request,
                        "before must be the id of one of your ledger entries", ctx.path(),
                        {{"before", "no such ledger entry"}});
            co_return;
        }
        json::object body = core::ledger_totals_document(*tenant, totals);
        json::array entries;
        const bool more = static_cast<int>(rows.size()) > *limit;
        for (int i = 0; i < static_cast<int>(rows.size()) && i < *limit; ++i)
            entries.emplace_back(core::ledger_entry_document(rows[i]));
        body["entries"] = std::move(entries);
        body["has_more"] = more;
        json_response(ctx, 200, body);
    }

    awaitable<void> top_up(http::context& ctx) {
        auto self = shared_from_this();
        if (admin_digest.empty()) {
            set_problem(ctx.res(), error_kind::not_found,
                        "the admin API is disabled (no admin key is configured)", ctx.path());
            co_return;
        }
        const std::string_view token = bearer_token(ctx.header("Authorization"));
        // Digests have a fixed length: the comparison takes the same time for any token.
        if (token.empty() || !util::constant_time_equal(util::sha256_raw(token), admin_digest)) {
            set_problem(ctx.res(), error_kind::unauthorized,
                        "send Authorization: Bearer <admin key>", ctx.path());
            ctx.res().set_header("WWW-Authenticate", "Bearer");
            co_return;
        }
        if (!only_params(ctx, {}))
            co_return;

        std::string key;
        bool keyed = false;
        if (auto k = ctx.header("Idempotency-Key")) {
            if (!valid_idempotency_key(*k)) {
                set_problem(ctx.res(), error_kind::bad_request,
                            "Idempotency-Key must be 1-255 visible ASCII characters", ctx.path());
                co_return;
            }
            key = std::string(*k);
            keyed = true;
        } else {
            key = util::random_id("top_");
        }

        auto request = json_object_body(ctx);
        if (!request)
            co_return;
        topup_request req;
        auto errors = validate_topup(*request, deps, req);
        if (!errors.empty()) {
            set_validation_problem(ctx.res(), ctx.path(), errors);
            co_return;
        }

        const std::int64_t grant = deps.initial_grant ? deps.initial_grant(req.tenant) : 0;
        const auto now = core::now_ms();
        enum class outcome { added, replayed, conflict } out = outcome::added;
        std::optional<store::ledger_row> entry;
        store::ledger_balance totals;
        co_await deps.db.write([&](store::transaction& tx) {
            tx.ensure_grant(req.tenant, grant, now);
            store::ledger_row e;
            e.tenant = req.tenant;
            e.kind = "topup";
            e.key = key;
            e.amount_milli = req.amount_milli;
            e.note = req.note;
            e.created_at = now;
            if (!tx.add_ledger_entry(e)) {
                entry = tx.find_ledger_entry(req.tenant, "", 0, "topup", key);
                out = entry && entry->amount_milli == req.amount_milli && entry->note == req.note
                          ? outcome::replayed
                          : outcome::conflict;
            } else {
                entry = tx.find_ledger_entry(req.tenant, "", 0, "topup", key);
            }
            totals = tx.ledger_totals(req.tenant);
        });
        if (out == outcome::conflict) {
            set_problem(ctx.res(), error_kind::conflict,
                        "Idempotency-Key was used for a different top-up of this tenant",
                        ctx.path());
            co_return;
        }
        {
            std::lock_guard lk(granted_mutex);
            if (grant > 0)
                granted.insert(req.tenant);
        }
        if (out == outcome::added)
            log::info("credits added", {{"tenant", req.tenant},
                                        {"amount", core::format_credits(req.amount_milli)},
                                        {"entry_id", entry ? entry->id : std::int64_t{0}},
                                        {"idempotency_key", keyed}});
        json::object body = core::ledger_totals_document(req.tenant, totals);
        if (entry)
            body["entry"] = core::ledger_entry_document(*entry);
        if (out == outcome::replayed)
            ctx.res().set_header("Idempotent-Replayed", "true");
        json_response(ctx, out == outcome::added ? 201 : 200, body);
    }

    credits_deps deps;
    std::string admin_digest;  // raw SHA-256 of the admin key, "" when disabled
    std::mutex granted_mutex;
    std::set<std::string, std::less<>> granted;  // tenants whose initial grant is in place
};

}  // namespace

void add_credit_routes(http::router& routes, const credits_deps& deps) {
    auto h = std::make_shared<credit_handlers>(deps);
    routes.add("GET", "/v1/credits", [h](http::context& c) { return h->show(c); });
    routes.add("POST", "/v1/admin/credits", [h](http::context& c) { return h->top_up(c); });
}

}  // namespace segue::api

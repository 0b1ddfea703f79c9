// The credit ledger: the store's append-only entries (unique keys, totals, paging, the initial
// grant), the pure helpers (credits <-> milli-credits, shares, documents) and the /v1 routes.

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/executor_work_guard.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/json.hpp>

#include <cctype>
#include <cmath>
#include <future>
#include <limits>
#include <memory>
#include <random>
#include <stdexcept>
#include <string>
#include <vector>

#include "gateway/api/auth.hpp"
#include "gateway/api/credits.hpp"
#include "gateway/core/ledger.hpp"
#include "gateway/http/message.hpp"
#include "gateway/http/router.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/store/db.hpp"
#include "gateway/store/store.hpp"
#include "tests/support/process.hpp"
#include "tests/support/store_sync.hpp"

namespace st = segue::store;
namespace json = boost::json;

namespace {

using segue::test::run_sync;

// The first column of the first row of `sql`, on a separate raw connection (WAL: it sees what
// the store committed).
long long raw_int(const std::string& path, const std::string& sql) {
    sqlite3* db = nullptr;
    if (sqlite3_open_v2(path.c_str(), &db, SQLITE_OPEN_READONLY, nullptr) != SQLITE_OK) {
        sqlite3_close(db);
        throw std::runtime_error("raw open failed");
    }
    sqlite3_stmt* stmt = nullptr;
    long long out = 0;
    if (sqlite3_prepare_v2(db, sql.c_str(), -1, &stmt, nullptr) == SQLITE_OK &&
        sqlite3_step(stmt) == SQLITE_ROW)
        out = sqlite3_column_int64(stmt, 0);
    else
        ADD_FAILURE() << sql << ": " << sqlite3_errmsg(db);
    sqlite3_finalize(stmt);
    sqlite3_close(db);
    return out;
}

st::ledger_row entry(const std::string& tenant, const std::string& task, int output,
                     const std::string& kind, std::int64_t milli, const std::string& key = "") {
    st::ledger_row e;
    e.tenant = tenant;
    e.task_id = task;
    e.output = output;
    e.kind = kind;
    e.key = key;
    e.amount_milli = milli;
    e.provider = task.empty() ? "" : "musicgpt";
    e.created_at = 1000;
    return e;
}

class LedgerStore : public ::testing::Test {
  protected:
    void SetUp() override { s_ = st::open_sqlite({.path = dir_.file("segue.db")}); }
    void TearDown() override { s_->close(); }
    void write(st::store::unit fn) { run_sync(*s_, true, std::move(fn)); }
    void read(st::store::unit fn) { run_sync(*s_, false, std::move(fn)); }
    bool add(const st::ledger_row& e) {
        bool ok = false;
        write([&](st::transaction& tx) { ok = tx.add_ledger_entry(e); });
        return ok;
    }
    st::ledger_balance totals(const std::string& tenant) {
        st::ledger_balance b;
        read([&](st::transaction& tx) { b = tx.ledger_totals(tenant); });
        return b;
    }

    segue::test::temp_dir dir_;
    std::unique_ptr<st::store> s_;
};

}  // namespace

TEST_F(LedgerStore, UniqueKeyMakesACaptureOrReleaseCountOnce) {
    EXPECT_TRUE(add(entry("acme", "", 0, "grant", 100'000, "initial")));
    EXPECT_TRUE(add(entry("acme", "ext_1", 0, "hold", 24'000)));
    EXPECT_FALSE(add(entry("acme", "ext_1", 0, "hold", 24'000)));  // the submit job ran twice
    EXPECT_TRUE(add(entry("acme", "ext_1", 1, "capture", 12'000)));
    EXPECT_FALSE(add(entry("acme", "ext_1", 1, "capture", 12'000)));  // the poll ran twice
    EXPECT_FALSE(add(entry("acme", "ext_1", 1, "capture", 9'000)));   // even with another amount
    EXPECT_TRUE(add(entry("acme", "ext_1", 2, "release", 12'000)));
    EXPECT_FALSE(add(entry("acme", "ext_1", 2, "release", 12'000)));
    // A different key is a different entry (e.g. a correction after the provider's estimate).
    EXPECT_TRUE(add(entry("acme", "ext_1", 0, "hold", 1'000, "estimate")));
    // The same (task, output, kind, key) of another tenant is not the same entry.
    EXPECT_TRUE(add(entry("other", "ext_1", 1, "capture", 12'000)));

    std::vector<st::ledger_row> rows;
    st::task_ledger t;
    std::optional<st::ledger_row> found;
    read([&](st::transaction& tx) {
        rows = tx.list_ledger("acme", 100, 0);
        t = tx.ledger_for_task("ext_1");
        found = tx.find_ledger_entry("acme", "ext_1", 1, "capture", "");
    });
    EXPECT_EQ(rows.size(), 5u);
    // ledger_for_task sums every entry of the task id (task ids are globally unique).
    EXPECT_EQ(t.hold, 25'000);
    EXPECT_EQ(t.captured, 24'000);
    EXPECT_EQ(t.released, 12'000);
    EXPECT_EQ(t.outstanding(), 0);
    ASSERT_TRUE(found);
    EXPECT_EQ(found->amount_milli, 12'000);  // the first write stands
    EXPECT_EQ(found->provider, "musicgpt");
    EXPECT_GT(found->id, 0);

    const auto b = totals("acme");
    EXPECT_EQ(b.granted, 100'000);
    EXPECT_EQ(b.captured, 12'000);
    EXPECT_EQ(b.held, 1'000);  // 25'000 held - 12'000 captured - 12'000 released
    EXPECT_EQ(b.balance, 88'000);
    EXPECT_EQ(b.available, 87'000);
}

TEST_F(LedgerStore, TotalsClampHeldAtZeroPerTask) {
    write([](st::transaction& tx) {
        tx.add_ledger_entry(entry("acme", "", 0, "grant", 100'000, "initial"));
        tx.add_ledger_entry(entry("acme", "", 0, "topup", 50'000, "top_1"));
        // A: the outputs cost more than the estimate: held 0, not -10'000.
        tx.add_ledger_entry(entry("acme", "ext_a", 0, "hold", 30'000));
        tx.add_ledger_entry(entry("acme", "ext_a", 1, "capture", 20'000));
        tx.add_ledger_entry(entry("acme", "ext_a", 2, "capture", 20'000));
        // B: running, one output done.
        tx.add_ledger_entry(entry("acme", "ext_b", 0, "hold", 20'000));
        tx.add_ledger_entry(entry("acme", "ext_b", 1, "capture", 5'000));
        // C: failed, fully released.
        tx.add_ledger_entry(entry("acme", "ext_c", 0, "hold", 10'000));
        tx.add_ledger_entry(entry("acme", "ext_c", 0, "release", 10'000));
        // Another tenant's entries count for it only.
        tx.add_ledger_entry(entry("other", "ext_d", 0, "hold", 7'000));
    });
    const auto b = totals("acme");
    EXPECT_EQ(b.granted, 150'000);
    EXPECT_EQ(b.captured, 45'000);
    EXPECT_EQ(b.held, 15'000);
    EXPECT_EQ(b.balance, 105'000);
    EXPECT_EQ(b.available, 90'000);

    const auto o = totals("other");
    EXPECT_EQ(o.granted, 0);
    EXPECT_EQ(o.held, 7'000);
    EXPECT_EQ(o.balance, 0);
    EXPECT_EQ(o.available, -7'000);

    const auto none = totals("nobody");
    EXPECT_EQ(none.granted, 0);
    EXPECT_EQ(none.held, 0);
    EXPECT_EQ(none.available, 0);

    st::task_ledger a, bt, missing;
    read([&](st::transaction& tx) {
        a = tx.ledger_for_task("ext_a");
        bt = tx.ledger_for_task("ext_b");
        missing = tx.ledger_for_task("");
    });
    EXPECT_EQ(a.hold, 30'000);
    EXPECT_EQ(a.captured, 40'000);
    EXPECT_EQ(a.outstanding(), 0);
    EXPECT_EQ(bt.outstanding(), 15'000);
    EXPECT_EQ(missing.hold, 0);  // "" is no task: grants and top-ups are not summed
}

TEST_F(LedgerStore, RunningTotalsMatchARecomputationFromTheEntries) {
    // Random interleavings of grants, holds, captures and releases (with duplicates, captures
    // past the hold and releases of nothing); the kept totals must equal the sums of the entries.
    std::mt19937 rng(7);
    const std::vector<std::string> kinds{"hold", "hold", "hold", "capture", "release", "topup"};
    for (int unit = 0; unit < 40; ++unit) {
        write([&](st::transaction& tx) {
            for (int i = 0; i < 25; ++i) {
                const std::string tenant = rng() % 3 == 0 ? "beta" : "acme";
                const std::string kind = kinds[rng() % kinds.size()];
                const std::string task = "ext_" + std::to_string(rng() % 40);
                const int output = static_cast<int>(rng() % 3);
                const std::int64_t amount = static_cast<std::int64_t>(rng() % 5000);
                if (kind == "topup")
                    tx.add_ledger_entry(
                        entry(tenant, "", 0, kind, amount, "k" + std::to_string(rng() % 20)));
                else
                    tx.add_ledger_entry(
                        entry(tenant, task, output, kind, amount, rng() % 4 == 0 ? "adjust" : ""));
            }
        });
    }
    for (const std::string tenant : {"acme", "beta"}) {
        const std::string where = " FROM ledger WHERE tenant = '" + tenant + "'";
        auto one = [&](const std::string& sql) { return raw_int(dir_.file("segue.db"), sql); };
        const auto granted = one("SELECT COALESCE(SUM(amount_milli), 0)" + where +
                                 " AND kind IN ('grant', 'topup')");
        const auto captured =
            one("SELECT COALESCE(SUM(amount_milli), 0)" + where + " AND kind = 'capture'");
        const auto held =
            one("SELECT COALESCE(SUM(o), 0) FROM (SELECT MAX(0, SUM(CASE kind WHEN 'hold' THEN "
                "amount_milli ELSE -amount_milli END)) AS o" +
                where + " AND task_id <> '' GROUP BY task_id)");
        // Both sides of the clamp occur: tasks still holding and tasks captured past the hold.
        EXPECT_GT(held, 0);
        EXPECT_GT(granted, 0);
        EXPECT_GT(one("SELECT COUNT(*) FROM (SELECT SUM(CASE kind WHEN 'hold' THEN amount_milli "
                      "ELSE -amount_milli END) AS o" +
                      where + " AND task_id <> '' GROUP BY task_id) WHERE o < 0"),
                  0);
        const auto b = totals(tenant);
        EXPECT_EQ(b.granted, granted) << tenant;
        EXPECT_EQ(b.captured, captured) << tenant;
        EXPECT_EQ(b.held, held) << tenant;
        EXPECT_EQ(b.balance, granted - captured);
        EXPECT_EQ(b.available, granted - captured - held);
    }
}

TEST_F(LedgerStore, ListPagesNewestFirstPerTenant) {
    write([](st::transaction& tx) {
        for (int i = 1; i <= 5; ++i) {
            tx.add_ledger_entry(
                entry("acme", "", 0, "topup", i * 1'000, "top_" + std::to_string(i)));
            tx.add_ledger_entry(entry("other", "", 0, "topup", 1, "top_" + std::to_string(i)));
        }
    });
    std::vector<st::ledger_row> first, second, third, none;
    read([&](st::transaction& tx) {
        first = tx.list_ledger("acme", 2, 0);
        second = tx.list_ledger("acme", 2, first.back().id);
        third = tx.list_ledger("acme", 10, second.back().id);
        none = tx.list_ledger("acme", 0, 0);
    });
    ASSERT_EQ(first.size(), 2u);
    EXPECT_EQ(first[0].amount_milli, 5'000);
    EXPECT_EQ(first[1].amount_milli, 4'000);
    EXPECT_GT(first[0].id, first[1].id);
    ASSERT_EQ(second.size(), 2u);
    EXPECT_EQ(second[0].amount_milli, 3'000);
    ASSERT_EQ(third.size(), 1u);
    EXPECT_EQ(third[0].amount_milli, 1'000);
    EXPECT_EQ(third[0].key, "top_1");
    EXPECT_EQ(third[0].kind, "topup");
    EXPECT_EQ(third[0].tenant, "acme");
    EXPECT_EQ(third[0].created_at, 1000);
    EXPECT_TRUE(none.empty());
}

TEST_F(LedgerStore, EnsureGrantWritesTheInitialGrantOnce) {
    bool first = false, again = false, changed = false, zero = false;
    write([&](st::transaction& tx) {
        first = tx.ensure_grant("acme", 100'000, 5000);
        again = tx.ensure_grant("acme", 100'000, 6000);
        changed = tx.ensure_grant("acme", 200'000, 7000);  // a changed config grants nothing more
        zero = tx.ensure_grant("free", 0, 5000);
    });
    EXPECT_TRUE(first);
    EXPECT_FALSE(again);
    EXPECT_FALSE(changed);
    EXPECT_FALSE(zero);
    std::vector<st::ledger_row> rows, free_rows;
    read([&](st::transaction& tx) {
        rows = tx.list_ledger("acme", 10, 0);
        free_rows = tx.list_ledger("free", 10, 0);
    });
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_EQ(rows[0].kind, "grant");
    EXPECT_EQ(rows[0].key, "initial");
    EXPECT_EQ(rows[0].amount_milli, 100'000);
    EXPECT_EQ(rows[0].created_at, 5000);
    EXPECT_TRUE(free_rows.empty());
    EXPECT_EQ(totals("acme").available, 100'000);
}

TEST_F(LedgerStore, RefusesMalformedEntries) {
    auto refused = [&](st::ledger_row e) {
        EXPECT_THROW(write([&](st::transaction& tx) { tx.add_ledger_entry(e); }),
                     std::invalid_argument)
            << e.kind;
    };
    refused(entry("acme", "ext_1", 0, "spend", 1));
    refused(entry("acme", "ext_1", 0, "hold", -1));
    refused(entry("", "ext_1", 0, "hold", 1));
    refused(entry("acme", "", 0, "capture", 1));
    refused(entry("acme", "ext_1", 0, "topup", 1, "k"));
    refused(entry("acme", "", 1, "grant", 1, "k"));
    refused(entry("acme", "ext_1", -1, "hold", 1));
    std::vector<st::ledger_row> rows;
    read([&](st::transaction& tx) { rows = tx.list_ledger("acme", 10, 0); });
    EXPECT_TRUE(rows.empty());
    // created_at 0 means "now".
    auto e = entry("acme", "", 0, "topup", 1, "k");
    e.created_at = 0;
    EXPECT_TRUE(add(e));
    read([&](st::transaction& tx) { rows = tx.list_ledger("acme", 10, 0); });
    ASSERT_EQ(rows.size(), 1u);
    EXPECT_GT(rows[0].created_at, 1'600'000'000'000LL);
}

TEST(LedgerMath, CreditsToMilliRoundsHalfUpOnTheWrittenDecimal) {
    using segue::core::credits_to_milli;
    EXPECT_EQ(credits_to_milli(12), 12'000);
    EXPECT_EQ(credits_to_milli(1.5), 1'500);
    EXPECT_EQ(credits_to_milli(0.001), 1);
    EXPECT_EQ(credits_to_milli(0.0005), 1);
    EXPECT_EQ(credits_to_milli(0.0004999), 0);
    EXPECT_EQ(credits_to_milli(1.0005), 1'001);  // binary 1.000499999…: the text says 1.0005
    EXPECT_EQ(credits_to_milli(2.675), 2'675);
    EXPECT_EQ(credits_to_milli(0.1 + 0.2), 300);  // 0.30000000000000004
    EXPECT_EQ(credits_to_milli(0.9999), 1'000);   // the carry ripples into the whole part
    EXPECT_EQ(credits_to_milli(0), 0);
    EXPECT_EQ(credits_to_milli(-0.0), 0);
    EXPECT_EQ(credits_to_milli(5e-324), 0);
    EXPECT_EQ(credits_to_milli(1e12), 1'000'000'000'000'000LL);
    EXPECT_FALSE(credits_to_milli(1e12 * 1.0000001));
    EXPECT_FALSE(credits_to_milli(-0.001));
    EXPECT_FALSE(credits_to_milli(std::nan("")));
    EXPECT_FALSE(credits_to_milli(std::numeric_limits<double>::infinity()));
}

TEST(LedgerMath, FormatAndJsonNumbers) {
    using segue::core::format_credits;
    EXPECT_EQ(format_credits(12'000), "12");
    EXPECT_EQ(format_credits(1'500), "1.5");
    EXPECT_EQ(format_credits(1'230), "1.23");
    EXPECT_EQ(format_credits(1), "0.001");
    EXPECT_EQ(format_credits(-1), "-0.001");
    EXPECT_EQ(format_credits(0), "0");
    EXPECT_EQ(format_credits(std::numeric_limits<std::int64_t>::min()), "-9223372036854775.808");
    EXPECT_DOUBLE_EQ(segue::core::milli_to_credits(1'500), 1.5);

    auto v = segue::core::credits_value(12'000);
    EXPECT_TRUE(v.is_int64());
    EXPECT_EQ(json::serialize(v), "12");
    auto half = segue::core::credits_value(1'500);
    ASSERT_TRUE(half.is_double());
    EXPECT_EQ(json::parse(json::serialize(half)).as_double(), 1.5);
    EXPECT_EQ(segue::core::credits_value(-3'000).as_int64(), -3);
}

TEST(LedgerMath, SharesSumToTheTotal) {
    using segue::core::share_of;
    EXPECT_EQ(share_of(10, 3, 1), 4);
    EXPECT_EQ(share_of(10, 3, 2), 3);
    EXPECT_EQ(share_of(10, 3, 3), 3);
    EXPECT_EQ(share_of(2, 3, 1), 1);
    EXPECT_EQ(share_of(2, 3, 2), 1);
    EXPECT_EQ(share_of(2, 3, 3), 0);
    EXPECT_EQ(share_of(0, 2, 2), 0);
    EXPECT_EQ(share_of(7, 1, 1), 7);
    for (std::int64_t total : {0LL, 1LL, 999LL, 24'001LL, 1'000'000'007LL})
        for (int n = 1; n <= 7; ++n) {
            std::int64_t sum = 0;
            for (int i = 1; i <= n; ++i) {
                const auto s = share_of(total, n, i);
                EXPECT_LE(s, share_of(total, n, 1));
                EXPECT_GE(s + 1, share_of(total, n, 1));
                sum += s;
            }
            EXPECT_EQ(sum, total) << total << "/" << n;
        }
    EXPECT_THROW(share_of(10, 0, 1), std::invalid_argument);
    EXPECT_THROW(share_of(10, 2, 0), std::invalid_argument);
    EXPECT_THROW(share_of(10, 2, 3), std::invalid_argument);
    EXPECT_THROW(share_of(-1, 2, 1), std::invalid_argument);
}

TEST(LedgerMath, Documents) {
    st::ledger_row e;
    e.id = 7;
    e.tenant = "acme";
    e.task_id = "ext_1";
    e.output = 2;
    e.kind = "capture";
    e.amount_milli = 1'500;
    e.provider = "musicgpt";
    e.created_at = 0;
    auto o = segue::core::ledger_entry_document(e);
    EXPECT_EQ(o["id"].as_int64(), 7);
    EXPECT_EQ(o["kind"], "capture");
    EXPECT_EQ(o["amount"].as_double(), 1.5);
    EXPECT_EQ(o["task_id"], "ext_1");
    EXPECT_EQ(o["output"].as_int64(), 2);
    EXPECT_EQ(o["provider"], "musicgpt");
    EXPECT_FALSE(o.contains("note"));
    EXPECT_FALSE(o.contains("tenant"));
    EXPECT_FALSE(o.contains("key"));
    EXPECT_EQ(o["created_at"], "1970-01-01T00:00:00.000Z");

    st::ledger_row g;
    g.kind = "grant";
    g.amount_milli = 100'000;
    g.note = "initial grant";
    auto go = segue::core::ledger_entry_document(g);
    EXPECT_FALSE(go.contains("task_id"));
    EXPECT_FALSE(go.contains("output"));
    EXPECT_FALSE(go.contains("provider"));
    EXPECT_EQ(go["amount"].as_int64(), 100);
    EXPECT_EQ(go["note"], "initial grant");

    st::ledger_balance b{.granted = 100'000,
                         .captured = 12'500,
                         .held = 3'000,
                         .balance = 87'500,
                         .available = 84'500};
    auto t = segue::core::ledger_totals_document("acme", b);
    EXPECT_EQ(t["tenant"], "acme");
    EXPECT_EQ(t["granted"].as_int64(), 100);
    EXPECT_EQ(t["captured"].as_double(), 12.5);
    EXPECT_EQ(t["held"].as_int64(), 3);
    EXPECT_EQ(t["balance"].as_double(), 87.5);
    EXPECT_EQ(t["available"].as_double(), 84.5);
    EXPECT_EQ(t["unit"], "credits");
}

// --- The routes, driven through the router with an in-memory request. ---

namespace {

class fake_context : public segue::http::context {
  public:
    fake_context(std::string method, std::string target) : method_(method), target_(target) {}

    std::string_view method() const override { return method_; }
    std::string_view target() const override { return target_; }
    std::optional<std::string_view> header(std::string_view name) const override {
        for (const auto& [k, v] : headers_) {
            if (k.size() != name.size())
                continue;
            bool same = true;
            for (std::size_t i = 0; i < k.size() && same; ++i)
                same = std::tolower(static_cast<unsigned char>(k[i])) ==
                       std::tolower(static_cast<unsigned char>(name[i]));
            if (same)
                return std::string_view(v);
        }
        return std::nullopt;
    }
    std::vector<std::pair<std::string, std::string>> headers() const override { return headers_; }
    const std::string& request_id() const override { return id_; }
    std::string_view remote_address() const override { return "127.0.0.1"; }
    const std::string& body() const override { return body_; }
    boost::asio::awaitable<segue::http::body_chunk> read_body(std::span<char>) override {
        co_return segue::http::body_chunk{0, true};
    }
    std::optional<std::uint64_t> content_length() const override { return body_.size(); }
    boost::asio::awaitable<bool> begin_stream(int, std::string,
                                              std::optional<std::uint64_t>) override {
        co_return false;
    }
    boost::asio::awaitable<bool> write_stream(std::string_view) override { co_return false; }
    bool draining() const override { return false; }

    std::string method_;
    std::string target_;
    std::string body_;
    std::vector<std::pair<std::string, std::string>> headers_;
    std::string id_ = "req_test";
};

struct reply {
    int status = 0;
    json::value body;
    std::vector<std::pair<std::string, std::string>> headers;
    std::string header(const std::string& name) const {
        for (const auto& [k, v] : headers)
            if (k == name)
                return v;
        return "";
    }
};

class LedgerApi : public ::testing::Test {
  protected:
    void SetUp() override {
        s_ = st::open_sqlite({.path = dir_.file("segue.db")});
        db_ = std::make_unique<st::db>(*s_, metrics_);
        segue::config::tenant_settings acme;
        acme.name = "acme";
        acme.api_keys = {"sk-acme"};
        segue::config::tenant_settings beta;
        beta.name = "beta";
        beta.api_keys = {"sk-beta"};
        auth_ = std::make_unique<segue::api::authenticator>(
            std::vector<segue::config::tenant_settings>{acme, beta});
        routes("admin-secret");
    }
    void TearDown() override { s_->close(); }

    void routes(const std::string& admin_key) {
        router_ = std::make_unique<segue::http::router>();
        segue::api::add_credit_routes(
            *router_,
            segue::api::credits_deps{
                .db = *db_,
                .auth = *auth_,
                .admin_key = admin_key,
                .initial_grant = [](std::string_view t) -> std::int64_t {
                    return t == "acme" ? 100'000 : 0;
                },
                .tenant_exists = [](std::string_view t) { return t == "acme" || t == "beta"; },
            });
    }

    std::string content_type = "application/json";  // of call()'s bodies
    reply call(const std::string& method, const std::string& target,
               const std::string& authorization, const std::string& body = "",
               const std::string& idempotency_key = "") {
        fake_context ctx(method, target);
        if (!authorization.empty())
            ctx.headers_.emplace_back("authorization", authorization);
        if (!idempotency_key.empty())
            ctx.headers_.emplace_back("idempotency-key", idempotency_key);
        if (!body.empty())
            ctx.headers_.emplace_back("content-type", content_type);
        ctx.body_ = body;
        auto m = router_->match(method, ctx.path());
        EXPECT_TRUE(m.matched) << target;
        if (!m.matched)
            return {};
        ctx.set_route(m.matched->pattern, m.params);
        ioc_.restart();
        auto guard = boost::asio::make_work_guard(ioc_);
        std::exception_ptr err;
        boost::asio::co_spawn(ioc_, m.matched->fn(ctx), [&](std::exception_ptr e) {
            err = e;
            guard.reset();
        });
        ioc_.run();
        if (err)
            std::rethrow_exception(err);
        reply r;
        r.status = ctx.res().status;
        r.headers = ctx.res().headers;
        if (!ctx.res().body.empty())
            r.body = json::parse(ctx.res().body);
        if (r.status >= 400)
            EXPECT_EQ(ctx.res().content_type, "application/problem+json");
        return r;
    }

    std::vector<std::string> fields(const reply& r) {
        std::vector<std::string> out;
        for (const auto& e : r.body.at("errors").as_array())
            out.emplace_back(e.at("field").as_string());
        return out;
    }

    segue::test::temp_dir dir_;
    segue::metrics::registry metrics_;
    // Outlives the store: a store thread that resumed a handler here may still be inside
    // post() (signalling the io_context's condition variable) after run() has returned.
    boost::asio::io_context ioc_;
    std::unique_ptr<st::store> s_;
    std::unique_ptr<st::db> db_;
    std::unique_ptr<segue::api::authenticator> auth_;
    std::unique_ptr<segue::http::router> router_;
};

}  // namespace

TEST_F(LedgerApi, BalanceWritesTheInitialGrantLazilyOnce) {
    EXPECT_EQ(call("GET", "/v1/credits", "").status, 401);
    for (int i = 0; i < 2; ++i) {
        auto r = call("GET", "/v1/credits", "Bearer sk-acme");
        ASSERT_EQ(r.status, 200);
        const auto& o = r.body.as_object();
        EXPECT_EQ(o.at("tenant"), "acme");
        EXPECT_EQ(o.at("balance").as_int64(), 100);
        EXPECT_EQ(o.at("available").as_int64(), 100);
        EXPECT_EQ(o.at("held").as_int64(), 0);
        EXPECT_EQ(o.at("captured").as_int64(), 0);
        EXPECT_EQ(o.at("granted").as_int64(), 100);
        EXPECT_EQ(o.at("unit"), "credits");
        EXPECT_FALSE(o.at("has_more").as_bool());
        ASSERT_EQ(o.at("entries").as_array().size(), 1u);
        EXPECT_EQ(o.at("entries").as_array()[0].at("kind"), "grant");
    }
    // No grant configured: nothing written, zeros.
    auto b = call("GET", "/v1/credits", "Bearer sk-beta");
    ASSERT_EQ(b.status, 200);
    EXPECT_EQ(b.body.at("balance").as_int64(), 0);
    EXPECT_TRUE(b.body.at("entries").as_array().empty());
    // Bad paging parameters.
    EXPECT_EQ(call("GET", "/v1/credits?limit=0", "Bearer sk-acme").status, 400);
    EXPECT_EQ(call("GET", "/v1/credits?before=x", "Bearer sk-acme").status, 400);
}

TEST_F(LedgerApi, AdminTopUpIsIdempotentPerKey) {
    const std::string admin = "Bearer admin-secret";
    auto r = call("POST", "/v1/admin/credits", admin,
                  R"({"tenant":"acme","amount":25.5,"note":"promo"})", "k-1");
    ASSERT_EQ(r.status, 201) << json::serialize(r.body);
    EXPECT_EQ(r.body.at("balance").as_double(), 125.5);  // the initial grant went in first
    EXPECT_EQ(r.body.at("granted").as_double(), 125.5);
    EXPECT_EQ(r.body.at("entry").at("kind"), "topup");
    EXPECT_EQ(r.body.at("entry").at("amount").as_double(), 25.5);
    EXPECT_EQ(r.body.at("entry").at("note"), "promo");

    auto again = call("POST", "/v1/admin/credits", admin,
                      R"({"tenant":"acme","amount":25.5,"note":"promo"})", "k-1");
    EXPECT_EQ(again.status, 200);
    EXPECT_EQ(again.header("Idempotent-Replayed"), "true");
    EXPECT_EQ(again.body.at("balance").as_double(), 125.5);
    EXPECT_EQ(again.body.at("entry").at("id"), r.body.at("entry").at("id"));

    auto other =
        call("POST", "/v1/admin/credits", admin, R"({"tenant":"acme","amount":30})", "k-1");
    EXPECT_EQ(other.status, 409);

    // Without a key every request is a new top-up; keys are per tenant.
    EXPECT_EQ(call("POST", "/v1/admin/credits", admin, R"({"tenant":"acme","amount":1})").status,
              201);
    EXPECT_EQ(call("POST", "/v1/admin/credits", admin, R"({"tenant":"acme","amount":1})").status,
              201);
    EXPECT_EQ(
        call("POST", "/v1/admin/credits", admin, R"({"tenant":"beta","amount":2})", "k-1").status,
        201);

    auto acme = call("GET", "/v1/credits?limit=2", "Bearer sk-acme");
    EXPECT_EQ(acme.body.at("balance").as_double(), 127.5);
    EXPECT_TRUE(acme.body.at("has_more").as_bool());
    const auto& page = acme.body.at("entries").as_array();
    ASSERT_EQ(page.size(), 2u);
    auto rest =
        call("GET", "/v1/credits?before=" + json::serialize(page[1].at("id")), "Bearer sk-acme");
    EXPECT_FALSE(rest.body.at("has_more").as_bool());
    const auto& tail = rest.body.at("entries").as_array();
    ASSERT_EQ(tail.size(), 2u);
    EXPECT_EQ(tail[0].at("note"), "promo");
    EXPECT_EQ(tail[1].at("kind"), "grant");
    EXPECT_EQ(call("GET", "/v1/credits", "Bearer sk-beta").body.at("balance").as_int64(), 2);
}

TEST_F(LedgerApi, AdminTopUpAuthAndValidation) {
    const std::string ok = R"({"tenant":"acme","amount":5})";
    EXPECT_EQ(call("POST", "/v1/admin/credits", "", ok).status, 401);
    EXPECT_EQ(call("POST", "/v1/admin/credits", "Bearer admin-secreT", ok).status, 401);
    EXPECT_EQ(call("POST", "/v1/admin/credits", "Bearer sk-acme", ok).status, 401);
    EXPECT_EQ(call("POST", "/v1/admin/credits", "Basic admin-secret", ok).status, 401);
    EXPECT_EQ(call("POST", "/v1/admin/credits", "bearer  admin-secret ", ok).status, 201);

    const std::string admin = "Bearer admin-secret";
    EXPECT_EQ(call("POST", "/v1/admin/credits", admin, "{").status, 400);
    // A body in another media type (media types are case-insensitive).
    content_type = "text/plain";
    EXPECT_EQ(call("POST", "/v1/admin/credits", admin, ok).status, 415);
    content_type = "Application/JSON; charset=utf-8";
    EXPECT_EQ(call("POST", "/v1/admin/credits", admin, ok, "k-type").status, 201);
    content_type = "application/json";
    EXPECT_EQ(call("POST", "/v1/admin/credits", admin, "[1]").status, 400);
    EXPECT_EQ(call("POST", "/v1/admin/credits", admin, ok, std::string(256, 'k')).status, 400);

    auto bad = call(
        "POST", "/v1/admin/credits", admin,
        R"({"tenant":"nope","amount":-1,"note":")" + std::string(501, 'n') + R"(","extra":1})");
    ASSERT_EQ(bad.status, 422);
    auto f = fields(bad);
    std::sort(f.begin(), f.end());
    EXPECT_EQ(f, (std::vector<std::string>{"amount", "extra", "note", "tenant"}));
    for (auto amount : {"0", "1e10", "\"5\"", "0.0004", "null", "1e400"}) {
        auto r = call("POST", "/v1/admin/credits", admin,
                      std::string(R"({"tenant":"acme","amount":)") + amount + "}");
        if (r.status == 422)
            EXPECT_EQ(fields(r), std::vector<std::string>{"amount"}) << amount;
        else
            EXPECT_EQ(r.status, 400) << amount;  // 1e400 is not valid JSON for Boost.JSON
    }
    EXPECT_EQ(call("POST", "/v1/admin/credits", admin, R"({"amount":1})").status, 422);
    EXPECT_EQ(
        call("POST", "/v1/admin/credits", admin,
             R"({"tenant":"acme","amount":1000000000,"note":")" + std::string(500, 'n') + R"("})")
            .status,
        201);

    // No admin key configured: the endpoint does not exist.
    routes("");
    EXPECT_EQ(call("POST", "/v1/admin/credits", "Bearer ", ok).status, 404);
    EXPECT_EQ(call("POST", "/v1/admin/credits", admin, ok).status, 404);
}

// The steps of POST /v1/extensions one by one (gateway/api/create_pipeline.hpp): what the
// handler composes, without a server.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <stdlib.h>

#include <filesystem>
#include <future>

#include "gateway/api/common.hpp"
#include "gateway/api/create_pipeline.hpp"
#include "gateway/config/settings.hpp"
#include "gateway/core/json.hpp"
#include "providers/provider.hpp"

namespace json = boost::json;
namespace fs = std::filesystem;
namespace create = segue::api::create;
namespace st = segue::store;
using segue::api::error_kind;
using segue::core::extend_request;

namespace {

segue::providers::capabilities url_only() {
    segue::providers::capabilities c;
    c.source_url = true;
    c.max_outputs = 2;
    return c;
}

struct validation_fixture {
    segue::config::settings settings;
    segue::providers::capabilities caps = url_only();

    validation_fixture() { settings.api.default_provider = "sandbox"; }

    create::checked validate(const std::string& body, bool with_file = false) {
        create::submission s;
        s.fields = json::parse(body).as_object();
        if (with_file)
            s.file.emplace();
        create::validate_env env{
            settings, [](std::string_view n) { return n == "sandbox" || n == "b"; },
            [this](std::string_view n) -> const segue::providers::capabilities* {
                return n == "sandbox" || n == "b" ? &caps : nullptr;
            },
            0.0};
        return create::validate_submission(s, env);
    }
};

std::vector<std::string> fields_of(const create::checked& c) {
    std::vector<std::string> out;
    for (const auto& e : c.errors)
        out.push_back(e.field);
    return out;
}

const std::string url_body = R"({"audio_url":"https://x.test/a.mp3","extend_after":1})";

}  // namespace

TEST(CreateRead, IdempotencyKeyIsVisibleAsciiUpTo255) {
    EXPECT_FALSE(std::get<std::optional<std::string>>(create::read_idempotency_key(std::nullopt)));
    EXPECT_EQ(std::get<std::optional<std::string>>(create::read_idempotency_key("k-1")), "k-1");
    EXPECT_TRUE(segue::api::valid_idempotency_key(std::string(255, 'a')));
    for (std::string bad : {std::string(), std::string(256, 'a'), std::string("a b"),
                            std::string("caf\xC3\xA9"), std::string("tab\t")}) {
        auto r = create::read_idempotency_key(bad);
        ASSERT_TRUE(std::holds_alternative<create::refusal>(r)) << bad;
        EXPECT_EQ(std::get<create::refusal>(r).kind, error_kind::bad_request);
        EXPECT_EQ(std::get<create::refusal>(r).reason, "bad_idempotency_key");
    }
}

TEST(CreateValidate, ValidFieldsBecomeTheNeutralRequestWithItsRoute) {
    validation_fixture f;
    auto c = f.validate(
        R"({"audio_url":"https://x.test/a.mp3","extend_after":2.5,"prompt":"more","num_outputs":2})");
    ASSERT_TRUE(c.errors.empty()) << c.errors.front().field << ": " << c.errors.front().message;
    EXPECT_EQ(c.request.source, segue::core::source_kind::url);
    EXPECT_EQ(c.request.audio_url, "https://x.test/a.mp3");
    EXPECT_DOUBLE_EQ(c.request.extend_after, 2.5);
    EXPECT_EQ(c.request.num_outputs, 2);
    EXPECT_EQ(c.request.route_chain, std::vector<std::string>{"sandbox"});
    EXPECT_FALSE(create::invalid_fields(c));
}

TEST(CreateValidate, FieldErrorsComeBeforeAnyRoute) {
    validation_fixture f;
    auto c = f.validate(R"({"audio_url":"ftp://x","extend_after":-1,"bogus":1})");
    EXPECT_FALSE(c.errors.empty());
    EXPECT_TRUE(c.request.route_chain.empty());
    auto r = create::invalid_fields(c);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->kind, error_kind::validation_failed);
    EXPECT_EQ(r->reason, "validation");
    EXPECT_EQ(r->errors.size(), c.errors.size());
    EXPECT_EQ(r->detail.rfind(std::to_string(c.errors.size()) + " invalid field(s): ", 0), 0u)
        << r->detail;
}

TEST(CreateValidate, NamedRouteIsPlannedAndDecidesRegeneration) {
    validation_fixture f;
    segue::config::route_settings route;
    route.chain.push_back({"b", 1});
    route.chain.push_back({"sandbox", 0});
    route.regenerate = true;
    f.settings.routing.routes["r"] = route;
    auto c = f.validate(R"({"audio_url":"https://x.test/a.mp3","extend_after":1,"route":"r"})");
    ASSERT_TRUE(c.errors.empty()) << c.errors.front().message;
    EXPECT_EQ(c.request.route_chain, (std::vector<std::string>{"b", "sandbox"}));
    EXPECT_TRUE(c.request.route_regenerate);
}

TEST(CreateValidate, NoProviderForTheSourceBlamesTheSourceField) {
    validation_fixture f;
    auto c = f.validate(R"({"extend_after":1})", /*with_file=*/true);  // url-only providers
    EXPECT_EQ(fields_of(c), std::vector<std::string>{"audio_file"});
    EXPECT_TRUE(c.request.route_chain.empty());
}

TEST(CreateValidate, UnroutableNamesTheFieldInTheWay) {
    extend_request req;
    req.source = segue::core::source_kind::url;
    EXPECT_EQ(create::unroutable(req, "no provider takes 3 outputs").field, "num_outputs");
    EXPECT_EQ(create::unroutable(req, "no provider honours length").field, "length");
    EXPECT_EQ(create::unroutable(req, "no provider takes url sources").field, "audio_url");
    EXPECT_EQ(create::unroutable(req, "no provider takes file sources").field, "audio_file");
    req.provider = "b";
    EXPECT_EQ(create::unroutable(req, "no provider takes url sources").field, "provider");
    req.provider.reset();
    req.route = "r";
    EXPECT_EQ(create::unroutable(req, "whatever").field, "route");
    req.source = segue::core::source_kind::clip;
    EXPECT_EQ(create::unroutable(req, "whatever").field, "clip");
}

TEST(CreateValidate, WebhookUrlNeedsTheTenantsSigningSecret) {
    segue::config::settings s;
    segue::config::tenant_settings with, without;
    with.name = "with";
    with.webhook_secrets = {"whsec_x"};
    without.name = "without";
    s.tenants = {with, without};
    create::checked c;
    c.request.webhook_url = "https://hooks.test/x";
    create::require_webhook_secret(c, s, "with");
    EXPECT_TRUE(c.errors.empty());
    create::require_webhook_secret(c, s, "without");
    create::require_webhook_secret(c, s, "unknown");
    EXPECT_EQ(fields_of(c), (std::vector<std::string>{"webhook_url", "webhook_url"}));
    create::checked none;  // no webhook_url: nothing to sign
    create::require_webhook_secret(none, s, "without");
    EXPECT_TRUE(none.errors.empty());
}

TEST(CreatePrepare, ProbeIsAcceptedIntoTheRequest) {
    create::upload up;
    up.file_id = "file_1";
    up.name = "song.wav";
    extend_request req;
    req.extend_after = 3;

    segue::audio::probe_result bad;
    bad.error = "not a decodable audio file";
    auto r = create::accept_probe(bad, up, req);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->kind, error_kind::unprocessable_audio);
    EXPECT_EQ(r->errors.at(0).field, "audio_file");

    segue::audio::probe_result shorter{.ok = true, .duration_seconds = 2, .format = "wav"};
    r = create::accept_probe(shorter, up, req);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->errors.at(0).field, "extend_after");
    EXPECT_TRUE(req.audio_file_id.empty());

    segue::audio::probe_result ok{
        .ok = true, .duration_seconds = 10, .sample_rate = 44100, .channels = 2, .format = "wav"};
    EXPECT_FALSE(create::accept_probe(ok, up, req));
    EXPECT_EQ(req.audio_file_id, "file_1");
    EXPECT_EQ(req.audio_filename, "song.wav");
    EXPECT_DOUBLE_EQ(req.source_duration, 10);
    EXPECT_EQ(req.source_sample_rate, 44100);
    EXPECT_EQ(req.source_channels, 2);
    EXPECT_EQ(up.content_type, "audio/wav");
}

TEST(CreateAdmit, RequestHashIsWhatTheClientSent) {
    extend_request a;
    a.source = segue::core::source_kind::url;
    a.audio_url = "https://x.test/a.mp3";
    a.extend_after = 1;
    auto drawn = a;  // what the gateway drew or derived does not count
    drawn.route_chain = {"b", "sandbox"};
    drawn.hold_milli = 5000;
    drawn.audio_file_id = "file_2";
    EXPECT_EQ(create::request_hash(a, "sha"), create::request_hash(drawn, "sha"));
    EXPECT_NE(create::request_hash(a, "sha"), create::request_hash(a, "other"));
    auto other = a;
    other.prompt = "different";
    EXPECT_NE(create::request_hash(a, "sha"), create::request_hash(other, "sha"));
    // A drop-in shape's webhook format and secret are part of the request.
    auto shaped = a;
    shaped.webhook_format = "musicapi";
    EXPECT_NE(create::request_hash(a, "sha"), create::request_hash(shaped, "sha"));
    auto signed_other = shaped;
    signed_other.webhook_format_secret = "another";
    EXPECT_NE(create::request_hash(shaped, "sha"), create::request_hash(signed_other, "sha"));
}

TEST(CreateAdmit, IdempotencyVerdicts) {
    st::idempotency_row prior;
    prior.request_hash = "h1";
    prior.created_at = 1000;
    using v = create::idempotency_verdict;
    EXPECT_EQ(create::judge_idempotency(prior, "h1", 1500, 1000), v::replay);
    EXPECT_EQ(create::judge_idempotency(prior, "h2", 1500, 1000), v::conflict);
    EXPECT_EQ(create::judge_idempotency(prior, "h1", 2000, 1000), v::replay);  // at the edge
    EXPECT_EQ(create::judge_idempotency(prior, "h1", 2001, 1000), v::expired);
    EXPECT_EQ(create::judge_idempotency(prior, "h2", 5000, 1000), v::expired);
}

namespace {

class CreateAdmitStore : public ::testing::Test {
  protected:
    CreateAdmitStore() {
        std::string tmpl = (fs::temp_directory_path() / "segue_admit_test_XXXXXX").string();
        if (::mkdtemp(tmpl.data()) == nullptr)
            throw std::runtime_error("mkdtemp failed");
        dir_ = tmpl;
        st::sqlite_options o;
        o.path = (dir_ / "segue.db").string();
        store_ = st::open_sqlite(o);
        segue::config::tenant_settings t;
        t.name = "t1";
        t.credits = 10;
        settings_.tenants = {t};
    }
    ~CreateAdmitStore() override {
        store_.reset();
        std::error_code ec;
        fs::remove_all(dir_, ec);
    }

    create::admission plan(const std::string& prompt, std::optional<std::string> key) {
        extend_request req;
        req.source = segue::core::source_kind::url;
        req.audio_url = "https://x.test/a.mp3";
        req.prompt = prompt;
        req.num_outputs = 1;
        req.route_chain = {"sandbox"};
        return create::plan_admission(req, "t1", key, nullptr, settings_, now_);
    }

    create::admitted admit(const create::admission& a) {
        create::admitted out;
        std::promise<void> p;
        auto done = p.get_future();
        store_->submit_write([&](st::transaction& tx) { out = create::admit(tx, a, now_, 1000); },
                             [&p](std::exception_ptr e) {
                                 if (e)
                                     p.set_exception(e);
                                 else
                                     p.set_value();
                             });
        done.get();
        return out;
    }

    fs::path dir_;
    std::unique_ptr<st::store> store_;
    segue::config::settings settings_;
    st::millis now_ = 1'000'000;
};

}  // namespace

TEST_F(CreateAdmitStore, SameKeySameBodyReplaysDifferentBodyConflicts) {
    auto first = plan("more", "key-1");
    EXPECT_EQ(admit(first).what, create::admitted::kind::created);

    auto again = plan("more", "key-1");  // a new task id, the same request
    EXPECT_NE(again.task.id, first.task.id);
    auto replay = admit(again);
    EXPECT_EQ(replay.what, create::admitted::kind::replay);
    EXPECT_EQ(replay.prior.task_id, first.task.id);
    EXPECT_EQ(replay.prior.response_body, first.response_body);
    EXPECT_EQ(replay.prior.response_status, 202);
    EXPECT_FALSE(create::refused_admission(replay, again));

    auto changed = plan("less", "key-1");
    auto conflict = admit(changed);
    EXPECT_EQ(conflict.what, create::admitted::kind::conflict);
    auto r = create::refused_admission(conflict, changed);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->kind, error_kind::conflict);
    EXPECT_EQ(r->reason, "idempotency_conflict");

    // Another key, or none: a new task.
    EXPECT_EQ(admit(plan("less", "key-2")).what, create::admitted::kind::created);
    EXPECT_EQ(admit(plan("more", std::nullopt)).what, create::admitted::kind::created);
}

TEST_F(CreateAdmitStore, ExpiredKeyIsForgotten) {
    auto first = plan("more", "key-1");
    EXPECT_EQ(admit(first).what, create::admitted::kind::created);
    now_ += 5000;  // retention is 1000 ms here
    auto changed = plan("less", "key-1");
    EXPECT_EQ(admit(changed).what, create::admitted::kind::created);
    EXPECT_EQ(admit(plan("less", "key-1")).what, create::admitted::kind::replay);
}

TEST_F(CreateAdmitStore, HoldBeyondTheBalanceIsRefusedAndNothingIsWritten) {
    auto a = plan("more", "key-1");
    st::ledger_row hold;
    hold.tenant = "t1";
    hold.task_id = a.task.id;
    hold.kind = "hold";
    hold.amount_milli = 10'001;  // the grant is 10 credits
    hold.provider = "sandbox";
    hold.created_at = now_;
    a.hold = hold;
    a.request.hold_milli = hold.amount_milli;
    a.grant_milli = 10'000;
    auto out = admit(a);
    EXPECT_EQ(out.what, create::admitted::kind::insufficient);
    EXPECT_EQ(out.available_milli, 10'000);
    auto r = create::refused_admission(out, a);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->kind, error_kind::payment_required);
    EXPECT_NE(r->detail.find("10.001"), std::string::npos) << r->detail;
    // The key was not taken: the same key with a smaller hold is admitted.
    a.hold->amount_milli = a.request.hold_milli = 10'000;
    EXPECT_EQ(admit(a).what, create::admitted::kind::created);
}

TEST_F(CreateAdmitStore, PlanHoldsTheRouteAndKeepsTheAnswer) {
    auto a = plan("more", "key-1");
    EXPECT_EQ(a.task.tenant, "t1");
    EXPECT_EQ(a.task.provider, "sandbox");
    EXPECT_EQ(a.task.idempotency_key, "key-1");
    EXPECT_EQ(a.task.status, "queued");
    EXPECT_EQ(a.outputs.size(), 1u);
    EXPECT_EQ(a.grant_milli, 10'000);
    EXPECT_FALSE(a.file);
    EXPECT_EQ(a.request_hash, create::request_hash(a.request, ""));
    auto doc = json::parse(a.response_body).as_object();
    EXPECT_EQ(doc.at("id").as_string(), a.task.id);
    EXPECT_TRUE(plan("more", std::nullopt).request_hash.empty());
}

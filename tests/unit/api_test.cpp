// Validation of the extend request, API-key authentication, routing and the error table.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "gateway/api/auth.hpp"
#include "gateway/api/problem.hpp"
#include "gateway/api/validate.hpp"
#include "gateway/core/json.hpp"
#include "gateway/http/router.hpp"
#include "gateway/util/crypto.hpp"
#include "gateway/util/json_text.hpp"

namespace json = boost::json;
using segue::api::validate_extend_request;
using segue::api::validation_input;

namespace {

segue::api::validation_result run(const std::string& body, bool form = false, bool file = false) {
    static json::object fields;
    fields = json::parse(body).as_object();
    validation_input in;
    in.fields = &fields;
    in.from_form = form;
    in.has_file = file;
    in.provider_exists = [](std::string_view n) { return n == "sandbox" || n == "musicgpt"; };
    in.route_exists = [](std::string_view n) { return n == "cheap"; };
    return validate_extend_request(in);
}

std::vector<std::string> fields_of(const segue::api::validation_result& r) {
    std::vector<std::string> out;
    for (const auto& e : r.errors)
        out.push_back(e.field);
    return out;
}

}  // namespace

TEST(Validate, AcceptsAFullJsonRequest) {
    auto r = run(R"({"audio_url":"https://cdn.example/song.mp3","extend_after":35.5,
        "prompt":"piano outro","lyrics":"la","lyrics_section_to_extend":"la la","gender":"neutral",
        "num_outputs":1,"length":20,"webhook_url":"https://hooks.example/x","provider":"musicgpt",
        "metadata":{"k":"v"}})");
    EXPECT_TRUE(r.errors.empty()) << fields_of(r).size();
    EXPECT_EQ(r.request.source, segue::core::source_kind::url);
    EXPECT_EQ(r.request.extend_after, 35.5);
    EXPECT_EQ(r.request.num_outputs, 1);
    EXPECT_EQ(*r.request.length, 20);
    EXPECT_EQ(*r.request.provider, "musicgpt");
    EXPECT_EQ(r.request.metadata_json, R"({"k":"v"})");
}

TEST(Validate, AliasesAndFormStrings) {
    auto r = run(R"({"starts_at":"12.25","instruction":"go","num_outputs":"2"})", true, true);
    EXPECT_TRUE(r.errors.empty());
    EXPECT_EQ(r.request.extend_after, 12.25);
    EXPECT_EQ(*r.request.prompt, "go");
    EXPECT_EQ(r.request.source, segue::core::source_kind::file);
    // Aliases that disagree are an error.
    auto d = run(R"({"audio_url":"https://a.example/x","extend_after":1,"starts_at":2})");
    EXPECT_EQ(fields_of(d), std::vector<std::string>{"starts_at"});
    // JSON numbers must be numbers; form values are strings.
    auto t = run(R"({"audio_url":"https://a.example/x","extend_after":"1"})");
    EXPECT_EQ(fields_of(t), std::vector<std::string>{"extend_after"});
}

// A form's numbers are text: an explicit '+' is a number, as the schema's pattern allows; a
// value too large for a double is "not finite", as JSON's 1e400 is; one too small is zero.
TEST(Validate, FormNumbersTakeASignAndSayWhenTheyOverflow) {
    auto plus = run(R"({"extend_after":"+4","length":"+0.5"})", true, true);
    EXPECT_TRUE(plus.errors.empty()) << (plus.errors.empty() ? "" : plus.errors[0].message);
    EXPECT_EQ(plus.request.extend_after, 4);
    auto message_of = [](const std::string& body) {
        auto r = run(body, true, true);
        return r.errors.empty() ? std::string() : r.errors[0].field + " " + r.errors[0].message;
    };
    EXPECT_EQ(message_of(R"({"extend_after":"1e309"})"), "extend_after must be a finite number");
    EXPECT_EQ(message_of(R"({"extend_after":"-1e999"})"), "extend_after must be a finite number");
    EXPECT_EQ(message_of(R"({"extend_after":"1e-400"})"), "");
    for (const char* bad : {"++4", "+-4", "+", "4+", " 4", "0x10"})
        EXPECT_EQ(message_of(std::string(R"({"extend_after":")") + bad + "\"}"),
                  "extend_after must be a number")
            << bad;
}

TEST(Validate, ReportsEveryBadFieldAtOnce) {
    auto r = run(
        R"({"extend_after":-2,"gender":"x","num_outputs":3,"length":0,
        "lyrics":")" +
        std::string(2001, 'a') + R"(","prompt":)" + "7" +
        R"(,"webhook_url":"mailto:a@b","provider":"nope","route":"nope","metadata":"x","zzz":1})");
    auto f = fields_of(r);
    for (auto want : {"zzz", "audio_file", "extend_after", "prompt", "lyrics", "gender",
                      "num_outputs", "length", "webhook_url", "provider", "route", "metadata"})
        EXPECT_NE(std::find(f.begin(), f.end(), want), f.end()) << want;
}

TEST(Validate, SourcesExactlyOne) {
    EXPECT_EQ(fields_of(run(R"({"extend_after":1})")), std::vector<std::string>{"audio_file"});
    EXPECT_EQ(
        fields_of(run(R"({"extend_after":1,"audio_url":"https://a.example/x"})", false, true)),
        std::vector<std::string>{"audio_file"});
    auto clip = run(R"({"extend_after":1,"clip":{"provider":"musicgpt","id":"c1"}})");
    EXPECT_TRUE(clip.errors.empty());
    EXPECT_EQ(clip.request.source, segue::core::source_kind::clip);
    EXPECT_EQ(clip.request.clip_id, "c1");
    auto bad = run(R"({"extend_after":1,"clip":{"provider":"zzz","extra":1}})");
    auto f = fields_of(bad);
    EXPECT_NE(std::find(f.begin(), f.end(), "clip.provider"), f.end());
    EXPECT_NE(std::find(f.begin(), f.end(), "clip.id"), f.end());
    EXPECT_NE(std::find(f.begin(), f.end(), "clip.extra"), f.end());
    // audio_file in a JSON body is a source sent the wrong way: said once, not also "missing".
    auto json_file = run(R"({"extend_after":1,"audio_file":"song.mp3"})");
    ASSERT_EQ(fields_of(json_file), std::vector<std::string>{"audio_file"});
    EXPECT_NE(json_file.errors[0].message.find("must be a file part"), std::string::npos);
    // extend_after has an upper bound: no song is a day long.
    auto far = run(R"({"extend_after":1e308,"audio_url":"https://a.example/x"})");
    ASSERT_EQ(fields_of(far), std::vector<std::string>{"extend_after"});
    EXPECT_NE(far.errors[0].message.find("at most 86400"), std::string::npos);
    EXPECT_TRUE(run(R"({"extend_after":86400,"audio_url":"https://a.example/x"})").errors.empty());
}

TEST(Validate, LimitsCountCharactersNotBytes) {
    std::string lyrics;
    for (int i = 0; i < 2000; ++i)
        lyrics += "é";  // 2 bytes each
    auto r =
        run(R"({"audio_url":"https://a.example/x","extend_after":1,"lyrics":")" + lyrics + R"("})");
    EXPECT_TRUE(r.errors.empty());
    EXPECT_EQ(segue::api::utf8_length("héllo"), 5u);
}

TEST(Validate, UrlsMustBeHttpWithAHostAndNoCredentials) {
    for (auto u :
         {"ftp://a.example/x", "https://", "relative/path", "https://user:pw@a.example/x"}) {
        auto r = run(std::string(R"({"extend_after":1,"audio_url":")") + u + "\"}");
        EXPECT_FALSE(r.errors.empty()) << u;
    }
}

// Each refusal says what is wrong; an upper-case scheme is fine and stored in lower case.
TEST(Validate, UrlRefusalsSayWhyAndSchemesAreCaseInsensitive) {
    struct c {
        std::string url;
        std::string says;
    };
    for (const auto& t : std::vector<c>{
             {"http://a.example/h#frag", "#fragment"},
             {"http://b\u00fccher.example/h", "ASCII"},
             {"http://a.example/x ", "spaces"},
             {"http://a.example/\ty", "spaces"},
             {"relative/path", "absolute URL"},
             {"ftp://a.example/x", "http or https"},
         }) {
        json::object body{
            {"extend_after", 1}, {"audio_url", "https://a.example/s.mp3"}, {"webhook_url", t.url}};
        auto r = run(json::serialize(body));
        ASSERT_EQ(r.errors.size(), 1u) << t.url;
        EXPECT_EQ(r.errors[0].field, "webhook_url");
        EXPECT_NE(r.errors[0].message.find(t.says), std::string::npos)
            << t.url << ": " << r.errors[0].message;
    }
    auto r = run(R"({"extend_after":1,"audio_url":"HTTPS://a.example/S.mp3?Q=1",)"
                 R"("webhook_url":"Http://h.example/Hook"})");
    ASSERT_TRUE(r.errors.empty()) << r.errors[0].message;
    EXPECT_EQ(r.request.audio_url, "https://a.example/S.mp3?Q=1");
    EXPECT_EQ(r.request.webhook_url, "http://h.example/Hook");
}

TEST(Auth, PlainAndHashedKeysConstantTimeLookup) {
    std::vector<segue::config::tenant_settings> tenants{
        {"a", {"sk-a-1", "sk-a-2"}},
        {"b", {"sha256:" + segue::util::sha256_hex("sk-b")}},
    };
    segue::api::authenticator auth(tenants);
    EXPECT_EQ(auth.authenticate("Bearer sk-a-2").value_or(""), "a");
    EXPECT_EQ(auth.authenticate("bearer   sk-b ").value_or(""), "b");
    EXPECT_FALSE(auth.authenticate("Bearer sk-b-x"));
    EXPECT_FALSE(auth.authenticate("sk-a-1"));
    EXPECT_FALSE(auth.authenticate("Basic sk-a-1"));
    EXPECT_FALSE(auth.authenticate("Bearer "));
    EXPECT_FALSE(auth.authenticate(std::nullopt));
    // The admin key's check (credits) reads the same token.
    EXPECT_EQ(segue::api::bearer_token("BEARER  tok "), "tok");
    EXPECT_EQ(segue::api::bearer_token("Bearer"), "");
    EXPECT_EQ(segue::api::bearer_token("Bearertok"), "");
}

TEST(Router, TemplatesParamsAnd405) {
    segue::http::router r;
    auto h = [](segue::http::context&) -> boost::asio::awaitable<void> { co_return; };
    r.add("GET", "/v1/extensions/{id}", h);
    r.add("POST", "/v1/extensions/{id}/cancel", h);
    r.add("GET", "/healthz", h);
    auto m = r.match("GET", "/v1/extensions/ext_1");
    ASSERT_TRUE(m.matched);
    EXPECT_EQ(m.matched->pattern, "/v1/extensions/{id}");
    ASSERT_EQ(m.params.size(), 1u);
    EXPECT_EQ(m.params[0].second, "ext_1");
    auto na = r.match("DELETE", "/v1/extensions/ext_1");
    EXPECT_FALSE(na.matched);
    EXPECT_TRUE(na.path_known);
    EXPECT_EQ(na.allow, "GET, HEAD");  // every GET route answers HEAD too
    EXPECT_FALSE(r.match("GET", "/v1/extensions/").matched);
    EXPECT_FALSE(r.match("GET", "/v1/extensions/a/b").matched);
    EXPECT_TRUE(r.match("HEAD", "/healthz").matched);
    EXPECT_THROW(r.add("GET", "/healthz", h), std::invalid_argument);
    EXPECT_THROW(r.add("GET", "no-slash", h), std::invalid_argument);
}

// A literal segment beats a parameter: /v1/deliveries/redeliver is its own resource (POST
// only), not a delivery named "redeliver".
TEST(Router, TheMostSpecificPatternWins) {
    segue::http::router r;
    auto h = [](segue::http::context&) -> boost::asio::awaitable<void> { co_return; };
    r.add("GET", "/v1/deliveries/{id}", h);
    r.add("POST", "/v1/deliveries/{id}/redeliver", h);
    r.add("POST", "/v1/deliveries/redeliver", h);
    auto post = r.match("POST", "/v1/deliveries/redeliver");
    ASSERT_TRUE(post.matched);
    EXPECT_EQ(post.matched->pattern, "/v1/deliveries/redeliver");
    EXPECT_TRUE(post.params.empty());
    for (const char* m : {"GET", "HEAD", "PUT"}) {
        auto other = r.match(m, "/v1/deliveries/redeliver");
        EXPECT_FALSE(other.matched) << m;
        EXPECT_TRUE(other.path_known) << m;
        EXPECT_EQ(other.allow, "POST") << m;
    }
    auto one = r.match("GET", "/v1/deliveries/dlv_1");
    ASSERT_TRUE(one.matched);
    EXPECT_EQ(one.params[0].second, "dlv_1");
    EXPECT_TRUE(r.match("POST", "/v1/deliveries/dlv_1/redeliver").matched);
}

// RFC 3986 6.2.2.2: an escaped unreserved character is that character; other escapes stay.
TEST(Router, EscapedUnreservedCharactersMatchAsThemselves) {
    segue::http::router r;
    auto h = [](segue::http::context&) -> boost::asio::awaitable<void> { co_return; };
    r.add("GET", "/v1/extensions/{id}", h);
    auto m = r.match("GET", "/v1/%65xtension%73/ext%5f1%2D%7e");
    ASSERT_TRUE(m.matched);
    ASSERT_EQ(m.params.size(), 1u);
    EXPECT_EQ(m.params[0].second, "ext_1-~");
    // '/' escaped is not a separator, and a bad or cut escape is left as it is.
    auto slash = r.match("GET", "/v1/extensions/a%2Fb");
    ASSERT_TRUE(slash.matched);
    EXPECT_EQ(slash.params[0].second, "a%2Fb");
    EXPECT_EQ(r.match("GET", "/v1/extensions/a%zz").params[0].second, "a%zz");
    EXPECT_EQ(r.match("GET", "/v1/extensions/a%4").params[0].second, "a%4");
    EXPECT_FALSE(r.match("GET", "/v1%2Fextensions/x").matched);
}

TEST(Problem, OneTableOfKinds) {
    auto p = segue::api::make_problem(segue::api::error_kind::validation_failed, "2 invalid",
                                      "/v1/extensions", {{"gender", "bad"}});
    EXPECT_EQ(p.status, 422);
    EXPECT_EQ(p.content_type, "application/problem+json");
    auto o = json::parse(p.body).as_object();
    EXPECT_EQ(o["type"], "https://segue.dev/problems/validation_failed");
    EXPECT_EQ(o["code"], "validation_failed");
    EXPECT_EQ(o["errors"].as_array()[0].as_object()["field"], "gender");
    EXPECT_EQ(segue::api::info(segue::api::error_kind::header_too_large).status, 431);
    EXPECT_EQ(segue::api::info(segue::api::error_kind::payload_too_large).status, 413);
}

TEST(ModelJson, RequestRoundTrip) {
    segue::core::extend_request r;
    r.source = segue::core::source_kind::clip;
    r.clip_provider = "musicapi";
    r.clip_id = "c9";
    r.extend_after = 3.5;
    r.prompt = "p";
    r.num_outputs = 1;
    r.length = 12;
    r.metadata_json = R"({"a":1})";
    auto back = segue::core::request_from_json(segue::core::request_to_json(r));
    EXPECT_EQ(back.source, r.source);
    EXPECT_EQ(back.clip_id, "c9");
    EXPECT_EQ(back.extend_after, 3.5);
    EXPECT_EQ(*back.prompt, "p");
    EXPECT_FALSE(back.lyrics);
    EXPECT_EQ(*back.length, 12);
    EXPECT_EQ(back.metadata_json, r.metadata_json);
}

// Whole seconds are written as integers ("extend_after":30), fractions as they are.
TEST(ModelJson, WholeSecondsAreIntegersInTheJson) {
    segue::core::extend_request r;
    r.source = segue::core::source_kind::file;
    r.audio_file_id = "file_1";
    r.extend_after = 30;
    r.length = 12.5;
    r.source_duration = 60;
    const auto pub = segue::util::json_text(segue::core::public_request(r));
    EXPECT_NE(pub.find(R"("extend_after":30,)"), std::string::npos) << pub;
    EXPECT_NE(pub.find(R"("length":12.5)"), std::string::npos) << pub;
    EXPECT_NE(pub.find(R"("duration":60,)"), std::string::npos) << pub;
    EXPECT_EQ(pub.find("E0"), std::string::npos) << pub;
    const auto stored = segue::core::request_to_json(r);
    EXPECT_NE(stored.find(R"("extend_after":30,)"), std::string::npos) << stored;
    EXPECT_NE(stored.find(R"("length":12.5,)"), std::string::npos) << stored;
    auto back = segue::core::request_from_json(stored);
    EXPECT_EQ(back.extend_after, 30.0);
    EXPECT_EQ(*back.length, 12.5);
    EXPECT_EQ(back.source_duration, 60.0);
    // Idempotency hashes are taken over the old format (doubles), stable across the change.
    const auto fp = segue::core::request_fingerprint(r);
    EXPECT_NE(fp.find(R"("extend_after":3E1,)"), std::string::npos) << fp;
    EXPECT_NE(segue::core::request_to_json(r), fp);
}

// Idempotency keys stored by any earlier version must still replay: the fingerprint text is
// pinned byte for byte (Boost's exponent form included), whatever the documents look like.
TEST(ModelJson, FingerprintTextIsPinned) {
    segue::core::extend_request r;
    r.source = segue::core::source_kind::url;
    r.audio_url = "https://example.com/a.mp3";
    r.extend_after = 2.5;
    r.length = 30;
    r.source_duration = 181.25;
    r.prompt = "calm \"piano\"";
    r.num_outputs = 2;
    r.metadata_json = R"({"order":7})";
    EXPECT_EQ(
        segue::core::request_fingerprint(r),
        R"({"source":"url","audio_file_id":"","audio_filename":"",)"
        R"("audio_url":"https://example.com/a.mp3","clip_provider":"","clip_id":"",)"
        R"("extend_after":2.5E0,"prompt":"calm \"piano\"",)"
        R"("num_outputs":2,"length":3E1,"metadata":"{\"order\":7}","source_duration":1.8125E2,)"
        R"("source_sample_rate":0,"source_channels":0,"route_chain":[],"route_regenerate":false,)"
        R"("hold_milli":0})");
}

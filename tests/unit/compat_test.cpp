// The drop-in shapes' pure parts: MusicGPT's and MusicAPI.ai's webhook bodies from Segue's
// events, their error shapes, MusicAPI upload ids and the output ids both hand out.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include "gateway/api/auth.hpp"
#include "gateway/api/compat.hpp"
#include "gateway/config/settings.hpp"
#include "gateway/util/crypto.hpp"
#include "providers/musicapi/compat/compat.hpp"
#include "providers/musicgpt/compat/compat.hpp"

namespace json = boost::json;
namespace mg = segue::providers::musicgpt::compat;
namespace ma = segue::providers::musicapi::compat;
using segue::events::format_input;

namespace {

struct fixture {
    segue::config::settings settings;
    segue::store::delivery_row delivery;
    segue::store::task_row task;
    std::vector<segue::store::output_row> outputs;
    segue::core::extend_request request;

    fixture() {
        settings.api.public_base_url = "https://gw.example";
        settings.api.url_signing_key = "k";
        task.id = "ext_abc";
        task.status = "succeeded";
        task.provider = "sandbox";
        task.num_outputs = 2;
        delivery.event_id = "evt_1";
        for (int i = 1; i <= 2; ++i)
            outputs.push_back(
                {task.id, i, "ready",
                 R"({"audio":{"mp3_url":"https://cdn/x.mp3","duration":65.5},"title":"T"})", 0});
    }
    std::optional<segue::events::formatted> musicgpt(const std::string& type,
                                                     const std::string& data) {
        delivery.event_type = type;
        delivery.event_data_json = data;
        return mg::format_webhook(format_input{delivery, task, outputs, request, 1700000000},
                                  settings);
    }
    std::optional<segue::events::formatted> musicapi(const std::string& type) {
        delivery.event_type = type;
        delivery.event_data_json = "{}";
        return ma::format_webhook(format_input{delivery, task, outputs, request, 1700000000},
                                  settings);
    }
};

json::object body(const std::optional<segue::events::formatted>& f) {
    return json::parse(f->body).as_object();
}

}  // namespace

TEST(CompatMusicGpt, EachCallbackKindInMusicGptsShape) {
    fixture f;
    auto audio = f.musicgpt("extension.output.ready",
                            R"({"index":2,"output":{"audio":{"mp3_url":"https://cdn/a.mp3",)"
                            R"("wav_url":"https://cdn/a.wav","duration":12},"title":"T",)"
                            R"("lyrics":"la","flagged":false}})");
    ASSERT_TRUE(audio);
    auto a = body(audio);
    EXPECT_EQ(a["success"], true);
    EXPECT_EQ(a["conversion_type"], "Extend");
    EXPECT_EQ(a["conversion_id"], "ext_abc-2");
    EXPECT_EQ(a["conversion_path"], "https://cdn/a.mp3");
    EXPECT_EQ(a["conversion_path_wav"], "https://cdn/a.wav");
    EXPECT_EQ(a["conversion_duration"], 12);
    EXPECT_EQ(a["title"], "T");

    auto failed =
        f.musicgpt("extension.output.failed", R"({"index":1,"output":{"error":"no audio"}})");
    ASSERT_TRUE(failed);
    EXPECT_EQ(body(failed)["success"], false);
    EXPECT_EQ(body(failed)["status"], "FAILED");
    EXPECT_EQ(body(failed)["status_msg"], "no audio");

    auto lyrics = f.musicgpt("extension.lyrics.ready",
                             R"({"index":1,"lyrics_timestamped":[{"text":"a","start_ms":5,)"
                             R"("end_ms":9}]})");
    ASSERT_TRUE(lyrics);
    auto l = body(lyrics);
    EXPECT_EQ(l["subtype"], "lyrics_timestamped");
    EXPECT_EQ(l["lyrics_timestamped"], R"([{"index":0,"text":"a","start":5,"end":9}])");

    auto cover = f.musicgpt("extension.cover.ready",
                            R"({"cover_url":"https://gw.example/v1/files/file_c"})");
    ASSERT_TRUE(cover);
    auto c = body(cover);
    EXPECT_EQ(c["subtype"], "album_cover_generation");
    EXPECT_EQ(c["conversion_id_1"], "ext_abc-1");
    EXPECT_EQ(c["conversion_id_2"], "ext_abc-2");
    EXPECT_FALSE(c.contains("conversion_id"));
    // A gateway file is handed out as a signed link.
    EXPECT_EQ(c["image_path"].as_string().find("https://gw.example/v1/files/file_c?expires="), 0u);

    for (const char* t : {"extension.queued", "extension.submitted", "extension.succeeded",
                          "extension.credits.refunded"})
        EXPECT_FALSE(f.musicgpt(t, "{}")) << t << " has no MusicGPT callback";
}

TEST(CompatMusicGpt, ErrorsInFastApisAndMusicGptsShapes) {
    segue::api::create::refusal r{segue::api::error_kind::validation_failed,
                                  "validation",
                                  "x",
                                  {{"extend_after", "is required"}}};
    auto e = mg::error_of(r);
    EXPECT_EQ(e.status, 422);
    auto d = json::parse(e.body).as_object()["detail"].as_array()[0].as_object();
    EXPECT_EQ(d["loc"], (json::array{"body", "extend_after"}));
    EXPECT_EQ(d["msg"], "is required");
    r = {segue::api::error_kind::payment_required, "insufficient_credits", "holds 84", {}};
    e = mg::error_of(r);
    EXPECT_EQ(e.status, 402);
    EXPECT_EQ(json::parse(e.body).as_object()["message"], "INSUFFICIENT FUNDS");
}

TEST(CompatMusicApi, WebhookWhenTheTaskEndsSignedWithTheCallersSecret) {
    fixture f;
    EXPECT_FALSE(f.musicapi("extension.output.ready"));
    auto done = f.musicapi("extension.succeeded");
    ASSERT_TRUE(done);
    auto b = body(done);
    EXPECT_EQ(b["code"], 200);
    EXPECT_EQ(b["task_id"], "ext_abc");
    auto clip = b["data"].as_array()[0].as_object();
    EXPECT_EQ(clip["clip_id"], "ext_abc-1");
    EXPECT_EQ(clip["state"], "succeeded");
    EXPECT_EQ(clip["duration"], "65.50");  // a string, as MusicAPI's webhooks
    bool signed_ = false;
    for (const auto& [k, v] : done->headers)
        if (k == "X-Webhook-Signature")
            signed_ = true;
    EXPECT_FALSE(signed_) << "no webhook_secret, no MusicAPI signature";

    f.request.webhook_format_secret = "s3cret";
    f.task.status = "failed";
    auto failed = f.musicapi("extension.failed");
    ASSERT_TRUE(failed);
    std::map<std::string, std::string> h(failed->headers.begin(), failed->headers.end());
    EXPECT_EQ(h["X-Webhook-Event"], "song.failed");
    EXPECT_EQ(h["X-Webhook-Timestamp"], "1700000000");
    EXPECT_EQ(h["X-Webhook-Id"], "evt_1");
    EXPECT_EQ(h["X-Webhook-Signature"],
              "sha256=" + segue::util::hex_encode(
                              segue::util::hmac_sha256("s3cret", "1700000000." + failed->body)));
}

TEST(CompatMusicApi, ClipsOfMusicApiKeepItsIds) {
    fixture f;
    f.task.provider = "musicapi";
    f.outputs[0].data_json = R"({"provider_output_id":"clip_native","audio":{}})";
    auto doc = json::parse(ma::task_document({f.task, f.outputs, f.request}, f.settings));
    auto& data = doc.as_object()["data"].as_array();
    EXPECT_EQ(data[0].as_object()["clip_id"], "clip_native");
    EXPECT_EQ(data[1].as_object()["clip_id"], "ext_abc-2");
    EXPECT_EQ(doc.as_object()["status"], "SUCCESS");
}

TEST(CompatMusicApi, UploadIdsAreTheTenantsAndCannotBeForged) {
    const std::string url = "https://example.com/song.mp3?x=1&y=2";
    const auto id = ma::upload_id("key", "alpha", url);
    EXPECT_EQ(id.rfind("upl_", 0), 0u);
    EXPECT_EQ(ma::upload_url("key", "alpha", id), url);
    EXPECT_FALSE(ma::upload_url("key", "beta", id));
    EXPECT_FALSE(ma::upload_url("other", "alpha", id));
    auto forged = id;
    forged[5] = forged[5] == 'a' ? 'b' : 'a';
    EXPECT_FALSE(ma::upload_url("key", "alpha", forged));
    EXPECT_FALSE(ma::upload_url("key", "alpha", "upl_"));
    EXPECT_FALSE(ma::upload_url("key", "alpha", "ext_abc-1"));
    // The id does not carry the URL readably (its query may be a pre-signed URL's secret).
    std::string raw;
    auto b64 = id.substr(4);
    for (auto& c : b64)
        c = c == '-' ? '+' : c == '_' ? '/' : c;
    while (b64.size() % 4)
        b64 += '=';
    ASSERT_TRUE(segue::util::base64_decode(b64, raw));
    EXPECT_EQ(raw.find("example.com"), std::string::npos);
    EXPECT_EQ(id.find('.'), std::string::npos);
    // Each of its characters matters (no second spelling of the same bytes).
    for (std::size_t i = 4; i < id.size(); ++i) {
        auto other = id;
        other[i] = other[i] == 'a' ? 'b' : 'a';
        EXPECT_FALSE(ma::upload_url("key", "alpha", other)) << i;
    }
    // An id of the earlier form (the URL in base64url, then its signature) still reads back.
    std::string old_b64 = segue::util::base64_encode(url);
    for (auto& c : old_b64)
        c = c == '+' ? '-' : c == '/' ? '_' : c;
    old_b64.erase(old_b64.find_last_not_of('=') + 1);
    const auto old_sig =
        segue::util::hex_encode(segue::util::hmac_sha256("key", "musicapi-upload\nalpha\n" + url))
            .substr(0, 32);
    EXPECT_EQ(ma::upload_url("key", "alpha", "upl_" + old_b64 + "." + old_sig), url);
    EXPECT_FALSE(ma::upload_url("key", "beta", "upl_" + old_b64 + "." + old_sig));
}

TEST(CompatMusicApi, ErrorsInMusicApisShape) {
    segue::api::create::refusal r{segue::api::error_kind::payment_required, "x", "y", {}};
    auto e = ma::error_of(r);
    EXPECT_EQ(e.status, 403);  // MusicAPI answers missing credits with 403
    r = {segue::api::error_kind::validation_failed, "validation", "", {{"extend_after", "< 0"}}};
    e = ma::error_of(r);
    EXPECT_EQ(e.status, 400);
    EXPECT_EQ(json::parse(e.body).as_object()["message"], "starts_at: < 0");
}

TEST(Compat, OutputIdsMapBothWays) {
    EXPECT_EQ(segue::api::output_id("ext_x", 2), "ext_x-2");
    auto ref = segue::api::parse_output_id("ext_x-2");
    ASSERT_TRUE(ref);
    EXPECT_EQ(ref->task_id, "ext_x");
    EXPECT_EQ(ref->index, 2);
    EXPECT_EQ(segue::api::parse_output_id("ext_x-16")->index, 16);
    // Only the id output_id makes: one spelling per output.
    for (const char* bad :
         {"ext_x", "ext_x-", "-1", "ext_x-0", "ext_x-999", "ext_x-a", "ext_x-01", "ext_x-17"})
        EXPECT_FALSE(segue::api::parse_output_id(bad)) << bad;
}

TEST(Compat, KeysRawOrBearer) {
    segue::config::tenant_settings t;
    t.name = "alpha";
    t.api_keys = {"sk-1"};
    segue::api::authenticator auth({t});
    EXPECT_EQ(segue::api::tenant_of_key(auth, "sk-1"), "alpha");
    EXPECT_EQ(segue::api::tenant_of_key(auth, "Bearer sk-1"), "alpha");
    EXPECT_EQ(segue::api::tenant_of_key(auth, "bearer sk-1"), "alpha");
    EXPECT_FALSE(segue::api::tenant_of_key(auth, "sk-2"));
    EXPECT_FALSE(segue::api::tenant_of_key(auth, std::nullopt));
}

// A task whose outputs each failed on their own (the provider's failure webhooks) ends with
// Segue's "no output was produced": both shapes tell the provider's reason instead.
TEST(CompatShapes, AFailedTaskTellsTheProvidersReasonRatherThanNoOutputWasProduced) {
    fixture f;
    f.task.status = "failed";
    f.task.error_json =
        R"({"code":"no_outputs","class":"unknown","message":"no output was produced"})";
    for (auto& o : f.outputs) {
        o.status = "failed";
        // A reason that ends its own sentence is not given a second period.
        o.data_json = R"({"error":"Audio could not be processed."})";
    }
    segue::api::task_snapshot t{f.task, f.outputs, f.request};
    auto c = json::parse(mg::by_id_document(t, f.settings, std::nullopt))
                 .as_object()["conversion"]
                 .as_object();
    EXPECT_EQ(c["status"], "FAILED");
    EXPECT_EQ(c["status_msg"], "Audio could not be processed.");
    auto doc = json::parse(ma::task_document(t, f.settings)).as_object();
    EXPECT_EQ(doc["message"], "Audio could not be processed. Credits were refunded.");
    auto hook = f.musicapi("extension.failed");
    ASSERT_TRUE(hook);
    EXPECT_EQ(body(hook)["message"], "Audio could not be processed. Credits were refunded.");
    // A task-level error of the provider stays what it says.
    f.task.error_json = R"({"code":"upstream_failed","message":"MusicGPT reported FAILED"})";
    t.task = f.task;
    c = json::parse(mg::by_id_document(t, f.settings, std::nullopt))
            .as_object()["conversion"]
            .as_object();
    EXPECT_EQ(c["status_msg"], "MusicGPT reported FAILED");
}

// One conversion of two not made (MusicAPI made one clip; MusicGPT failed one): asked by its
// conversion_id, byId says FAILED and why, as its webhook says success:false; the other reads
// COMPLETED; the task, which has audio, is COMPLETED and names the one that failed.
TEST(CompatMusicGpt, AConversionThatFailedReadsFailedByItsId) {
    fixture f;
    f.task.status = "partially_succeeded";
    f.outputs[1].status = "failed";
    f.outputs[1].data_json = R"({"error":"not produced"})";
    segue::api::task_snapshot t{f.task, f.outputs, f.request};
    auto conversion = [&](std::optional<int> n) {
        return json::parse(mg::by_id_document(t, f.settings, n))
            .as_object()["conversion"]
            .as_object();
    };
    auto two = conversion(2);
    EXPECT_EQ(two["status"], "FAILED") << json::serialize(two);
    EXPECT_EQ(two["status_msg"], "not produced");
    EXPECT_EQ(two["conversion_id"], "ext_abc-2");
    EXPECT_EQ(two["conversion_path"], "");
    auto one = conversion(1);
    EXPECT_EQ(one["status"], "COMPLETED") << json::serialize(one);
    EXPECT_EQ(one["status_msg"], "Conversion successful");
    auto task = conversion(std::nullopt);
    EXPECT_EQ(task["status"], "COMPLETED");
    EXPECT_EQ(task["status_msg"], "1 of 2 conversions successful; ext_abc-2 failed: not produced");
    EXPECT_EQ(task["status_1"], "COMPLETED");
    EXPECT_EQ(task["status_2"], "FAILED");
    EXPECT_EQ(task["status_msg_2"], "not produced");

    // A canceled task: each conversion not made reads FAILED, "Canceled".
    f.task.status = "canceled";
    f.outputs[0].status = "canceled";
    f.outputs[0].data_json = "{}";
    t = {f.task, f.outputs, f.request};
    auto canceled = conversion(1);
    EXPECT_EQ(canceled["status"], "FAILED");
    EXPECT_EQ(canceled["status_msg"], "Canceled");
}

// MusicAPI transforms: the fixtures in tests/fixtures/musicapi/ (the seed document's exact
// accepted body, the documented error messages verbatim, both task-poll shapes, the webhook
// guide's payload with its string duration) replayed through the pure transforms, plus the
// request builders and the webhook signature.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "gateway/util/crypto.hpp"
#include "providers/musicapi/transform.hpp"

namespace ma = segue::providers::musicapi;
namespace core = segue::core;
using segue::providers::update;
using kind = segue::providers::update::kind;
using poll_kind = segue::providers::musicapi::upload_poll::kind;
using core::error_class;
using core::output_status;

namespace {

const std::string fixture_dir = std::string(SEGUE_SOURCE_DIR) + "/tests/fixtures/musicapi/";

std::string load(const std::string& name) {
    std::ifstream in(fixture_dir + name, std::ios::binary);
    EXPECT_TRUE(in) << "missing fixture " << name;
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

const std::string upload_task = "upl-5b1e2a7c-0f3d-4c2b-9a61-2f7d8e1c4b90";
const std::string extend_task = "29906f02-2366-4218-b25a-41458e1d60e0";  // the seed's example

// The attempt states the phases leave behind.
const std::string state_upload =
    R"({"phase":"upload","upload_task_id":"upl-5b1e2a7c-0f3d-4c2b-9a61-2f7d8e1c4b90","polls":4,"phase_started_ms":1700000000000})";
const std::string state_extend =
    R"({"phase":"extend","upload_task_id":"upl-5b1e2a7c-0f3d-4c2b-9a61-2f7d8e1c4b90","clip_id":"clip-up-7f3a","task_id":"29906f02-2366-4218-b25a-41458e1d60e0","polls":2,"phase_started_ms":1700000100000,"clip_duration":181.2})";

const std::string a1_mp3 = "https://cdn.musicapi.ai/producer/ext-clip-a1.mp3";
const std::string a1_wav = "https://cdn.musicapi.ai/producer/ext-clip-a1.wav";
const std::string a1_jpg = "https://cdn.musicapi.ai/producer/ext-clip-a1.jpg";
const std::string b2_mp3 = "https://cdn.musicapi.ai/producer/ext-clip-b2.mp3";
const std::string b2_jpg = "https://cdn.musicapi.ai/producer/ext-clip-b2.jpg";
const std::string a1_title = "Neon Rain (Extended)";
const std::string b2_title = "Neon Rain (Extended II)";
const std::string a1_lyrics = "[Bridge]\nHold the night a little longer";
const std::string method = "musicapi producer extend_music";

// 2023-11-14T22:13:20Z, for Retry-After dates.
constexpr std::int64_t now_ms = 1700000000000;
const std::string now_plus_30s = "Tue, 14 Nov 2023 22:13:50 GMT";

struct expected_output {
    int index = 1;
    output_status status = output_status::ready;
    std::string mp3_url;
    std::string wav_url;
    std::optional<double> duration;
    std::optional<std::string> title;
    std::optional<std::string> lyrics;
    std::string error_contains;  // failed outputs
    std::string cover_url;       // this output's own cover
};

struct expectation {
    std::optional<kind> what;  // webhook: nullopt means "refused" (parse_webhook -> nullopt)
    error_class error = error_class::none;
    std::string error_code;
    std::string message_contains;  // error_message, or the webhook refusal text
    std::optional<std::int64_t> retry_after_ms;
    std::optional<std::int64_t> poll_after_ms;
    std::string provider_task_id;
    std::string cover_url;
    std::vector<expected_output> outputs;
    std::size_t warnings = 0;
    bool provider_refunded = false;
    std::string webhook_kind;
    std::string method;
};

enum class transform { upload, create, extend_task, webhook };

struct fixture_case {
    std::string name;
    std::string file;
    transform via = transform::upload;
    int status = 200;
    ma::header_list headers;
    std::string state;
    expectation expect;
};

expected_output ready(int index, std::string mp3, std::string wav, std::optional<double> dur,
                      std::optional<std::string> title, std::optional<std::string> lyrics = {}) {
    expected_output o;
    o.index = index;
    o.mp3_url = std::move(mp3);
    o.wav_url = std::move(wav);
    o.duration = dur;
    o.title = std::move(title);
    o.lyrics = std::move(lyrics);
    return o;
}

expected_output with_cover(expected_output o, std::string cover) {
    o.cover_url = std::move(cover);
    return o;
}

expected_output failed_output(int index, std::string contains) {
    expected_output o;
    o.index = index;
    o.status = output_status::failed;
    o.error_contains = std::move(contains);
    return o;
}

expectation failure(error_class cls, std::string code, std::string contains,
                    std::string provider_task_id = "") {
    expectation e;
    e.what = kind::failed;
    e.error = cls;
    e.error_code = std::move(code);
    e.message_contains = std::move(contains);
    e.provider_task_id = std::move(provider_task_id);
    return e;
}

expectation refunded(expectation e) {
    e.provider_refunded = true;
    return e;
}

expectation with_retry(expectation e, std::int64_t ms, bool poll_too = false) {
    e.retry_after_ms = ms;
    if (poll_too)
        e.poll_after_ms = ms;
    return e;
}

expectation running(std::string provider_task_id) {
    expectation e;
    e.what = kind::running;
    e.provider_task_id = std::move(provider_task_id);
    return e;
}

// A poll error that means "keep polling".
expectation keep_polling(error_class cls, std::string code, std::string contains) {
    auto e = running(extend_task);
    e.error = cls;
    e.error_code = std::move(code);
    e.message_contains = std::move(contains);
    return e;
}

expectation done(std::vector<expected_output> outputs, std::string cover) {
    expectation e;
    e.what = kind::done;
    e.provider_task_id = extend_task;
    e.outputs = std::move(outputs);
    e.cover_url = std::move(cover);
    e.method = method;
    return e;
}

const std::string credits_msg =
    "The remaining credits are not enough. You can buy more one-time credit packs or subscribe.";
const std::string refunded_504 = "Task failed due to timeout. Credits were previously refunded.";

std::vector<fixture_case> cases() {
    std::vector<fixture_case> c;
    auto add = [&](std::string name, std::string file, transform via, int status, std::string state,
                   expectation e, ma::header_list headers = {}) {
        c.push_back({std::move(name), std::move(file), via, status, std::move(headers),
                     std::move(state), std::move(e)});
    };

    // --- upload answers ---
    {
        expectation e;
        e.what = kind::accepted;
        e.provider_task_id = upload_task;
        add("upload_accepted", "upload_accepted.json", transform::upload, 200, "", e);
        e.provider_task_id = "clip-up-sync-42";  // a synchronous upload names the clip itself
        add("upload_accepted_sync_clip", "upload_accepted_sync_clip.json", transform::upload, 200,
            "", e);
    }
    add("upload_200_without_task_id", "ok_without_task_id.json", transform::upload, 200, "",
        failure(error_class::transient, "malformed_response", "without a task_id"));
    add("upload_200_not_json", "not_json_502.json", transform::upload, 200, "",
        failure(error_class::transient, "malformed_response", "not a JSON object"));
    add("upload_502_not_json", "not_json_502.json", transform::upload, 502, "",
        failure(error_class::transient, "upstream_unavailable", "502 Bad Gateway"));
    add("upload_401_missing_header", "error_401_missing_header.json", transform::upload, 401, "",
        failure(error_class::credential, "upstream_unauthorized",
                "HTTP 401: Authorization header is missing."));
    add("upload_401_invalid_format", "error_401_invalid_format.json", transform::upload, 401, "",
        failure(error_class::credential, "upstream_unauthorized", "Invalid authorization format."));
    add("upload_401_error_field", "error_401_error_field.json", transform::upload, 401, "",
        failure(error_class::credential, "upstream_unauthorized", "Invalid API key"));
    add("upload_403_credits", "error_403_credits.json", transform::upload, 403, "",
        failure(error_class::quota, "insufficient_credits", credits_msg));
    add("upload_403_subscription", "error_403_subscription.json", transform::upload, 403, "",
        failure(error_class::quota, "no_subscription", "You do not have an active subscription"));
    add("upload_429_retry_after_seconds", "error_429.json", transform::upload, 429, "",
        with_retry(
            failure(error_class::rate_limited, "upstream_rate_limited", "Too many requests."),
            12000),
        {{"Retry-After", "12"}});
    add("upload_429_retry_after_date", "error_429.json", transform::upload, 429, "",
        with_retry(
            failure(error_class::rate_limited, "upstream_rate_limited", "Too many requests."),
            30000),
        {{"retry-after", now_plus_30s}});
    add("upload_500", "error_500.json", transform::upload, 500, "",
        failure(error_class::transient, "upstream_unavailable", "Internal Server Error."));
    add("upload_504_refunded", "error_504_timeout_refunded.json", transform::upload, 504, "",
        refunded(failure(error_class::transient, "upstream_timeout", refunded_504)));

    // --- extend (create) answers, after the upload ---
    {
        expectation e;
        e.what = kind::accepted;
        e.provider_task_id = extend_task;
        add("create_accepted_seed", "create_accepted.json", transform::create, 200, state_upload,
            e);
    }
    add("create_200_without_task_id", "ok_without_task_id.json", transform::create, 200,
        state_upload, failure(error_class::transient, "malformed_response", "reconcile"));
    add("create_200_not_json", "not_json_502.json", transform::create, 200, state_upload,
        failure(error_class::transient, "malformed_response", "reconcile"));
    add("create_400_invalid_params", "error_400_invalid_params.json", transform::create, 400,
        state_upload, failure(error_class::rejected, "upstream_rejected", "clip_id is required."));
    add("create_401_invalid_format", "error_401_invalid_format.json", transform::create, 401,
        state_upload,
        failure(error_class::credential, "upstream_unauthorized", "Invalid authorization format."));
    add("create_403_credits", "error_403_credits.json", transform::create, 403, state_upload,
        failure(error_class::quota, "insufficient_credits", credits_msg));
    // The status repeated in the body of an HTTP 200 is read as the status.
    add("create_200_with_code_403", "error_403_credits.json", transform::create, 200, state_upload,
        failure(error_class::quota, "insufficient_credits", "(code 403 in the body)"));
    add("create_403_subscription", "error_403_subscription.json", transform::create, 403,
        state_upload,
        failure(error_class::quota, "no_subscription", "You do not have an active subscription"));
    add("create_403_lyrics_copyright", "error_403_lyrics_copyright.json", transform::create, 403,
        state_upload,
        failure(error_class::rejected, "upstream_moderation",
                "The lyrics contain copyrighted content: 'we were neon in the midnight rain'"));
    add("create_403_description_moderation", "error_403_description_moderation.json",
        transform::create, 403, state_upload,
        failure(error_class::rejected, "upstream_moderation", "inappropriate content"));
    add("create_410_gone", "error_410_gone.json", transform::create, 410, state_upload,
        failure(error_class::rejected, "unsupported_task_type", "no longer supported"));
    add("create_429", "error_429.json", transform::create, 429, state_upload,
        with_retry(
            failure(error_class::rate_limited, "upstream_rate_limited", "Too many requests."),
            3000),
        {{"retry-after", "3"}});
    add("create_500", "error_500.json", transform::create, 500, state_upload,
        failure(error_class::transient, "upstream_unavailable", "Internal Server Error."));
    add("create_504_refunded", "error_504_timeout_refunded.json", transform::create, 504,
        state_upload, refunded(failure(error_class::transient, "upstream_timeout", refunded_504)));

    // --- extend task polls: running ---
    add("task_PENDING", "task_pending.json", transform::extend_task, 200, state_extend,
        running(extend_task));
    add("task_RUNNING", "task_running.json", transform::extend_task, 200, state_extend,
        running(extend_task));
    add("task_processing_202", "processing_202.json", transform::extend_task, 202, state_extend,
        running(extend_task));
    add("task_legacy_pending", "task_legacy_pending.json", transform::extend_task, 200,
        state_extend, running(extend_task));
    add("task_legacy_one_still_running", "task_legacy_running.json", transform::extend_task, 200,
        state_extend, running(extend_task));

    // --- extend task polls: done ---
    add("task_SUCCESS_one_clip", "task_success_one.json", transform::extend_task, 200, state_extend,
        done({with_cover(ready(1, a1_mp3, a1_wav, 75.3, a1_title, a1_lyrics), a1_jpg)}, a1_jpg));
    add("task_SUCCESS_two_clips_string_durations", "task_success_two_string_durations.json",
        transform::extend_task, 200, state_extend,
        done({ready(1, a1_mp3, a1_wav, 75.3, a1_title, a1_lyrics),  // no image_url
              with_cover(ready(2, b2_mp3, "", 81, b2_title), b2_jpg)},
             b2_jpg));  // the first non-empty image_url
    add("task_SUCCESS_clip_without_audio", "task_success_missing_audio.json",
        transform::extend_task, 200, state_extend,
        done({with_cover(ready(1, a1_mp3, "", 75.3, a1_title), a1_jpg),
              failed_output(2, "without audio")},
             a1_jpg));
    {
        auto e = done({ready(1, a1_mp3, "", std::nullopt, std::nullopt),
                       ready(2, b2_mp3, "", std::nullopt, std::nullopt)},
                      "");
        e.warnings = 2;  // "-3.5" and "NaN" are refused, and said so
        add("task_SUCCESS_bad_durations", "task_success_bad_durations.json", transform::extend_task,
            200, state_extend, e);
    }
    add("task_legacy_succeeded", "task_legacy_succeeded.json", transform::extend_task, 200,
        state_extend,
        done({with_cover(ready(1, a1_mp3, "", 75, a1_title, a1_lyrics), a1_jpg),
              with_cover(ready(2, b2_mp3, "", 82, b2_title, a1_lyrics), b2_jpg)},
             a1_jpg));  // each output its own cover, the task the first
    add("task_legacy_one_failed", "task_legacy_one_failed.json", transform::extend_task, 200,
        state_extend,
        done({with_cover(ready(1, a1_mp3, "", 75, a1_title), a1_jpg),
              failed_output(2, "Generation failed for this variation.")},
             a1_jpg));

    // --- extend task polls: failed ---
    add("task_FAILED_refunded", "task_failed_refunded.json", transform::extend_task, 200,
        state_extend,
        refunded(failure(error_class::rejected, "upstream_failed",
                         "FAILED: Music generation failed. Credits have been refunded.",
                         extend_task)));
    add("task_legacy_all_failed", "task_legacy_all_failed.json", transform::extend_task, 200,
        state_extend,
        refunded(failure(error_class::rejected, "upstream_failed", "Credits have been refunded.",
                         extend_task)));
    add("task_SUCCESS_without_clips", "task_success_empty.json", transform::extend_task, 200,
        state_extend,
        failure(error_class::unknown, "malformed_response", "without any clip", extend_task));
    add("task_unknown_status", "task_unknown_status.json", transform::extend_task, 200,
        state_extend,
        failure(error_class::unknown, "unknown_upstream_status", "'ARCHIVED'", extend_task));
    add("task_legacy_unknown_state", "task_legacy_unknown_state.json", transform::extend_task, 200,
        state_extend,
        failure(error_class::unknown, "unknown_upstream_status", "unknown clip state 'queued'",
                extend_task));

    // --- extend task polls: HTTP errors of the poll itself ---
    add("task_400_task_not_found", "error_400_task_not_found.json", transform::extend_task, 400,
        state_extend,
        failure(error_class::rejected, "upstream_task_not_found", "task not found.", extend_task));
    add("task_400_missing_task_id", "error_400_missing_task_id.json", transform::extend_task, 400,
        state_extend,
        failure(error_class::rejected, "upstream_rejected", "missing task id.", extend_task));
    add("task_401_missing_header", "error_401_missing_header.json", transform::extend_task, 401,
        state_extend,
        failure(error_class::credential, "upstream_unauthorized",
                "Authorization header is missing.", extend_task));
    add("task_403_credits", "error_403_credits.json", transform::extend_task, 403, state_extend,
        failure(error_class::quota, "insufficient_credits", credits_msg, extend_task));
    add("task_410_gone", "error_410_gone.json", transform::extend_task, 410, state_extend,
        failure(error_class::rejected, "unsupported_task_type", "no longer supported",
                extend_task));
    add("task_504_refunded_fails", "error_504_timeout_refunded.json", transform::extend_task, 504,
        state_extend,
        refunded(failure(error_class::transient, "upstream_timeout", refunded_504, extend_task)));
    add("task_429_keeps_polling", "error_429.json", transform::extend_task, 429, state_extend,
        with_retry(
            keep_polling(error_class::rate_limited, "poll_rate_limited", "Too many requests."),
            5000, true),
        {{"Retry-After", "5"}});
    add("task_500_keeps_polling", "error_500.json", transform::extend_task, 500, state_extend,
        keep_polling(error_class::transient, "poll_unavailable", "Internal Server Error."));
    add("task_502_not_json_keeps_polling", "not_json_502.json", transform::extend_task, 502,
        state_extend, keep_polling(error_class::transient, "poll_unavailable", "502 Bad Gateway"));
    add("task_200_not_json_keeps_polling", "not_json_502.json", transform::extend_task, 200,
        state_extend,
        keep_polling(error_class::transient, "malformed_poll_response", "not a JSON object"));
    add("task_200_without_status_or_clips", "ok_without_task_id.json", transform::extend_task, 200,
        state_extend,
        keep_polling(error_class::transient, "malformed_poll_response", "without status"));

    // --- webhooks ---
    {
        auto e =
            done({with_cover(ready(1, a1_mp3, "", 104.88, a1_title, a1_lyrics), a1_jpg)}, a1_jpg);
        e.webhook_kind = "song.completed";
        add("webhook_completed_doc_payload", "webhook_completed_doc.json", transform::webhook, 200,
            state_extend, e);
        // Without a known extend task (its submit answer was lost), the token vouches for it.
        e.provider_task_id = "";
        add("webhook_completed_without_state", "webhook_completed_doc.json", transform::webhook,
            200, "", e);
    }
    {
        auto e = done({with_cover(ready(1, a1_mp3, a1_wav, 104.88, a1_title, a1_lyrics), a1_jpg),
                       failed_output(2, "MusicAPI reported the clip as failed")},
                      a1_jpg);
        e.webhook_kind = "song.completed";
        add("webhook_completed_one_failed", "webhook_completed_two.json", transform::webhook, 200,
            state_extend, e);
    }
    {
        auto e = refunded(failure(error_class::rejected, "upstream_failed",
                                  "Generation failed. Credits have been refunded.", extend_task));
        e.webhook_kind = "song.failed";
        add("webhook_failed", "webhook_failed.json", transform::webhook, 200, state_extend, e);
        e.message_contains = "Task failed due to an internal error.";
        add("webhook_error_code", "webhook_error_code.json", transform::webhook, 200, state_extend,
            e);
    }
    {
        auto e = running(extend_task);
        e.webhook_kind = "song.streaming";
        add("webhook_streaming", "webhook_streaming.json", transform::webhook, 200, state_extend,
            e);
    }
    auto refused = [](std::string contains) {
        expectation e;
        e.message_contains = std::move(contains);
        return e;
    };
    add("webhook_foreign_task", "webhook_foreign.json", transform::webhook, 200, state_extend,
        refused("'ffffffff-0000-4000-8000-000000000000', expected '" + extend_task + "'"));
    add("webhook_malformed", "webhook_malformed.json", transform::webhook, 200, state_extend,
        refused("not a JSON object"));
    add("webhook_without_data", "webhook_without_data.json", transform::webhook, 200, state_extend,
        refused("without a data array"));
    add("webhook_unknown_state", "webhook_unknown_state.json", transform::webhook, 200,
        state_extend, refused("unknown clip state 'paused'"));
    return c;
}

void check_outputs(const update& u, const expectation& e) {
    ASSERT_EQ(u.outputs.size(), e.outputs.size());
    for (std::size_t i = 0; i < e.outputs.size(); ++i) {
        const auto& got = u.outputs[i];
        const auto& want = e.outputs[i];
        SCOPED_TRACE("output #" + std::to_string(i));
        EXPECT_EQ(got.index, want.index);
        EXPECT_EQ(got.status, want.status);
        EXPECT_EQ(got.mp3_url, want.mp3_url);
        EXPECT_EQ(got.wav_url, want.wav_url);
        EXPECT_FALSE(got.mp3 || got.wav);  // remote results only
        ASSERT_EQ(got.duration.has_value(), want.duration.has_value());
        if (want.duration)
            EXPECT_DOUBLE_EQ(*got.duration, *want.duration);
        EXPECT_EQ(got.title, want.title);
        EXPECT_EQ(got.lyrics, want.lyrics);
        EXPECT_EQ(got.cover_url, want.cover_url);
        EXPECT_FALSE(got.lyrics_timestamped);
        EXPECT_FALSE(got.flagged);
        if (want.status == output_status::failed)
            EXPECT_NE(got.error.find(want.error_contains), std::string::npos) << got.error;
        else
            EXPECT_TRUE(got.error.empty()) << got.error;
    }
}

// Readable test names in failure messages instead of a byte dump.
void PrintTo(const fixture_case& c, std::ostream* os) {
    *os << c.name << " (" << c.file << ")";
}

class MusicApiFixture : public ::testing::TestWithParam<fixture_case> {};

TEST_P(MusicApiFixture, ReplaysToExpectedUpdate) {
    const auto& c = GetParam();
    const std::string body = load(c.file);
    std::optional<update> got;
    std::string refusal;
    switch (c.via) {
        case transform::upload:
            got = ma::parse_upload_response(c.status, body, c.headers, now_ms);
            break;
        case transform::create:
            got = ma::parse_create_response(c.state, c.status, body, c.headers, now_ms);
            break;
        case transform::extend_task:
            got = ma::parse_extend_task(c.state, c.status, body, c.headers, now_ms);
            break;
        case transform::webhook:
            got = ma::parse_webhook(c.state, body, refusal);
            break;
    }
    const auto& e = c.expect;
    if (!e.what) {
        ASSERT_FALSE(got) << "expected the webhook to be refused";
        EXPECT_NE(refusal.find(e.message_contains), std::string::npos) << refusal;
        return;
    }
    ASSERT_TRUE(got) << refusal;
    const update& u = *got;
    EXPECT_EQ(u.what, *e.what);
    EXPECT_EQ(u.error, e.error) << core::to_string(u.error);
    EXPECT_EQ(u.error_code, e.error_code);
    if (!e.message_contains.empty())
        EXPECT_NE(u.error_message.find(e.message_contains), std::string::npos) << u.error_message;
    else
        EXPECT_EQ(u.error_message, "");
    EXPECT_EQ(u.retry_after_ms, e.retry_after_ms);
    EXPECT_EQ(u.poll_after_ms, e.poll_after_ms);
    EXPECT_EQ(u.provider_task_id, e.provider_task_id);
    EXPECT_EQ(u.cover_url, e.cover_url);
    EXPECT_EQ(u.warnings.size(), e.warnings);
    EXPECT_EQ(u.provider_refunded, e.provider_refunded);
    EXPECT_EQ(u.webhook_kind, e.webhook_kind);
    EXPECT_EQ(u.method, e.method);
    check_outputs(u, e);
}

INSTANTIATE_TEST_SUITE_P(MusicApi, MusicApiFixture, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<fixture_case>& info) {
                             return info.param.name;
                         });

// --- the upload task's polls, which give an upload_poll rather than an update ---

struct upload_case {
    std::string name;
    std::string file;
    int status = 200;
    ma::header_list headers;
    poll_kind what = poll_kind::running;
    std::string clip_id;
    std::optional<double> duration;
    std::string error_code;  // upload_poll::error_code
    std::optional<std::int64_t> retry_after_ms;
    error_class failure_class = error_class::none;  // of upload_poll::failure
    std::string message_contains;
    bool provider_refunded = false;
};

void PrintTo(const upload_case& c, std::ostream* os) {
    *os << c.name << " (" << c.file << ")";
}

std::vector<upload_case> upload_cases() {
    std::vector<upload_case> c;
    auto run = [&](std::string name, std::string file, int status = 200) {
        upload_case u;
        u.name = std::move(name);
        u.file = std::move(file);
        u.status = status;
        c.push_back(u);
    };
    run("PENDING", "upload_task_pending.json");
    run("RUNNING", "upload_task_running.json");
    run("processing_202", "processing_202.json", 202);
    run("legacy_running", "upload_task_legacy_running.json");

    auto ready = [&](std::string name, std::string file, std::string clip, double dur) {
        upload_case u;
        u.name = std::move(name);
        u.file = std::move(file);
        u.what = poll_kind::ready;
        u.clip_id = std::move(clip);
        u.duration = dur;
        c.push_back(u);
    };
    ready("SUCCESS", "upload_task_success.json", "clip-up-7f3a", 181.2);
    ready("SUCCESS_id_and_string_duration", "upload_task_success_id_string_duration.json",
          "clip-up-88aa", 95.5);
    ready("legacy_succeeded", "upload_task_legacy_succeeded.json", "clip-up-legacy-01", 120);

    auto fail = [&](std::string name, std::string file, int status, error_class cls,
                    std::string code, std::string contains, bool refunded = false) {
        upload_case u;
        u.name = std::move(name);
        u.file = std::move(file);
        u.status = status;
        u.what = poll_kind::failed;
        u.error_code = std::move(code);
        u.failure_class = cls;
        u.message_contains = std::move(contains);
        u.provider_refunded = refunded;
        c.push_back(u);
    };
    fail("FAILED_refunded", "upload_task_failed.json", 200, error_class::rejected,
         "upstream_upload_failed", "could not be downloaded. Credits have been refunded.", true);
    fail("legacy_failed", "upload_task_legacy_failed.json", 200, error_class::rejected,
         "upstream_upload_failed", "Audio longer than 4 minutes.");
    fail("SUCCESS_without_clip_id", "upload_task_success_without_clip.json", 200,
         error_class::unknown, "malformed_response", "without a clip id");
    fail("unknown_status", "upload_task_unknown_status.json", 200, error_class::unknown,
         "unknown_upstream_status", "'ON_HOLD'");
    fail("400_task_not_found", "error_400_task_not_found.json", 400, error_class::rejected,
         "upstream_task_not_found", "task not found.");
    fail("401_invalid_format", "error_401_invalid_format.json", 401, error_class::credential,
         "upstream_unauthorized", "Invalid authorization format.");
    fail("403_subscription", "error_403_subscription.json", 403, error_class::quota,
         "no_subscription", "active subscription");
    fail("504_refunded", "error_504_timeout_refunded.json", 504, error_class::transient,
         "upstream_timeout", refunded_504, true);

    auto poll_error = [&](std::string name, std::string file, int status, error_class cls,
                          std::string code, std::string contains,
                          std::optional<std::int64_t> retry = {}, ma::header_list headers = {}) {
        upload_case u;
        u.name = std::move(name);
        u.file = std::move(file);
        u.status = status;
        u.headers = std::move(headers);
        u.error_code = std::move(code);
        u.failure_class = cls;
        u.message_contains = std::move(contains);
        u.retry_after_ms = retry;
        c.push_back(u);
    };
    poll_error("429", "error_429.json", 429, error_class::rate_limited, "poll_rate_limited",
               "Too many requests.", 2000, {{"retry-after", "2"}});
    poll_error("500", "error_500.json", 500, error_class::transient, "poll_unavailable",
               "Internal Server Error.");
    poll_error("200_not_json", "not_json_502.json", 200, error_class::transient,
               "malformed_poll_response", "not a JSON object");
    return c;
}

class MusicApiUploadTask : public ::testing::TestWithParam<upload_case> {};

TEST_P(MusicApiUploadTask, ReplaysToExpectedPoll) {
    const auto& c = GetParam();
    const auto p = ma::parse_upload_task(c.status, load(c.file), c.headers, now_ms);
    EXPECT_EQ(p.what, c.what);
    EXPECT_EQ(p.clip_id, c.clip_id);
    ASSERT_EQ(p.duration.has_value(), c.duration.has_value());
    if (c.duration)
        EXPECT_DOUBLE_EQ(*p.duration, *c.duration);
    EXPECT_EQ(p.error_code, c.error_code);
    EXPECT_EQ(p.retry_after_ms, c.retry_after_ms);
    // `failure` is ready to return as the attempt's update.
    EXPECT_EQ(p.failure.error, c.failure_class) << core::to_string(p.failure.error);
    EXPECT_EQ(p.failure.error_code, c.error_code);
    EXPECT_EQ(p.failure.provider_refunded, c.provider_refunded);
    EXPECT_EQ(p.failure.retry_after_ms, c.retry_after_ms);
    if (c.message_contains.empty()) {
        EXPECT_EQ(p.failure.error_message, "");
    } else {
        EXPECT_NE(p.failure.error_message.find(c.message_contains), std::string::npos)
            << p.failure.error_message;
        EXPECT_EQ(p.failure.what, c.what == poll_kind::failed ? kind::failed : kind::running);
    }
}

INSTANTIATE_TEST_SUITE_P(MusicApi, MusicApiUploadTask, ::testing::ValuesIn(upload_cases()),
                         [](const ::testing::TestParamInfo<upload_case>& info) {
                             return info.param.name;
                         });

// Every fixture file is replayed by some case (no dead fixtures).
TEST(MusicApiFixtures, EveryFixtureIsReplayed) {
    std::set<std::string> used;
    for (const auto& c : cases())
        used.insert(c.file);
    for (const auto& c : upload_cases())
        used.insert(c.file);
    std::size_t files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(fixture_dir)) {
        ++files;
        EXPECT_TRUE(used.count(entry.path().filename().string()))
            << entry.path().filename() << " is not replayed";
    }
    EXPECT_GT(files, 50u);
}

// --- state ---

TEST(MusicApiTransform, StatesFollowThePhases) {
    auto up = ma::parse_upload_response(200, load("upload_accepted.json"), {}, now_ms);
    ASSERT_EQ(up.what, kind::accepted);
    // The persisted form is exactly what the provider stores.
    EXPECT_EQ(
        up.state_json,
        R"({"phase":"upload","upload_task_id":"upl-5b1e2a7c-0f3d-4c2b-9a61-2f7d8e1c4b90","polls":0,"phase_started_ms":1700000000000})");

    auto sync = ma::parse_upload_response(200, load("upload_accepted_sync_clip.json"), {});
    auto sst = ma::parse_state(sync.state_json);
    EXPECT_EQ(sst.phase, "upload");
    EXPECT_EQ(sst.clip_id, "clip-up-sync-42");  // no upload poll needed
    EXPECT_EQ(sst.clip_duration, 64.5);
    EXPECT_EQ(sst.phase_started_ms, 0);  // no clock given

    // The provider records the upload's clip, then submits the extend.
    auto st = ma::parse_state(up.state_json);
    st.clip_id = "clip-up-7f3a";
    st.clip_duration = 181.2;
    st.polls = 4;
    auto cr = ma::parse_create_response(ma::state_to_json(st), 200, load("create_accepted.json"),
                                        {}, now_ms + 5000);
    ASSERT_EQ(cr.what, kind::accepted);
    auto ext = ma::parse_state(cr.state_json);
    EXPECT_EQ(ext.phase, "extend");
    EXPECT_EQ(ext.task_id, extend_task);
    EXPECT_EQ(ext.upload_task_id, upload_task);  // kept
    EXPECT_EQ(ext.clip_id, "clip-up-7f3a");      // kept
    EXPECT_EQ(ext.clip_duration, 181.2);         // kept
    EXPECT_EQ(ext.polls, 0);                     // reset for the new phase
    EXPECT_EQ(ext.phase_started_ms, now_ms + 5000);

    // A failed create leaves the state alone (nothing to persist).
    auto bad = ma::parse_create_response(ma::state_to_json(st), 403, load("error_403_credits.json"),
                                         {}, now_ms);
    EXPECT_EQ(bad.state_json, "");
}

TEST(MusicApiTransform, RunningPollsCountThemselves) {
    auto u = ma::parse_extend_task(state_extend, 200, load("task_running.json"));
    ASSERT_EQ(u.what, kind::running);
    auto st = ma::parse_state(u.state_json);
    EXPECT_EQ(st.polls, 3);
    EXPECT_EQ(st.task_id, extend_task);
    EXPECT_EQ(st.clip_id, "clip-up-7f3a");
    EXPECT_EQ(st.phase_started_ms, 1700000100000);
    // Keep-polling errors count too; final answers leave the state alone.
    auto err = ma::parse_extend_task(state_extend, 500, load("error_500.json"));
    EXPECT_EQ(ma::parse_state(err.state_json).polls, 3);
    auto fin = ma::parse_extend_task(state_extend, 200, load("task_success_one.json"));
    EXPECT_EQ(fin.state_json, "");
    // No state: nothing invented.
    EXPECT_EQ(ma::parse_extend_task("", 200, load("task_running.json")).state_json, "");
}

// The persisted state never holds the callback URL: it carries the attempt's secret webhook
// token, which the store keeps only as a SHA-256. A state written before keeps working, its
// URL dropped.
TEST(MusicApiTransform, StateNeverKeepsTheCallbackToken) {
    const std::string token = "tok_9f2c4e1a7b3d5f60c8e2a4b6d8f0e1c3";
    const std::string url = "https://gw.example/v1/providers/musicapi/webhooks/" + token;
    ma::attempt_state st;
    st.phase = "upload";
    st.upload_task_id = "u1";
    st.started_ms = 1700000000000;
    st.callback_url = url;
    const auto text = ma::state_to_json(st);
    EXPECT_EQ(text.find(token), std::string::npos) << text;
    EXPECT_EQ(text.find("callback_url"), std::string::npos) << text;
    EXPECT_EQ(text, R"({"phase":"upload","upload_task_id":"u1","polls":0,"phase_started_ms":0,)"
                    R"("started_ms":1700000000000})");

    const auto old = ma::parse_state(
        R"({"phase":"extend","clip_id":"c","task_id":"t","polls":2,"phase_started_ms":5,)"
        R"("callback_url":")" +
        url + R"("})");
    EXPECT_EQ(old.task_id, "t");
    EXPECT_EQ(old.polls, 2);
    EXPECT_EQ(old.callback_url, "");
    EXPECT_EQ(ma::state_to_json(old).find(token), std::string::npos);

    // States the transforms hand back do not carry it either.
    auto created = ma::parse_create_response(text, 200, load("create_accepted.json"), {}, now_ms);
    ASSERT_EQ(created.what, kind::accepted);
    EXPECT_EQ(created.state_json.find(token), std::string::npos) << created.state_json;
}

// A refused numeric duration is quoted in the warning as it was sent: -3.5, not -3.5E0.
TEST(MusicApiTransform, UnreadableDurationWarningQuotesPlainNumbers) {
    const auto u = ma::parse_extend_task(
        state_extend, 200,
        R"({"code":200,"status":"SUCCESS","message":"success","data":[{"clip_id":"c1",)"
        R"("audio_url":"https://cdn.musicapi.ai/producer/c1.mp3","duration":-3.5}]})");
    ASSERT_EQ(u.what, kind::done);
    ASSERT_EQ(u.warnings.size(), 1u);
    EXPECT_NE(u.warnings[0].find("duration -3.5 ignored"), std::string::npos) << u.warnings[0];
}

TEST(MusicApiTransform, StateRoundTripAndGarbage) {
    ma::attempt_state st;
    st.phase = "extend";
    st.upload_task_id = "u\"1";
    st.clip_id = "c";
    st.task_id = "t";
    st.polls = 7;
    st.phase_started_ms = 1700000000123;
    st.clip_duration = 30.25;
    auto back = ma::parse_state(ma::state_to_json(st));
    EXPECT_EQ(back.phase, st.phase);
    EXPECT_EQ(back.upload_task_id, st.upload_task_id);
    EXPECT_EQ(back.clip_id, st.clip_id);
    EXPECT_EQ(back.task_id, st.task_id);
    EXPECT_EQ(back.polls, 7);
    EXPECT_EQ(back.phase_started_ms, 1700000000123);
    EXPECT_EQ(back.clip_duration, 30.25);

    for (std::string junk : {"", "not json", "[1,2]", "{\"phase\":3,\"polls\":\"x\"}",
                             R"({"polls":-4,"clip_duration":-1,"phase_started_ms":-9})"}) {
        auto e = ma::parse_state(junk);
        EXPECT_EQ(e.phase, "") << junk;
        EXPECT_EQ(e.task_id, "") << junk;
        EXPECT_EQ(e.polls, 0) << junk;
        EXPECT_EQ(e.phase_started_ms, 0) << junk;
        EXPECT_FALSE(e.clip_duration) << junk;
    }
}

// --- requests ---

core::extend_request full_request() {
    core::extend_request r;
    r.source = core::source_kind::url;
    r.audio_url = "https://files.example/song.mp3";  // went to the upload, not here
    r.extend_after = 35.5;
    r.prompt = "Add soaring violin \"strings\"";
    r.lyrics = "Original words";
    r.lyrics_section_to_extend = "New words\nfor the end";
    r.gender = "female";
    r.num_outputs = 2;
    r.num_outputs_given = true;
    r.length = 30;
    r.webhook_url = "https://tenant.example/hook";  // the tenant's: never sent upstream
    r.provider = "musicapi";
    r.route = "default";
    r.metadata_json = R"({"k":"v"})";
    r.source_duration = 181.2;
    return r;
}

TEST(MusicApiTransform, BuildExtendMapsEveryField) {
    auto c = ma::build_extend(full_request(), "clip-up-7f3a",
                              "https://gw.example/v1/providers/musicapi/webhooks/tok", "whsec");
    ASSERT_TRUE(c.ok) << c.error;
    EXPECT_EQ(
        c.json_body,
        R"({"task_type":"extend_music","clip_id":"clip-up-7f3a","starts_at":35.5,)"
        R"("instruction":"Add soaring violin \"strings\"","lyrics":"New words\nfor the end",)"
        R"("length":30,"webhook_url":"https://gw.example/v1/providers/musicapi/webhooks/tok",)"
        R"("webhook_secret":"whsec"})");
    EXPECT_NO_THROW((void)boost::json::parse(c.json_body));
    // Never the legacy aliases, the tenant's webhook, metadata or routing.
    for (std::string absent : {"\"starts\"", "lyrics_text", "tenant.example", "metadata", "route",
                               "\"provider\"", "gender", "num_outputs", "Original words"})
        EXPECT_EQ(c.json_body.find(absent), std::string::npos) << absent;
    // One warning per neutral field MusicAPI cannot honour.
    ASSERT_EQ(c.warnings.size(), 3u);
    EXPECT_NE(c.warnings[0].find("lyrics (of the original) not sent"), std::string::npos);
    EXPECT_NE(c.warnings[1].find("gender 'female'"), std::string::npos);
    EXPECT_NE(c.warnings[2].find("num_outputs 2"), std::string::npos);
}

// The default of 2 outputs is not something the client asked for: no warning about it.
TEST(MusicApiTransform, NumOutputsWarnsOnlyWhenTheClientSentIt) {
    auto r = full_request();
    r.gender.reset();
    r.lyrics.reset();
    r.num_outputs_given = false;  // 2 by default
    auto c = ma::build_extend(r, "clip-1", "", "");
    ASSERT_TRUE(c.ok) << c.error;
    EXPECT_TRUE(c.warnings.empty()) << c.warnings.front();
    r.num_outputs_given = true;
    c = ma::build_extend(r, "clip-1", "", "");
    ASSERT_EQ(c.warnings.size(), 1u);
    EXPECT_NE(c.warnings[0].find("num_outputs 2"), std::string::npos);
}

TEST(MusicApiTransform, BuildExtendMinimalAndLyricsFallback) {
    core::extend_request r;
    r.source = core::source_kind::clip;
    r.clip_provider = "musicapi";
    r.clip_id = "abc123xyz789";
    r.extend_after = 45;
    r.num_outputs = 1;
    auto c = ma::build_extend(r, r.clip_id, "", "ignored-without-url");
    ASSERT_TRUE(c.ok);
    EXPECT_EQ(c.json_body,
              R"({"task_type":"extend_music","clip_id":"abc123xyz789","starts_at":45})");
    EXPECT_TRUE(c.warnings.empty());

    // The original's lyrics are the only words given: they are sent, without a warning.
    r.lyrics = "Only the original";
    r.prompt = "Add soaring violin strings";
    auto l = ma::build_extend(r, r.clip_id, "https://gw.example/hook", "");
    ASSERT_TRUE(l.ok);
    EXPECT_EQ(l.json_body,
              R"({"task_type":"extend_music","clip_id":"abc123xyz789","starts_at":45,)"
              R"("instruction":"Add soaring violin strings","lyrics":"Only the original",)"
              R"("webhook_url":"https://gw.example/hook"})");
    EXPECT_TRUE(l.warnings.empty());

    // The seed's example, field for field.
    core::extend_request seed;
    seed.extend_after = 45;
    seed.num_outputs = 1;
    seed.prompt =
        "Add soaring violin strings and an uplifting orchestral build with increasing intensity. "
        "Conclude with a triumphant final chord.";
    seed.length = 30;
    auto s = ma::build_extend(seed, "abc123xyz789", "", "");
    auto v = boost::json::parse(s.json_body).as_object();
    EXPECT_EQ(v, boost::json::parse(R"({
        "task_type": "extend_music",
        "clip_id": "abc123xyz789",
        "starts_at": 45,
        "instruction": "Add soaring violin strings and an uplifting orchestral build with increasing intensity. Conclude with a triumphant final chord.",
        "length": 30
    })")
                     .as_object());
}

TEST(MusicApiTransform, BuildExtendRefusesWhatCannotBeSent) {
    auto r = full_request();
    auto none = ma::build_extend(r, "", "", "");
    EXPECT_FALSE(none.ok);
    EXPECT_EQ(none.error_code, "missing_clip");
    EXPECT_TRUE(none.json_body.empty());

    r.extend_after = -1;
    EXPECT_EQ(ma::build_extend(r, "c", "", "").error_code, "invalid_extend_after");
    r.extend_after = std::nan("");
    EXPECT_EQ(ma::build_extend(r, "c", "", "").error_code, "invalid_extend_after");
    r.extend_after = 10;
    r.length = 0;
    EXPECT_EQ(ma::build_extend(r, "c", "", "").error_code, "invalid_length");
}

TEST(MusicApiTransform, PathsAndAuthorization) {
    EXPECT_EQ(ma::upload_path, "/producer/upload");
    EXPECT_EQ(ma::create_path, "/producer/create");
    EXPECT_EQ(ma::task_path(extend_task), "/producer/task/" + extend_task);
    EXPECT_EQ(ma::task_path("a b/../c?d"), "/producer/task/a%20b%2F..%2Fc%3Fd");
    EXPECT_EQ(ma::authorization_value("sk-123"), "Bearer sk-123");
    EXPECT_EQ(ma::build_upload("https://files.example/a \"b\".mp3"),
              R"({"audio_url":"https://files.example/a \"b\".mp3"})");
}

// --- errors ---

TEST(MusicApiTransform, DescribesEveryErrorStatus) {
    struct row {
        int status;
        std::string message;
        error_class cls;
        std::string code;
        bool refunded = false;
    };
    const std::vector<row> rows = {
        {400, "task not found.", error_class::rejected, "upstream_task_not_found"},
        {400, "missing task id.", error_class::rejected, "upstream_rejected"},
        {400, "starts_at is required", error_class::rejected, "upstream_rejected"},
        {401, "Authorization header is missing.", error_class::credential, "upstream_unauthorized"},
        {401, "Invalid authorization format.", error_class::credential, "upstream_unauthorized"},
        {402, "", error_class::quota, "insufficient_credits"},
        {403, credits_msg, error_class::quota, "insufficient_credits"},
        {403, "You do not have an active subscription…", error_class::quota, "no_subscription"},
        // A subscription message that also mentions credits is still about the subscription.
        {403, "You do not have an active subscription. Subscribe or buy credits.",
         error_class::quota, "no_subscription"},
        {403, "The lyrics contain copyrighted content: '…'", error_class::rejected,
         "upstream_moderation"},
        {403, "The description violates our content policy.", error_class::rejected,
         "upstream_moderation"},
        {403, "Forbidden", error_class::rejected, "upstream_forbidden"},
        {404, "Not Found", error_class::rejected, "upstream_not_found"},
        {409, "", error_class::rejected, "upstream_rejected"},
        {410, "Gone", error_class::rejected, "unsupported_task_type"},
        {422, "", error_class::rejected, "upstream_rejected"},
        {429, "Too many requests.", error_class::rate_limited, "upstream_rate_limited"},
        {429, "Insufficient credits", error_class::quota, "insufficient_credits"},
        {408, "", error_class::transient, "upstream_timeout"},
        {425, "", error_class::transient, "upstream_unavailable"},
        {500, "Internal Server Error.", error_class::transient, "upstream_unavailable"},
        {503, "", error_class::transient, "upstream_unavailable"},
        {504, refunded_504, error_class::transient, "upstream_timeout", true},
        {504, "Gateway Timeout", error_class::transient, "upstream_timeout", false},
        {504, "Task failed due to timeout. Credits have not been refunded yet.",
         error_class::transient, "upstream_timeout", false},
        {0, "", error_class::unknown, "upstream_unexpected_status"},
        {302, "", error_class::unknown, "upstream_unexpected_status"},
    };
    for (const auto& r : rows) {
        SCOPED_TRACE(std::to_string(r.status) + " " + r.message);
        auto info = ma::describe_error(r.status, r.message);
        EXPECT_EQ(info.error, r.cls) << core::to_string(info.error);
        EXPECT_EQ(info.code, r.code);
        EXPECT_EQ(info.provider_refunded, r.refunded);
        EXPECT_EQ(ma::classify(r.status, r.message), r.cls);
    }
}

TEST(MusicApiTransform, ErrorTextOfEachBodyStyle) {
    EXPECT_EQ(ma::error_text(load("error_403_credits.json")), credits_msg);
    EXPECT_EQ(ma::error_text(load("error_401_error_field.json")), "Invalid API key");
    EXPECT_EQ(ma::error_text(load("processing_202.json")),
              "The task is still being processed, please try again later.");
    EXPECT_EQ(ma::error_text(R"({"detail":"Not authenticated"})"), "Not authenticated");
    EXPECT_EQ(ma::error_text(R"({"error":{"message":"nested"}})"), "nested");
    EXPECT_EQ(ma::error_text(R"({"code":500,"message":""})"), "");
    EXPECT_EQ(ma::error_text("Bad Gateway\n"), "Bad Gateway");
    EXPECT_EQ(ma::error_text(""), "");
    EXPECT_EQ(ma::error_text(std::string(500, 'x')).size(), 200u + std::string("…").size());
}

TEST(MusicApiTransform, RetryAfterNeedsAClockForDates) {
    EXPECT_EQ(ma::retry_after_ms("7", std::nullopt), 7000);
    EXPECT_EQ(ma::retry_after_ms(now_plus_30s, now_ms), 30000);
    EXPECT_EQ(ma::retry_after_ms(now_plus_30s, std::nullopt), std::nullopt);
    // Without a clock, a dated Retry-After on a 429 is dropped rather than guessed.
    auto u =
        ma::parse_upload_response(429, load("error_429.json"), {{"retry-after", now_plus_30s}});
    EXPECT_EQ(u.error, error_class::rate_limited);
    EXPECT_EQ(u.retry_after_ms, std::nullopt);
}

TEST(MusicApiTransform, UnknownStatusIsNeverRunning) {
    for (std::string s : {"QUEUED", "", "IN_PROGRESS", "DONE", "success-ish", "CANCELLED"}) {
        const std::string body = R"({"code":200,"status":")" + s + R"(","message":"","data":[]})";
        auto u = ma::parse_extend_task(state_extend, 200, body);
        EXPECT_EQ(u.what, kind::failed) << s;
        EXPECT_EQ(u.error, error_class::unknown) << s;
        EXPECT_EQ(u.error_code, "unknown_upstream_status") << s;
        auto p = ma::parse_upload_task(200, body);
        EXPECT_EQ(p.what, poll_kind::failed) << s;
        EXPECT_EQ(p.error_code, "unknown_upstream_status") << s;
    }
    // Spellings are case-insensitive; the legacy clip vocabulary works at the top too.
    auto lower = ma::parse_extend_task(state_extend, 200, R"({"status":"running","data":[]})");
    EXPECT_EQ(lower.what, kind::running);
    // A numeric status (an echoed HTTP code) is not a task status: the clips decide.
    auto numeric = ma::parse_extend_task(
        state_extend, 200,
        R"({"status":200,"data":[{"clip_id":"x","state":"succeeded","audio_url":"https://a/x.mp3"}]})");
    EXPECT_EQ(numeric.what, kind::done);
}

TEST(MusicApiTransform, BodyCodeYieldsToATaskStatus) {
    // An error code in a 2xx body is read as the status...
    auto err = ma::parse_extend_task(state_extend, 200, load("error_400_task_not_found.json"));
    EXPECT_EQ(err.what, kind::failed);
    EXPECT_EQ(err.error_code, "upstream_task_not_found");
    // ...unless the body has a task status, which then says what happened.
    auto f = ma::parse_extend_task(
        state_extend, 200,
        R"({"code":500,"status":"FAILED","message":"Upstream error. Credits refunded.","data":[]})");
    EXPECT_EQ(f.what, kind::failed);
    EXPECT_EQ(f.error, error_class::rejected);
    EXPECT_EQ(f.error_code, "upstream_failed");
    EXPECT_TRUE(f.provider_refunded);
}

TEST(MusicApiTransform, DurationsAreNumbersOrNumericStrings) {
    EXPECT_EQ(ma::parse_duration("104.88"), 104.88);
    EXPECT_EQ(ma::parse_duration(R"("104.88")"), 104.88);
    EXPECT_EQ(ma::parse_duration(R"(" 81 ")"), 81);
    EXPECT_EQ(ma::parse_duration("0"), 0);
    EXPECT_EQ(ma::parse_duration("-1"), std::nullopt);
    EXPECT_EQ(ma::parse_duration(R"("-3.5")"), std::nullopt);
    EXPECT_EQ(ma::parse_duration(R"("NaN")"), std::nullopt);
    EXPECT_EQ(ma::parse_duration(R"("inf")"), std::nullopt);
    EXPECT_EQ(ma::parse_duration(R"("")"), std::nullopt);
    EXPECT_EQ(ma::parse_duration(R"("1:45")"), std::nullopt);
    EXPECT_EQ(ma::parse_duration("null"), std::nullopt);
    EXPECT_EQ(ma::parse_duration("true"), std::nullopt);
    EXPECT_EQ(ma::parse_duration("not json"), std::nullopt);
}

// --- webhook signatures ---

const std::string secret = "whsec_test_7d2f";
constexpr std::int64_t hook_ts = 1700000000;

std::string sign(const std::string& key, const std::string& ts, const std::string& body) {
    return "sha256=" + segue::util::hex_encode(segue::util::hmac_sha256(key, ts + "." + body));
}

ma::header_list signed_headers(const std::string& signature, const std::string& ts) {
    return {{"x-webhook-id", "wh_1"},
            {"idempotency-key", "wh_1"},
            {"x-webhook-event", "song.completed"},
            {"x-webhook-timestamp", ts},
            {"x-webhook-signature", signature}};
}

TEST(MusicApiWebhookSignature, FixedVector) {
    // printf '%s' '1700000000.{}' | openssl dgst -sha256 -hmac secret
    const std::string expected =
        "sha256=b8569b78799ff9e3cbff0fc2d63a33a2b57f3282abd07c37ae5e8e7d79a5f163";
    EXPECT_EQ(sign("secret", "1700000000", "{}"), expected);
    std::string err;
    EXPECT_TRUE(ma::verify_webhook_signature("secret", signed_headers(expected, "1700000000"), "{}",
                                             1700000000, 300, err))
        << err;
    // Hex case and the prefix's case do not matter; header names are case-insensitive.
    std::string upper = "SHA256=B8569B78799FF9E3CBFF0FC2D63A33A2B57F3282ABD07C37AE5E8E7D79A5F163";
    EXPECT_TRUE(ma::verify_webhook_signature(
        "secret", {{"X-Webhook-Timestamp", "1700000000"}, {"X-Webhook-Signature", upper}}, "{}",
        1700000000, 300, err))
        << err;
}

TEST(MusicApiWebhookSignature, ValidWithinTolerance) {
    const std::string hook_body = load("webhook_completed_two.json");
    const std::string ts = std::to_string(hook_ts);
    std::string err;
    for (std::int64_t skew : {-300, -1, 0, 1, 300}) {
        EXPECT_TRUE(ma::verify_webhook_signature(secret,
                                                 signed_headers(sign(secret, ts, hook_body), ts),
                                                 hook_body, hook_ts + skew, 300, err))
            << skew << ": " << err;
    }
}

TEST(MusicApiWebhookSignature, RefusesWrongStaleAndMissing) {
    const std::string hook_body = load("webhook_completed_two.json");
    const std::string ts = std::to_string(hook_ts);
    const std::string good = sign(secret, ts, hook_body);
    auto refused = [&](std::string_view key, const ma::header_list& h, const std::string& body,
                       std::int64_t now, const std::string& contains) {
        std::string err;
        EXPECT_FALSE(ma::verify_webhook_signature(key, h, body, now, 300, err)) << contains;
        EXPECT_NE(err.find(contains), std::string::npos) << err;
    };
    refused("other-secret", signed_headers(good, ts), hook_body, hook_ts, "does not match");
    refused(secret, signed_headers(good, ts), hook_body + " ", hook_ts, "does not match");
    // The timestamp is part of what is signed: a fresh timestamp on an old signature fails.
    refused(secret, signed_headers(good, std::to_string(hook_ts + 1)), hook_body, hook_ts,
            "does not match");
    refused(secret, signed_headers(sign(secret, ts, hook_body).substr(0, 30), ts), hook_body,
            hook_ts, "does not match");
    refused(secret, signed_headers(good.substr(7), ts), hook_body, hook_ts, "sha256=<hex>");
    // Stale (a replay) and too far in the future.
    refused(secret, signed_headers(good, ts), hook_body, hook_ts + 301, "stale or replayed");
    refused(secret, signed_headers(good, ts), hook_body, hook_ts - 301, "stale or replayed");
    // Missing or malformed headers.
    refused(secret, {{"x-webhook-timestamp", ts}}, hook_body, hook_ts, "X-Webhook-Signature");
    refused(secret, {{"x-webhook-signature", good}}, hook_body, hook_ts, "X-Webhook-Timestamp");
    refused(secret, {}, hook_body, hook_ts, "without an X-Webhook-Signature");
    for (std::string bad_ts : {"", "abc", "-1700000000", "1700000000.5", "99999999999999999999"})
        refused(secret, signed_headers(good, bad_ts), hook_body, hook_ts, "malformed");
    // The older sunoapi.com scheme (X-Signature over the body alone) is not accepted.
    refused(secret,
            {{"x-signature", segue::util::hex_encode(segue::util::hmac_sha256(secret, hook_body))}},
            hook_body, hook_ts, "X-Webhook-Signature");
    // No secret: nothing can be verified.
    refused("", signed_headers(good, ts), hook_body, hook_ts, "no MusicAPI webhook secret");
}

}  // namespace

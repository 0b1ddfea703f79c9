// MusicGPT transforms: the fixtures in tests/fixtures/musicgpt/ (the seed documents' exact
// payloads, the numbered byId shapes with each status spelling, each error body style) replayed
// through the pure transforms, plus the request builders.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <filesystem>
#include <fstream>
#include <optional>
#include <set>
#include <sstream>
#include <string>
#include <vector>

#include "providers/musicgpt/transform.hpp"

namespace mg = segue::providers::musicgpt;
namespace core = segue::core;
using segue::providers::update;
using kind = segue::providers::update::kind;
using core::error_class;
using core::output_status;

namespace {

const std::string fixture_dir = std::string(SEGUE_SOURCE_DIR) + "/tests/fixtures/musicgpt/";

std::string load(const std::string& name) {
    std::ifstream in(fixture_dir + name, std::ios::binary);
    EXPECT_TRUE(in) << "missing fixture " << name;
    std::ostringstream s;
    s << in.rdbuf();
    return s.str();
}

// The attempt states a submit answer leaves behind.
const std::string state_two =
    R"({"task_id":"task-extend-789","conversion_id_1":"extend-a1b2","conversion_id_2":"extend-c3d4","eta":38,"credit_estimate":42})";
// The same conversions in the other order: outputs follow the ids, not the position.
const std::string state_swapped =
    R"({"task_id":"task-extend-789","conversion_id_1":"extend-c3d4","conversion_id_2":"extend-a1b2"})";
const std::string state_one = R"({"task_id":"task-extend-790","conversion_id_1":"extend-e5f6"})";

const std::string a1b2_mp3 = "https://lalals.s3.amazonaws.com/conversions/extend-a1b2.mp3";
const std::string a1b2_wav = "https://lalals.s3.amazonaws.com/conversions/extend-a1b2.wav";
const std::string c3d4_mp3 = "https://lalals.s3.amazonaws.com/conversions/extend-c3d4.mp3";
const std::string c3d4_wav = "https://lalals.s3.amazonaws.com/conversions/extend-c3d4.wav";
const std::string cover_789 =
    "https://musicgpt.s3.amazonaws.com/img-gen-pipeline/task-extend-789.png";

struct expected_output {
    int index = 1;
    output_status status = output_status::ready;
    std::string mp3_url;
    std::string wav_url;
    std::optional<double> duration;
    std::optional<std::string> title;
    std::optional<std::string> lyrics;
    std::optional<std::size_t> lyric_lines;  // nullopt: lyrics_timestamped not set
    bool flagged = false;
    std::string flag_reason;
    std::string error_contains;  // failed outputs
};

struct expectation {
    std::optional<kind> what;  // webhook: nullopt means "refused" (parse_webhook -> nullopt)
    error_class error = error_class::none;
    std::string error_code;
    std::string message_contains;  // error_message, or the webhook refusal text
    bool too_early = false;        // a webhook refusal: it names ids the attempt has not learned
    std::optional<std::int64_t> retry_after_ms;
    std::optional<std::int64_t> poll_after_ms;
    std::string provider_task_id;
    std::string cover_url;
    std::vector<expected_output> outputs;
    std::size_t warnings = 0;
};

enum class transform { submit, webhook, by_id };

struct fixture_case {
    std::string name;
    std::string file;
    transform via = transform::submit;
    int status = 200;
    mg::header_list headers;
    std::string state;
    expectation expect;
};

expected_output ready(int index, std::string mp3, std::string wav, std::optional<double> dur,
                      std::optional<std::string> title) {
    expected_output o;
    o.index = index;
    o.mp3_url = std::move(mp3);
    o.wav_url = std::move(wav);
    o.duration = dur;
    o.title = std::move(title);
    return o;
}

expected_output failed_output(int index, std::string contains) {
    expected_output o;
    o.index = index;
    o.status = output_status::failed;
    o.error_contains = std::move(contains);
    return o;
}

expectation failure(error_class cls, std::string code, std::string contains) {
    expectation e;
    e.what = kind::failed;
    e.error = cls;
    e.error_code = std::move(code);
    e.message_contains = std::move(contains);
    return e;
}

std::vector<fixture_case> cases() {
    std::vector<fixture_case> c;
    auto add = [&](std::string name, std::string file, transform via, int status, std::string state,
                   expectation e, mg::header_list headers = {}) {
        c.push_back({std::move(name), std::move(file), via, status, std::move(headers),
                     std::move(state), std::move(e)});
    };

    // --- submit answers ---
    {
        expectation e;
        e.what = kind::accepted;
        e.provider_task_id = "task-extend-789";
        e.poll_after_ms = 38000;
        add("submit_seed", "submit_ok_seed.json", transform::submit, 200, "", e);
        e.provider_task_id = "task-extend-790";
        add("submit_one_output", "submit_ok_one_output.json", transform::submit, 200, "", e);
    }
    add("submit_402", "submit_402_insufficient_funds.json", transform::submit, 402, "",
        failure(error_class::quota, "insufficient_funds", "INSUFFICIENT FUNDS"));
    add("submit_200_insufficient_funds", "submit_402_insufficient_funds.json", transform::submit,
        200, "", failure(error_class::quota, "insufficient_funds", "INSUFFICIENT FUNDS"));
    add("submit_403_insufficient_funds", "submit_402_insufficient_funds.json", transform::submit,
        403, "", failure(error_class::quota, "insufficient_funds", "INSUFFICIENT FUNDS"));
    add("submit_401_error", "submit_401_error.json", transform::submit, 401, "",
        failure(error_class::credential, "upstream_unauthorized", "Invalid API key"));
    add("submit_401_detail", "submit_401_detail.json", transform::submit, 401, "",
        failure(error_class::credential, "upstream_unauthorized", "Upgrade Plans"));
    add("submit_403_message", "submit_403_message.json", transform::submit, 403, "",
        failure(error_class::credential, "upstream_forbidden", "Forbidden"));
    add("submit_422_missing", "submit_422_missing_extend_after.json", transform::submit, 422, "",
        failure(error_class::rejected, "upstream_rejected", "body.extend_after: field required"));
    add("submit_422_two_errors", "submit_422_two_errors.json", transform::submit, 422, "",
        failure(error_class::rejected, "upstream_rejected",
                "body.gender: value is not a valid enumeration member; permitted: 'male', "
                "'female', 'neutral'; body.lyrics: ensure this value has at most 2000 "
                "characters"));
    {
        auto e = failure(error_class::rate_limited, "upstream_rate_limited", "Too many requests");
        e.retry_after_ms = 7000;
        add("submit_429_body", "submit_429_retry_after.json", transform::submit, 429, "", e);
        // The body's retry_after wins over the header.
        add("submit_429_body_and_header", "submit_429_retry_after.json", transform::submit, 429, "",
            e, {{"retry-after", "12"}});
        auto h = failure(error_class::rate_limited, "upstream_rate_limited", "Rate limit exceeded");
        h.retry_after_ms = 12000;
        add("submit_429_header", "submit_429_error.json", transform::submit, 429, "", h,
            {{"Retry-After", "12"}});
        h.retry_after_ms = 1500;
        add("submit_429_header_decimal", "submit_429_error.json", transform::submit, 429, "", h,
            {{"retry-after", "1.5"}});
    }
    add("submit_500", "submit_500_detail.json", transform::submit, 500, "",
        failure(error_class::transient, "upstream_unavailable", "Internal Server Error"));
    add("submit_502_not_json", "submit_malformed.json", transform::submit, 502, "",
        failure(error_class::transient, "upstream_unavailable", "HTTP 502"));
    add("submit_200_success_false", "submit_200_success_false.json", transform::submit, 200, "",
        failure(error_class::rejected, "upstream_refused", "Audio file could not be processed"));
    add("submit_200_malformed", "submit_malformed.json", transform::submit, 200, "",
        failure(error_class::transient, "malformed_response", "not a JSON object"));

    // --- webhooks ---
    {
        expectation e;
        e.what = kind::progress;
        e.provider_task_id = "task-extend-789";
        auto o = ready(1, a1b2_mp3, a1b2_wav, 192.12, "Outro Symphony");
        o.lyrics = "Let the journey fade away";
        e.outputs = {o};
        add("webhook_audio_seed", "webhook_audio_seed.json", transform::webhook, 200, state_two, e);
        e.outputs[0].index = 2;
        add("webhook_audio_seed_matched_by_id", "webhook_audio_seed.json", transform::webhook, 200,
            state_swapped, e);
    }
    {
        expectation e;
        e.what = kind::progress;
        e.provider_task_id = "task-extend-789";
        auto o = ready(2, c3d4_mp3, c3d4_wav, 187.5, "Outro Symphony");
        o.lyrics = "Let the journey fade away";
        o.lyric_lines = 2;
        e.outputs = {o};
        add("webhook_audio_second", "webhook_audio_second.json", transform::webhook, 200, state_two,
            e);
    }
    {
        expectation e;
        e.what = kind::progress;
        e.provider_task_id = "task-extend-789";
        e.outputs = {failed_output(2, "Generation failed")};
        add("webhook_audio_failed", "webhook_audio_failed.json", transform::webhook, 200, state_two,
            e);
        e.outputs = {failed_output(1, "Audio could not be decoded")};
        add("webhook_audio_status_failed", "webhook_audio_status_failed.json", transform::webhook,
            200, state_two, e);
    }
    {
        expectation e;
        e.what = kind::progress;
        e.provider_task_id = "task-extend-789";
        auto o = ready(1, a1b2_mp3, a1b2_wav, 192.12, "Outro Symphony");
        o.lyrics = "Let the journey fade away";
        o.flagged = true;
        o.flag_reason = "Copyrighted lyrics detected";
        e.outputs = {o};
        add("webhook_audio_flagged", "webhook_audio_flagged.json", transform::webhook, 200,
            state_two, e);
    }
    {
        expectation e;
        e.what = kind::progress;
        e.provider_task_id = "task-extend-789";
        expected_output o;
        o.index = 2;
        o.status = output_status::pending;
        o.lyric_lines = 2;
        e.outputs = {o};
        add("webhook_lyrics", "webhook_lyrics_timestamped.json", transform::webhook, 200, state_two,
            e);
    }
    {
        expectation e;
        e.what = kind::progress;
        e.provider_task_id = "task-extend-789";
        e.cover_url = cover_789;
        add("webhook_cover", "webhook_cover.json", transform::webhook, 200, state_two, e);
        e.cover_url.clear();
        e.warnings = 1;
        add("webhook_cover_failed", "webhook_cover_failed.json", transform::webhook, 200, state_two,
            e);
    }
    {
        expectation e;
        e.what = kind::progress;
        e.provider_task_id = "task-extend-790";
        e.outputs = {ready(1, "https://lalals.s3.amazonaws.com/conversions/extend-e5f6.mp3", "",
                           std::nullopt, "Sunrise")};
        add("webhook_generic_sample_one_output", "webhook_generic_sample.json", transform::webhook,
            200, state_one, e);
    }
    auto refused = [](std::string contains) {
        expectation e;
        e.message_contains = std::move(contains);
        return e;
    };
    add("webhook_unknown_conversion", "webhook_unknown_conversion.json", transform::webhook, 200,
        state_two, refused("unknown conversion_id 'extend-zzzz'"));
    add("webhook_other_task", "webhook_other_task.json", transform::webhook, 200, state_two,
        refused("task-extend-000"));
    add("webhook_malformed", "webhook_malformed.json", transform::webhook, 200, state_two,
        refused("not a JSON object"));
    add("webhook_lyrics_malformed", "webhook_lyrics_malformed.json", transform::webhook, 200,
        state_two, refused("unreadable lyrics_timestamped"));
    {
        // Before the submit's answer is recorded the attempt knows no conversion: not a wrong
        // payload but an early one (the engine reads the attempt again before refusing it).
        auto e = refused("unknown conversion_id");
        e.too_early = true;
        add("webhook_audio_without_state", "webhook_audio_seed.json", transform::webhook, 200, "",
            e);
    }

    // --- byId ---
    for (const auto& [file, spelling] : std::vector<std::pair<std::string, std::string>>{
             {"by_id_in_queue.json", "IN_QUEUE"},
             {"by_id_pending.json", "PENDING"},
             {"by_id_processing.json", "PROCESSING"}}) {
        expectation e;
        e.what = kind::running;
        e.provider_task_id = "task-extend-789";
        add("by_id_" + spelling, file, transform::by_id, 200, state_two, e);
    }
    {
        expectation e;
        e.what = kind::done;
        e.provider_task_id = "task-extend-789";
        e.cover_url = cover_789;
        auto o1 = ready(1, a1b2_mp3, a1b2_wav, 209.84, "Outro Symphony");
        o1.lyrics = "Let the journey fade away";
        o1.lyric_lines = 1;
        auto o2 = ready(2, c3d4_mp3, c3d4_wav, 232.99, "Outro Symphony II");
        o2.lyrics = "Let the journey fade away";
        e.outputs = {o1, o2};
        add("by_id_COMPLETED", "by_id_completed.json", transform::by_id, 200, state_two, e);
        // Matched by conversion id: c3d4 is output 1 in this state.
        o2.index = 1;
        o1.index = 2;
        e.outputs = {o2, o1};
        add("by_id_COMPLETED_matched_by_id", "by_id_completed.json", transform::by_id, 200,
            state_swapped, e);
    }
    {
        expectation e;
        e.what = kind::done;
        e.provider_task_id = "task-extend-789";
        auto o1 = ready(1, a1b2_mp3, a1b2_wav, 209.84, "Outro Symphony");
        o1.lyrics = "Let the journey fade away";
        e.outputs = {o1, failed_output(2, "without audio")};
        add("by_id_COMPLETED_one_missing", "by_id_completed_one_missing.json", transform::by_id,
            200, state_two, e);
    }
    {
        expectation e;
        e.what = kind::done;
        e.provider_task_id = "task-extend-790";
        auto o = ready(1, "https://lalals.s3.amazonaws.com/conversions/extend-e5f6.mp3", "",
                       std::nullopt, "Sunrise");
        o.lyrics = "Here comes the sun";
        e.outputs = {o};
        add("by_id_documented_single", "by_id_documented_single.json", transform::by_id, 200,
            state_one, e);
    }
    auto poll_failure = [](error_class cls, std::string code, std::string contains) {
        auto e = failure(cls, std::move(code), std::move(contains));
        e.provider_task_id = "task-extend-789";
        return e;
    };
    add("by_id_FAILED", "by_id_failed.json", transform::by_id, 200, state_two,
        poll_failure(error_class::rejected, "upstream_failed", "Audio could not be processed"));
    add("by_id_ERROR", "by_id_error.json", transform::by_id, 200, state_two,
        poll_failure(error_class::unknown, "upstream_error", "Internal pipeline error"));
    add("by_id_unknown_status", "by_id_unknown_status.json", transform::by_id, 200, state_two,
        poll_failure(error_class::unknown, "unknown_upstream_status", "'ON_HOLD'"));
    add("by_id_404", "by_id_404_error.json", transform::by_id, 404, state_two,
        poll_failure(error_class::rejected, "upstream_task_not_found", "Conversion not found"));
    add("by_id_401", "submit_401_error.json", transform::by_id, 401, state_two,
        poll_failure(error_class::credential, "upstream_unauthorized", "Invalid API key"));
    {
        expectation e;
        e.what = kind::running;
        e.provider_task_id = "task-extend-789";
        e.error = error_class::transient;
        e.error_code = "poll_unavailable";
        e.message_contains = "Internal Server Error";
        add("by_id_500", "by_id_500_detail.json", transform::by_id, 500, state_two, e);
        e.error = error_class::rate_limited;
        e.error_code = "poll_rate_limited";
        e.message_contains = "Too many requests";
        e.retry_after_ms = 2000;
        e.poll_after_ms = 2000;
        add("by_id_429", "by_id_429_message.json", transform::by_id, 429, state_two, e);
        e.error = error_class::transient;
        e.error_code = "malformed_poll_response";
        e.message_contains = "not a JSON object";
        e.retry_after_ms.reset();
        e.poll_after_ms.reset();
        add("by_id_200_malformed", "submit_malformed.json", transform::by_id, 200, state_two, e);
    }
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
        ASSERT_EQ(got.lyrics_timestamped.has_value(), want.lyric_lines.has_value());
        if (want.lyric_lines)
            EXPECT_EQ(got.lyrics_timestamped->size(), *want.lyric_lines);
        EXPECT_EQ(got.flagged, want.flagged);
        EXPECT_EQ(got.flag_reason, want.flag_reason);
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

class MusicGptFixture : public ::testing::TestWithParam<fixture_case> {};

TEST_P(MusicGptFixture, ReplaysToExpectedUpdate) {
    const auto& c = GetParam();
    const std::string body = load(c.file);
    std::optional<update> got;
    std::string refusal;
    bool too_early = false;
    switch (c.via) {
        case transform::submit:
            got = mg::parse_submit_response(c.status, body, c.headers);
            break;
        case transform::webhook:
            got = mg::parse_webhook(c.state, body, refusal, &too_early);
            break;
        case transform::by_id:
            got = mg::parse_by_id(c.state, c.status, body, c.headers);
            break;
    }
    const auto& e = c.expect;
    if (!e.what) {
        ASSERT_FALSE(got) << "expected the webhook to be refused";
        EXPECT_NE(refusal.find(e.message_contains), std::string::npos) << refusal;
        EXPECT_EQ(too_early, e.too_early) << refusal;
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
    check_outputs(u, e);
}

INSTANTIATE_TEST_SUITE_P(MusicGpt, MusicGptFixture, ::testing::ValuesIn(cases()),
                         [](const ::testing::TestParamInfo<fixture_case>& info) {
                             return info.param.name;
                         });

// Every fixture file is replayed by some case (no dead fixtures).
TEST(MusicGptFixtures, EveryFixtureIsReplayed) {
    std::set<std::string> used;
    for (const auto& c : cases())
        used.insert(c.file);
    std::size_t files = 0;
    for (const auto& entry : std::filesystem::directory_iterator(fixture_dir)) {
        ++files;
        EXPECT_TRUE(used.count(entry.path().filename().string()))
            << entry.path().filename() << " is not replayed";
    }
    EXPECT_GT(files, 30u);
}

TEST(MusicGptTransform, AcceptedStateCarriesConversionIdsAndEstimates) {
    auto u = mg::parse_submit_response(200, load("submit_ok_seed.json"), {});
    ASSERT_EQ(u.what, kind::accepted);
    auto st = mg::parse_state(u.state_json);
    EXPECT_EQ(st.task_id, "task-extend-789");
    EXPECT_EQ(st.conversion_ids, (std::vector<std::string>{"extend-a1b2", "extend-c3d4"}));
    EXPECT_EQ(st.eta_seconds, 38);
    EXPECT_EQ(st.credit_estimate, 42);
    EXPECT_EQ(mg::output_index(st, "extend-c3d4"), 2);
    EXPECT_EQ(mg::output_index(st, "nope"), 0);
    // The persisted form is exactly what the lead's provider stores.
    EXPECT_EQ(
        u.state_json,
        R"({"task_id":"task-extend-789","conversion_id_1":"extend-a1b2","conversion_id_2":"extend-c3d4","eta":38,"credit_estimate":42})");

    auto one = mg::parse_submit_response(200, load("submit_ok_one_output.json"), {});
    auto st1 = mg::parse_state(one.state_json);
    EXPECT_EQ(st1.conversion_ids, (std::vector<std::string>{"extend-e5f6"}));
    EXPECT_EQ(one.state_json.find("conversion_id_2"), std::string::npos);
}

TEST(MusicGptTransform, TimestampedLyricsAreMilliseconds) {
    std::string err;
    auto u = mg::parse_webhook(state_two, load("webhook_lyrics_timestamped.json"), err);
    ASSERT_TRUE(u) << err;
    ASSERT_EQ(u->outputs.size(), 1u);
    const auto& lines = *u->outputs[0].lyrics_timestamped;
    ASSERT_EQ(lines.size(), 2u);
    EXPECT_EQ(lines[0].text, "[Verse 1]");
    EXPECT_EQ(lines[0].start_ms, 8173);
    EXPECT_EQ(lines[0].end_ms, 8173);
    EXPECT_EQ(lines[1].text, "Let the journey fade away");
    EXPECT_EQ(lines[1].start_ms, 8173);
    EXPECT_EQ(lines[1].end_ms, 11920);
    // Nothing else is claimed about the output: it stays pending, with no audio.
    EXPECT_EQ(u->outputs[0].status, output_status::pending);
    EXPECT_TRUE(u->outputs[0].mp3_url.empty());
    EXPECT_FALSE(u->outputs[0].title);

    // The array form works as well as the string form.
    auto direct = mg::parse_lyrics_timestamped(R"([{"text":"a","start":1.4,"end":"2000"}])");
    ASSERT_TRUE(direct);
    EXPECT_EQ((*direct)[0].start_ms, 1);
    EXPECT_EQ((*direct)[0].end_ms, 2000);
    EXPECT_FALSE(mg::parse_lyrics_timestamped(R"({"text":"a"})"));
    EXPECT_FALSE(mg::parse_lyrics_timestamped(R"([{"text":"a"}])"));
    EXPECT_TRUE(mg::parse_lyrics_timestamped("[]")->empty());
}

TEST(MusicGptTransform, DuplicateWebhooksGiveTheSameUpdate) {
    // MusicGPT retries deliveries; the engine moves an output out of pending once, so the
    // transform only has to be deterministic.
    std::string e1, e2;
    auto a = mg::parse_webhook(state_two, load("webhook_audio_seed.json"), e1);
    auto b = mg::parse_webhook(state_two, load("webhook_audio_seed.json"), e2);
    ASSERT_TRUE(a && b);
    EXPECT_EQ(a->outputs[0].index, b->outputs[0].index);
    EXPECT_EQ(a->outputs[0].mp3_url, b->outputs[0].mp3_url);
}

// A webhook that names a conversion while the attempt knows none (its submit's answer is not
// recorded) is too early, and says which MusicGPT task it belongs to: the engine records that
// task for the attempt if the answer never comes. A webhook the attempt can place names none.
TEST(MusicGptTransform, ATooEarlyWebhookNamesItsUpstreamTask) {
    std::string err;
    bool early = false;
    std::string upstream;
    EXPECT_FALSE(mg::parse_webhook("", load("webhook_audio_seed.json"), err, &early, &upstream));
    EXPECT_TRUE(early) << err;
    EXPECT_EQ(upstream, "task-extend-789");
    early = false;
    upstream.clear();
    EXPECT_TRUE(
        mg::parse_webhook(state_two, load("webhook_audio_seed.json"), err, &early, &upstream));
    EXPECT_FALSE(early);
    EXPECT_EQ(upstream, "");
}

// A too-early lyrics webhook names no MusicGPT task, only its conversion: the attempt's state
// with that conversion is what the engine records, and a byId poll of that state asks by it.
// A webhook that names the task gives none: the task is what polls ask by.
TEST(MusicGptTransform, ATooEarlyWebhookThatNamesNoTaskGivesAConversionToLookItUpBy) {
    const std::string body = load("webhook_lyrics_timestamped.json");
    const auto conversion = boost::json::parse(body).as_object().at("conversion_id").as_string();
    std::string err, upstream, with;
    bool early = false;
    EXPECT_FALSE(mg::parse_webhook("", body, err, &early, &upstream, &with));
    EXPECT_TRUE(early) << err;
    EXPECT_EQ(upstream, "");
    const auto st = mg::parse_state(with);
    EXPECT_EQ(st.lookup_conversion_id, conversion);
    EXPECT_TRUE(st.task_id.empty());
    EXPECT_EQ(mg::parse_state(mg::state_to_json(st)).lookup_conversion_id, conversion);
    with.clear();
    EXPECT_FALSE(
        mg::parse_webhook("", load("webhook_audio_seed.json"), err, &early, &upstream, &with));
    EXPECT_EQ(with, "");
}

core::extend_request base_request() {
    core::extend_request r;
    r.extend_after = 35.5;
    r.prompt = "Add a calming piano outro";
    r.lyrics = "Let the journey fade away";
    r.lyrics_section_to_extend = "And the \"night\" begins\nagain";
    r.gender = "neutral";
    r.num_outputs = 2;
    r.webhook_url = "https://tenant.example/hook";  // the tenant's: never sent upstream
    r.metadata_json = R"({"k":"v"})";
    return r;
}

TEST(MusicGptTransform, BuildSubmitUrlSourceIsJson) {
    auto r = base_request();
    r.source = core::source_kind::url;
    r.audio_url = "https://files.example/song.mp3";
    auto s = mg::build_submit(r, "https://gw.example/v1/providers/musicgpt/webhooks/tok123");
    ASSERT_EQ(s.kind, mg::submit_request::body_kind::json);
    EXPECT_EQ(
        s.json_body,
        R"({"audio_url":"https://files.example/song.mp3","extend_after":35.5,)"
        R"("prompt":"Add a calming piano outro","lyrics":"Let the journey fade away",)"
        R"("lyrics_section_to_extend":"And the \"night\" begins\nagain","gender":"neutral",)"
        R"("num_outputs":2,"webhook_url":"https://gw.example/v1/providers/musicgpt/webhooks/tok123"})");
    EXPECT_NO_THROW((void)boost::json::parse(s.json_body));
    EXPECT_TRUE(s.fields.empty());
    EXPECT_TRUE(s.warnings.empty());
    EXPECT_EQ(s.json_body.find("tenant.example"), std::string::npos);
    EXPECT_EQ(s.json_body.find("metadata"), std::string::npos);
}

TEST(MusicGptTransform, BuildSubmitOmitsAbsentOptionals) {
    core::extend_request r;
    r.source = core::source_kind::url;
    r.audio_url = "https://files.example/song.wav";
    r.extend_after = 12;
    r.num_outputs = 1;
    auto s = mg::build_submit(r, "");
    ASSERT_EQ(s.kind, mg::submit_request::body_kind::json);
    EXPECT_EQ(
        s.json_body,
        R"({"audio_url":"https://files.example/song.wav","extend_after":12,"num_outputs":1})");

    r.source = core::source_kind::file;
    r.audio_filename = "";
    auto m = mg::build_submit(r, "");
    ASSERT_EQ(m.kind, mg::submit_request::body_kind::multipart);
    ASSERT_EQ(m.fields.size(), 2u);
    EXPECT_EQ(m.fields[0].name, "extend_after");
    EXPECT_EQ(m.fields[0].value, "12");
    EXPECT_EQ(m.fields[1].name, "num_outputs");
    EXPECT_EQ(m.fields[1].value, "1");
    EXPECT_EQ(m.file_name, "audio");
    EXPECT_EQ(m.file_content_type, "application/octet-stream");
}

TEST(MusicGptTransform, BuildSubmitFileSourceIsMultipart) {
    auto r = base_request();
    r.source = core::source_kind::file;
    r.audio_filename = "My \"Song\".MP3";
    auto s = mg::build_submit(r, "https://gw.example/hook/t");
    ASSERT_EQ(s.kind, mg::submit_request::body_kind::multipart);
    std::vector<std::pair<std::string, std::string>> got;
    for (const auto& f : s.fields)
        got.emplace_back(f.name, f.value);
    EXPECT_EQ(got, (std::vector<std::pair<std::string, std::string>>{
                       {"extend_after", "35.5"},
                       {"prompt", "Add a calming piano outro"},
                       {"lyrics", "Let the journey fade away"},
                       {"lyrics_section_to_extend", "And the \"night\" begins\nagain"},
                       {"gender", "neutral"},
                       {"num_outputs", "2"},
                       {"webhook_url", "https://gw.example/hook/t"},
                   }));
    EXPECT_EQ(s.file_field, "audio_file");
    EXPECT_EQ(s.file_name, "My _Song_.MP3");
    EXPECT_EQ(s.file_content_type, "audio/mpeg");
    EXPECT_TRUE(s.json_body.empty());
}

TEST(MusicGptTransform, BuildSubmitRefusesClipsAndWarnsAboutLength) {
    auto r = base_request();
    r.source = core::source_kind::clip;
    r.clip_provider = "musicapi";
    r.clip_id = "abc";
    auto s = mg::build_submit(r, "");
    EXPECT_EQ(s.kind, mg::submit_request::body_kind::none);
    EXPECT_EQ(s.error_code, "unsupported_source");
    EXPECT_FALSE(s.error.empty());

    r.source = core::source_kind::url;
    r.audio_url = "https://files.example/a.mp3";
    r.length = 30;
    auto w = mg::build_submit(r, "");
    EXPECT_EQ(w.kind, mg::submit_request::body_kind::json);
    ASSERT_EQ(w.warnings.size(), 1u);
    EXPECT_NE(w.warnings[0].find("length"), std::string::npos);
    EXPECT_EQ(w.json_body.find("length"), std::string::npos);
}

TEST(MusicGptTransform, ClassifiesHttpStatuses) {
    EXPECT_EQ(mg::classify_http(200), error_class::none);
    EXPECT_EQ(mg::classify_http(202), error_class::none);
    EXPECT_EQ(mg::classify_http(400), error_class::rejected);
    EXPECT_EQ(mg::classify_http(401), error_class::credential);
    EXPECT_EQ(mg::classify_http(402), error_class::quota);
    EXPECT_EQ(mg::classify_http(403), error_class::credential);
    EXPECT_EQ(mg::classify_http(404), error_class::rejected);
    EXPECT_EQ(mg::classify_http(408), error_class::transient);
    EXPECT_EQ(mg::classify_http(409), error_class::rejected);
    EXPECT_EQ(mg::classify_http(422), error_class::rejected);
    EXPECT_EQ(mg::classify_http(429), error_class::rate_limited);
    EXPECT_EQ(mg::classify_http(500), error_class::transient);
    EXPECT_EQ(mg::classify_http(503), error_class::transient);
    EXPECT_EQ(mg::classify_http(0), error_class::unknown);
    EXPECT_EQ(mg::classify_http(302), error_class::unknown);
}

TEST(MusicGptTransform, RetryAfterForms) {
    EXPECT_EQ(mg::retry_after_ms("3"), 3000);
    EXPECT_EQ(mg::retry_after_ms(" 0.25 "), 250);
    EXPECT_EQ(mg::retry_after_ms(""), std::nullopt);
    EXPECT_EQ(mg::retry_after_ms("soon"), std::nullopt);
    EXPECT_EQ(mg::retry_after_ms("-1"), std::nullopt);
    // 1994-11-06T08:49:37Z is 784111777 s.
    EXPECT_EQ(mg::retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111777000 - 5000), 5000);
    EXPECT_EQ(mg::retry_after_ms("Sun, 06 Nov 1994 08:49:37 GMT", 784111777000 + 5000), 0);
}

TEST(MusicGptTransform, ErrorTextOfEachBodyStyle) {
    EXPECT_EQ(mg::error_text(R"({"detail":"Not authenticated"})"), "Not authenticated");
    EXPECT_EQ(mg::error_text(load("submit_422_missing_extend_after.json")),
              "body.extend_after: field required");
    EXPECT_EQ(mg::error_text(R"({"success":false,"message":"INSUFFICIENT FUNDS"})"),
              "INSUFFICIENT FUNDS");
    EXPECT_EQ(mg::error_text(R"({"error":"Invalid API key"})"), "Invalid API key");
    EXPECT_EQ(mg::error_text(R"({"error":{"message":"nested"}})"), "nested");
    EXPECT_EQ(mg::error_text("<html>Bad Gateway</html>"), "<html>Bad Gateway</html>");
    EXPECT_EQ(mg::error_text(""), "");
}

TEST(MusicGptTransform, ByIdTargets) {
    EXPECT_EQ(mg::by_id_target("task-extend-789"),
              "/v1/byId?conversionType=EXTEND&task_id=task-extend-789");
    EXPECT_EQ(mg::by_id_target_for_conversion("a b&c"),
              "/v1/byId?conversionType=EXTEND&conversion_id=a%20b%26c");
    EXPECT_EQ(mg::authorization_value("sk-123"), "sk-123");
}

TEST(MusicGptTransform, ByIdWithoutKnownIdsFallsBackToPosition) {
    // An attempt whose submit answer was lost (reconciled by task id) has no conversion ids.
    auto u = mg::parse_by_id(R"({"task_id":"task-extend-789"})", 200, load("by_id_completed.json"));
    EXPECT_EQ(u.what, kind::done);
    ASSERT_EQ(u.outputs.size(), 2u);
    EXPECT_EQ(u.outputs[0].index, 1);
    EXPECT_EQ(u.outputs[0].mp3_url, a1b2_mp3);
    EXPECT_EQ(u.outputs[1].mp3_url, c3d4_mp3);
}

TEST(MusicGptTransform, UnknownStatusIsNeverQueued) {
    for (std::string s : {"QUEUED_FOREVER", "", "completed_ish", "DONE"}) {
        std::string body =
            R"({"success":true,"conversion":{"task_id":"t","status":")" + s + R"("}})";
        auto u = mg::parse_by_id(state_two, 200, body);
        EXPECT_EQ(u.what, kind::failed) << s;
        EXPECT_EQ(u.error, error_class::unknown) << s;
        EXPECT_EQ(u.error_code, "unknown_upstream_status") << s;
    }
}

}  // namespace

// The extend journey against the real binary and the sandbox provider: upload, events (JSON
// and SSE), outputs downloaded and checked with libsndfile, validation, idempotency, tenants,
// cancel, and a restart in the middle of a task.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sndfile.h>
#include <sys/socket.h>
#include <sys/statvfs.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <algorithm>
#include <atomic>
#include <chrono>
#include <cmath>
#include <filesystem>
#include <functional>
#include <future>
#include <iostream>
#include <map>
#include <mutex>
#include <set>
#include <thread>

#include "gateway/audio/audio.hpp"
#include "gateway/store/store.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
using segue::test::form_part;
using segue::test::http_connection;
using segue::test::http_request;
using segue::test::http_response;
using segue::test::segue_process;

namespace {

const std::string key_a = "Authorization: Bearer sk-tenant-a";
const std::string key_b = "Authorization: Bearer sk-tenant-b";
const std::string boundary = "segue-test-boundary-7d3f";

std::string config_for(const std::string& dir, const std::string& extra = "",
                       const std::string& sandbox_delay = "100ms") {
    return "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n  drain_timeout: 5s\n"
           "log:\n  level: info\n"
           "tenants:\n"
           "  - name: a\n    api_keys: [sk-tenant-a]\n"
           // tenant b's key given as its SHA-256
           "  - name: b\n    api_keys: "
           "[\"sha256:2ee2fc626331c5f5659d7006fa212eaff5082b2532da2e9cd0cb99436ccc3502\"]\n" +
           segue::test::storage_yaml(dir) +
           "engine:\n  poll_interval: 100ms\n  lease: 2s\n"
           "providers:\n  sandbox:\n    delay: " +
           sandbox_delay + "\n" + extra;
}

struct song {
    std::string bytes;
    double seconds;
};

song make_song(const segue::test::temp_dir& d, const std::string& format, double seconds,
               int rate = 44100, int channels = 2) {
    const std::string path = d.file("input." + format);
    EXPECT_TRUE(segue::audio::write_test_song(path, seconds, rate, channels, 120, format));
    return {segue::test::read_file(path), seconds};
}

std::optional<http_response> post_form(std::uint16_t port, const std::vector<form_part>& parts,
                                       std::vector<std::string> headers) {
    headers.push_back("Content-Type: multipart/form-data; boundary=" + boundary);
    return http_request(port, "POST", "/v1/extensions",
                        segue::test::multipart_body(parts, boundary), headers);
}

std::optional<http_response> post_json(std::uint16_t port, const std::string& body,
                                       std::vector<std::string> headers) {
    headers.push_back("Content-Type: application/json");
    return http_request(port, "POST", "/v1/extensions", body, headers);
}

// POST /v1/extensions of a clip source, as tenant A.
std::optional<http_response> post_clip(std::uint16_t port, const std::string& provider,
                                       const std::string& clip_id, int extend_after) {
    return post_json(port,
                     R"({"clip":{"provider":")" + provider + R"(","id":")" + clip_id +
                         R"("},"extend_after":)" + std::to_string(extend_after) + "}",
                     {key_a});
}

json::object parse(const std::string& s) {
    return json::parse(s).as_object();
}

json::object wait_final(std::uint16_t port, const std::string& id, const std::string& key,
                        std::chrono::seconds limit = 60s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    json::object t;
    while (std::chrono::steady_clock::now() < until) {
        auto r = http_request(port, "GET", "/v1/extensions/" + id, "", {key});
        if (r && r->status == 200) {
            t = parse(r->body);
            std::string st(t["status"].as_string());
            if (st == "succeeded" || st == "failed" || st == "partially_succeeded" ||
                st == "canceled")
                return t;
        }
        std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "task " << id << " did not finish: " << json::serialize(t);
    return t;
}

// A 2 s extension (extend_after 2) of `song` with `outputs` outputs, run to its end: the final
// task (a test failure unless it succeeded).
json::object extend_to_success(std::uint16_t port, const std::string& song, int outputs) {
    auto r = post_form(port,
                       {{"audio_file", song, "s.wav"},
                        {"extend_after", "2"},
                        {"length", "2"},
                        {"num_outputs", std::to_string(outputs)}},
                       {key_a});
    EXPECT_TRUE(r && r->status == 202) << (r ? r->body : "no answer");
    if (!r || r->status != 202)
        return {};
    auto t = wait_final(port, std::string(parse(r->body)["id"].as_string()), key_a);
    EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
    return t;
}

std::vector<json::object> events_of(std::uint16_t port, const std::string& id,
                                    const std::string& key) {
    auto r = http_request(port, "GET", "/v1/extensions/" + id + "/events?limit=1000", "", {key});
    std::vector<json::object> out;
    if (!r || r->status != 200)
        return out;
    auto body = parse(r->body);  // range-for would not extend a temporary's life
    for (auto& e : body["data"].as_array())
        out.push_back(e.as_object());
    return out;
}

struct sf_audio {
    int rate = 0, channels = 0;
    sf_count_t frames = 0;
    std::vector<short> samples;
};

sf_audio read_audio(const std::string& path) {
    sf_audio a;
    SF_INFO info{};
    SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
    if (!f)
        return a;
    a.rate = info.samplerate;
    a.channels = info.channels;
    a.frames = info.frames;
    a.samples.resize(static_cast<std::size_t>(info.frames * info.channels));
    sf_readf_short(f, a.samples.data(), info.frames);
    sf_close(f);
    return a;
}

double seconds_of(const sf_audio& a) {
    return a.rate ? double(a.frames) / a.rate : 0;
}

std::string file_id_from_url(const std::string& url) {
    return url.substr(url.rfind('/') + 1);
}

}  // namespace

TEST(Extend, FullJourneyWavUploadSseAndDownloads) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    auto input = make_song(d, "wav", 20);
    auto r = post_form(s.port(),
                       {{"audio_file", input.bytes, "song.wav", "audio/wav"},
                        {"extend_after", "8"},
                        {"length", "6"},
                        {"num_outputs", "2"},
                        {"prompt", "warm analog synth outro"},
                        {"lyrics", "first line\nsecond line\nthird line"},
                        {"gender", "female"},
                        {"metadata", R"({"order":"42"})"}},
                       {key_a});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    auto task = parse(r->body);
    const std::string id(task["id"].as_string());
    EXPECT_EQ(r->header("location").value_or(""), "/v1/extensions/" + id);
    EXPECT_EQ(task["status"], "queued");
    EXPECT_EQ(task["request"].as_object()["source"].as_object()["type"], "file");

    // Live events over SSE until the final one: the stream closes itself.
    http_connection sse(s.port(), 60s);
    auto stream = sse.request("GET", "/v1/extensions/" + id + "/events", "",
                              {key_a, "Accept: text/event-stream"});
    ASSERT_TRUE(stream);
    EXPECT_EQ(stream->status, 200);
    EXPECT_EQ(stream->header("content-type").value_or(""), "text/event-stream");
    const auto& text = stream->body;
    EXPECT_NE(text.find("event: extension.queued"), std::string::npos) << text;
    EXPECT_NE(text.find("event: extension.submitted"), std::string::npos) << text;
    EXPECT_NE(text.find("event: extension.output.ready"), std::string::npos) << text;
    EXPECT_NE(text.find("event: extension.lyrics.ready"), std::string::npos) << text;
    EXPECT_NE(text.find("event: extension.cover.ready"), std::string::npos) << text;
    EXPECT_NE(text.find("event: extension.succeeded"), std::string::npos) << text;
    EXPECT_NE(text.find("\"order\":\"42\""), std::string::npos) << "metadata echoed in events";

    auto done = wait_final(s.port(), id, key_a);
    ASSERT_EQ(done["status"], "succeeded") << json::serialize(done);
    EXPECT_NE(json::serialize(done["warnings"]).find("prompt is not used"), std::string::npos);
    auto& outputs = done["outputs"].as_array();
    ASSERT_EQ(outputs.size(), 2u);

    auto in = read_audio(d.file("input.wav"));
    std::vector<std::vector<short>> continuations;
    for (auto& ov : outputs) {
        auto& o = ov.as_object();
        EXPECT_EQ(o["status"], "ready");
        EXPECT_FALSE(std::string(o["title"].as_string()).empty());
        EXPECT_NE(std::string(o["method"].as_string()).find("not AI"), std::string::npos);
        EXPECT_EQ(o["lyrics_timestamped"].as_array().size(), 3u);
        auto& line = o["lyrics_timestamped"].as_array()[0].as_object();
        EXPECT_EQ(line["text"], "first line");
        EXPECT_EQ(line["start_ms"].to_number<std::int64_t>(), 8000);
        auto& audio = o["audio"].as_object();
        for (auto kind : {"wav_url", "mp3_url"}) {
            auto url = std::string(audio[kind].as_string());
            auto f =
                http_request(s.port(), "GET", "/v1/files/" + file_id_from_url(url), "", {key_a});
            ASSERT_TRUE(f);
            ASSERT_EQ(f->status, 200);
            // Files are the tenant's own.
            auto other =
                http_request(s.port(), "GET", "/v1/files/" + file_id_from_url(url), "", {key_b});
            ASSERT_TRUE(other);
            EXPECT_EQ(other->status, 404);
            const std::string local = d.write(file_id_from_url(url), f->body);
            auto out = read_audio(local);
            ASSERT_GT(out.frames, 0) << kind;
            EXPECT_NEAR(seconds_of(out), 14.0, 0.1) << kind;
            if (std::string(kind) == "wav_url") {
                EXPECT_EQ(f->header("content-type").value_or(""), "audio/wav");
                ASSERT_EQ(out.channels, in.channels);
                ASSERT_EQ(out.rate, in.rate);
                const std::size_t prefix = static_cast<std::size_t>(8 * in.rate) * in.channels;
                ASSERT_GE(out.samples.size(), prefix);
                EXPECT_TRUE(std::equal(in.samples.begin(), in.samples.begin() + prefix,
                                       out.samples.begin()))
                    << "the first extend_after seconds are the input's samples";
                continuations.emplace_back(out.samples.begin() + prefix, out.samples.end());
            } else {
                EXPECT_EQ(f->header("content-type").value_or(""), "audio/mpeg");
            }
        }
    }
    ASSERT_EQ(continuations.size(), 2u);
    EXPECT_NE(continuations[0], continuations[1]) << "two outputs, two different continuations";

    // The event log: consecutive sequence numbers, one output.ready per output.
    auto evs = events_of(s.port(), id, key_a);
    ASSERT_FALSE(evs.empty());
    int ready = 0;
    for (std::size_t i = 0; i < evs.size(); ++i) {
        EXPECT_EQ(evs[i]["seq"].to_number<std::int64_t>(), static_cast<std::int64_t>(i + 1));
        if (evs[i]["type"] == "extension.output.ready")
            ++ready;
    }
    EXPECT_EQ(ready, 2);
    EXPECT_EQ(evs.front()["type"], "extension.queued");
    EXPECT_EQ(evs.back()["type"], "extension.succeeded");
}

TEST(Extend, Mp3UploadWithOneOutput) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    auto input = make_song(d, "mp3", 12);
    auto r = post_form(s.port(),
                       {{"audio_file", input.bytes, "song.mp3", "audio/mpeg"},
                        {"starts_at", "5.5"},
                        {"length", "4"},
                        {"num_outputs", "1"}},
                       {key_a});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    auto id = std::string(parse(r->body)["id"].as_string());
    auto done = wait_final(s.port(), id, key_a);
    ASSERT_EQ(done["status"], "succeeded");
    ASSERT_EQ(done["outputs"].as_array().size(), 1u);
    auto& audio = done["outputs"].as_array()[0].as_object()["audio"].as_object();
    auto f = http_request(
        s.port(), "GET", "/v1/files/" + file_id_from_url(std::string(audio["wav_url"].as_string())),
        "", {key_a});
    ASSERT_TRUE(f);
    auto out = read_audio(d.write("out.wav", f->body));
    EXPECT_NEAR(seconds_of(out), 9.5, 0.1);
}

TEST(Extend, AuthIsRequired) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    auto none = post_json(s.port(), R"({"audio_url":"https://x.test/a.mp3","extend_after":1})", {});
    ASSERT_TRUE(none);
    EXPECT_EQ(none->status, 401);
    EXPECT_EQ(none->header("content-type").value_or(""), "application/problem+json");
    auto wrong =
        http_request(s.port(), "GET", "/v1/extensions", "", {"Authorization: Bearer nope"});
    ASSERT_TRUE(wrong);
    EXPECT_EQ(wrong->status, 401);
    auto basic = http_request(s.port(), "GET", "/v1/extensions", "", {"Authorization: Basic c2s="});
    ASSERT_TRUE(basic);
    EXPECT_EQ(basic->status, 401);
    auto ok = http_request(s.port(), "GET", "/v1/extensions", "", {key_b});
    ASSERT_TRUE(ok);
    EXPECT_EQ(ok->status, 200);
}

TEST(Extend, ValidationNamesEveryBadFieldAndCreatesNothing) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path(), "api:\n  max_upload_bytes: 1MiB\n"));
    auto song = make_song(d, "wav", 6, 22050, 1);
    struct bad_case {
        std::string name;
        std::function<std::optional<http_response>()> send;
        int status;
        std::vector<std::string> fields;
    };
    auto json_case = [&](std::string body) {
        return [&, body] { return post_json(s.port(), body, {key_a}); };
    };
    auto form_case = [&](std::vector<form_part> parts) {
        return [&, parts] { return post_form(s.port(), parts, {key_a}); };
    };
    std::vector<bad_case> cases{
        {"missing extend_after",
         form_case({{"audio_file", song.bytes, "s.wav"}}),
         422,
         {"extend_after"}},
        {"no source", json_case(R"({"extend_after":1})"), 422, {"audio_file"}},
        {"two sources",
         form_case({{"audio_file", song.bytes, "s.wav"},
                    {"audio_url", "https://x.test/a.mp3"},
                    {"extend_after", "1"}}),
         422,
         {"audio_file"}},
        {"wrong gender",
         json_case(R"({"audio_url":"https://x.test/a.mp3","extend_after":1,"gender":"robot"})"),
         422,
         {"gender"}},
        {"num_outputs 3",
         json_case(R"({"audio_url":"https://x.test/a.mp3","extend_after":1,"num_outputs":3})"),
         422,
         {"num_outputs"}},
        {"lyrics too long",
         json_case(R"({"audio_url":"https://x.test/a.mp3","extend_after":1,"lyrics":")" +
                   std::string(2001, 'l') + R"("})"),
         422,
         {"lyrics"}},
        {"section too long",
         json_case(
             R"({"audio_url":"https://x.test/a.mp3","extend_after":1,"lyrics_section_to_extend":")" +
             std::string(3001, 's') + R"("})"),
         422,
         {"lyrics_section_to_extend"}},
        {"negative numbers",
         json_case(R"({"audio_url":"https://x.test/a.mp3","extend_after":-1,"length":-3})"),
         422,
         {"extend_after", "length"}},
        {"bad urls",
         json_case(
             R"({"audio_url":"ftp://x.test/a.mp3","extend_after":1,"webhook_url":"not a url"})"),
         422,
         {"audio_url", "webhook_url"}},
        {"unknown provider",
         json_case(R"({"audio_url":"https://x.test/a.mp3","extend_after":1,"provider":"nope"})"),
         422,
         {"provider"}},
        {"wrong types",
         json_case(
             R"({"audio_url":"https://x.test/a.mp3","extend_after":"soon","prompt":5,"metadata":[1]})"),
         422,
         {"extend_after", "prompt", "metadata"}},
        {"unknown field",
         json_case(R"({"audio_url":"https://x.test/a.mp3","extend_after":1,"colour":"red"})"),
         422,
         {"colour"}},
        {"clip source unsupported by sandbox",
         json_case(R"({"clip":{"provider":"sandbox","id":"c1"},"extend_after":1})"),
         422,
         {"clip"}},
        {"not audio",
         form_case({{"audio_file", std::string(5000, 'x'), "s.wav"}, {"extend_after", "1"}}),
         422,
         {"audio_file"}},
        {"extend_after beyond the song",
         form_case({{"audio_file", song.bytes, "s.wav"}, {"extend_after", "60"}}),
         422,
         {"extend_after"}},
        {"upload too large",
         form_case(
             {{"audio_file", std::string(2 * 1024 * 1024, 'x'), "s.wav"}, {"extend_after", "1"}}),
         413,
         {}},
        {"malformed json", json_case(R"({"extend_after":)"), 400, {}},
        {"json not an object", json_case(R"([1,2])"), 400, {}},
        {"json field given twice",
         json_case(R"({"audio_url":"https://a.example/a.mp3","extend_after":8,"extend_after":9})"),
         400,
         {"extend_after"}},
        {"form field given twice",
         form_case(
             {{"audio_file", song.bytes, "s.wav"}, {"extend_after", "1"}, {"extend_after", "2"}}),
         400,
         {"extend_after"}},
        {"a file in a text field",
         form_case({{"audio_file", song.bytes, "s.wav"},
                    {"extend_after", "1"},
                    {"prompt", "drums", "p.txt"}}),
         400,
         {"prompt"}},
        {"a text field over 64 KiB",
         form_case({{"audio_file", song.bytes, "s.wav"},
                    {"extend_after", "1"},
                    {"lyrics", std::string(65537, 'x')}}),
         400,
         {"lyrics"}},
        {"multipart without a boundary",
         [&] {
             return http_request(s.port(), "POST", "/v1/extensions", "--x\r\n",
                                 {key_a, "Content-Type: multipart/form-data"});
         },
         400,
         {}},
        {"multipart with an empty boundary",
         [&] {
             return http_request(s.port(), "POST", "/v1/extensions", "--x\r\n",
                                 {key_a, "Content-Type: multipart/form-data; boundary="});
         },
         400,
         {}},
    };
    for (auto& c : cases) {
        auto r = c.send();
        ASSERT_TRUE(r) << c.name;
        EXPECT_EQ(r->status, c.status) << c.name << ": " << r->body;
        EXPECT_EQ(r->header("content-type").value_or(""), "application/problem+json") << c.name;
        for (const auto& f : c.fields)
            EXPECT_NE(r->body.find("\"field\":\"" + f + "\""), std::string::npos)
                << c.name << " should name " << f << ": " << r->body;
    }
    // A 413 names the limit as configured (1 MiB here), whichever check refused the body: the
    // route's (the body is over the upload limit and the form's slack) or the form's.
    for (std::size_t size : {2u * 1024 * 1024, 1024u * 1024 + 10}) {
        auto big = post_form(
            s.port(), {{"audio_file", std::string(size, 'x'), "s.wav"}, {"extend_after", "1"}},
            {key_a});
        ASSERT_TRUE(big);
        EXPECT_EQ(big->status, 413) << size;
        const auto doc = parse(big->body);
        EXPECT_EQ(doc.at("detail"), "upload exceeds 1048576 bytes (api.max_upload_bytes)") << size;
        EXPECT_EQ(doc.at("instance"), "/v1/extensions") << size;
    }
    // The limit is the file's: a file of exactly 1 MiB with its fields is read (and refused
    // for what it holds, not for its size), with a Content-Length as without.
    auto at_limit = post_form(
        s.port(), {{"audio_file", std::string(1024 * 1024, 'x'), "s.wav"}, {"extend_after", "1"}},
        {key_a});
    ASSERT_TRUE(at_limit);
    EXPECT_NE(at_limit->status, 413) << at_limit->body;
    EXPECT_EQ(at_limit->status / 100, 4) << at_limit->body;
    auto text =
        http_request(s.port(), "POST", "/v1/extensions", "hi", {key_a, "Content-Type: text/plain"});
    ASSERT_TRUE(text);
    EXPECT_EQ(text->status, 415);
    // Media types are case-insensitive (RFC 9110 8.3.1): these are read, then refused as bodies.
    for (const std::string type : {"Application/JSON", "application/json; Charset=UTF-8"}) {
        auto r = http_request(s.port(), "POST", "/v1/extensions", "[1]",
                              {key_a, "Content-Type: " + type});
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 400) << type << ": " << r->body;
    }
    auto form = http_request(s.port(), "POST", "/v1/extensions", "extend_after=x",
                             {key_a, "Content-Type: Application/X-WWW-Form-Urlencoded"});
    ASSERT_TRUE(form);
    EXPECT_EQ(form->status, 422) << form->body;

    // Nothing was created, and no upload was left behind.
    auto list = http_request(s.port(), "GET", "/v1/extensions", "", {key_a});
    ASSERT_TRUE(list);
    EXPECT_EQ(parse(list->body)["data"].as_array().size(), 0u) << list->body;
    std::error_code ec;
    std::size_t spooled = 0;
    for (auto it = std::filesystem::recursive_directory_iterator(d.path() + "/blobs", ec);
         it != std::filesystem::recursive_directory_iterator(); ++it)
        if (it->is_regular_file())
            ++spooled;
    EXPECT_EQ(spooled, 0u);
}

TEST(Extend, IdempotencyReplayConflictAndConcurrency) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    auto song = make_song(d, "wav", 6, 22050, 1);
    std::vector<form_part> parts{
        {"audio_file", song.bytes, "s.wav"}, {"extend_after", "2"}, {"length", "2"}};
    auto first = post_form(s.port(), parts, {key_a, "Idempotency-Key: order-1"});
    ASSERT_TRUE(first);
    ASSERT_EQ(first->status, 202) << first->body;
    auto again = post_form(s.port(), parts, {key_a, "Idempotency-Key: order-1"});
    ASSERT_TRUE(again);
    EXPECT_EQ(again->status, 202);
    EXPECT_EQ(again->body, first->body);
    EXPECT_EQ(again->header("idempotent-replayed").value_or(""), "true");
    parts[1].value = "3";
    auto conflict = post_form(s.port(), parts, {key_a, "Idempotency-Key: order-1"});
    ASSERT_TRUE(conflict);
    EXPECT_EQ(conflict->status, 409);
    // Keys are per tenant.
    parts[1].value = "2";
    auto other = post_form(s.port(), parts, {key_b, "Idempotency-Key: order-1"});
    ASSERT_TRUE(other);
    EXPECT_EQ(other->status, 202);
    EXPECT_NE(parse(other->body)["id"], parse(first->body)["id"]);

    // Eight concurrent requests with one new key create one task.
    std::vector<std::thread> threads;
    std::vector<std::string> ids(8);
    for (int i = 0; i < 8; ++i)
        threads.emplace_back([&, i] {
            auto r = post_form(s.port(), parts, {key_a, "Idempotency-Key: burst"});
            if (r && r->status == 202)
                ids[i] = std::string(parse(r->body)["id"].as_string());
        });
    for (auto& t : threads)
        t.join();
    std::set<std::string> unique(ids.begin(), ids.end());
    EXPECT_EQ(unique.size(), 1u);
    EXPECT_FALSE(unique.begin()->empty());
    auto list = http_request(s.port(), "GET", "/v1/extensions", "", {key_a});
    ASSERT_TRUE(list);
    EXPECT_EQ(parse(list->body)["data"].as_array().size(), 2u) << list->body;
}

TEST(Extend, TenantsNeverSeeEachOther) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    auto song = make_song(d, "wav", 6, 22050, 1);
    auto r =
        post_form(s.port(), {{"audio_file", song.bytes, "s.wav"}, {"extend_after", "2"}}, {key_a});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202);
    auto id = std::string(parse(r->body)["id"].as_string());
    for (auto path : {"/v1/extensions/" + id, "/v1/extensions/" + id + "/events"}) {
        auto x = http_request(s.port(), "GET", path, "", {key_b});
        ASSERT_TRUE(x);
        EXPECT_EQ(x->status, 404) << path;
    }
    auto c = http_request(s.port(), "POST", "/v1/extensions/" + id + "/cancel", "", {key_b});
    ASSERT_TRUE(c);
    EXPECT_EQ(c->status, 404);
    auto list = http_request(s.port(), "GET", "/v1/extensions", "", {key_b});
    ASSERT_TRUE(list);
    EXPECT_EQ(parse(list->body)["data"].as_array().size(), 0u);
}

TEST(Extend, SseResumesAfterLastEventId) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    auto song = make_song(d, "wav", 6, 22050, 1);
    auto r = post_form(
        s.port(), {{"audio_file", song.bytes, "s.wav"}, {"extend_after", "2"}, {"length", "2"}},
        {key_a});
    ASSERT_TRUE(r);
    auto id = std::string(parse(r->body)["id"].as_string());
    wait_final(s.port(), id, key_a);
    auto all = events_of(s.port(), id, key_a);
    ASSERT_GE(all.size(), 4u);
    http_connection c(s.port());
    auto resumed = c.request("GET", "/v1/extensions/" + id + "/events", "",
                             {key_a, "Accept: text/event-stream", "Last-Event-ID: 2"});
    ASSERT_TRUE(resumed);
    EXPECT_EQ(resumed->body.find("id: 1\n"), std::string::npos);
    EXPECT_EQ(resumed->body.find("id: 2\n"), std::string::npos);
    EXPECT_NE(resumed->body.find("id: 3\n"), std::string::npos) << resumed->body;
    EXPECT_NE(resumed->body.find("id: " + std::to_string(all.size()) + "\n"), std::string::npos);
    // Anything but a seq is refused, not taken as "from the start": a client resuming with the
    // event's own id would otherwise get the whole log again.
    const std::string evt_id(all.back().at("id").as_string());
    for (const std::string& bad : {evt_id, std::string("-1"), std::string("abc"),
                                   std::string("3.5"), std::string("99999999999999999999")}) {
        auto refused = http_request(s.port(), "GET", "/v1/extensions/" + id + "/events", "",
                                    {key_a, "Accept: text/event-stream", "Last-Event-ID: " + bad});
        ASSERT_TRUE(refused);
        EXPECT_EQ(refused->status, 400) << bad << ": " << refused->body;
        EXPECT_NE(refused->body.find("Last-Event-ID"), std::string::npos) << refused->body;
        EXPECT_EQ(refused->body.find("id: 1\n"), std::string::npos) << refused->body;
    }
    // A seq past the task's last event was never sent by this stream: a 400, not an empty
    // stream that skips every event (Last-Event-ID, or `after` on the stream). The last event's
    // own seq is a resume with nothing left to send.
    const std::string past = std::to_string(all.size() + 1);
    auto refused = http_request(s.port(), "GET", "/v1/extensions/" + id + "/events", "",
                                {key_a, "Accept: text/event-stream", "Last-Event-ID: " + past});
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 400) << refused->body;
    EXPECT_NE(refused->body.find("\"field\":\"Last-Event-ID\""), std::string::npos)
        << refused->body;
    refused = http_request(s.port(), "GET", "/v1/extensions/" + id + "/events?after=50", "",
                           {key_a, "Accept: text/event-stream"});
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 400) << refused->body;
    EXPECT_NE(refused->body.find("\"field\":\"after\""), std::string::npos) << refused->body;
    auto at_end = http_request(
        s.port(), "GET", "/v1/extensions/" + id + "/events", "",
        {key_a, "Accept: text/event-stream", "Last-Event-ID: " + std::to_string(all.size())});
    ASSERT_TRUE(at_end);
    EXPECT_EQ(at_end->status, 200) << at_end->body;
    EXPECT_EQ(at_end->body.find("id: "), std::string::npos) << at_end->body;
    // The JSON log pages the same way.
    auto page = http_request(s.port(), "GET", "/v1/extensions/" + id + "/events?after=2&limit=1",
                             "", {key_a});
    ASSERT_TRUE(page);
    auto body = parse(page->body);
    ASSERT_EQ(body["data"].as_array().size(), 1u);
    EXPECT_EQ(body["data"].as_array()[0].as_object()["seq"].to_number<int>(), 3);
    EXPECT_EQ(body["has_more"], true);
}

TEST(Extend, CancelStopsTheTask) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path(), "", "3s"));
    auto song = make_song(d, "wav", 6, 22050, 1);
    auto r =
        post_form(s.port(), {{"audio_file", song.bytes, "s.wav"}, {"extend_after", "2"}}, {key_a});
    ASSERT_TRUE(r);
    auto id = std::string(parse(r->body)["id"].as_string());
    // The link to cancel is there while the task can be canceled, and gone once it is final.
    const auto links = [](const std::string& body) { return parse(body)["links"].as_object(); };
    EXPECT_EQ(links(r->body)["cancel"], boost::json::value("/v1/extensions/" + id + "/cancel"))
        << r->body;
    auto c = http_request(s.port(), "POST", "/v1/extensions/" + id + "/cancel", "", {key_a});
    ASSERT_TRUE(c);
    EXPECT_EQ(c->status, 200) << c->body;
    EXPECT_EQ(parse(c->body)["status"], "canceled");
    EXPECT_FALSE(links(c->body).contains("cancel")) << c->body;
    EXPECT_TRUE(links(c->body).contains("events")) << c->body;
    auto again = http_request(s.port(), "POST", "/v1/extensions/" + id + "/cancel", "", {key_a});
    ASSERT_TRUE(again);
    EXPECT_EQ(again->status, 409);
    std::this_thread::sleep_for(3500ms);  // the sandbox's delay passes: nothing more happens
    auto t = http_request(s.port(), "GET", "/v1/extensions/" + id, "", {key_a});
    EXPECT_EQ(parse(t->body)["status"], "canceled");
    auto evs = events_of(s.port(), id, key_a);
    ASSERT_FALSE(evs.empty());
    EXPECT_EQ(evs.back()["type"], "extension.canceled");
}

TEST(Extend, RestartMidTaskLosesAndDuplicatesNothing) {
    segue::test::temp_dir d;
    const std::string cfg = config_for(d.path(), "", "1500ms");
    std::string id;
    {
        segue_process s(cfg);
        auto song = make_song(d, "wav", 8, 22050, 2);
        auto r = post_form(
            s.port(), {{"audio_file", song.bytes, "s.wav"}, {"extend_after", "3"}, {"length", "3"}},
            {key_a});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 202);
        id = std::string(parse(r->body)["id"].as_string());
        // Wait until the task has been submitted, then kill the process outright.
        for (int i = 0; i < 100; ++i) {
            auto evs = events_of(s.port(), id, key_a);
            if (evs.size() >= 2)
                break;
            std::this_thread::sleep_for(50ms);
        }
        s.proc().signal(SIGKILL);
        s.proc().wait(5s);
    }
    segue_process s2(cfg);
    auto done = wait_final(s2.port(), id, key_a);
    EXPECT_EQ(done["status"], "succeeded") << json::serialize(done);
    auto evs = events_of(s2.port(), id, key_a);
    std::map<std::string, int> counts;
    for (std::size_t i = 0; i < evs.size(); ++i) {
        EXPECT_EQ(evs[i]["seq"].to_number<std::int64_t>(), static_cast<std::int64_t>(i + 1));
        counts[std::string(evs[i]["type"].as_string())]++;
    }
    EXPECT_EQ(counts["extension.queued"], 1);
    EXPECT_EQ(counts["extension.submitted"], 1);
    EXPECT_EQ(counts["extension.output.ready"], 2);
    EXPECT_EQ(counts["extension.cover.ready"], 1);
    EXPECT_EQ(counts["extension.succeeded"], 1);
}

// The create hands its submit job to the engine in memory, leased to the process: a SIGKILL
// while creates come in (so some tasks are committed, answered 202, and not yet submitted) leaves
// leases that expire; the restarted process claims them, and every accepted task is submitted
// once and succeeds, none stuck.
TEST(Extend, KillRightAfterCreatesSubmitsEachTaskOnce) {
    segue::test::temp_dir d;
    const std::string cfg = config_for(d.path(), "", "200ms");
    auto song = make_song(d, "wav", 4, 8000, 1);
    std::vector<std::string> ids;
    std::mutex mu;
    {
        segue_process s(cfg);
        std::atomic<bool> stop{false};
        std::atomic<int> accepted{0};
        std::vector<std::thread> clients;
        for (int c = 0; c < 4; ++c)
            clients.emplace_back([&] {
                while (!stop.load()) {
                    std::optional<http_response> r;
                    try {
                        r = post_form(s.port(),
                                      {{"audio_file", song.bytes, "s.wav"},
                                       {"extend_after", "1"},
                                       {"length", "1"},
                                       {"num_outputs", "1"}},
                                      {key_a});
                    } catch (const std::exception&) {
                        return;  // refused: the kill came before this connect
                    }
                    if (!r || r->status != 202)
                        return;  // the process is gone
                    std::lock_guard lock(mu);
                    ids.emplace_back(parse(r->body)["id"].as_string());
                    ++accepted;
                }
            });
        // Bounded: clients that stop early (a refusal) fail the test below, not hang it.
        const auto give_up = std::chrono::steady_clock::now() + 30s;
        while (accepted.load() < 24 && std::chrono::steady_clock::now() < give_up)
            std::this_thread::sleep_for(1ms);
        // Creates are in flight: the last ones committed have not reached the provider yet.
        s.proc().signal(SIGKILL);
        s.proc().wait(5s);
        stop = true;
        for (auto& t : clients)
            t.join();
    }
    std::lock_guard lock(mu);
    ASSERT_GE(ids.size(), 24u) << "the creates before the kill were refused";
    if (!segue::test::testing_postgres()) {
        // How many accepted tasks the kill caught before their submit's answer (no attempt yet,
        // or attempt 1's intent only: the create writes it when it hands the job off).
        auto st = segue::store::open_sqlite({.path = d.path() + "/segue.db"});
        std::promise<int> unsubmitted;
        st->submit_read(
            [&](segue::store::transaction& tx) {
                int n = 0;
                for (const auto& id : ids) {
                    const auto atts = tx.get_attempts(id);
                    n += atts.empty() || atts.back().status == "submitting" ? 1 : 0;
                }
                unsubmitted.set_value(n);
            },
            [](std::exception_ptr) {});
        std::cout << "[handoff] " << ids.size() << " tasks accepted before the kill, "
                  << unsubmitted.get_future().get() << " not yet submitted\n";
        st->close();
    }
    segue_process s2(cfg);
    for (const auto& id : ids) {
        auto done = wait_final(s2.port(), id, key_a);
        EXPECT_EQ(done["status"], "succeeded") << id << " " << json::serialize(done);
        std::map<std::string, int> counts;
        for (auto& e : events_of(s2.port(), id, key_a))
            counts[std::string(e["type"].as_string())]++;
        EXPECT_EQ(counts["extension.queued"], 1) << id;
        EXPECT_EQ(counts["extension.submitted"], 1) << id;
        EXPECT_EQ(counts["extension.succeeded"], 1) << id;
    }
}

TEST(Extend, MetricsCountTasks) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    auto song = make_song(d, "wav", 6, 22050, 1);
    auto r = post_form(s.port(),
                       {{"audio_file", song.bytes, "s.wav"},
                        {"extend_after", "2"},
                        {"length", "2"},
                        {"num_outputs", "1"}},
                       {key_a});
    ASSERT_TRUE(r);
    wait_final(s.port(), std::string(parse(r->body)["id"].as_string()), key_a);
    auto m = http_request(s.port(), "GET", "/metrics");
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find(R"(segue_tasks_created_total{provider="sandbox"} 1)"),
              std::string::npos);
    EXPECT_NE(
        m->body.find(R"(segue_tasks_finished_total{provider="sandbox",status="succeeded"} 1)"),
        std::string::npos)
        << m->body;
    EXPECT_NE(m->body.find("segue_task_duration_seconds_bucket"), std::string::npos);
    EXPECT_NE(m->body.find("segue_store_operation_duration_seconds_bucket"), std::string::npos);
    EXPECT_NE(m->body.find("segue_upload_bytes_total"), std::string::npos);
    // The store's own counters: the task's writes committed; on SQLite (durable) they were
    // synced too. Each engine exposes its own series and not the other's.
    const double commits = segue::test::metric_value(m->body, "segue_store_commits_total");
    EXPECT_GT(commits, 0) << m->body;
    EXPECT_GE(segue::test::metric_value(m->body, "segue_store_units_total"), commits);
    if (segue::test::testing_postgres()) {
        EXPECT_GE(segue::test::metric_value(m->body, "segue_store_conflicts_total"), 0);
        EXPECT_EQ(segue::test::metric_value(m->body, "segue_store_syncs_total"), -1);
    } else {
        EXPECT_GT(segue::test::metric_value(m->body, "segue_store_syncs_total"), 0);
        EXPECT_GT(segue::test::metric_value(m->body, "segue_store_wal_pages"), 0);
        EXPECT_GE(segue::test::metric_value(m->body, "segue_store_checkpoints_total"), 0);
        EXPECT_EQ(segue::test::metric_value(m->body, "segue_store_conflicts_total"), -1);
    }
    auto [code, out] = segue::test::run_command({"promtool", "check", "metrics"}, m->body);
    EXPECT_EQ(code, 0) << out;
}

TEST(Extend, UnknownProviderWebhookTokenChangesNothing) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    auto r = http_request(s.port(), "POST", "/v1/providers/sandbox/webhooks/cb_forged", "{}",
                          {"Content-Type: application/json"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    EXPECT_EQ(r->body.find("cb_forged"), std::string::npos) << "the token is not echoed";
    auto m = http_request(s.port(), "GET", "/metrics");
    EXPECT_NE(
        m->body.find(
            R"(segue_provider_webhooks_total{provider="sandbox",kind="unknown",outcome="unknown_token"} 1)"),
        std::string::npos);
}

namespace {
// Serves `body` to every GET on 127.0.0.1:<port>, counting requests, until destroyed; the first
// `fail_first` requests get a 503 instead.
class static_server {
  public:
    explicit static_server(std::string body, int fail_first = 0)
        : body_(std::move(body)), fail_first_(fail_first) {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        int one = 1;
        ::setsockopt(fd_, SOL_SOCKET, SO_REUSEADDR, &one, sizeof one);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        ::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a);
        socklen_t len = sizeof a;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        ::listen(fd_, 16);
        thread_ = std::thread([this] {
            for (;;) {
                int c = ::accept(fd_, nullptr, nullptr);
                if (c < 0)
                    return;
                const int n_hit = ++hits;
                char buf[4096];
                std::string req;
                while (req.find("\r\n\r\n") == std::string::npos) {
                    auto n = ::recv(c, buf, sizeof buf, 0);
                    if (n <= 0)
                        break;
                    req.append(buf, static_cast<std::size_t>(n));
                }
                if (n_hit <= fail_first_) {
                    const std::string busy =
                        "HTTP/1.1 503 Service Unavailable\r\nContent-Length: "
                        "0\r\nConnection: close\r\n\r\n";
                    ::send(c, busy.data(), busy.size(), MSG_NOSIGNAL);
                    ::close(c);
                    continue;
                }
                std::string head =
                    "HTTP/1.1 200 OK\r\nContent-Type: audio/wav\r\nContent-Length: " +
                    std::to_string(body_.size()) + "\r\nConnection: close\r\n\r\n";
                ::send(c, head.data(), head.size(), MSG_NOSIGNAL);
                ::send(c, body_.data(), body_.size(), MSG_NOSIGNAL);
                ::close(c);
            }
        });
    }
    ~static_server() {
        ::shutdown(fd_, SHUT_RDWR);
        ::close(fd_);
        thread_.join();
    }
    std::uint16_t port() const { return port_; }
    std::atomic<int> hits{0};

  private:
    std::string body_;
    int fail_first_ = 0;
    int fd_ = -1;
    std::uint16_t port_ = 0;
    std::thread thread_;
};
}  // namespace

// The sandbox fetches an audio_url before it takes the task: a source host that answers 503 at
// first is a failed submit, retried as such (retry.transient), and the task succeeds. It used
// to take the task first and fail it at the first 503, with no retry. The host's failures are
// not the sandbox's: its circuit (here opened by two failures in a row) stays closed.
TEST(Extend, ASourceHostThatFailsAtFirstIsAskedAgainBeforeTheSandboxTakesTheTask) {
    segue::test::temp_dir d;
    auto song = make_song(d, "wav", 8, 22050, 1);
    static_server files(song.bytes, 2);  // 503, 503, then the song
    const std::string url = "http://127.0.0.1:" + std::to_string(files.port()) + "/song.wav";
    segue_process s(config_for(d.path(),
                               "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"
                               "retry:\n  transient: {initial: 50ms, max: 100ms}\n"
                               "breakers:\n  consecutive_failures: 2\n"));
    auto r = post_json(
        s.port(), R"({"audio_url":")" + url + R"(","extend_after":3,"length":2,"num_outputs":1})",
        {key_a});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    const std::string id(parse(r->body)["id"].as_string());
    auto t = wait_final(s.port(), id, key_a);
    EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
    EXPECT_EQ(files.hits.load(), 3);
    const auto& attempts = t["attempts"].as_array();
    ASSERT_EQ(attempts.size(), 3u) << json::serialize(attempts);
    for (int i = 0; i < 2; ++i) {
        EXPECT_EQ(attempts[i].at("status"), "failed");
        EXPECT_EQ(attempts[i].at("error").at("code"), "audio_url_unavailable");
    }
    EXPECT_EQ(attempts[2].at("status"), "succeeded");
    auto p = http_request(s.port(), "GET", "/v1/providers", "", {key_a});
    ASSERT_TRUE(p);
    EXPECT_NE(p->body.find(R"("healthy":true)"), std::string::npos) << p->body;
}

// An audio_url is checked as an upload is, once the sandbox has fetched it: extend_after past
// its end (or audio it cannot decode) fails the task at once, class rejected, code
// unprocessable_audio, saying why; not each output in turn as "no outputs". No credits stay held
// and the sandbox's circuit does not count it.
TEST(Extend, AUrlSourceShorterThanExtendAfterFailsSayingSo) {
    segue::test::temp_dir d;
    auto song = make_song(d, "wav", 4, 22050, 1);
    static_server files(song.bytes);
    const std::string url = "http://127.0.0.1:" + std::to_string(files.port()) + "/song.wav";
    segue_process s(
        config_for(d.path(), "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"));
    auto r = post_json(
        s.port(), R"({"audio_url":")" + url + R"(","extend_after":6,"length":2,"num_outputs":2})",
        {key_a});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    const std::string id(parse(r->body)["id"].as_string());
    auto t = wait_final(s.port(), id, key_a);
    EXPECT_EQ(t["status"], "failed") << json::serialize(t);
    EXPECT_EQ(t["error"].at("code"), "unprocessable_audio") << json::serialize(t["error"]);
    EXPECT_EQ(t["error"].at("class"), "rejected") << json::serialize(t["error"]);
    EXPECT_NE(json::serialize(t["error"])
                  .find("extend_after (6.000 s) is beyond the end of the song (4.000 s)"),
              std::string::npos)
        << json::serialize(t["error"]);
    EXPECT_EQ(t["attempts"].as_array().size(), 1u) << "rejected: not retried";
    EXPECT_EQ(files.hits.load(), 1);
    auto p = http_request(s.port(), "GET", "/v1/providers", "", {key_a});
    ASSERT_TRUE(p);
    EXPECT_NE(p->body.find(R"("healthy":true)"), std::string::npos) << p->body;
}

TEST(Extend, UrlSourceIsFetchedThroughTheGuard) {
    segue::test::temp_dir d;
    auto song = make_song(d, "wav", 8, 22050, 1);
    static_server files(song.bytes);
    const std::string url = "http://127.0.0.1:" + std::to_string(files.port()) + "/song.wav";
    const std::string body =
        R"({"audio_url":")" + url + R"(","extend_after":3,"length":2,"num_outputs":1})";
    {
        // Without an allow-list, loopback is refused at submit (422 naming the field), and a
        // port outside fetch.allowed_ports too; no connection is made.
        segue_process s(config_for(d.path() + "/a", "fetch:\n  allowed_ports: []\n"));
        auto r = post_json(s.port(), body, {key_a});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 422) << r->body;
        EXPECT_NE(r->body.find("audio_url"), std::string::npos) << r->body;
        EXPECT_NE(r->body.find("loopback"), std::string::npos) << r->body;
        segue_process s2(config_for(d.path() + "/c", "fetch:\n  allow_cidrs: [127.0.0.1/32]\n"));
        r = post_json(s2.port(), body, {key_a});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 422) << r->body;  // the default allowed_ports are 80 and 443
        EXPECT_NE(r->body.find("port"), std::string::npos) << r->body;
        EXPECT_EQ(files.hits.load(), 0) << "no connection was made";
    }
    {
        segue_process s(config_for(d.path() + "/b",
                                   "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"));
        auto r = post_json(s.port(), body, {key_a});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 202) << r->body;
        auto t = wait_final(s.port(), std::string(parse(r->body)["id"].as_string()), key_a);
        EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
        EXPECT_EQ(files.hits.load(), 1);

        // Past the end of the 8 s song: only the fetch can tell, so it is accepted, and the
        // task's error says why it failed, not only that it did (see also
        // AUrlSourceShorterThanExtendAfterFailsSayingSo).
        std::string past = body;
        past.replace(past.find("\"extend_after\":3"), 16, "\"extend_after\":20");
        r = post_json(s.port(), past, {key_a});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 202) << r->body;
        t = wait_final(s.port(), std::string(parse(r->body)["id"].as_string()), key_a);
        EXPECT_EQ(t["status"], "failed") << json::serialize(t);
        const auto& e = t["error"].as_object();
        EXPECT_EQ(e.at("code"), "unprocessable_audio") << json::serialize(e);
        EXPECT_NE(std::string(e.at("message").as_string()).find("extend_after (20"),
                  std::string::npos)
            << json::serialize(e);
        // Its one attempt made nothing: failed, with the same reason.
        const auto& attempts = t["attempts"].as_array();
        ASSERT_EQ(attempts.size(), 1u) << json::serialize(t);
        EXPECT_EQ(attempts[0].at("status"), "failed") << json::serialize(attempts[0]);
        EXPECT_EQ(attempts[0].at("error").at("code"), "unprocessable_audio")
            << json::serialize(attempts[0]);
    }
}

// Files as a browser (or curl) uses them, through the binary: the signed link of every file a
// task has (wav, mp3, cover, the source) fetched by curl with no API key, by range; the disk
// metrics; then retention deletes the task and its files, which answer 410.
// The disk gauges measure what they say: the volume under blob_dir, the configured floor, the
// bytes and files Segue holds (an upload and each output's files), the database's size.
TEST(Extend, DiskMetricsMeasureTheVolumeTheFilesAndTheDatabase) {
    segue::test::temp_dir d;
    std::string config = config_for(d.path());
    const std::string storage = "storage:\n";
    config.replace(config.find(storage), storage.size(),
                   storage + "  disk_check_interval: 100ms\n  min_free_bytes: 1234567\n");
    segue_process s(config);
    auto song = make_song(d, "wav", 4, 22050, 1);
    auto t = extend_to_success(s.port(), song.bytes, 2);
    ASSERT_EQ(t["status"], "succeeded");

    // Every file the task holds, by its size as served.
    std::vector<std::string> urls{"/v1/files/" +
                                  std::string(t["request"].at("source").at("file_id").as_string())};
    for (const auto& o : t["outputs"].as_array()) {
        const auto& out = o.as_object();
        for (const char* f : {"wav_url", "mp3_url"})
            urls.emplace_back(out.at("audio").at(f).as_string());
        if (const auto* c = out.if_contains("cover_url"); c && c->is_string())
            urls.emplace_back(c->as_string());
    }
    // Outputs may share a file (the sandbox gives both outputs one cover): each counts once.
    std::sort(urls.begin(), urls.end());
    urls.erase(std::unique(urls.begin(), urls.end()), urls.end());
    double bytes = 0;
    for (const auto& u : urls) {
        auto f = http_request(s.port(), "GET", u.substr(u.find("/v1/files/")), "", {key_a});
        ASSERT_TRUE(f);
        ASSERT_EQ(f->status, 200) << u;
        bytes += static_cast<double>(f->body.size());
    }

    // Sampled every 100 ms: wait for a sample taken after the outputs were stored.
    std::string m;
    for (int i = 0; i < 100; ++i) {
        m = http_request(s.port(), "GET", "/metrics")->body;
        if (segue::test::metric_value(m, "segue_blob_files") == static_cast<double>(urls.size()))
            break;
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(segue::test::metric_value(m, "segue_blob_files"), static_cast<double>(urls.size()))
        << m;
    EXPECT_EQ(segue::test::metric_value(m, "segue_blob_bytes"), bytes);
    EXPECT_EQ(segue::test::metric_value(m, "segue_disk_min_free_bytes"), 1234567);
    struct statvfs v {};
    ASSERT_EQ(::statvfs(d.path().c_str(), &v), 0);
    const double available = static_cast<double>(v.f_bavail) * static_cast<double>(v.f_frsize);
    const double free_bytes = segue::test::metric_value(m, "segue_disk_free_bytes");
    EXPECT_GT(free_bytes, 0);
    // Other tests write to the same volume meanwhile: within 256 MiB of what statvfs says now.
    EXPECT_NEAR(free_bytes, available, 256.0 * 1024 * 1024);
    if (!segue::test::testing_postgres()) {
        // SQLite: the database file and its WAL (at least the file).
        EXPECT_GE(segue::test::metric_value(m, "segue_database_bytes"),
                  static_cast<double>(std::filesystem::file_size(d.file("segue.db"))));
    } else {
        EXPECT_GT(segue::test::metric_value(m, "segue_database_bytes"), 0);
    }
}

// Without api.url_signing_key the gateway makes a key once and keeps it in the store: signed
// links handed out before a restart (task JSON's, and a week-long one from /links) still play.
TEST(Extend, SignedLinksOutliveARestartWithoutAConfiguredKey) {
    segue::test::temp_dir d;
    const std::string cfg = config_for(d.path());
    ASSERT_EQ(cfg.find("url_signing_key"), std::string::npos);
    auto song = make_song(d, "wav", 4, 8000, 1);
    std::vector<std::string> links;
    {
        segue_process s(cfg);
        auto t = extend_to_success(s.port(), song.bytes, 1);
        ASSERT_EQ(t["status"], "succeeded");
        const auto& audio = t["outputs"].as_array()[0].at("audio").as_object();
        links.emplace_back(audio.at("wav_signed_url").as_string());
        const std::string file_id(t["request"].at("source").at("file_id").as_string());
        auto l =
            http_request(s.port(), "POST", "/v1/files/" + file_id + "/links",
                         R"({"expires_in":604800})", {key_a, "Content-Type: application/json"});
        ASSERT_TRUE(l);
        ASSERT_EQ(l->status, 201) << l->body;
        links.emplace_back(parse(l->body)["url"].as_string());
        for (const auto& u : links)
            EXPECT_EQ(http_request(s.port(), "GET", u)->status, 200) << u;
    }
    segue_process again(cfg);
    for (const auto& u : links) {
        auto r = http_request(again.port(), "GET", u);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 200) << u << ": " << r->body;
    }
}

TEST(Extend, FilesPlayWithoutAKeyByRangeOnEveryFormatThenExpire) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path(),
                               "retention:\n  interval: 200ms\n  outputs: 10s\n  uploads: 10s\n"
                               "  tasks: 10s\n  tombstones: 0s\n"));
    auto song = make_song(d, "wav", 6, 22050, 1);
    auto t = extend_to_success(s.port(), song.bytes, 1);
    ASSERT_EQ(t["status"], "succeeded");
    const std::string id(t["id"].as_string());
    const auto& out = t["outputs"].as_array()[0].as_object();
    const auto& audio = out.at("audio").as_object();
    const auto& source = t["request"].at("source").as_object();
    const std::string base = "http://127.0.0.1:" + std::to_string(s.port());
    struct file {
        std::string what, signed_url, type;
    };
    std::vector<file> files{
        {"wav", std::string(audio.at("wav_signed_url").as_string()), "audio/wav"},
        {"mp3", std::string(audio.at("mp3_signed_url").as_string()), "audio/mpeg"},
        {"source", std::string(source.at("signed_url").as_string()), "audio/wav"}};
    if (out.contains("cover_signed_url"))
        files.push_back({"cover", std::string(out.at("cover_signed_url").as_string()), "image/"});
    for (const auto& f : files) {
        // curl, as a browser's <audio> would: no Authorization, a range.
        auto [code, got] = segue::test::run_command(
            {"curl", "-s", "-o", "/dev/null", "-r", "0-99", "-w",
             "%{http_code} %{size_download} %{content_type}", base + f.signed_url});
        EXPECT_EQ(code, 0) << f.what;
        EXPECT_EQ(got.substr(0, 8), "206 100 ") << f.what << ": " << got;
        EXPECT_NE(got.find(f.type), std::string::npos) << f.what << ": " << got;
        auto [code2, whole] = segue::test::run_command(
            {"curl", "-s", "-o", "/dev/null", "-w", "%{http_code}", base + f.signed_url});
        EXPECT_EQ(whole, "200") << f.what;
    }
    // The disk metrics are there (sampled at start and every 10 s by default).
    auto m = http_request(s.port(), "GET", "/metrics");
    ASSERT_TRUE(m);
    for (const char* name : {"segue_disk_free_bytes ", "segue_disk_min_free_bytes ",
                             "segue_blob_bytes ", "segue_database_bytes "})
        EXPECT_NE(m->body.find(name), std::string::npos) << name;

    // Ten seconds after the task finished, the reaper takes it, and its files answer 410.
    const auto until = std::chrono::steady_clock::now() + 30s;
    int status = 200;
    while (status == 200 && std::chrono::steady_clock::now() < until) {
        std::this_thread::sleep_for(200ms);
        status = http_request(s.port(), "GET", "/v1/extensions/" + id, "", {key_a})->status;
    }
    EXPECT_EQ(status, 404);
    for (const auto& f : files) {
        auto gone = http_request(s.port(), "GET", f.signed_url);
        ASSERT_TRUE(gone);
        EXPECT_EQ(gone->status, 410) << f.what;
        EXPECT_EQ(parse(gone->body)["code"], "file_expired") << f.what;
    }
}

// A clip naming one of the tenant's own outputs: an index no output has is "no such output"
// (never sent to a provider as one of its own clips), and extend_after past the output's end
// is refused with the other fields, as for an upload.
TEST(Extend, AClipOfOurOwnOutputIsCheckedBeforeAnythingIsSent) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path(),
                               "api:\n  public_base_url: http://127.0.0.1:9\n"
                               "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"));
    auto song = make_song(d, "wav", 4, 22050, 1);
    auto t = extend_to_success(s.port(), song.bytes, 1);
    ASSERT_EQ(t["status"], "succeeded");
    const std::string id(t["id"].as_string());
    // The fields' errors, and the problem's code under "#code".
    auto refused = [&](const std::string& clip_id, const std::string& after,
                       const std::string& more = "") {
        auto r = http_request(s.port(), "POST", "/v1/extensions",
                              R"({"clip":{"provider":"sandbox","id":")" + clip_id + "\"" + more +
                                  R"(},"extend_after":)" + after + "}",
                              {key_a, "Content-Type: application/json"});
        EXPECT_TRUE(r);
        std::map<std::string, std::string> errors;
        if (!r)
            return errors;
        EXPECT_EQ(r->status, 422) << r->body;
        const auto doc = parse(r->body);  // a range-for over a temporary's member would dangle
        if (const auto* list = doc.if_contains("errors"); list && list->is_array())
            for (const auto& e : list->as_array())
                errors[std::string(e.at("field").as_string())] = e.at("message").as_string();
        if (const auto* code = doc.if_contains("code"); code && code->is_string())
            errors["#code"] = code->as_string();
        return errors;
    };
    for (const char* n : {"-0", "-99999999999999999999", "-7"}) {
        auto e = refused(id + n, "1");
        EXPECT_EQ(e["clip.id"], "no such output") << n;
    }
    auto past = refused(id + "-1", "100");
    EXPECT_NE(past["extend_after"].find("beyond the end of the clip"), std::string::npos)
        << past["extend_after"];
    EXPECT_EQ(past["#code"], "unprocessable_audio") << "as an upload's extend_after past its end";
    EXPECT_EQ(past.size(), 2u);
    // With another field wrong, both are named.
    auto both = refused(id + "-1", "100", R"(,"x":1)");
    EXPECT_EQ(both["#code"], "validation_failed");
    EXPECT_EQ(both["clip.x"], "unknown field");
    // A field the clip does not have is refused, whether or not its id names an output.
    auto extra = refused(id + "-1", "1", R"(,"x":1)");
    EXPECT_EQ(extra["clip.x"], "unknown field");
    EXPECT_EQ(extra.count("clip.id"), 0u);
    EXPECT_EQ(extra.count("clip"), 0u) << extra["clip"];
    // With another source beside it, it is not rewritten into a URL that replaces that one.
    auto two = http_request(s.port(), "POST", "/v1/extensions",
                            R"({"clip":{"provider":"sandbox","id":")" + id +
                                R"(-1"},"extend_after":1,"audio_url":"not a url"})",
                            {key_a, "Content-Type: application/json"});
    ASSERT_TRUE(two);
    EXPECT_EQ(two->status, 422) << two->body;
    EXPECT_NE(two->body.find("exactly one source"), std::string::npos) << two->body;
    auto extra_bad = refused(id + "-7", "1", R"(,"x":1)");
    EXPECT_EQ(extra_bad["clip.x"], "unknown field");
    EXPECT_EQ(extra_bad["clip.id"], "no such output");
    // Not also that the sandbox takes no clips: an output of ours goes to it as its audio.
    EXPECT_EQ(extra_bad.count("clip"), 0u) << extra_bad["clip"];
    EXPECT_EQ(refused(id + "-7", "1").count("clip"), 0u);
    // Its clip.provider does not matter either: not a provider's clip.
    auto r = post_clip(s.port(), "nosuch", id + "-7", 1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422) << r->body;
    EXPECT_EQ(r->body.find("clip.provider"), std::string::npos) << r->body;
    EXPECT_NE(r->body.find("no such output"), std::string::npos) << r->body;
    auto list = http_request(s.port(), "GET", "/v1/extensions?limit=100", "", {key_a});
    ASSERT_TRUE(list);
    EXPECT_EQ(parse(list->body)["data"].as_array().size(), 1u) << "nothing else was created";
}

// A clip of our own output goes to the provider as its output's link (api.public_base_url).
// When the fetch policy refuses that link, the error is about the clip the client sent, and
// says which settings decide it, not about an audio_url it never sent.
// A poller that names the task's ETag gets a 304 (no body) until the task changes; the tag
// changes with its version (and with its links' renewal or retention, which tests of signing
// and retention cover by the document itself).
// Every endpoint refuses a query parameter it does not take (a link's lifetime asked for in the
// query was silently a 1-hour link); a signed link is cached no longer than it is valid; a blob
// that is not the stored file's size is not served under that file's ETag.
TEST(Extend, FilesTakeOnlyTheirParametersAndNeverOutliveTheirLinkOrTheirBytes) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path()));
    auto song = make_song(d, "wav", 6, 22050, 1);
    auto t = extend_to_success(s.port(), song.bytes, 1);
    ASSERT_EQ(t["status"], "succeeded");
    const std::string id(t["id"].as_string());
    const std::string source_url(t["request"].at("source").at("signed_url").as_string());
    const auto q = source_url.find('?');
    ASSERT_NE(q, std::string::npos) << source_url;
    const std::string file_path = source_url.substr(0, q);  // /v1/files/file_...
    const std::string file_id = file_path.substr(file_path.rfind('/') + 1);

    auto bad = [&](const std::string& method, const std::string& target, const std::string& param,
                   std::vector<std::string> headers) {
        auto r = http_request(s.port(), method, target, "", headers);
        ASSERT_TRUE(r) << target;
        EXPECT_EQ(r->status, 400) << method << " " << target << ": " << r->body;
        EXPECT_EQ(r->header("content-type").value_or(""), "application/problem+json") << target;
        EXPECT_NE(r->body.find(param), std::string::npos) << target << ": " << r->body;
    };
    bad("POST", file_path + "/links?expires_in=5", "expires_in", {key_a});
    bad("GET", source_url + "&foo=1", "foo", {});
    bad("GET", file_path + "?expires=1", "sig", {key_a});  // half a signed link
    bad("GET", "/v1/extensions/" + id + "?fields=id", "fields", {key_a});
    bad("POST", "/v1/extensions/" + id + "/cancel?force=1", "force", {key_a});
    bad("GET", "/v1/providers?name=sandbox", "name", {key_a});
    bad("POST", "/v1/extensions?provider=sandbox", "provider", {key_a});
    bad("POST", "/v1/deliveries/redeliver?task_id=" + id, "task_id", {key_a});
    // A link's body that is not JSON says so (as every JSON route does), not "not an object".
    auto broken = http_request(s.port(), "POST", file_path + "/links", "{",
                               {key_a, "Content-Type: application/json"});
    ASSERT_TRUE(broken);
    EXPECT_EQ(broken->status, 400) << broken->body;
    EXPECT_NE(broken->body.find("body is not valid JSON"), std::string::npos) << broken->body;
    auto list = http_request(s.port(), "GET", "/v1/extensions", "", {key_a});
    ASSERT_TRUE(list);
    EXPECT_EQ(parse(list->body)["data"].as_array().size(), 1u);  // the refused create made none

    // A key-authenticated GET is cached for an hour; a 2-second link for at most 2 seconds.
    auto keyed = http_request(s.port(), "GET", file_path, "", {key_a});
    ASSERT_TRUE(keyed);
    EXPECT_EQ(keyed->status, 200);
    EXPECT_EQ(keyed->header("cache-control").value_or(""), "private, max-age=3600");
    auto link = http_request(s.port(), "POST", file_path + "/links", R"({"expires_in":2})",
                             {key_a, "Content-Type: application/json"});
    ASSERT_TRUE(link);
    ASSERT_EQ(link->status, 201) << link->body;
    const std::string short_url(parse(link->body)["url"].as_string());
    auto brief = http_request(s.port(), "GET", short_url.substr(short_url.find("/v1/")));
    ASSERT_TRUE(brief);
    EXPECT_EQ(brief->status, 200) << brief->body;
    const auto cc = brief->header("cache-control").value_or("");
    EXPECT_TRUE(cc == "private, max-age=2" || cc == "private, max-age=1" ||
                cc == "private, max-age=0")
        << cc;

    // The stored upload cut short on the disk: a 500, without the file's ETag or caching. (On
    // PostgreSQL the blob is in the database: blobs: postgres.)
    if (segue::test::testing_postgres())
        return;
    std::string blob;
    std::error_code ec;
    for (auto it = std::filesystem::recursive_directory_iterator(d.path() + "/blobs", ec);
         it != std::filesystem::recursive_directory_iterator(); ++it)
        if (it->is_regular_file() &&
            it->path().filename().string().find(file_id) != std::string::npos)
            blob = it->path().string();
    ASSERT_FALSE(blob.empty()) << file_id;
    std::filesystem::resize_file(blob, std::filesystem::file_size(blob) - 10);
    auto cut = http_request(s.port(), "GET", file_path, "", {key_a});
    ASSERT_TRUE(cut);
    EXPECT_EQ(cut->status, 500) << cut->body;
    EXPECT_EQ(cut->header("content-type").value_or(""), "application/problem+json");
    EXPECT_FALSE(cut->header("etag").has_value());
    EXPECT_FALSE(cut->header("cache-control").has_value());
}

TEST(Extend, ATaskRevalidatesWithItsETag) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path(), "", "1500ms"));
    auto song = make_song(d, "wav", 4, 22050, 1);
    auto r = post_form(
        s.port(), {{"audio_file", song.bytes, "s.wav"}, {"extend_after", "2"}, {"length", "1"}},
        {key_a});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    const std::string id(parse(r->body)["id"].as_string());
    const std::string path = "/v1/extensions/" + id;
    auto first = http_request(s.port(), "GET", path, "", {key_a});
    ASSERT_TRUE(first);
    const std::string running = first->header("etag").value_or("");
    ASSERT_EQ(running.rfind("W/\"", 0), 0u) << running;
    auto same = http_request(s.port(), "GET", path, "", {key_a, "If-None-Match: " + running});
    ASSERT_TRUE(same);
    if (same->status == 304) {  // else the task moved on in between
        EXPECT_TRUE(same->body.empty());
        EXPECT_EQ(same->header("etag").value_or(""), running);
    }
    auto t = wait_final(s.port(), id, key_a);
    ASSERT_EQ(t["status"], "succeeded");
    auto done = http_request(s.port(), "GET", path, "", {key_a, "If-None-Match: " + running});
    ASSERT_TRUE(done);
    EXPECT_EQ(done->status, 200) << "the task changed since that tag";
    const std::string final_tag = done->header("etag").value_or("");
    EXPECT_NE(final_tag, running);
    // The current tag, alone, in a list, or without W/: 304, with no body and no type.
    for (const std::string& inm : {final_tag, "\"x\", " + final_tag, final_tag.substr(2)}) {
        auto again = http_request(s.port(), "GET", path, "", {key_a, "If-None-Match: " + inm});
        ASSERT_TRUE(again);
        EXPECT_EQ(again->status, 304) << inm;
        EXPECT_TRUE(again->body.empty());
        EXPECT_EQ(again->header("etag").value_or(""), final_tag);
        EXPECT_FALSE(again->header("content-type").has_value());
    }
    // Another tenant's tag for it is still a 404.
    auto other = http_request(s.port(), "GET", path, "", {key_b, "If-None-Match: " + final_tag});
    ASSERT_TRUE(other);
    EXPECT_EQ(other->status, 404);
}

TEST(Extend, AClipWhoseLinkTheFetchPolicyRefusesNamesTheClip) {
    segue::test::temp_dir d;
    segue_process s(config_for(d.path(), "api:\n  public_base_url: http://127.0.0.1:9\n"));
    auto song = make_song(d, "wav", 4, 22050, 1);
    auto t = extend_to_success(s.port(), song.bytes, 1);
    ASSERT_EQ(t["status"], "succeeded");
    auto r = post_clip(s.port(), "sandbox", std::string(t["id"].as_string()) + "-1", 1);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422) << r->body;
    const auto doc = parse(r->body);
    const auto& errors = doc.at("errors").as_array();
    ASSERT_EQ(errors.size(), 1u) << r->body;
    EXPECT_EQ(errors[0].at("field"), "clip.id");
    const std::string m(errors[0].at("message").as_string());
    EXPECT_NE(m.find("api.public_base_url"), std::string::npos) << m;
    EXPECT_NE(m.find("port 9"), std::string::npos) << m;
}

// Retention deleted a task's files, and the task is still there: it says when each file went
// (`*_expired_at`, the source's `expired_at`) and hands out no signed link to nothing.
TEST(Extend, ATaskWhoseFilesRetentionDeletedSaysSo) {
    segue::test::temp_dir d;
    segue_process s(
        config_for(d.path(), "retention:\n  interval: 200ms\n  outputs: 3s\n  uploads: 3s\n"));
    auto song = make_song(d, "wav", 4, 22050, 1);
    auto t = extend_to_success(s.port(), song.bytes, 1);
    ASSERT_EQ(t["status"], "succeeded");
    const std::string id(t["id"].as_string());
    ASSERT_TRUE(t["outputs"].as_array()[0].at("audio").as_object().contains("wav_signed_url"));
    json::object now;
    for (int i = 0; i < 100; ++i) {
        std::this_thread::sleep_for(200ms);
        auto r = http_request(s.port(), "GET", "/v1/extensions/" + id, "", {key_a});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 200) << r->body;
        now = parse(r->body);
        const auto& a = now["outputs"].as_array()[0].at("audio").as_object();
        if (a.contains("wav_expired_at") && a.contains("mp3_expired_at") &&
            now["request"].at("source").as_object().contains("expired_at"))
            break;
    }
    const auto& out = now["outputs"].as_array()[0].as_object();
    const auto& audio = out.at("audio").as_object();
    for (const char* k : {"wav_expired_at", "mp3_expired_at"})
        EXPECT_TRUE(audio.contains(k)) << k << ": " << json::serialize(out);
    for (const char* k : {"wav_signed_url", "mp3_signed_url"})
        EXPECT_FALSE(audio.contains(k)) << k << ": " << json::serialize(out);
    EXPECT_FALSE(out.contains("cover_signed_url")) << json::serialize(out);
    const auto& source = now["request"].at("source").as_object();
    EXPECT_TRUE(source.contains("expired_at")) << json::serialize(source);
    EXPECT_FALSE(source.contains("signed_url")) << json::serialize(source);
    // Its output as a clip is refused now, not failed later by the provider.
    auto clip = post_clip(s.port(), "sandbox", id + "-1", 1);
    ASSERT_TRUE(clip);
    EXPECT_EQ(clip->status, 422) << clip->body;
    EXPECT_NE(clip->body.find("expired"), std::string::npos) << clip->body;
    // What it says is what the files answer.
    auto gone =
        http_request(s.port(), "GET",
                     std::string(audio.at("wav_url").as_string())
                         .substr(std::string(audio.at("wav_url").as_string()).find("/v1/files/")),
                     "", {key_a});
    ASSERT_TRUE(gone);
    EXPECT_EQ(gone->status, 410);
}

// Outputs that outlive the provider's links (core/mirror.hpp): the real binary against both fake
// providers. Every output's files are copied into the gateway's blob store before the output is
// ready, so after the fakes stop serving their file URLs every output still downloads from the
// gateway with the SHA-256 it reported; every output is decoded and flagged (silent, truncated);
// a mirror that fails for a while is retried, one that never succeeds leaves the provider's URL
// (or fails the output), and a gateway killed mid-mirror finishes it after a restart, once.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <chrono>
#include <cstdlib>
#include <filesystem>
#include <fstream>
#include <map>
#include <set>
#include <thread>

#include "gateway/audio/audio.hpp"
#include "gateway/util/crypto.hpp"
#include "tests/support/fakes.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
using segue::test::fake_provider;
using segue::test::http_request;

namespace {

const std::string key = "Authorization: Bearer sk-mirror";

json::object parse(const std::string& s) {
    return json::parse(s).as_object();
}

enum class which { musicgpt, musicapi };

fake_provider start_fake(which w) {
    if (w == which::musicgpt)
        return fake_provider(SEGUE_FAKE_MUSICGPT_PATH,
                             {"--api-key", "mg-key", "--webhook-delay-ms", "100"});
    return fake_provider(SEGUE_FAKE_MUSICAPI_PATH,
                         {"--api-key", "ma-key", "--song-seconds", "4", "--control",
                          R"({"clips":2,"finish_after_ms":300})"});
}

struct gateway {
    gateway(which w, const fake_provider& fake, const std::string& storage,
            const std::string& outputs = "", std::uint16_t fixed_port = 0,
            const std::string& retry = "") {
        port = fixed_port ? fixed_port : segue::test::free_port();
        const std::string provider =
            w == which::musicgpt
                ? "providers:\n  musicgpt:\n    enabled: true\n    base_url: " + fake.base() +
                      "/api/public\n    api_key: mg-key\n    reconcile_after: 3s\n"
                      "    poll_interval: 500ms\n    submit_timeout: 5s\n"
                : "providers:\n  musicapi:\n    enabled: true\n    base_url: " + fake.base() +
                      "/api/v1\n    api_key: ma-key\n    poll_initial: 100ms\n"
                      "    poll_max: 300ms\n    poll_jitter: 0\n    submit_timeout: 5s\n"
                      "    poll_timeout: 2s\n";
        const std::string cfg =
            "server:\n  listen: 127.0.0.1:" + std::to_string(port) +
            "\n  io_threads: 2\nlog:\n  level: info\n"
            "tenants:\n  - name: t\n    api_keys: [sk-mirror]\n" +
            segue::test::storage_yaml(storage) + "api:\n  public_base_url: " + base() +
            "\n  default_provider: " + (w == which::musicgpt ? "musicgpt" : "musicapi") +
            "\nengine:\n  poll_interval: 100ms\n  lease: 3s\n"
            "upstream:\n  allow_plain_http: true\n  request_timeout: 5s\n"
            "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"
            "retry:\n  transient: {initial: 50ms, max: 100ms}\n" +
            retry + "breakers:\n  consecutive_failures: 1000\n  min_requests: 1000\n" + provider +
            "outputs:\n  mirror:\n    initial_backoff: 100ms\n    max_backoff: 400ms\n" + outputs;
        proc = std::make_unique<segue::test::segue_process>(cfg);
    }
    std::string base() const { return "http://127.0.0.1:" + std::to_string(port); }
    std::unique_ptr<segue::test::segue_process> proc;
    std::uint16_t port = 0;
};

std::string submit(const gateway& g, which w, const segue::test::temp_dir& d) {
    const std::string song = d.file("in.wav");
    EXPECT_TRUE(segue::audio::write_test_song(song, 8, 22050, 1, 120, "wav"));
    const std::string boundary = "mirror-boundary-7";
    std::vector<segue::test::form_part> parts{
        {"audio_file", segue::test::read_file(song), "in.wav", "audio/wav"}, {"extend_after", "3"}};
    if (w == which::musicgpt)
        parts.push_back({"num_outputs", "2"});
    auto r =
        http_request(g.port, "POST", "/v1/extensions", segue::test::multipart_body(parts, boundary),
                     {key, "Content-Type: multipart/form-data; boundary=" + boundary});
    EXPECT_TRUE(r);
    if (!r)
        return "";
    EXPECT_EQ(r->status, 202) << r->body;
    return r->status == 202 ? std::string(parse(r->body)["id"].as_string()) : "";
}

json::object wait_final(const gateway& g, const std::string& id, std::chrono::seconds limit = 40s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    json::object t;
    while (std::chrono::steady_clock::now() < until) {
        auto r = http_request(g.port, "GET", "/v1/extensions/" + id, "", {key});
        if (r && r->status == 200) {
            t = parse(r->body);
            const std::string st(t["status"].as_string());
            if (st != "queued" && st != "submitted" && st != "running")
                return t;
        }
        std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "not final: " << json::serialize(t);
    return t;
}

json::array events(const gateway& g, const std::string& id) {
    auto r = http_request(g.port, "GET", "/v1/extensions/" + id + "/events?limit=1000", "", {key});
    return r && r->status == 200 ? parse(r->body)["data"].as_array() : json::array{};
}

std::string text(const json::object& o, std::string_view k) {
    auto v = o.if_contains(k);
    return v && v->is_string() ? std::string(v->as_string()) : std::string();
}

std::set<std::string> flags_of(const json::object& output) {
    std::set<std::string> out;
    auto v = output.if_contains("verification");
    if (!v || !v->is_object())
        return out;
    if (auto f = v->as_object().if_contains("flags"); f && f->is_array())
        for (const auto& x : f->as_array())
            out.insert(std::string(x.as_string()));
    return out;
}

// A mirrored file as a browser plays it: `Range: bytes=0-99` gives 206 with the first 100 bytes
// of `whole` (all of a file shorter than that: the 70-byte covers) and their Content-Range; the
// signed link gives the same bytes, whole or by range, with no Authorization header, which the
// plain URL refuses.
void expect_playable(const gateway& g, const std::string& url, const std::string& signed_url,
                     const std::string& whole) {
    ASSERT_FALSE(whole.empty());
    const std::string first = whole.substr(0, 100);
    const std::string content_range =
        "bytes 0-" + std::to_string(first.size() - 1) + "/" + std::to_string(whole.size());
    auto part =
        http_request(g.port, "GET", url.substr(g.base().size()), "", {key, "Range: bytes=0-99"});
    ASSERT_TRUE(part);
    EXPECT_EQ(part->status, 206) << part->body;
    EXPECT_EQ(part->header("content-range").value_or(""), content_range);
    EXPECT_EQ(part->body.size(), first.size());
    EXPECT_TRUE(part->body == first) << "the range is not the file's first 100 bytes";

    auto bare = http_request(g.port, "GET", url.substr(g.base().size()));
    ASSERT_TRUE(bare);
    EXPECT_EQ(bare->status, 401) << "the plain URL needs the key";
    ASSERT_EQ(signed_url.rfind(g.base() + "/v1/files/file_", 0), 0u) << signed_url;
    const std::string link = signed_url.substr(g.base().size());
    ASSERT_NE(link.find("sig="), std::string::npos) << link;
    auto linked = http_request(g.port, "GET", link);
    ASSERT_TRUE(linked);
    EXPECT_EQ(linked->status, 200) << linked->body;
    EXPECT_EQ(linked->body.size(), whole.size());
    EXPECT_TRUE(linked->body == whole) << "the signed link serves other bytes";
    auto linked_part = http_request(g.port, "GET", link, "", {"Range: bytes=0-99"});
    ASSERT_TRUE(linked_part);
    EXPECT_EQ(linked_part->status, 206) << linked_part->body;
    EXPECT_EQ(linked_part->header("content-range").value_or(""), content_range);
    EXPECT_TRUE(linked_part->body == first) << "the signed range is not the first 100 bytes";
}

// Every file of every ready output is the gateway's own, downloads with its key and has the
// SHA-256 and size the output reports, plays by range and through its signed link without a key;
// the provider's URL is kept beside it.
void expect_mirrored(const gateway& g, const fake_provider& fake, const json::object& t) {
    for (const auto& ov : t.at("outputs").as_array()) {
        const auto& o = ov.as_object();
        ASSERT_EQ(o.at("status"), "ready") << json::serialize(o);
        const auto& audio = o.at("audio").as_object();
        std::vector<std::string> prefixes{"mp3"};
        if (audio.contains("wav_url"))
            prefixes.push_back("wav");
        if (o.contains("cover_url"))
            prefixes.push_back("cover");
        for (const auto& p : prefixes) {
            const auto& holder = p == "cover" ? o : audio;
            const std::string url = text(holder, p + "_url");
            SCOPED_TRACE(p + " " + url);
            ASSERT_EQ(url.rfind(g.base() + "/v1/files/file_", 0), 0u) << json::serialize(o);
            EXPECT_EQ(text(holder, p + "_provider_url").rfind(fake.base() + "/files/", 0), 0u)
                << json::serialize(o);
            const std::string sha = text(holder, p + "_sha256");
            ASSERT_EQ(sha.size(), 64u);
            auto r = http_request(g.port, "GET", url.substr(g.base().size()), "", {key});
            ASSERT_TRUE(r);
            ASSERT_EQ(r->status, 200) << r->body;
            EXPECT_EQ(segue::util::sha256_hex(r->body), sha);
            EXPECT_EQ(static_cast<std::int64_t>(r->body.size()),
                      holder.at(p + "_size").to_number<std::int64_t>());
            if (p != "cover")  // audio: 100 bytes of it, not fewer
                EXPECT_GT(r->body.size(), 100u);
            expect_playable(g, url, text(holder, p + "_signed_url"), r->body);
            // The provider's link is dead (files_gone): the gateway's copy is all there is.
            auto dead = http_request(fake.port(), "GET",
                                     text(holder, p + "_provider_url").substr(fake.base().size()));
            ASSERT_TRUE(dead);
            EXPECT_EQ(dead->status, 404);
        }
        EXPECT_FALSE(o.contains("mirror_failed"));
        // Decoded: what it really holds.
        const auto& v = o.at("verification").as_object();
        EXPECT_GT(v.at("duration").to_number<double>(), 1.0) << json::serialize(v);
        EXPECT_EQ(v.at("sample_rate").to_number<int>(), 22050);
        EXPECT_EQ(v.at("channels").to_number<int>(), 1);
        EXPECT_LT(v.at("peak_dbfs").to_number<double>(), 0.01);
        EXPECT_GT(v.at("loudness_lufs").to_number<double>(), -40);
        EXPECT_EQ(flags_of(o).count("silent"), 0u);
        EXPECT_EQ(flags_of(o).count("truncated"), 0u);
        for (const char* k : {"_mirror", "_cover_pending", "_settle"})
            EXPECT_FALSE(o.contains(k)) << k;
    }
}

// Every output's audio, by its signed link, in a real browser (Debian's chromium, headless, no
// key anywhere): each <audio> element reaches canplay and plays.
void expect_plays_in_a_browser(const json::object& t, const segue::test::temp_dir& d) {
    const char* env = std::getenv("SEGUE_CHROMIUM");
    const std::string chromium = env && *env ? env : "/usr/bin/chromium";
    ASSERT_TRUE(std::filesystem::exists(chromium))
        << "no Chromium at " << chromium << ": scripts/setup.sh --test installs Debian's chromium";
    std::vector<std::string> links;
    for (const auto& ov : t.at("outputs").as_array()) {
        const auto& audio = ov.as_object().at("audio").as_object();
        for (const char* f : {"mp3_signed_url", "wav_signed_url"})
            if (audio.contains(f))
                links.push_back(text(audio, f));
    }
    ASSERT_FALSE(links.empty());
    std::string page =
        "<!doctype html><body><script>\n"
        "const links = " +
        json::serialize(json::value_from(links)) +
        ";\n"
        "links.forEach((src, i) => {\n"
        "  const a = new Audio(src);\n"
        "  a.oncanplay = () => { document.body.dataset['canplay' + i] = 'yes';\n"
        "    a.play().then(() => { document.body.dataset['playing' + i] = 'yes'; },\n"
        "                  (e) => { document.body.dataset['error' + i] = String(e); }); };\n"
        "  a.onerror = () => { document.body.dataset['error' + i] = 'media error ' +\n"
        "                      (a.error && a.error.code); };\n"
        "});\n"
        "</script></body>\n";
    const std::string file = d.file("play.html");
    {
        std::ofstream out(file);
        out << page;
    }
    auto [code, output] = segue::test::run_command(
        {"timeout", "60", chromium, "--headless", "--no-sandbox", "--disable-gpu",
         "--autoplay-policy=no-user-gesture-required", "--virtual-time-budget=10000",
         "--user-data-dir=" + d.file("chromium-profile"), "--dump-dom", "file://" + file});
    ASSERT_EQ(code, 0) << output;
    const auto body = output.find("<body");
    ASSERT_NE(body, std::string::npos) << output;
    const std::string tag = output.substr(body, output.find('>', body) - body);
    for (std::size_t i = 0; i < links.size(); ++i) {
        SCOPED_TRACE(links[i]);
        EXPECT_NE(tag.find("data-canplay" + std::to_string(i) + "=\"yes\""), std::string::npos)
            << tag;
        EXPECT_NE(tag.find("data-playing" + std::to_string(i) + "=\"yes\""), std::string::npos)
            << tag;
    }
}

void journey(which w) {
    auto fake = start_fake(w);
    segue::test::temp_dir storage, d;
    gateway g(w, fake, storage.path());
    const auto id = submit(g, w, d);
    ASSERT_FALSE(id.empty());
    auto t = wait_final(g, id);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    ASSERT_EQ(t["outputs"].as_array().size(), 2u);
    ASSERT_TRUE(fake.control(R"({"files_gone":true})"));
    expect_mirrored(g, fake, t);
    expect_plays_in_a_browser(t, d);
    // The events carry the same URLs: output.ready waited for the mirror.
    int ready = 0;
    for (const auto& ev : events(g, id)) {
        const auto& e = ev.as_object();
        const auto& data = e.at("data").as_object();
        if (e.at("type") == "extension.output.ready") {
            ++ready;
            const auto& audio = data.at("output").as_object().at("audio").as_object();
            EXPECT_EQ(text(audio, "mp3_url").rfind(g.base() + "/v1/files/", 0), 0u);
            EXPECT_TRUE(data.at("output").as_object().contains("verification"));
        }
        if (e.at("type") == "extension.cover.ready")
            EXPECT_EQ(text(data, "cover_url").rfind(g.base() + "/v1/files/", 0), 0u);
    }
    EXPECT_EQ(ready, 2);
}

}  // namespace

TEST(Mirror, MusicGptOutputsOutliveTheProvidersLinks) {
    journey(which::musicgpt);
}

TEST(Mirror, MusicApiOutputsOutliveTheProvidersLinks) {
    journey(which::musicapi);
}

TEST(Mirror, VerificationFlagsASilentAndATruncatedOutput) {
    for (which w : {which::musicgpt, which::musicapi}) {
        SCOPED_TRACE(w == which::musicgpt ? "musicgpt" : "musicapi");
        auto fake = start_fake(w);
        ASSERT_TRUE(fake.control(R"({"silent_outputs":[1],"truncated_outputs":[2]})"));
        segue::test::temp_dir storage, d;
        gateway g(w, fake, storage.path());
        const auto id = submit(g, w, d);
        auto t = wait_final(g, id);
        ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
        const auto& outs = t["outputs"].as_array();
        ASSERT_EQ(outs.size(), 2u);
        const auto f1 = flags_of(outs[0].as_object());
        const auto f2 = flags_of(outs[1].as_object());
        EXPECT_EQ(f1.count("silent"), 1u) << json::serialize(outs[0]);
        EXPECT_EQ(f1.count("truncated"), 0u) << json::serialize(outs[0]);
        EXPECT_EQ(f2.count("truncated"), 1u) << json::serialize(outs[1]);
        EXPECT_EQ(f2.count("silent"), 0u) << json::serialize(outs[1]);
        const auto& v1 = outs[0].as_object().at("verification").as_object();
        EXPECT_TRUE(v1.at("peak_dbfs").is_null()) << "digital silence has no peak";
        EXPECT_TRUE(v1.at("loudness_lufs").is_null());
        // The truncated file decodes to about half of what the provider said it lasts.
        const auto& o2 = outs[1].as_object();
        EXPECT_LT(o2.at("verification").as_object().at("duration").to_number<double>(),
                  0.7 * o2.at("audio").as_object().at("duration").to_number<double>());
        // The flags are in the output.ready events too.
        int flagged = 0;
        for (const auto& ev : events(g, id))
            if (ev.as_object().at("type") == "extension.output.ready")
                flagged += static_cast<int>(
                    flags_of(ev.as_object().at("data").as_object().at("output").as_object())
                        .size());
        EXPECT_GE(flagged, 2);
        auto m = http_request(g.port, "GET", "/metrics");
        EXPECT_NE(m->body.find("segue_output_verification_flags_total{flag=\"silent\"}"),
                  std::string::npos);
    }
}

TEST(Mirror, AFailingMirrorIsRetriedUntilItSucceeds) {
    auto fake = start_fake(which::musicgpt);
    // The first four file downloads fail (503, then resets); later ones pass.
    ASSERT_TRUE(fake.control(
        R"({"faults":[{"match":"files","status":503,"times":2},{"match":"files","reset":true,"times":2}]})"));
    segue::test::temp_dir storage, d;
    gateway g(which::musicgpt, fake, storage.path());
    const auto id = submit(g, which::musicgpt, d);
    auto t = wait_final(g, id);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    ASSERT_TRUE(fake.control(R"({"files_gone":true})"));
    expect_mirrored(g, fake, t);
    auto m = http_request(g.port, "GET", "/metrics");
    EXPECT_NE(m->body.find("segue_output_mirrors_total{kind=\"audio\",outcome=\"retry\"}"),
              std::string::npos)
        << m->body;
}

// A cancel while a mirror job copies an output: the cancel removes the task's scratch files
// under the copy, which then fails. Its task has ended, so the job is done with, not a failed
// run to try again (and no error line saying it "runs again later", which it never did).
TEST(Mirror, ACancelDuringACopyEndsTheMirrorJobQuietly) {
    auto fake = start_fake(which::musicgpt);
    ASSERT_TRUE(fake.control(R"({"faults":[{"match":"files","delay_ms":1500,"times":8}]})"));
    segue::test::temp_dir storage, d;
    gateway g(which::musicgpt, fake, storage.path());
    const auto id = submit(g, which::musicgpt, d);
    ASSERT_FALSE(id.empty());
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (fake.requests("files").empty() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(20ms);
    ASSERT_FALSE(fake.requests("files").empty()) << "no mirror started";
    // Just before the delayed file comes: the copy then goes on to store it before the job's
    // heartbeat has found its row gone.
    std::this_thread::sleep_for(1300ms);
    auto r = http_request(g.port, "POST", "/v1/extensions/" + id + "/cancel", "", {key});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    EXPECT_EQ(parse(r->body)["status"], "canceled") << r->body;
    std::this_thread::sleep_for(2500ms);  // the delayed files come, the copies end
    const auto log = g.proc->log();
    EXPECT_EQ(log.find("job failed; it runs again later"), std::string::npos) << log;
    auto m = http_request(g.port, "GET", "/metrics");
    ASSERT_TRUE(m);
    EXPECT_EQ(m->body.find(R"(segue_engine_jobs_total{kind="mirror",outcome="crashed"})"),
              std::string::npos)
        << m->body;
    // Nothing of the task is left in the scratch space.
    EXPECT_FALSE(
        std::filesystem::exists(std::filesystem::path(storage.path()) / "blobs" / "work" / id));
}

// A mirror that never succeeds: with the provider's host failing (503), the output is ready
// with the provider's URL (its link may still work) and mirror_failed, or failed with
// fail_output. With the host saying it has no such file (404: files_gone), the tenant could not
// get the song from that link either: failed and refunded, whatever fail_output says.
TEST(Mirror, AMirrorThatNeverSucceedsKeepsTheProvidersUrlOrFailsTheOutput) {
    struct mode {
        const char* name;
        const char* fault;
        bool fail_output;
        bool expect_failed;
    };
    for (const auto& m :
         {mode{"provider_url", R"({"faults":[{"match":"files","status":503}]})", false, false},
          mode{"fail_output", R"({"faults":[{"match":"files","status":503}]})", true, true},
          mode{"gone", R"({"files_gone":true})", false, true}}) {
        SCOPED_TRACE(m.name);
        auto fake = start_fake(which::musicapi);
        ASSERT_TRUE(fake.control(m.fault));
        segue::test::temp_dir storage, d;
        gateway g(which::musicapi, fake, storage.path(),
                  "    deadline: 2s\n    fail_output: " +
                      std::string(m.fail_output ? "true" : "false") + "\n");
        const auto id = submit(g, which::musicapi, d);
        auto t = wait_final(g, id);
        const auto& outs = t["outputs"].as_array();
        ASSERT_EQ(outs.size(), 2u);
        for (const auto& ov : outs) {
            const auto& o = ov.as_object();
            if (m.expect_failed) {
                EXPECT_EQ(o.at("status"), "failed") << json::serialize(o);
                EXPECT_NE(text(o, "error").find("could not be copied"), std::string::npos);
                if (!m.fail_output)
                    EXPECT_NE(text(o, "error").find("HTTP 404 (the provider no longer has it)"),
                              std::string::npos)
                        << json::serialize(o);
            } else {
                EXPECT_EQ(o.at("status"), "ready") << json::serialize(o);
                EXPECT_EQ(o.at("mirror_failed"), true);
                EXPECT_NE(text(o, "mirror_error").find("HTTP 503"), std::string::npos);
                const auto& audio = o.at("audio").as_object();
                EXPECT_EQ(text(audio, "mp3_url").rfind(fake.base(), 0), 0u);
                EXPECT_EQ(text(audio, "mp3_provider_url"), text(audio, "mp3_url"));
                EXPECT_EQ(o.at("cover_mirror_failed"), true);
            }
        }
        EXPECT_EQ(t["status"], m.expect_failed ? "failed" : "succeeded") << json::serialize(t);
        // What a failed output held goes back: nothing is charged for audio never received.
        const auto& c = t["credits"].as_object();
        if (m.expect_failed)
            EXPECT_EQ(c.at("captured").to_number<double>(), 0) << json::serialize(c);
        else
            EXPECT_GT(c.at("captured").to_number<double>(), 0) << json::serialize(c);
        // Retried (backoff 100-400 ms) within the 2 s deadline, then given up.
        EXPECT_GE(fake.requests("files").size(), 6u);
    }
}

// Retries stop at the task's deadline (retry.deadline from its creation) when it comes before
// the mirror's own: links that never answer end the mirror in seconds, not in ten minutes.
TEST(Mirror, RetriesStopAtTheTasksDeadlineWhenItComesBeforeTheMirrors) {
    auto fake = start_fake(which::musicapi);
    ASSERT_TRUE(fake.control(R"({"faults":[{"match":"files","status":503}]})"));
    segue::test::temp_dir storage, d;
    gateway g(which::musicapi, fake, storage.path(), "    deadline: 10m\n", 0, "  deadline: 2s\n");
    const auto started = std::chrono::steady_clock::now();
    const auto id = submit(g, which::musicapi, d);
    ASSERT_FALSE(id.empty());
    auto t = wait_final(g, id, 20s);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
    const auto& outs = t["outputs"].as_array();
    ASSERT_EQ(outs.size(), 2u);
    for (const auto& ov : outs) {
        const auto& o = ov.as_object();
        EXPECT_EQ(o.at("status"), "ready") << json::serialize(o);
        EXPECT_EQ(o.at("mirror_failed"), true) << json::serialize(o);
        EXPECT_NE(text(o, "mirror_error").find("HTTP 503"), std::string::npos);
        EXPECT_EQ(text(o.at("audio").as_object(), "mp3_url").rfind(fake.base(), 0), 0u);
    }
}

// A provider file over outputs.mirror.max_bytes is refused and not retried: the output ends the
// way a failed mirror does, ready with the provider's URL kept and mirror_failed. The 1 KiB cap
// is under the fake's audio files and over its 70-byte cover, which is mirrored as usual.
TEST(Mirror, AFileOverTheSizeCapIsNotMirroredAndKeepsTheProvidersUrl) {
    auto fake = start_fake(which::musicapi);
    segue::test::temp_dir storage, d;
    // A short deadline: were it retried, the requests below would show it within seconds.
    gateway g(which::musicapi, fake, storage.path(), "    max_bytes: 1KiB\n    deadline: 3s\n");
    const auto id = submit(g, which::musicapi, d);
    ASSERT_FALSE(id.empty());
    auto t = wait_final(g, id, 20s);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    const auto& outs = t["outputs"].as_array();
    ASSERT_EQ(outs.size(), 2u);
    for (const auto& ov : outs) {
        const auto& o = ov.as_object();
        SCOPED_TRACE(json::serialize(o));
        EXPECT_EQ(o.at("status"), "ready");
        ASSERT_TRUE(o.contains("mirror_failed"));
        EXPECT_EQ(o.at("mirror_failed"), true);
        EXPECT_NE(text(o, "mirror_error").find("too_large"), std::string::npos);
        const auto& audio = o.at("audio").as_object();
        EXPECT_EQ(text(audio, "mp3_url").rfind(fake.base() + "/files/", 0), 0u);
        EXPECT_EQ(text(audio, "mp3_provider_url"), text(audio, "mp3_url"));
        EXPECT_FALSE(audio.contains("mp3_file_id"));
        EXPECT_FALSE(audio.contains("mp3_sha256"));
        // The cover, under the cap, is the gateway's own.
        EXPECT_EQ(text(o, "cover_url").rfind(g.base() + "/v1/files/file_", 0), 0u);
        EXPECT_FALSE(o.contains("cover_mirror_failed"));
    }
    // Each output's audio was asked for once: a file over the cap is not retried.
    int audio_requests = 0;
    for (const auto& r : fake.requests("files")) {
        const std::string path(r.as_object().at("path").as_string());
        audio_requests += path.ends_with(".mp3") || path.ends_with(".wav");
    }
    EXPECT_EQ(audio_requests, 2);
    auto m = http_request(g.port, "GET", "/metrics");
    ASSERT_TRUE(m);
    EXPECT_NE(m->body.find("segue_output_mirrors_total{kind=\"audio\",outcome=\"failed\"} 2"),
              std::string::npos)
        << m->body;
    EXPECT_EQ(m->body.find("segue_output_mirrors_total{kind=\"audio\",outcome=\"retry\"}"),
              std::string::npos);
}

// SIGKILL while the files are being downloaded (slowly): the mirror job is a row with a lease,
// so the restarted gateway takes it up (at once on SQLite, whose lock proves the killed process
// gone; when the lease expires where replicas share PostgreSQL) and each output is ready once.
TEST(Mirror, AMirrorSurvivesAKillAndReadiesEachOutputOnce) {
    auto fake = start_fake(which::musicgpt);
    ASSERT_TRUE(fake.control(R"({"faults":[{"match":"files","delay_ms":1500}]})"));
    segue::test::temp_dir storage, d;
    const std::uint16_t port = segue::test::free_port();
    std::string id;
    {
        gateway g(which::musicgpt, fake, storage.path(), "", port);
        id = submit(g, which::musicgpt, d);
        ASSERT_FALSE(id.empty());
        for (int i = 0; i < 200 && fake.requests("files").empty(); ++i)
            std::this_thread::sleep_for(25ms);
        ASSERT_FALSE(fake.requests("files").empty()) << "no mirror started";
        g.proc->proc().signal(SIGKILL);
        g.proc->proc().wait(5s);
    }
    ASSERT_TRUE(fake.control(R"({"faults":[]})"));
    gateway g(which::musicgpt, fake, storage.path(), "", port);
    auto t = wait_final(g, id);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    ASSERT_TRUE(fake.control(R"({"files_gone":true})"));
    expect_mirrored(g, fake, t);
    std::map<std::string, int> counts;
    for (const auto& ev : events(g, id))
        counts[std::string(ev.as_object().at("type").as_string())]++;
    EXPECT_EQ(counts["extension.output.ready"], 2);
    EXPECT_EQ(counts["extension.cover.ready"], 1);
    EXPECT_EQ(counts["extension.succeeded"], 1);
}

// The sandbox's own files are verified too: the continuation starts at extend_after, lasts
// `length`, is not silent and has no jump at the splice point.
TEST(Mirror, SandboxOutputsAreVerifiedAndChecksummed) {
    segue::test::temp_dir storage, d;
    const auto port = segue::test::free_port();
    const std::string cfg = "server:\n  listen: 127.0.0.1:" + std::to_string(port) +
                            "\ntenants:\n  - name: t\n    api_keys: [sk-mirror]\n" +
                            segue::test::storage_yaml(storage.path()) +
                            "engine:\n  poll_interval: 100ms\n";
    segue::test::segue_process p(cfg);
    const std::string song = d.file("in.wav");
    ASSERT_TRUE(segue::audio::write_test_song(song, 12, 22050, 2, 120, "wav"));
    const std::string boundary = "mirror-boundary-8";
    auto r = http_request(port, "POST", "/v1/extensions",
                          segue::test::multipart_body(
                              {{"audio_file", segue::test::read_file(song), "in.wav", "audio/wav"},
                               {"extend_after", "8"},
                               {"length", "6"},
                               {"num_outputs", "1"}},
                              boundary),
                          {key, "Content-Type: multipart/form-data; boundary=" + boundary});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 202) << r->body;
    const std::string id(parse(r->body)["id"].as_string());
    json::object t;
    for (int i = 0; i < 300; ++i) {
        auto g = http_request(port, "GET", "/v1/extensions/" + id, "", {key});
        t = parse(g->body);
        if (t["status"] == "succeeded" || t["status"] == "failed")
            break;
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);
    const auto& o = t["outputs"].as_array()[0].as_object();
    const auto& audio = o.at("audio").as_object();
    EXPECT_EQ(text(audio, "wav_sha256").size(), 64u) << json::serialize(audio);
    const std::string wav_path = "/v1/files/" + text(audio, "wav_file_id");
    auto w = http_request(port, "GET", wav_path, "", {key});
    ASSERT_TRUE(w);
    EXPECT_EQ(segue::util::sha256_hex(w->body), text(audio, "wav_sha256"));
    const auto& v = o.at("verification").as_object();
    EXPECT_NEAR(v.at("duration").to_number<double>(), 14.0, 0.1) << json::serialize(v);
    EXPECT_EQ(v.at("source"), "wav");
    EXPECT_TRUE(flags_of(o).empty()) << json::serialize(v);
    const auto& s = v.at("splice").as_object();
    EXPECT_EQ(s.at("at").to_number<double>(), 8.0);
    EXPECT_LT(std::abs(s.at("level_jump_db").to_number<double>()), 10);
}

// Drop-in endpoints: the providers' own samples, read from their docs (../shared/seeds, see
// tests/CMakeLists.txt), run unchanged except for the base URL and the key (and what the docs
// themselves say to replace: the audio file, the audio URL, the webhook URL) against Segue, with
// the task served by the sandbox, by the fake MusicGPT and by the fake MusicAPI, cross-wise
// included. Their answers, the tasks they made and the webhooks they receive are checked in the
// providers' shapes (the webhooks also verified as Standard Webhooks by tests/receiver).

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <chrono>
#include <filesystem>
#include <fstream>
#include <map>
#include <regex>
#include <set>
#include <sstream>
#include <thread>
#include <tuple>

#include "gateway/audio/audio.hpp"
#include "gateway/util/crypto.hpp"
#include "tests/integration/chaos_harness.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
namespace fs = std::filesystem;
using segue::test::http_request;
using segue::test::chaos::child;
using segue::test::chaos::tenants;

namespace {

const auto& tenant = tenants.front();
const std::string webhook_secret = "ma-dropin-webhook-secret";

json::object parse(const std::string& s) {
    boost::system::error_code ec;
    auto v = json::parse(s, ec);
    return !ec && v.is_object() ? v.as_object() : json::object{};
}

std::string str(const json::value* v) {
    return v && v->is_string() ? std::string(v->as_string()) : "";
}

// --- the samples, as the docs have them ---

struct sample {
    enum class kind { curl, python } what;
    std::string provider;  // "musicgpt" or "musicapi", from the URL it calls
    std::string file;      // the seed it came from
    std::string code;
};

std::string provider_of(const std::string& code) {
    if (code.find("api.musicgpt.com") != std::string::npos)
        return "musicgpt";
    if (code.find("api.musicapi.ai") != std::string::npos)
        return "musicapi";
    return "";
}

// Every curl command (continued lines, and a quoted body over several lines) and every Python
// program (from `import requests` to its closing `# print(response.json())`) in the seeds.
std::vector<sample> read_samples(const std::string& dir) {
    std::vector<sample> out;
    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(dir))
        files.push_back(e.path());
    std::sort(files.begin(), files.end());
    for (const auto& path : files) {
        std::ifstream in(path);
        std::vector<std::string> lines;
        for (std::string l; std::getline(in, l);)
            lines.push_back(l);
        for (std::size_t i = 0; i < lines.size(); ++i) {
            if (lines[i].rfind("curl ", 0) == 0) {
                std::string code;
                std::size_t j = i;
                for (; j < lines.size(); ++j) {
                    code += lines[j] + "\n";
                    const bool continued = !lines[j].empty() && lines[j].back() == '\\';
                    if (!continued && std::count(code.begin(), code.end(), '\'') % 2 == 0)
                        break;
                }
                out.push_back({sample::kind::curl, provider_of(code), path.filename(), code});
                i = j;
            } else if (lines[i] == "import requests") {
                std::string code;
                std::size_t j = i;
                for (; j < lines.size(); ++j) {
                    code += lines[j] + "\n";
                    if (lines[j].rfind("# print(response", 0) == 0)
                        break;
                }
                out.push_back({sample::kind::python, provider_of(code), path.filename(), code});
                i = j;
            }
        }
    }
    return out;
}

void replace_all(std::string& s, const std::string& from, const std::string& to) {
    for (auto p = s.find(from); p != std::string::npos; p = s.find(from, p + to.size()))
        s.replace(p, from.size(), to);
}

// What a sample's reader replaces: the base URL and the key; and what the docs say to replace
// ("Replace {path_to_your_audio_file}, api_key, and webhook_url"): the audio, its URL, the hook.
struct substitution {
    std::uint16_t gateway = 0;
    std::string key;
    std::string audio_path;
    std::string audio_url;
    std::string webhook_url;
    std::string clip_id;  // MusicAPI's example clip, when the gateway cannot know it
};

std::string substitute(std::string code, const substitution& s) {
    const std::string base = "http://127.0.0.1:" + std::to_string(s.gateway);
    replace_all(code, "https://api.musicgpt.com", base);
    replace_all(code, "https://api.musicapi.ai", base);
    for (const char* k : {"<api_key>", "<API_KEY>", "<token>"})
        replace_all(code, k, s.key);
    replace_all(code, "/path/to/audio.mp3", s.audio_path);
    replace_all(code, "https://example.com/webhook", s.webhook_url);
    code = std::regex_replace(code, std::regex(R"(https://[a-z0-9.-]*s3\.amazonaws\.com/[^"]*)"),
                              s.audio_url);
    if (!s.clip_id.empty())
        replace_all(code, "abc123xyz789", s.clip_id);
    return code;
}

struct run_result {
    int status = 0;
    json::object body;
    std::string output;
};

// Runs the sample as its reader would: curl in a shell, Python with python3. Only a line that
// reports the answer is added after it.
run_result run_sample(const sample& smp, const substitution& sub) {
    segue::test::temp_dir d;
    const std::string code = substitute(smp.code, sub);
    run_result r;
    std::string status_text;
    if (smp.what == sample::kind::curl) {
        std::string cmd = code;
        while (!cmd.empty() && (cmd.back() == '\n' || cmd.back() == ' '))
            cmd.pop_back();
        cmd += " -sS -o " + d.file("body") + " -w 'SEGUE_STATUS %{http_code}\\n'\n";
        auto [rc, out] = segue::test::run_command({"/bin/sh", "-c", cmd});
        r.output = "$ " + cmd + out;
        EXPECT_EQ(rc, 0) << r.output;
        if (auto p = out.find("SEGUE_STATUS "); p != std::string::npos)
            status_text = out.substr(p + 13, 3);
        r.body = parse(segue::test::read_file(d.file("body")));
    } else {
        const std::string path =
            d.write("sample.py", code +
                                     "\nimport json as _json\nprint('SEGUE_STATUS', "
                                     "response.status_code)\nprint('SEGUE_BODY', "
                                     "_json.dumps(response.json()))\n");
        auto [rc, out] = segue::test::run_command({"python3", path});
        r.output = code + "\n---\n" + out;
        EXPECT_EQ(rc, 0) << r.output;
        if (auto p = out.find("SEGUE_STATUS "); p != std::string::npos)
            status_text = out.substr(p + 13, 3);
        if (auto p = out.find("SEGUE_BODY "); p != std::string::npos)
            r.body = parse(out.substr(p + 11, out.find('\n', p) - p - 11));
    }
    r.status = std::atoi(status_text.c_str());
    return r;
}

// --- the gateway, the audio and the receiver ---

struct setup {
    setup() : up(20261203), files("http_server", http_server_argv(dir)) {
        song_path = dir.file("song.wav");
        EXPECT_TRUE(segue::audio::write_test_song(song_path, 50.0, 22050, 1, 120, "wav"));
        std::filesystem::copy_file(song_path, dir.file("files/song.wav"));
        // The clip of MusicAPI's docs, known to the fake MusicAPI.
        up.musicapi.control(R"({"add_clips":[{"id":"abc123xyz789","duration":60}]})");
    }
    static std::vector<std::string> http_server_argv(const segue::test::temp_dir& d) {
        std::filesystem::create_directories(d.file("files"));
        // python3's own file server, writing the port file the harness waits for.
        const std::string script = d.write("serve.py", R"(import http.server, os, sys
os.chdir(sys.argv[1])
s = http.server.ThreadingHTTPServer(('127.0.0.1', 0), http.server.SimpleHTTPRequestHandler)
with open(sys.argv[3] + '.tmp', 'w') as f: f.write(str(s.server_address[1]) + '\n')
os.rename(sys.argv[3] + '.tmp', sys.argv[3])
s.serve_forever()
)");
        return {"/usr/bin/env", "python3", script, d.file("files")};
    }
    std::string audio_url() const { return files.url("/song.wav"); }

    segue::test::temp_dir dir;
    segue::test::chaos::upstreams up;
    child files;
    std::string song_path;
};

// What a test adds to the gateway's config: lines under `api:` (indented), sections after the
// rest, and whether api.public_base_url is set (to the gateway's own address) at all.
struct gateway_extra {
    std::string api;
    std::string tail;
    bool public_base_url = true;
};

struct gateway {
    // `sandbox_delay`: the sandbox's wait before it starts and between its outputs.
    gateway(const setup& s, const std::string& provider, const std::string& sandbox_delay = "50ms",
            const gateway_extra& extra = {}) {
        port = segue::test::free_port();
        const std::string self = "http://127.0.0.1:" + std::to_string(port);
        std::string cfg = "server:\n  listen: 127.0.0.1:" + std::to_string(port) +
                          "\n  io_threads: 2\nlog:\n  level: info\n"
                          "tenants:\n  - name: " +
                          tenant.name + "\n    api_keys: [" + tenant.key +
                          "]\n    webhook_secrets: [\"" + tenant.secret +
                          "\"]\n"
                          "api:\n  public_base_url: " +
                          (extra.public_base_url ? self : std::string("\"\"")) +
                          "\n  default_provider: " + provider + "\n" + extra.api +
                          "engine:\n  poll_interval: 100ms\n  lease: 3s\n"
                          "upstream:\n  allow_plain_http: true\n  request_timeout: 5s\n"
                          "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"
                          "webhooks:\n  retry_schedule: [200ms, 500ms, 1s]\n  jitter: 0\n"
                          "providers:\n  sandbox:\n    delay: " +
                          sandbox_delay +
                          "\n"
                          "  musicgpt:\n    enabled: true\n    base_url: " +
                          s.up.musicgpt.url("/api/public") +
                          "\n    api_key: mg-upstream-key\n    reconcile_after: 3s\n"
                          "    poll_interval: 500ms\n"
                          "  musicapi:\n    enabled: true\n    base_url: " +
                          s.up.musicapi.url("/api/v1") +
                          "\n    api_key: ma-upstream-key\n    poll_initial: 100ms\n"
                          "    poll_max: 300ms\n    poll_jitter: 0\n" +
                          extra.tail;
        proc = std::make_unique<segue::test::segue_process>(cfg);
    }
    std::string key_header() const { return "Authorization: Bearer " + tenant.key; }
    std::unique_ptr<segue::test::segue_process> proc;
    std::uint16_t port = 0;
};

std::vector<sample> samples_of(const std::string& provider, sample::kind k) {
    std::vector<sample> out;
    for (auto& s : read_samples(SEGUE_SEEDS_DIR))
        if (s.provider == provider && s.what == k)
            out.push_back(std::move(s));
    return out;
}

// Polls MusicGPT's byId until the task is final; its last document.
json::object wait_by_id(const gateway& g, const std::string& task_id) {
    json::object doc;
    for (int i = 0; i < 300; ++i) {
        auto r = http_request(g.port, "GET",
                              "/api/public/v1/byId?conversionType=EXTEND&task_id=" + task_id, "",
                              {"Authorization: " + tenant.key});
        if (r && r->status == 200) {
            doc = parse(r->body);
            const auto* c = doc.if_contains("conversion");
            const auto st = c && c->is_object() ? str(c->as_object().if_contains("status")) : "";
            if (st == "COMPLETED" || st == "FAILED")
                return doc;
        }
        std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "task " << task_id << " did not finish: " << json::serialize(doc);
    return doc;
}

json::object wait_task(const gateway& g, const std::string& task_id) {
    json::object doc;
    for (int i = 0; i < 300; ++i) {
        auto r =
            http_request(g.port, "GET", "/api/v1/producer/task/" + task_id, "", {g.key_header()});
        if (r && r->status == 200) {
            doc = parse(r->body);
            const auto st = str(doc.if_contains("status"));
            if (st == "SUCCESS" || st == "FAILED")
                return doc;
        }
        std::this_thread::sleep_for(100ms);
    }
    ADD_FAILURE() << "task " << task_id << " did not finish: " << json::serialize(doc);
    return doc;
}

// The receiver's verified deliveries on `path`, once there are at least `n` (bounded wait).
// How many times a message says credits were refunded (MusicAPI's own failure message may
// say it; the gateway then does not say it again).
int times_refunded(const std::string& message) {
    int n = 0;
    for (auto at = message.find("refunded"); at != std::string::npos;
         at = message.find("refunded", at + 1))
        ++n;
    return n;
}

json::array deliveries(const setup& s, const std::string& path, std::size_t n) {
    json::array got;
    for (int i = 0; i < 200 && got.size() < n; ++i) {
        got.clear();
        auto doc =
            segue::test::chaos::get_json(s.up.receiver.port(), "/_control/deliveries?path=" + path);
        if (doc && doc->contains("deliveries"))
            for (auto& d : (*doc)["deliveries"].as_array())
                got.push_back(d);
        if (got.size() < n)
            std::this_thread::sleep_for(100ms);
    }
    return got;
}

// One delivery in MusicAPI's webhook shape: verified as Standard Webhooks, MusicAPI's headers
// for `event`, its signature (HMAC of "ts.body" with the request's webhook_secret); its body.
json::object musicapi_webhook_body(json::object& d, const std::string& event) {
    EXPECT_EQ(d["verified"], true) << json::serialize(d);
    auto& h = d["headers"].as_object();
    EXPECT_EQ(str(h.if_contains("segue-webhook-format")), "musicapi");
    EXPECT_EQ(str(h.if_contains("x-webhook-event")), event);
    EXPECT_EQ(str(h.if_contains("x-webhook-id")), str(h.if_contains("idempotency-key")));
    const auto ts = str(h.if_contains("x-webhook-timestamp"));
    const auto body = str(d.if_contains("body_text"));
    EXPECT_EQ(str(h.if_contains("x-webhook-signature")),
              "sha256=" + segue::util::hex_encode(
                              segue::util::hmac_sha256(webhook_secret, ts + "." + body)));
    return parse(body);
}

// A MusicGPT-shaped submit answered as MusicGPT does.
void expect_submit_answer(const run_result& r, const std::string& provider) {
    ASSERT_EQ(r.status, 200) << r.output;
    auto b = r.body;
    EXPECT_EQ(b["success"], true) << r.output;
    EXPECT_EQ(str(b.if_contains("message")), "Extend request submitted successfully");
    const auto task = str(b.if_contains("task_id"));
    EXPECT_EQ(task.rfind("ext_", 0), 0u) << r.output;
    EXPECT_EQ(str(b.if_contains("conversion_id_1")), task + "-1");
    EXPECT_EQ(str(b.if_contains("conversion_id_2")), task + "-2");
    EXPECT_TRUE(b["eta"].is_number());
    EXPECT_TRUE(b["credit_estimate"].is_number());
    EXPECT_EQ(str(b.if_contains("provider")), provider);
}

// byId COMPLETED with MusicGPT's numbered fields, and the audio fetchable by its URL alone.
void expect_completed(const gateway& g, const std::string& task_id, const std::string& provider) {
    auto doc = wait_by_id(g, task_id);
    ASSERT_EQ(doc["success"], true);
    ASSERT_TRUE(doc["conversion"].is_object());
    auto& c = doc["conversion"].as_object();
    EXPECT_EQ(str(c.if_contains("status")), "COMPLETED") << json::serialize(doc);
    EXPECT_EQ(str(c.if_contains("provider")), provider);
    for (int n = 1; n <= 2; ++n) {
        const std::string i = std::to_string(n);
        EXPECT_EQ(str(c.if_contains("conversion_id_" + i)), task_id + "-" + i);
        EXPECT_FALSE(str(c.if_contains("conversion_path_" + i)).empty()) << json::serialize(c);
        EXPECT_TRUE(c["conversion_duration_" + i].is_number()) << json::serialize(c);
    }
    // The documented single-conversion fields, asked by conversion_id.
    auto one = http_request(
        g.port, "GET", "/api/public/v1/byId?conversionType=EXTEND&conversion_id=" + task_id + "-2",
        "", {"Authorization: " + tenant.key});
    ASSERT_TRUE(one);
    ASSERT_EQ(one->status, 200) << one->body;
    auto oc = parse(one->body)["conversion"].as_object();
    EXPECT_EQ(str(oc.if_contains("conversion_id")), task_id + "-2");
    EXPECT_EQ(str(oc.if_contains("conversion_path")), str(oc.if_contains("conversion_path_2")));
    // Every field of a conversion, singular too.
    for (const char* f : {"title", "conversion_path_wav", "conversion_duration", "lyrics",
                          "lyrics_timestamped", "is_flagged"}) {
        ASSERT_TRUE(oc.contains(f)) << f << ": " << one->body;
        EXPECT_EQ(oc.at(f), oc.at(std::string(f) + "_2")) << f << ": " << one->body;
    }
    // A gateway file is handed out as a signed link: no key needed, as MusicGPT's S3 URLs.
    const std::string url = str(c.if_contains("conversion_path_1"));
    const std::string self = "http://127.0.0.1:" + std::to_string(g.port);
    if (url.rfind(self, 0) == 0) {
        auto f = http_request(g.port, "GET", url.substr(self.size()));
        ASSERT_TRUE(f);
        EXPECT_EQ(f->status, 200);
        EXPECT_GT(f->body.size(), 1000u);
    }
}

// MusicGPT's callbacks for one task: two audio (one per conversion), and, when the provider
// made them, timestamped lyrics per conversion and the album cover; Standard Webhooks verified.
void expect_musicgpt_webhooks(const setup& s, const std::string& path, const std::string& task_id,
                              bool lyrics_and_cover) {
    const std::set<std::string> both = {task_id + "-1", task_id + "-2"};
    std::set<std::string> audio, lyrics;
    int covers = 0;
    json::array got;
    for (int i = 0; i < 200; ++i) {
        got = deliveries(s, path, 1);
        audio.clear();
        lyrics.clear();
        covers = 0;
        for (auto& dv : got) {
            auto& b = dv.as_object()["body"];
            if (!b.is_object())
                continue;
            const auto subtype = str(b.as_object().if_contains("subtype"));
            const auto id = str(b.as_object().if_contains("conversion_id"));
            if (subtype == "lyrics_timestamped")
                lyrics.insert(id);
            else if (subtype == "album_cover_generation")
                ++covers;
            else
                audio.insert(id);
        }
        if (audio == both && (!lyrics_and_cover || (lyrics == both && covers == 1)))
            break;
        std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(audio, both) << json::serialize(got);
    if (lyrics_and_cover) {
        EXPECT_EQ(lyrics, both) << json::serialize(got);
        EXPECT_EQ(covers, 1) << json::serialize(got);
    }
    for (auto& dv : got) {
        auto& d = dv.as_object();
        EXPECT_EQ(d["verified"], true) << json::serialize(d);
        EXPECT_EQ(str(d["headers"].as_object().if_contains("segue-webhook-format")), "musicgpt");
        if (!d["body"].is_object())
            continue;
        auto& b = d["body"].as_object();
        const auto subtype = str(b.if_contains("subtype"));
        if (subtype == "lyrics_timestamped") {
            // A JSON string of [{index, text, start, end}] in ms, as MusicGPT sends it.
            auto lines = json::parse(str(b.if_contains("lyrics_timestamped")));
            ASSERT_TRUE(lines.is_array());
            if (!lines.as_array().empty())
                EXPECT_TRUE(lines.as_array()[0].as_object().contains("start"));
        } else if (subtype == "album_cover_generation") {
            EXPECT_EQ(b["success"], true);
            EXPECT_FALSE(str(b.if_contains("image_path")).empty());
            EXPECT_EQ(str(b.if_contains("conversion_id_1")), task_id + "-1");
            EXPECT_EQ(str(b.if_contains("conversion_id_2")), task_id + "-2");
            EXPECT_FALSE(b.contains("conversion_id"));
        } else {
            EXPECT_EQ(b["success"], true) << json::serialize(b);
            EXPECT_EQ(str(b.if_contains("conversion_type")), "Extend");
            EXPECT_EQ(str(b.if_contains("task_id")), task_id);
            EXPECT_FALSE(str(b.if_contains("conversion_path")).empty());
            EXPECT_TRUE(b["conversion_duration"].is_number());
            EXPECT_EQ(b["is_flagged"], false);
        }
    }
}

// Every MusicGPT sample of the docs against a gateway whose tasks go to `provider`.
void run_musicgpt_samples(const setup& s, const std::string& provider, bool lyrics_and_cover) {
    gateway g(s, provider);
    auto curls = samples_of("musicgpt", sample::kind::curl);
    auto pythons = samples_of("musicgpt", sample::kind::python);
    ASSERT_GE(curls.size(), 1u) << "no MusicGPT curl sample in " << SEGUE_SEEDS_DIR;
    ASSERT_GE(pythons.size(), 1u) << "no MusicGPT Python sample in " << SEGUE_SEEDS_DIR;
    std::vector<sample> all = curls;
    all.insert(all.end(), pythons.begin(), pythons.end());
    int n = 0;
    for (const auto& smp : all) {
        SCOPED_TRACE(smp.file + (smp.what == sample::kind::curl ? " curl" : " python"));
        const std::string path = "/hooks/" + provider + "/" + std::to_string(++n);
        substitution sub{g.port, tenant.key, s.song_path, s.audio_url(), s.up.receiver.url(path),
                         ""};
        auto r = run_sample(smp, sub);
        expect_submit_answer(r, provider);
        const auto task_id = str(r.body.if_contains("task_id"));
        if (task_id.empty())
            continue;
        expect_completed(g, task_id, provider);
        expect_musicgpt_webhooks(s, path, task_id, lyrics_and_cover);
    }
}

// MusicAPI's sample (its clip, `starts_at`, `instruction`, `length`) and the task it made.
json::object run_musicapi_sample(const gateway& g, const std::string& clip_id,
                                 const std::string& provider) {
    auto curls = samples_of("musicapi", sample::kind::curl);
    EXPECT_GE(curls.size(), 1u) << "no MusicAPI curl sample in " << SEGUE_SEEDS_DIR;
    if (curls.empty())
        return {};
    auto r = run_sample(curls.front(), {g.port, tenant.key, "", "", "", clip_id});
    EXPECT_EQ(r.status, 200) << r.output;
    EXPECT_EQ(str(r.body.if_contains("message")), "success") << r.output;
    const auto task_id = str(r.body.if_contains("task_id"));
    EXPECT_EQ(task_id.rfind("ext_", 0), 0u) << r.output;
    auto doc = wait_task(g, task_id);
    // The same task on the neutral API: the ids are Segue's.
    auto neutral = http_request(g.port, "GET", "/v1/extensions/" + task_id, "", {g.key_header()});
    EXPECT_TRUE(neutral && neutral->status == 200);
    if (neutral && provider == "musicgpt")  // MusicGPT has no `length`: left out, and said so
        EXPECT_NE(neutral->body.find("length left out"), std::string::npos) << neutral->body;
    EXPECT_EQ(doc["code"], 200);
    EXPECT_EQ(str(doc.if_contains("status")), "SUCCESS") << json::serialize(doc);
    EXPECT_EQ(str(doc.if_contains("provider")), provider);
    EXPECT_EQ(doc["data"].as_array().size(), 2u) << json::serialize(doc);
    for (auto& c : doc["data"].as_array()) {
        auto& clip = c.as_object();
        EXPECT_EQ(str(clip.if_contains("state")), "succeeded");    // the legacy shape
        EXPECT_FALSE(str(clip.if_contains("audio_url")).empty());  // the newer shape
        EXPECT_FALSE(str(clip.if_contains("clip_id")).empty());
    }
    return doc;
}

// An upload through MusicAPI's shape; its clip id.
std::string upload_clip(const gateway& g, const std::string& url) {
    auto r = http_request(g.port, "POST", "/api/v1/producer/upload",
                          json::serialize(json::object{{"audio_url", url}}),
                          {g.key_header(), "Content-Type: application/json"});
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
    const auto task = str(parse(r ? r->body : "").if_contains("task_id"));
    auto doc = wait_task(g, task);
    EXPECT_EQ(str(doc.if_contains("status")), "SUCCESS");
    auto& data = doc["data"].as_array();
    return data.empty() ? "" : str(data[0].as_object().if_contains("clip_id"));
}

}  // namespace

TEST(DropIn, MusicGptSamplesServedByTheSandbox) {
    setup s;
    run_musicgpt_samples(s, "sandbox", true);
}

TEST(DropIn, MusicGptSamplesServedByMusicGpt) {
    setup s;
    run_musicgpt_samples(s, "musicgpt", true);
}

TEST(DropIn, MusicGptSamplesServedByMusicApi) {
    setup s;
    run_musicgpt_samples(s, "musicapi", false);
}

// MusicAPI's sample as it is (its clip is MusicAPI's own, which the fake knows); the clips it
// made are MusicAPI's ids, usable as a neutral `clip` source; a webhook in MusicAPI's shape,
// signed with its scheme.
TEST(DropIn, MusicApiSampleServedByMusicApi) {
    setup s;
    gateway g(s, "musicapi");
    auto doc = run_musicapi_sample(g, "", "musicapi");
    ASSERT_FALSE(doc["data"].as_array().empty());
    const auto clip = str(doc["data"].as_array()[0].as_object().if_contains("clip_id"));
    EXPECT_EQ(clip.rfind("ext_", 0), std::string::npos) << "MusicAPI's own clip id: " << clip;
    auto neutral =
        http_request(g.port, "POST", "/v1/extensions",
                     json::serialize(json::object{
                         {"clip", {{"provider", "musicapi"}, {"id", clip}}}, {"extend_after", 10}}),
                     {g.key_header(), "Content-Type: application/json"});
    ASSERT_TRUE(neutral);
    EXPECT_EQ(neutral->status, 202) << neutral->body;

    // With a webhook: MusicAPI's body and headers, its signature, and Standard Webhooks too.
    const std::string path = "/hooks/musicapi-shape";
    auto r = http_request(g.port, "POST", "/api/v1/producer/create",
                          json::serialize(json::object{{"task_type", "extend_music"},
                                                       {"clip_id", "abc123xyz789"},
                                                       {"starts_at", 20},
                                                       {"webhook_url", s.up.receiver.url(path)},
                                                       {"webhook_secret", webhook_secret}}),
                          {g.key_header(), "Content-Type: application/json"});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto task_id = str(parse(r->body).if_contains("task_id"));
    auto got = deliveries(s, path, 1);
    ASSERT_EQ(got.size(), 1u);
    auto b = musicapi_webhook_body(got[0].as_object(), "song.completed");
    EXPECT_EQ(b["code"], 200);
    EXPECT_EQ(str(b.if_contains("task_id")), task_id);
    ASSERT_EQ(b["data"].as_array().size(), 2u);
    auto& c = b["data"].as_array()[0].as_object();
    EXPECT_EQ(str(c.if_contains("state")), "succeeded");
    EXPECT_TRUE(c["duration"].is_string()) << "a string in MusicAPI's webhooks";
}

// MusicAPI's sample served by the sandbox and by MusicGPT: its clip is one made by an upload
// through MusicAPI's shape (the docs' example clip exists only at MusicAPI); clips Segue made
// are extended again by their ids.
TEST(DropIn, MusicApiSampleServedByTheSandboxAndMusicGpt) {
    setup s;
    for (const std::string provider : {"sandbox", "musicgpt"}) {
        SCOPED_TRACE(provider);
        gateway g(s, provider);
        const auto clip = upload_clip(g, s.audio_url());
        ASSERT_EQ(clip.rfind("upl_", 0), 0u) << clip;
        auto doc = run_musicapi_sample(g, clip, provider);
        if (provider != "sandbox")
            continue;
        // A clip of that task extended again (the sandbox made 45 + 30 s).
        const auto made = str(doc["data"].as_array()[0].as_object().if_contains("clip_id"));
        // MusicAPI's create of 5 s from `at` on `clip_id`, run to its end.
        auto extend = [&](const std::string& clip_id, int at) {
            auto r = http_request(g.port, "POST", "/api/v1/producer/create",
                                  json::serialize(json::object{{"task_type", "extend_music"},
                                                               {"clip_id", clip_id},
                                                               {"starts_at", at},
                                                               {"length", 5}}),
                                  {g.key_header(), "Content-Type: application/json"});
            EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
            return r ? wait_task(g, str(parse(r->body).if_contains("task_id"))) : json::object{};
        };
        auto again = extend(made, 60);
        EXPECT_EQ(str(again.if_contains("status")), "SUCCESS") << json::serialize(again);
        // The uploaded clip (a URL's song the sandbox fetches) extended past its end fails,
        // saying so with MusicAPI's own field name.
        auto past = extend(clip, 3000);
        EXPECT_EQ(str(past.if_contains("status")), "FAILED") << json::serialize(past);
        EXPECT_EQ(str(past.if_contains("message")).rfind("starts_at (3000.000 s) is beyond", 0), 0u)
            << json::serialize(past);
        // The same clip id as a neutral `clip` source.
        auto neutral = http_request(
            g.port, "POST", "/v1/extensions",
            json::serialize(json::object{{"clip", {{"provider", "sandbox"}, {"id", made}}},
                                         {"extend_after", 60},
                                         {"length", 5}}),
            {g.key_header(), "Content-Type: application/json"});
        ASSERT_TRUE(neutral);
        ASSERT_EQ(neutral->status, 202) << neutral->body;
        auto nid = str(parse(neutral->body).if_contains("id"));
        EXPECT_EQ(str(wait_task(g, nid).if_contains("status")), "SUCCESS");
        // An output that is not there is named.
        neutral = http_request(
            g.port, "POST", "/v1/extensions",
            json::serialize(json::object{{"clip", {{"provider", "sandbox"}, {"id", nid + "-9"}}},
                                         {"extend_after", 1}}),
            {g.key_header(), "Content-Type: application/json"});
        ASSERT_TRUE(neutral);
        EXPECT_EQ(neutral->status, 422) << neutral->body;
        EXPECT_NE(neutral->body.find("clip.id"), std::string::npos) << neutral->body;
    }
}

// Errors on these paths come in the providers' own shapes (problem+json stays on /v1).
TEST(DropIn, ErrorsInTheProvidersShapes) {
    setup s;
    gateway g(s, "sandbox");
    auto mg = [&](const std::string& body, const std::vector<std::string>& headers) {
        return http_request(g.port, "POST", "/api/public/v1/extend", body, headers);
    };
    auto r = mg("prompt=x",
                {"Authorization: sk-wrong", "Content-Type: application/x-www-form-urlencoded"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(parse(r->body)["success"], false);
    r = mg("prompt=x",
           {"Authorization: " + tenant.key, "Content-Type: application/x-www-form-urlencoded"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422);
    auto detail = parse(r->body)["detail"].as_array();
    ASSERT_FALSE(detail.empty()) << r->body;
    EXPECT_EQ(detail[0].as_object()["loc"].as_array()[0], "body");
    r = http_request(g.port, "GET", "/api/public/v1/byId?conversionType=EXTEND&task_id=ext_nope",
                     "", {"Authorization: " + tenant.key});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    EXPECT_EQ(parse(r->body)["success"], false);
    r = http_request(g.port, "GET", "/api/public/v1/byId?task_id=x", "",
                     {"Authorization: " + tenant.key});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422);
    // Neither id, or both: MusicGPT's own two answers.
    r = http_request(g.port, "GET", "/api/public/v1/byId?conversionType=EXTEND", "",
                     {"Authorization: " + tenant.key});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422);
    EXPECT_NE(r->body.find("either task_id or conversion_id is required"), std::string::npos)
        << r->body;
    r = http_request(g.port, "GET",
                     "/api/public/v1/byId?conversionType=EXTEND&task_id=a&conversion_id=b", "",
                     {"Authorization: " + tenant.key});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_EQ(parse(r->body)["message"], "Provide either task_id or conversion_id, not both");
    // An id given twice: which was meant is unknown, and the 422 says which field.
    r = http_request(g.port, "GET", "/api/public/v1/byId?conversionType=EXTEND&task_id=a&task_id=b",
                     "", {"Authorization: " + tenant.key});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 422);
    detail = parse(r->body)["detail"].as_array();
    ASSERT_FALSE(detail.empty()) << r->body;
    EXPECT_EQ(detail[0].as_object()["loc"].as_array()[1], "task_id") << r->body;
    EXPECT_EQ(detail[0].as_object()["msg"], "given more than once") << r->body;

    auto ma = [&](const std::string& body, const std::vector<std::string>& headers) {
        return http_request(g.port, "POST", "/api/v1/producer/create", body, headers);
    };
    r = ma("{}", {"Content-Type: application/json"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(str(parse(r->body).if_contains("message")), "Authorization header is missing.");
    r = ma("{}", {"Authorization: " + tenant.key, "Content-Type: application/json"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(str(parse(r->body).if_contains("message")), "Invalid authorization format.");
    // JSON only, said in MusicAPI's shape: curl's default form type, or no type at all.
    for (const std::string type : {"application/x-www-form-urlencoded", "text/plain", ""}) {
        std::vector<std::string> h = {g.key_header()};
        if (!type.empty())
            h.push_back("Content-Type: " + type);
        r = ma(R"({"task_type":"extend_music","clip_id":"abc123xyz789"})", h);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 415) << type << ": " << r->body;
        EXPECT_EQ(str(parse(r->body).if_contains("message")), "send the body as application/json")
            << r->body;
    }
    r = ma(R"({"task_type":"swap_music_sound"})",
           {g.key_header(), "Content-Type: application/json"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 410);
    EXPECT_EQ(parse(r->body)["code"], 410);
    r = ma(R"({"task_type":"extend_music","clip_id":"abc123xyz789","starts_at":-1})",
           {g.key_header(), "Content-Type: application/json"});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400) << r->body;
    EXPECT_NE(str(parse(r->body).if_contains("message")).find("starts_at"), std::string::npos)
        << r->body;
    r = http_request(g.port, "GET", "/api/v1/producer/task/ext_nope", "", {g.key_header()});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);
    EXPECT_EQ(str(parse(r->body).if_contains("message")), "task not found.");
    // A forged upload id is no clip.
    r = http_request(g.port, "GET", "/api/v1/producer/task/upl_aGVsbG8.0000", "", {g.key_header()});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 400);

    // No route: each drop-in's paths answer in its own shape (MusicGPT's FastAPI, MusicAPI's
    // code and message), with Allow on a 405; /v1 and the rest keep problem+json.
    struct unrouted {
        std::string method, target;
        int status;
        std::string body_has;
    };
    for (const auto& u : std::vector<unrouted>{
             {"GET", "/api/public/v1/extend", 405, R"({"detail":"Method Not Allowed"})"},
             {"GET", "/api/public/v1/nothing", 404, R"({"detail":"Not Found"})"},
             {"GET", "/api/v1/producer/create", 405, R"("code":405)"},
             {"POST", "/api/v1/producer/download", 404, "download is not offered"},
             {"GET", "/api/v1/producer/task/", 400, R"("message":"missing task id.")"},
             {"GET", "/api/v1/nothing", 404, R"("code":404)"}}) {
        r = http_request(g.port, u.method, u.target, "", {g.key_header()});
        ASSERT_TRUE(r) << u.target;
        EXPECT_EQ(r->status, u.status) << u.target;
        EXPECT_EQ(r->header("content-type").value_or(""), "application/json") << u.target;
        EXPECT_NE(r->body.find(u.body_has), std::string::npos) << u.target << ": " << r->body;
        EXPECT_EQ(r->header("allow").has_value(), u.status == 405) << u.target;
    }
    r = http_request(g.port, "GET", "/v1/nothing", "", {g.key_header()});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 404);
    EXPECT_EQ(r->header("content-type").value_or(""), "application/problem+json");
}

namespace {

// A MusicGPT-shaped extend with a JSON body (as MusicGPT's n8n node sends it), the key raw.
std::optional<segue::test::http_response> musicgpt_json_extend(
    const gateway& g, const json::object& body, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> headers = {"Authorization: " + tenant.key,
                                        "Content-Type: application/json"};
    headers.insert(headers.end(), extra.begin(), extra.end());
    return http_request(g.port, "POST", "/api/public/v1/extend", json::serialize(body), headers);
}

std::optional<segue::test::http_response> musicapi_create(
    const gateway& g, const json::object& body, const std::vector<std::string>& extra = {}) {
    std::vector<std::string> headers = {g.key_header(), "Content-Type: application/json"};
    headers.insert(headers.end(), extra.begin(), extra.end());
    return http_request(g.port, "POST", "/api/v1/producer/create", json::serialize(body), headers);
}

// How many tasks the tenant has (the neutral list; a fresh gateway has none).
std::size_t task_count(const gateway& g) {
    auto r = http_request(g.port, "GET", "/v1/extensions?limit=100", "", {g.key_header()});
    EXPECT_TRUE(r && r->status == 200) << (r ? r->body : "no answer");
    auto doc = parse(r ? r->body : "");
    const auto* d = doc.if_contains("data");
    return d && d->is_array() ? d->as_array().size() : 0;
}

// The deliveries on `path` once at least `n` are there, after a moment for any extra to land.
json::array settled_deliveries(const setup& s, const std::string& path, std::size_t n) {
    auto got = deliveries(s, path, n);
    if (got.size() < n)
        return got;
    std::this_thread::sleep_for(500ms);
    return deliveries(s, path, n);
}

// MusicGPT's failure callbacks for both conversions of `task_id`, one each: verified, in
// MusicGPT's format, success:false and FAILED, no audio, with `why` in the body's `field`.
void expect_musicgpt_failure_callbacks(const json::array& got, const std::string& task_id,
                                       const char* field, const std::string& why) {
    ASSERT_EQ(got.size(), 2u) << json::serialize(got);
    std::set<std::string> ids;
    for (const auto& dv : got) {
        const auto& d = dv.as_object();
        EXPECT_EQ(d.at("verified"), true) << json::serialize(d);
        EXPECT_EQ(str(d.at("headers").as_object().if_contains("segue-webhook-format")), "musicgpt");
        ASSERT_TRUE(d.at("body").is_object()) << json::serialize(d);
        const auto& b = d.at("body").as_object();
        EXPECT_EQ(b.at("success"), false) << json::serialize(b);
        EXPECT_EQ(str(b.if_contains("status")), "FAILED");
        EXPECT_EQ(str(b.if_contains("conversion_type")), "Extend");
        EXPECT_EQ(str(b.if_contains("task_id")), task_id);
        EXPECT_NE(str(b.if_contains(field)).find(why), std::string::npos) << json::serialize(b);
        EXPECT_FALSE(b.contains("conversion_path")) << json::serialize(b);
        ids.insert(str(b.if_contains("conversion_id")));
    }
    EXPECT_EQ(ids, (std::set<std::string>{task_id + "-1", task_id + "-2"}));
}

}  // namespace

// MusicGPT takes JSON as well as multipart and forms (its n8n node sends JSON when it has a
// URL): the JSON body's fields are the task's, it runs to the end, and byId reads it back.
TEST(DropIn, AJsonBodyPostedToMusicGptsExtendRunsToCompletionAndReadsBackById) {
    setup s;
    gateway g(s, "sandbox");
    const std::string path = "/hooks/json-extend";
    auto r = musicgpt_json_extend(g, {{"audio_url", s.audio_url()},
                                      {"extend_after", 20},
                                      {"prompt", "a brighter chorus"},
                                      {"lyrics", "Let the journey fade away"},
                                      {"title", "Taken and unused, as MusicGPT's extra fields"},
                                      {"webhook_url", s.up.receiver.url(path)}});
    ASSERT_TRUE(r);
    expect_submit_answer({r->status, parse(r->body), r->body}, "sandbox");
    const auto task_id = str(parse(r->body).if_contains("task_id"));
    ASSERT_FALSE(task_id.empty()) << r->body;
    expect_completed(g, task_id, "sandbox");
    // A file's signed link stays the same from one read to the next (its expiry moves in steps,
    // as /v1's), so byId and the webhooks hand out one URL per file.
    auto link_now = [&] {
        auto b = http_request(g.port, "GET",
                              "/api/public/v1/byId?conversionType=EXTEND&task_id=" + task_id, "",
                              {"Authorization: " + tenant.key});
        return b ? str(parse(b->body)["conversion"].as_object().if_contains("conversion_path_1"))
                 : std::string();
    };
    const auto first_link = link_now();
    std::this_thread::sleep_for(1100ms);
    EXPECT_EQ(link_now(), first_link);
    // What the JSON said is what the task did: its source, its cut, its prompt and lyrics.
    auto neutral = http_request(g.port, "GET", "/v1/extensions/" + task_id, "", {g.key_header()});
    ASSERT_TRUE(neutral && neutral->status == 200);
    auto req = parse(neutral->body)["request"].as_object();
    EXPECT_EQ(str(req["source"].as_object().if_contains("url")), s.audio_url());
    EXPECT_EQ(req["extend_after"].to_number<double>(), 20.0) << neutral->body;
    EXPECT_EQ(str(req.if_contains("prompt")), "a brighter chorus");
    EXPECT_EQ(str(req.if_contains("lyrics")), "Let the journey fade away");
    auto doc = wait_by_id(g, task_id);
    auto& c = doc["conversion"].as_object();
    // The sandbox keeps the first 20 s and adds its default 30 s.
    EXPECT_NEAR(c["conversion_duration_1"].to_number<double>(), 50.0, 1.0) << json::serialize(c);
    EXPECT_EQ(str(c.if_contains("lyrics_1")), "Let the journey fade away");
    expect_musicgpt_webhooks(s, path, task_id, true);
}

// MusicGPT's default is two conversions, and its answer names both. MusicAPI (one clip from
// the fake here) decides how many it makes: the second is still reported, as failed and not
// charged, instead of never being heard of.
TEST(DropIn, AConversionMusicApiDidNotMakeIsReportedAsFailedToAMusicGptClient) {
    setup s;
    ASSERT_TRUE(s.up.musicapi.control(R"({"clips":1})"));
    gateway g(s, "musicapi");
    const std::string path = "/hooks/musicapi-one-clip";
    auto r = musicgpt_json_extend(g, {{"audio_url", s.audio_url()},
                                      {"extend_after", 10},
                                      {"prompt", "anything"},
                                      {"webhook_url", s.up.receiver.url(path)}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto answer = parse(r->body);
    const auto task_id = str(answer.if_contains("task_id"));
    EXPECT_EQ(str(answer.if_contains("conversion_id_2")), task_id + "-2") << r->body;
    auto doc = wait_by_id(g, task_id);
    EXPECT_EQ(str(doc["conversion"].as_object().if_contains("status")), "COMPLETED")
        << json::serialize(doc);
    // Asked by its own id, the conversion not made reads FAILED and says why (as its webhook
    // says success:false); the one made reads COMPLETED.
    for (const auto& [n, status, msg] :
         {std::tuple<int, std::string, std::string>{1, "COMPLETED", "Conversion successful"},
          {2, "FAILED", "not produced"}}) {
        auto one =
            http_request(g.port, "GET",
                         "/api/public/v1/byId?conversionType=EXTEND&conversion_id=" + task_id +
                             "-" + std::to_string(n),
                         "", {"Authorization: " + tenant.key});
        ASSERT_TRUE(one && one->status == 200) << (one ? one->body : "no answer");
        auto c = parse(one->body)["conversion"].as_object();
        EXPECT_EQ(str(c.if_contains("status")), status) << one->body;
        EXPECT_EQ(str(c.if_contains("status_msg")), msg) << one->body;
    }
    std::map<std::string, bool> audio;  // conversion id -> success
    json::array got;
    for (int i = 0; i < 100 && audio.size() < 2; ++i) {
        got = deliveries(s, path, 1);
        for (auto& dv : got) {
            auto& b = dv.as_object()["body"];
            if (b.is_object() && !b.as_object().contains("subtype"))
                audio[str(b.as_object().if_contains("conversion_id"))] =
                    b.as_object()["success"] == true;
        }
        std::this_thread::sleep_for(100ms);
    }
    EXPECT_EQ(audio, (std::map<std::string, bool>{{task_id + "-1", true}, {task_id + "-2", false}}))
        << json::serialize(got);
    auto neutral = http_request(g.port, "GET", "/v1/extensions/" + task_id, "", {g.key_header()});
    ASSERT_TRUE(neutral && neutral->status == 200);
    auto credits = parse(neutral->body)["credits"].as_object();
    EXPECT_EQ(credits["captured"].to_number<double>(), credits["refunded"].to_number<double>())
        << "one of two outputs made: half captured, half given back: " << neutral->body;
    // byId's cost is what was charged, not what was held.
    EXPECT_EQ(doc["conversion"].as_object()["conversion_cost"].to_number<double>(),
              credits["captured"].to_number<double>())
        << json::serialize(doc);
}

// MusicGPT answers from FastAPI, which reads a number sent as a JSON string as the number;
// text that is no number is still its 422.
TEST(DropIn, MusicGptsJsonTakesNumbersSentAsStrings) {
    setup s;
    gateway g(s, "sandbox");
    auto r = musicgpt_json_extend(g, {{"audio_url", s.audio_url()},
                                      {"extend_after", "20.0"},
                                      {"num_outputs", "1"},
                                      {"prompt", "numbers as strings"}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto task_id = str(parse(r->body).if_contains("task_id"));
    EXPECT_FALSE(parse(r->body).contains("conversion_id_2")) << r->body;
    auto neutral = http_request(g.port, "GET", "/v1/extensions/" + task_id, "", {g.key_header()});
    ASSERT_TRUE(neutral && neutral->status == 200);
    auto req = parse(neutral->body)["request"].as_object();
    EXPECT_EQ(req["extend_after"].to_number<double>(), 20.0) << neutral->body;
    EXPECT_EQ(req["num_outputs"].to_number<double>(), 1.0) << neutral->body;
    for (const char* bad : {"twenty", "", "20s"}) {
        auto b = musicgpt_json_extend(g, {{"audio_url", s.audio_url()}, {"extend_after", bad}});
        ASSERT_TRUE(b);
        EXPECT_EQ(b->status, 422) << bad << ": " << b->body;
        EXPECT_NE(b->body.find("extend_after"), std::string::npos) << b->body;
    }
}

// A form's blank fields are fields not sent, as FastAPI (MusicGPT's API) reads forms: a client
// posting every field of its form, the optional ones left empty, is accepted; a blank required
// field is reported missing. A JSON body's "" is still a value, validated as one.
TEST(DropIn, MusicGptsExtendTakesBlankFormFieldsAsNotSent) {
    setup s;
    gateway g(s, "sandbox");
    auto form = [&](const std::string& body) {
        return http_request(
            g.port, "POST", "/api/public/v1/extend", body,
            {"Authorization: " + tenant.key, "Content-Type: application/x-www-form-urlencoded"});
    };
    const std::string audio = "audio_url=" + s.audio_url();  // no & = + % in it
    auto r = form(audio + "&extend_after=20&prompt=&lyrics=&gender=&webhook_url=&num_outputs=" +
                  "&lyrics_section_to_extend=&title=");
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto task_id = str(parse(r->body).if_contains("task_id"));
    EXPECT_TRUE(parse(r->body).contains("conversion_id_2")) << "num_outputs left to its default";
    auto neutral = http_request(g.port, "GET", "/v1/extensions/" + task_id, "", {g.key_header()});
    ASSERT_TRUE(neutral && neutral->status == 200);
    auto req = parse(neutral->body)["request"].as_object();
    EXPECT_FALSE(req.contains("gender")) << neutral->body;
    EXPECT_FALSE(req.contains("prompt")) << neutral->body;

    auto blank_required = form(audio + "&extend_after=");
    ASSERT_TRUE(blank_required);
    EXPECT_EQ(blank_required->status, 422) << blank_required->body;
    EXPECT_NE(blank_required->body.find("extend_after"), std::string::npos) << blank_required->body;

    auto json_blank = musicgpt_json_extend(
        g, {{"audio_url", s.audio_url()}, {"extend_after", "20"}, {"gender", ""}});
    ASSERT_TRUE(json_blank);
    EXPECT_EQ(json_blank->status, 422) << json_blank->body;
    EXPECT_NE(json_blank->body.find("gender"), std::string::npos) << json_blank->body;
}

// A task waiting and a task working, read through both shapes while it runs (the sandbox
// waits 1 s before it starts and between its two outputs): MusicGPT's byId says IN_QUEUE, then
// PROCESSING, then COMPLETED (the spellings of its docs' two versions, PROVIDERS.md 1.2);
// MusicAPI's task says PENDING, RUNNING, SUCCESS, its clips pending, then running until made.
TEST(DropIn, ATaskInQueueAndProcessingIsSpelledAsEachProviderSpellsIt) {
    setup s;
    gateway g(s, "sandbox", "1s");
    auto r = musicgpt_json_extend(g, {{"audio_url", s.audio_url()}, {"extend_after", 10}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto task_id = str(parse(r->body).if_contains("task_id"));
    std::vector<std::string> mg_seen, ma_seen;
    std::map<std::string, std::string> msg_of;           // byId status -> its status_msg
    std::map<std::string, std::set<std::string>> clips;  // MusicAPI status -> clip states seen
    const auto until = std::chrono::steady_clock::now() + 12s;
    while (std::chrono::steady_clock::now() < until) {
        auto mg = http_request(g.port, "GET",
                               "/api/public/v1/byId?conversionType=EXTEND&task_id=" + task_id, "",
                               {"Authorization: " + tenant.key});
        auto ma =
            http_request(g.port, "GET", "/api/v1/producer/task/" + task_id, "", {g.key_header()});
        ASSERT_TRUE(mg && mg->status == 200) << (mg ? mg->body : "no answer");
        ASSERT_TRUE(ma && ma->status == 200) << (ma ? ma->body : "no answer");
        auto c = parse(mg->body)["conversion"].as_object();
        const auto mst = str(c.if_contains("status"));
        if (mg_seen.empty() || mg_seen.back() != mst)
            mg_seen.push_back(mst);
        msg_of[mst] = str(c.if_contains("status_msg"));
        auto t = parse(ma->body);
        const auto ast = str(t.if_contains("status"));
        if (ma_seen.empty() || ma_seen.back() != ast)
            ma_seen.push_back(ast);
        EXPECT_EQ(t["code"], 200);
        for (auto& clip : t["data"].as_array())
            clips[ast].insert(str(clip.as_object().if_contains("state")));
        if (mst == "COMPLETED" && ast == "SUCCESS")
            break;
        std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(mg_seen, (std::vector<std::string>{"IN_QUEUE", "PROCESSING", "COMPLETED"}));
    EXPECT_EQ(msg_of["IN_QUEUE"], "In queue");
    EXPECT_EQ(msg_of["PROCESSING"], "Processing");
    EXPECT_EQ(msg_of["COMPLETED"], "Conversion successful");
    EXPECT_EQ(ma_seen, (std::vector<std::string>{"PENDING", "RUNNING", "SUCCESS"}));
    EXPECT_EQ(clips["PENDING"], (std::set<std::string>{"pending"}));
    // While it runs: the first output made, the second on its way.
    EXPECT_EQ(clips["RUNNING"], (std::set<std::string>{"succeeded", "running"}));
    EXPECT_EQ(clips["SUCCESS"], (std::set<std::string>{"succeeded"}));
}

// A task MusicGPT fails (the fake's task_fails): byId says FAILED with the reason, the MusicAPI
// view says FAILED with its refund note, and the caller's webhook_url gets MusicGPT's failure
// form, one per conversion (success false, status FAILED, no audio), verified as Standard
// Webhooks.
TEST(DropIn, AFailedTaskReadsFailedAndCallsBackInMusicGptsFailureForm) {
    setup s;
    const std::string reason = "Audio could not be processed";
    ASSERT_TRUE(s.up.musicgpt.control(
        json::serialize(json::object{{"task_fails", true}, {"fail_message", reason}})));
    gateway g(s, "musicgpt");
    const std::string path = "/hooks/musicgpt-failed";
    auto r = musicgpt_json_extend(g, {{"audio_url", s.up.audio_url()},
                                      {"extend_after", 10},
                                      {"prompt", "anything"},
                                      {"webhook_url", s.up.receiver.url(path)}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto task_id = str(parse(r->body).if_contains("task_id"));
    auto doc = wait_by_id(g, task_id);
    EXPECT_EQ(doc["success"], true);
    auto& c = doc["conversion"].as_object();
    EXPECT_EQ(str(c.if_contains("status")), "FAILED") << json::serialize(doc);
    EXPECT_NE(str(c.if_contains("status_msg")).find(reason), std::string::npos)
        << json::serialize(c);
    EXPECT_EQ(str(c.if_contains("conversion_path_1")), "");
    EXPECT_EQ(str(c.if_contains("conversion_path_2")), "");
    EXPECT_EQ(c["conversion_cost"].to_number<double>(), 0.0) << "nothing was charged";
    auto ma = http_request(g.port, "GET", "/api/v1/producer/task/" + task_id, "", {g.key_header()});
    ASSERT_TRUE(ma && ma->status == 200);
    auto t = parse(ma->body);
    EXPECT_EQ(str(t.if_contains("status")), "FAILED") << ma->body;
    EXPECT_NE(str(t.if_contains("message")).find("Credits were refunded."), std::string::npos);
    EXPECT_NE(str(t.if_contains("message")).find(reason), std::string::npos) << ma->body;
    for (auto& clip : t["data"].as_array())
        EXPECT_EQ(str(clip.as_object().if_contains("state")), "failed") << ma->body;

    expect_musicgpt_failure_callbacks(settled_deliveries(s, path, 2), task_id, "status_msg",
                                      reason);
}

// A task MusicAPI fails (the fake's outcome "fail"): MusicAPI's task says FAILED with its refund
// note and failed clips, byId says FAILED, and the webhook_url gets one song.failed in
// MusicAPI's shape, signed with the request's webhook_secret and as Standard Webhooks.
TEST(DropIn, AFailedTaskReadsFailedAndCallsBackAsSongFailedInMusicApisShape) {
    setup s;
    const std::string reason = "upstream generation error";
    ASSERT_TRUE(s.up.musicapi.control(
        json::serialize(json::object{{"outcome", "fail"}, {"fail_reason", reason}})));
    gateway g(s, "musicapi");
    const std::string path = "/hooks/musicapi-failed";
    auto r = musicapi_create(g, {{"task_type", "extend_music"},
                                 {"clip_id", "abc123xyz789"},
                                 {"starts_at", 20},
                                 {"webhook_url", s.up.receiver.url(path)},
                                 {"webhook_secret", webhook_secret}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto task_id = str(parse(r->body).if_contains("task_id"));
    auto t = wait_task(g, task_id);
    EXPECT_EQ(t["code"], 200);
    EXPECT_EQ(str(t.if_contains("status")), "FAILED") << json::serialize(t);
    EXPECT_EQ(times_refunded(str(t.if_contains("message"))), 1) << json::serialize(t);
    EXPECT_NE(str(t.if_contains("message")).find(reason), std::string::npos) << json::serialize(t);
    ASSERT_FALSE(t["data"].as_array().empty());
    for (auto& clip : t["data"].as_array())
        EXPECT_EQ(str(clip.as_object().if_contains("state")), "failed") << json::serialize(t);
    auto doc = wait_by_id(g, task_id);
    EXPECT_EQ(str(doc["conversion"].as_object().if_contains("status")), "FAILED");
    EXPECT_NE(str(doc["conversion"].as_object().if_contains("status_msg")).find(reason),
              std::string::npos)
        << json::serialize(doc);

    auto got = settled_deliveries(s, path, 1);
    ASSERT_EQ(got.size(), 1u) << json::serialize(got);
    auto b = musicapi_webhook_body(got[0].as_object(), "song.failed");
    const auto body = json::serialize(b);
    EXPECT_EQ(str(b.if_contains("task_id")), task_id);
    EXPECT_EQ(times_refunded(str(b.if_contains("message"))), 1) << body;
    ASSERT_FALSE(b["data"].as_array().empty()) << body;
    for (auto& clip : b["data"].as_array()) {
        EXPECT_EQ(str(clip.as_object().if_contains("state")), "failed") << body;
        EXPECT_EQ(str(clip.as_object().if_contains("audio_url")), "") << body;
    }
}

// MusicGPT's extend with an Idempotency-Key, as on /v1: the same key and body again answer the
// first answer (same task and conversion ids, Idempotent-Replayed) and make no second task; the
// same key with another body is refused (409) in MusicGPT's error shape.
TEST(DropIn, MusicGptsExtendReplaysAnIdempotencyKeyAndRefusesItForAnotherBody) {
    setup s;
    gateway g(s, "sandbox");
    const json::object body{{"audio_url", s.audio_url()}, {"extend_after", 20}, {"prompt", "x"}};
    const std::string key = "Idempotency-Key: mg-dropin-1";
    auto first = musicgpt_json_extend(g, body, {key});
    ASSERT_TRUE(first);
    ASSERT_EQ(first->status, 200) << first->body;
    auto again = musicgpt_json_extend(g, body, {key});
    ASSERT_TRUE(again);
    ASSERT_EQ(again->status, 200) << again->body;
    EXPECT_EQ(again->header("idempotent-replayed").value_or(""), "true");
    auto a = parse(first->body), b = parse(again->body);
    EXPECT_FALSE(str(a.if_contains("task_id")).empty());
    for (const char* f : {"task_id", "conversion_id_1", "conversion_id_2", "provider"})
        EXPECT_EQ(str(b.if_contains(f)), str(a.if_contains(f))) << f;
    EXPECT_EQ(b["credit_estimate"], a["credit_estimate"]);
    auto other = body;
    other["extend_after"] = 25;
    auto refused = musicgpt_json_extend(g, other, {key});
    ASSERT_TRUE(refused);
    EXPECT_EQ(refused->status, 409) << refused->body;
    auto e = parse(refused->body);
    EXPECT_EQ(e["success"], false) << refused->body;
    EXPECT_NE(str(e.if_contains("message")).find("Idempotency-Key"), std::string::npos);
    EXPECT_EQ(task_count(g), 1u);
}

// MusicAPI's producer/create with an Idempotency-Key: replayed for the same body (same task,
// one task), refused (409) in MusicAPI's {"code","message"} for another body, a different
// webhook_secret included (the webhooks would be signed with another key).
TEST(DropIn, MusicApisCreateReplaysAnIdempotencyKeyAndRefusesItForAnotherBody) {
    setup s;
    gateway g(s, "sandbox");
    const auto clip = upload_clip(g, s.audio_url());
    ASSERT_FALSE(clip.empty());
    const json::object body{{"task_type", "extend_music"},
                            {"clip_id", clip},
                            {"starts_at", 20},
                            {"webhook_url", s.up.receiver.url("/hooks/ma-idem")},
                            {"webhook_secret", webhook_secret}};
    const std::string key = "Idempotency-Key: ma-dropin-1";
    auto first = musicapi_create(g, body, {key});
    ASSERT_TRUE(first);
    ASSERT_EQ(first->status, 200) << first->body;
    auto again = musicapi_create(g, body, {key});
    ASSERT_TRUE(again);
    ASSERT_EQ(again->status, 200) << again->body;
    EXPECT_EQ(again->header("idempotent-replayed").value_or(""), "true");
    const auto task_id = str(parse(first->body).if_contains("task_id"));
    EXPECT_FALSE(task_id.empty());
    EXPECT_EQ(str(parse(again->body).if_contains("task_id")), task_id);
    EXPECT_EQ(str(parse(again->body).if_contains("message")), "success");
    auto other = body;
    other["starts_at"] = 25;
    auto other_secret = body;
    other_secret["webhook_secret"] = "another-secret";
    for (const auto& o : {other, other_secret}) {
        auto refused = musicapi_create(g, o, {key});
        ASSERT_TRUE(refused);
        EXPECT_EQ(refused->status, 409) << json::serialize(o) << " -> " << refused->body;
        auto e = parse(refused->body);
        EXPECT_EQ(e["code"], 409) << refused->body;
        EXPECT_NE(str(e.if_contains("message")).find("Idempotency-Key"), std::string::npos);
    }
    EXPECT_EQ(task_count(g), 1u);
    EXPECT_EQ(str(wait_task(g, task_id).if_contains("status")), "SUCCESS");
}

namespace {

// A request with a body of `content_length` bytes announced, of which only the first few are
// sent: the answer to its head.
std::optional<segue::test::http_response> announce_body(std::uint16_t port,
                                                        const std::string& target,
                                                        const std::vector<std::string>& headers,
                                                        std::size_t content_length) {
    segue::test::http_connection c(port);
    std::string head = "POST " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (const auto& h : headers)
        head += h + "\r\n";
    head += "Content-Length: " + std::to_string(content_length) + "\r\n\r\n" +
            std::string(std::min<std::size_t>(content_length, 1024), 'x');
    if (!c.send_raw(head))
        return std::nullopt;
    return c.read_response();
}

}  // namespace

// A body over the drop-in route's limit, refused by its Content-Length before it is read, and a
// header block over limits.max_header_bytes: the provider's own error shape (as the same body
// sent chunked gets), naming the setting that makes the limit; /v1 keeps problem+json.
TEST(DropIn, OversizedRequestsAreRefusedInTheProvidersShapesNamingTheSetting) {
    setup s;
    gateway g(s, "sandbox", "50ms", {.api = "  max_upload_bytes: 1MiB\n  max_json_bytes: 8KiB\n"});
    auto mg = announce_body(
        g.port, "/api/public/v1/extend",
        {"Authorization: " + tenant.key, "Content-Type: multipart/form-data; boundary=xyz"},
        7'000'000);
    ASSERT_TRUE(mg);
    EXPECT_EQ(mg->status, 413) << mg->body;
    EXPECT_EQ(mg->header("content-type").value_or(""), "application/json") << mg->body;
    auto b = parse(mg->body);
    EXPECT_EQ(b["success"], false) << mg->body;
    EXPECT_NE(str(b.if_contains("message")).find("(api.max_upload_bytes)"), std::string::npos)
        << mg->body;

    auto create = announce_body(g.port, "/api/v1/producer/create",
                                {g.key_header(), "Content-Type: application/json"}, 9000);
    ASSERT_TRUE(create);
    EXPECT_EQ(create->status, 413) << create->body;
    EXPECT_EQ(create->header("content-type").value_or(""), "application/json");
    b = parse(create->body);
    EXPECT_EQ(b["code"], 413) << create->body;
    EXPECT_NE(str(b.if_contains("message")).find("(api.max_json_bytes)"), std::string::npos)
        << create->body;

    auto upload = announce_body(g.port, "/api/v1/producer/upload",
                                {g.key_header(), "Content-Type: application/json"}, 200'000);
    ASSERT_TRUE(upload);
    EXPECT_EQ(upload->status, 413) << upload->body;
    EXPECT_EQ(upload->header("content-type").value_or(""), "application/json");
    EXPECT_EQ(parse(upload->body)["code"], 413) << upload->body;
    EXPECT_EQ(upload->body.find("limits.max_body_bytes"), std::string::npos) << upload->body;

    // Headers over limits.max_header_bytes (16 KiB): 431, in each shape.
    const std::string big = "X-Big: " + std::string(20'000, 'a');
    auto h = http_request(g.port, "GET", "/api/public/v1/byId?conversionType=EXTEND&task_id=x", "",
                          {"Authorization: " + tenant.key, big});
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 431);
    EXPECT_EQ(h->header("content-type").value_or(""), "application/json") << h->body;
    EXPECT_EQ(parse(h->body)["success"], false) << h->body;
    h = http_request(g.port, "GET", "/api/v1/producer/task/x", "", {g.key_header(), big});
    ASSERT_TRUE(h);
    EXPECT_EQ(h->status, 431);
    EXPECT_EQ(parse(h->body)["code"], 431) << h->body;

    // /v1 as before.
    auto v1 = announce_body(g.port, "/v1/extensions",
                            {g.key_header(), "Content-Type: multipart/form-data; boundary=xyz"},
                            7'000'000);
    ASSERT_TRUE(v1);
    EXPECT_EQ(v1->status, 413);
    EXPECT_EQ(v1->header("content-type").value_or(""), "application/problem+json");
}

// A full data volume (storage.min_free_bytes above what is free): both drop-in creates answer
// 507 in their provider's shape with Retry-After, as /v1 does.
TEST(DropIn, AFullDiskIsA507WithRetryAfterOnBothCreates) {
    setup s;
    gateway g(s, "sandbox", "50ms",
              {.tail = segue::test::storage_yaml("@DIR@", "  min_free_bytes: 1000GiB\n")});
    auto mg = musicgpt_json_extend(g, {{"audio_url", s.audio_url()}, {"extend_after", 10}});
    ASSERT_TRUE(mg);
    EXPECT_EQ(mg->status, 507) << mg->body;
    EXPECT_EQ(mg->header("retry-after").value_or(""), "60");
    EXPECT_EQ(parse(mg->body)["success"], false) << mg->body;
    const auto clip = upload_clip(g, s.audio_url());
    auto ma =
        musicapi_create(g, {{"task_type", "extend_music"}, {"clip_id", clip}, {"starts_at", 10}});
    ASSERT_TRUE(ma);
    EXPECT_EQ(ma->status, 507) << ma->body;
    EXPECT_EQ(ma->header("retry-after").value_or(""), "60");
    EXPECT_EQ(parse(ma->body)["code"], 507) << ma->body;
    auto v1 = http_request(
        g.port, "POST", "/v1/extensions",
        json::serialize(json::object{{"audio_url", s.audio_url()}, {"extend_after", 10}}),
        {g.key_header(), "Content-Type: application/json"});
    ASSERT_TRUE(v1);
    EXPECT_EQ(v1->status, 507) << v1->body;
    EXPECT_EQ(v1->header("retry-after").value_or(""), "60");
}

// A task canceled while it runs, created in MusicGPT's shape: each conversion not yet reported
// gets MusicGPT's failure callback (success false, the reason: canceled), once; one created in
// MusicAPI's shape gets song.failed.
TEST(DropIn, ACanceledTaskCallsBackEachConversionNotMadeAsFailed) {
    setup s;
    gateway g(s, "sandbox", "5s");
    const std::string path = "/hooks/musicgpt-canceled";
    auto r = musicgpt_json_extend(g, {{"audio_url", s.audio_url()},
                                      {"extend_after", 10},
                                      {"webhook_url", s.up.receiver.url(path)}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto task_id = str(parse(r->body).if_contains("task_id"));
    auto c =
        http_request(g.port, "POST", "/v1/extensions/" + task_id + "/cancel", "", {g.key_header()});
    ASSERT_TRUE(c && c->status == 200) << (c ? c->body : "no answer");
    expect_musicgpt_failure_callbacks(settled_deliveries(s, path, 2), task_id, "reason", "cancel");
    auto by_id = http_request(
        g.port, "GET", "/api/public/v1/byId?conversionType=EXTEND&conversion_id=" + task_id + "-1",
        "", {"Authorization: " + tenant.key});
    ASSERT_TRUE(by_id && by_id->status == 200);
    EXPECT_EQ(str(parse(by_id->body)["conversion"].as_object().if_contains("status")), "FAILED");

    const std::string ma_path = "/hooks/musicapi-canceled";
    auto ma = musicapi_create(g, {{"task_type", "extend_music"},
                                  {"clip_id", upload_clip(g, s.audio_url())},
                                  {"starts_at", 10},
                                  {"webhook_url", s.up.receiver.url(ma_path)},
                                  {"webhook_secret", webhook_secret}});
    ASSERT_TRUE(ma && ma->status == 200) << (ma ? ma->body : "no answer");
    const auto ma_task = str(parse(ma->body).if_contains("task_id"));
    c = http_request(g.port, "POST", "/v1/extensions/" + ma_task + "/cancel", "", {g.key_header()});
    ASSERT_TRUE(c && c->status == 200) << (c ? c->body : "no answer");
    auto ma_got = settled_deliveries(s, ma_path, 1);
    ASSERT_EQ(ma_got.size(), 1u) << json::serialize(ma_got);
    auto body = musicapi_webhook_body(ma_got[0].as_object(), "song.failed");
    EXPECT_EQ(str(body.if_contains("task_id")), ma_task);
}

// api.public_base_url unset (the shipped default): the drop-in shapes still hand out signed
// links, relative ones, that a client fetches without a key, as /v1 does; the start-up log
// says the drop-in links are relative.
TEST(DropIn, WithoutAPublicBaseUrlDropInLinksAreSignedAndRelative) {
    setup s;
    gateway g(s, "sandbox", "50ms", {.public_base_url = false});
    auto r = musicgpt_json_extend(g, {{"audio_url", s.audio_url()}, {"extend_after", 10}});
    ASSERT_TRUE(r);
    ASSERT_EQ(r->status, 200) << r->body;
    const auto task_id = str(parse(r->body).if_contains("task_id"));
    auto doc = wait_by_id(g, task_id);
    const auto path = str(doc["conversion"].as_object().if_contains("conversion_path_1"));
    EXPECT_EQ(path.rfind("/v1/files/", 0), 0u) << json::serialize(doc);
    EXPECT_NE(path.find("expires="), std::string::npos) << path;
    auto f = http_request(g.port, "GET", path);
    ASSERT_TRUE(f);
    EXPECT_EQ(f->status, 200) << path << ": " << f->body;
    auto t = wait_task(g, task_id);
    const auto audio = str(t["data"].as_array()[0].as_object().if_contains("audio_url"));
    EXPECT_NE(audio.find("expires="), std::string::npos) << audio;
    const auto log = g.proc->log();
    EXPECT_NE(log.find("api.public_base_url"), std::string::npos) << log;
}

// A MusicAPI clip_id that looks like an upload of this gateway but does not verify (another
// tenant's, another gateway's, altered) is refused at create in MusicAPI's shape, as its task
// is unknown; nothing goes upstream.
TEST(DropIn, MusicApisCreateRefusesAnUploadIdThatDoesNotVerify) {
    setup s;
    gateway g(s, "musicapi");
    auto clip = upload_clip(g, s.audio_url());
    ASSERT_FALSE(clip.empty());
    clip.back() = clip.back() == 'a' ? 'b' : 'a';
    for (const std::string& id : {clip, std::string("upl_bm90LWEtdXJs.0123456789abcdef")}) {
        auto r =
            musicapi_create(g, {{"task_type", "extend_music"}, {"clip_id", id}, {"starts_at", 10}});
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 400) << id << ": " << r->body;
        auto b = parse(r->body);
        EXPECT_EQ(b["code"], 400) << r->body;
        EXPECT_FALSE(str(b.if_contains("message")).empty()) << r->body;
    }
    EXPECT_EQ(task_count(g), 0u);
}

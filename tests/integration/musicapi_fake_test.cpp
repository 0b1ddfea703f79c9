// Self-test of the fake MusicAPI.ai (tests/fakes/musicapi): the real fake_musicapi binary on
// loopback, driven over HTTP: auth errors, the asynchronous upload (the fake downloads the URL
// from a tiny in-test server), extend, both task shapes, 410 / 400 / 403 answers, failed tasks
// with refunds, signed webhooks and the 504 timeout fault.

#include <gtest/gtest.h>
#include <netinet/in.h>
#include <poll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <atomic>
#include <chrono>
#include <condition_variable>
#include <fstream>
#include <map>
#include <mutex>
#include <set>
#include <sstream>
#include <thread>

#include "gateway/audio/audio.hpp"
#include "gateway/util/crypto.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
using segue::test::http_request;
using segue::test::http_response;

namespace {

const std::string auth = "Authorization: Bearer ma-key";
const std::string json_type = "Content-Type: application/json";

json::object parse(const std::string& s) {
    return json::parse(s).as_object();
}

// A tiny blocking HTTP/1.1 server on a thread: serves fixed bodies for GET and records every
// request (the webhook receiver and the host of the audio the fake downloads).
class tiny_server {
  public:
    struct received {
        std::string method, target, body;
        std::map<std::string, std::string> headers;  // lower-case names
    };

    tiny_server() {
        fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
        sockaddr_in a{};
        a.sin_family = AF_INET;
        a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
        if (::bind(fd_, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 || ::listen(fd_, 16) != 0)
            throw std::runtime_error("tiny_server: bind/listen failed");
        socklen_t len = sizeof a;
        ::getsockname(fd_, reinterpret_cast<sockaddr*>(&a), &len);
        port_ = ntohs(a.sin_port);
        thread_ = std::thread([this] { loop(); });
    }
    ~tiny_server() {
        stop_ = true;
        thread_.join();
        ::close(fd_);
    }
    std::string url(const std::string& path) const {
        return "http://127.0.0.1:" + std::to_string(port_) + path;
    }
    void serve(const std::string& path, std::string body) {
        std::lock_guard lock(mu_);
        files_[path] = std::move(body);
    }
    // Waits until at least `n` requests arrived; returns them all.
    std::vector<received> wait_for(std::size_t n, std::chrono::milliseconds limit = 5s) {
        std::unique_lock lock(mu_);
        cv_.wait_for(lock, limit, [&] { return got_.size() >= n; });
        return got_;
    }
    std::vector<received> snapshot() {
        std::lock_guard lock(mu_);
        return got_;
    }

  private:
    void loop() {
        while (!stop_) {
            pollfd p{fd_, POLLIN, 0};
            if (::poll(&p, 1, 20) <= 0)
                continue;
            int c = ::accept(fd_, nullptr, nullptr);
            if (c < 0)
                continue;
            timeval tv{2, 0};
            ::setsockopt(c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
            handle(c);
            ::close(c);
        }
    }
    void handle(int c) {
        std::string buf;
        char chunk[8192];
        std::size_t head_end;
        while ((head_end = buf.find("\r\n\r\n")) == std::string::npos) {
            auto n = ::recv(c, chunk, sizeof chunk, 0);
            if (n <= 0)
                return;
            buf.append(chunk, static_cast<std::size_t>(n));
        }
        received r;
        std::istringstream head(buf.substr(0, head_end));
        std::string line;
        std::getline(head, line);
        std::istringstream first(line);
        first >> r.method >> r.target;
        std::size_t length = 0;
        while (std::getline(head, line)) {
            if (!line.empty() && line.back() == '\r')
                line.pop_back();
            auto colon = line.find(':');
            if (colon == std::string::npos)
                continue;
            std::string name = line.substr(0, colon);
            for (auto& ch : name)
                ch = static_cast<char>(std::tolower(static_cast<unsigned char>(ch)));
            std::string value = line.substr(colon + 1);
            value.erase(0, value.find_first_not_of(' '));
            if (name == "content-length")
                length = std::stoul(value);
            r.headers[name] = value;
        }
        r.body = buf.substr(head_end + 4);
        while (r.body.size() < length) {
            auto n = ::recv(c, chunk, sizeof chunk, 0);
            if (n <= 0)
                return;
            r.body.append(chunk, static_cast<std::size_t>(n));
        }
        std::string status = "200 OK", body = "ok", type = "text/plain";
        {
            std::lock_guard lock(mu_);
            if (r.method == "GET") {
                auto it = files_.find(r.target);
                if (it == files_.end()) {
                    status = "404 Not Found";
                    body = "not found";
                } else {
                    body = it->second;
                    type = "application/octet-stream";
                }
            }
        }
        std::string out = "HTTP/1.1 " + status + "\r\nContent-Type: " + type +
                          "\r\nContent-Length: " + std::to_string(body.size()) +
                          "\r\nConnection: close\r\n\r\n" + body;
        for (std::size_t off = 0; off < out.size();) {
            auto n = ::send(c, out.data() + off, out.size() - off, MSG_NOSIGNAL);
            if (n <= 0)
                break;
            off += static_cast<std::size_t>(n);
        }
        {
            std::lock_guard lock(mu_);
            got_.push_back(std::move(r));
        }
        cv_.notify_all();
    }

    int fd_ = -1;
    std::uint16_t port_ = 0;
    std::atomic<bool> stop_{false};
    std::thread thread_;
    std::mutex mu_;
    std::condition_variable cv_;
    std::map<std::string, std::string> files_;
    std::vector<received> got_;
};

// The fake MusicAPI.ai as a child process (fast timings: RUNNING at 100 ms, done at 300 ms).
class fake_musicapi {
  public:
    fake_musicapi() {
        const std::string port_file = dir_.file("port");
        proc_.start({SEGUE_FAKE_MUSICAPI_PATH, "--listen", "127.0.0.1:0", "--port-file", port_file,
                     "--api-key", "ma-key", "--webhook-secret", "vendor-default", "--clip",
                     "seed-clip:20", "--song-seconds", "2", "--control",
                     R"({"running_after_ms":100,"finish_after_ms":300})"},
                    dir_.file("log"));
        for (int i = 0; i < 500; ++i) {
            std::ifstream in(port_file);
            int p = 0;
            if (in >> p && p > 0) {
                port_ = static_cast<std::uint16_t>(p);
                return;
            }
            std::this_thread::sleep_for(10ms);
        }
        throw std::runtime_error("fake_musicapi did not start");
    }
    std::uint16_t port() const { return port_; }
    void control(const std::string& body) {
        auto r = http_request(port_, "POST", "/_control", body, {json_type});
        ASSERT_TRUE(r);
        ASSERT_EQ(r->status, 200) << r->body;
    }
    json::object get(const std::string& control_path) {
        auto r = http_request(port_, "GET", control_path);
        EXPECT_TRUE(r && r->status == 200);
        return r ? parse(r->body) : json::object();
    }
    json::object ledger() { return get("/_control/ledger"); }
    std::optional<http_response> api(const std::string& method, const std::string& path,
                                     const std::string& body = {},
                                     std::vector<std::string> headers = {auth}) {
        if (!body.empty())
            headers.push_back(json_type);
        return http_request(port_, method, "/api/v1" + path, body, headers);
    }
    // POST /producer/create (or upload); the task id, asserting a 200.
    std::string submit(const std::string& path, const std::string& body) {
        auto r = api("POST", path, body);
        EXPECT_TRUE(r);
        if (!r)
            return {};
        EXPECT_EQ(r->status, 200) << r->body;
        auto o = parse(r->body);
        EXPECT_EQ(o["message"], "success");
        return o.contains("task_id") ? std::string(o["task_id"].as_string()) : "";
    }
    // Polls the task until SUCCESS / FAILED; `seen` collects every status on the way.
    json::object wait_done(const std::string& id, std::set<std::string>* seen = nullptr) {
        const auto until = std::chrono::steady_clock::now() + 5s;
        json::object t;
        while (std::chrono::steady_clock::now() < until) {
            auto r = api("GET", "/producer/task/" + id);
            if (r && r->status == 200) {
                t = parse(r->body);
                const std::string st(t["status"].as_string());
                if (seen)
                    seen->insert(st);
                if (st == "SUCCESS" || st == "FAILED")
                    return t;
            }
            std::this_thread::sleep_for(20ms);
        }
        ADD_FAILURE() << "task not done: " << json::serialize(t);
        return t;
    }

  private:
    segue::test::temp_dir dir_;
    segue::test::child_process proc_;
    std::uint16_t port_ = 0;
};

std::string make_song(const segue::test::temp_dir& d, double seconds, const std::string& fmt) {
    const std::string path = d.file("in." + fmt);
    EXPECT_TRUE(segue::audio::write_test_song(path, seconds, 22050, 1, 120, fmt));
    return segue::test::read_file(path);
}

// An extend_music body; `extra` is more JSON members (",\"k\":v").
std::string extend_body(const std::string& clip, double starts_at, const std::string& extra = "",
                        const std::string& lyrics = "la la la") {
    return R"({"task_type":"extend_music","clip_id":")" + clip + R"(","starts_at":)" +
           std::to_string(starts_at) + R"(,"instruction":"add soaring strings","lyrics":")" +
           lyrics + R"(","length":30)" + extra + "}";
}

// A path of an absolute URL the fake handed out ("http://127.0.0.1:P/files/x.mp3" -> "/files/…").
std::string path_of(const json::value& url) {
    std::string u(url.as_string());
    auto p = u.find('/', u.find("://") + 3);
    return u.substr(p);
}

}  // namespace

TEST(MusicApiFake, AuthErrorsAreVerbatim) {
    fake_musicapi f;
    auto r = f.api("GET", "/get-credits", "", {});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(r->body, R"({"code":401,"message":"Authorization header is missing."})");
    r = f.api("GET", "/get-credits", "", {"Authorization: ma-key"});
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(r->body, R"({"code":401,"message":"Invalid authorization format."})");
    r = f.api("GET", "/producer/task/x", "", {"Authorization: Bearer "});
    EXPECT_EQ(r->status, 401);
    r = f.api("POST", "/producer/create", "{}", {"Authorization: Bearer wrong"});
    EXPECT_EQ(r->status, 401);
    EXPECT_EQ(parse(r->body)["code"], 401);
    r = f.api("GET", "/get-credits");
    EXPECT_EQ(r->status, 200);
    EXPECT_EQ(r->body, R"({"code":200,"credits":1000})");
    r = f.api("GET", "/producer/task/no-such-task");
    EXPECT_EQ(r->status, 400);
    EXPECT_EQ(r->body, R"({"code":400,"message":"task not found."})");
    // Everything is in the request log, by route.
    auto reqs = f.get("/_control/requests?route=credits")["requests"].as_array();
    EXPECT_EQ(reqs.size(), 3u);
}

TEST(MusicApiFake, UploadDownloadsTheUrlThenTheClipExtends) {
    fake_musicapi f;
    tiny_server origin;
    segue::test::temp_dir d;
    const std::string song = make_song(d, 3, "wav");
    origin.serve("/signed/song.wav?sig=abc", song);
    origin.serve("/junk.txt", "this is not audio");

    // Upload: 2 credits, asynchronous, the fake fetches the URL itself.
    std::set<std::string> seen;
    const auto up = f.submit("/producer/upload",
                             R"({"audio_url":")" + origin.url("/signed/song.wav?sig=abc") + "\"}");
    auto t = f.wait_done(up, &seen);
    ASSERT_EQ(t["status"], "SUCCESS") << json::serialize(t);
    EXPECT_TRUE(seen.count("PENDING") || seen.count("RUNNING"));
    auto& c = t["data"].as_array().at(0).as_object();
    const std::string clip(c["clip_id"].as_string());
    EXPECT_EQ(c["id"], c["clip_id"]);
    EXPECT_EQ(c["state"], "succeeded");
    EXPECT_EQ(c["isFlagged"], false);
    EXPECT_EQ(c["title"], "song");
    EXPECT_FALSE(c["lyrics"].as_string().empty());
    EXPECT_NEAR(c["duration"].to_number<double>(), 3.0, 0.05);
    ASSERT_EQ(origin.snapshot().size(), 1u);
    EXPECT_EQ(origin.snapshot()[0].target, "/signed/song.wav?sig=abc");
    // What it received, for comparison with the original; the clip serves those very bytes.
    auto uploads = f.get("/_control/uploads")["uploads"].as_array();
    ASSERT_EQ(uploads.size(), 1u);
    auto& dl = uploads[0].as_object()["download"].as_object();
    EXPECT_EQ(dl["sha256"].as_string(), segue::util::sha256_hex(song));
    EXPECT_EQ(dl["size"].to_number<std::size_t>(), song.size());
    auto audio = http_request(f.port(), "GET", path_of(c["audio_url"]));
    ASSERT_TRUE(audio);
    EXPECT_EQ(audio->status, 200);
    EXPECT_TRUE(audio->body == song);

    // Extend that clip: 12 credits, PENDING -> RUNNING -> SUCCESS, real audio served.
    auto r = f.api("POST", "/producer/create", extend_body(clip, 3.5));
    EXPECT_EQ(r->status, 400) << "beyond the clip's 3 s";
    EXPECT_NE(r->body.find("beyond the clip's duration"), std::string::npos) << r->body;
    seen.clear();
    const auto ext = f.submit("/producer/create", extend_body(clip, 1.5));
    t = f.wait_done(ext, &seen);
    ASSERT_EQ(t["status"], "SUCCESS") << json::serialize(t);
    EXPECT_TRUE(seen.count("PENDING"));
    EXPECT_TRUE(seen.count("RUNNING"));
    auto& out = t["data"].as_array().at(0).as_object();
    EXPECT_EQ(out["lyrics"], "la la la");
    EXPECT_EQ(out["title"], "Add Soaring Strings");
    EXPECT_GT(out["duration"].to_number<double>(), 1);
    auto mp3 = http_request(f.port(), "GET", path_of(out["audio_url"]));
    auto wav = http_request(f.port(), "GET", path_of(out["wav_url"]));
    auto png = http_request(f.port(), "GET", path_of(out["image_url"]));
    ASSERT_TRUE(mp3 && wav && png);
    EXPECT_EQ(mp3->status, 200);
    EXPECT_GT(mp3->body.size(), 1000u);
    EXPECT_EQ(wav->body.substr(0, 4), "RIFF");
    EXPECT_EQ(png->body.substr(1, 3), "PNG");

    // A URL that is not audio: FAILED, the 2 credits back.
    const auto bad =
        f.submit("/producer/upload", R"({"audio_url":")" + origin.url("/junk.txt") + "\"}");
    t = f.wait_done(bad);
    EXPECT_EQ(t["status"], "FAILED");
    EXPECT_NE(std::string(t["message"].as_string()).find("Credits have been refunded"),
              std::string::npos);
    auto l = f.ledger();
    EXPECT_EQ(l["credits"], 1000 - 2 - 12);
    EXPECT_EQ(l["charged"], 2 + 12 + 2);
    EXPECT_EQ(l["refunded"], 2);
}

TEST(MusicApiFake, LegacyShapeWithTwoClipsAnd202WhileProcessing) {
    fake_musicapi f;
    f.control(R"({"shape":"legacy","legacy_processing_202":true,"clips":2,"finish_after_ms":600})");
    const auto id =
        f.submit("/producer/create", extend_body("seed-clip", 5, R"(,"mv":"FUZZ-2.0")"));
    auto r = f.api("GET", "/producer/task/" + id);
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 202);
    auto p = parse(r->body);
    EXPECT_EQ(p["code"], 202);
    EXPECT_EQ(p["type"], "processing");
    EXPECT_TRUE(p["error"].is_string());
    std::this_thread::sleep_for(750ms);
    r = f.api("GET", "/producer/task/" + id);
    ASSERT_EQ(r->status, 200) << r->body;
    auto t = parse(r->body);
    EXPECT_FALSE(t.contains("status"));
    auto& data = t["data"].as_array();
    ASSERT_EQ(data.size(), 2u);
    for (auto& v : data) {
        auto& c = v.as_object();
        for (const char* k : {"clip_id", "title", "sound", "lyrics", "image_url", "audio_url",
                              "video_url", "created_at", "mv", "seed", "duration", "state"})
            EXPECT_TRUE(c.contains(k)) << k;
        EXPECT_EQ(c["state"], "succeeded");
        EXPECT_EQ(c["mv"], "FUZZ-2.0");
    }
    EXPECT_NE(data[0].as_object()["clip_id"], data[1].as_object()["clip_id"]);
    // Without the 202 option, the legacy shape says pending / running in data[].state.
    f.control(R"({"legacy_processing_202":false,"never_finish":true})");
    const auto id2 = f.submit("/producer/create", extend_body("seed-clip", 5));
    std::this_thread::sleep_for(300ms);
    r = f.api("GET", "/producer/task/" + id2);
    ASSERT_EQ(r->status, 200);
    EXPECT_EQ(parse(r->body)["data"].as_array()[0].as_object()["state"], "running");
}

TEST(MusicApiFake, RemovedTaskTypesAre410AndValidationIs400) {
    fake_musicapi f;
    for (const char* t : {"music_variation", "swap_music_vocals", "swap_music_sound"}) {
        auto r = f.api("POST", "/producer/create", R"({"task_type":")" + std::string(t) + "\"}");
        EXPECT_EQ(r->status, 410) << t;
        EXPECT_EQ(parse(r->body)["code"], 410);
    }
    auto expect_400 = [&f](const std::string& body, const std::string& message) {
        auto r = f.api("POST", "/producer/create", body);
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 400) << body;
        EXPECT_EQ(parse(r->body)["message"].as_string(), message) << r->body;
    };
    expect_400(R"({"task_type":"make_noise"})", "Invalid task_type 'make_noise'.");
    expect_400(R"({"clip_id":"seed-clip"})", "task_type is required.");
    expect_400(R"({"task_type":"extend_music","starts_at":1})", "clip_id is required.");
    expect_400(R"({"task_type":"extend_music","clip_id":"nope","starts_at":1})",
               "clip_id 'nope' not found.");
    expect_400(R"({"task_type":"extend_music","clip_id":"seed-clip","starts_at":-1})",
               "starts_at must be greater than or equal to 0.");
    expect_400(R"({"task_type":"extend_music","clip_id":"seed-clip","starts_at":"5"})",
               "starts_at must be a number.");
    expect_400(R"({"task_type":"extend_music","clip_id":"seed-clip","starts":25})",
               "starts (25) is beyond the clip's duration (20 s).");
    // The legacy names are accepted.
    const auto id = f.submit("/producer/create",
                             R"({"task_type":"extend_music","clip_id":"seed-clip","starts":4,)"
                             R"("lyrics_text":"old style"})");
    auto t = f.wait_done(id);
    EXPECT_EQ(t["data"].as_array()[0].as_object()["lyrics"], "old style");
    EXPECT_EQ(f.ledger()["charged"], 12) << "only the accepted create is charged";
}

TEST(MusicApiFake, CreditsAndModerationAre403) {
    fake_musicapi f;
    auto r = f.api("POST", "/producer/create",
                   extend_body("seed-clip", 5, "", "first line\\nsing the COPYRIGHTED hook"));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 403);
    EXPECT_EQ(r->body, R"({"code":403,"message":"The lyrics contain copyrighted content: )"
                       R"('sing the COPYRIGHTED hook'"})");
    f.control(R"({"credits":11})");
    r = f.api("POST", "/producer/create", extend_body("seed-clip", 5));
    EXPECT_EQ(r->status, 403);
    EXPECT_EQ(r->body,
              R"({"code":403,"message":"The remaining credits are not enough. You can buy more )"
              R"(one-time credit packs or subscribe."})");
    auto l = f.ledger();
    EXPECT_EQ(l["credits"], 11);
    EXPECT_EQ(l["charged"], 0);
    EXPECT_EQ(l["ledger"].as_array().back().as_object()["kind"], "set");
    EXPECT_EQ(f.api("GET", "/get-credits")->body, R"({"code":200,"credits":11})");
}

TEST(MusicApiFake, FailedExtendRefundsTheCredits) {
    fake_musicapi f;
    f.control(R"({"fail_next":1,"fail_reason":"model overloaded"})");
    const auto id = f.submit("/producer/create", extend_body("seed-clip", 5));
    auto t = f.wait_done(id);
    EXPECT_EQ(t["status"], "FAILED");
    EXPECT_EQ(t["message"], "Generation failed: model overloaded. Credits have been refunded.");
    auto l = f.ledger();
    EXPECT_EQ(l["credits"], 1000);
    EXPECT_EQ(l["charged"], 12);
    EXPECT_EQ(l["refunded"], 12);
    auto& entries = l["ledger"].as_array();
    ASSERT_EQ(entries.size(), 2u);
    EXPECT_EQ(entries[1].as_object()["kind"], "refund");
    EXPECT_EQ(entries[1].as_object()["task_id"].as_string(), id);
    // fail_next was used up: the next one succeeds.
    EXPECT_EQ(f.wait_done(f.submit("/producer/create", extend_body("seed-clip", 5)))["status"],
              "SUCCESS");
}

TEST(MusicApiFake, WebhooksAreSignedOverTimestampDotBody) {
    fake_musicapi f;
    tiny_server receiver;
    auto verify = [](const tiny_server::received& w, const std::string& secret) {
        const std::string expected =
            "sha256=" + segue::util::hex_encode(segue::util::hmac_sha256(
                            secret, w.headers.at("x-webhook-timestamp") + "." + w.body));
        return w.headers.at("x-webhook-signature") == expected;
    };
    // With the request's secret, a success.
    const auto ok_id = f.submit("/producer/create",
                                extend_body("seed-clip", 5,
                                            R"(,"webhook_url":")" + receiver.url("/hook") +
                                                R"(","webhook_secret":"s3cret","tags":"pop")"));
    auto got = receiver.wait_for(1);
    ASSERT_EQ(got.size(), 1u);
    const auto& w = got[0];
    EXPECT_EQ(w.method, "POST");
    EXPECT_EQ(w.target, "/hook");
    EXPECT_EQ(w.headers.at("content-type"), "application/json");
    EXPECT_EQ(w.headers.at("x-webhook-event"), "song.completed");
    EXPECT_EQ(w.headers.at("x-webhook-id"), w.headers.at("idempotency-key"));
    const auto ts = std::stoll(w.headers.at("x-webhook-timestamp"));
    EXPECT_NEAR(static_cast<double>(ts),
                static_cast<double>(std::chrono::duration_cast<std::chrono::seconds>(
                                        std::chrono::system_clock::now().time_since_epoch())
                                        .count()),
                5);
    EXPECT_TRUE(verify(w, "s3cret"));
    EXPECT_FALSE(verify(w, "vendor-default"));
    auto p = parse(w.body);
    EXPECT_EQ(p["code"], 200);
    EXPECT_EQ(p["task_id"].as_string(), ok_id);
    auto& c = p["data"].as_array().at(0).as_object();
    EXPECT_EQ(c["state"], "succeeded");
    EXPECT_EQ(c["tags"], "pop");
    EXPECT_TRUE(c["duration"].is_string()) << "a string in webhooks";
    for (const char* k : {"clip_id", "title", "lyrics", "image_url", "audio_url", "wav_url",
                          "video_url", "created_at", "gpt_description_prompt", "mv"})
        EXPECT_TRUE(c.contains(k)) << k;

    // No secret in the request: the vendor default; a failure; one duplicate with a new id.
    f.control(R"({"fail_next":1,"webhook_duplicates":1})");
    const auto fail_id = f.submit(
        "/producer/create",
        extend_body("seed-clip", 5, R"(,"webhook_url":")" + receiver.url("/hook2") + "\""));
    got = receiver.wait_for(3);
    ASSERT_EQ(got.size(), 3u);
    for (std::size_t i = 1; i < 3; ++i) {
        EXPECT_EQ(got[i].headers.at("x-webhook-event"), "song.failed");
        EXPECT_TRUE(verify(got[i], "vendor-default"));
        auto b = parse(got[i].body);
        EXPECT_EQ(b["task_id"].as_string(), fail_id);
        EXPECT_EQ(b["data"].as_array()[0].as_object()["state"], "failed");
        EXPECT_NE(std::string(b["message"].as_string()).find("refunded"), std::string::npos);
    }
    EXPECT_NE(got[1].headers.at("x-webhook-id"), got[2].headers.at("x-webhook-id"));

    // A wrong signature on demand.
    f.control(R"({"webhook_duplicates":0,"webhook_bad_signature":true})");
    f.submit("/producer/create",
             extend_body("seed-clip", 5, R"(,"webhook_url":")" + receiver.url("/hook3") + "\""));
    got = receiver.wait_for(4);
    ASSERT_EQ(got.size(), 4u);
    EXPECT_FALSE(verify(got[3], "vendor-default"));
    auto log = f.get("/_control/webhooks")["webhooks"].as_array();
    EXPECT_EQ(log.size(), 4u);
}

TEST(MusicApiFake, TimeoutFaultLeavesTheBalanceAndFaultsUseTheVendorBody) {
    fake_musicapi f;
    f.control(R"({"faults":[{"match":"create","status":504,"times":1},)"
              R"({"match":"task","status":500,"times":1},)"
              R"({"match":"credits","status":429,"retry_after":2,"times":1}]})");
    auto r = f.api("POST", "/producer/create", extend_body("seed-clip", 5));
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 504);
    EXPECT_EQ(r->body,
              R"({"code":504,"message":"Task failed due to timeout. Credits were previously )"
              R"(refunded."})");
    auto l = f.ledger();
    EXPECT_EQ(l["credits"], 1000);
    EXPECT_EQ(l["charged"], 12);
    EXPECT_EQ(l["refunded"], 12);
    r = f.api("GET", "/producer/task/anything");
    EXPECT_EQ(r->status, 500);
    EXPECT_EQ(r->body, R"({"code":500,"message":"Internal Server Error."})");
    r = f.api("GET", "/get-credits");
    EXPECT_EQ(r->status, 429);
    EXPECT_EQ(r->header("retry-after"), "2");
    EXPECT_EQ(parse(r->body)["code"], 429);
    // Spent: normal again; and reset restores the start-up state.
    EXPECT_EQ(f.api("GET", "/get-credits")->status, 200);
    f.submit("/producer/create", extend_body("seed-clip", 5));
    EXPECT_EQ(f.ledger()["credits"], 988);
    auto reset = http_request(f.port(), "POST", "/_control/reset", "{}", {json_type});
    ASSERT_EQ(reset->status, 200);
    EXPECT_EQ(f.ledger()["credits"], 1000);
    EXPECT_TRUE(f.get("/_control/tasks")["tasks"].as_array().empty());
    EXPECT_TRUE(f.ledger()["ledger"].as_array().empty());
}

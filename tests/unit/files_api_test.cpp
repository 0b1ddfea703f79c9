// Files through the API, in-process, on each blob backend: an upload is stored in the blob
// store before its task exists (and removed when no task is made), the provider reads it as a
// local file, what the provider makes is stored, and GET /v1/files/{id} streams either back,
// whole or by byte range, with the validators and names browsers use; signed links work with
// no API key; retention deletes what expired (410 after) and nothing else; a full disk refuses
// uploads (507) and recovers by itself.

#include <gtest/gtest.h>

#include <boost/json.hpp>

#include <sqlite3.h>
#include <sys/mount.h>
#include <sys/statvfs.h>

#include <boost/asio/co_spawn.hpp>
#include <boost/asio/use_future.hpp>

#include <cerrno>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <mutex>
#include <thread>

#include "gateway/api/auth.hpp"
#include "gateway/api/extensions.hpp"
#include "gateway/audio/audio.hpp"
#include "gateway/core/engine.hpp"
#include "gateway/core/reaper.hpp"
#include "gateway/core/signed_url.hpp"
#include "gateway/events/event_hub.hpp"
#include "gateway/http/router.hpp"
#include "gateway/http/server.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/runtime/io_pool.hpp"
#include "gateway/store/blob_store.hpp"
#include "gateway/store/db.hpp"
#include "providers/registry.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace fs = std::filesystem;
namespace json = boost::json;
using segue::store::blob_backend;

namespace {

// Settles in submit: its one output is a copy of the input file it was given.
class copier final : public segue::providers::provider {
  public:
    copier() {
        caps_.source_file = true;
        caps_.source_url = true;  // accepted at submit; FullDisk sends one (never run)
        caps_.max_outputs = 1;
    }
    std::string_view name() const override { return "copier"; }
    const segue::providers::capabilities& caps() const override { return caps_; }
    boost::asio::awaitable<segue::providers::update> submit(
        const segue::providers::task_view& task, segue::providers::services& svc) override {
        {
            std::lock_guard lock(mu);
            inputs.push_back(task.input_path);
        }
        segue::providers::update u;
        u.what = segue::providers::update::kind::done;
        u.provider_task_id = "copy-" + task.task_id;
        const auto out = (fs::path(svc.work_dir) / "copy.wav").string();
        std::error_code ec;
        fs::create_directories(svc.work_dir, ec);
        fs::copy_file(task.input_path, out, ec);
        segue::providers::output_update o;
        o.index = 1;
        o.status = ec ? segue::core::output_status::failed : segue::core::output_status::ready;
        o.error = ec.message();
        o.wav = segue::providers::local_file{out, "audio/wav"};
        u.outputs.push_back(std::move(o));
        co_return u;
    }
    boost::asio::awaitable<segue::providers::update> poll(const segue::providers::task_view&,
                                                          segue::providers::services&) override {
        segue::providers::update u;
        u.what = segue::providers::update::kind::failed;
        u.error_code = "not_polled";
        co_return u;
    }
    std::mutex mu;
    std::vector<std::string> inputs;  // the input paths it was given

  private:
    segue::providers::capabilities caps_;
};

const std::string key_header = "Authorization: Bearer sk-files";
const std::string signing_key = "files-test-signing-key";
const std::string boundary = "files-test-boundary";

class FilesApi : public ::testing::TestWithParam<blob_backend> {
  protected:
    void SetUp() override {
        auto& s = settings_;
        s.server.listen = "127.0.0.1:0";
        s.log.access = false;
        s.storage.sqlite_path = data_dir() + "/segue.db";
        s.storage.blob_dir = data_dir() + "/blobs";
        s.api.url_signing_key = signing_key;
        s.api.default_provider = "copier";
        s.engine.poll_interval = 20ms;
        s.tenants.push_back({"acme", {"sk-files"}, {}, 100});
        s.tenants.push_back({"other", {"sk-other"}, {}, 100});
        segue::store::blob_options o;
        o.backend = GetParam();
        o.dir = s.storage.blob_dir;
        if (postgres()) {
            schema_ = std::make_unique<segue::test::pg_schema>();
            o.pg_url = schema_->url();
        }
        blobs_ = segue::store::open_blob_store(o);
        store_ = segue::store::open_sqlite({.path = s.storage.sqlite_path});
        db_ = std::make_unique<segue::store::db>(*store_, metrics_);
        auto p = std::make_unique<copier>();
        copier_ = p.get();
        registry_.add(std::move(p));
        auth_ = std::make_unique<segue::api::authenticator>(s.tenants);
        pool_ = std::make_unique<segue::runtime::io_pool>(2);
        engine_ = std::make_unique<segue::core::engine>(pool_->main(), *db_, *blobs_, registry_,
                                                        blocking_, settings_, metrics_);
        segue::api::add_extension_routes(routes_, {settings_, *db_, *blobs_, *engine_, registry_,
                                                   blocking_, *auth_, metrics_, nullptr, hub_});
        server_ = std::make_unique<segue::http::server>(*pool_, settings_, routes_, metrics_);
        server_->start();
        engine_->start();
        thread_ = std::thread([this] { pool_->run(); });
    }
    void TearDown() override {
        pool_->stop();
        thread_.join();
        // As the gateway stops (app.cpp): the blocking threads are joined before the IO
        // contexts' leftover handlers are destroyed; a blocking job that finishes later would
        // otherwise resume its coroutine against a deleted io_context (TSAN: heap-use-after-free).
        blocking_.stop();
        // The store next, still as app.cpp: its threads may complete a unit (posting to an IO
        // context) until it is closed, and must not race the contexts' shutdown.
        store_->close();
        pool_->shutdown();
    }
    bool postgres() const { return GetParam() == blob_backend::postgres; }
    // Where the database and blob_dir live (FullDisk: a small file system of its own).
    virtual std::string data_dir() const { return dir_.path(); }
    std::optional<segue::test::http_response> request(const std::string& method,
                                                      const std::string& target,
                                                      std::vector<std::string> headers = {},
                                                      const std::string& body = {}) {
        headers.push_back(key_header);
        return segue::test::http_request(server_->port(), method, target, body, headers);
    }
    // POSTs the song; the answer.
    segue::test::http_response create(const std::string& song,
                                      const std::string& idempotency_key = "") {
        std::vector<std::string> h{"Content-Type: multipart/form-data; boundary=" + boundary};
        if (!idempotency_key.empty())
            h.push_back("Idempotency-Key: " + idempotency_key);
        auto r = request("POST", "/v1/extensions", h,
                         segue::test::multipart_body({{"audio_file", song, "in.wav", "audio/wav"},
                                                      {"extend_after", "2"},
                                                      {"num_outputs", "1"}},
                                                     boundary));
        EXPECT_TRUE(r);
        return r.value_or(segue::test::http_response{});
    }
    json::object wait_final(const std::string& id) {
        json::object t;
        for (int i = 0; i < 200; ++i) {
            auto r = request("GET", "/v1/extensions/" + id);
            t = json::parse(r->body).as_object();
            if (t["status"] == "succeeded" || t["status"] == "failed")
                break;
            std::this_thread::sleep_for(25ms);
        }
        return t;
    }
    // A short test song (3 s, 22.05 kHz) as bytes.
    std::string small_song(int channels = 1) {
        const std::string path = dir_.file("song.wav");
        EXPECT_TRUE(segue::audio::write_test_song(path, 3, 22050, channels, 120, "wav"));
        return segue::test::read_file(path);
    }
    // Creates a task from `song` and waits until it succeeded; the task.
    json::object run_task(const std::string& song) {
        auto created = create(song);
        EXPECT_EQ(created.status, 202) << created.body;
        auto t = wait_final(std::string(json::parse(created.body).as_object()["id"].as_string()));
        EXPECT_EQ(t["status"], "succeeded") << json::serialize(t);
        return t;
    }
    // Keys in the blob store under `prefix`, by the backend's own account.
    int stored(const std::string& prefix) {
        if (postgres())
            return std::stoi(segue::test::pg_exec(
                schema_->url(), "SELECT count(*) FROM blobs WHERE key LIKE '" + prefix + "%'"));
        int n = 0;
        std::error_code ec;
        const std::string root = data_dir() + "/blobs/" + prefix;
        if (fs::exists(root))
            for (auto it = fs::recursive_directory_iterator(root, ec);
                 it != fs::recursive_directory_iterator(); ++it)
                n += it->is_regular_file() ? 1 : 0;
        return n;
    }
    segue::test::temp_dir dir_;
    segue::config::settings settings_;
    segue::metrics::registry metrics_;
    std::unique_ptr<segue::test::pg_schema> schema_;
    std::unique_ptr<segue::store::blob_store> blobs_;
    std::unique_ptr<segue::store::store> store_;
    std::unique_ptr<segue::store::db> db_;
    segue::providers::registry registry_;
    copier* copier_ = nullptr;
    std::unique_ptr<segue::api::authenticator> auth_;
    segue::runtime::blocking_pool blocking_{2};
    std::unique_ptr<segue::runtime::io_pool> pool_;
    std::unique_ptr<segue::core::engine> engine_;
    segue::events::event_hub hub_;
    segue::http::router routes_;
    std::unique_ptr<segue::http::server> server_;
    std::thread thread_;
};

TEST_P(FilesApi, UploadIsStoredReadByTheProviderAndServedBackWholeOrByRange) {
    const std::string path = dir_.file("song.wav");
    ASSERT_TRUE(segue::audio::write_test_song(path, 8, 44100, 2, 120, "wav"));
    const std::string song = segue::test::read_file(path);
    ASSERT_GT(song.size(), 1u << 20);  // more than one PostgreSQL chunk

    auto created = create(song);
    ASSERT_EQ(created.status, 202) << created.body;
    const std::string id(json::parse(created.body).as_object()["id"].as_string());
    auto t = wait_final(id);
    ASSERT_EQ(t["status"], "succeeded") << json::serialize(t);

    // The provider got a local file: the blob itself, or a copy in the local cache.
    {
        std::lock_guard lock(copier_->mu);
        ASSERT_EQ(copier_->inputs.size(), 1u);
        const auto parent = fs::path(copier_->inputs[0]).parent_path();
        EXPECT_EQ(parent, fs::path(dir_.file(postgres() ? "blobs/cache" : "blobs/uploads")));
    }
    // Nothing is left in the spool or the task's scratch directory; with PostgreSQL no file
    // lives under blob_dir but the cache.
    EXPECT_TRUE(fs::is_empty(dir_.file("blobs/spool")));
    // The scratch directory goes right after the final state commits (not in that unit): give
    // the engine a moment (it took longer than one GET under ThreadSanitizer).
    for (int i = 0; i < 200 && fs::exists(dir_.file("blobs/work/" + id)); ++i)
        std::this_thread::sleep_for(25ms);
    EXPECT_FALSE(fs::exists(dir_.file("blobs/work/" + id)));
    EXPECT_EQ(stored("uploads/"), 1);
    EXPECT_EQ(stored("outputs/" + id + "/"), 1);
    if (postgres()) {
        EXPECT_FALSE(fs::exists(dir_.file("blobs/uploads")));
        EXPECT_FALSE(fs::exists(dir_.file("blobs/outputs")));
    }

    // The output (a copy of the upload) and the upload itself, byte for byte.
    const std::string url(
        t["outputs"].as_array()[0].as_object()["audio"].as_object()["wav_url"].as_string());
    const std::string output = url.substr(url.find("/v1/files/"));
    const std::string upload =
        "/v1/files/" + std::string(t["request"].at("source").at("file_id").as_string());
    for (const auto& target : {output, upload}) {
        auto whole = request("GET", target);
        ASSERT_TRUE(whole);
        EXPECT_EQ(whole->status, 200);
        EXPECT_EQ(whole->body, song) << target;
        EXPECT_EQ(whole->header("accept-ranges"), "bytes");
    }

    // Ranges, across the first chunk's end.
    const auto size = song.size();
    const std::uint64_t mib = 1u << 20;
    auto r = request("GET", output,
                     {"Range: bytes=" + std::to_string(mib - 10) + "-" + std::to_string(mib + 9)});
    ASSERT_TRUE(r);
    EXPECT_EQ(r->status, 206);
    EXPECT_EQ(r->body, song.substr(mib - 10, 20));
    EXPECT_EQ(r->header("content-range"), "bytes " + std::to_string(mib - 10) + "-" +
                                              std::to_string(mib + 9) + "/" + std::to_string(size));
    auto tail = request("GET", output, {"Range: bytes=-100"});
    EXPECT_EQ(tail->status, 206);
    EXPECT_EQ(tail->body, song.substr(size - 100));
    auto open_ended = request("GET", output, {"Range: bytes=" + std::to_string(size - 5) + "-"});
    EXPECT_EQ(open_ended->body, song.substr(size - 5));
    auto past = request("GET", output, {"Range: bytes=" + std::to_string(size) + "-"});
    EXPECT_EQ(past->status, 416);
    EXPECT_EQ(past->header("content-range"), "bytes */" + std::to_string(size));
    EXPECT_EQ(json::parse(past->body).as_object()["code"], "range_not_satisfiable");
    // Several ranges, or an If-Range this endpoint cannot check: the whole file.
    auto several = request("GET", output, {"Range: bytes=0-1,5-6"});
    EXPECT_EQ(several->status, 200);
    EXPECT_EQ(several->body.size(), size);
    auto if_range = request("GET", output, {"Range: bytes=0-1", "If-Range: \"x\""});
    EXPECT_EQ(if_range->status, 200);
    auto head = request("HEAD", output, {"Range: bytes=0-99"});
    EXPECT_EQ(head->status, 206);
    EXPECT_EQ(head->header("content-length"), "100");
    EXPECT_EQ(head->body, "");
}

TEST_P(FilesApi, AnUploadNoTaskPointsAtIsRemoved) {
    const std::string path = dir_.file("song.wav");
    ASSERT_TRUE(segue::audio::write_test_song(path, 3, 22050, 1, 120, "wav"));
    const std::string song = segue::test::read_file(path);
    auto first = create(song, "key-1");
    ASSERT_EQ(first.status, 202) << first.body;
    auto replay = create(song, "key-1");
    ASSERT_EQ(replay.status, 202) << replay.body;
    EXPECT_EQ(replay.header("idempotent-replayed"), "true");
    // The replay's upload was stored before admission, then removed: one upload remains.
    EXPECT_EQ(stored("uploads/"), 1);
    // Not audio: refused before anything is stored.
    auto bad = create("not audio at all");
    EXPECT_EQ(bad.status, 422) << bad.body;
    EXPECT_EQ(stored("uploads/"), 1);
    EXPECT_TRUE(fs::is_empty(dir_.file("blobs/spool")));
}

// One request with nothing but the bytes given: no API key, as a browser's <audio src> or curl.
std::optional<segue::test::http_response> raw_get(std::uint16_t port, const std::string& target,
                                                  const std::string& extra = "") {
    segue::test::http_connection c(port);
    if (!c.send_raw("GET " + target + " HTTP/1.1\r\nHost: localhost\r\n" + extra +
                    "Connection: close\r\n\r\n"))
        return std::nullopt;
    return c.read_response();
}

std::string path_of(const std::string& url) {
    return url.substr(url.find("/v1/files/"));
}

// The path of a task's first output (its wav) and of its source upload.
std::string output_path(const json::object& t) {
    return path_of(std::string(t.at("outputs").at(0).at("audio").at("wav_url").as_string()));
}
std::string upload_path(const json::object& t) {
    return "/v1/files/" + std::string(t.at("request").at("source").at("file_id").as_string());
}

TEST_P(FilesApi, ValidatorsNamesAndSignedLinksAsBrowsersUseThem) {
    const std::string song = small_song(2);
    auto t = run_task(song);
    ASSERT_EQ(t["status"], "succeeded");
    const std::string id(t["id"].as_string());
    const auto& audio = t["outputs"].as_array()[0].as_object()["audio"].as_object();
    const std::string output = path_of(std::string(audio.at("wav_url").as_string()));
    const auto& source = t["request"].as_object()["source"].as_object();
    const std::string upload = path_of(std::string(source.at("url").as_string()));

    // Type, name, validators.
    auto whole = request("GET", output);
    ASSERT_EQ(whole->status, 200);
    EXPECT_EQ(whole->header("content-type"), "audio/wav");
    EXPECT_EQ(whole->header("content-disposition"), "inline; filename=\"" + id + "-1.wav\"");
    const auto etag = whole->header("etag").value_or("");
    ASSERT_FALSE(etag.empty());
    EXPECT_EQ(etag.front(), '"');  // strong
    EXPECT_TRUE(whole->header("last-modified"));
    auto up = request("GET", upload + "?download=1");
    EXPECT_EQ(up->body, song);
    EXPECT_EQ(up->header("content-disposition"), "attachment; filename=\"in.wav\"");
    for (const char* no : {"?download=0", "?download=false"})
        EXPECT_EQ(request("GET", upload + no)->header("content-disposition"),
                  "inline; filename=\"in.wav\"")
            << no;
    // Never sniffed as another type; opened as a page, it runs nothing.
    EXPECT_EQ(whole->header("x-content-type-options"), "nosniff");
    EXPECT_NE(whole->header("content-security-policy").value_or("").find("sandbox"),
              std::string::npos);
    // ... but a link opened in a tab plays in the browser's own player (tests/console checks
    // that in Chromium).
    EXPECT_NE(whole->header("content-security-policy").value_or("").find("media-src 'self'"),
              std::string::npos);
    EXPECT_TRUE(whole->header("date"));  // a streamed answer has its Date too
    EXPECT_EQ(etag, "\"sha256-" + std::string(audio.at("wav_sha256").as_string()) +
                        "\"");  // from the bytes

    // If-Modified-Since, when no If-None-Match is sent: a file never changes, so its own
    // Last-Modified (or later) is a 304, an earlier date the file; If-None-Match decides when
    // both are sent.
    const auto modified = whole->header("last-modified").value_or("");
    EXPECT_EQ(request("GET", output, {"If-Modified-Since: " + modified})->status, 304);
    EXPECT_EQ(request("GET", output, {"If-Modified-Since: Thu, 01 Jan 2015 00:00:00 GMT"})->status,
              200);
    EXPECT_EQ(request("GET", output, {"If-None-Match: \"other\"", "If-Modified-Since: " + modified})
                  ->status,
              200);
    EXPECT_EQ(request("GET", output, {"If-Modified-Since: yesterday"})->status, 200);
    // If-None-Match: 304 with no body, for the tag (weak or strong) or *; else the file.
    for (const std::string& inm : {etag, "W/" + etag, "\"other\", " + etag, std::string("*")}) {
        auto r = request("GET", output, {"If-None-Match: " + inm});
        EXPECT_EQ(r->status, 304) << inm;
        EXPECT_EQ(r->body, "");
        EXPECT_EQ(r->header("etag"), etag);
    }
    EXPECT_EQ(request("GET", output, {"If-None-Match: \"other\""})->status, 200);
    EXPECT_EQ(request("HEAD", output, {"If-None-Match: " + etag})->status, 304);

    // Range: the first 100 bytes; If-Range with this version keeps the range, another gets it
    // whole.
    auto first = request("GET", output, {"Range: bytes=0-99"});
    EXPECT_EQ(first->status, 206);
    EXPECT_EQ(first->body, song.substr(0, 100));
    EXPECT_EQ(first->header("content-length"), "100");
    EXPECT_EQ(first->header("content-range"), "bytes 0-99/" + std::to_string(song.size()));
    auto same = request("GET", output, {"Range: bytes=0-99", "If-Range: " + etag});
    EXPECT_EQ(same->status, 206);
    EXPECT_EQ(same->body.size(), 100u);
    EXPECT_EQ(request("GET", output, {"Range: bytes=0-99", "If-Range: W/" + etag})->status, 200);
    auto head = request("HEAD", output);
    EXPECT_EQ(head->status, 200);
    EXPECT_EQ(head->header("content-length"), std::to_string(song.size()));
    EXPECT_EQ(head->body, "");

    // Signed links in the task, for the output and the source, that work with no API key.
    ASSERT_TRUE(audio.contains("wav_signed_url")) << json::serialize(audio);
    EXPECT_TRUE(audio.contains("signed_url_expires_at"));
    EXPECT_TRUE(source.contains("signed_url_expires_at"));
    const std::string signed_output(audio.at("wav_signed_url").as_string());
    const std::string signed_upload(source.at("signed_url").as_string());
    EXPECT_EQ(raw_get(server_->port(), output)->status, 401);  // the plain URL needs the key
    auto s1 = raw_get(server_->port(), signed_output);
    ASSERT_TRUE(s1);
    EXPECT_EQ(s1->status, 200);
    EXPECT_EQ(s1->body, song);
    auto s2 = raw_get(server_->port(), signed_upload, "Range: bytes=0-99\r\n");
    EXPECT_EQ(s2->status, 206);
    EXPECT_EQ(s2->body, song.substr(0, 100));
    // The same links on the next read (they are renewed in steps, not on every read).
    auto again = json::parse(request("GET", "/v1/extensions/" + id)->body);
    EXPECT_EQ(again.at("outputs").at(0).at("audio").at("wav_signed_url"), signed_output.c_str());

    // Tampered: another file's id, another expiry, another signature: refused.
    const std::string file_id = output.substr(std::string("/v1/files/").size());
    const std::string query = signed_output.substr(signed_output.find('?'));
    const std::string upload_id = upload.substr(std::string("/v1/files/").size());
    auto tampered_sig = signed_output;
    tampered_sig.back() = tampered_sig.back() == '0' ? '1' : '0';
    auto later = path_of(signed_output);
    later[later.find("expires=") + 8] = '9';
    for (const auto& bad : {tampered_sig, "/v1/files/" + upload_id + query, later}) {
        auto r = raw_get(server_->port(), path_of(bad));
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 404) << bad;
        EXPECT_EQ(r->body.find("RIFF"), std::string::npos);
    }
    // Expired: a genuine signature whose time is past.
    const auto past = std::chrono::duration_cast<std::chrono::seconds>(
                          std::chrono::system_clock::now().time_since_epoch())
                          .count() -
                      5;
    auto expired =
        raw_get(server_->port(), segue::core::signed_file_path(signing_key, file_id, past));
    EXPECT_EQ(expired->status, 403);
    EXPECT_EQ(json::parse(expired->body).at("code"), "link_expired");

    // On request: a link of the lifetime asked for; another tenant's file is not theirs.
    auto link = request("POST", "/v1/files/" + file_id + "/links",
                        {"Content-Type: application/json"}, R"({"expires_in": 120})");
    ASSERT_EQ(link->status, 201) << link->body;
    auto lo = json::parse(link->body).as_object();
    EXPECT_EQ(raw_get(server_->port(), path_of(std::string(lo["url"].as_string())))->body, song);
    const std::vector<std::string> json_type{"Content-Type: application/json"};
    EXPECT_EQ(request("POST", "/v1/files/" + file_id + "/links", json_type, R"({"expires_in": 0})")
                  ->status,
              422);
    EXPECT_EQ(request("POST", "/v1/files/" + file_id + "/links", json_type, "[1]")->status, 400);
    // Unknown fields are named (the schema is closed); a body must be JSON.
    auto unknown = request("POST", "/v1/files/" + file_id + "/links", json_type,
                           R"({"expires_in": 60, "x": 1})");
    ASSERT_EQ(unknown->status, 422) << unknown->body;
    EXPECT_EQ(json::parse(unknown->body).at("errors").at(0).at("field"), "x");
    EXPECT_EQ(request("POST", "/v1/files/" + file_id + "/links", {"Content-Type: text/plain"},
                      R"({"expires_in": 60})")
                  ->status,
              415);
    EXPECT_EQ(request("POST", "/v1/files/" + file_id + "/links",
                      {"Content-Type: application/x-www-form-urlencoded"}, "expires_in=60")
                  ->status,
              415);
    EXPECT_EQ(request("POST", "/v1/files/" + file_id + "/links", {"Content-Type: Application/JSON"},
                      R"({"expires_in": 60})")
                  ->status,
              201);
    auto theirs =
        segue::test::http_request(server_->port(), "POST", "/v1/files/" + file_id + "/links", "",
                                  {"Authorization: Bearer sk-other"});
    EXPECT_EQ(theirs->status, 404);
    EXPECT_EQ(segue::test::http_request(server_->port(), "GET", output, "",
                                        {"Authorization: Bearer sk-other"})
                  ->status,
              404);
}

TEST_P(FilesApi, RetentionDeletesWhatExpiredAndAnswers410AndTouchesNothingElse) {
    const std::string song = small_song();
    auto old_task = run_task(song);
    ASSERT_EQ(old_task["status"], "succeeded");
    const std::string old_id(old_task["id"].as_string());
    std::this_thread::sleep_for(1500ms);
    // A fresh task, younger than every lifetime below.
    auto fresh_task = run_task(song);
    ASSERT_EQ(fresh_task["status"], "succeeded");
    const std::string fresh_id(fresh_task["id"].as_string());
    const auto old_output = output_path(old_task), old_upload = upload_path(old_task);
    const auto fresh_output = output_path(fresh_task), fresh_upload = upload_path(fresh_task);
    ASSERT_EQ(stored("outputs/"), 2);
    ASSERT_EQ(stored("uploads/"), 2);

    settings_.retention.outputs = 1s;
    settings_.retention.uploads = 1s;
    settings_.retention.tasks = 1s;
    settings_.retention.tombstones = 0ms;  // forever, for now
    settings_.retention.batch = 1;         // several batches
    segue::core::reaper reaper(pool_->main(), *db_, *blobs_, blocking_, settings_, metrics_);
    auto round = [&] {
        return boost::asio::co_spawn(pool_->main(), reaper.run_once(), boost::asio::use_future)
            .get();
    };
    const auto c = round();
    EXPECT_EQ(c.outputs, 1);
    EXPECT_EQ(c.uploads, 1);
    EXPECT_EQ(c.tasks, 1);
    EXPECT_EQ(c.blobs, 2);

    // The old task is gone with its rows and files; its files say they expired.
    EXPECT_EQ(request("GET", "/v1/extensions/" + old_id)->status, 404);
    EXPECT_EQ(request("GET", "/v1/extensions/" + old_id + "/events")->status, 404);
    std::promise<void> checked;
    store_->submit_read(
        [&](segue::store::transaction& tx) {
            EXPECT_FALSE(tx.get_task(old_id));
            EXPECT_TRUE(tx.get_outputs(old_id).empty());
            EXPECT_TRUE(tx.get_attempts(old_id).empty());
            EXPECT_TRUE(tx.get_events(old_id, 0, 10).empty());
            EXPECT_TRUE(tx.get_task(fresh_id));
            EXPECT_FALSE(tx.get_events(fresh_id, 0, 100).empty());
            EXPECT_FALSE(tx.get_outputs(fresh_id).empty());
        },
        [&](std::exception_ptr) { checked.set_value(); });
    checked.get_future().wait();
    for (const auto& gone : {old_output, old_upload}) {
        auto r = request("GET", gone);
        EXPECT_EQ(r->status, 410) << gone;
        EXPECT_EQ(r->header("content-type"), "application/problem+json");
        auto p = json::parse(r->body).as_object();
        EXPECT_EQ(p["code"], "file_expired");
        EXPECT_NE(std::string(p["detail"].as_string()).find("expired"), std::string::npos);
    }
    EXPECT_EQ(stored("outputs/" + old_id + "/"), 0);
    EXPECT_EQ(stored("outputs/"), 1);
    EXPECT_EQ(stored("uploads/"), 1);
    // Another tenant learns nothing: 404, not 410.
    EXPECT_EQ(segue::test::http_request(server_->port(), "GET", old_output, "",
                                        {"Authorization: Bearer sk-other"})
                  ->status,
              404);

    // The fresh task: untouched.
    auto fresh_again = request("GET", "/v1/extensions/" + fresh_id);
    EXPECT_EQ(fresh_again->status, 200);
    EXPECT_EQ(json::parse(fresh_again->body).at("status"), "succeeded");
    EXPECT_EQ(request("GET", fresh_output)->body, song);
    EXPECT_EQ(request("GET", fresh_upload)->body, song);

    // Nothing left to do: a second round deletes nothing.
    const auto c2 = round();
    EXPECT_EQ(c2.outputs + c2.uploads + c2.tasks + c2.blobs + c2.tombstones, 0);
    // Tombstones expire in turn: then the file is simply unknown.
    settings_.retention.tombstones = 1ms;
    std::this_thread::sleep_for(20ms);
    EXPECT_EQ(round().tombstones, 2);
    EXPECT_EQ(request("GET", old_output)->status, 404);
}

INSTANTIATE_TEST_SUITE_P(Backends, FilesApi,
                         ::testing::Values(blob_backend::directory, blob_backend::postgres),
                         [](const auto& info) {
                             return info.param == blob_backend::postgres ? "postgres" : "directory";
                         });

// A data volume of its own: a tmpfs mounted by the test (CI runs as root), holding the database
// and blob_dir, with storage.min_free_bytes set.
class FullDisk : public FilesApi {
  protected:
    static constexpr std::uint64_t volume_bytes = 48ull << 20;
    static constexpr std::uint64_t min_free = 8ull << 20;

    void SetUp() override {
        volume_ = dir_.file("volume");
        fs::create_directories(volume_);
        const std::string opts = "size=" + std::to_string(volume_bytes);
        if (::mount("tmpfs", volume_.c_str(), "tmpfs", 0, opts.c_str()) != 0)
            GTEST_SKIP() << "cannot mount a tmpfs for the full-disk test (" << std::strerror(errno)
                         << "): it needs root or CAP_SYS_ADMIN, as CI has";
        mounted_ = true;
        settings_.storage.min_free_bytes = min_free;
        FilesApi::SetUp();
    }
    void TearDown() override {
        if (!mounted_)
            return;
        FilesApi::TearDown();
        ::umount2(volume_.c_str(), MNT_DETACH);
    }
    std::string data_dir() const override { return volume_; }

    std::uint64_t available() const {
        struct statvfs v {};
        ::statvfs(volume_.c_str(), &v);
        return static_cast<std::uint64_t>(v.f_bavail) * v.f_frsize;
    }
    // Grows the filler file until at most `leave` bytes are free.
    void fill_until(std::uint64_t leave) {
        std::ofstream out(volume_ + "/filler", std::ios::binary | std::ios::app);
        const std::string mib(1 << 20, 'x');
        while (available() > leave + mib.size()) {
            out.write(mib.data(), static_cast<std::streamsize>(mib.size()));
            out.flush();
        }
        const auto rest = available() > leave ? available() - leave : 0;
        out.write(mib.data(),
                  static_cast<std::streamsize>(std::min<std::uint64_t>(rest, mib.size())));
    }

    std::string volume_;
    bool mounted_ = false;
};

TEST_P(FullDisk, UploadsGet507BelowMinFreeAndAreTakenAgainWhenSpaceReturns) {
    const std::string song = small_song();
    // Accepted before the disk fills.
    auto before_task = run_task(song);
    ASSERT_EQ(before_task["status"], "succeeded");
    const std::string before_id(before_task["id"].as_string());
    const std::string before_output = output_path(before_task);

    // Below storage.min_free_bytes: 507, Retry-After, a problem saying why; nothing stored.
    fill_until(min_free / 2);
    auto refused = create(song);
    EXPECT_EQ(refused.status, 507) << refused.body;
    EXPECT_EQ(refused.header("retry-after"), "60");
    EXPECT_EQ(refused.header("content-type"), "application/problem+json");
    auto problem = json::parse(refused.body).as_object();
    EXPECT_EQ(problem["code"], "insufficient_storage");
    EXPECT_NE(std::string(problem["detail"].as_string()).find("min_free_bytes"), std::string::npos);
    EXPECT_EQ(stored("uploads/"), 1);
    // An audio_url source would be downloaded to this volume too.
    auto by_url = request("POST", "/v1/extensions", {"Content-Type: application/json"},
                          R"({"audio_url": "http://127.0.0.1:9/a.wav", "extend_after": 1,
                              "num_outputs": 1})");
    EXPECT_EQ(by_url->status, 507) << by_url->body;
    EXPECT_EQ(by_url->header("retry-after"), "60");
    // What was accepted is not harmed: it reads back whole, its task as it was.
    EXPECT_EQ(request("GET", before_output)->body, song);
    EXPECT_EQ(json::parse(request("GET", "/v1/extensions/" + before_id)->body).at("status"),
              "succeeded");

    // Above the threshold, but an upload larger than what is left (sent chunked, so its size is
    // not known in advance): the spool hits ENOSPC, the answer is 507, the spool file goes.
    fs::remove(volume_ + "/filler");
    fill_until(min_free + (2 << 20));
    {
        const std::string big(16u << 20, 'z');  // more than is left
        const std::string body = segue::test::multipart_body(
            {{"audio_file", big, "big.wav", "audio/wav"}, {"extend_after", "1"}}, boundary);
        std::string chunked;
        for (std::size_t at = 0; at < body.size(); at += 256 * 1024) {
            const auto piece = body.substr(at, 256 * 1024);
            char size[32];
            std::snprintf(size, sizeof size, "%zx\r\n", piece.size());
            chunked += size + piece + "\r\n";
        }
        chunked += "0\r\n\r\n";
        segue::test::http_connection c(server_->port());
        ASSERT_TRUE(c.send_raw("POST /v1/extensions HTTP/1.1\r\nHost: localhost\r\n" + key_header +
                               "\r\nContent-Type: multipart/form-data; boundary=" + boundary +
                               "\r\nTransfer-Encoding: chunked\r\n\r\n" + chunked));
        auto r = c.read_response();
        ASSERT_TRUE(r);
        EXPECT_EQ(r->status, 507) << r->body;
        EXPECT_EQ(r->header("retry-after"), "60");
        // Not the check before the body (that passed): the write that found the disk full.
        EXPECT_NE(r->body.find("cannot be stored now"), std::string::npos) << r->body;
    }
    EXPECT_TRUE(fs::is_empty(volume_ + "/blobs/spool"));

    // Space returns: uploads are taken again at once, and the task runs.
    fs::remove(volume_ + "/filler");
    EXPECT_EQ(run_task(song)["status"], "succeeded");

    // And the database is whole.
    sqlite3* raw = nullptr;
    ASSERT_EQ(
        sqlite3_open_v2(settings_.storage.sqlite_path.c_str(), &raw, SQLITE_OPEN_READONLY, nullptr),
        SQLITE_OK);
    std::string verdict;
    sqlite3_exec(
        raw, "PRAGMA integrity_check",
        [](void* out, int n, char** v, char**) {
            *static_cast<std::string*>(out) += n > 0 && v[0] ? v[0] : "";
            return 0;
        },
        &verdict, nullptr);
    sqlite3_close(raw);
    EXPECT_EQ(verdict, "ok");
}

INSTANTIATE_TEST_SUITE_P(Directory, FullDisk, ::testing::Values(blob_backend::directory),
                         [](const auto&) { return std::string("directory"); });

}  // namespace

// The event model through the task engine, with a scripted provider: duplicated and
// out-of-order provider results give exactly one event each, in a sane order; failures finalize
// the task; every change is an event with the next sequence number.

#include <gtest/gtest.h>
#include <sqlite3.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/asio/use_future.hpp>
#include <boost/json.hpp>

#include <atomic>
#include <deque>
#include <filesystem>
#include <fstream>
#include <functional>
#include <future>
#include <mutex>
#include <thread>

#include "gateway/core/engine.hpp"
#include "gateway/core/json.hpp"
#include "gateway/core/reaper.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/runtime/blocking_pool.hpp"
#include "gateway/runtime/io_pool.hpp"
#include "gateway/store/blob_store.hpp"
#include "gateway/store/db.hpp"
#include "gateway/util/crypto.hpp"
#include "providers/registry.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
namespace fs = std::filesystem;
using segue::providers::update;

namespace {

class scripted_provider final : public segue::providers::provider {
  public:
    std::string_view name() const override { return "scripted"; }
    const segue::providers::capabilities& caps() const override { return caps_; }
    boost::asio::awaitable<update> submit(const segue::providers::task_view& task,
                                          segue::providers::services&) override {
        {
            std::lock_guard lock(mu);
            callback_tokens.push_back(task.callback_token);
            if (on_submit)
                on_submit(task);
        }
        ++submits;
        update u;
        u.what = update::kind::accepted;
        u.provider_task_id = "up-1";
        u.poll_after_ms = 0;
        co_return u;
    }
    boost::asio::awaitable<update> poll(const segue::providers::task_view&,
                                        segue::providers::services&) override {
        if (const int ms = poll_delay_ms.load(); ms > 0) {  // a slow provider
            boost::asio::steady_timer t(co_await boost::asio::this_coro::executor);
            t.expires_after(std::chrono::milliseconds(ms));
            co_await t.async_wait(boost::asio::as_tuple(boost::asio::use_awaitable));
        }
        std::lock_guard lock(mu);
        ++polls;
        if (script.empty()) {
            update u;
            u.what = update::kind::running;
            u.poll_after_ms = 10;
            co_return u;
        }
        update u = script.front();
        script.pop_front();
        co_return u;
    }
    std::mutex mu;
    std::deque<update> script;
    std::vector<std::string> callback_tokens;                           // of every submit, in order
    std::function<void(const segue::providers::task_view&)> on_submit;  // called in submit
    std::atomic<int> polls = 0;  // read by the test thread without `mu`
    std::atomic<int> submits = 0;
    std::atomic<int> poll_delay_ms = 0;  // each poll takes this long before it answers

  private:
    segue::providers::capabilities caps_{.source_url = true, .max_outputs = 2, .polling = true};
};

segue::providers::output_update ready(int index, const std::string& title) {
    segue::providers::output_update o;
    o.index = index;
    o.status = segue::core::output_status::ready;
    o.mp3_url = "https://cdn.example/" + std::to_string(index) + ".mp3";
    o.duration = 42.5;
    o.title = title;
    return o;
}

// A poll's answer: done, output 1 made as a local file at `mp3` (the provider's scratch).
update made_here(const fs::path& mp3) {
    update u;
    u.what = update::kind::done;
    auto o = ready(1, "made");
    o.mp3_url.clear();
    o.mp3 = segue::providers::local_file{mp3.string(), "audio/mpeg"};
    u.outputs.push_back(o);
    return u;
}

class Engine : public ::testing::Test {
  protected:
    void SetUp() override {
        settings_.storage.sqlite_path = dir_.file("segue.db");
        settings_.storage.blob_dir = dir_.file("blobs");
        settings_.engine.poll_interval = 20ms;
        settings_.api.default_provider = "scripted";
        store_ = segue::store::open_sqlite({.path = settings_.storage.sqlite_path});
        db_ = std::make_unique<segue::store::db>(*store_, metrics_);
        auto p = std::make_unique<scripted_provider>();
        provider_ = p.get();
        registry_.add(std::move(p));
        pool_ = std::make_unique<segue::runtime::io_pool>(1);
        blobs_ = segue::store::open_blob_store({.dir = settings_.storage.blob_dir});
        engine_ = std::make_unique<segue::core::engine>(pool_->main(), *db_, *blobs_, registry_,
                                                        blocking_, settings_, metrics_);
    }
    void TearDown() override {
        pool_->stop();
        if (thread_.joinable())
            thread_.join();
        // As app.cpp: the blocking threads are joined before the IO contexts go (pool_ is
        // destroyed before blocking_), or a job finishing late writes to a deleted context.
        blocking_.stop();
        store_->close();
    }
    void start() {
        engine_->start();
        thread_ = std::thread([this] { pool_->run(); });
    }
    // A queued task of acme's at the scripted provider (not yet written).
    static segue::store::task_row queued(std::string id, std::string request_json, int outputs) {
        segue::store::task_row t;
        t.id = std::move(id);
        t.tenant = "acme";
        t.status = "queued";
        t.provider = "scripted";
        t.request_json = std::move(request_json);
        t.num_outputs = outputs;
        t.created_at = t.updated_at = segue::core::now_ms();
        return t;
    }
    std::string create(int outputs) {
        segue::core::extend_request r;
        r.source = segue::core::source_kind::url;
        r.audio_url = "https://cdn.example/in.mp3";
        r.num_outputs = outputs;
        r.metadata_json = R"({"order":7})";
        auto t =
            queued("ext_test" + std::to_string(++n_), segue::core::request_to_json(r), outputs);
        write([&](segue::store::transaction& tx) { segue::core::engine::create_task(tx, t); });
        engine_->notify();
        return t.id;
    }
    // Task `id` (one output) whose source is the upload `file_id` (its row only: no blob).
    segue::store::task_row create_with_upload(const std::string& id, const std::string& file_id) {
        segue::core::extend_request r;
        r.source = segue::core::source_kind::file;
        r.audio_file_id = file_id;
        r.num_outputs = 1;
        auto t = queued(id, segue::core::request_to_json(r), 1);
        write([&](segue::store::transaction& tx) {
            segue::core::engine::create_task(tx, t);
            tx.insert_file({file_id, "acme", t.id, "upload", "audio/wav", "uploads/" + file_id, 10,
                            "", t.created_at});
        });
        return t;
    }
    // The registry's text once `series` reads `value` (bounded: 3 s).
    std::string metrics_when(const std::string& series, double value) {
        std::string m = metrics_.serialize();
        for (int i = 0; i < 300 && segue::test::metric_value(m, series) != value; ++i) {
            std::this_thread::sleep_for(10ms);
            m = metrics_.serialize();
        }
        return m;
    }
    void write(std::function<void(segue::store::transaction&)> fn) {
        std::promise<void> done;
        store_->submit_write(std::move(fn), [&](std::exception_ptr e) {
            if (e)
                done.set_exception(e);
            else
                done.set_value();
        });
        done.get_future().get();
    }
    void read(std::function<void(segue::store::transaction&)> fn) {
        std::promise<void> done;
        store_->submit_read(std::move(fn), [&](std::exception_ptr e) {
            if (e)
                done.set_exception(e);
            else
                done.set_value();
        });
        done.get_future().get();
    }
    segue::store::task_row wait_final(const std::string& id) {
        segue::store::task_row t;
        for (int i = 0; i < 500; ++i) {
            read([&](segue::store::transaction& tx) { t = *tx.get_task(id); });
            if (segue::core::is_terminal(*segue::core::parse_task_status(t.status)))
                return t;
            std::this_thread::sleep_for(10ms);
        }
        ADD_FAILURE() << "not final: " << t.status;
        return t;
    }
    std::vector<segue::store::event_row> events(const std::string& id) {
        std::vector<segue::store::event_row> e;
        read([&](segue::store::transaction& tx) { e = tx.get_events(id, 0, 1000); });
        return e;
    }

    // A new engine whose provider takes one call at a time (breakers.max_concurrency 1), and a
    // reservation holding that one slot; reset() gives it back.
    std::optional<segue::core::engine::handoff> hold_the_only_slot() {
        settings_.breakers.max_concurrency = 1;
        engine_ = std::make_unique<segue::core::engine>(pool_->main(), *db_, *blobs_, registry_,
                                                        blocking_, settings_, metrics_);
        return std::make_optional(engine_->reserve("scripted"));
    }
    // The provider got one call, for attempt 1 of `id`, whose callback token hashes to
    // `token_hash`; the attempt is accepted.
    void expect_one_call_accepted(const std::string& id, const std::string& token_hash);
    // Starts the engine on task `id` (one output) whose attempt 1 a callback proved upstream but
    // that knows no upstream id, with its reconcile due; the provider's polls answer `lookup`,
    // then done. Returns the task's id.
    std::string start_seen_but_unnamed(const std::string& id, const update& lookup);

    segue::test::temp_dir dir_;
    segue::config::settings settings_;
    segue::metrics::registry metrics_;
    std::unique_ptr<segue::store::store> store_;
    std::unique_ptr<segue::store::db> db_;
    std::unique_ptr<segue::store::blob_store> blobs_;
    segue::providers::registry registry_;
    scripted_provider* provider_ = nullptr;
    segue::runtime::blocking_pool blocking_{1};
    std::unique_ptr<segue::runtime::io_pool> pool_;
    std::unique_ptr<segue::core::engine> engine_;
    std::thread thread_;
    int n_ = 0;
};

// Attempt 1's intent as it stands before the call: the only attempt, "submitting", at the
// scripted provider.
void expect_intent(const std::vector<segue::store::attempt_row>& attempts) {
    ASSERT_EQ(attempts.size(), 1u);
    EXPECT_EQ(attempts[0].number, 1);
    EXPECT_EQ(attempts[0].provider, "scripted");
    EXPECT_EQ(attempts[0].status, "submitting");
}

std::vector<std::string> types(const std::vector<segue::store::event_row>& evs) {
    std::vector<std::string> out;
    for (const auto& e : evs)
        out.push_back(e.type);
    return out;
}

// The engine's blob store, whose first `failures` put_all calls fail as a database out of reach
// (before taking anything).
class flaky_blobs final : public segue::store::blob_store {
  public:
    flaky_blobs(segue::store::blob_store& real, int failures) : real_(real), left_(failures) {}
    std::string_view backend() const override { return real_.backend(); }
    segue::store::blob_result<std::uint64_t> put(std::string_view key, const std::string& path,
                                                 segue::store::put_mode mode) override {
        return real_.put(key, path, mode);
    }
    segue::store::blob_result<std::vector<std::uint64_t>> put_all(
        std::span<const segue::store::blob_put> files, segue::store::put_mode mode) override {
        if (left_.fetch_sub(1) > 0)
            return segue::store::blob_error{segue::store::blob_errc::backend,
                                            "blob store: cannot connect (a test's outage)"};
        return real_.put_all(files, mode);
    }
    segue::store::blob_result<std::unique_ptr<segue::store::blob_reader>> open(
        std::string_view key) override {
        return real_.open(key);
    }
    segue::store::blob_result<segue::store::local_blob> materialize(std::string_view key) override {
        return real_.materialize(key);
    }
    segue::store::blob_result<bool> remove(std::string_view key) override {
        return real_.remove(key);
    }

  private:
    segue::store::blob_store& real_;
    std::atomic<int> left_;
};

}  // namespace

// A result the store did not take (its files could not be stored: an outage) is made again as
// soon as the store takes a write, not when the job's lease ends (engine.lease, 2 min here):
// the task finishes within seconds (found by a black-box run: 2 min frozen).
TEST_F(Engine, AResultTheStoreDidNotTakeIsMadeAgainOnceTheStoreIsBack) {
    settings_.outputs.verify = false;  // straight to storing the files
    flaky_blobs flaky(*blobs_, 1);
    engine_ = std::make_unique<segue::core::engine>(pool_->main(), *db_, flaky, registry_,
                                                    blocking_, settings_, metrics_);
    const auto id = std::string("ext_test") + std::to_string(n_ + 1);
    const auto work = fs::path(dir_.file("blobs/work/" + id));
    {
        const update u = made_here(work / "out.mp3");
        std::lock_guard lock(provider_->mu);
        provider_->script.push_back(u);  // the poll whose result is not taken
        provider_->script.push_back(u);  // the poll again
        provider_->on_submit = [work](const segue::providers::task_view&) {
            fs::create_directories(work);
            std::ofstream(work / "out.mp3") << "ID3";
        };
    }
    start();
    ASSERT_EQ(create(1), id);
    const auto started = std::chrono::steady_clock::now();
    EXPECT_EQ(wait_final(id).status, "succeeded");
    EXPECT_LT(std::chrono::steady_clock::now() - started, 10s);
    EXPECT_EQ(provider_->polls, 2);
    const auto m = metrics_.serialize();
    EXPECT_EQ(segue::test::metric_value(
                  m, R"(segue_engine_jobs_total{kind="poll",outcome="store_error"})"),
              1)
        << m;
}

TEST_F(Engine, DuplicatedAndOutOfOrderResultsGiveOneEventEach) {
    // Lyrics for output 2 before any audio, output 1 twice, the cover twice, then output 2.
    update lyrics;
    lyrics.what = update::kind::progress;
    segue::providers::output_update l2;
    l2.index = 2;
    l2.lyrics_timestamped = std::vector<segue::core::lyric_line>{{"hello", 1000, 2500}};
    lyrics.outputs.push_back(l2);
    lyrics.poll_after_ms = 0;
    update first;
    first.what = update::kind::progress;
    first.outputs.push_back(ready(1, "One"));
    first.cover_url = "https://cdn.example/cover.png";
    first.poll_after_ms = 0;
    update last;
    last.what = update::kind::done;
    last.outputs.push_back(ready(1, "One"));
    last.outputs.push_back(ready(2, "Two"));
    last.outputs.push_back(l2);
    last.cover_url = "https://cdn.example/cover.png";
    provider_->script = {lyrics, first, first, last};
    start();
    auto id = create(2);
    auto t = wait_final(id);
    EXPECT_EQ(t.status, "succeeded");
    auto evs = events(id);
    EXPECT_EQ(types(evs), (std::vector<std::string>{
                              "extension.queued", "extension.submitted", "extension.lyrics.ready",
                              "extension.cover.ready", "extension.output.ready",
                              "extension.output.ready", "extension.succeeded"}));
    for (std::size_t i = 0; i < evs.size(); ++i) {
        EXPECT_EQ(evs[i].seq, static_cast<std::int64_t>(i + 1));
        EXPECT_EQ(evs[i].tenant, "acme");
        auto data = json::parse(evs[i].data_json).as_object();
        EXPECT_EQ(data["task_id"].as_string(), id);
        EXPECT_EQ(data["metadata"].as_object()["order"], 7) << "metadata echoed in every event";
    }
    // The task document has both outputs, the cover and the lyrics on output 2.
    std::vector<segue::store::output_row> outs;
    std::vector<segue::store::attempt_row> atts;
    read([&](segue::store::transaction& tx) {
        outs = tx.get_outputs(id);
        atts = tx.get_attempts(id);
    });
    auto doc = segue::core::task_document(t, outs, atts);
    auto& o = doc["outputs"].as_array();
    ASSERT_EQ(o.size(), 2u);
    EXPECT_EQ(o[0].as_object().at("title"), "One");
    EXPECT_EQ(o[1].as_object().at("lyrics_timestamped").as_array().size(), 1u);
    EXPECT_EQ(o[1].as_object().at("cover_url"), "https://cdn.example/cover.png");
    ASSERT_EQ(doc["attempts"].as_array().size(), 1u);
    EXPECT_EQ(doc["attempts"].as_array()[0].as_object().at("provider_task_id"), "up-1");
    EXPECT_EQ(doc["attempts"].as_array()[0].as_object().at("status"), "succeeded");
    // No jobs are left behind.
    std::optional<segue::store::millis> due;
    read([&](segue::store::transaction& tx) { due = tx.next_job_due(); });
    EXPECT_FALSE(due);
}

TEST_F(Engine, FailedOutputAndFlaggedGivePartialSuccess) {
    update u;
    u.what = update::kind::done;
    u.outputs.push_back(ready(1, "One"));
    segue::providers::output_update bad;
    bad.index = 2;
    bad.status = segue::core::output_status::failed;
    bad.flagged = true;
    bad.flag_reason = "moderation";
    bad.error = "flagged by the provider";
    u.outputs.push_back(bad);
    provider_->script = {u};
    start();
    auto id = create(2);
    auto t = wait_final(id);
    EXPECT_EQ(t.status, "partially_succeeded");
    auto ty = types(events(id));
    EXPECT_EQ(std::count(ty.begin(), ty.end(), "extension.output.failed"), 1);
    // The last event says how it ended: not "succeeded" when an output failed.
    EXPECT_EQ(ty.back(), "extension.partially_succeeded");
}

// What the engine stores (output data, event data) has plain decimals: 42.5, not 4.25E1.
TEST_F(Engine, StoredDocumentsHavePlainDecimals) {
    update u;
    u.what = update::kind::done;
    u.outputs.push_back(ready(1, "One"));
    provider_->script = {u};
    start();
    auto id = create(1);
    wait_final(id);
    std::vector<segue::store::output_row> outs;
    read([&](segue::store::transaction& tx) { outs = tx.get_outputs(id); });
    ASSERT_EQ(outs.size(), 1u);
    EXPECT_NE(outs[0].data_json.find(R"("duration":42.5)"), std::string::npos) << outs[0].data_json;
    bool seen = false;
    for (const auto& e : events(id)) {
        if (e.type != "extension.output.ready")
            continue;
        seen = true;
        EXPECT_NE(e.data_json.find(R"("duration":42.5)"), std::string::npos) << e.data_json;
        EXPECT_EQ(e.data_json.find("E1"), std::string::npos) << e.data_json;
    }
    EXPECT_TRUE(seen);
}

TEST_F(Engine, TaskLevelFailureFailsPendingOutputs) {
    update u;
    u.what = update::kind::failed;
    u.error = segue::core::error_class::rejected;
    u.error_code = "upstream_rejected";
    u.error_message = "lyrics contain copyrighted content";
    provider_->script = {u};
    start();
    auto id = create(2);
    auto t = wait_final(id);
    EXPECT_EQ(t.status, "failed");
    auto err = json::parse(t.error_json).as_object();
    EXPECT_EQ(err["code"], "upstream_rejected");
    EXPECT_EQ(err["class"], "rejected");
    EXPECT_EQ(err["message"], "lyrics contain copyrighted content");
    auto ty = types(events(id));
    EXPECT_EQ(std::count(ty.begin(), ty.end(), "extension.output.failed"), 2);
    EXPECT_EQ(ty.back(), "extension.failed");
}

TEST_F(Engine, CancelStopsPollingAndIsFinal) {
    start();  // the script is empty: the provider keeps saying "running"
    auto id = create(1);
    for (int i = 0; i < 200 && provider_->polls < 2; ++i)
        std::this_thread::sleep_for(10ms);
    std::promise<segue::core::engine::cancel_outcome> p;
    boost::asio::co_spawn(
        pool_->main(), engine_->cancel(id, "other-tenant"),
        [&](std::exception_ptr, segue::core::engine::cancel_outcome o) { p.set_value(o); });
    EXPECT_EQ(p.get_future().get(), segue::core::engine::cancel_outcome::not_found);
    // The polls made the task's scratch directory; the cancel removes it.
    const auto work = dir_.file("blobs/work/" + id);
    ASSERT_TRUE(fs::exists(work));
    std::promise<segue::core::engine::cancel_outcome> p2;
    boost::asio::co_spawn(
        pool_->main(), engine_->cancel(id, "acme"),
        [&](std::exception_ptr, segue::core::engine::cancel_outcome o) { p2.set_value(o); });
    EXPECT_EQ(p2.get_future().get(), segue::core::engine::cancel_outcome::canceled);
    const int polls = provider_->polls;
    std::this_thread::sleep_for(200ms);
    EXPECT_LE(provider_->polls, polls + 1);  // at most one poll was already in flight
    EXPECT_EQ(wait_final(id).status, "canceled");
    EXPECT_EQ(types(events(id)).back(), "extension.canceled");
    // A poll in flight at the cancel may have made it again; it removes it when it finds its
    // lease gone.
    for (int i = 0; i < 200 && fs::exists(work); ++i)
        std::this_thread::sleep_for(10ms);
    EXPECT_FALSE(fs::exists(work));
}

// A cancel while a poll is out removes the task's scratch directory, and with it the files the
// poll then hands in: storing them fails. The job finds its task ended, as when its lease is
// gone: counted task_ended and logged at info, not a store error.
TEST_F(Engine, AResultWhoseFilesACancelRemovedCountsAsTaskEndedNotAStoreError) {
    settings_.outputs.verify = false;  // straight to storing the files
    provider_->poll_delay_ms = 1000;
    auto id = std::string("ext_test") + std::to_string(n_ + 1);
    const auto work = fs::path(dir_.file("blobs/work/" + id));
    {
        std::lock_guard lock(provider_->mu);
        provider_->script.push_back(made_here(work / "out.mp3"));
    }
    start();
    ASSERT_EQ(create(1), id);
    for (int i = 0; i < 200 && provider_->submits < 1; ++i)
        std::this_thread::sleep_for(10ms);
    ASSERT_EQ(provider_->submits, 1);
    // The poll is under way (it answers after a second): the provider writes its file.
    std::this_thread::sleep_for(100ms);
    fs::create_directories(work);
    std::ofstream(work / "out.mp3") << "ID3";
    std::promise<segue::core::engine::cancel_outcome> p;
    boost::asio::co_spawn(
        pool_->main(), engine_->cancel(id, "acme"),
        [&](std::exception_ptr, segue::core::engine::cancel_outcome o) { p.set_value(o); });
    ASSERT_EQ(p.get_future().get(), segue::core::engine::cancel_outcome::canceled);
    ASSERT_FALSE(fs::exists(work / "out.mp3"));
    const std::string ended = R"(segue_engine_jobs_total{kind="poll",outcome="task_ended"})";
    const std::string m = metrics_when(ended, 1);
    EXPECT_EQ(segue::test::metric_value(m, ended), 1) << m;
    EXPECT_EQ(m.find("outcome=\"store_error\""), std::string::npos) << m;
    EXPECT_EQ(provider_->polls, 1);
    EXPECT_EQ(wait_final(id).status, "canceled");
}

// The create path passes the event context it built from the validated request; the engine
// parses the stored request instead. Both must give the same event and the same delivery.
TEST_F(Engine, EventContextFromTheRequestEqualsParsingTheStoredRequest) {
    for (const char* metadata : {R"({"order":7,"tags":["a","b"]})", "{}", ""}) {
        SCOPED_TRACE(metadata);
        segue::core::extend_request r;
        r.source = segue::core::source_kind::url;
        r.audio_url = "https://cdn.example/in.mp3";
        r.num_outputs = 1;
        r.metadata_json = metadata;
        r.webhook_url = "https://hooks.example/segue";
        std::string data[2];
        for (int with_ctx = 0; with_ctx < 2; ++with_ctx) {
            segue::store::task_row t;
            t.id = "ext_ctx" + std::to_string(++n_);
            t.tenant = "acme";
            t.status = "queued";
            t.provider = "scripted";
            t.request_json = segue::core::request_to_json(r);
            t.num_outputs = 1;
            t.created_at = t.updated_at = segue::core::now_ms();
            const auto ctx = segue::core::engine::event_context_of(r);
            write([&](segue::store::transaction& tx) {
                segue::core::engine::create_task(tx, t, with_ctx ? &ctx : nullptr);
            });
            const auto evs = events(t.id);
            ASSERT_EQ(evs.size(), 1u);
            auto d = boost::json::parse(evs[0].data_json).as_object();
            EXPECT_EQ(d["task_id"], t.id.c_str());
            d.erase("task_id");
            data[with_ctx] = boost::json::serialize(d);
            std::vector<segue::store::delivery_row> dl;
            read([&](segue::store::transaction& tx) {
                dl = tx.list_deliveries("acme", "", t.id, 10, "");
            });
            ASSERT_EQ(dl.size(), 1u) << "one delivery for the webhook_url";
            EXPECT_EQ(dl[0].url, "https://hooks.example/segue");
            EXPECT_EQ(dl[0].event_id, evs[0].id);
        }
        EXPECT_EQ(data[0], data[1]);
        const bool has_md = std::string_view(metadata).size() > 2;
        EXPECT_EQ(data[1].find("\"metadata\":{\"order\":7") != std::string::npos, has_md)
            << data[1];
    }
}

// A job that fails on every run (here: a task whose stored request the engine cannot read, as
// invalid UTF-8 once made) is bounded: after engine.max_job_failures failed runs its task fails
// with code internal, the hold goes back, and events say why. It used to stay queued forever.
// A job of a kind this version does not know (a newer replica scheduled it during a rolling
// upgrade) is left for a replica that knows it: postponed, never dropped, and never counted as
// a failure of the task. (Older versions deleted it: the task then waited forever.)
TEST_F(Engine, AJobOfAKindFromANewerVersionIsLeftForANewerReplica) {
    auto t = queued("ext_newer", "{\"extend_after\": 3}", 1);
    t.status = "running";
    write([&](segue::store::transaction& tx) {
        tx.insert_task(t);
        segue::store::job_row j;
        j.kind = "from_a_newer_version";
        j.task_id = t.id;
        j.due_at = 0;
        j.payload_json = R"({"kept":true})";
        tx.schedule_job(j, false);
    });
    const auto started = segue::core::now_ms();
    start();
    engine_->notify();
    const auto until = std::chrono::steady_clock::now() + 10s;
    std::optional<segue::store::millis> due;
    // Counted once the postponement committed (after it, on the engine's thread).
    const auto counted = [&] {
        return metrics_.serialize().find(
                   R"(segue_engine_jobs_total{kind="unknown",outcome="postponed"} 1)") !=
               std::string::npos;
    };
    while (std::chrono::steady_clock::now() < until) {
        read([&](segue::store::transaction& tx) { due = tx.next_job_due(); });
        if (due && *due > started + 20'000 && counted())
            break;
        std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(due) << "the job was dropped";
    EXPECT_GT(*due, started + 20'000) << "not postponed";
    EXPECT_TRUE(counted());
    // Its payload goes with it; the task is as it was.
    bool kept = false;
    std::optional<segue::store::task_row> after;
    write([&](segue::store::transaction& tx) {
        for (const auto& j : tx.claim_jobs("probe", *due, 1000, 10))
            kept =
                kept || (j.kind == "from_a_newer_version" && j.payload_json == R"({"kept":true})");
        after = tx.get_task(t.id);
    });
    EXPECT_TRUE(kept);
    ASSERT_TRUE(after);
    EXPECT_EQ(after->status, "running");
}

// A task that lost its job (none of any kind, unchanged for five minutes, not ended) is
// reported by the reaper's round: counted, in the gauge, logged; never changed. A job back
// clears it.
TEST_F(Engine, TheReaperReportsATaskThatLostItsJob) {
    auto t = queued("ext_lost", "{\"extend_after\": 3}", 1);
    t.status = "running";
    t.updated_at = segue::core::now_ms() - 6 * 60 * 1000;
    write([&](segue::store::transaction& tx) { tx.insert_task(t); });
    segue::core::reaper reaper(pool_->main(), *db_, *blobs_, blocking_, settings_, metrics_);
    thread_ = std::thread([this] { pool_->run(); });
    auto round = [&] {
        return boost::asio::co_spawn(pool_->main(), reaper.run_once(), boost::asio::use_future)
            .get();
    };
    EXPECT_EQ(round().tasks_without_work, 1);
    EXPECT_NE(metrics_.serialize().find("\nsegue_tasks_without_work 1\n"), std::string::npos);
    std::optional<segue::store::task_row> after;
    read([&](segue::store::transaction& tx) { after = tx.get_task(t.id); });
    ASSERT_TRUE(after);
    EXPECT_EQ(after->status, "running");
    write([&](segue::store::transaction& tx) {
        tx.schedule_job({0, "poll", t.id, "", segue::core::now_ms() + 60'000, "", 0, 0, 0}, true);
    });
    EXPECT_EQ(round().tasks_without_work, 0);
    EXPECT_NE(metrics_.serialize().find("\nsegue_tasks_without_work 0\n"), std::string::npos);
}

TEST_F(Engine, APoisonJobFailsItsTaskAndReleasesItsHold) {
    settings_.engine.max_job_failures = 3;
    auto t = queued("ext_poison", "{\"extend_after\": 3, \"prompt\": \"unterminated", 1);
    write([&](segue::store::transaction& tx) {
        segue::core::engine::create_task(tx, t);
        segue::store::ledger_row grant{0, "acme", "", 0, "grant", "initial", 100'000, "", "", 1};
        ASSERT_TRUE(tx.add_ledger_entry(grant));
        segue::store::ledger_row hold{0, "acme", t.id, 0, "hold", "", 12'000, "scripted", "", 2};
        ASSERT_TRUE(tx.add_ledger_entry(hold));
    });
    start();
    engine_->notify();
    auto done = wait_final(t.id);
    EXPECT_EQ(done.status, "failed");
    EXPECT_NE(done.error_json.find("\"internal\""), std::string::npos) << done.error_json;
    segue::store::task_ledger l;
    segue::store::ledger_balance b;
    read([&](segue::store::transaction& tx) {
        l = tx.ledger_for_task(t.id);
        b = tx.ledger_totals("acme");
    });
    EXPECT_EQ(l.outstanding(), 0);
    EXPECT_EQ(l.released, 12'000);
    EXPECT_EQ(b.held, 0);
    EXPECT_EQ(b.available, 100'000);
    auto ty = types(events(t.id));
    EXPECT_EQ(std::count(ty.begin(), ty.end(), "extension.credits.refunded"), 1);
    EXPECT_EQ(ty.back(), "extension.failed");
    // Nothing left to run.
    std::optional<segue::store::millis> due;
    read([&](segue::store::transaction& tx) { due = tx.next_job_due(); });
    EXPECT_FALSE(due);
}

// An upload the blob store cannot give (here: missing) is the job's failure, not the
// provider's: the provider is never called, the job runs again later (a database hiccup
// passes), and after max_job_failures runs the task fails with code internal.
TEST_F(Engine, AnUnreadableUploadFailsTheJobNotTheProvider) {
    settings_.engine.max_job_failures = 2;
    const auto t = create_with_upload("ext_no_blob", "file_gone");
    start();
    auto done = wait_final(t.id);
    EXPECT_EQ(done.status, "failed");
    EXPECT_NE(done.error_json.find("\"internal\""), std::string::npos) << done.error_json;
    EXPECT_EQ(provider_->submits, 0);
}

// A run the store failed (the blob store out of reach: a connection-slot shortage, an outage)
// waits ten times longer before the next than another failure: engine.max_job_failures such
// runs span minutes, so a short outage does not fail the task (found by a black-box run: 5
// failures in 15 s failed outputs a provider had made).
TEST_F(Engine, ARunTheStoreFailedWaitsLongerBeforeTheNext) {
    class unreachable final : public segue::store::blob_store {
      public:
        std::string_view backend() const override { return "postgres"; }
        segue::store::blob_result<std::uint64_t> put(std::string_view, const std::string&,
                                                     segue::store::put_mode) override {
            return down();
        }
        segue::store::blob_result<std::unique_ptr<segue::store::blob_reader>> open(
            std::string_view) override {
            return down();
        }
        segue::store::blob_result<segue::store::local_blob> materialize(std::string_view) override {
            return down();
        }
        segue::store::blob_result<bool> remove(std::string_view) override { return down(); }

      private:
        static segue::store::blob_error down() {
            return {segue::store::blob_errc::backend, "too many clients already (a test's)"};
        }
    } blobs;
    engine_ = std::make_unique<segue::core::engine>(pool_->main(), *db_, blobs, registry_,
                                                    blocking_, settings_, metrics_);
    const auto t = create_with_upload("ext_far_blob", "file_far");
    const auto before = segue::core::now_ms();
    start();
    const std::string failed = R"(segue_engine_jobs_total{kind="submit",outcome="store_error"})";
    const std::string m = metrics_when(failed, 1);
    ASSERT_EQ(segue::test::metric_value(m, failed), 1) << m;
    // The job's row, read beside the store (its own connection to the WAL database).
    auto job = [&] {
        sqlite3* c = nullptr;
        std::pair<int, std::int64_t> out{-1, 0};
        if (sqlite3_open_v2(settings_.storage.sqlite_path.c_str(), &c, SQLITE_OPEN_READONLY,
                            nullptr) == SQLITE_OK) {
            sqlite3_stmt* st = nullptr;
            sqlite3_prepare_v2(c, "SELECT failures, due_at FROM jobs WHERE task_id = ?1", -1, &st,
                               nullptr);
            sqlite3_bind_text(st, 1, t.id.c_str(), -1, SQLITE_TRANSIENT);
            if (sqlite3_step(st) == SQLITE_ROW)
                out = {sqlite3_column_int(st, 0), sqlite3_column_int64(st, 1)};
            sqlite3_finalize(st);
        }
        sqlite3_close(c);
        return out;
    };
    auto [failures, due_at] = job();
    for (int i = 0; i < 100 && failures != 1; ++i) {
        std::this_thread::sleep_for(10ms);
        std::tie(failures, due_at) = job();
    }
    EXPECT_EQ(failures, 1);
    EXPECT_GE(due_at - before, 4500) << "the next run of a store failure comes after 5 s";
    EXPECT_EQ(provider_->submits, 0);
}

// An output that brings its own cover (MusicAPI: one image per clip) keeps it; the task's cover
// still fills the others.
TEST_F(Engine, EachOutputKeepsItsOwnCover) {
    update u;
    u.what = update::kind::done;
    auto a = ready(1, "One");
    a.cover_url = "https://cdn.example/one.jpg";
    auto b = ready(2, "Two");
    b.cover_url = "https://cdn.example/two.jpg";
    u.outputs = {a, b};
    u.cover_url = "https://cdn.example/one.jpg";
    provider_->script = {u};
    start();
    auto id = create(2);
    EXPECT_EQ(wait_final(id).status, "succeeded");
    std::vector<segue::store::output_row> outs;
    read([&](segue::store::transaction& tx) { outs = tx.get_outputs(id); });
    ASSERT_EQ(outs.size(), 2u);
    EXPECT_EQ(json::parse(outs[0].data_json).at("cover_url"), "https://cdn.example/one.jpg");
    EXPECT_EQ(json::parse(outs[1].data_json).at("cover_url"), "https://cdn.example/two.jpg");
}

namespace {

std::string url_request() {
    segue::core::extend_request r;
    r.source = segue::core::source_kind::url;
    r.audio_url = "https://cdn.example/in.mp3";
    r.num_outputs = 1;
    return segue::core::request_to_json(r);
}

template <class F>
bool eventually(F f, std::chrono::milliseconds limit = 5s) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (!f()) {
        if (std::chrono::steady_clock::now() > until)
            return false;
        std::this_thread::sleep_for(5ms);
    }
    return true;
}

}  // namespace

void Engine::expect_one_call_accepted(const std::string& id, const std::string& token_hash) {
    std::vector<segue::store::attempt_row> attempts;
    ASSERT_TRUE(eventually([&] {
        read([&](segue::store::transaction& tx) { attempts = tx.get_attempts(id); });
        return attempts.size() == 1 && attempts[0].status == "accepted";
    }));
    std::lock_guard lock(provider_->mu);
    ASSERT_EQ(provider_->callback_tokens.size(), 1u);
    EXPECT_EQ(segue::util::sha256_hex(provider_->callback_tokens[0]), token_hash);
    EXPECT_EQ(provider_->submits.load(), 1);
}

// A create hands its submit job to the engine in memory: it runs at once, without a claim
// round. Here the engine is never started, so no claim round can run at all; the handed-off job
// still reaches the provider, once, and its attempt is accepted.
TEST_F(Engine, AHandedOffSubmitRunsWithoutAClaimRound) {
    thread_ = std::thread([this] { pool_->run(); });  // the io_context only: no engine.start()
    auto t = queued("ext_handoff", url_request(), 1);
    auto h = engine_->reserve("scripted");
    ASSERT_TRUE(h);
    write([&](segue::store::transaction& tx) {
        segue::core::engine::create_task(tx, t, nullptr, &h);
        // Leased at insert: a claim at this instant finds nothing due to take.
        EXPECT_TRUE(tx.claim_jobs("someone_else", tx.clock_ms(), 1000, 10, {}).empty());
    });
    engine_->hand_off(std::move(h), t);
    ASSERT_TRUE(eventually([&] { return provider_->submits.load() == 1; }));
    std::vector<segue::store::attempt_row> attempts;
    ASSERT_TRUE(eventually([&] {
        read([&](segue::store::transaction& tx) { attempts = tx.get_attempts(t.id); });
        return attempts.size() == 1 && attempts[0].status == "accepted";
    })) << (attempts.empty() ? "no attempt" : attempts[0].status);
    EXPECT_EQ(attempts[0].provider_task_id, "up-1");
    EXPECT_EQ(provider_->submits.load(), 1);
}

// At engine.batch less the quarter kept for claims, reserve() says no: the create writes the job
// unleased, due now, and a claim round runs it. A reservation that ends unused frees its slot.
TEST_F(Engine, ASaturatedEngineLeavesTheSubmitToAClaim) {
    settings_.engine.batch = 4;  // one slot kept for claims: three hand-offs at most
    engine_ = std::make_unique<segue::core::engine>(pool_->main(), *db_, *blobs_, registry_,
                                                    blocking_, settings_, metrics_);
    std::vector<segue::core::engine::handoff> held;
    for (int i = 0; i < 3; ++i) {
        held.push_back(engine_->reserve("scripted"));
        ASSERT_TRUE(held.back()) << i;
    }
    auto none = engine_->reserve("scripted");
    EXPECT_FALSE(none);
    auto t = queued("ext_saturated", url_request(), 1);
    write([&](segue::store::transaction& tx) {
        segue::core::engine::create_task(tx, t, nullptr, none ? &none : nullptr);
    });
    engine_->hand_off(std::move(none), t);  // empty: does nothing
    start();
    engine_->notify();
    // The three hand-offs fill the submit lane (three quarters of the batch): the kept slot is
    // the other lane's, so the written job waits for a claim once a submit slot is free.
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(provider_->submits.load(), 0) << "submits took more than their lane";
    held.clear();  // unused reservations end: their slots are free again
    ASSERT_TRUE(eventually([&] { return provider_->submits.load() == 1; }));
    EXPECT_TRUE(engine_->reserve("scripted"));
}

// Slow polls hold at most three quarters of the batch: with every poll slot taken by a provider
// that answers in seconds, a new task is still submitted at once (by a claim: it was written
// without a hand-off), not after the first poll ends.
TEST_F(Engine, SlowPollsLeaveNewSubmitsTheirSlots) {
    settings_.engine.batch = 4;  // lanes of at most three
    engine_ = std::make_unique<segue::core::engine>(pool_->main(), *db_, *blobs_, registry_,
                                                    blocking_, settings_, metrics_);
    provider_->poll_delay_ms = 3000;
    start();
    for (int i = 0; i < 4; ++i)
        create(1);
    ASSERT_TRUE(eventually([&] { return provider_->submits.load() == 4; }));
    const auto running = [&] {
        return metrics_.serialize().find("segue_engine_jobs_running 3\n") != std::string::npos;
    };
    ASSERT_TRUE(eventually(running)) << metrics_.serialize();  // three polls, each for 3 s
    const auto t0 = std::chrono::steady_clock::now();
    create(1);
    ASSERT_TRUE(eventually([&] { return provider_->submits.load() == 5; }, 2s))
        << "the new task's submit waited behind the slow polls";
    EXPECT_LT(std::chrono::steady_clock::now() - t0, 1500ms);
    EXPECT_EQ(provider_->polls.load(), 0) << "no poll has answered yet";
}

// A create whose provider can take a call now writes attempt 1's intent in its own commit: the
// handed-off job's first write is its result, after the call. While the provider has the call,
// the attempt is already durable, "submitting", and holds the SHA-256 of the callback token the
// provider was given.
TEST_F(Engine, AHandedOffCreateWritesTheIntentInItsOwnCommit) {
    thread_ = std::thread([this] { pool_->run(); });
    auto t = queued("ext_intent", url_request(), 1);
    std::promise<std::vector<segue::store::attempt_row>> during;
    provider_->on_submit = [&](const segue::providers::task_view&) {
        // On the engine's thread: a read through the store's own reader.
        std::thread([&] {
            read([&](auto& tx) { during.set_value(tx.get_attempts("ext_intent")); });
        }).join();
    };
    auto h = engine_->reserve("scripted");
    ASSERT_TRUE(h);
    std::vector<segue::store::attempt_row> committed;
    write([&](segue::store::transaction& tx) {
        segue::core::engine::create_task(tx, t, nullptr, &h);
        committed = tx.get_attempts(t.id);
    });
    ASSERT_NO_FATAL_FAILURE(expect_intent(committed));
    engine_->hand_off(std::move(h), t);
    auto seen = during.get_future();
    ASSERT_EQ(seen.wait_for(5s), std::future_status::ready);
    ASSERT_NO_FATAL_FAILURE(expect_intent(seen.get()));
    expect_one_call_accepted(t.id, committed[0].callback_token);
}

// Without a free slot at the provider's breaker (max_concurrency reached) the create writes no
// intent: the handed-off job waits for a slot and writes its own intent, as a claimed job does.
// A handoff that ends unused gives its slot back.
TEST_F(Engine, AHandOffWithoutABreakerSlotWritesNoIntentAndTheJobWaitsForOne) {
    auto holder = hold_the_only_slot();
    ASSERT_TRUE(*holder);
    auto t = queued("ext_noslot", url_request(), 1);
    auto h = engine_->reserve("scripted");
    ASSERT_TRUE(h);
    write([&](segue::store::transaction& tx) {
        segue::core::engine::create_task(tx, t, nullptr, &h);
        EXPECT_TRUE(tx.get_attempts(t.id).empty());
    });
    start();
    engine_->hand_off(std::move(h), t);
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(provider_->submits.load(), 0) << "sent beyond max_concurrency";
    holder.reset();  // unused: its slot goes back
    ASSERT_TRUE(eventually([&] { return provider_->submits.load() == 1; }));
    std::vector<segue::store::attempt_row> attempts;
    ASSERT_TRUE(eventually([&] {
        read([&](segue::store::transaction& tx) { attempts = tx.get_attempts(t.id); });
        return attempts.size() == 1 && attempts[0].status == "accepted";
    }));
}

// A claimed submit job (the engine was saturated when its task was created) writes its
// attempt's intent in the claim's commit: between the create and the call, one write unit
// commits, the claim, and the attempt it wrote is durable and "submitting" while the provider
// has the call, with the SHA-256 of the token the provider was given.
TEST_F(Engine, AClaimedSubmitWritesItsIntentInTheClaimsCommit) {
    auto t = queued("ext_claimed", url_request(), 1);
    write([&](segue::store::transaction& tx) { segue::core::engine::create_task(tx, t); });
    const auto before = store_->stats().units;
    std::promise<std::pair<std::uint64_t, std::vector<segue::store::attempt_row>>> during;
    provider_->on_submit = [&](const segue::providers::task_view&) {
        const auto units = store_->stats().units;
        std::thread([&] {
            read([&](auto& tx) { during.set_value({units, tx.get_attempts("ext_claimed")}); });
        }).join();
    };
    start();
    engine_->notify();
    auto seen = during.get_future();
    ASSERT_EQ(seen.wait_for(5s), std::future_status::ready);
    const auto [units, at_call] = seen.get();
    EXPECT_EQ(units - before, 1u) << "write units committed between the create and the call";
    ASSERT_NO_FATAL_FAILURE(expect_intent(at_call));
    expect_one_call_accepted(t.id, at_call[0].callback_token);
}

// At the provider's concurrency limit a claim writes no intent: the claimed job waits for a slot
// (rescheduled, no attempt spent) and then writes its own, once.
TEST_F(Engine, AClaimAtTheProvidersLimitWritesNoIntent) {
    auto holder = hold_the_only_slot();
    ASSERT_TRUE(*holder);
    auto t = queued("ext_claim_full", url_request(), 1);
    write([&](segue::store::transaction& tx) { segue::core::engine::create_task(tx, t); });
    start();
    engine_->notify();
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(provider_->submits.load(), 0) << "sent beyond max_concurrency";
    read([&](segue::store::transaction& tx) { EXPECT_TRUE(tx.get_attempts(t.id).empty()); });
    holder.reset();
    ASSERT_TRUE(eventually([&] { return provider_->submits.load() == 1; }));
    std::vector<segue::store::attempt_row> attempts;
    ASSERT_TRUE(eventually([&] {
        read([&](segue::store::transaction& tx) { attempts = tx.get_attempts(t.id); });
        return attempts.size() == 1 && attempts[0].status == "accepted";
    }));
    EXPECT_EQ(provider_->submits.load(), 1);
}

// A crash between the create's commit and the call leaves the job leased to an engine that is
// gone, and attempt 1's intent written: nothing runs the job until the lease expires; then
// another engine (a restarted process: a new owner) claims it. It cannot know whether the call
// left before the crash, so it never resends blindly: attempt 1 is reconciled (no sign of it
// upstream), and attempt 2 is the one call the provider gets.
TEST_F(Engine, AJobHandedToADeadEngineIsClaimedAfterItsLeaseAndItsIntentReconciled) {
    settings_.engine.lease = 600ms;
    settings_.retry.transient.initial = 10ms;
    auto t = queued("ext_orphan", url_request(), 1);
    {
        auto h = engine_->reserve("scripted");
        ASSERT_TRUE(h);
        write([&](segue::store::transaction& tx) {
            segue::core::engine::create_task(tx, t, nullptr, &h);
        });
        // "Crash": the handoff is dropped, its engine never runs.
    }
    const auto written = std::chrono::steady_clock::now();
    engine_ = std::make_unique<segue::core::engine>(pool_->main(), *db_, *blobs_, registry_,
                                                    blocking_, settings_, metrics_);
    start();
    engine_->notify();
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(provider_->submits.load(), 0) << "claimed while another engine held the lease";
    ASSERT_TRUE(eventually([&] { return provider_->submits.load() == 1; }, 10s));
    EXPECT_GE(std::chrono::steady_clock::now() - written, 550ms);
    std::vector<segue::store::attempt_row> attempts;
    ASSERT_TRUE(eventually([&] {
        read([&](segue::store::transaction& tx) { attempts = tx.get_attempts(t.id); });
        return attempts.size() == 2 && attempts[1].status == "accepted";
    }));
    EXPECT_EQ(attempts[0].status, "failed");
    EXPECT_NE(attempts[0].error_json.find("ambiguous_unresolved"), std::string::npos)
        << attempts[0].error_json;
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(provider_->submits.load(), 1);
}

// `t` written with attempt 1 accepted and seen upstream at `now` (a callback came) but with no
// upstream id, and its reconcile due.
namespace {
void seen_but_unnamed(segue::store::transaction& tx, const segue::store::task_row& t,
                      segue::store::millis now) {
    segue::core::engine::create_task(tx, t);
    tx.delete_jobs_for_task(t.id);
    tx.upsert_attempt({t.id, 1, "scripted", "", "hash", "accepted", "", "", now, 0, now});
    segue::store::job_row j;
    j.kind = "reconcile";
    j.task_id = t.id;
    j.due_at = now;
    j.payload_json = R"({"attempt":1})";
    tx.schedule_job(j, true);
}
}  // namespace

std::string Engine::start_seen_but_unnamed(const std::string& id, const update& lookup) {
    auto t = queued(id, url_request(), 1);
    write([&](segue::store::transaction& tx) { seen_but_unnamed(tx, t, segue::core::now_ms()); });
    update done;
    done.what = update::kind::done;
    done.outputs = {ready(1, "Found")};
    {
        std::lock_guard lock(provider_->mu);
        provider_->script = {lookup, done};
    }
    start();
    engine_->notify();
    return t.id;
}

// An attempt the provider has (a callback with its token came, store::attempt_row::seen_at) but
// that no callback named the upstream task of: its reconcile asks the provider (which may look
// the attempt up by what the callbacks named) and, told nothing, looks again every window (here
// the scripted provider's window, 0, floored to 1 s) instead of submitting; it polls once the
// task is named, and is never sent again.
TEST_F(Engine, AnAttemptSeenUpstreamButUnnamedIsReconciledAgainUntilItIsNamed) {
    update nothing;  // the lookup: still running, no task named
    nothing.what = update::kind::running;
    const auto id = start_seen_but_unnamed("ext_unnamed", nothing);
    ASSERT_TRUE(eventually([&] { return provider_->polls.load() == 1; }));
    std::this_thread::sleep_for(300ms);
    EXPECT_EQ(provider_->polls.load(), 1) << "the reconcile should wait another window";
    EXPECT_EQ(provider_->submits.load(), 0);
    // A callback names the upstream task meanwhile (as the refused MusicGPT audio callback does).
    write([&](segue::store::transaction& tx) {
        auto a = tx.get_attempts(id);
        a[0].provider_task_id = "up-9";
        tx.upsert_attempt(a[0]);
    });
    EXPECT_EQ(wait_final(id).status, "succeeded");
    EXPECT_EQ(provider_->submits.load(), 0);
    EXPECT_EQ(provider_->polls.load(), 2);
}

// The same attempt, but the provider finds its task by what the callbacks named: the reconcile
// records the task it names and hands over to polling; nothing is submitted.
TEST_F(Engine, AnAttemptSeenUpstreamIsLookedUpByTheProvider) {
    update named;  // the lookup found the task, still running
    named.what = update::kind::running;
    named.provider_task_id = "up-7";
    named.poll_after_ms = 10;
    const auto id = start_seen_but_unnamed("ext_lookup", named);
    EXPECT_EQ(wait_final(id).status, "succeeded");
    std::vector<segue::store::attempt_row> attempts;
    read([&](segue::store::transaction& tx) { attempts = tx.get_attempts(id); });
    ASSERT_EQ(attempts.size(), 1u);
    EXPECT_EQ(attempts[0].provider_task_id, "up-7");
    EXPECT_EQ(provider_->submits.load(), 0);
}

// The same attempt once the task's retry deadline has passed: failed as a task the provider
// took and never delivered (upstream_silent), its hold released, and not generated again.
TEST_F(Engine, AnAttemptSeenUpstreamButNeverNamedFailsAtTheDeadlineWithoutAResubmit) {
    auto t = queued("ext_silent", url_request(), 1);
    t.created_at = t.updated_at = segue::core::now_ms() - settings_.retry.deadline.count() - 1000;
    const auto now = segue::core::now_ms();
    write([&](segue::store::transaction& tx) { seen_but_unnamed(tx, t, now); });
    start();
    engine_->notify();
    const auto done = wait_final(t.id);
    EXPECT_EQ(done.status, "failed");
    EXPECT_NE(done.error_json.find("upstream_silent"), std::string::npos) << done.error_json;
    std::this_thread::sleep_for(200ms);
    EXPECT_EQ(provider_->submits.load(), 0);
}

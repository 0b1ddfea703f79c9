// The blob store through one suite run against every backend: the directory and PostgreSQL
// (a schema of its own per test on the scripts/pg.sh server).

#include <gtest/gtest.h>
#include <unistd.h>

#include <atomic>
#include <chrono>
#include <cstdio>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <future>
#include <thread>
#include <vector>

#include "gateway/store/blob_store.hpp"
#include "gateway/util/crypto.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

namespace fs = std::filesystem;
using segue::store::blob_backend;
using segue::store::blob_errc;
using segue::store::put_mode;

namespace {

constexpr std::size_t MiB = 1u << 20;

// Deterministic bytes: the i-th byte of content `seed`.
char byte_at(std::uint64_t seed, std::uint64_t i) {
    return static_cast<char>(((i + 1) * 2654435761ull + seed * 40503ull) >> 13);
}

std::string bytes(std::uint64_t seed, std::uint64_t from, std::size_t n) {
    std::string s(n, '\0');
    for (std::size_t k = 0; k < n; ++k)
        s[k] = byte_at(seed, from + k);
    return s;
}

// A local file of `size` bytes of content `seed`, written 1 MiB at a time.
void make_file(const std::string& path, std::uint64_t size, std::uint64_t seed) {
    std::ofstream out(path, std::ios::binary | std::ios::trunc);
    for (std::uint64_t at = 0; at < size; at += MiB) {
        const auto n = static_cast<std::size_t>(std::min<std::uint64_t>(MiB, size - at));
        out << bytes(seed, at, n);
    }
    ASSERT_TRUE(out.good());
}

std::string sha_of(std::uint64_t size, std::uint64_t seed) {
    segue::util::sha256_stream s;
    for (std::uint64_t at = 0; at < size; at += MiB)
        s.update(
            bytes(seed, at, static_cast<std::size_t>(std::min<std::uint64_t>(MiB, size - at))));
    return s.hex_digest();
}

std::string file_text(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    return {std::istreambuf_iterator<char>(in), {}};
}

// Everything a reader gives from its offset, read `piece` bytes at a time.
std::string read_rest(segue::store::blob_reader& r, std::size_t piece) {
    std::string out;
    std::vector<char> buf(piece);
    for (;;) {
        auto n = r.read(buf);
        if (!n)
            throw std::runtime_error(n.error().message);
        if (*n == 0)
            return out;
        out.append(buf.data(), *n);
    }
}

// The SHA-256 of a blob, streamed (never the whole blob in memory).
std::string blob_sha(segue::store::blob_store& s, const std::string& key) {
    auto r = s.open(key).value();
    segue::util::sha256_stream sha;
    std::vector<char> buf(300 * 1024);
    for (;;) {
        auto n = r->read(buf).value();
        if (n == 0)
            return sha.hex_digest();
        sha.update(std::string_view(buf.data(), n));
    }
}

// ThreadSanitizer's allocator keeps freed memory longer: its peaks say little about ours.
#if defined(__has_feature)
#if __has_feature(thread_sanitizer)
#define SEGUE_UNDER_TSAN 1
#endif
#endif
#ifdef SEGUE_UNDER_TSAN
constexpr bool under_tsan = true;
#else
constexpr bool under_tsan = false;
#endif

// How much `fn` raised the peak resident memory, KiB; nullopt where the peak cannot be reset.
template <class F>
std::optional<long> peak_growth_kib(F&& fn) {
    const bool reset = segue::test::reset_peak_rss();
    const auto before = static_cast<long>(segue::test::status_kib("VmRSS"));
    fn();
    if (!reset)
        return std::nullopt;
    return static_cast<long>(segue::test::status_kib("VmHWM")) - before;
}

class BlobStore : public ::testing::TestWithParam<blob_backend> {
  protected:
    void SetUp() override {
        if (GetParam() == blob_backend::postgres)
            schema_ = std::make_unique<segue::test::pg_schema>();
        store_ = open();
    }
    std::unique_ptr<segue::store::blob_store> open(
        std::chrono::seconds cache_ttl = std::chrono::hours(1)) {
        segue::store::blob_options o;
        o.backend = GetParam();
        o.dir = dir_.file("blobs");
        o.pg_url = schema_ ? schema_->url() : "";
        o.cache_ttl = cache_ttl;
        return segue::store::open_blob_store(o);
    }
    bool postgres() const { return GetParam() == blob_backend::postgres; }
    std::string local(const std::string& name, std::uint64_t size, std::uint64_t seed) {
        const auto p = dir_.file(name);
        make_file(p, size, seed);
        return p;
    }
    std::string sql(const std::string& q) { return segue::test::pg_exec(schema_->url(), q); }

    segue::test::temp_dir dir_;
    std::unique_ptr<segue::test::pg_schema> schema_;
    std::unique_ptr<segue::store::blob_store> store_;
};

TEST_P(BlobStore, PutThenReadBackAcrossChunkBoundaries) {
    const std::uint64_t size = 3 * MiB + 12345;
    const auto src = local("in", size, 1);
    auto put = store_->put("uploads/file_a", src, put_mode::copy);
    ASSERT_TRUE(put) << put.error().message;
    EXPECT_EQ(*put, size);
    EXPECT_TRUE(fs::exists(src));  // copy leaves the local file
    auto r = store_->open("uploads/file_a");
    ASSERT_TRUE(r) << r.error().message;
    EXPECT_EQ((*r)->size(), size);
    // An odd piece size: reads straddle every chunk boundary.
    EXPECT_EQ(read_rest(**r, 100'003), bytes(1, 0, size));
    EXPECT_EQ(store_->backend(), postgres() ? "postgres" : "directory");
}

TEST_P(BlobStore, TakeConsumesTheLocalFile) {
    const auto src = local("spool", 200'000, 2);
    ASSERT_TRUE(store_->put("uploads/file_b", src, put_mode::take));
    EXPECT_FALSE(fs::exists(src));
    EXPECT_EQ(blob_sha(*store_, "uploads/file_b"), sha_of(200'000, 2));
}

// A set (an output's MP3, WAV and cover) stored at once, across two directories: each file
// under its key, the sizes in order, the local files taken.
TEST_P(BlobStore, PutAllStoresEveryFileOfASet) {
    const std::vector<segue::store::blob_put> set = {
        {"outputs/ext_a/file_1-output-1.mp3", local("mp3", 70'000, 11)},
        {"outputs/ext_a/file_2-output-1.wav", local("wav", 1'500'000, 12)},
        {"covers/ext_a/file_3-cover.png", local("png", 0, 13)},
    };
    auto sizes = store_->put_all(set, put_mode::take);
    ASSERT_TRUE(sizes) << sizes.error().message;
    EXPECT_EQ(*sizes, (std::vector<std::uint64_t>{70'000, 1'500'000, 0}));
    for (const auto& f : set)
        EXPECT_FALSE(fs::exists(f.local_path)) << f.local_path;
    EXPECT_EQ(blob_sha(*store_, set[0].key), sha_of(70'000, 11));
    EXPECT_EQ(blob_sha(*store_, set[1].key), sha_of(1'500'000, 12));
    EXPECT_EQ(store_->open(set[2].key).value()->size(), 0u);
}

// A file of the set that cannot be stored (its local file is gone): the call fails naming it,
// and nothing of the set stays stored, neither the files before it nor any after it.
TEST_P(BlobStore, PutAllThatFailsLeavesNothingOfTheSet) {
    const std::vector<segue::store::blob_put> set = {
        {"outputs/ext_b/file_1-output-1.mp3", local("mp3", 10'000, 21)},
        {"outputs/ext_b/file_2-output-1.wav", dir_.file("no-such-file")},
        {"outputs/ext_b/file_3-cover.png", local("png", 3'000, 23)},
    };
    auto sizes = store_->put_all(set, put_mode::copy);
    ASSERT_FALSE(sizes);
    EXPECT_NE(sizes.error().message.find("no-such-file"), std::string::npos)
        << sizes.error().message;
    for (const auto& f : set) {
        auto r = store_->open(f.key);
        ASSERT_FALSE(r) << f.key << " is stored";
        EXPECT_EQ(r.error().code, blob_errc::not_found) << r.error().message;
    }
    EXPECT_TRUE(fs::exists(set[0].local_path));  // copy leaves the local files
}

TEST_P(BlobStore, RangesStartAnywhere) {
    const std::uint64_t size = 2 * MiB + 777;
    ASSERT_TRUE(store_->put("k", local("in", size, 3), put_mode::copy));
    auto r = store_->open("k").value();
    for (std::uint64_t at : {std::uint64_t{0}, MiB - 1, std::uint64_t{MiB}, MiB + 1, 2 * MiB,
                             size - 1, size, std::uint64_t{5}}) {
        ASSERT_TRUE(r->seek(at)) << at;
        std::vector<char> buf(1000);
        auto n = r->read(buf);
        ASSERT_TRUE(n) << n.error().message;
        const auto want = static_cast<std::size_t>(std::min<std::uint64_t>(1000, size - at));
        // A read may stop at a chunk's end; it never returns 0 before the end.
        if (at < size)
            ASSERT_GT(*n, 0u) << at;
        else
            ASSERT_EQ(*n, 0u);
        ASSERT_LE(*n, want);
        EXPECT_EQ(std::string(buf.data(), *n), bytes(3, at, *n)) << at;
    }
    auto beyond = r->seek(size + 1);
    ASSERT_FALSE(beyond);
    // After a failed seek the reader still reads from where it was.
    ASSERT_TRUE(r->seek(size - 10));
    EXPECT_EQ(read_rest(*r, 4), bytes(3, size - 10, 10));
}

TEST_P(BlobStore, MaterializeGivesALocalFileWithTheBytes) {
    const auto src = local("in", MiB + 5, 4);
    ASSERT_TRUE(store_->put("outputs/ext_1/file_x-output-1.wav", src, put_mode::copy));
    auto m = store_->materialize("outputs/ext_1/file_x-output-1.wav");
    ASSERT_TRUE(m) << m.error().message;
    EXPECT_EQ(file_text(m->path), bytes(4, 0, MiB + 5));
    if (postgres()) {
        // A copy in the local cache, named by its content.
        EXPECT_EQ(fs::path(m->path).parent_path(), fs::path(dir_.file("blobs/cache")));
        EXPECT_EQ(fs::path(m->path).filename(), sha_of(MiB + 5, 4));
    } else {
        EXPECT_EQ(m->path, dir_.file("blobs/outputs/ext_1/file_x-output-1.wav"));
    }
    // Again: the same file (the cache is reused, not refilled).
    auto again = store_->materialize("outputs/ext_1/file_x-output-1.wav");
    ASSERT_TRUE(again);
    EXPECT_EQ(again->path, m->path);
}

TEST_P(BlobStore, PutReplacesAtomically) {
    ASSERT_TRUE(store_->put("k", local("one", 3 * MiB, 7), put_mode::copy));
    auto early = store_->open("k").value();
    std::vector<char> buf(1000);
    ASSERT_TRUE(early->read(buf));  // the first chunk is in hand
    ASSERT_TRUE(store_->put("k", local("two", 2 * MiB + 1, 8), put_mode::copy));
    EXPECT_EQ(store_->open("k").value()->size(), 2 * MiB + 1);
    EXPECT_EQ(blob_sha(*store_, "k"), sha_of(2 * MiB + 1, 8));
    // A reader opened before the replace reads the old blob to its end, or is told it changed:
    // never a mix of the two.
    ASSERT_TRUE(early->seek(0));
    std::string got;
    try {
        got = read_rest(*early, 64 * 1024);
        EXPECT_EQ(got, bytes(7, 0, 3 * MiB));
    } catch (const std::exception& e) {
        EXPECT_TRUE(postgres()) << e.what();
        EXPECT_NE(std::string(e.what()).find("replaced or removed"), std::string::npos) << e.what();
    }
}

TEST_P(BlobStore, MissingKeysAndRemove) {
    EXPECT_EQ(store_->open("nope").error().code, blob_errc::not_found);
    EXPECT_EQ(store_->materialize("nope").error().code, blob_errc::not_found);
    EXPECT_EQ(store_->remove("nope").value(), false);
    ASSERT_TRUE(store_->put("dir/k", local("in", 10, 9), put_mode::copy));
    EXPECT_EQ(store_->remove("dir/k").value(), true);
    EXPECT_EQ(store_->remove("dir/k").value(), false);
    EXPECT_EQ(store_->open("dir/k").error().code, blob_errc::not_found);
    if (postgres())
        EXPECT_EQ(sql("SELECT count(*) FROM blob_chunks"), "0");
}

// A task's directory (outputs/<task>/) goes with its last file, so retention leaves no empty
// directory per task; a top-level one stays; a put into the same directory later works.
TEST_P(BlobStore, ATasksDirectoryGoesWithItsLastFile) {
    ASSERT_TRUE(store_->put("outputs/ext_d/a.wav", local("a", 10, 1), put_mode::copy));
    ASSERT_TRUE(store_->put("outputs/ext_d/b.mp3", local("b", 10, 2), put_mode::copy));
    ASSERT_TRUE(store_->put("uploads/file_u", local("u", 10, 3), put_mode::copy));
    const auto dir = fs::path(dir_.file("blobs"));
    EXPECT_TRUE(store_->remove("outputs/ext_d/a.wav").value());
    if (!postgres())
        EXPECT_TRUE(fs::exists(dir / "outputs" / "ext_d")) << "b.mp3 is still in it";
    EXPECT_TRUE(store_->remove("outputs/ext_d/b.mp3").value());
    EXPECT_TRUE(store_->remove("uploads/file_u").value());
    if (!postgres()) {
        EXPECT_FALSE(fs::exists(dir / "outputs" / "ext_d"));
        EXPECT_TRUE(fs::exists(dir / "outputs"));
        EXPECT_TRUE(fs::exists(dir / "uploads"));
    }
    ASSERT_TRUE(store_->put("outputs/ext_d/c.wav", local("c", 10, 4), put_mode::take));
    EXPECT_EQ(blob_sha(*store_, "outputs/ext_d/c.wav"), sha_of(10, 4));
}

TEST_P(BlobStore, InvalidKeysAreRefused) {
    const auto src = local("in", 10, 10);
    for (std::string key : std::vector<std::string>{"", "/abs", "a/../b", "a//b", "./a", "a/", "..",
                                                    std::string("a\nb"), std::string(1025, 'k')}) {
        EXPECT_EQ(store_->put(key, src, put_mode::copy).error().code, blob_errc::invalid_key)
            << key;
        EXPECT_EQ(store_->open(key).error().code, blob_errc::invalid_key) << key;
        EXPECT_EQ(store_->remove(key).error().code, blob_errc::invalid_key) << key;
    }
    EXPECT_TRUE(fs::exists(src));
    EXPECT_EQ(store_->put("k", dir_.file("no-such-file"), put_mode::copy).error().code,
              blob_errc::not_found);
}

TEST_P(BlobStore, EmptyBlob) {
    ASSERT_TRUE(store_->put("empty", local("in", 0, 0), put_mode::copy));
    auto r = store_->open("empty").value();
    EXPECT_EQ(r->size(), 0u);
    EXPECT_EQ(read_rest(*r, 10), "");
    EXPECT_EQ(file_text(store_->materialize("empty").value().path), "");
}

TEST_P(BlobStore, AnotherStoreOnTheSameBackendSeesTheBlobs) {
    ASSERT_TRUE(store_->put("uploads/shared", local("in", MiB + 3, 11), put_mode::copy));
    auto replica = open();  // a second replica: its own pool, the tables already there
    EXPECT_EQ(blob_sha(*replica, "uploads/shared"), sha_of(MiB + 3, 11));
}

// 24 MiB in and out (put, a streamed read, a materialized copy) without the process growing by
// anything like the file: the backends hold a chunk or two, never the file.
TEST_P(BlobStore, LargeBlobStreamsInBoundedMemory) {
    const std::uint64_t size = 24 * MiB + 100;
    const auto src = local("big", size, 12);
    const auto want_sha = sha_of(size, 12);
    using clock = std::chrono::steady_clock;
    clock::duration put_time{}, read_time{}, local_time{};
    const auto grown = peak_growth_kib([&] {
        auto t0 = clock::now();
        auto put = store_->put("outputs/big", src, put_mode::copy);
        put_time = clock::now() - t0;
        ASSERT_TRUE(put) << put.error().message;
        t0 = clock::now();
        EXPECT_EQ(blob_sha(*store_, "outputs/big"), want_sha);
        read_time = clock::now() - t0;
        t0 = clock::now();
        auto m = store_->materialize("outputs/big");
        local_time = clock::now() - t0;
        ASSERT_TRUE(m) << m.error().message;
        EXPECT_EQ(fs::file_size(m->path), size);
    });
    auto ms = [](clock::duration d) {
        return std::chrono::duration_cast<std::chrono::milliseconds>(d).count();
    };
    std::printf(
        "[ measured ] %s, 24 MiB: put %lld ms, streamed read (with SHA-256) %lld ms, "
        "materialize %lld ms\n",
        store_->backend().data(), static_cast<long long>(ms(put_time)),
        static_cast<long long>(ms(read_time)), static_cast<long long>(ms(local_time)));
    if (grown) {
        std::printf("[ measured ] %s: peak RSS +%ld KiB to put, read and materialize 24 MiB\n",
                    store_->backend().data(), *grown);
        if (!under_tsan)
            EXPECT_LT(*grown, 12 * 1024) << "peak RSS grew by " << *grown << " KiB for 24 MiB";
    }
    if (postgres()) {
        // 1 MiB rows, the last one shorter.
        EXPECT_EQ(sql("SELECT count(*) || ' ' || max(octet_length(data)) || ' ' || "
                      "min(octet_length(data)) FROM blob_chunks WHERE key = 'outputs/big'"),
                  "25 1048576 100");
        EXPECT_EQ(sql("SELECT size || ' ' || chunk_size || ' ' || sha256 FROM blobs"),
                  std::to_string(size) + " 1048576 " + want_sha);
    }
}

// Threads putting (distinct keys and one shared key) while others read the shared key: every
// blob ends whole, and a reader only ever sees a whole version of the shared one.
TEST_P(BlobStore, ConcurrentPutsAndReads) {
    constexpr int threads = 6;
    constexpr int per_thread = 4;
    const std::uint64_t size = MiB + 4096;
    std::vector<std::string> srcs;
    std::vector<std::string> shas;
    for (int t = 0; t < threads; ++t) {
        srcs.push_back(local("src" + std::to_string(t), size, 100 + t));
        shas.push_back(sha_of(size, 100 + t));
    }
    ASSERT_TRUE(store_->put("shared", srcs[0], put_mode::copy));
    std::atomic<bool> stop = false;
    std::atomic<int> torn = 0, reads = 0;
    // Reads until the writers are done and it has read one whole version (under TSAN every read
    // during the writes may end `changed`: each takes longer than the next replacement).
    std::thread reader([&] {
        while (!stop || reads == 0) {
            try {
                const auto sha = blob_sha(*store_, "shared");
                if (std::find(shas.begin(), shas.end(), sha) == shas.end())
                    ++torn;
                ++reads;
            } catch (const segue::store::blob_failure& e) {
                if (e.error.code != blob_errc::changed)
                    ++torn;
            }
        }
    });
    std::vector<std::thread> writers;
    std::atomic<int> failures = 0;
    for (int t = 0; t < threads; ++t)
        writers.emplace_back([&, t] {
            for (int i = 0; i < per_thread; ++i) {
                const std::string key = "t" + std::to_string(t) + "/k" + std::to_string(i);
                if (!store_->put(key, srcs[t], put_mode::copy) ||
                    !store_->put("shared", srcs[t], put_mode::copy))
                    ++failures;
            }
        });
    for (auto& w : writers)
        w.join();
    stop = true;
    reader.join();
    EXPECT_EQ(failures, 0);
    EXPECT_EQ(torn, 0);
    EXPECT_GT(reads, 0);
    for (int t = 0; t < threads; ++t)
        for (int i = 0; i < per_thread; ++i)
            EXPECT_EQ(blob_sha(*store_, "t" + std::to_string(t) + "/k" + std::to_string(i)),
                      shas[t]);
    const auto last = blob_sha(*store_, "shared");
    EXPECT_NE(std::find(shas.begin(), shas.end(), last), shas.end());
    if (postgres())  // the shared key's chunks are one version's, no leftovers
        EXPECT_EQ(sql("SELECT count(*) FROM blob_chunks WHERE key = 'shared'"), "2");
}

INSTANTIATE_TEST_SUITE_P(Backends, BlobStore,
                         ::testing::Values(blob_backend::directory, blob_backend::postgres),
                         [](const auto& info) {
                             return info.param == blob_backend::postgres ? "postgres" : "directory";
                         });

// A PostgreSQL blob store's options: on `url`, its scratch space in `dir`.
segue::store::blob_options pg_blobs(const segue::test::temp_dir& dir, const std::string& url) {
    segue::store::blob_options o;
    o.backend = blob_backend::postgres;
    o.dir = dir.path();
    o.pg_url = url;
    return o;
}

// PostgreSQL materializes into a local cache (the directory backend hands out its own files).
TEST(BlobStorePostgres, CachedCopiesInUseStayUnusedOnesAreSwept) {
    segue::test::temp_dir dir;
    segue::test::pg_schema schema;
    auto o = pg_blobs(dir, schema.url());
    o.cache_ttl = std::chrono::seconds(0);  // every get sweeps; everything unused is stale
    auto s = segue::store::open_blob_store(o);
    make_file(dir.file("a"), 1000, 5);
    make_file(dir.file("b"), 1000, 6);
    ASSERT_TRUE(s->put("a", dir.file("a"), put_mode::copy));
    ASSERT_TRUE(s->put("b", dir.file("b"), put_mode::copy));
    std::string a_path;
    {
        auto a = s->materialize("a").value();
        a_path = a.path;
        EXPECT_EQ(a_path, dir.file("cache/" + sha_of(1000, 5)));
        auto b = s->materialize("b").value();  // sweeps: `a` is held
        EXPECT_TRUE(fs::exists(a_path));
    }
    auto b = s->materialize("b").value();  // sweeps again: `a` is no longer held
    EXPECT_FALSE(fs::exists(a_path));
    EXPECT_TRUE(fs::exists(b.path));
    EXPECT_EQ(file_text(b.path), bytes(6, 0, 1000));
}

// A restarted server leaves every pooled connection dead (here the store's sessions are
// terminated, which is the same for the client and much quicker). Each operation's first try
// after that succeeds: the dead connection is dropped, with the idle ones (they died with the
// server), and the operation runs again on a new one.
TEST(BlobStorePostgres, OperationsSucceedAfterTheServerClosedThePooledConnections) {
    segue::test::temp_dir dir;
    segue::test::pg_schema schema;
    // The store's sessions, and only those, by application_name.
    const std::string app = "blobs_" + schema.name();
    const auto sessions = [&] {
        return std::stoi(segue::test::pg_exec(
            schema.url(),
            "SELECT count(*) FROM pg_stat_activity WHERE application_name = '" + app + "'"));
    };
    const auto terminate_sessions = [&] {
        segue::test::pg_exec(schema.url(),
                             "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity "
                             "WHERE application_name = '" +
                                 app + "'");
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (sessions() > 0 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        ASSERT_EQ(sessions(), 0);
    };
    auto o = pg_blobs(dir, schema.url() + "&application_name=" + app);
    o.chunk_size = 1000;
    auto s = segue::store::open_blob_store(o);
    make_file(dir.file("a"), 2500, 1);
    ASSERT_TRUE(s->put("a", dir.file("a"), put_mode::copy));

    // Several pooled connections (concurrent reads open them), all of which will die.
    {
        std::atomic<bool> stop{false};
        std::vector<std::thread> readers;
        for (int t = 0; t < 4; ++t)
            readers.emplace_back([&] {
                while (!stop)
                    EXPECT_EQ(blob_sha(*s, "a"), sha_of(2500, 1));
            });
        const auto deadline = std::chrono::steady_clock::now() + std::chrono::seconds(10);
        while (sessions() < 3 && std::chrono::steady_clock::now() < deadline)
            std::this_thread::sleep_for(std::chrono::milliseconds(5));
        stop = true;
        for (auto& r : readers)
            r.join();
    }
    ASSERT_GE(sessions(), 2);

    make_file(dir.file("b"), 3500, 2);
    terminate_sessions();
    auto put = s->put("b", dir.file("b"), put_mode::copy);
    ASSERT_TRUE(put) << put.error().message;
    EXPECT_EQ(*put, 3500u);

    terminate_sessions();
    auto opened = s->open("b");
    ASSERT_TRUE(opened) << opened.error().message;
    EXPECT_EQ(read_rest(**opened, 4096), bytes(2, 0, 3500));

    // A reader opened before the server went: its next chunk comes from a new connection.
    auto reader = s->open("a").value();
    terminate_sessions();
    EXPECT_EQ(read_rest(*reader, 4096), bytes(1, 0, 2500));

    terminate_sessions();
    auto copy = s->materialize("b");
    ASSERT_TRUE(copy) << copy.error().message;
    EXPECT_EQ(file_text(copy->path), bytes(2, 0, 3500));

    terminate_sessions();
    auto removed = s->remove("b");
    ASSERT_TRUE(removed) << removed.error().message;
    EXPECT_TRUE(*removed);
    EXPECT_EQ(s->open("b").error().code, blob_errc::not_found);
}

TEST(BlobStoreOpen, PostgresNeedsAReachableUrl) {
    segue::test::temp_dir dir;
    segue::store::blob_options o;
    o.backend = blob_backend::postgres;
    o.dir = dir.path();
    EXPECT_THROW(segue::store::open_blob_store(o), std::runtime_error);
    o.pg_url = "postgresql:///nope?host=" + dir.path() + "&connect_timeout=2";
    try {
        segue::store::open_blob_store(o);
        ADD_FAILURE() << "opened a store on a server that does not exist";
    } catch (const std::runtime_error& e) {
        EXPECT_NE(std::string(e.what()).find("cannot connect to PostgreSQL"), std::string::npos)
            << e.what();
    }
}

TEST(BlobStoreKeys, RelativePathsOfPlainSegments) {
    using segue::store::check_blob_key;
    for (auto ok : {"uploads/file_01", "outputs/ext_1/file_2-output-1.wav", "a", "a.b/c-d_e"})
        EXPECT_EQ(check_blob_key(ok), "") << ok;
    for (auto bad : {"", "/a", "a/", "a//b", ".", "..", "a/./b", "a/../b", "a\tb"})
        EXPECT_NE(check_blob_key(bad), "") << bad;
}

}  // namespace

// The server stops answering without closing anything (every PostgreSQL process SIGSTOPped): a
// put and a read give up after statement_timeout + 10 s without an answer, with the store's
// backend error, instead of holding their (blocking pool) thread and their client for the
// freeze. After the thaw both work again on new connections.
TEST(BlobStorePostgres, AServerThatStopsAnsweringFailsOperationsInBoundedTime) {
    segue::test::temp_dir dir;
    segue::test::pg_private_server pg;
    auto o = pg_blobs(dir, pg.url());
    // Chunks of 1 MiB (the default): more than a stopped server's socket takes, so the send
    // itself must not wait for ever either.
    o.pg_statement_timeout_ms = 500;  // answers given up after 10.5 s
    auto s = segue::store::open_blob_store(o);
    make_file(dir.file("a"), 2500, 1);
    ASSERT_TRUE(s->put("a", dir.file("a"), put_mode::copy));

    pg.freeze();
    const auto start = std::chrono::steady_clock::now();
    make_file(dir.file("b"), 5 << 20, 2);
    auto frozen = std::async(std::launch::async, [&] {
        auto put = s->put("b", dir.file("b"), put_mode::copy);
        auto opened = s->open("a");
        return std::make_pair(std::move(put), opened.has_value());
    });
    // The put gives up on its connection after 10.5 s, and its second try cannot connect
    // (connect_timeout 5 s); the read cannot connect: bounded by the timeouts, not the freeze.
    if (frozen.wait_for(std::chrono::seconds(50)) != std::future_status::ready) {
        pg.thaw();
        FAIL() << "held for the freeze (50 s)";
    }
    auto [put, opened] = frozen.get();
    ASSERT_FALSE(put);
    EXPECT_EQ(put.error().code, segue::store::blob_errc::backend) << put.error().message;
    EXPECT_FALSE(opened);
    EXPECT_LT(std::chrono::steady_clock::now() - start, std::chrono::seconds(50));

    pg.thaw();
    // A connect failed in the last 2 s is not tried again at once: the first puts after the
    // thaw may still be refused for that moment.
    auto again = s->put("b", dir.file("b"), put_mode::copy);
    for (int i = 0; i < 50 && !again; ++i) {
        std::this_thread::sleep_for(std::chrono::milliseconds(100));
        again = s->put("b", dir.file("b"), put_mode::copy);
    }
    ASSERT_TRUE(again) << again.error().message;
    EXPECT_EQ(blob_sha(*s, "b"), sha_of(5 << 20, 2));
}

// The client commands (`segue extend|watch|tasks|cancel|deliveries|credits`) run as child
// processes against the real server and the sandbox provider: the upload, the live watch, the
// outputs downloaded and decoded, --json, the exit codes, Ctrl-C, and a run under a
// pseudo-terminal (script(1)) whose screen shows the progress bar and the status line.

#include <arpa/inet.h>
#include <fcntl.h>
#include <gtest/gtest.h>
#include <netinet/in.h>
#include <signal.h>
#include <sndfile.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <boost/json.hpp>

#include <chrono>
#include <filesystem>
#include <map>
#include <memory>
#include <set>
#include <thread>

#include "gateway/audio/audio.hpp"
#include "tests/support/pg.hpp"
#include "tests/support/process.hpp"

using namespace std::chrono_literals;
namespace json = boost::json;
namespace fs = std::filesystem;
using segue::test::http_request;
using segue::test::segue_process;

extern char** environ;

namespace {

const std::string key = "sk-cli-a";

std::string config_for(const std::string& dir, const std::string& sandbox_delay = "100ms",
                       const std::string& webhook_retry = "100ms") {
    return "server:\n  listen: 127.0.0.1:0\n  io_threads: 2\n  drain_timeout: 5s\n"
           "log:\n  level: warn\n"
           "tenants:\n  - name: a\n    api_keys: [" +
           key + "]\n    webhook_secrets: [\"whsec_c2VndWUtY2xpLXRlc3Qtd2ViaG9vay1zZWNyZXQ=\"]\n" +
           segue::test::storage_yaml(dir) +
           "engine:\n  poll_interval: 100ms\n  lease: 2s\n"
           "providers:\n  sandbox:\n    delay: " +
           sandbox_delay +
           "\n"
           // The failing task's audio_url is the gateway's own 404, on loopback.
           "fetch:\n  allow_cidrs: [127.0.0.1/32]\n  allowed_ports: []\n"
           // Webhooks to a closed port are dead letters within a second (by default).
           "webhooks:\n  retry_schedule: [" +
           webhook_retry + "]\n  jitter: 0\n  timeout: 1s\n";
}

struct cli_result {
    int code = -1;
    std::string out;  // stdout
    std::string err;  // stderr
};

// `segue <args>` as a child process with stdout and stderr in files, stdin on /dev/null, and an
// environment without the caller's SEGUE_* variables (plus `env`).
class cli_child {
  public:
    cli_child(const segue::test::temp_dir& dir, const std::vector<std::string>& args,
              const std::map<std::string, std::string>& env = {}, const std::string& program = "")
        : out_(dir.file("cli-" + std::to_string(++count_) + ".out")),
          err_(out_.substr(0, out_.size() - 4) + ".err") {
        std::vector<std::string> argv;
        if (program.empty())
            argv.push_back(segue::test::segue_binary());
        else
            argv.push_back(program);
        argv.insert(argv.end(), args.begin(), args.end());
        std::vector<std::string> envs;
        for (char** e = environ; *e; ++e)
            if (std::string_view(*e).substr(0, 6) != "SEGUE_")
                envs.emplace_back(*e);
        for (const auto& [k, v] : env)
            envs.push_back(k + "=" + v);
        std::vector<char*> av, ev;
        for (auto& a : argv)
            av.push_back(a.data());
        av.push_back(nullptr);
        for (auto& e : envs)
            ev.push_back(e.data());
        ev.push_back(nullptr);
        pid_ = ::fork();
        if (pid_ == 0) {
            const int in = ::open("/dev/null", O_RDONLY);
            const int o = ::open(out_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            const int e = ::open(err_.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
            ::dup2(in, 0);
            ::dup2(o, 1);
            ::dup2(e, 2);
            ::execve(av[0], av.data(), ev.data());
            ::_exit(127);
        }
    }
    ~cli_child() {
        if (pid_ > 0 && !reaped_) {
            ::kill(pid_, SIGKILL);
            ::waitpid(pid_, nullptr, 0);
        }
    }
    void signal(int sig) { ::kill(pid_, sig); }
    // The exit code (128+signal if killed); -1 if still running after `limit`.
    cli_result wait(std::chrono::milliseconds limit = 90s) {
        cli_result r;
        const auto until = std::chrono::steady_clock::now() + limit;
        int status = 0;
        while (std::chrono::steady_clock::now() < until) {
            if (::waitpid(pid_, &status, WNOHANG) == pid_) {
                reaped_ = true;
                r.code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
                break;
            }
            std::this_thread::sleep_for(20ms);
        }
        r.out = segue::test::read_file(out_);
        r.err = segue::test::read_file(err_);
        return r;
    }

  private:
    static inline int count_ = 0;
    std::string out_, err_;
    pid_t pid_ = -1;
    bool reaped_ = false;
};

cli_result run_cli(const segue::test::temp_dir& dir, const std::vector<std::string>& args,
                   const std::map<std::string, std::string>& env = {}) {
    cli_child c(dir, args, env);
    return c.wait();
}

std::string dump(const cli_result& r) {
    return "exit " + std::to_string(r.code) + "\n--- stdout\n" + r.out + "--- stderr\n" + r.err;
}

struct fixture {
    segue::test::temp_dir dir;
    segue_process server;
    std::map<std::string, std::string> env;
    std::string song;

    explicit fixture(const std::string& sandbox_delay = "100ms",
                     const std::string& webhook_retry = "100ms")
        : server(config_for(dir.path(), sandbox_delay, webhook_retry)) {
        env = {{"SEGUE_URL", "http://127.0.0.1:" + std::to_string(server.port())},
               {"SEGUE_API_KEY", key}};
        song = dir.file("song.wav");
        EXPECT_TRUE(segue::audio::write_test_song(song, 20, 44100, 2, 120, "wav"));
    }
};

struct decoded {
    int rate = 0, channels = 0;
    double seconds = 0;
};

decoded decode(const std::string& path) {
    decoded d;
    SF_INFO info{};
    SNDFILE* f = sf_open(path.c_str(), SFM_READ, &info);
    if (!f)
        return d;
    // Read it all: a truncated file fails here, not only in its header.
    std::vector<short> samples(static_cast<std::size_t>(info.frames * info.channels));
    const auto got = sf_readf_short(f, samples.data(), info.frames);
    sf_close(f);
    d.rate = info.samplerate;
    d.channels = info.channels;
    d.seconds = info.samplerate ? double(got) / info.samplerate : 0;
    return d;
}

json::object parse_object(const std::string& s) {
    return json::parse(s).as_object();
}

std::string task_status(std::uint16_t port, const std::string& id) {
    auto r =
        http_request(port, "GET", "/v1/extensions/" + id, "", {"Authorization: Bearer " + key});
    if (!r || r->status != 200)
        return "";
    return std::string(parse_object(r->body)["status"].as_string());
}

// A task run to its end by `segue extend --wait` whose webhook URL is a closed port: its id and
// that URL ("" if the CLI failed).
std::pair<std::string, std::string> extend_with_hook_down(fixture& f) {
    const std::string hook =
        "http://127.0.0.1:" + std::to_string(segue::test::free_port()) + "/hooks";
    auto r = run_cli(f.dir,
                     {"extend", f.song, "--after", "5", "--length", "2", "--num-outputs", "1",
                      "--webhook-url", hook, "--wait", "--json"},
                     f.env);
    EXPECT_EQ(r.code, 0) << dump(r);
    if (r.code != 0)
        return {"", hook};
    return {std::string(parse_object(r.out)["task"].as_object()["id"].as_string()), hook};
}

}  // namespace

// The journey a person types: upload, follow to success, outputs in -o, decodable. stdout is a
// file here, so the quiet mode: no progress bar, no status line, no escape sequences.
TEST(CliClient, ExtendWaitDownloadsDecodableOutputs) {
    fixture f;
    const auto out_dir = f.dir.file("out");
    auto r = run_cli(f.dir,
                     {"extend", f.song, "--after", "8", "--length", "6", "--num-outputs", "2",
                      "--prompt", "warm strings", "--wait", "-o", out_dir},
                     f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_EQ(r.out.find('\033'), std::string::npos) << dump(r);
    EXPECT_EQ(r.err.find('\033'), std::string::npos) << dump(r);
    EXPECT_EQ(r.out.find('\r'), std::string::npos) << dump(r);
    EXPECT_EQ(r.err, "") << dump(r);
    EXPECT_NE(r.out.find(" succeeded (sandbox) after "), std::string::npos) << dump(r);

    std::vector<fs::path> files;
    for (const auto& e : fs::directory_iterator(out_dir))
        files.push_back(e.path());
    ASSERT_EQ(files.size(), 2u) << dump(r);
    for (const auto& p : files) {
        EXPECT_EQ(p.extension(), ".mp3");
        EXPECT_NE(r.out.find(p.string()), std::string::npos) << "listed: " << p << dump(r);
        const auto a = decode(p.string());
        EXPECT_EQ(a.rate, 44100) << p;
        EXPECT_EQ(a.channels, 2) << p;
        EXPECT_NEAR(a.seconds, 14.0, 0.2) << "extend_after 8 + length 6: " << p;
    }
}

// --json: one document on stdout that a script can parse, for every command.
TEST(CliClient, JsonOutputForScripts) {
    fixture f;
    const auto out_dir = f.dir.file("out");
    auto r = run_cli(f.dir,
                     {"extend", f.song, "--after", "5", "--length", "3", "--json", "--wait", "-o",
                      out_dir, "--format", "both", "--metadata", R"({"order":"7"})"},
                     f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    auto doc = parse_object(r.out);
    auto& task = doc["task"].as_object();
    const std::string id(task["id"].as_string());
    EXPECT_EQ(task["status"], "succeeded");
    EXPECT_EQ(task["metadata"].as_object()["order"], "7");
    auto& downloads = doc["downloads"].as_array();
    ASSERT_EQ(downloads.size(), 4u) << r.out;  // 2 outputs x (mp3, wav)
    std::set<std::string> formats;
    for (auto& dv : downloads) {
        auto& d = dv.as_object();
        const std::string path(d["path"].as_string());
        formats.insert(std::string(d["format"].as_string()));
        ASSERT_TRUE(fs::exists(path)) << path;
        EXPECT_EQ(fs::file_size(path), d["bytes"].to_number<std::uint64_t>());
        EXPECT_NEAR(decode(path).seconds, 8.0, 0.2) << path;
        EXPECT_FALSE(fs::exists(path + ".part"));
    }
    EXPECT_EQ(formats, (std::set<std::string>{"mp3", "wav"}));

    // Without --wait: the 202's task, at once.
    r = run_cli(f.dir, {"extend", f.song, "--after", "5", "--json"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    const std::string second(parse_object(r.out)["task"].as_object()["id"].as_string());
    EXPECT_NE(second, id);

    r = run_cli(f.dir, {"tasks", "--json"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    std::set<std::string> listed;
    auto list = parse_object(r.out);  // range-for would not extend a temporary's life
    for (auto& t : list["data"].as_array())
        listed.insert(std::string(t.as_object().at("id").as_string()));
    EXPECT_TRUE(listed.contains(id) && listed.contains(second)) << r.out;

    // watch: the second task to its end; a finished task answers at once.
    r = run_cli(f.dir, {"watch", second, "--json"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_EQ(parse_object(r.out)["task"].as_object()["status"], "succeeded");
    r = run_cli(f.dir, {"watch", id, "--json"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_EQ(parse_object(r.out)["task"].as_object()["id"].as_string(), id);

    r = run_cli(f.dir, {"credits", "--json"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    auto credits = parse_object(r.out);
    EXPECT_EQ(credits["tenant"], "a");
    EXPECT_TRUE(credits["available"].is_number()) << r.out;

    r = run_cli(f.dir, {"deliveries", "--dead", "--json"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_TRUE(parse_object(r.out)["data"].as_array().empty()) << r.out;
    r = run_cli(f.dir, {"deliveries", "redeliver", "del_nope", "--json"}, f.env);
    EXPECT_EQ(r.code, 5) << dump(r);
    EXPECT_NE(r.err.find("no such delivery"), std::string::npos) << dump(r);
    // A failure is a document on stdout too: the exit code, the message, the server's answer.
    {
        auto doc = parse_object(r.out);
        auto& err = doc["error"].as_object();
        EXPECT_EQ(err["exit_code"], 5) << r.out;
        EXPECT_EQ(err["status"], 404) << r.out;
        EXPECT_NE(std::string(err["message"].as_string()).find("no such delivery"),
                  std::string::npos)
            << r.out;
        EXPECT_EQ(err["problem"].as_object()["status"], 404) << r.out;
        EXPECT_FALSE(err.contains("task_id")) << r.out;
    }
    // A refused create (422), a usage error and an unreachable server, each in the same shape.
    r = run_cli(f.dir, {"extend", f.song, "--after", "500", "--json"}, f.env);
    EXPECT_EQ(r.code, 5) << dump(r);
    {
        auto doc = parse_object(r.out);
        auto& err = doc["error"].as_object();
        EXPECT_EQ(err["status"], 422) << r.out;
        EXPECT_TRUE(err["problem"].as_object()["errors"].is_array()) << r.out;
    }
    r = run_cli(f.dir, {"tasks", "--bogus", "--json"}, f.env);
    EXPECT_EQ(r.code, 2) << dump(r);
    EXPECT_EQ(parse_object(r.out)["error"].as_object()["exit_code"], 2) << dump(r);
    auto gone_env = f.env;
    gone_env["SEGUE_URL"] = "http://127.0.0.1:1";
    r = run_cli(f.dir, {"credits", "--json"}, gone_env);
    EXPECT_EQ(r.code, 3) << dump(r);
    {
        auto doc = parse_object(r.out);
        auto& err = doc["error"].as_object();
        EXPECT_EQ(err["exit_code"], 3) << r.out;
        EXPECT_FALSE(err.contains("status")) << r.out;
    }

    // The human forms of the listings.
    r = run_cli(f.dir, {"tasks"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    const auto row = r.out.find(id);
    ASSERT_NE(row, std::string::npos) << dump(r);
    EXPECT_NE(r.out.substr(row, r.out.find('\n', row) - row).find(" succeeded "), std::string::npos)
        << dump(r);
    r = run_cli(f.dir, {"credits"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_NE(r.out.find("tenant a: "), std::string::npos) << dump(r);
}

// Exit codes a script can rely on (README "CLI").
// An output retention deleted: `watch -o` says it is gone for good (not "download again"), and
// --json carries the server's 410 problem like any other refusal.
TEST(CliClient, AnExpiredOutputIsSaidToBeGoneForGood) {
    segue::test::temp_dir dir;
    segue_process server(config_for(dir.path()) + "retention:\n  outputs: 1s\n  interval: 200ms\n");
    const std::map<std::string, std::string> env = {
        {"SEGUE_URL", "http://127.0.0.1:" + std::to_string(server.port())}, {"SEGUE_API_KEY", key}};
    const auto song = dir.file("song.wav");
    ASSERT_TRUE(segue::audio::write_test_song(song, 8, 22050, 1, 120, "wav"));
    auto r = run_cli(
        dir,
        {"extend", song, "--after", "3", "--length", "2", "--num-outputs", "1", "--wait", "--json"},
        env);
    ASSERT_EQ(r.code, 0) << dump(r);
    const std::string id(parse_object(r.out)["task"].as_object()["id"].as_string());
    // Until retention has deleted the output's files.
    auto expired = [&] {
        auto t = http_request(server.port(), "GET", "/v1/extensions/" + id, "",
                              {"Authorization: Bearer " + key});
        return t && t->body.find("\"mp3_expired_at\"") != std::string::npos;
    };
    const auto until = std::chrono::steady_clock::now() + 20s;
    while (!expired() && std::chrono::steady_clock::now() < until)
        std::this_thread::sleep_for(100ms);
    ASSERT_TRUE(expired());
    r = run_cli(dir, {"watch", id, "-o", dir.file("out"), "--json"}, env);
    EXPECT_EQ(r.code, 5) << dump(r);
    EXPECT_NE(r.err.find("cannot be downloaded again"), std::string::npos) << dump(r);
    EXPECT_EQ(r.err.find("download its outputs again"), std::string::npos) << dump(r);
    auto doc = parse_object(r.out);
    auto& err = doc["error"].as_object();
    EXPECT_EQ(err["status"], 410) << r.out;
    EXPECT_EQ(err["problem"].as_object()["code"], "file_expired") << r.out;
    EXPECT_EQ(err["task_id"].as_string(), id) << r.out;
}

TEST(CliClient, ExitCodes) {
    fixture f;
    const std::string url = f.env["SEGUE_URL"];

    // 1: the task failed (the sandbox cannot fetch its audio_url: the gateway's own 404).
    auto r = run_cli(f.dir, {"extend", url + "/no/such/song.mp3", "--after", "5", "--wait"}, f.env);
    EXPECT_EQ(r.code, 1) << dump(r);
    EXPECT_NE(r.out.find(" failed (sandbox)"), std::string::npos) << dump(r);
    EXPECT_NE(r.out.find("audio_url_unavailable"), std::string::npos) << dump(r);
    const std::string failed_id = r.out.substr(0, r.out.find(' '));

    // 5: the server refused (a finished task cannot be canceled; an unknown id; bad input).
    r = run_cli(f.dir, {"cancel", failed_id}, f.env);
    EXPECT_EQ(r.code, 5) << dump(r);
    EXPECT_NE(r.err.find("409"), std::string::npos) << dump(r);
    r = run_cli(f.dir, {"watch", "ext_nope"}, f.env);
    EXPECT_EQ(r.code, 5) << dump(r);
    r = run_cli(f.dir, {"extend", f.song, "--after", "300"}, f.env);
    EXPECT_EQ(r.code, 5) << dump(r);
    EXPECT_NE(r.err.find("extend_after"), std::string::npos) << dump(r);

    // 4: a wrong key, or none.
    auto bad = f.env;
    bad["SEGUE_API_KEY"] = "sk-wrong";
    r = run_cli(f.dir, {"tasks"}, bad);
    EXPECT_EQ(r.code, 4) << dump(r);
    EXPECT_NE(r.err.find("401"), std::string::npos) << dump(r);
    r = run_cli(f.dir, {"credits", "--key", "sk-wrong-too"}, f.env);
    EXPECT_EQ(r.code, 4) << dump(r);
    r = run_cli(f.dir, {"tasks"}, {{"SEGUE_URL", url}});
    EXPECT_EQ(r.code, 4) << dump(r);

    // 2: usage, decided before any request (no task is created).
    r = run_cli(f.dir, {"extend", f.song}, f.env);
    EXPECT_EQ(r.code, 2) << dump(r);
    EXPECT_NE(r.err.find("--after"), std::string::npos) << dump(r);
    r = run_cli(f.dir, {"extend", f.dir.file("missing.mp3"), "--after", "1"}, f.env);
    EXPECT_EQ(r.code, 2) << dump(r);
    EXPECT_NE(r.err.find("cannot read"), std::string::npos) << dump(r);
    r = run_cli(f.dir, {"tasks", "--bogus"}, f.env);
    EXPECT_EQ(r.code, 2) << dump(r);
    // An output directory that cannot be one, and metadata that is not an object: refused
    // before the upload (the task count below stays 1).
    r = run_cli(f.dir, {"extend", f.song, "--after", "1", "-o", f.song}, f.env);
    EXPECT_EQ(r.code, 2) << dump(r);
    EXPECT_NE(r.err.find(f.song), std::string::npos) << dump(r);
    r = run_cli(f.dir, {"extend", f.song, "--after", "1", "--metadata", "{bad"}, f.env);
    EXPECT_EQ(r.code, 2) << dump(r);
    EXPECT_NE(r.err.find("--metadata must be a JSON object"), std::string::npos) << dump(r);
    // A result that cannot be written to stdout is a failure, not a silent success.
    {
        cli_child c(f.dir, {"-c", "exec \"$0\" credits > /dev/full", segue::test::segue_binary()},
                    f.env, "/bin/sh");
        r = c.wait();
        EXPECT_EQ(r.code, 2) << dump(r);
        EXPECT_NE(r.err.find("cannot write the result to stdout"), std::string::npos) << dump(r);
    }

    // 3: nobody listening.
    r = run_cli(f.dir,
                {"tasks", "--url", "http://127.0.0.1:" + std::to_string(segue::test::free_port())},
                f.env);
    EXPECT_EQ(r.code, 3) << dump(r);
    EXPECT_NE(r.err.find("cannot reach"), std::string::npos) << dump(r);

    // 0: the one task that failed is the only one, and help is not an error.
    r = run_cli(f.dir, {"tasks", "--json"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_EQ(parse_object(r.out)["data"].as_array().size(), 1u) << r.out;
    r = run_cli(f.dir, {"extend", "--help"}, {});
    EXPECT_EQ(r.code, 0) << dump(r);
    EXPECT_NE(r.out.find("exit codes"), std::string::npos);
    // A task created whose result cannot be printed: the message names it, so it is not lost.
    {
        cli_child c(f.dir,
                    {"-c", "exec \"$0\" extend \"$1\" --after 1 --json > /dev/full",
                     segue::test::segue_binary(), f.song},
                    f.env, "/bin/sh");
        r = c.wait();
        EXPECT_EQ(r.code, 2) << dump(r);
        const auto at = r.err.find(
            "cannot write the result to stdout: No space left on device; "
            "task ext_");
        ASSERT_NE(at, std::string::npos) << dump(r);
        EXPECT_NE(r.err.find("(see it again: segue watch ext_"), std::string::npos) << dump(r);
        auto id = r.err.substr(r.err.find("task ext_", at) + 5);
        id = id.substr(0, id.find(' '));
        EXPECT_FALSE(task_status(f.server.port(), id).empty()) << dump(r);
    }
}

// Ctrl-C while following a task: the CLI stops (130) and says how to watch again (with --json,
// on stdout too); the task is not canceled and finishes on the server; `segue watch` picks it up.
TEST(CliClient, CtrlCLeavesTheTaskRunning) {
    fixture f("1500ms");
    // The hint repeats where and how the outputs were to be saved, quoted for the shell.
    const std::string out = f.dir.file("my songs");
    cli_child c(
        f.dir,
        {"extend", f.song, "--after", "8", "--length", "4", "-o", out, "--format", "wav", "--json"},
        f.env);
    // Interrupt once the CLI follows the task live: its SSE stream is open on the server.
    const auto until = std::chrono::steady_clock::now() + 30s;
    bool following = false;
    while (!following && std::chrono::steady_clock::now() < until) {
        auto m = http_request(f.server.port(), "GET", "/metrics");
        following = m && m->body.find("\nsegue_sse_clients 1\n") != std::string::npos;
        if (!following)
            std::this_thread::sleep_for(20ms);
    }
    ASSERT_TRUE(following) << "the CLI never opened its event stream";
    c.signal(SIGINT);
    auto r = c.wait(10s);
    ASSERT_EQ(r.code, 130) << dump(r);
    const auto at = r.err.find("segue watch ext_");
    ASSERT_NE(at, std::string::npos) << dump(r);
    EXPECT_NE(r.err.find("keeps running"), std::string::npos) << dump(r);
    EXPECT_NE(r.err.find(" -o '" + out + "' --format wav\n"), std::string::npos) << dump(r);
    auto id = r.err.substr(at + 12);
    id = id.substr(0, id.find_first_of(" \n"));
    // With --json, a script reading stdout learns the task too.
    {
        auto doc = parse_object(r.out);
        auto& err = doc["error"].as_object();
        EXPECT_EQ(err["exit_code"], 130) << r.out;
        EXPECT_EQ(err["task_id"].as_string(), id) << r.out;
    }
    const auto st = task_status(f.server.port(), id);
    EXPECT_TRUE(st == "queued" || st == "submitted" || st == "running") << st;

    r = run_cli(f.dir, {"watch", id}, f.env);
    EXPECT_EQ(r.code, 0) << dump(r);
    EXPECT_NE(r.out.find(id + " succeeded"), std::string::npos) << dump(r);
    EXPECT_EQ(task_status(f.server.port(), id), "succeeded");
}

// Ctrl-C in the middle of an upload: nothing was created, and the CLI says so. The "server" is
// a socket nobody reads, so the upload stalls once the kernel's buffers are full.
TEST(CliClient, CtrlCDuringTheUploadSaysNoTaskWasCreated) {
    segue::test::temp_dir dir;
    const auto held = segue::test::hold_loopback_port();
    ASSERT_GE(held.fd, 0);
    const int listener = held.fd;
    const std::string url = "http://127.0.0.1:" + std::to_string(held.port);
    const std::string big = dir.write("big.wav", std::string(64 << 20, '\0'));

    cli_child c(dir, {"extend", big, "--after", "1"}, {{"SEGUE_URL", url}, {"SEGUE_API_KEY", key}});
    std::this_thread::sleep_for(1s);
    c.signal(SIGINT);
    auto r = c.wait(10s);
    ::close(listener);
    EXPECT_EQ(r.code, 130) << dump(r);
    EXPECT_NE(r.err.find("interrupted during the upload: no task was created"), std::string::npos)
        << dump(r);
}

// On a terminal (script(1) gives the CLI a pseudo-terminal): the upload's progress bar, the
// live status line with the outputs and the elapsed time, the events, and the final status.
TEST(CliClient, PseudoTerminalShowsProgressAndStatus) {
    fixture f("300ms");
    const auto out_dir = f.dir.file("out");
    const std::string command = segue::test::segue_binary() + " extend " + f.song +
                                " --after 8 --length 4 --num-outputs 2 --wait -o " + out_dir;
    cli_child c(f.dir, {"-q", "-e", "-c", command, "/dev/null"}, f.env, "/usr/bin/script");
    auto r = c.wait();
    ASSERT_EQ(r.code, 0) << dump(r);
    const auto& screen = r.out;  // everything the CLI drew, escape sequences included
    EXPECT_NE(screen.find("uploading song.wav ["), std::string::npos) << screen;
    EXPECT_NE(screen.find("] 100%"), std::string::npos) << screen;
    EXPECT_NE(screen.find("\r\033[K"), std::string::npos) << "redrawn in place: " << screen;
    EXPECT_NE(screen.find("outputs 0/2"), std::string::npos) << screen;
    EXPECT_NE(screen.find("outputs 2/2"), std::string::npos) << screen;
    EXPECT_NE(screen.find("] output 1 ready"), std::string::npos) << screen;
    EXPECT_NE(screen.find("  0:0"), std::string::npos) << "elapsed time: " << screen;
    EXPECT_NE(screen.find("saved " + out_dir), std::string::npos) << screen;
    // The final status is the last thing on the screen, on lines of its own.
    const auto last = screen.rfind(" succeeded (sandbox) after ");
    ASSERT_NE(last, std::string::npos) << screen;
    EXPECT_EQ(screen.find('\033', last), std::string::npos) << screen;
    EXPECT_EQ(std::distance(fs::directory_iterator(out_dir), fs::directory_iterator()), 2);
}

// A webhook endpoint that is down: the task's deliveries become dead letters, which
// `segue deliveries --dead` lists and `segue deliveries redeliver` sends again.
TEST(CliClient, DeadDeliveriesListedAndRedelivered) {
    fixture f;
    const auto [id, hook] = extend_with_hook_down(f);
    ASSERT_FALSE(id.empty());
    cli_result r;

    json::array dead;
    for (int i = 0; i < 100; ++i) {
        r = run_cli(f.dir, {"deliveries", "--dead", "--task", id, "--json"}, f.env);
        ASSERT_EQ(r.code, 0) << dump(r);
        auto list = parse_object(r.out);
        dead = list["data"].as_array();
        if (dead.size() >= 3)  // queued, submitted, ..., succeeded: at least three events
            break;
        std::this_thread::sleep_for(100ms);
    }
    ASSERT_GE(dead.size(), 3u) << r.out;
    for (auto& d : dead) {
        EXPECT_EQ(d.as_object()["status"], "dead");
        EXPECT_EQ(d.as_object()["url"].as_string(), hook);
    }
    // A delivery that ends dead is logged at warn (this gateway logs nothing below it).
    const auto log = f.server.log_with(R"("msg":"webhook delivery failed")");
    const auto at = log.find(R"("msg":"webhook delivery failed")");
    ASSERT_NE(at, std::string::npos) << log;
    EXPECT_NE(log.find(R"("status":"dead")", at), std::string::npos) << log;

    r = run_cli(f.dir, {"deliveries", "--dead"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    const std::string first(dead[0].as_object()["id"].as_string());
    const auto row = r.out.find(first);
    ASSERT_NE(row, std::string::npos) << dump(r);
    const auto line = r.out.substr(row, r.out.find('\n', row) - row);
    EXPECT_NE(line.find(" dead "), std::string::npos) << line;
    EXPECT_NE(line.find(id), std::string::npos) << line;

    // A page of them: the next page's hint keeps the filters and the page size.
    r = run_cli(f.dir, {"deliveries", "--dead", "--task", id, "--limit", "2"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_NE(r.err.find("more: segue deliveries --status dead --task " + id +
                         " --limit 2 --before dlv_"),
              std::string::npos)
        << dump(r);
    // Given by --url rather than $SEGUE_URL, the gateway is named in the hint too.
    const std::string url = f.env["SEGUE_URL"];
    r = run_cli(f.dir, {"deliveries", "--dead", "--task", id, "--limit", "2", "--url", url},
                {{"SEGUE_API_KEY", f.env["SEGUE_API_KEY"]}});
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_NE(r.err.find("more: segue deliveries --url " + url + " --status dead --task "),
              std::string::npos)
        << dump(r);

    r = run_cli(f.dir, {"deliveries", "redeliver", first, "--json"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    auto again = parse_object(r.out);
    EXPECT_EQ(again["id"].as_string(), first);
    EXPECT_EQ(again["status"], "pending");

    // All of the task's dead ones at once (the one above is pending already).
    r = run_cli(f.dir, {"deliveries", "redeliver", "--task", id}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_NE(r.out.find(" of " + id + " pending again"), std::string::npos) << dump(r);
    r = run_cli(f.dir, {"deliveries", "redeliver", first, "--task", id}, f.env);
    EXPECT_EQ(r.code, 2) << dump(r);
}

// `segue cancel ID` on a task still at the provider (the sandbox waits 3 s): exit 0, the
// task's id and status on stdout, and the task ends canceled on the server.
TEST(CliClient, CancelARunningTask) {
    fixture f("3s");
    auto r = run_cli(f.dir, {"extend", f.song, "--after", "5", "--length", "2", "--json"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    const std::string id(parse_object(r.out)["task"].as_object()["id"].as_string());
    const auto before = task_status(f.server.port(), id);
    ASSERT_TRUE(before == "queued" || before == "submitted" || before == "running") << before;

    r = run_cli(f.dir, {"cancel", id}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_EQ(r.out.rfind(id + " ", 0), 0u) << dump(r);
    EXPECT_EQ(r.err, "") << dump(r);

    std::string st;
    for (int i = 0; i < 100 && st != "canceled"; ++i) {
        st = task_status(f.server.port(), id);
        if (st != "canceled")
            std::this_thread::sleep_for(50ms);
    }
    EXPECT_EQ(st, "canceled");
    EXPECT_NE(r.out.find(" canceled"), std::string::npos) << dump(r);
    // Canceled is final: the sandbox's result (due 3 s after submission) does not revive it.
    std::this_thread::sleep_for(3500ms);
    EXPECT_EQ(task_status(f.server.port(), id), "canceled");
    r = run_cli(f.dir, {"cancel", id}, f.env);
    EXPECT_EQ(r.code, 5) << dump(r);
}

std::size_t count(const std::string& text, const std::string& what) {
    std::size_t n = 0;
    for (auto at = text.find(what); at != std::string::npos; at = text.find(what, at + 1))
        ++n;
    return n;
}

// Plain `segue deliveries` (no --dead) lists pending deliveries: the endpoint is down and the
// next retry is ten minutes away, so after its first failed attempt the task's first event
// stays pending with its error, and the later ones wait behind it (each task and URL is a queue
// in seq order), pending with no attempt yet.
TEST(CliClient, DeliveriesListsPendingOnes) {
    fixture f("100ms", "10m");
    const auto [id, hook] = extend_with_hook_down(f);
    ASSERT_FALSE(id.empty());
    cli_result r;

    json::array listed;
    json::object head;  // the delivery of seq 1, once tried
    for (int i = 0; i < 100 && head.empty(); ++i) {
        r = run_cli(f.dir, {"deliveries", "--task", id, "--json"}, f.env);
        ASSERT_EQ(r.code, 0) << dump(r);
        auto list = parse_object(r.out);
        listed = list["data"].as_array();
        for (auto& d : listed)
            if (d.as_object()["seq"] == 1 && d.as_object()["attempts"] == 1)
                head = d.as_object();
        if (head.empty())
            std::this_thread::sleep_for(100ms);
    }
    ASSERT_FALSE(head.empty()) << r.out;
    ASSERT_GE(listed.size(), 3u) << r.out;  // queued, submitted, ..., succeeded
    for (auto& d : listed) {
        auto& o = d.as_object();
        EXPECT_EQ(o["status"], "pending") << d;
        EXPECT_EQ(o["attempts"], o["seq"] == 1 ? 1 : 0) << d;
    }
    ASSERT_TRUE(head.contains("last_error")) << head;
    const std::string error(head["last_error"].as_string());
    EXPECT_FALSE(error.empty()) << head;
    EXPECT_TRUE(head.contains("next_attempt_at")) << head;

    r = run_cli(f.dir, {"deliveries"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_EQ(count(r.out, " pending "), listed.size()) << dump(r);
    const auto row = r.out.find(std::string(head["id"].as_string()));
    ASSERT_NE(row, std::string::npos) << dump(r);
    const auto line = r.out.substr(row, r.out.find('\n', row) - row);
    EXPECT_NE(line.find(" pending "), std::string::npos) << line;
    EXPECT_NE(line.find(id), std::string::npos) << line;
    EXPECT_NE(line.find(error), std::string::npos) << line;
    // --dead lists none of them.
    r = run_cli(f.dir, {"deliveries", "--dead", "--json"}, f.env);
    ASSERT_EQ(r.code, 0) << dump(r);
    EXPECT_TRUE(parse_object(r.out)["data"].as_array().empty()) << r.out;
}

// The gateway restarts while the CLI follows a task: the CLI reconnects to the new process,
// resumes the stream with Last-Event-ID (every event is shown once) and ends with the task.
TEST(CliClient, WatchSurvivesAGatewayRestart) {
    segue::test::temp_dir dir;
    const auto port = segue::test::free_port();
    std::string config = config_for(dir.path(), "1500ms");
    config.replace(config.find("127.0.0.1:0"), 11, "127.0.0.1:" + std::to_string(port));
    auto server = std::make_unique<segue_process>(config);
    const std::string song = dir.file("song.wav");
    ASSERT_TRUE(segue::audio::write_test_song(song, 20, 44100, 2, 120, "wav"));
    const std::string command = segue::test::segue_binary() + " extend " + song +
                                " --after 8 --length 4 --num-outputs 2 --wait";
    cli_child c(dir, {"-q", "-e", "-c", command, "/dev/null"},
                {{"SEGUE_URL", "http://127.0.0.1:" + std::to_string(port)}, {"SEGUE_API_KEY", key}},
                "/usr/bin/script");
    // Once the CLI has seen the task submitted (its stream is open), stop the gateway.
    const auto until = std::chrono::steady_clock::now() + 30s;
    std::string id;
    while (id.empty() && std::chrono::steady_clock::now() < until) {
        auto r = http_request(port, "GET", "/v1/extensions?limit=1", "",
                              {"Authorization: Bearer " + key});
        auto m = http_request(port, "GET", "/metrics");
        if (r && r->status == 200 && m &&
            m->body.find("\nsegue_sse_clients 1\n") != std::string::npos) {
            auto list = parse_object(r->body);
            auto& data = list["data"].as_array();
            if (!data.empty() && data[0].as_object()["status"] != "queued")
                id = std::string(data[0].as_object()["id"].as_string());
        }
        if (id.empty())
            std::this_thread::sleep_for(20ms);
    }
    ASSERT_FALSE(id.empty()) << "the CLI never followed its task";
    server->proc().signal(SIGTERM);
    ASSERT_EQ(server->proc().wait(15s), 0) << server->log();
    server.reset();
    std::this_thread::sleep_for(1500ms);  // the CLI meets a closed port for a while
    server = std::make_unique<segue_process>(config);

    auto r = c.wait();
    ASSERT_EQ(r.code, 0) << dump(r) << server->log();
    const auto& screen = r.out;
    EXPECT_NE(screen.find("reconnecting"), std::string::npos) << screen;
    EXPECT_EQ(count(screen, "] queued"), 1u) << screen;
    EXPECT_EQ(count(screen, "] submitted to sandbox"), 1u) << screen;
    EXPECT_EQ(count(screen, "] output 1 ready"), 1u) << screen;
    EXPECT_EQ(count(screen, "] output 2 ready"), 1u) << screen;
    EXPECT_EQ(count(screen, "] succeeded"), 1u) << screen;
    EXPECT_NE(screen.find(id + " succeeded (sandbox) after "), std::string::npos) << screen;
}

// The server side of the binary is unchanged: no subcommand still means "run the gateway"
// (every other integration test starts it that way), and --help names both.
TEST(CliClient, HelpListsServerAndClientCommands) {
    segue::test::temp_dir d;
    auto r = run_cli(d, {"--help"});
    EXPECT_EQ(r.code, 0) << dump(r);
    EXPECT_NE(r.out.find("--check-config"), std::string::npos);
    EXPECT_NE(r.out.find("segue extend SONG|URL"), std::string::npos);
    r = run_cli(d, {"frobnicate"});
    EXPECT_EQ(r.code, 2) << dump(r);
}

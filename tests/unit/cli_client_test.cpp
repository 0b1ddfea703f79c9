// The client commands' pieces that need no server: the Server-Sent Events parser, the command
// line, and what is drawn on a terminal. The commands themselves run against the real server in
// tests/integration/cli_test.cpp.

#include <gtest/gtest.h>
#include <boost/json.hpp>

#include <map>

#include "gateway/client/commands.hpp"
#include "gateway/client/options.hpp"
#include "gateway/client/sse.hpp"
#include "gateway/client/terminal.hpp"

using namespace segue::client;
using namespace std::chrono_literals;

namespace {

const std::string stream =
    "retry: 1000\n\n"
    "id: 1\nevent: extension.queued\ndata: {\"seq\":1}\n\n"
    ": keep-alive\n\n"
    "id: 2\r\nevent: extension.output.ready\r\ndata: line one\r\ndata: line two\r\n\r\n"
    "data: no id or type\n\n";

void expect_stream_events(const std::vector<sse_event>& ev) {
    ASSERT_EQ(ev.size(), 3u);
    EXPECT_EQ(ev[0].id, "1");
    EXPECT_EQ(ev[0].type, "extension.queued");
    EXPECT_EQ(ev[0].data, "{\"seq\":1}");
    EXPECT_EQ(ev[1].id, "2");
    EXPECT_EQ(ev[1].type, "extension.output.ready");
    EXPECT_EQ(ev[1].data, "line one\nline two");
    // The id carries over (the spec's "last event ID"); the type defaults to "message".
    EXPECT_EQ(ev[2].id, "2");
    EXPECT_EQ(ev[2].type, "message");
    EXPECT_EQ(ev[2].data, "no id or type");
}

parse_outcome parse(std::vector<std::string_view> args,
                    std::map<std::string, std::string> env = {{"SEGUE_API_KEY", "sk-env"}}) {
    return parse_options(args, [env](const std::string& n) -> std::optional<std::string> {
        auto it = env.find(n);
        if (it == env.end())
            return std::nullopt;
        return it->second;
    });
}

}  // namespace

TEST(SseParser, WholeStream) {
    sse_parser p;
    expect_stream_events(p.feed(stream));
    EXPECT_EQ(p.last_id(), "2");
    EXPECT_EQ(p.retry_ms(), 1000);
}

TEST(SseParser, EverySplitGivesTheSameEvents) {
    // TCP may cut anywhere: inside a field name, between CR and LF, inside the blank line.
    for (std::size_t cut = 0; cut <= stream.size(); ++cut) {
        sse_parser p;
        auto ev = p.feed(std::string_view(stream).substr(0, cut));
        auto more = p.feed(std::string_view(stream).substr(cut));
        ev.insert(ev.end(), more.begin(), more.end());
        SCOPED_TRACE("cut at " + std::to_string(cut));
        expect_stream_events(ev);
    }
    sse_parser bytewise;
    std::vector<sse_event> ev;
    for (char c : stream)
        for (auto& e : bytewise.feed(std::string_view(&c, 1)))
            ev.push_back(e);
    expect_stream_events(ev);
}

TEST(SseParser, IncompleteEventsAndOddFields) {
    sse_parser p;
    // No blank line yet: nothing is dispatched.
    EXPECT_TRUE(p.feed("id: 7\nevent: x\ndata: half").empty());
    auto ev = p.feed("\n\n");
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].data, "half");
    // An event without data is dropped; unknown fields and a bad retry are ignored; "data"
    // with no colon is an empty data line; "data:x" needs no space.
    EXPECT_TRUE(p.feed("event: lonely\n\n").empty());
    ev = p.feed("foo: bar\nretry: soon\ndata\ndata:x\n\n");
    ASSERT_EQ(ev.size(), 1u);
    EXPECT_EQ(ev[0].data, "\nx");
    EXPECT_FALSE(p.retry_ms().has_value());
    EXPECT_EQ(p.last_id(), "7");
}

TEST(CliOptions, ExtendWithEveryField) {
    auto r = parse({"extend",      "song.mp3",
                    "--after",     "30",
                    "--length=20", "--prompt",
                    "strings",     "--lyrics",
                    "la la",       "--lyrics-to-extend",
                    "na na",       "--gender",
                    "female",      "--num-outputs",
                    "1",           "--provider",
                    "sandbox",     "--metadata",
                    "{\"a\":1}",   "-o",
                    "out",         "--format",
                    "both",        "--url",
                    "http://h:9/", "--key",
                    "sk-flag"});
    ASSERT_TRUE(r.opts) << r.error;
    const auto& o = *r.opts;
    EXPECT_EQ(o.command, "extend");
    EXPECT_EQ(o.source, "song.mp3");
    EXPECT_TRUE(o.wait) << "-o implies --wait";
    EXPECT_EQ(o.out_dir, "out");
    EXPECT_EQ(o.format, "both");
    EXPECT_EQ(o.url, "http://h:9") << "a trailing slash is dropped";
    EXPECT_EQ(o.key, "sk-flag") << "the flag wins over the environment";
    const std::vector<std::pair<std::string, std::string>> fields = {
        {"extend_after", "30"},
        {"length", "20"},
        {"prompt", "strings"},
        {"lyrics", "la la"},
        {"lyrics_section_to_extend", "na na"},
        {"gender", "female"},
        {"num_outputs", "1"},
        {"provider", "sandbox"},
        {"metadata", "{\"a\":1}"}};
    EXPECT_EQ(o.fields, fields);
}

// A value that starts like an option is given with '='; "-" alone and negative numbers are
// values (a negative one is then refused for what it is).
TEST(CliOptions, AValueThatLooksLikeAnOptionIsGivenWithEquals) {
    auto r = parse({"extend", "a.mp3", "--after", "1", "--prompt=--wait", "--lyrics", "-"});
    ASSERT_TRUE(r.opts) << r.error;
    EXPECT_FALSE(r.opts->wait);
    const std::vector<std::pair<std::string, std::string>> fields = {
        {"extend_after", "1"}, {"prompt", "--wait"}, {"lyrics", "-"}};
    EXPECT_EQ(r.opts->fields, fields);
    auto neg = parse({"extend", "a.mp3", "--after", "-1"});
    EXPECT_NE(neg.error.find("--after must be a number"), std::string::npos) << neg.error;
}

TEST(CliOptions, EnvironmentAndDefaults) {
    auto r = parse({"tasks"});
    ASSERT_TRUE(r.opts) << r.error;
    EXPECT_EQ(r.opts->url, "http://127.0.0.1:8080");
    EXPECT_EQ(r.opts->key, "sk-env");
    EXPECT_FALSE(r.opts->json);
    r = parse({"credits", "--json", "-q"},
              {{"SEGUE_API_KEY", "k"}, {"SEGUE_URL", "https://segue.example"}});
    ASSERT_TRUE(r.opts) << r.error;
    EXPECT_EQ(r.opts->url, "https://segue.example");
    EXPECT_TRUE(r.opts->json);
    EXPECT_TRUE(r.opts->quiet);
    r = parse({"deliveries", "--dead", "--task", "ext_1", "--limit", "5"});
    ASSERT_TRUE(r.opts) << r.error;
    EXPECT_EQ(r.opts->status, "dead");
    EXPECT_EQ(r.opts->task_id, "ext_1");
    EXPECT_EQ(r.opts->limit, 5);
    r = parse({"deliveries", "redeliver", "del_9"});
    ASSERT_TRUE(r.opts) << r.error;
    EXPECT_TRUE(r.opts->redeliver);
    EXPECT_EQ(r.opts->id, "del_9");
    r = parse({"deliveries", "redeliver", "--task", "ext_1", "--status", "delivered"});
    ASSERT_TRUE(r.opts) << r.error;
    EXPECT_TRUE(r.opts->redeliver);
    EXPECT_TRUE(r.opts->id.empty());
    EXPECT_EQ(r.opts->task_id, "ext_1");
    EXPECT_EQ(r.opts->status, "delivered");
    r = parse({"watch", "ext_2", "-o", "dir"});
    ASSERT_TRUE(r.opts) << r.error;
    EXPECT_EQ(r.opts->id, "ext_2");
    EXPECT_EQ(r.opts->out_dir, "dir");
}

TEST(CliOptions, UsageErrorsSayWhat) {
    struct bad {
        std::vector<std::string_view> args;
        std::string says;
    };
    // Over the server's limits (api/validate.hpp), refused before the upload: 3,001 characters
    // (two bytes each, so it is the characters that are counted), 4 KiB of metadata and more.
    std::string long_prompt;
    for (int i = 0; i < 3001; ++i)
        long_prompt += "\xc3\xa9";  // é
    const std::string long_lyrics(2001, 'l');
    const std::string big_metadata = "{\"k\":\"" + std::string(4096, 'm') + "\"}";
    const std::vector<bad> cases = {
        {{"extend", "a.mp3", "--after", "1", "--num-outputs", "3"}, "--num-outputs must be 1 or 2"},
        {{"extend", "a.mp3", "--after", "1", "--num-outputs", "0"}, "--num-outputs must be 1 or 2"},
        {{"extend", "a.mp3", "--after", "1", "--prompt", long_prompt},
         "--prompt must be at most 3000 characters (it has 3001)"},
        {{"extend", "a.mp3", "--after", "1", "--lyrics", long_lyrics},
         "--lyrics must be at most 2000 characters"},
        {{"extend", "a.mp3", "--after", "1", "--length", "601"}, "at most 600 seconds"},
        {{"extend", "a.mp3", "--after", "1", "--metadata", big_metadata}, "at most 4096 bytes"},
        {{"extend"}, "which song"},
        {{"extend", "a.mp3"}, "--after SECONDS is required"},
        {{"extend", "a.mp3", "b.mp3", "--after", "1"}, "one song at a time"},
        {{"extend", "a.mp3", "--after", "soon"}, "--after must be a number"},
        {{"extend", "a.mp3", "--after", "-1"}, "--after must be a number"},
        {{"extend", "a.mp3", "--after", "1", "--num-outputs", "two"}, "whole number"},
        {{"extend", "a.mp3", "--after", "1", "--gender", "robot"}, "male, female or neutral"},
        {{"extend", "a.mp3", "--after", "1", "--after", "2"}, "given twice"},
        {{"extend", "a.mp3", "--after"}, "--after needs a value"},
        {{"extend", "a.mp3", "--after", "1", "--format", "ogg"}, "--format must be"},
        {{"extend", "a.mp3", "--after", "1", "--format", "wav"}, "give -o DIR too"},
        {{"watch", "ext_1", "--format", "both"}, "give -o DIR too"},
        {{"extend", "a.mp3", "--after", "1", "--dead"}, "unknown option --dead"},
        {{"extend", "a.mp3", "--after", "1", "--metadata", "{bad json"}, "must be a JSON object"},
        {{"extend", "https://x/a.mp3", "--after", "1", "--metadata", "[1]"},
         "must be a JSON object"},
        {{"extend", "a.mp3", "--after", "1", "--idempotency-key", "a\nb"}, "visible ASCII"},
        {{"extend", "a.mp3", "--after", "1", "--idempotency-key", ""}, "visible ASCII"},
        {{"tasks", "--wait"}, "unknown option --wait"},
        {{"tasks", "--limit", "0"}, "--limit must be"},
        {{"tasks", "--limit", "101"}, "from 1 to 100"},  // the server's bound, checked here
        {{"credits", "--limit", "501"}, "from 1 to 500"},
        {{"tasks", "extra"}, "unexpected argument"},
        {{"watch"}, "needs one task id"},
        {{"watch", "ext_../../x"}, "'ext_../../x' is not a task id"},
        {{"cancel", "ext_1 2"}, "is not a task id"},
        {{"deliveries", "redeliver", "dlv_1/redeliver"}, "is not a delivery id"},
        {{"deliveries", "--task", "ext_1?x=1"}, "--task takes a task id"},
        {{"tasks", "--before", "ext_1#"}, "--before takes an id"},
        {{"cancel", "a", "b"}, "needs one task id"},
        {{"deliveries", "resend", "x"}, "redeliver ID?"},
        {{"deliveries", "redeliver"}, "one delivery id, or --task ID"},
        {{"deliveries", "redeliver", "dlv_1", "--task", "ext_1"}, "one delivery id, or --task"},
        {{"deliveries", "redeliver", "--task", "ext_1", "--status", "pending"},
         "--status dead or delivered"},
        {{"deliveries", "--status", "lost"}, "--status must be"},
        {{"deliveries", "--dead", "--status", "pending"}, "contradict"},
        {{"deliveries", "--status", "pending", "--dead"}, "contradict"},
        {{"extend", "a.mp3", "--after", "1", "--length", "0"}, "more than 0"},
        {{"tasks", "--url", "ftp://x"}, "--url must be an http"},
        {{"tasks", "--json=yes"}, "takes no value"},
        // A value left out: the next option is not taken for it.
        {{"extend", "a.mp3", "--after", "1", "--prompt", "--wait"},
         "--prompt needs a value, and --wait is an option (write --prompt=--wait"},
        {{"extend", "a.mp3", "--after", "1", "--lyrics-to-extend", "--quiet"},
         "--lyrics-to-extend needs a value"},
        {{"extend", "a.mp3", "--after", "1", "--prompt", "-q"}, "--prompt needs a value"},
        {{"extend", "a.mp3", "--after", "--length", "5"}, "--after needs a value"},
        {{"extend", "ftp://host/a.mp3", "--after", "1"}, "a file or an http(s) URL, not a ftp://"},
    };
    for (const auto& c : cases) {
        auto r = parse(c.args);
        EXPECT_FALSE(r.opts) << c.says;
        EXPECT_EQ(r.code, exit_usage) << c.says;
        EXPECT_NE(r.error.find(c.says), std::string::npos) << r.error;
        EXPECT_NE(r.error.find("--help"), std::string::npos) << r.error;
    }
    // At the limits: accepted.
    std::string prompt_at_limit;
    for (int i = 0; i < 3000; ++i)
        prompt_at_limit += "\xc3\xa9";
    auto at =
        parse({"extend", "a.mp3", "--after", "1", "--num-outputs", "2", "--prompt", prompt_at_limit,
               "--length", "600", "--metadata", "{ \"k\" : \"" + std::string(4000, 'm') + "\" }"});
    EXPECT_TRUE(at.opts) << at.error;
    // No key anywhere is an authentication problem, not a usage one.
    auto r = parse({"tasks"}, {});
    EXPECT_FALSE(r.opts);
    EXPECT_EQ(r.code, exit_auth);
    EXPECT_NE(r.error.find("SEGUE_API_KEY"), std::string::npos);
}

TEST(CliOptions, HelpAndCommands) {
    for (std::string_view c : {"extend", "watch", "tasks", "cancel", "deliveries", "credits"}) {
        EXPECT_TRUE(is_client_command(c));
        auto r = parse({c, "--help"}, {});
        EXPECT_FALSE(r.help.empty()) << c;
        EXPECT_NE(r.help.find("exit codes"), std::string::npos) << c;
    }
    EXPECT_FALSE(is_client_command("migrate"));
    EXPECT_FALSE(is_client_command("--config"));
    EXPECT_NE(client_usage().find("segue extend"), std::string_view::npos);
}

TEST(Terminal, Formatting) {
    EXPECT_EQ(format_bytes(0), "0 B");
    EXPECT_EQ(format_bytes(999), "999 B");
    EXPECT_EQ(format_bytes(1500), "1.5 KB");
    EXPECT_EQ(format_bytes(3'500'000), "3.5 MB");
    EXPECT_EQ(format_bytes(2'000'000'000), "2.0 GB");
    EXPECT_EQ(format_elapsed(0ms), "0:00");
    EXPECT_EQ(format_elapsed(7900ms), "0:07");
    EXPECT_EQ(format_elapsed(754s), "12:34");
    EXPECT_EQ(format_elapsed(3723s), "1:02:03");
}

TEST(Terminal, ProgressLineFitsAndFills) {
    auto half = progress_line("uploading song.mp3", 500, 1000, 1.0, 80);
    EXPECT_LE(half.size(), 80u) << half;
    EXPECT_NE(half.find(" 50%"), std::string::npos) << half;
    EXPECT_NE(half.find("[====="), std::string::npos) << half;
    EXPECT_NE(half.find(">"), std::string::npos) << half;
    EXPECT_NE(half.find("500 B/1.0 KB"), std::string::npos) << half;
    EXPECT_NE(half.find("500 B/s"), std::string::npos) << half;
    auto full = progress_line("uploading song.mp3", 1000, 1000, 2.0, 80);
    EXPECT_NE(full.find("100%"), std::string::npos) << full;
    EXPECT_EQ(full.find('>'), std::string::npos) << full;
    // A narrow terminal: the label is cut, the figures stay.
    auto narrow = progress_line(std::string(100, 'x'), 1, 4, 0.0, 50);
    EXPECT_LE(narrow.size(), 50u) << narrow;
    EXPECT_NE(narrow.find(" 25%"), std::string::npos) << narrow;
    // Nothing to send counts as done.
    EXPECT_NE(progress_line("x", 0, 0, 0.0, 80).find("100%"), std::string::npos);
}

// A partly made task's summary names the output that failed, and why, also when the ready one
// was downloaded (the files are listed, not the outputs).
TEST(CliSummary, AnOutputThatFailedIsSaidBesideTheFilesDownloaded) {
    const auto task = boost::json::parse(R"({"id":"ext_1","status":"partially_succeeded",
        "outputs":[{"index":1,"status":"ready","audio":{"mp3_url":"/v1/files/f1"}},
                   {"index":2,"status":"failed","error":"Conversion failed"}]})");
    boost::json::array downloads;
    downloads.push_back(boost::json::parse(R"({"path":"out/ext_1-1.mp3","duration":14.0})"));
    const auto with_files = segue::client::outputs_summary(task, downloads);
    EXPECT_NE(with_files.find("out/ext_1-1.mp3"), std::string::npos) << with_files;
    EXPECT_NE(with_files.find("output 2: failed: Conversion failed"), std::string::npos)
        << with_files;
    EXPECT_EQ(with_files.find("output 1"), std::string::npos) << with_files;
    // Without downloads every output is listed, the ready one with its link.
    const auto without = segue::client::outputs_summary(task, {});
    EXPECT_NE(without.find("output 1: ready  /v1/files/f1"), std::string::npos) << without;
    EXPECT_NE(without.find("output 2: failed: Conversion failed"), std::string::npos) << without;
}

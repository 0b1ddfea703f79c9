#pragma once
// The client commands' command line: `segue extend|tasks|watch|cancel|deliveries|credits ...`.
// Parsing only (no I/O), so it is tested on its own; commands.cpp runs what it returns.

#include <functional>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace segue::client {

// The exit codes of the client commands (README "CLI").
enum exit_code : int {
    exit_ok = 0,
    exit_task_failed = 1,   // the task ended failed, canceled or partially_succeeded
    exit_usage = 2,         // bad command line (or an unreadable input file)
    exit_unavailable = 3,   // server unreachable, 5xx/429, a broken response or download
    exit_auth = 4,          // 401/403: missing or wrong API key
    exit_refused = 5,       // the server refused the request (4xx: validation, not found, ...)
    exit_interrupted = 130  // Ctrl-C (the task, if any, keeps running)
};

struct options {
    std::string command;  // extend, tasks, watch, cancel, deliveries, credits
    std::string url;      // --url, else $SEGUE_URL, else http://127.0.0.1:8080
    std::string key;      // --key, else $SEGUE_API_KEY
    bool json = false;    // --json: one JSON document on stdout, nothing drawn
    bool quiet = false;   // --quiet: nothing drawn (also when stdout is not a terminal)

    // extend
    std::string source;  // a file path, or an http(s) URL (sent as audio_url)
    std::vector<std::pair<std::string, std::string>> fields;  // form fields, in order
    std::string idempotency_key;
    bool wait = false;  // --wait (implied by -o)

    // watch, cancel, deliveries redeliver
    std::string id;
    // extend --wait, watch: where outputs go (nothing is downloaded without it)
    std::string out_dir;
    std::string format = "mp3";  // mp3, wav or both

    // tasks, deliveries, credits
    std::optional<int> limit;
    std::string before;
    std::string status;   // deliveries: pending, delivered, dead (--dead)
    std::string task_id;  // deliveries --task
    bool redeliver = false;
};

struct parse_outcome {
    std::optional<options> opts;  // set when the command line is valid
    std::string help;             // set for --help (print it, exit 0)
    std::string error;            // set for an error (print it, exit with `code`)
    int code = exit_usage;        // exit_usage, or exit_auth when no API key is given
};

using env_fn = std::function<std::optional<std::string>(const std::string&)>;

// True for the first argument of a client command (everything else is the server's).
bool is_client_command(std::string_view arg);
// `args` starts with the command name.
parse_outcome parse_options(const std::vector<std::string_view>& args, const env_fn& env);
// The client part of `segue --help`.
std::string_view client_usage();

}  // namespace segue::client

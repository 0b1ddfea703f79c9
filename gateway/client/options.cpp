#include "gateway/client/options.hpp"

#include <boost/json/parse.hpp>

#include <array>
#include <cctype>
#include <charconv>
#include <cmath>
#include <map>

#include "gateway/api/common.hpp"
#include "gateway/api/validate.hpp"
#include "gateway/util/json_text.hpp"

namespace segue::client {
namespace {

constexpr std::string_view common_help = R"(
common options:
  --url URL        the gateway (default $SEGUE_URL, else http://127.0.0.1:8080)
  --key KEY        the API key (default $SEGUE_API_KEY)
  --json           print one JSON document on stdout (for scripts); nothing is drawn;
                   a failure is {"error": {"exit_code", "message", ...}}
  -q, --quiet      draw nothing (no progress bar, no status line); also the case when
                   stdout or stderr is not a terminal
  -h, --help       this help

exit codes: 0 success, 1 the task failed, was canceled or partially succeeded,
  2 usage error (also an unwritable -o or stdout), 3 server unreachable, stalled or server
  error, 4 missing or wrong API key,
  5 request refused by the server (any other 4xx: validation, bad parameter, not found,
  conflict, too large, no credits),
  130 interrupted (Ctrl-C; the task keeps running)
)";

constexpr std::string_view usage_text = R"(client commands (talk to a running gateway):
  segue extend SONG|URL --after SECONDS [--length SECONDS] [--prompt TEXT] [--wait] [-o DIR]
  segue watch ID [-o DIR]          follow a task live until it ends
  segue tasks [--limit N]          the latest tasks
  segue cancel ID
  segue deliveries [--dead]        webhook deliveries; `deliveries redeliver ID|--task ID`
  segue credits                    balance and latest ledger entries
  segue COMMAND --help             the command's options
)";

const std::map<std::string_view, std::string_view, std::less<>> command_help = {
    {"extend", R"(usage: segue extend SONG|URL --after SECONDS [options]

Uploads SONG (streamed from disk; an http(s) URL is sent as audio_url instead) and creates an
extension task. With --wait (or -o), follows its events live and downloads the outputs.

  --after SECONDS          where the new part starts (required)
  --length SECONDS         length of the new audio, where the provider supports it
  --prompt TEXT            how the extension should sound
  --lyrics TEXT            the song's lyrics
  --lyrics-to-extend TEXT  lyrics for the new part
  --gender G               male, female or neutral
  --num-outputs N          1 or 2 variants (server default 2)
  --provider NAME          pin a provider
  --route NAME             a named route from the server's config
  --webhook-url URL        where the server sends the task's events
  --metadata JSON          a small object echoed in every event
  --idempotency-key KEY    a retry with the same key creates nothing new (default: random)
  --wait                   follow the task until it ends (exit code from its status)
  -o, --output DIR         download the outputs into DIR (implies --wait)
  --format F               what -o downloads: mp3 (default), wav or both
)"},
    {"watch", R"(usage: segue watch ID [-o DIR] [--format mp3|wav|both]

Follows task ID live (Server-Sent Events, resumed with Last-Event-ID after a dropped
connection) until it ends. The exit code says how it ended.

  -o, --output DIR         download the outputs into DIR (a task that already ended too:
                           this is how to download its outputs again)
  --format F               what -o downloads: mp3 (default), wav or both
)"},
    {"tasks", R"(usage: segue tasks [--limit N] [--before ID]

The latest tasks, newest first (N at most 100, default 20; --before ID pages on).
)"},
    {"cancel", R"(usage: segue cancel ID

Cancels task ID (held credits are released). A task already ended is a conflict (exit 5).
)"},
    {"deliveries", R"(usage: segue deliveries [--dead | --status pending|delivered|dead] [--task ID]
                        [--limit N] [--before ID]
       segue deliveries redeliver ID
       segue deliveries redeliver --task ID [--status delivered]

The tenant's webhook deliveries, newest first (N at most 500); `redeliver` sends a dead or
delivered one again, or, with --task, all of a task's dead (or delivered) ones, in order.
)"},
    {"credits", R"(usage: segue credits [--limit N]

The balance (available, held, captured, granted) and the latest ledger entries (N at most 500).
)"},
};

bool parse_number(std::string_view s, double& out) {
    if (s.empty())
        return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size() && std::isfinite(out);
}

bool parse_int(std::string_view s, int& out) {
    if (s.empty())
        return false;
    auto [p, ec] = std::from_chars(s.data(), s.data() + s.size(), out);
    return ec == std::errc() && p == s.data() + s.size();
}

// The form field each extend flag sets, and how its value is checked.
enum class check { text, seconds, count, gender, json_object };
struct field_flag {
    std::string_view flag;
    std::string_view field;
    check how;
};
constexpr std::array<field_flag, 11> extend_fields{{
    {"--after", "extend_after", check::seconds},
    {"--length", "length", check::seconds},
    {"--prompt", "prompt", check::text},
    {"--lyrics", "lyrics", check::text},
    {"--lyrics-to-extend", "lyrics_section_to_extend", check::text},
    {"--gender", "gender", check::gender},
    {"--num-outputs", "num_outputs", check::count},
    {"--provider", "provider", check::text},
    {"--route", "route", check::text},
    {"--webhook-url", "webhook_url", check::text},
    {"--metadata", "metadata", check::json_object},
}};

// An id as the API makes them (ext_..., dlv_...): it goes into a URL path as is, so anything
// else (a slash, a dot, a space) is a usage error rather than a request to another route.
bool plain_id(std::string_view s) {
    if (s.empty() || s.size() > 128)
        return false;
    for (char c : s)
        if (!std::isalnum(static_cast<unsigned char>(c)) && c != '_' && c != '-')
            return false;
    return true;
}

}  // namespace

bool is_client_command(std::string_view arg) {
    return command_help.contains(arg);
}

std::string_view client_usage() {
    return usage_text;
}

parse_outcome parse_options(const std::vector<std::string_view>& args, const env_fn& env) {
    parse_outcome out;
    if (args.empty() || !is_client_command(args.front())) {
        out.error = "unknown command";
        return out;
    }
    options o;
    o.command = std::string(args.front());
    const std::string cmd = o.command;
    std::vector<std::string> positional;
    bool format_given = false;
    std::optional<std::string> url;
    std::optional<std::string> key;
    auto fail = [&](std::string msg) {
        out.error = "segue " + cmd + ": " + std::move(msg) + " (see segue " + cmd + " --help)";
        return out;
    };

    for (std::size_t i = 1; i < args.size(); ++i) {
        std::string_view a = args[i];
        std::string_view name = a;
        std::optional<std::string> inline_value;
        if (a.starts_with("--")) {
            if (auto eq = a.find('='); eq != std::string_view::npos) {
                name = a.substr(0, eq);
                inline_value = std::string(a.substr(eq + 1));
            }
        }
        std::string value_error;
        auto value = [&]() -> std::optional<std::string> {
            if (inline_value)
                return inline_value;
            if (i + 1 >= args.size()) {
                value_error = std::string(name) + " needs a value";
                return std::nullopt;
            }
            // An option where its value should be means the value was left out ("--prompt
            // --wait" would otherwise make "--wait" the prompt and not wait). A value that
            // does start so is given with '=': --prompt=--wait.
            const std::string_view next = args[i + 1];
            if ((next.starts_with("--") && next.size() > 2) || next == "-q" || next == "-h" ||
                next == "-o") {
                value_error = std::string(name) + " needs a value, and " + std::string(next) +
                              " is an option (write " + std::string(name) + "=" +
                              std::string(next) + " if that is the value)";
                return std::nullopt;
            }
            return std::string(args[++i]);
        };
        auto takes = [&](std::initializer_list<std::string_view> commands) {
            for (auto c : commands)
                if (c == cmd)
                    return true;
            return false;
        };

        if (name == "--help" || name == "-h") {
            out.help = std::string(command_help.find(cmd)->second) + std::string(common_help);
            return out;
        }
        if (name == "--json" || name == "--quiet" || name == "-q" || name == "--wait" ||
            name == "--dead") {
            if (inline_value)
                return fail(std::string(name) + " takes no value");
            if (name == "--json")
                o.json = true;
            else if (name == "--quiet" || name == "-q")
                o.quiet = true;
            else if (name == "--wait" && takes({"extend"}))
                o.wait = true;
            else if (name == "--dead" && takes({"deliveries"})) {
                if (!o.status.empty() && o.status != "dead")
                    return fail("--dead and --status " + o.status + " contradict each other");
                o.status = "dead";
            } else
                return fail("unknown option " + std::string(name));
            continue;
        }
        if (!a.starts_with("-") || a == "-") {
            positional.emplace_back(a);
            continue;
        }
        // Every other option takes a value.
        const field_flag* ff = nullptr;
        for (const auto& f : extend_fields)
            if (f.flag == name)
                ff = &f;
        const bool known = name == "--url" || name == "--key" || (ff && takes({"extend"})) ||
                           (name == "--extend-after" && takes({"extend"})) ||
                           (name == "--idempotency-key" && takes({"extend"})) ||
                           ((name == "-o" || name == "--output" || name == "--format") &&
                            takes({"extend", "watch"})) ||
                           (name == "--limit" && takes({"tasks", "deliveries", "credits"})) ||
                           (name == "--before" && takes({"tasks", "deliveries"})) ||
                           ((name == "--status" || name == "--task") && takes({"deliveries"}));
        if (!known)
            return fail("unknown option " + std::string(name));
        auto v = value();
        if (!v)
            return fail(value_error);
        if (name == "--url") {
            url = *v;
        } else if (name == "--key") {
            key = *v;
        } else if (name == "--extend-after" || ff) {
            const auto& f = ff ? *ff : extend_fields[0];
            double n = 0;
            int k = 0;
            if (f.how == check::seconds && (!parse_number(*v, n) || n < 0))
                return fail(std::string(name) + " must be a number of seconds >= 0, not '" + *v +
                            "'");
            if (f.field == "length" && n == 0)  // what is added: nothing is not an extension
                return fail(std::string(name) + " must be more than 0 seconds");
            if (f.how == check::count && !parse_int(*v, k))
                return fail(std::string(name) + " must be a whole number, not '" + *v + "'");
            // The server's own rules (api/validate.hpp), checked before a byte is uploaded: a
            // refusal after a long upload wastes it.
            if (f.field == "num_outputs" && (k < 1 || k > 2))
                return fail(std::string(name) + " must be 1 or 2");
            if (f.field == "length" && n > api::max_length_seconds)
                return fail(std::string(name) + " must be at most " +
                            std::to_string(static_cast<int>(api::max_length_seconds)) + " seconds");
            const std::size_t most_chars = f.field == "prompt"   ? api::max_prompt_chars
                                           : f.field == "lyrics" ? api::max_lyrics_chars
                                           : f.field == "lyrics_section_to_extend"
                                               ? api::max_section_chars
                                               : 0;
            if (most_chars && api::utf8_length(*v) > most_chars)
                return fail(std::string(name) + " must be at most " + std::to_string(most_chars) +
                            " characters (it has " + std::to_string(api::utf8_length(*v)) + ")");

            if (f.how == check::gender && *v != "male" && *v != "female" && *v != "neutral")
                return fail(std::string(name) + " must be male, female or neutral");
            // Checked here for every source, before a byte is uploaded.
            if (f.how == check::json_object) {
                boost::system::error_code ec;
                const auto doc = boost::json::parse(*v, ec);
                if (ec || !doc.is_object())
                    return fail(std::string(name) + " must be a JSON object, like '{\"k\":\"v\"}'");
                // Measured as the server does: compact, after parsing.
                if (util::json_text(doc).size() > api::max_metadata_bytes)
                    return fail(std::string(name) + " must be at most " +
                                std::to_string(api::max_metadata_bytes) + " bytes as JSON");
            }
            for (auto& [field, existing] : o.fields)
                if (field == f.field)
                    return fail(std::string(name) + " given twice");
            o.fields.emplace_back(std::string(f.field), *v);
        } else if (name == "--idempotency-key") {
            if (!api::valid_idempotency_key(*v))
                return fail(std::string(name) + " must be 1-255 visible ASCII characters");
            o.idempotency_key = *v;
        } else if (name == "-o" || name == "--output") {
            if (v->empty())
                return fail(std::string(name) + " needs a directory");
            o.out_dir = *v;
        } else if (name == "--format") {
            if (*v != "mp3" && *v != "wav" && *v != "both")
                return fail("--format must be mp3, wav or both");
            o.format = *v;
            format_given = true;
        } else if (name == "--limit") {
            // The server's own bounds for each list (refused there with a 400 otherwise).
            const int most = takes({"tasks"}) ? 100 : 500;
            int n = 0;
            if (!parse_int(*v, n) || n < 1 || n > most)
                return fail("--limit must be a whole number from 1 to " + std::to_string(most));
            o.limit = n;
        } else if (name == "--before") {
            if (!plain_id(*v))
                return fail("--before takes an id (letters, digits, _ and -), not '" + *v + "'");
            o.before = *v;
        } else if (name == "--status") {
            if (*v != "pending" && *v != "delivered" && *v != "dead")
                return fail("--status must be pending, delivered or dead");
            if (!o.status.empty() && o.status != *v)
                return fail("--dead and --status " + *v + " contradict each other");
            o.status = *v;
        } else if (name == "--task") {
            if (!plain_id(*v))
                return fail("--task takes a task id (ext_...), not '" + *v + "'");
            o.task_id = *v;
        }
    }

    // --format picks what -o downloads; alone it would do nothing, silently.
    if (format_given && o.out_dir.empty())
        return fail("--format chooses what -o downloads: give -o DIR too");

    // Positional arguments, per command.
    if (cmd == "extend") {
        if (positional.size() != 1)
            return fail(positional.empty() ? "which song? (a file or an http(s) URL)"
                                           : "one song at a time");
        o.source = positional[0];
        // "ftp://host/a.mp3" is not a file to open: say what is accepted instead.
        if (const auto scheme = o.source.find("://"); scheme != std::string::npos && scheme > 0 &&
                                                      o.source.substr(0, scheme) != "http" &&
                                                      o.source.substr(0, scheme) != "https")
            return fail("the song is a file or an http(s) URL, not a " +
                        o.source.substr(0, scheme) + ":// URL");
        bool after = false;
        for (auto& [field, v] : o.fields)
            after = after || field == "extend_after";
        if (!after)
            return fail("--after SECONDS is required (where the new part starts)");
        if (!o.out_dir.empty())
            o.wait = true;
    } else if (cmd == "watch" || cmd == "cancel") {
        if (positional.size() != 1)
            return fail("needs one task id");
        if (!plain_id(positional[0]))
            return fail("'" + positional[0] + "' is not a task id (ext_...)");
        o.id = positional[0];
    } else if (cmd == "deliveries") {
        if (!positional.empty()) {
            if (positional[0] != "redeliver")
                return fail("unknown argument '" + positional[0] + "' (redeliver ID?)");
            if (positional.size() == 1 && !o.task_id.empty()) {
                if (!o.status.empty() && o.status != "dead" && o.status != "delivered")
                    return fail("redeliver --task takes --status dead or delivered");
                o.redeliver = true;  // all of the task's (o.id stays empty)
            } else if (positional.size() != 2 || !o.task_id.empty()) {
                return fail("redeliver needs one delivery id, or --task ID");
            } else {
                if (!plain_id(positional[1]))
                    return fail("'" + positional[1] + "' is not a delivery id (dlv_...)");
                o.redeliver = true;
                o.id = positional[1];
            }
        }
    } else if (!positional.empty()) {
        return fail("unexpected argument '" + positional[0] + "'");
    }

    if (!url)
        url = env("SEGUE_URL");
    o.url = url && !url->empty() ? *url : "http://127.0.0.1:8080";
    while (o.url.size() > 1 && o.url.back() == '/')
        o.url.pop_back();
    if (!o.url.starts_with("http://") && !o.url.starts_with("https://"))
        return fail("--url must be an http:// or https:// URL, not '" + o.url + "'");
    if (!key)
        key = env("SEGUE_API_KEY");
    if (!key || key->empty()) {
        out.code = exit_auth;
        return fail("no API key: pass --key KEY or set SEGUE_API_KEY");
    }
    o.key = *key;
    out.opts = std::move(o);
    return out;
}

}  // namespace segue::client

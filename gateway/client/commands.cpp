// The client commands: one io_context on this thread, net::http_client for every request (the
// gateway's own upstream client: keep-alive, deadlines, TLS), a screen drawn on stderr when it is
// a terminal, and one JSON document on stdout with --json.

#include "gateway/client/commands.hpp"

#include <fcntl.h>
#include <signal.h>
#include <unistd.h>

#include <boost/asio/as_tuple.hpp>
#include <boost/asio/co_spawn.hpp>
#include <boost/asio/detached.hpp>
#include <boost/asio/io_context.hpp>
#include <boost/asio/signal_set.hpp>
#include <boost/asio/steady_timer.hpp>
#include <boost/asio/this_coro.hpp>
#include <boost/asio/use_awaitable.hpp>
#include <boost/json.hpp>

#include <algorithm>
#include <cctype>
#include <cerrno>
#include <charconv>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <functional>
#include <memory>
#include <optional>
#include <string>

#include "gateway/client/options.hpp"
#include "gateway/client/sse.hpp"
#include "gateway/client/terminal.hpp"
#include "gateway/log/log.hpp"
#include "gateway/metrics/registry.hpp"
#include "gateway/net/http_client.hpp"
#include "gateway/util/crypto.hpp"
#include "segue/version.hpp"

namespace segue::client {
namespace {

namespace asio = boost::asio;
namespace json = boost::json;
namespace fs = std::filesystem;
using asio::awaitable;
using steady = std::chrono::steady_clock;
using namespace std::chrono_literals;

constexpr std::size_t upload_chunk = 256 * 1024;
// An SSE stream is reopened (Last-Event-ID) at least this often: a connection that died without
// a FIN (a sleeping laptop, a NAT that forgot us) costs at most this much.
constexpr auto sse_window = 60s;
// How long the server may stay unreachable while a task is followed before giving up.
constexpr auto reconnect_budget = 60s;
constexpr auto upload_timeout = std::chrono::hours(1);
constexpr auto download_timeout = std::chrono::minutes(10);
// Within those, a gateway (or a proxy) that stops reading the upload, or answering, for this
// long is given up on (exit 3), rather than after the hour.
constexpr auto stall_timeout = std::chrono::minutes(1);
constexpr std::uint64_t max_download_bytes = 4ull << 30;

// A failure that ends the command with `code` after printing `message` on stderr. With --json
// it is also one document on stdout, with the server's answer when there was one (`status`, and
// its problem+json as `problem`), so a script that parses stdout learns why.
struct cli_error {
    int code;
    std::string message;
    int status = 0;
    json::value problem = nullptr;
};

// Worth another try while following a task: no answer, or a 5xx or 429 one.
bool transient(const net::result& res) {
    return !res.ok() || res.res.status == 429 || res.res.status >= 500;
}

bool is_final(std::string_view status) {
    return status == "succeeded" || status == "partially_succeeded" || status == "failed" ||
           status == "canceled";
}

const json::value* member(const json::value& v, std::string_view key) {
    if (!v.is_object())
        return nullptr;
    return v.as_object().if_contains(key);
}

std::string text(const json::value& v, std::string_view key) {
    const auto* m = member(v, key);
    if (!m || m->is_null())
        return {};
    if (m->is_string())
        return std::string(m->as_string());
    if (m->is_double()) {
        // As a person writes it (750.505, 2.5), not as Boost.JSON does (7.50505E2).
        char buf[64];
        const auto r =
            std::to_chars(buf, buf + sizeof buf, m->as_double(), std::chars_format::fixed);
        if (r.ec == std::errc())
            return std::string(buf, r.ptr);
    }
    return json::serialize(*m);
}

json::value parse_or_null(std::string_view s) {
    boost::system::error_code ec;
    auto v = json::parse(s, ec);
    return ec ? json::value(nullptr) : v;
}

std::string seconds_text(const json::value* v) {
    if (!v || !v->is_number())
        return {};
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f s", v->to_number<double>());
    return buf;
}

// The exit code and message for an HTTP answer that is not a success.
cli_error http_error(int status, std::string_view body) {
    const int code = status == 401 || status == 403                   ? exit_auth
                     : status == 429 || status >= 500 || status < 400 ? exit_unavailable
                                                                      : exit_refused;
    const auto problem = parse_or_null(body);
    std::string msg = "the server answered " + std::to_string(status);
    if (auto title = text(problem, "title"); !title.empty())
        msg += " " + title;
    if (auto detail = text(problem, "detail"); !detail.empty())
        msg += ": " + detail;
    if (const auto* errors = member(problem, "errors"); errors && errors->is_array())
        for (const auto& e : errors->as_array()) {
            const std::string line = text(e, "field") + ": " + text(e, "message");
            if (msg.find(line) == std::string::npos)  // the detail may already say it
                msg += "\n  " + line;
        }
    return {code, msg, status, problem};
}

// The first error writing stdout (a full disk, a closed pipe): the command then fails, so a
// script never takes a lost result for a success.
int stdout_errno = 0;

void print_out(const std::string& s) {
    errno = 0;
    if (std::fwrite(s.data(), 1, s.size(), stdout) != s.size() || std::fflush(stdout) != 0)
        if (stdout_errno == 0)
            stdout_errno = errno ? errno : EIO;
}

void print_json(const json::value& v) {
    print_out(json::serialize(v) + "\n");
}

// --json's document for a failed command: {"error": {"exit_code", "message", "status"?,
// "problem"?, "task_id"?}}; the task is named when one was created or followed before the failure.
json::value error_document(const cli_error& e, const std::string& task_id) {
    json::object err;
    err["exit_code"] = e.code;
    err["message"] = e.message;
    if (e.status != 0)
        err["status"] = e.status;
    if (!e.problem.is_null())
        err["problem"] = e.problem;
    if (!task_id.empty())
        err["task_id"] = task_id;
    return json::object{{"error", std::move(err)}};
}

std::string pad(std::string s, std::size_t width) {
    if (s.size() < width)
        s.append(width - s.size(), ' ');
    return s;
}

// `s` as one word of a POSIX shell command line: as it is when it needs no quoting, else in
// single quotes (a quote inside becomes '\'').
std::string shell_word(const std::string& s) {
    const bool plain = !s.empty() && std::all_of(s.begin(), s.end(), [](unsigned char c) {
        return std::isalnum(c) || (c != 0 && std::strchr("_-./:@%+=,~", c));
    });
    if (plain)
        return s;
    std::string out = "'";
    for (char c : s)
        out += c == '\'' ? std::string("'\\''") : std::string(1, c);
    return out + "'";
}

struct upload_state;
struct watch_state;

class session {
  public:
    session(asio::io_context& ioc, options o)
        : ioc_(ioc),
          o_(std::move(o)),
          http_(ioc, client_options(), metrics_),
          scr_(!o_.json && !o_.quiet && is_terminal(STDOUT_FILENO) && is_terminal(STDERR_FILENO)),
          start_(steady::now()) {}

    awaitable<int> run();
    // Ctrl-C: say what happened to the task, and how to see it again.
    [[noreturn]] void interrupted();
    // Before an error message: the status line must not run into it.
    void clear_screen() { scr_.clear(); }
    // The task this command created or follows ("" before there is one), and how to see it
    // again: for a message that must name it (its result could not be printed).
    std::string task_hint() const {
        return task_id_.empty() ? std::string()
                                : "task " + task_id_ + " (see it again: " + watch_again() + ")";
    }
    // --json: errors are printed on stdout as well.
    bool json_output() const { return o_.json; }
    const std::string& task_id() const { return task_id_; }
    // Since the command started.
    std::string elapsed() const {
        return format_elapsed(
            std::chrono::duration_cast<std::chrono::milliseconds>(steady::now() - start_));
    }

  private:
    friend awaitable<std::string> next_upload_chunk(std::shared_ptr<upload_state> st);
    friend awaitable<bool> on_sse_chunk(std::shared_ptr<watch_state> w, std::string_view chunk);
    friend awaitable<void> tick(std::shared_ptr<watch_state> w);

    static net::client_options client_options() {
        net::client_options c;
        c.allow_plain_http = true;  // a gateway on localhost or behind a private network
        c.connect_timeout = 10s;
        c.request_timeout = 60s;  // README: "stopped ... answering for a minute"
        c.max_response_bytes = 64 * 1024 * 1024;
        c.user_agent = std::string("segue-cli/") + segue::build::version;
        // Downloads write on this thread: a CLI has nothing else to keep responsive.
        c.run_blocking = [](std::function<void()> f) -> awaitable<void> {
            f();
            co_return;
        };
        return c;
    }

    net::request request(std::string method, const std::string& path) const {
        net::request r;
        r.method = std::move(method);
        r.url = o_.url + path;
        r.headers = {{"Authorization", "Bearer " + o_.key}, {"Accept", "application/json"}};
        return r;
    }

    // One request; a non-2xx answer or a network failure is a cli_error.
    awaitable<json::value> call(net::request r) {
        std::string what = r.method + " " + r.url;
        auto res = co_await http_.send(std::move(r));
        co_return answer_body(what, res);
    }
    // The JSON of a 2xx answer; anything else is a cli_error.
    json::value answer_body(const std::string& what, const net::result& res) const {
        if (!res.ok())
            throw cli_error{exit_unavailable, unreachable(res)};
        if (res.res.status / 100 != 2)
            throw http_error(res.res.status, res.res.body);
        auto body = parse_or_null(res.res.body);
        if (body.is_null())
            throw cli_error{exit_unavailable, what + ": the answer is not JSON"};
        return body;
    }
    awaitable<json::value> get(const std::string& path) { return call(request("GET", path)); }

    // `segue watch` of this task as this command line would run it again: the same output
    // directory and format.
    std::string watch_again() const {
        std::string c = "segue watch " + task_id_ + url_flag();
        if (!o_.out_dir.empty()) {
            c += " -o " + shell_word(o_.out_dir);
            if (o_.format != "mp3")
                c += " --format " + o_.format;
        }
        return c;
    }

    // What went wrong talking to the gateway: it was not reached (resolve, connect, TLS), or it
    // was and then stopped answering or broke the exchange.
    std::string unreachable(const net::result& res) const {
        const bool reached =
            res.request_sent ||
            (res.error != net::failure::resolve && res.error != net::failure::connect &&
             res.error != net::failure::tls && res.error != net::failure::refused_address);
        const std::string what = !reached ? "cannot reach " + o_.url
                                 : res.error == net::failure::timeout
                                     ? "no answer in time from " + o_.url
                                     : "the exchange with " + o_.url + " broke";
        return what + ": " + std::string(net::to_string(res.error)) +
               (res.message.empty() ? "" : " (" + res.message + ")");
    }

    // " --limit N" when the command line gave one (the next page's hint keeps it).
    std::string limit_flag() const {
        return o_.limit ? " --limit " + std::to_string(*o_.limit) : std::string();
    }
    // " --url URL" unless a hint run as printed reaches the same gateway without it ($SEGUE_URL,
    // else the default).
    std::string url_flag() const {
        const char* env = std::getenv("SEGUE_URL");
        std::string implied = env && *env ? env : "http://127.0.0.1:8080";
        while (implied.size() > 1 && implied.back() == '/')
            implied.pop_back();
        return o_.url == implied ? std::string() : " --url " + shell_word(o_.url);
    }

    awaitable<int> extend();
    awaitable<json::value> create_task();
    awaitable<int> watch(const std::string& id, json::value task);
    awaitable<json::value> follow(const std::string& id, json::value task);
    awaitable<json::array> download_outputs(const json::value& task);
    awaitable<json::object> download_one(const std::string& url, bool with_key,
                                         const fs::path& path, const std::string& label);
    int finish(const json::value& task, const json::array& downloads);
    awaitable<int> tasks();
    awaitable<int> cancel();
    awaitable<int> deliveries();
    awaitable<int> credits();
    void on_event(watch_state& w, const sse_event& e);

    asio::io_context& ioc_;
    options o_;
    metrics::registry metrics_;
    net::http_client http_;
    screen scr_;
    steady::time_point start_;

    // For Ctrl-C's message.
    enum class stage {
        other,
        uploading,
        awaiting_answer,
        task_known,
        downloading  // the task has ended; its outputs are being saved
    } stage_ = stage::other;
    std::string final_status_;  // the task's, once downloading
    std::string task_id_;
    std::string partial_file_;    // a download in progress (removed on Ctrl-C)
    bool already_final_ = false;  // watch found the task ended: "after <elapsed>" means nothing
};

// --- extend: upload ---

struct upload_state {
    session* s = nullptr;
    int fd = -1;
    std::string label;
    std::string head;  // the text fields and the file part's header
    std::string tail;  // the closing boundary
    int part = 0;      // 0: head, 1: the file (then the tail), 2: done
    std::uint64_t total = 0;
    std::uint64_t sent = 0;
    steady::time_point started = steady::now();
    steady::time_point drawn{};
    ~upload_state() {
        if (fd >= 0)
            ::close(fd);
    }
};

awaitable<std::string> next_upload_chunk(std::shared_ptr<upload_state> st) {
    std::string chunk;
    if (st->part == 0) {
        chunk = st->head;
        st->part = 1;
    } else if (st->part == 1) {
        chunk.resize(upload_chunk);
        ssize_t n;
        do
            n = ::read(st->fd, chunk.data(), chunk.size());
        while (n < 0 && errno == EINTR);
        if (n < 0)
            throw std::runtime_error(std::string("reading the song: ") + std::strerror(errno));
        chunk.resize(static_cast<std::size_t>(n));
        if (n == 0) {
            chunk = st->tail;
            st->part = 2;
            // All sent: from here a Ctrl-C cannot tell whether the task exists.
            st->s->stage_ = session::stage::awaiting_answer;
        }
    } else {
        co_return std::string();
    }
    st->sent += chunk.size();
    const auto now = steady::now();
    if (st->part == 2 || now - st->drawn >= 100ms) {
        st->drawn = now;
        auto& scr = st->s->scr_;
        if (scr.enabled())
            scr.status(progress_line(st->label, st->sent, st->total,
                                     std::chrono::duration<double>(now - st->started).count(),
                                     terminal_width(STDERR_FILENO) - 1));
    }
    co_return chunk;
}

std::string audio_content_type(const fs::path& p) {
    auto ext = p.extension().string();
    for (auto& c : ext)
        c = static_cast<char>(std::tolower(static_cast<unsigned char>(c)));
    if (ext == ".mp3")
        return "audio/mpeg";
    if (ext == ".wav")
        return "audio/wav";
    if (ext == ".flac")
        return "audio/flac";
    if (ext == ".ogg" || ext == ".oga")
        return "audio/ogg";
    return "application/octet-stream";
}

// A quoted-string for a multipart header: quotes, backslashes and line breaks would end it.
std::string quoted_filename(const std::string& name) {
    std::string q;
    for (char c : name) {
        if (c == '"' || c == '\\' || c == '\r' || c == '\n')
            q.push_back('_');
        else
            q.push_back(c);
    }
    return q;
}

awaitable<json::value> session::create_task() {
    auto r = request("POST", "/v1/extensions");
    r.headers.emplace_back("Idempotency-Key", o_.idempotency_key.empty() ? util::random_id("cli_")
                                                                         : o_.idempotency_key);
    r.idempotent = true;  // the key makes a replay harmless
    const bool from_url = o_.source.starts_with("http://") || o_.source.starts_with("https://");
    if (from_url) {
        // A URL source goes as JSON: the numbers as numbers, metadata as an object.
        json::object body;
        body["audio_url"] = o_.source;
        for (const auto& [field, value] : o_.fields) {
            if (field == "extend_after" || field == "length" || field == "num_outputs") {
                body[field] = parse_or_null(value);
            } else if (field == "metadata") {
                body[field] = parse_or_null(value);  // an object: checked with the options
            } else {
                body[field] = value;
            }
        }
        r.headers.emplace_back("Content-Type", "application/json");
        r.body = json::serialize(body);
        stage_ = stage::awaiting_answer;
        co_return co_await call(std::move(r));
    }

    const fs::path path(o_.source);
    auto st = std::make_shared<upload_state>();
    st->s = this;
    st->fd = ::open(path.c_str(), O_RDONLY | O_CLOEXEC);
    std::error_code ec;
    // A song is a regular file: its size is the upload's Content-Length.
    const bool regular = st->fd >= 0 && fs::is_regular_file(path, ec);
    const auto size = regular ? fs::file_size(path, ec) : 0;
    if (st->fd < 0 || ec || !regular) {
        const std::string why = st->fd < 0               ? std::strerror(errno)
                                : ec                     ? ec.message()
                                : fs::is_directory(path) ? "is a directory"
                                                         : "not a regular file";
        throw cli_error{exit_usage, "cannot read " + o_.source + ": " + why};
    }
    const std::string boundary = "segue-cli-" + util::random_id("");
    std::string head;
    for (const auto& [field, value] : o_.fields)
        head += "--" + boundary + "\r\nContent-Disposition: form-data; name=\"" + field +
                "\"\r\n\r\n" + value + "\r\n";
    head += "--" + boundary +
            "\r\nContent-Disposition: form-data; name=\"audio_file\"; filename=\"" +
            quoted_filename(path.filename().string()) +
            "\"\r\nContent-Type: " + audio_content_type(path) + "\r\n\r\n";
    st->tail = "\r\n--" + boundary + "--\r\n";
    st->head = std::move(head);
    st->total = st->head.size() + size + st->tail.size();
    st->label = "uploading " + path.filename().string();
    r.headers.emplace_back("Content-Type", "multipart/form-data; boundary=" + boundary);
    r.body_size = st->total;
    r.body_source = [st]() { return next_upload_chunk(st); };
    r.timeout = upload_timeout;
    r.stall_timeout = stall_timeout;
    stage_ = stage::uploading;
    const std::string what = r.method + " " + r.url;
    auto res = co_await http_.send(std::move(r));
    scr_.clear();
    if (res.ok())
        scr_.line("uploaded " + path.filename().string() + " (" + format_bytes(size) + ") in " +
                  format_elapsed(std::chrono::duration_cast<std::chrono::milliseconds>(
                      steady::now() - st->started)));
    co_return answer_body(what, res);
}

awaitable<int> session::extend() {
    auto task = co_await create_task();
    task_id_ = text(task, "id");
    if (task_id_.empty())
        throw cli_error{exit_unavailable, "the server's answer has no task id"};
    stage_ = stage::task_known;
    if (!o_.wait) {
        if (o_.json) {
            print_json(json::object{{"task", task}, {"downloads", json::array()}});
        } else {
            print_out(task_id_ + " " + text(task, "status") + "\n");
            if (!o_.quiet)
                std::fprintf(stderr, "follow it: %s\n", watch_again().c_str());
        }
        co_return exit_ok;
    }
    scr_.line("task " + task_id_ + " created (" + text(task, "status") + ")");
    co_return co_await watch(task_id_, std::move(task));
}

// --- watch: Server-Sent Events ---

struct watch_state {
    session* s = nullptr;
    std::string id;
    std::string status;
    std::string provider;
    std::string note;  // the latest retry or connection trouble
    int ready = 0;
    int total = 0;
    bool final_seen = false;
    bool got_data = false;  // on the current connection
    bool done = false;
    int spin = 0;
    sse_parser parser;
    std::string last_id;
    std::shared_ptr<asio::steady_timer> ticker;

    std::string status_line() {
        static constexpr char spinner[] = {'|', '/', '-', '\\'};
        std::string l(1, spinner[spin++ % 4]);
        l += " " + status;
        if (!provider.empty())
            l += " (" + provider + ")";
        if (total > 0)
            l += "  outputs " + std::to_string(ready) + "/" + std::to_string(total);
        l += "  " + s->elapsed();
        if (!note.empty())
            l += "  " + note;
        return l;
    }
};

awaitable<void> tick(std::shared_ptr<watch_state> w) {
    while (!w->done) {
        w->s->scr_.status(w->status_line());
        w->ticker->expires_after(250ms);
        co_await w->ticker->async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

awaitable<bool> on_sse_chunk(std::shared_ptr<watch_state> w, std::string_view chunk) {
    if (!chunk.empty() && !w->got_data) {
        w->got_data = true;
        w->note.clear();  // connected again
    }
    for (const auto& e : w->parser.feed(chunk))
        w->s->on_event(*w, e);
    co_return true;
}

void session::on_event(watch_state& w, const sse_event& e) {
    w.last_id = e.id;
    const auto ev = parse_or_null(e.data);
    const auto& data = member(ev, "data") ? *member(ev, "data") : ev;
    if (auto st = text(data, "status"); !st.empty())
        w.status = st;
    if (auto p = text(data, "provider"); !p.empty())
        w.provider = p;
    std::string type = e.type;
    if (type.starts_with("extension."))
        type = type.substr(10);
    std::string line;
    if (type == "submitted") {
        w.note.clear();
        line = "submitted to " + w.provider;
    } else if (type == "retrying") {
        w.note = "retrying: " + text(data, "reason");
        line = w.note;
    } else if (type == "output.ready") {
        ++w.ready;
        std::string secs;
        if (const auto* out = member(data, "output"))
            if (const auto* audio = member(*out, "audio"))
                secs = seconds_text(member(*audio, "duration"));
        line = "output " + text(data, "index") + " ready" + (secs.empty() ? "" : " (" + secs + ")");
    } else if (type == "output.failed") {
        const auto* out = member(data, "output");
        line = "output " + text(data, "index") + " failed" +
               (out ? ": " + text(*out, "error") : std::string());
    } else if (type == "credits.refunded") {
        line = "credits refunded: " + text(data, "amount");
    } else if (type == "succeeded" || type == "partially_succeeded" || type == "failed" ||
               type == "canceled") {
        w.final_seen = true;
        line = type;
        if (const auto* err = member(data, "error"); err && err->is_object())
            line += ": " + text(*err, "message");
    } else {
        line = type;  // lyrics.ready, cover.ready, queued...
        std::replace(line.begin(), line.end(), '.', ' ');
    }
    scr_.line("[" + elapsed() + "] " + line, w.status_line());
}

awaitable<json::value> session::follow(const std::string& id, json::value task) {
    auto w = std::make_shared<watch_state>();
    w->s = this;
    w->id = id;
    w->status = text(task, "status");
    w->provider = text(task, "provider");
    if (const auto* req = member(task, "request"); req)
        if (const auto* n = member(*req, "num_outputs"); n && n->is_number())
            w->total = n->to_number<int>();
    if (const auto* outs = member(task, "outputs"); outs && outs->is_array())
        for (const auto& o : outs->as_array())
            w->ready += text(o, "status") == "ready";
    if (is_final(w->status)) {
        already_final_ = true;
        co_return task;
    }

    w->ticker = std::make_shared<asio::steady_timer>(ioc_);
    if (scr_.enabled())
        asio::co_spawn(ioc_, tick(w), asio::detached);
    struct stop_ticker {
        std::shared_ptr<watch_state> w;
        ~stop_ticker() {
            w->done = true;
            w->ticker->cancel();
        }
    } stopper{w};

    std::optional<steady::time_point> trouble_since;
    auto retry_delay = 1000ms;
    for (;;) {
        auto r = request("GET", "/v1/extensions/" + id + "/events");
        for (auto& [name, value] : r.headers)
            if (name == "Accept")
                value = "text/event-stream";
        if (!w->last_id.empty())
            r.headers.emplace_back("Last-Event-ID", w->last_id);
        r.timeout = sse_window;
        r.stream_chunks = true;
        w->parser = sse_parser();
        w->got_data = false;
        auto res = co_await http_.download(
            std::move(r), [w](std::string_view c) { return on_sse_chunk(w, c); },
            max_download_bytes);
        if (w->parser.retry_ms())
            retry_delay =
                std::chrono::milliseconds(std::clamp(*w->parser.retry_ms(), 100L, 30000L));
        if (w->got_data)
            trouble_since.reset();
        std::optional<net::result> trouble;
        if (res.ok() && res.res.status != 200) {
            if (!transient(res))
                throw http_error(res.res.status, res.res.body);
            trouble = std::move(res);
        } else if (!res.ok() && res.error != net::failure::timeout) {
            trouble = std::move(res);
        }
        if (!trouble) {
            // The stream ended: after the final event, at the end of our window, or as the
            // server drained. The task says whether there is more to follow.
            auto got = co_await http_.send(request("GET", "/v1/extensions/" + id));
            if (!transient(got)) {
                task = answer_body("GET /v1/extensions/" + id, got);
                if (is_final(text(task, "status")))
                    co_return task;
                trouble_since.reset();
                w->note.clear();
                continue;
            }
            trouble = std::move(got);
        }
        // The gateway is away (restarting, a broken connection, overloaded): try again, with
        // Last-Event-ID, for a while.
        if (!trouble_since)
            trouble_since = steady::now();
        const std::string why = trouble->ok() ? "HTTP " + std::to_string(trouble->res.status)
                                              : std::string(net::to_string(trouble->error));
        if (steady::now() - *trouble_since > reconnect_budget)
            throw cli_error{
                exit_unavailable,
                (trouble->ok() ? http_error(trouble->res.status, trouble->res.body).message
                               : unreachable(*trouble)) +
                    "; task " + id + " keeps running: " + watch_again()};
        w->note = "reconnecting (" + why + ")";
        asio::steady_timer pause(ioc_, retry_delay);
        co_await pause.async_wait(asio::as_tuple(asio::use_awaitable));
    }
}

awaitable<int> session::watch(const std::string& id, json::value task) {
    task_id_ = id;
    stage_ = stage::task_known;
    if (task.is_null())
        task = co_await get("/v1/extensions/" + id);
    task = co_await follow(id, std::move(task));
    scr_.clear();
    json::array downloads;
    if (!o_.out_dir.empty()) {
        // A download that fails (the disk, the network) leaves the task as it is: say which task,
        // and how to fetch its outputs again.
        std::optional<cli_error> failed;
        stage_ = stage::downloading;
        final_status_ = text(task, "status");
        try {
            downloads = co_await download_outputs(task);
        } catch (const cli_error& e) {
            failed = e;
        }
        if (failed) {
            // The server's answer stays with the error (--json prints it). A 410 is a file
            // retention deleted: no second try brings it back.
            failed->message +=
                "\n  task " + id + " has ended (" + text(task, "status") + "); " +
                (failed->status == 410 ? std::string("that file has expired (deleted by the "
                                                     "server's retention) and cannot be "
                                                     "downloaded again")
                                       : "download its outputs again: " + watch_again());
            throw *failed;
        }
    }
    co_return finish(task, downloads);
}

// --- downloads ---

struct file_sink {
    std::FILE* f = nullptr;
    std::uint64_t bytes = 0;
    session* s = nullptr;
    std::string label;
    steady::time_point drawn{};
    ~file_sink() {
        if (f)
            std::fclose(f);
    }
};

awaitable<bool> write_chunk(std::shared_ptr<file_sink> st, std::string_view chunk, screen* scr) {
    if (chunk.empty()) {
        const bool ok = std::fflush(st->f) == 0 && std::fclose(st->f) == 0;
        st->f = nullptr;
        co_return ok;
    }
    if (std::fwrite(chunk.data(), 1, chunk.size(), st->f) != chunk.size())
        co_return false;
    st->bytes += chunk.size();
    if (scr->enabled() && steady::now() - st->drawn > 100ms) {
        st->drawn = steady::now();
        scr->status(st->label + "  " + format_bytes(st->bytes));
    }
    co_return true;
}

awaitable<json::object> session::download_one(const std::string& url, bool with_key,
                                              const fs::path& path, const std::string& label) {
    net::request r;
    r.url = url;
    if (with_key)
        r.headers = {{"Authorization", "Bearer " + o_.key}};
    r.timeout = download_timeout;
    r.stall_timeout = stall_timeout;
    const std::string part = path.string() + ".part";
    auto st = std::make_shared<file_sink>();
    st->f = std::fopen(part.c_str(), "wb");
    if (!st->f)
        throw cli_error{exit_usage, "cannot write " + part + ": " + std::strerror(errno)};
    st->label = label;
    partial_file_ = part;
    screen* scr = &scr_;
    auto res = co_await http_.download(
        std::move(r), [st, scr](std::string_view c) { return write_chunk(st, c, scr); },
        max_download_bytes);
    if (st->f) {
        std::fclose(st->f);
        st->f = nullptr;
    }
    std::error_code ec;
    if (!res.ok() || res.res.status / 100 != 2) {
        fs::remove(part, ec);
        partial_file_.clear();
        if (!res.ok())
            throw cli_error{exit_unavailable,
                            "downloading " + url + ": " + std::string(net::to_string(res.error)) +
                                (res.message.empty() ? "" : " (" + res.message + ")")};
        throw http_error(res.res.status, res.res.body);
    }
    fs::rename(part, path, ec);
    partial_file_.clear();
    if (ec)
        throw cli_error{exit_usage, "cannot write " + path.string() + ": " + ec.message()};
    co_return json::object{{"path", path.string()}, {"bytes", st->bytes}};
}

awaitable<json::array> session::download_outputs(const json::value& task) {
    json::array downloads;  // into o_.out_dir, created and checked by run() before anything
    const auto* outs = member(task, "outputs");
    if (!outs || !outs->is_array())
        co_return downloads;
    for (const auto& out : outs->as_array()) {
        if (text(out, "status") != "ready")
            continue;
        const auto* audio = member(out, "audio");
        if (!audio)
            continue;
        auto has = [&](std::string_view f) {
            return !text(*audio, std::string(f) + "_file_id").empty() ||
                   !text(*audio, std::string(f) + "_url").empty();
        };
        std::vector<std::string> formats;
        if (o_.format == "both") {
            for (std::string f : {"mp3", "wav"})
                if (has(f))
                    formats.push_back(f);
        } else {
            const std::string other = o_.format == "mp3" ? "wav" : "mp3";
            if (has(o_.format))
                formats.push_back(o_.format);
            else if (has(other))
                formats.push_back(other);
        }
        const std::string index = text(out, "index");
        for (const auto& f : formats) {
            // Files the gateway stores are fetched from the gateway the CLI talks to (the task's
            // URLs are built on the server's public_base_url, which may be empty or internal);
            // a provider's own URL is fetched as is, without our key.
            std::string url;
            bool with_key = true;
            if (auto id = text(*audio, f + "_file_id"); !id.empty()) {
                url = o_.url + "/v1/files/" + id;
            } else {
                url = text(*audio, f + "_url");
                if (url.starts_with("/"))
                    url = o_.url + url;
                else
                    with_key = false;
            }
            const fs::path path = fs::path(o_.out_dir) / (task_id_ + "-" + index + "." + f);
            auto d = co_await download_one(url, with_key, path,
                                           "downloading output " + index + " (" + f + ")");
            d["index"] = out.as_object().at("index");
            d["format"] = f;
            if (const auto* dur = member(*audio, "duration"))
                d["duration"] = *dur;
            scr_.clear();
            scr_.line("saved " + path.string() + " (" +
                      format_bytes(d["bytes"].to_number<std::uint64_t>()) + ")");
            downloads.emplace_back(std::move(d));
        }
    }
    co_return downloads;
}

int session::finish(const json::value& task, const json::array& downloads) {
    const std::string status = text(task, "status");
    if (o_.json) {
        print_json(json::object{{"task", task}, {"downloads", downloads}});
    } else {
        std::string s = text(task, "id") + " " + status;
        if (auto p = text(task, "provider"); !p.empty())
            s += " (" + p + ")";
        if (!already_final_)
            s += " after " + elapsed();
        if (const auto* err = member(task, "error"); err && err->is_object())
            s += ": " + text(*err, "message") + " [" + text(*err, "code") + "]";
        s += "\n" + outputs_summary(task, downloads);
        print_out(s);
    }
    return status == "succeeded" ? exit_ok : exit_task_failed;
}

// --- listings ---

// A query string value, percent-encoded (ids and names come from the command line).
std::string query_value(std::string_view v) {
    static constexpr char hex[] = "0123456789ABCDEF";
    std::string out;
    for (unsigned char c : v) {
        if (std::isalnum(c) || c == '-' || c == '_' || c == '.' || c == '~') {
            out.push_back(static_cast<char>(c));
        } else {
            out.push_back('%');
            out.push_back(hex[c >> 4]);
            out.push_back(hex[c & 15]);
        }
    }
    return out;
}

struct column {
    std::string title;
    std::size_t width;  // 0: the last column, unpadded
    std::function<std::string(const json::value&)> value;
};

column field_column(std::string title, std::size_t width, std::string field) {
    return {std::move(title), width, [field](const json::value& row) { return text(row, field); }};
}

// A listing's rows ("data") as a table on stdout (or `none` if empty); when the server has more,
// stderr says how to page on.
void print_table(const json::value& body, const std::vector<column>& columns,
                 const std::string& none, const std::string& next_page) {
    auto cell = [](std::string v, std::size_t width) {
        return width ? pad(std::move(v), width) : v;
    };
    std::string s;
    for (const auto& c : columns)
        s += cell(c.title, c.width);
    s += "\n";
    std::string last;
    if (const auto* data = member(body, "data"); data && data->is_array())
        for (const auto& row : data->as_array()) {
            last = text(row, "id");
            for (const auto& c : columns)
                s += cell(c.value(row), c.width);
            s += "\n";
        }
    print_out(last.empty() ? none + "\n" : s);
    if (const auto* more = member(body, "has_more"); more && more->is_bool() && more->as_bool())
        std::fprintf(stderr, "more: %s --before %s\n", next_page.c_str(), last.c_str());
}

awaitable<int> session::tasks() {
    std::string q = "?limit=" + std::to_string(o_.limit.value_or(20));
    if (!o_.before.empty())
        q += "&before=" + query_value(o_.before);
    auto body = co_await get("/v1/extensions" + q);
    if (o_.json) {
        print_json(body);
        co_return exit_ok;
    }
    print_table(
        body,
        {field_column("ID", 32, "id"), field_column("STATUS", 21, "status"),
         field_column("PROVIDER", 12, "provider"), field_column("CREATED", 0, "created_at")},
        "no tasks", "segue tasks" + url_flag() + limit_flag());
    co_return exit_ok;
}

awaitable<int> session::cancel() {
    auto task = co_await call(request("POST", "/v1/extensions/" + o_.id + "/cancel"));
    if (o_.json)
        print_json(task);
    else
        print_out(text(task, "id") + " " + text(task, "status") + "\n");
    co_return exit_ok;
}

awaitable<int> session::deliveries() {
    if (o_.redeliver && o_.id.empty()) {
        // All of a task's dead (or delivered) deliveries, pending together: sent in order.
        auto r = request("POST", "/v1/deliveries/redeliver");
        json::object body{{"task_id", o_.task_id}};
        if (!o_.status.empty())
            body["status"] = o_.status;
        r.headers.push_back({"Content-Type", "application/json"});
        r.body = json::serialize(body);
        auto sent = co_await call(std::move(r));
        if (o_.json) {
            print_json(sent);
            co_return exit_ok;
        }
        const auto* data = member(sent, "data");
        const std::size_t n = data && data->is_array() ? data->as_array().size() : 0;
        print_out(
            std::to_string(n) + " deliver" + (n == 1 ? "y" : "ies") + " of " + o_.task_id +
            " pending again" +
            (n ? ", in order"
               : " (none was " + (o_.status.empty() ? std::string("dead") : o_.status) + ")") +
            "\n");
        co_return exit_ok;
    }
    if (o_.redeliver) {
        auto d = co_await call(request("POST", "/v1/deliveries/" + o_.id + "/redeliver"));
        if (o_.json)
            print_json(d);
        else
            print_out(text(d, "id") + " " + text(d, "status") + ", next attempt at " +
                      text(d, "next_attempt_at") + "\n");
        co_return exit_ok;
    }
    std::string q = "?limit=" + std::to_string(o_.limit.value_or(50));
    if (!o_.status.empty())
        q += "&status=" + o_.status;
    if (!o_.task_id.empty())
        q += "&task_id=" + query_value(o_.task_id);
    if (!o_.before.empty())
        q += "&before=" + query_value(o_.before);
    auto body = co_await get("/v1/deliveries" + q);
    if (o_.json) {
        print_json(body);
        co_return exit_ok;
    }
    auto last_outcome = [](const json::value& d) {
        std::string outcome = text(d, "last_status");
        if (auto e = text(d, "last_error"); !e.empty())
            outcome += (outcome.empty() ? "" : " ") + e;
        return outcome;
    };
    print_table(body,
                {field_column("ID", 32, "id"),
                 field_column("STATUS", 11, "status"),
                 field_column("ATTEMPTS", 10, "attempts"),
                 field_column("TASK", 32, "task_id"),
                 {"LAST", 0, last_outcome}},
                o_.status.empty() ? "no deliveries" : "no " + o_.status + " deliveries",
                "segue deliveries" + url_flag() +
                    (o_.status.empty() ? "" : " --status " + o_.status) +
                    (o_.task_id.empty() ? "" : " --task " + shell_word(o_.task_id)) + limit_flag());
    co_return exit_ok;
}

awaitable<int> session::credits() {
    auto body = co_await get("/v1/credits?limit=" + std::to_string(o_.limit.value_or(10)));
    if (o_.json) {
        print_json(body);
        co_return exit_ok;
    }
    std::string s = "tenant " + text(body, "tenant") + ": " + text(body, "available") +
                    " credits available (balance " + text(body, "balance") + ", held " +
                    text(body, "held") + ", captured " + text(body, "captured") + ", granted " +
                    text(body, "granted") + ")\n";
    if (const auto* entries = member(body, "entries");
        entries && entries->is_array() && !entries->as_array().empty()) {
        s += "latest entries:\n";
        for (const auto& e : entries->as_array())
            s += "  " + pad(text(e, "created_at"), 26) + pad(text(e, "kind"), 9) +
                 pad(text(e, "amount"), 10) + text(e, "task_id") +
                 (text(e, "note").empty() ? "" : "  " + text(e, "note")) + "\n";
    }
    print_out(s);
    co_return exit_ok;
}

awaitable<int> session::run() {
    const auto& c = o_.command;
    // An output directory that cannot be written is a usage error before anything is created
    // or uploaded, not after the task has run.
    if (!o_.out_dir.empty()) {
        std::error_code ec;
        fs::create_directories(o_.out_dir, ec);
        if (ec)
            throw cli_error{exit_usage, "cannot create " + o_.out_dir + ": " + ec.message()};
        if (!fs::is_directory(o_.out_dir, ec))
            throw cli_error{exit_usage, o_.out_dir + " is not a directory"};
        if (::access(o_.out_dir.c_str(), W_OK | X_OK) != 0)
            throw cli_error{exit_usage,
                            "cannot write to " + o_.out_dir + ": " + std::strerror(errno)};
    }
    if (c == "extend")
        co_return co_await extend();
    if (c == "watch")
        co_return co_await watch(o_.id, json::value(nullptr));
    if (c == "tasks")
        co_return co_await tasks();
    if (c == "cancel")
        co_return co_await cancel();
    if (c == "deliveries")
        co_return co_await deliveries();
    co_return co_await credits();
}

void session::interrupted() {
    scr_.clear();
    if (!partial_file_.empty())
        ::unlink(partial_file_.c_str());
    std::string msg;
    switch (stage_) {
        case stage::uploading:
            msg = "interrupted during the upload: no task was created\n";
            break;
        case stage::awaiting_answer:
            msg = "interrupted before the server answered: the task may exist (segue tasks" +
                  url_flag() + ")\n";
            break;
        case stage::task_known:
            msg = "interrupted: task " + task_id_ + " keeps running on the server\n" +
                  "  watch it again: " + watch_again() + "\n" + "  or cancel it:   segue cancel " +
                  task_id_ + url_flag() + "\n";
            break;
        case stage::downloading:
            msg = "interrupted while saving the outputs: task " + task_id_ + " has ended (" +
                  final_status_ + ")\n  download them again: " + watch_again() + "\n";
            break;
        case stage::other:
            msg = "interrupted\n";
            break;
    }
    if (o_.json) {
        std::string first = msg.substr(0, msg.find('\n'));
        print_json(error_document({exit_interrupted, first}, task_id_));
    }
    std::fflush(stdout);
    std::fputs(msg.c_str(), stderr);
    std::fflush(stderr);
    // Nothing is left to tidy: no task is touched, a partial download is removed above.
    std::_Exit(exit_interrupted);
}

}  // namespace

int run_command(const std::vector<std::string_view>& args) {
    auto parsed = parse_options(args, [](const std::string& name) -> std::optional<std::string> {
        if (const char* v = std::getenv(name.c_str()))
            return std::string(v);
        return std::nullopt;
    });
    if (!parsed.help.empty()) {
        print_out(parsed.help);
        return exit_ok;
    }
    if (!parsed.opts) {
        std::fprintf(stderr, "%s\n", parsed.error.c_str());
        // A script that asked for --json gets the usage error there too.
        if (std::find(args.begin(), args.end(), "--json") != args.end())
            print_json(error_document({parsed.code, parsed.error}, {}));
        return parsed.code;
    }
    // The gateway's logs go to stdout as JSON lines: here stdout is the command's output.
    log::set_fd(STDERR_FILENO);
    log::set_level(log::level::error);
    ::signal(SIGPIPE, SIG_IGN);

    asio::io_context ioc(1);
    session s(ioc, std::move(*parsed.opts));
    asio::signal_set signals(ioc, SIGINT, SIGTERM);
    signals.async_wait([&s](boost::system::error_code ec, int) {
        if (!ec)
            s.interrupted();
    });
    int code = exit_unavailable;
    asio::co_spawn(ioc, s.run(), [&](std::exception_ptr e, int rc) {
        // Done: what is left (idle keep-alive connections and their sweep timer) is not waited
        // for.
        ioc.stop();
        code = rc;
        if (!e)
            return;
        s.clear_screen();
        try {
            std::rethrow_exception(e);
        } catch (const cli_error& err) {
            code = err.code;
            std::fprintf(stderr, "segue: %s\n", err.message.c_str());
            if (s.json_output())
                print_json(error_document(err, s.task_id()));
        } catch (const std::exception& err) {
            code = exit_unavailable;
            std::fprintf(stderr, "segue: %s\n", err.what());
            if (s.json_output())
                print_json(error_document({code, err.what()}, s.task_id()));
        }
    });
    ioc.run();
    if (stdout_errno != 0) {
        const std::string task = s.task_hint();
        std::fprintf(stderr, "segue: cannot write the result to stdout: %s%s\n",
                     std::strerror(stdout_errno), task.empty() ? "" : ("; " + task).c_str());
        if (code == exit_ok || code == exit_task_failed)
            code = exit_usage;
    }
    return code;
}

std::string outputs_summary(const json::value& task, const json::array& downloads) {
    std::string s;
    for (const auto& d : downloads) {
        std::string secs = seconds_text(member(d, "duration"));
        s += "  " + text(d, "path") + (secs.empty() ? "" : "  " + secs) + "\n";
    }
    const auto* outs = member(task, "outputs");
    if (!outs || !outs->is_array())
        return s;
    for (const auto& out : outs->as_array()) {
        const std::string status = text(out, "status");
        // With files downloaded, those say the ready outputs; the others are said here.
        if (!downloads.empty() && status == "ready")
            continue;
        const auto* audio = member(out, "audio");
        std::string url = audio ? text(*audio, "mp3_url") : std::string();
        if (url.empty() && audio)
            url = text(*audio, "wav_url");
        // Why an output failed (an input too short for extend_after, a provider's reason): a
        // string, or an object with a message.
        std::string why;
        if (const auto* e = member(out, "error"))
            why = e->is_string() ? std::string(e->as_string()) : text(*e, "message");
        s += "  output " + text(out, "index") + ": " + status + (why.empty() ? "" : ": " + why) +
             (url.empty() || !downloads.empty() ? "" : "  " + url) + "\n";
    }
    return s;
}

}  // namespace segue::client

#pragma once
// Test support: start the real `segue` binary (or a fake provider) as a child process on
// loopback port 0, and talk HTTP/1.1 to it over plain blocking sockets.

#include <sys/types.h>

#include <chrono>
#include <cstdint>
#include <deque>
#include <functional>
#include <map>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

namespace segue::test {

// A temporary directory removed with the object.
class temp_dir {
  public:
    temp_dir();
    ~temp_dir();
    const std::string& path() const { return path_; }
    std::string file(const std::string& name) const { return path_ + "/" + name; }
    std::string write(const std::string& name, const std::string& content) const;

  private:
    std::string path_;
};

class child_process {
  public:
    child_process() = default;
    ~child_process();  // SIGKILLs a child still running
    child_process(const child_process&) = delete;
    child_process& operator=(const child_process&) = delete;

    // Starts `argv[0]` with the given arguments; stdout and stderr go to `log_path`.
    void start(const std::vector<std::string>& argv, const std::string& log_path,
               const std::map<std::string, std::string>& env = {});
    bool running();
    void signal(int sig);
    // Waits for exit; returns the exit code, 128+signal if killed, or nullopt on timeout.
    std::optional<int> wait(std::chrono::milliseconds timeout);
    pid_t pid() const { return pid_; }

  private:
    // Once the child is reaped: a sanitizer report in what it logged since the last check fails
    // the running test (TSAN_OPTIONS from the test's environment reaches every child).
    void check_sanitizer_reports();

    pid_t pid_ = -1;
    std::optional<int> status_;
    std::string log_path_;
    std::uintmax_t log_checked_ = 0;  // bytes of log_path_ already checked
};

// The sanitizer report (from its "WARNING: ThreadSanitizer" line, capped) in `output`, or an
// empty string.
std::string sanitizer_report(const std::string& output);

// The segue binary started with a config, listening on 127.0.0.1:<ephemeral>.
class segue_process {
  public:
    // `config_yaml` is written to a file in a temporary directory ("@DIR@" in it names that
    // directory; without a storage section, storage goes there too). Waits (bounded) until the
    // port file appears; throws std::runtime_error with the log on failure.
    // `binary`: another build of segue (e.g. one with test providers); "" = segue_binary().
    explicit segue_process(const std::string& config_yaml,
                           const std::map<std::string, std::string>& env = {},
                           const std::string& binary = "");
    std::uint16_t port() const { return port_; }
    child_process& proc() { return proc_; }
    std::string log() const;
    // The log once it contains `needle` (lines are written by the gateway's log thread a few
    // milliseconds after they are logged), or as it is after `limit`.
    std::string log_with(const std::string& needle,
                         std::chrono::milliseconds limit = std::chrono::seconds(10)) const;
    const temp_dir& dir() const { return dir_; }

  private:
    temp_dir dir_;
    child_process proc_;
    std::uint16_t port_ = 0;
};

std::string segue_binary();
// A port that was free on 127.0.0.1 a moment ago (for processes that must keep one port across a
// restart).
std::uint16_t free_port();
// A socket listening on 127.0.0.1 that nobody accepts from or reads (a port in use, a peer
// that stalls): its fd (close it to stop) and port; fd -1 if it could not be made.
struct held_listener {
    int fd = -1;
    std::uint16_t port = 0;
};
held_listener hold_loopback_port();
// Waits (bounded) for a port file as written by `--port-file`; 0 on timeout.
std::uint16_t wait_port_file(const std::string& path,
                             std::chrono::milliseconds limit = std::chrono::seconds(10));
// Runs a command to completion; returns exit code and combined output.
std::pair<int, std::string> run_command(const std::vector<std::string>& argv,
                                        const std::string& stdin_data = {});

struct http_response {
    int status = 0;
    std::string reason;
    std::multimap<std::string, std::string> headers;  // lower-case names
    std::string body;
    std::optional<std::string> header(const std::string& lower_name) const;
};

// A blocking HTTP/1.1 connection with a receive timeout.
class http_connection {
  public:
    explicit http_connection(std::uint16_t port,
                             std::chrono::milliseconds timeout = std::chrono::seconds(10));
    ~http_connection();
    http_connection(const http_connection&) = delete;
    http_connection& operator=(const http_connection&) = delete;

    bool send_raw(const std::string& bytes);
    // Reads one response (Content-Length or chunked or until close). nullopt on close/timeout.
    // 1xx interim responses are skipped unless skip_interim is false.
    std::optional<http_response> read_response(bool skip_interim = true);
    // Reads one response, handing its body to `on_body` piece by piece as it arrives (each chunk
    // of a chunked body: a Server-Sent Events stream); the response it returns has no body.
    // nullopt on close or timeout before the body ended.
    std::optional<http_response> read_streaming(
        const std::function<void(std::string_view)>& on_body);
    // True if the peer has closed the connection (read returns 0 or an error) within `wait`.
    bool closed_by_peer(std::chrono::milliseconds wait);
    // True if something (data or the close) can be read within `wait`.
    bool readable(std::chrono::milliseconds wait);
    std::optional<http_response> request(const std::string& method, const std::string& target,
                                         const std::string& body = {},
                                         const std::vector<std::string>& headers = {});

  private:
    int fd_ = -1;
    bool head_ = false;  // the last request was HEAD: its response has no body
    std::string buffer_;
    // For the contract log: the request line of each request sent whose response is not read
    // yet (method, target), oldest first.
    std::deque<std::pair<std::string, std::string>> sent_;
    bool fill();
    std::optional<http_response> read_head(bool skip_interim = true);
    bool read_body(const http_response& r, const std::function<void(std::string_view)>& on_body);
    // The answer to sent_.front() (nullptr: none came) goes to the contract log.
    void record(const http_response* r);
};

// One-shot convenience: a fresh connection, one request.
std::optional<http_response> http_request(std::uint16_t port, const std::string& method,
                                          const std::string& target, const std::string& body = {},
                                          const std::vector<std::string>& headers = {});

}  // namespace segue::test

namespace segue::test {

// A multipart/form-data body as curl -F would send it.
struct form_part {
    std::string name;
    std::string value;
    std::string filename;  // set for file parts
    std::string content_type = "application/octet-stream";
};
std::string multipart_body(const std::vector<form_part>& parts, const std::string& boundary);

std::string read_file(const std::string& path);

// The value of one series in a Prometheus text exposition (`name` or `name{labels}`, exactly as
// exposed); -1 if it is not there.
double metric_value(const std::string& exposition, const std::string& series);

// A field of /proc/self/status in KiB ("VmRSS", "VmHWM"); 0 if absent.
std::uint64_t status_kib(const std::string& field);
// Resets the peak resident set (VmHWM) to the current one; false where the kernel cannot.
bool reset_peak_rss();

}  // namespace segue::test

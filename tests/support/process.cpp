#include "tests/support/process.hpp"
#include "tests/support/contract_log.hpp"
#include "tests/support/pg.hpp"

#include <arpa/inet.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <signal.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include <gtest/gtest.h>

#include <algorithm>
#include <cerrno>
#include <cstdlib>
#include <cstring>
#include <filesystem>
#include <fstream>
#include <regex>
#include <sstream>
#include <stdexcept>
#include <thread>

namespace segue::test {

namespace fs = std::filesystem;
using namespace std::chrono_literals;

temp_dir::temp_dir() {
    std::string tmpl = (fs::temp_directory_path() / "segue-test-XXXXXX").string();
    if (!::mkdtemp(tmpl.data()))
        throw std::runtime_error("mkdtemp failed");
    path_ = tmpl;
}

temp_dir::~temp_dir() {
    std::error_code ec;
    fs::remove_all(path_, ec);
}

std::string temp_dir::write(const std::string& name, const std::string& content) const {
    auto p = file(name);
    std::ofstream out(p, std::ios::binary | std::ios::trunc);
    out << content;
    return p;
}

child_process::~child_process() {
    if (pid_ > 0 && !status_) {
        ::kill(pid_, SIGKILL);
        int st = 0;
        ::waitpid(pid_, &st, 0);
        check_sanitizer_reports();
    }
}

std::string sanitizer_report(const std::string& output) {
    // halt_on_error stops a child at its first report; "ThreadSanitizer: " also covers its
    // FATAL errors (a failed start-up is a failed test too).
    auto at = output.find("WARNING: ThreadSanitizer");
    if (at == std::string::npos)
        at = output.find("FATAL: ThreadSanitizer");
    if (at == std::string::npos)
        return {};
    return output.substr(at, 16384);
}

void child_process::check_sanitizer_reports() {
    std::error_code ec;
    const auto size = fs::file_size(log_path_, ec);
    if (ec || size <= log_checked_)
        return;
    std::ifstream in(log_path_, std::ios::binary);
    in.seekg(static_cast<std::streamoff>(log_checked_));
    std::stringstream ss;
    ss << in.rdbuf();
    log_checked_ = size;
    if (auto report = sanitizer_report(ss.str()); !report.empty())
        ADD_FAILURE() << "sanitizer report from child " << pid_ << " (log " << log_path_ << "):\n"
                      << report;
}

void child_process::start(const std::vector<std::string>& argv, const std::string& log_path,
                          const std::map<std::string, std::string>& env) {
    status_.reset();
    if (log_path != log_path_) {
        log_path_ = log_path;
        std::error_code ec;
        log_checked_ = fs::file_size(log_path, ec);  // appending: only what this child writes
        if (ec)
            log_checked_ = 0;
    }
    pid_ = ::fork();
    if (pid_ < 0)
        throw std::runtime_error("fork failed");
    if (pid_ == 0) {
        // If the test process dies (a crash, a timeout kill), its children go with it.
        ::prctl(PR_SET_PDEATHSIG, SIGKILL);
        int fd = ::open(log_path.c_str(), O_WRONLY | O_CREAT | O_APPEND, 0644);
        if (fd >= 0) {
            ::dup2(fd, 1);
            ::dup2(fd, 2);
            ::close(fd);
        }
        for (const auto& [k, v] : env)
            ::setenv(k.c_str(), v.c_str(), 1);
        std::vector<char*> args;
        for (const auto& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execv(args[0], args.data());
        ::_exit(127);
    }
}

bool child_process::running() {
    if (pid_ <= 0 || status_)
        return false;
    int st = 0;
    pid_t r = ::waitpid(pid_, &st, WNOHANG);
    if (r == pid_) {
        status_ = WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st);
        check_sanitizer_reports();
        return false;
    }
    return true;
}

void child_process::signal(int sig) {
    if (pid_ > 0 && !status_)
        ::kill(pid_, sig);
}

std::optional<int> child_process::wait(std::chrono::milliseconds timeout) {
    const auto deadline = std::chrono::steady_clock::now() + timeout;
    while (std::chrono::steady_clock::now() < deadline) {
        if (!running())
            return status_;
        std::this_thread::sleep_for(10ms);
    }
    return running() ? std::nullopt : status_;
}

std::string segue_binary() {
    if (const char* p = std::getenv("SEGUE_BINARY"))
        return p;
#ifdef SEGUE_BINARY_PATH
    return SEGUE_BINARY_PATH;
#else
    return "segue";
#endif
}

segue_process::segue_process(const std::string& config_yaml,
                             const std::map<std::string, std::string>& env,
                             const std::string& binary) {
    // "@DIR@" in the config names this process's own temporary directory.
    std::string text = config_yaml;
    for (std::size_t at; (at = text.find("@DIR@")) != std::string::npos;)
        text.replace(at, 5, dir_.path());
    if (text.find("storage:") == std::string::npos)
        text += storage_yaml(dir_.path());
    auto cfg = dir_.write("segue.yaml", text);
    auto port_file = dir_.file("port");
    proc_.start(
        {binary.empty() ? segue_binary() : binary, "--config", cfg, "--port-file", port_file},
        dir_.file("log"), env);
    const auto deadline = std::chrono::steady_clock::now() + 15s;
    while (std::chrono::steady_clock::now() < deadline) {
        std::ifstream in(port_file);
        int p = 0;
        if (in >> p && p > 0) {
            port_ = static_cast<std::uint16_t>(p);
            return;
        }
        if (!proc_.running())
            break;
        std::this_thread::sleep_for(10ms);
    }
    throw std::runtime_error("segue did not start; log:\n" + log());
}

std::string segue_process::log() const {
    std::ifstream in(dir_.file("log"));
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

std::string segue_process::log_with(const std::string& needle,
                                    std::chrono::milliseconds limit) const {
    const auto until = std::chrono::steady_clock::now() + limit;
    for (;;) {
        auto text = log();
        if (text.find(needle) != std::string::npos || std::chrono::steady_clock::now() >= until)
            return text;
        std::this_thread::sleep_for(std::chrono::milliseconds(20));
    }
}

std::pair<int, std::string> run_command(const std::vector<std::string>& argv,
                                        const std::string& stdin_data) {
    temp_dir d;
    auto in_path = d.write("stdin", stdin_data);
    auto out_path = d.file("out");
    pid_t pid = ::fork();
    if (pid == 0) {
        int in = ::open(in_path.c_str(), O_RDONLY);
        int out = ::open(out_path.c_str(), O_WRONLY | O_CREAT | O_TRUNC, 0644);
        ::dup2(in, 0);
        ::dup2(out, 1);
        ::dup2(out, 2);
        std::vector<char*> args;
        for (const auto& a : argv)
            args.push_back(const_cast<char*>(a.c_str()));
        args.push_back(nullptr);
        ::execvp(args[0], args.data());
        ::_exit(127);
    }
    int st = 0;
    ::waitpid(pid, &st, 0);
    std::ifstream in(out_path);
    std::stringstream ss;
    ss << in.rdbuf();
    std::string out = ss.str();
    if (auto report = sanitizer_report(out); !report.empty())
        ADD_FAILURE() << "sanitizer report from " << argv.front() << ":\n" << report;
    return {WIFEXITED(st) ? WEXITSTATUS(st) : 128 + WTERMSIG(st), std::move(out)};
}

std::optional<std::string> http_response::header(const std::string& lower_name) const {
    auto it = headers.find(lower_name);
    if (it == headers.end())
        return std::nullopt;
    return it->second;
}

http_connection::http_connection(std::uint16_t port, std::chrono::milliseconds timeout) {
    fd_ = ::socket(AF_INET, SOCK_STREAM, 0);
    if (fd_ < 0)
        throw std::runtime_error("socket failed");
    timeval tv{};
    tv.tv_sec = timeout.count() / 1000;
    tv.tv_usec = (timeout.count() % 1000) * 1000;
    ::setsockopt(fd_, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
    ::setsockopt(fd_, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
    int one = 1;
    ::setsockopt(fd_, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    sockaddr_in addr{};
    addr.sin_family = AF_INET;
    addr.sin_port = htons(port);
    addr.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    if (::connect(fd_, reinterpret_cast<sockaddr*>(&addr), sizeof addr) != 0) {
        ::close(fd_);
        fd_ = -1;
        throw std::runtime_error(std::string("connect failed: ") + std::strerror(errno));
    }
}

http_connection::~http_connection() {
    if (fd_ >= 0)
        ::close(fd_);
}

bool http_connection::send_raw(const std::string& bytes) {
    // A send that starts a request (not the rest of one sent in pieces): its request line names
    // the response to come, for the contract log. Only the first of pipelined requests is named;
    // the answers to the others are not recorded.
    static const std::regex request_line(R"(^([A-Z]+) (/[^ \r\n]*) HTTP/1\.[01]\r\n)");
    if (std::smatch m;
        std::regex_search(bytes.begin(), bytes.begin() + std::min<std::size_t>(bytes.size(), 8192),
                          m, request_line))
        sent_.emplace_back(m[1], m[2]);
    std::size_t off = 0;
    while (off < bytes.size()) {
        ssize_t n = ::send(fd_, bytes.data() + off, bytes.size() - off, MSG_NOSIGNAL);
        if (n < 0) {
            if (errno == EINTR)
                continue;
            return false;
        }
        off += static_cast<std::size_t>(n);
    }
    return true;
}

bool http_connection::fill() {
    char buf[16384];
    for (;;) {
        ssize_t n = ::recv(fd_, buf, sizeof buf, 0);
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return false;
        buffer_.append(buf, static_cast<std::size_t>(n));
        return true;
    }
}

bool http_connection::readable(std::chrono::milliseconds wait) {
    if (!buffer_.empty())
        return true;
    pollfd p{fd_, POLLIN, 0};
    return ::poll(&p, 1, static_cast<int>(wait.count())) > 0;
}

bool http_connection::closed_by_peer(std::chrono::milliseconds wait) {
    pollfd p{fd_, POLLIN, 0};
    if (::poll(&p, 1, static_cast<int>(wait.count())) <= 0)
        return false;
    char c;
    ssize_t n = ::recv(fd_, &c, 1, MSG_PEEK);
    return n <= 0;
}

std::optional<http_response> http_connection::read_head(bool skip_interim) {
    std::size_t header_end;
    while ((header_end = buffer_.find("\r\n\r\n")) == std::string::npos)
        if (!fill())
            return std::nullopt;
    http_response r;
    std::istringstream head(buffer_.substr(0, header_end));
    buffer_.erase(0, header_end + 4);
    std::string line;
    std::getline(head, line);
    {
        std::istringstream sl(line);
        std::string version;
        sl >> version >> r.status;
        std::getline(sl, r.reason);
        if (!r.reason.empty() && r.reason.front() == ' ')
            r.reason.erase(0, 1);
        if (!r.reason.empty() && r.reason.back() == '\r')
            r.reason.pop_back();
    }
    while (std::getline(head, line)) {
        if (!line.empty() && line.back() == '\r')
            line.pop_back();
        auto colon = line.find(':');
        if (colon == std::string::npos)
            continue;
        std::string name = line.substr(0, colon);
        std::transform(name.begin(), name.end(), name.begin(), ::tolower);
        std::string value = line.substr(colon + 1);
        while (!value.empty() && value.front() == ' ')
            value.erase(0, 1);
        r.headers.emplace(name, value);
    }
    if (r.status >= 100 && r.status < 200 && skip_interim)
        return read_head();
    return r;
}

bool http_connection::read_body(const http_response& r,
                                const std::function<void(std::string_view)>& on_body) {
    if (auto te = r.header("transfer-encoding"); te && te->find("chunked") != std::string::npos) {
        for (;;) {
            std::size_t eol;
            while ((eol = buffer_.find("\r\n")) == std::string::npos)
                if (!fill())
                    return false;
            std::size_t size = std::stoul(buffer_.substr(0, eol), nullptr, 16);
            buffer_.erase(0, eol + 2);
            while (buffer_.size() < size + 2)
                if (!fill())
                    return false;
            if (size > 0)
                on_body(std::string_view(buffer_).substr(0, size));
            buffer_.erase(0, size + 2);
            if (size == 0)
                return true;
        }
    }
    if (auto cl = r.header("content-length")) {
        std::size_t len = std::stoul(*cl);
        while (buffer_.size() < len)
            if (!fill())
                return false;
        on_body(std::string_view(buffer_).substr(0, len));
        buffer_.erase(0, len);
        return true;
    }
    if (r.status == 204 || r.status == 304)
        return true;
    // Until the peer closes.
    for (;;) {
        if (!buffer_.empty())
            on_body(buffer_);
        buffer_.clear();
        if (!fill())
            return true;
    }
}

std::optional<http_response> http_connection::read_response(bool skip_interim) {
    auto r = read_head(skip_interim);
    if (r && r->status >= 100 && r->status < 200)
        return r;
    if (r && head_) {
        head_ = false;
        record(&*r);
        return r;
    }
    if (!r || !read_body(*r, [&](std::string_view piece) { r->body.append(piece); })) {
        record(nullptr);
        return std::nullopt;
    }
    record(&*r);
    return r;
}

void http_connection::record(const http_response* r) {
    if (sent_.empty())
        return;
    auto [method, target] = std::move(sent_.front());
    sent_.pop_front();
    if (r)
        record_response(method, target, *r);
}

std::optional<http_response> http_connection::read_streaming(
    const std::function<void(std::string_view)>& on_body) {
    // The body is the caller's; a copy (capped: event streams are small) goes to the contract log.
    std::string copy;
    const bool keep = std::getenv("SEGUE_CONTRACT_LOG") != nullptr;
    auto r = read_head();
    if (!r || !read_body(*r, [&](std::string_view piece) {
            if (keep && copy.size() < (1u << 20))
                copy.append(piece);
            on_body(piece);
        })) {
        // An event stream that never ends (the live task list) ends here, at the caller's
        // timeout: its complete frames are what the client received.
        const auto frames_end = copy.rfind("\n\n");
        if (r && keep && frames_end != std::string::npos &&
            r->header("content-type").value_or("").rfind("text/event-stream", 0) == 0) {
            auto logged = *r;
            logged.body = copy.substr(0, frames_end + 2);
            record(&logged);
        } else {
            record(nullptr);
        }
        return std::nullopt;
    }
    auto logged = *r;
    logged.body = std::move(copy);
    record(keep ? &logged : nullptr);
    return r;
}

std::optional<http_response> http_connection::request(const std::string& method,
                                                      const std::string& target,
                                                      const std::string& body,
                                                      const std::vector<std::string>& headers) {
    std::string req = method + " " + target + " HTTP/1.1\r\nHost: 127.0.0.1\r\n";
    for (const auto& h : headers)
        req += h + "\r\n";
    if (!body.empty() || method == "POST" || method == "PUT")
        req += "Content-Length: " + std::to_string(body.size()) + "\r\n";
    req += "\r\n";
    req += body;
    head_ = method == "HEAD";
    if (!send_raw(req))
        return std::nullopt;
    return read_response();
}

std::optional<http_response> http_request(std::uint16_t port, const std::string& method,
                                          const std::string& target, const std::string& body,
                                          const std::vector<std::string>& headers) {
    http_connection c(port);
    return c.request(method, target, body, headers);
}

}  // namespace segue::test

namespace segue::test {

std::string multipart_body(const std::vector<form_part>& parts, const std::string& boundary) {
    std::string body;
    for (const auto& p : parts) {
        body += "--" + boundary + "\r\n";
        body += "Content-Disposition: form-data; name=\"" + p.name + "\"";
        if (!p.filename.empty())
            body += "; filename=\"" + p.filename + "\"";
        body += "\r\n";
        if (!p.filename.empty())
            body += "Content-Type: " + p.content_type + "\r\n";
        body += "\r\n" + p.value + "\r\n";
    }
    body += "--" + boundary + "--\r\n";
    return body;
}

std::string read_file(const std::string& path) {
    std::ifstream in(path, std::ios::binary);
    std::stringstream ss;
    ss << in.rdbuf();
    return ss.str();
}

double metric_value(const std::string& exposition, const std::string& series) {
    std::istringstream in(exposition);
    for (std::string line; std::getline(in, line);)
        if (line.size() > series.size() && line.compare(0, series.size(), series) == 0 &&
            line[series.size()] == ' ')
            return std::stod(line.substr(series.size() + 1));
    return -1;
}

std::uint64_t status_kib(const std::string& field) {
    std::ifstream in("/proc/self/status");
    std::string line;
    while (std::getline(in, line))
        if (line.rfind(field + ":", 0) == 0)
            return std::stoull(line.substr(field.size() + 1));
    return 0;
}

bool reset_peak_rss() {
    std::ofstream out("/proc/self/clear_refs");
    out << "5";
    out.flush();
    return static_cast<bool>(out);
}

held_listener hold_loopback_port() {
    held_listener h;
    h.fd = ::socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    socklen_t len = sizeof a;
    if (h.fd < 0 || ::bind(h.fd, reinterpret_cast<sockaddr*>(&a), sizeof a) != 0 ||
        ::listen(h.fd, 4) != 0 || ::getsockname(h.fd, reinterpret_cast<sockaddr*>(&a), &len) != 0) {
        if (h.fd >= 0)
            ::close(h.fd);
        return {};
    }
    h.port = ntohs(a.sin_port);
    return h;
}

std::uint16_t free_port() {
    int fd = ::socket(AF_INET, SOCK_STREAM, 0);
    sockaddr_in a{};
    a.sin_family = AF_INET;
    a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
    ::bind(fd, reinterpret_cast<sockaddr*>(&a), sizeof a);
    socklen_t len = sizeof a;
    ::getsockname(fd, reinterpret_cast<sockaddr*>(&a), &len);
    ::close(fd);
    return ntohs(a.sin_port);
}

std::uint16_t wait_port_file(const std::string& path, std::chrono::milliseconds limit) {
    const auto until = std::chrono::steady_clock::now() + limit;
    while (std::chrono::steady_clock::now() < until) {
        std::ifstream in(path);
        int p = 0;
        if (in >> p && p > 0 && p < 65536)
            return static_cast<std::uint16_t>(p);
        std::this_thread::sleep_for(std::chrono::milliseconds(10));
    }
    return 0;
}

}  // namespace segue::test

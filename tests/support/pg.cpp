#include "tests/support/pg.hpp"

#include <libpq-fe.h>

#include <signal.h>
#include <unistd.h>

#include <array>
#include <atomic>
#include <cerrno>
#include <cstdio>
#include <filesystem>
#include <fstream>
#include <map>
#include <memory>
#include <mutex>
#include <random>
#include <sstream>
#include <stdexcept>
#include <string_view>
#include <vector>

namespace segue::test {

namespace {

// Runs scripts/pg.sh `args`; its output, trimmed.
std::string run_script(const std::string& args) {
    const std::string cmd = std::string(SEGUE_PG_SCRIPT) + " " + args;
    std::unique_ptr<FILE, int (*)(FILE*)> p(popen(cmd.c_str(), "r"), pclose);
    if (!p)
        throw std::runtime_error("cannot run " + cmd);
    std::string out;
    std::array<char, 512> buf{};
    while (std::fgets(buf.data(), buf.size(), p.get()))
        out += buf.data();
    const int rc = pclose(p.release());
    while (!out.empty() && (out.back() == '\n' || out.back() == ' '))
        out.pop_back();
    if (rc != 0)
        throw std::runtime_error(cmd + " failed (exit " + std::to_string(rc) + ")");
    return out;
}

std::string start_server() {
    if (const char* url = std::getenv("SEGUE_TEST_PG_URL"); url && *url)
        return url;
    auto url = run_script("start");
    if (url.empty())
        throw std::runtime_error(SEGUE_PG_SCRIPT " start printed no URL");
    return url;
}

}  // namespace

const std::string& pg_server_url() {
    static const std::string url = start_server();
    return url;
}

std::string pg_exec(const std::string& url, const std::string& sql) {
    std::unique_ptr<PGconn, void (*)(PGconn*)> c(PQconnectdb(url.c_str()), PQfinish);
    if (PQstatus(c.get()) != CONNECTION_OK)
        throw std::runtime_error("pg_exec: connect: " + std::string(PQerrorMessage(c.get())));
    PQsetNoticeProcessor(
        c.get(), [](void*, const char*) {}, nullptr);
    std::unique_ptr<PGresult, void (*)(PGresult*)> r(PQexec(c.get(), sql.c_str()), PQclear);
    const auto st = PQresultStatus(r.get());
    if (st != PGRES_COMMAND_OK && st != PGRES_TUPLES_OK)
        throw std::runtime_error("pg_exec: " + sql + ": " + PQerrorMessage(c.get()));
    if (st == PGRES_TUPLES_OK && PQntuples(r.get()) > 0 && PQnfields(r.get()) > 0)
        return PQgetvalue(r.get(), 0, 0);
    return "";
}

pg_schema::pg_schema() {
    static std::mutex m;
    static std::mt19937_64 rng{std::random_device{}()};
    {
        std::lock_guard lock(m);
        name_ = "t" + std::to_string(rng() % 1'000'000'000'000ull);
    }
    const std::string& base = pg_server_url();
    pg_exec(base, "CREATE SCHEMA " + name_);
    // libpq URL: options=-c search_path=<schema> (percent-encoded).
    url_ = base + (base.find('?') == std::string::npos ? "?" : "&") + "options=-csearch_path%3D" +
           name_;
}

pg_schema::~pg_schema() {
    try {
        pg_exec(pg_server_url(), "DROP SCHEMA IF EXISTS " + name_ + " CASCADE");
    } catch (...) {
        // A test that broke the server reports that itself; the schema dies with the server dir.
    }
}

bool testing_postgres() {
    const char* v = std::getenv("SEGUE_TEST_STORAGE");
    return v && std::string(v) == "postgres";
}

std::string postgres_storage_yaml(const std::string& url, const std::string& blob_dir) {
    return "storage:\n  blob_dir: " + blob_dir +
           "\n  engine: postgres\n  blobs: postgres\n  postgres:\n    url: \"" + url + "\"\n";
}

std::string storage_yaml(const std::string& dir, const std::string& more) {
    if (!testing_postgres())
        return "storage:\n  blob_dir: " + dir + "/blobs\n  sqlite_path: " + dir + "/segue.db\n" +
               more;
    static std::mutex m;
    static std::map<std::string, std::unique_ptr<pg_schema>> schemas;
    std::lock_guard lock(m);
    auto& s = schemas[dir];
    if (!s)
        s = std::make_unique<pg_schema>();
    return postgres_storage_yaml(s->url(), dir + "/blobs") + more;
}

namespace {
constexpr std::string_view private_prefix = "segue-private-";

// The private servers of test processes that are gone: /tmp/segue-private-<pid>-<n> whose pid no
// longer runs. A pid reused by a live process keeps its directory (left, not wrongly destroyed).
void destroy_orphaned_private_servers() {
    std::error_code ec;
    for (const auto& e : std::filesystem::directory_iterator("/tmp", ec)) {
        const std::string name = e.path().filename().string();
        if (!name.starts_with(private_prefix) || !e.is_directory(ec))
            continue;
        const std::string rest = name.substr(private_prefix.size());
        const auto dash = rest.find('-');
        if (dash == std::string::npos || dash == 0 || rest.find_first_not_of("0123456789") != dash)
            continue;
        const auto pid = static_cast<pid_t>(std::stol(rest.substr(0, dash)));
        if (::kill(pid, 0) == 0 || errno != ESRCH)
            continue;
        try {
            run_script("destroy " + e.path().string());
        } catch (...) {
        }
    }
}
}  // namespace

pg_private_server::pg_private_server() {
    destroy_orphaned_private_servers();
    static std::atomic<int> n{0};
    dir_ = "/tmp/" + std::string(private_prefix) + std::to_string(::getpid()) + "-" +
           std::to_string(n++);
    start();
}

pg_private_server::~pg_private_server() {
    if (frozen_)
        thaw();
    try {
        run_script("destroy " + dir_);
    } catch (...) {
    }
}

void pg_private_server::start() {
    url_ = run_script("start " + dir_);
    if (url_.empty())
        throw std::runtime_error(SEGUE_PG_SCRIPT " start " + dir_ + " printed no URL");
}

void pg_private_server::stop() {
    run_script("stop " + dir_);
}

// The postmaster (the first line of postmaster.pid) and every process whose parent it is.
void pg_private_server::signal_all(int sig) {
    std::ifstream pidfile(dir_ + "/data/postmaster.pid");
    pid_t postmaster = 0;
    if (!(pidfile >> postmaster) || postmaster <= 0)
        throw std::runtime_error("no postmaster.pid in " + dir_ + "/data");
    std::vector<pid_t> pids = {postmaster};
    for (const auto& e : std::filesystem::directory_iterator("/proc")) {
        const std::string name = e.path().filename().string();
        if (name.empty() || name.find_first_not_of("0123456789") != std::string::npos)
            continue;
        std::ifstream stat(e.path() / "stat");
        std::string line;
        std::getline(stat, line);
        // pid (comm) state ppid ...: comm may hold spaces, so read after its last ')'.
        const auto close = line.rfind(')');
        if (close == std::string::npos)
            continue;
        std::istringstream rest(line.substr(close + 1));
        char state = 0;
        pid_t ppid = 0;
        if (rest >> state >> ppid && ppid == postmaster)
            pids.push_back(std::stoi(name));
    }
    for (pid_t p : pids)
        ::kill(p, sig);
}

void pg_private_server::freeze() {
    signal_all(SIGSTOP);
    frozen_ = true;
}

void pg_private_server::thaw() {
    signal_all(SIGCONT);
    frozen_ = false;
}

}  // namespace segue::test

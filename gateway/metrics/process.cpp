#include "gateway/metrics/process.hpp"

#include <dirent.h>
#include <sys/resource.h>
#include <unistd.h>

#include <cmath>
#include <cstdlib>
#include <fstream>
#include <limits>
#include <optional>
#include <sstream>
#include <string>
#include <vector>

#include "gateway/metrics/registry.hpp"

namespace segue::metrics {

namespace {

struct statm {
    std::uint64_t size_pages = 0;
    std::uint64_t resident_pages = 0;
};

std::optional<statm> read_statm() {
    std::ifstream in("/proc/self/statm");
    statm s;
    if (!(in >> s.size_pages >> s.resident_pages))
        return std::nullopt;
    return s;
}

std::uint64_t page_size() {
    const long p = ::sysconf(_SC_PAGESIZE);
    return p > 0 ? static_cast<std::uint64_t>(p) : 4096;
}

double clock_ticks() {
    const long t = ::sysconf(_SC_CLK_TCK);
    return t > 0 ? static_cast<double>(t) : 100.0;
}

struct stat_times {
    std::uint64_t utime = 0;      // field 14, ticks
    std::uint64_t stime = 0;      // field 15, ticks
    std::uint64_t starttime = 0;  // field 22, ticks after boot
};

std::optional<stat_times> read_stat() {
    std::ifstream in("/proc/self/stat");
    std::string line;
    if (!std::getline(in, line))
        return std::nullopt;
    // comm (field 2) may hold spaces and parentheses: fields resume after the last ')'.
    const auto paren = line.rfind(')');
    if (paren == std::string::npos)
        return std::nullopt;
    std::istringstream rest(line.substr(paren + 1));
    std::vector<std::string> f;  // f[0] is field 3 (state)
    for (std::string tok; rest >> tok;)
        f.push_back(std::move(tok));
    if (f.size() < 20)
        return std::nullopt;
    stat_times t;
    t.utime = std::strtoull(f[14 - 3].c_str(), nullptr, 10);
    t.stime = std::strtoull(f[15 - 3].c_str(), nullptr, 10);
    t.starttime = std::strtoull(f[22 - 3].c_str(), nullptr, 10);
    return t;
}

std::optional<std::uint64_t> boot_time() {
    std::ifstream in("/proc/stat");
    for (std::string key; in >> key;) {
        if (key == "btime") {
            std::uint64_t t = 0;
            if (in >> t)
                return t;
            return std::nullopt;
        }
        in.ignore(std::numeric_limits<std::streamsize>::max(), '\n');
    }
    return std::nullopt;
}

std::optional<std::uint64_t> open_fds() {
    DIR* dir = ::opendir("/proc/self/fd");
    if (dir == nullptr)
        return std::nullopt;
    const int own = ::dirfd(dir);
    std::uint64_t n = 0;
    while (const dirent* e = ::readdir(dir)) {
        if (e->d_name[0] == '.')
            continue;
        if (std::atoi(e->d_name) == own)
            continue;  // the fd we are listing with
        ++n;
    }
    ::closedir(dir);
    return n;
}

void collect(text_writer& w) {
    const double page = static_cast<double>(page_size());
    if (auto m = read_statm()) {
        w.write_gauge("process_virtual_memory_bytes", "Virtual memory size in bytes.",
                      static_cast<double>(m->size_pages) * page);
        w.write_gauge("process_resident_memory_bytes", "Resident memory size in bytes.",
                      static_cast<double>(m->resident_pages) * page);
    }
    if (auto n = open_fds()) {
        w.write_gauge("process_open_fds", "Number of open file descriptors.",
                      static_cast<double>(*n));
    }
    if (rlimit rl{}; ::getrlimit(RLIMIT_NOFILE, &rl) == 0) {
        w.write_gauge("process_max_fds", "Maximum number of open file descriptors.",
                      rl.rlim_cur == RLIM_INFINITY ? INFINITY : static_cast<double>(rl.rlim_cur));
    }
    if (auto s = read_stat()) {
        const double hz = clock_ticks();
        w.write_counter("process_cpu_seconds_total",
                        "Total user and system CPU time spent in seconds.",
                        static_cast<double>(s->utime + s->stime) / hz);
        if (auto bt = boot_time()) {
            w.write_gauge("process_start_time_seconds",
                          "Start time of the process since unix epoch in seconds.",
                          static_cast<double>(*bt) + static_cast<double>(s->starttime) / hz);
        }
    }
}

}  // namespace

void register_process_metrics(registry& r) {
    r.add_collector(collect);
}

std::uint64_t current_rss_bytes() {
    auto m = read_statm();
    return m ? m->resident_pages * page_size() : 0;
}

}  // namespace segue::metrics

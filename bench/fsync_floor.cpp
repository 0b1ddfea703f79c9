// The disk's floor under a durable commit: how long making one commit's worth of bytes durable
// takes on this machine, three ways, in one run (so they share its noise):
//   pwrite + fdatasync      what the SQLite store's syncer does (the write, then the sync)
//   pwritev2 RWF_DSYNC      the write and its sync in one call
//   O_DSYNC descriptor      every write synchronous
// Each writes `kib` KiB (default 56: a create's WAL frames) over blocks already written and
// synced (as SQLite's WAL is rewritten in place once it restarts), 1,500 times, 1 ms apart, and
// prints p50 / p90 / p99 in microseconds. Nothing in segue can make a durable 202 faster than
// this (bench/README.md 6g, 6i).
//
//   build/bench/fsync_floor [dir] [kib]      (defaults: the current directory, 56)

#include <fcntl.h>
#include <sys/uio.h>
#include <unistd.h>

#include <algorithm>
#include <chrono>
#include <cstdio>
#include <cstdlib>
#include <string>
#include <thread>
#include <vector>

namespace {

constexpr int rounds = 1500;
constexpr int region_blocks = 400;  // rewritten in turn, so no write extends the file

double micros_since(std::chrono::steady_clock::time_point t) {
    return std::chrono::duration<double, std::micro>(std::chrono::steady_clock::now() - t).count();
}

}  // namespace

int main(int argc, char** argv) {
    const std::string dir = argc > 1 ? argv[1] : ".";
    const std::size_t size = static_cast<std::size_t>(argc > 2 ? std::atoi(argv[2]) : 56) * 1024;
    if (size == 0) {
        std::fprintf(stderr, "usage: fsync_floor [dir] [kib > 0]\n");
        return 2;
    }
    const std::string path = dir + "/fsync_floor." + std::to_string(::getpid());
    std::vector<char> buf(size, 'x');
    const int fd = ::open(path.c_str(), O_RDWR | O_CREAT | O_TRUNC, 0600);
    const int dsync_fd = fd < 0 ? -1 : ::open(path.c_str(), O_RDWR | O_DSYNC);
    if (fd < 0 || dsync_fd < 0) {
        std::perror(path.c_str());
        return 1;
    }
    ::unlink(path.c_str());  // gone when we exit, whatever happens
    for (int i = 0; i < region_blocks; ++i)
        if (::pwrite(fd, buf.data(), size, static_cast<off_t>(i) * size) !=
            static_cast<ssize_t>(size)) {
            std::perror("pwrite");
            return 1;
        }
    ::fsync(fd);

    const char* names[] = {"pwrite + fdatasync", "pwritev2 RWF_DSYNC", "O_DSYNC descriptor"};
    std::printf("# %zu KiB per commit, %d commits 1 ms apart, rewriting synced blocks in %s\n",
                size / 1024, rounds, dir.c_str());
    std::printf("%-22s %8s %8s %8s\n", "method", "p50 us", "p90 us", "p99 us");
    for (int method = 0; method < 3; ++method) {
        std::vector<double> t(rounds);
        for (int i = 0; i < rounds; ++i) {
            const off_t off = static_cast<off_t>(i % region_blocks) * size;
            const auto start = std::chrono::steady_clock::now();
            ssize_t n = -1;
            if (method == 0) {
                n = ::pwrite(fd, buf.data(), size, off);
                if (::fdatasync(fd) != 0)
                    n = -1;
            } else if (method == 1) {
                iovec v{buf.data(), size};
                n = ::pwritev2(fd, &v, 1, off, RWF_DSYNC);
            } else {
                n = ::pwrite(dsync_fd, buf.data(), size, off);
            }
            if (n != static_cast<ssize_t>(size)) {
                std::perror(names[method]);
                return 1;
            }
            t[i] = micros_since(start);
            std::this_thread::sleep_for(std::chrono::milliseconds(1));
        }
        std::sort(t.begin(), t.end());
        std::printf("%-22s %8.0f %8.0f %8.0f\n", names[method], t[rounds / 2], t[rounds * 9 / 10],
                    t[rounds * 99 / 100]);
    }
    return 0;
}

#include "gateway/client/terminal.hpp"

#include <sys/ioctl.h>
#include <unistd.h>

#include <algorithm>
#include <cerrno>
#include <cstdio>

namespace segue::client {

std::string format_bytes(std::uint64_t n) {
    if (n < 1000)
        return std::to_string(n) + " B";
    const char* units[] = {"KB", "MB", "GB", "TB"};
    double v = static_cast<double>(n);
    int u = -1;
    while (v >= 1000 && u < 3) {
        v /= 1000;
        ++u;
    }
    char buf[32];
    std::snprintf(buf, sizeof buf, "%.1f %s", v, units[u]);
    return buf;
}

std::string format_elapsed(std::chrono::milliseconds d) {
    const long long s = std::max<long long>(0, d.count() / 1000);
    char buf[32];
    if (s >= 3600)
        std::snprintf(buf, sizeof buf, "%lld:%02lld:%02lld", s / 3600, (s / 60) % 60, s % 60);
    else
        std::snprintf(buf, sizeof buf, "%lld:%02lld", s / 60, s % 60);
    return buf;
}

std::string progress_line(std::string_view label, std::uint64_t done, std::uint64_t total,
                          double seconds, int width) {
    const double fraction =
        total == 0 ? 1.0 : std::min(1.0, static_cast<double>(done) / static_cast<double>(total));
    char pct[8];
    std::snprintf(pct, sizeof pct, "%3d%%", static_cast<int>(fraction * 100));
    std::string tail =
        std::string(" ") + pct + "  " + format_bytes(done) + "/" + format_bytes(total);
    if (seconds > 0.2)
        tail += "  " + format_bytes(static_cast<std::uint64_t>(done / seconds)) + "/s";
    std::string head(label);
    // The bar takes what the label and the figures leave, between 10 and 40 columns.
    int bar = width - static_cast<int>(head.size() + tail.size()) - 4;
    if (bar < 10) {
        const auto keep =
            static_cast<std::size_t>(std::max(0, width - static_cast<int>(tail.size()) - 16));
        if (head.size() > keep)
            head = head.substr(0, keep);
        bar = 10;
    }
    bar = std::min(bar, 40);
    const int filled = static_cast<int>(fraction * bar);
    std::string s = head + " [";
    s.append(static_cast<std::size_t>(filled), '=');
    if (filled < bar) {
        s.push_back('>');
        s.append(static_cast<std::size_t>(bar - filled - 1), ' ');
    }
    s += "]" + tail;
    return s;
}

bool is_terminal(int fd) {
    return ::isatty(fd) == 1;
}

int terminal_width(int fd) {
    winsize ws{};
    if (::ioctl(fd, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0)
        return ws.ws_col;
    return 80;
}

screen::screen(bool enabled) : enabled_(enabled) {}

screen::~screen() {
    clear();
}

void screen::write(std::string_view s) {
    while (!s.empty()) {
        const auto n = ::write(STDERR_FILENO, s.data(), s.size());
        if (n < 0 && errno == EINTR)
            continue;
        if (n <= 0)
            return;
        s.remove_prefix(static_cast<std::size_t>(n));
    }
}

void screen::status(std::string_view line) {
    if (!enabled_)
        return;
    // Never wider than the terminal: a wrapped line could not be erased with "\r".
    const auto width = static_cast<std::size_t>(std::max(1, terminal_width(STDERR_FILENO) - 1));
    status_ = std::string(line.substr(0, width));
    write("\r\033[K" + status_);
    shown_ = true;
}

void screen::line(std::string_view text, std::optional<std::string_view> new_status) {
    if (!enabled_)
        return;
    std::string s = "\r\033[K";
    s.append(text);
    s.push_back('\n');
    write(s);
    if (new_status)
        status(*new_status);
    else if (shown_)
        write(status_);
}

void screen::clear() {
    if (!enabled_ || !shown_)
        return;
    write("\r\033[K");
    shown_ = false;
}

}  // namespace segue::client

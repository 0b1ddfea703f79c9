#pragma once
// What the CLI draws on a terminal: a progress bar, a status line that redraws in place, and the
// plain formatting both use. Nothing here is drawn unless the output is a terminal (see
// screen::screen).

#include <chrono>
#include <cstdint>
#include <optional>
#include <string>
#include <string_view>

namespace segue::client {

// "512 B", "3.4 KB", "12.0 MB" (powers of 1000, one decimal).
std::string format_bytes(std::uint64_t n);
// "0:07", "12:34", "1:02:03".
std::string format_elapsed(std::chrono::milliseconds d);
// A one-line bar fitting `width` columns, e.g.
// "uploading song.mp3 [==========>         ]  52%  1.3 MB/2.5 MB  4.1 MB/s".
std::string progress_line(std::string_view label, std::uint64_t done, std::uint64_t total,
                          double seconds, int width);
bool is_terminal(int fd);
// Columns of the terminal on `fd` (80 when unknown).
int terminal_width(int fd);

// A status line at the bottom of stderr, redrawn in place ("\r" + erase line), with finished
// lines printed above it. Inert (draws nothing) when `enabled` is false: the quiet mode used when
// stdout or stderr is not a terminal, or with --json / --quiet.
class screen {
  public:
    explicit screen(bool enabled);
    ~screen();  // clears the status line
    screen(const screen&) = delete;
    screen& operator=(const screen&) = delete;
    bool enabled() const { return enabled_; }
    void status(std::string_view line);
    // A permanent line above the status line, which is redrawn under it (replaced by
    // `new_status` if given).
    void line(std::string_view text, std::optional<std::string_view> new_status = {});
    void clear();

  private:
    void write(std::string_view s);
    bool enabled_;
    std::string status_;
    bool shown_ = false;
};

}  // namespace segue::client

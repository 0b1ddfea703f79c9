#pragma once
// Standard process_* metrics (as exported by the official Prometheus clients), read from /proc
// at scrape time.

#include <cstdint>

namespace segue::metrics {

class registry;

// Adds a collector exporting process_resident_memory_bytes, process_virtual_memory_bytes,
// process_open_fds, process_max_fds, process_cpu_seconds_total and process_start_time_seconds.
void register_process_metrics(registry& r);

// Resident set size in bytes, or 0 if /proc is unreadable.
std::uint64_t current_rss_bytes();

}  // namespace segue::metrics

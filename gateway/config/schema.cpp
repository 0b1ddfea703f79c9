// THE list of settings. Each one is declared here exactly once: YAML name, C++ field,
// description, default, bounds. Loading, validation, `--check-config` output and the Markdown
// reference (config/README.md, `segue --config-docs`) are all generated from this.
//
// Adding a setting: add the field (with the same default) to settings.hpp, add one
// declaration below, then regenerate config/README.md (see its intro).

#include <chrono>

#include "gateway/config/schema.hpp"

namespace segue::config {
namespace {

using namespace std::chrono_literals;

object_schema<server_settings> server_schema() {
    object_schema<server_settings> s;
    s.field("listen", &server_settings::listen,
            "Address to accept connections on: host:port or [IPv6]:port. A host name is resolved "
            "once at start-up. Port 0 picks a free port (see port_file).")
        .def("127.0.0.1:8080")
        .check("host:port", detail::check_host_port);
    s.field("io_threads", &server_settings::io_threads,
            "Threads running the network event loop; 0 means one per CPU core.")
        .def(0)
        .range(0, 256);
    s.field("max_connections", &server_settings::max_connections,
            "Open client connections above which new ones are refused until some close.")
        .def(10000)
        .range(1, 1000000);
    s.field("shutdown_delay", &server_settings::shutdown_delay,
            "On SIGTERM/SIGINT: readiness turns false at once, but new connections are still "
            "accepted this long so load balancers stop routing here first (Kubernetes: a few "
            "seconds). Then the listener closes and the drain starts.")
        .def(0s)
        .range(0s, 5min);
    s.field("drain_timeout", &server_settings::drain_timeout,
            "On SIGTERM/SIGINT: how long in-flight requests may take to finish before the "
            "remaining connections are closed.")
        .def(20s)
        .range(0s, 10min);
    s.field("port_file", &server_settings::port_file,
            "If set, the bound port is written to this file once listening (useful with port 0). "
            "The --port-file flag overrides it.")
        .def("");
    return s;
}

object_schema<limits_settings> limits_schema() {
    object_schema<limits_settings> s;
    s.field("max_header_bytes", &limits_settings::max_header_bytes,
            "Largest request line plus headers; larger requests get 431.")
        .byte_size()
        .def(16 * KiB)
        .range(1 * KiB, 1 * MiB);
    s.field("max_body_bytes", &limits_settings::max_body_bytes,
            "Largest request body; larger requests get 413.")
        .byte_size()
        .def(1 * MiB)
        .range(0, 1 * GiB);
    s.field("header_timeout", &limits_settings::header_timeout,
            "Time a client has to send the complete request line and headers.")
        .def(10s)
        .range(100ms, 10min);
    s.field("idle_timeout", &limits_settings::idle_timeout,
            "Time a keep-alive connection may sit idle between requests before it is closed.")
        .def(60s)
        .range(100ms, 1h);
    s.field("body_read_timeout", &limits_settings::body_read_timeout,
            "Longest wait for each read of a request body: a client that stalls longer is cut "
            "off (slowloris). A large upload may take longer in total while data keeps flowing.")
        .def(15s)
        .range(100ms, 1h);
    s.field("write_timeout", &limits_settings::write_timeout,
            "Time allowed for writing one complete response to a client.")
        .def(30s)
        .range(100ms, 1h);
    s.field("max_requests_per_connection", &limits_settings::max_requests_per_connection,
            "Requests served on one keep-alive connection before it is closed; 0 means "
            "unlimited.")
        .def(0)
        .range(0, 1000000000);
    return s;
}

object_schema<log_settings> log_schema() {
    object_schema<log_settings> s;
    s.field("level", &log_settings::level,
            "Least severe level logged; less severe messages are dropped.")
        .values({{"debug", log_level::debug},
                 {"info", log_level::info},
                 {"warn", log_level::warn},
                 {"error", log_level::error}})
        .def(log_level::info);
    s.field("access", &log_settings::access, "Write one access-log line per request.").def(true);
    return s;
}

object_schema<settings> make_settings_schema() {
    object_schema<settings> root;
    root.object("server", &settings::server, server_schema(), "The HTTP listener.");
    root.object("limits", &settings::limits, limits_schema(),
                "Per-request and per-connection limits that protect the gateway from slow or "
                "oversized clients.");
    root.object("log", &settings::log, log_schema(), "Logging.");
    return root;
}

}  // namespace

const object_schema<settings>& settings_schema() {
    static const object_schema<settings> schema = make_settings_schema();
    return schema;
}

}  // namespace segue::config

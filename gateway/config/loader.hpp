#pragma once
// Loading the gateway configuration: YAML file -> validated segue::config::settings.
// Every setting is declared once in gateway/config/schema.cpp; this header is the light public
// face (no yaml-cpp here, only in the .cpp files).
//
// File format summary (full text in config/README.md):
//   durations   250ms, 10s, 5m, 2h or combined 1m30s; a unit is required (only 0 may omit it)
//   byte sizes  plain integer = bytes, or 512B, 16KiB, 1MiB, 2GiB (IEC, powers of 1024)
//   ${VAR}, ${VAR:-default} in any scalar value are replaced from the environment before the
//   value is converted; $${ writes a literal ${.

#include <cstdint>
#include <functional>
#include <memory>
#include <optional>
#include <stdexcept>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/config/settings.hpp"

namespace segue::config {

// The providers whose blocks may appear under `providers:` (gateway/config/provider_config.hpp);
// the app's wiring builds it from the provider descriptors. Blocks of other names are errors.
class provider_schema;
using provider_catalog = std::vector<std::shared_ptr<const provider_schema>>;

// Looks up an environment variable; production passes a getenv wrapper, tests inject a map.
using env_lookup = std::function<std::optional<std::string>(const std::string&)>;

// The process environment (std::getenv), for callers that have no lookup of their own.
std::optional<std::string> process_env(const std::string& name);

// One problem found in a config source.
struct diagnostic {
    std::string source;   // file path or the source_name given to load_string
    int line = 0;         // 1-based; 0 when unknown
    std::string path;     // full key path, e.g. "limits.max_header_bytes", "tenants[1].name"
    std::string message;  // e.g. "512 is below the minimum 1KiB"

    // "source:line: path: message" (the line and path parts are left out when unknown/empty).
    std::string to_string() const;
};

// Thrown for any invalid configuration. what() lists every problem found, one per line, in
// file order, so one run shows everything that needs fixing.
class config_error : public std::runtime_error {
  public:
    explicit config_error(std::vector<diagnostic> diagnostics);
    const std::vector<diagnostic>& diagnostics() const noexcept { return diagnostics_; }

  private:
    std::vector<diagnostic> diagnostics_;
};

// The schema defaults (equal to a default-constructed settings, whose `providers` is filled
// in with each provider's defaults; a unit test enforces it).
settings defaults(const provider_catalog& providers);

// Loads and validates a YAML file; throws config_error (also when the file cannot be read).
settings load_file(const std::string& path, const env_lookup& env,
                   const provider_catalog& providers);

// Same for YAML text; source_name is used in messages in place of a file name.
settings load_string(std::string_view yaml, std::string_view source_name, const env_lookup& env,
                     const provider_catalog& providers);

// The effective configuration as YAML: every setting, defaults included, secrets "<redacted>".
std::string render_effective(const settings& s, const provider_catalog& providers);

// Markdown reference of every setting (name, type, default, bounds, description); it is
// what `segue --config-docs` prints and what config/README.md ends with.
std::string render_docs(const provider_catalog& providers);

// A listen address split into its parts: "host:port", "[v6]:port" (brackets removed).
struct host_port {
    std::string host;
    std::uint16_t port = 0;
};
// nullopt unless `text` is a valid host:port (the same rule the loader applies to
// server.listen).
std::optional<host_port> parse_host_port(std::string_view text);

}  // namespace segue::config

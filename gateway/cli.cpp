// The command line of segue: parses it, loads the config (with the provider kinds given) and
// hands over to the composition root (gateway/app.cpp).

#include "gateway/cli.hpp"

#include <cstdio>
#include <cstdlib>
#include <exception>
#include <iostream>
#include <optional>
#include <string>
#include <string_view>
#include <vector>

#include "gateway/app.hpp"
#include "gateway/client/commands.hpp"
#include "gateway/client/options.hpp"
#include "gateway/config/loader.hpp"
#include "gateway/store/open_store.hpp"
#include "providers/descriptor.hpp"
#include "segue/version.hpp"

namespace {

constexpr std::string_view usage = R"(usage: segue [options]                 run the gateway
       segue migrate [--config FILE]
       segue extend|watch|tasks|cancel|deliveries|credits ...   (client commands, below)

Segue: one provider-neutral API to extend songs with AI music providers.

options:
  --config FILE      load settings from FILE (YAML); without it, the embedded defaults
                     (also $SEGUE_CONFIG if set)
  --check-config     validate the config, print the effective settings (secrets redacted)
                     and exit 0 if valid, 1 if not
  --config-docs      print the documentation of every setting (Markdown) and exit
  --port-file FILE   write the bound port to FILE once listening (useful with port 0)
  --version          print the version and exit
  --help             print this help and exit

commands:
  migrate            apply the store's pending schema migrations and exit (PostgreSQL; for
                     SQLite too). Replicas also migrate at start, one at a time (advisory
                     lock), so running it first is optional: it is for a release step or a Job.

signals: SIGTERM/SIGINT/SIGHUP drain in-flight requests (server.drain_timeout), then exit 0;
SIGPIPE is ignored (a log reader that went away costs only the log).

)";

std::optional<std::string> env_lookup(const std::string& name) {
    if (const char* v = std::getenv(name.c_str()))
        return std::string(v);
    return std::nullopt;
}

}  // namespace

namespace segue {

int run_cli(int argc, char** argv, const providers::descriptor_list& provider_kinds) {
    // The client commands talk to a running gateway; everything else is the gateway itself.
    if (argc > 1 && client::is_client_command(argv[1]))
        return client::run_command(std::vector<std::string_view>(argv + 1, argv + argc));
    const config::provider_catalog catalog = providers::settings_catalog(provider_kinds);
    std::string config_path;
    std::string port_file;
    bool check_only = false;
    bool migrate = false;
    for (int i = 1; i < argc; ++i) {
        std::string_view a = argv[i];
        auto need_value = [&](std::string_view flag) -> std::string {
            if (i + 1 >= argc) {
                std::fprintf(stderr, "segue: %.*s needs a value\n", static_cast<int>(flag.size()),
                             flag.data());
                std::exit(2);
            }
            return argv[++i];
        };
        if (a == "--help" || a == "-h") {
            std::fwrite(usage.data(), 1, usage.size(), stdout);
            const auto more = client::client_usage();
            std::fwrite(more.data(), 1, more.size(), stdout);
            return 0;
        } else if (a == "--version") {
            std::printf("segue %s (%s)\n", segue::build::version, segue::build::revision);
            return 0;
        } else if (a == "--config") {
            config_path = need_value(a);
        } else if (a.starts_with("--config=")) {
            config_path = std::string(a.substr(9));
        } else if (a == "migrate" && i == 1) {
            migrate = true;
        } else if (a == "--check-config") {
            check_only = true;
        } else if (a == "--config-docs") {
            std::cout << segue::config::render_docs(catalog);
            return 0;
        } else if (a == "--port-file") {
            port_file = need_value(a);
        } else if (!a.empty() && a[0] != '-') {
            std::fprintf(stderr,
                         "segue: unknown command '%s' (extend, watch, tasks, cancel, deliveries, "
                         "credits; see --help)\n",
                         argv[i]);
            return 2;
        } else {
            std::fprintf(stderr, "segue: unknown option '%s' (see --help)\n", argv[i]);
            return 2;
        }
    }
    // An empty --config (an unset variable in a script, say) is a mistake, not "the
    // defaults": those are what no --config at all gives.
    for (int i = 1; i < argc; ++i)
        if ((std::string_view(argv[i]) == "--config" && i + 1 < argc && !*argv[i + 1]) ||
            std::string_view(argv[i]) == "--config=") {
            std::fprintf(stderr, "segue: --config needs a file name (it was empty)\n");
            return 2;
        }
    if (config_path.empty()) {
        if (auto p = env_lookup("SEGUE_CONFIG"))
            config_path = *p;
    }

    segue::config::settings settings;
    try {
        settings = config_path.empty() ? segue::config::defaults(catalog)
                                       : segue::config::load_file(config_path, env_lookup, catalog);
    } catch (const std::exception& e) {
        std::fprintf(stderr, "segue: invalid config:\n%s\n", e.what());
        return 1;
    }
    if (check_only) {
        std::cout << segue::config::render_effective(settings, catalog);
        std::fprintf(stderr, "segue: config %s is valid\n",
                     config_path.empty() ? "(embedded defaults)" : config_path.c_str());
        return 0;
    }

    if (migrate) {
        try {
            auto opened = segue::store::open_store(settings.storage);
            opened->close();
            std::fprintf(stderr, "segue: store schema is current (%s)\n",
                         settings.storage.engine == segue::config::storage_engine::postgres
                             ? "postgres"
                             : "sqlite");
            return 0;
        } catch (const std::exception& e) {
            std::fprintf(stderr, "segue: migrate failed: %s\n", e.what());
            return 1;
        }
    }

    try {
        segue::app app(std::move(settings), provider_kinds);
        return app.run({.port_file = port_file});
    } catch (const std::exception& e) {
        std::fprintf(stderr, "segue: fatal: %s\n", e.what());
        return 1;
    }
}

}  // namespace segue

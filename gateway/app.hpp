#pragma once
// The composition root: the only place that knows how the parts fit together. Everything else
// takes plain settings and the few collaborators it needs.

#include <memory>
#include <string>
#include <vector>

#include "gateway/config/settings.hpp"

namespace segue::providers {
struct descriptor;
using descriptor_list = std::vector<const descriptor*>;
}  // namespace segue::providers

namespace segue {

// The providers shipped with the gateway (providers/builtin.cpp).
const providers::descriptor_list& builtin_providers();

struct run_options {
    std::string port_file;  // overrides server.port_file when set
};

class app {
  public:
    // `providers`: the provider kinds this process knows (the ones `settings` was loaded with);
    // each one whose block is enabled is built.
    app(config::settings settings, const providers::descriptor_list& providers);
    ~app();
    // Serves until SIGTERM/SIGINT, then drains. Returns the process exit code.
    int run(const run_options& options);

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace segue

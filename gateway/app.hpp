#pragma once
// The composition root: the only place that knows how the parts fit together. Everything else
// takes plain settings and the few collaborators it needs.

#include <memory>
#include <string>

#include "gateway/config/settings.hpp"

namespace segue {

struct run_options {
    std::string port_file;  // overrides server.port_file when set
};

class app {
  public:
    explicit app(config::settings settings);
    ~app();
    // Serves until SIGTERM/SIGINT, then drains. Returns the process exit code.
    int run(const run_options& options);

  private:
    struct impl;
    std::unique_ptr<impl> impl_;
};

}  // namespace segue

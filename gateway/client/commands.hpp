#pragma once
// The client commands of the one `segue` binary (segue extend|tasks|watch|cancel|deliveries|
// credits): HTTP to a running gateway, drawn for a person on a terminal, plain for scripts.

#include <string_view>
#include <vector>

namespace segue::client {

// `args` starts with the command name (see is_client_command in options.hpp). Returns the
// process exit code (options.hpp: exit_code).
int run_command(const std::vector<std::string_view>& args);

}  // namespace segue::client

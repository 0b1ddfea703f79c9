#pragma once
// The client commands of the one `segue` binary (segue extend|tasks|watch|cancel|deliveries|
// credits): HTTP to a running gateway, drawn for a person on a terminal, plain for scripts.

#include <string>
#include <string_view>
#include <vector>

namespace boost::json {
class array;
class value;
}  // namespace boost::json

namespace segue::client {

// `args` starts with the command name (see is_client_command in options.hpp). Returns the
// process exit code (options.hpp: exit_code).
int run_command(const std::vector<std::string_view>& args);

// The lines under a final task's status: the files downloaded (`downloads`: {path, duration,
// ...}), or else each output with its status and link; either way, each output that is not
// ready, and why.
std::string outputs_summary(const boost::json::value& task, const boost::json::array& downloads);

}  // namespace segue::client

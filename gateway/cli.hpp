#pragma once
// segue's command line (--config, --check-config, --config-docs, ...), for a main() that chooses
// the provider kinds: gateway/main.cpp passes the shipped ones; a test binary may add its own.

#include <vector>

namespace segue::providers {
struct descriptor;
using descriptor_list = std::vector<const descriptor*>;
}  // namespace segue::providers

namespace segue {

// Returns the process exit code.
int run_cli(int argc, char** argv, const providers::descriptor_list& provider_kinds);

}  // namespace segue

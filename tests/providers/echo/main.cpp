// segue with the echo test provider added to the shipped ones: the same command line, config
// loading, wiring and engine as the real binary; only the list of provider kinds differs.

#include "gateway/app.hpp"
#include "gateway/cli.hpp"
#include "tests/providers/echo/echo.hpp"

int main(int argc, char** argv) {
    segue::providers::descriptor_list kinds = segue::builtin_providers();
    kinds.push_back(&segue::test::echo::provider_descriptor());
    return segue::run_cli(argc, argv, kinds);
}

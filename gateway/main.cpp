// segue: the song-extension gateway, with the providers shipped in providers/.

#include "gateway/app.hpp"
#include "gateway/cli.hpp"

int main(int argc, char** argv) {
    return segue::run_cli(argc, argv, segue::builtin_providers());
}

#!/bin/sh
# Builds the release `segue` binary for the container image. Run by deploy/Dockerfile (builder
# stage) from the repository root; it also runs as is on a Debian 12 machine with the -dev
# packages installed, which is how it is checked without Docker:
#
#   SEGUE_REVISION=$(git rev-parse --short=12 HEAD) deploy/docker/build-segue.sh /tmp/segue-image
#
# Argument: the build directory (default /build). Output: BUILD_DIR/segue (stripped) and
# BUILD_DIR/segue.debug (its debug info, kept in the builder stage only).
# Environment: SEGUE_REVISION (git revision to embed; default: "unknown"),
#              CMAKE_BUILD_TYPE (default RelWithDebInfo, the project default).
set -eu

build_dir=${1:-/build}
revision=${SEGUE_REVISION:-}
build_type=${CMAKE_BUILD_TYPE:-RelWithDebInfo}

# The image is built without .git in the context: the revision comes in as a cache variable.
cmake -S . -B "$build_dir" -G Ninja \
    -DCMAKE_BUILD_TYPE="$build_type" \
    -DSEGUE_GIT_REVISION="${revision:-unknown}" \
    -DSEGUE_TESTS=OFF \
    -DSEGUE_BENCH=OFF \
    -DSEGUE_FUZZ=OFF
ninja -C "$build_dir" segue

# Ship a stripped binary; keep the debug info next to it for symbolizing crash dumps.
objcopy --only-keep-debug "$build_dir/segue" "$build_dir/segue.debug"
objcopy --strip-debug --strip-unneeded --add-gnu-debuglink="$build_dir/segue.debug" \
    "$build_dir/segue" "$build_dir/segue.stripped"
mv "$build_dir/segue.stripped" "$build_dir/segue"

"$build_dir/segue" --version

#!/usr/bin/env bash
# ThreadSanitizer: builds the unit tests, the integration tests and what they start (segue, the
# fake providers) with -fsanitize=thread into build-tsan/ (Ninja, ccache; CMake option
# SEGUE_SANITIZE=thread), then runs them there through CTest.
#
#   scripts/tsan.sh [CTEST-ARGS...]        e.g. scripts/tsan.sh -R webhooks
#
# The integration tests start build-tsan's own segue and fakes (their paths are compiled into the
# test binary), which inherit TSAN_OPTIONS; a report in a child's log fails the test that started
# it (tests/support/process.cpp), and one in a test binary fails it with exit code 66.
# Environment: SEGUE_TSAN_BUILD_DIR (default build-tsan), SEGUE_TSAN_JOBS (compile jobs, default
# 2: one per core; more only slows each down) and SEGUE_TSAN_TEST_JOBS (tests at once, default 3:
# the tests wait on processes and sockets part of the time; measured 283 s at 3 against 320 s at
# 2, all passing).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
build=${SEGUE_TSAN_BUILD_DIR:-$root/build-tsan}
export CCACHE_DIR="${CCACHE_DIR:-$PWD/.cache/ccache}"

if [[ ! -f $build/build.ninja ]]; then
  cmake -S . -B "$build" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo -DSEGUE_SANITIZE=thread \
    -DSEGUE_UNITY_BUILD=ON \
    -DSEGUE_BENCH=OFF >/dev/null
fi
start=$SECONDS
# segue_integration_tests depends on segue, fake_musicgpt and fake_musicapi.
ninja -C "$build" -j "${SEGUE_TSAN_JOBS:-2}" segue_unit_tests segue_integration_tests
echo "tsan.sh: built in $((SECONDS - start)) s"

# Tests left out of the TSAN run, each with its reason (a ctest -E regex per entry).
# SEGUE_TSAN_EXCLUDE replaces the whole list (set it empty to run them all).
excluded=(
  # Two of the three chaos seeds (~45 s each under TSAN): the same code paths as seed 20240611,
  # which stays; all three run in the main CTest run. Keeps the clean-clone test run near 30 min.
  'Seeds/Chaos\.KillsAndFaultsLoseNothing/seed_(3|7)( .*)?'
)
default_exclude=""
if ((${#excluded[@]})); then
  default_exclude="^($(IFS='|'; echo "${excluded[*]}"))\$"
fi
exclude_regex=${SEGUE_TSAN_EXCLUDE-$default_exclude}

export TSAN_OPTIONS="halt_on_error=1 second_deadlock_stack=1 exitcode=66 suppressions=$root/tests/tsan.supp ${TSAN_OPTIONS:-}"
# clang 14's TSAN cannot place its shadow memory when the kernel randomizes mmap with more than
# 28 bits (newer kernels allow 32): run without address randomization there (children inherit it).
run=()
if [[ $(cat /proc/sys/vm/mmap_rnd_bits 2>/dev/null || echo 28) -gt 28 ]]; then
  run=(setarch "$(uname -m)" -R)
fi
start=$SECONDS
cd "$build"
args=(-L '^(unit|integration)$' --output-on-failure -j "${SEGUE_TSAN_TEST_JOBS:-3}" --timeout 600)
if [[ -n $exclude_regex ]]; then
  args+=(-E "$exclude_regex")
fi
"${run[@]}" ctest "${args[@]}" "$@"
echo "tsan.sh: tests ran in $((SECONDS - start)) s"

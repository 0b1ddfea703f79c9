#!/usr/bin/env bash
# Builds the libFuzzer targets (tests/fuzz) in build-fuzz with clang, ASan and UBSan, then runs
# each one for a while on a scratch copy of its seed corpus.
#
#   scripts/fuzz.sh [SECONDS-PER-TARGET] [TARGET...]     default: 60 s, every target
#
# The targets are those tests/fuzz/CMakeLists.txt registers (fuzz_http_request, fuzz_config, ...);
# each runs on a scratch copy of tests/fuzz/corpus/NAME/ with tests/fuzz/corpus/NAME.dict.
#
# Exits non-zero if a target fails to build or any run finds a crash, sanitizer report, timeout or
# out-of-memory; the input that did it is kept under build-fuzz/fuzz/crashes/TARGET/.
# Environment:
#   SEGUE_FUZZ_BUILD_DIR  build directory (default: build-fuzz at the repository root)
#   SEGUE_FUZZ_JOBS       parallel compile jobs, and targets run at once (default: 2)
#   SEGUE_FUZZ_ARGS       extra libFuzzer flags, e.g. "-seed=1 -only_ascii=1"
# Longer runs, crash reproduction and what each target covers: tests/fuzz/README.md.
set -euo pipefail

seconds=${1:-60}
shift || true
if ! [[ $seconds =~ ^[0-9]+$ ]] || ((seconds < 1)); then
    echo "usage: $0 [seconds-per-target] [target...]" >&2
    exit 2
fi
targets=("$@")

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
build=${SEGUE_FUZZ_BUILD_DIR:-$root/build-fuzz}
jobs=${SEGUE_FUZZ_JOBS:-2}
work=$build/fuzz

# --- Toolchain: clang with the libFuzzer and sanitizer runtimes -------------------------------------
pick_cxx() {
    local c
    for c in clang++ clang++-14; do
        if command -v "$c" >/dev/null 2>&1; then
            echo "$c"
            return
        fi
    done
}

# True if $1 can link a libFuzzer program with ASan and UBSan.
can_link_fuzzer() {
    local probe
    probe=$(mktemp -d)
    printf '%s\n' '#include <cstddef>' '#include <cstdint>' \
        'extern "C" int LLVMFuzzerTestOneInput(const uint8_t*, size_t) { return 0; }' \
        >"$probe/probe.cpp"
    if "$1" -fsanitize=fuzzer,address,undefined "$probe/probe.cpp" -o "$probe/probe" \
        >/dev/null 2>&1; then
        rm -rf "$probe"
        return 0
    fi
    rm -rf "$probe"
    return 1
}

cxx=$(pick_cxx)
if [[ -z $cxx ]] || ! can_link_fuzzer "$cxx"; then
    echo "fuzz.sh: clang with libFuzzer runtime missing; installing clang-14 libfuzzer-14-dev libclang-rt-14-dev" >&2
    sudo=""
    ((EUID == 0)) || sudo="sudo"
    $sudo apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq \
        clang-14 libfuzzer-14-dev libclang-rt-14-dev >/dev/null
    cxx=$(pick_cxx)
    if [[ -z $cxx ]] || ! can_link_fuzzer "$cxx"; then
        echo "fuzz.sh: ${cxx:-clang++} still cannot link -fsanitize=fuzzer,address,undefined" >&2
        exit 1
    fi
fi

# --- Configure and build (only the fuzz targets and what they link) ---------------------------------
configure=(cmake -S "$root" -B "$build" -G Ninja
    -DCMAKE_CXX_COMPILER="$cxx"
    -DCMAKE_BUILD_TYPE=RelWithDebInfo
    -DSEGUE_FUZZ=ON -DSEGUE_TESTS=OFF -DSEGUE_BENCH=OFF)
if command -v ccache >/dev/null 2>&1; then
    configure+=(-DCMAKE_CXX_COMPILER_LAUNCHER=ccache)
fi
echo "fuzz.sh: configuring $build ($cxx)"
mkdir -p "$build"
nice -n 10 "${configure[@]}" >"$build/fuzz-configure.log" 2>&1 || {
    cat "$build/fuzz-configure.log" >&2
    exit 1
}
mapfile -t all_targets < <(grep -v '^$' "$build/tests/fuzz/targets.txt")
if ((${#targets[@]})); then
    for t in "${targets[@]}"; do
        if [[ " ${all_targets[*]} " != *" $t "* ]]; then
            echo "fuzz.sh: unknown target $t (known: ${all_targets[*]})" >&2
            exit 2
        fi
    done
else
    targets=("${all_targets[@]}")
fi
echo "fuzz.sh: building ${targets[*]}"
nice -n 10 cmake --build "$build" --target "${targets[@]}" -j "$jobs"

# --- Run ---------------------------------------------------------------------------------------------
export ASAN_OPTIONS=${ASAN_OPTIONS:-detect_leaks=1:detect_stack_use_after_return=1}
export UBSAN_OPTIONS=${UBSAN_OPTIONS:-print_stacktrace=1:halt_on_error=1}
read -r -a extra_args <<<"${SEGUE_FUZZ_ARGS:-}"

# One target's run; its summary line goes to $work/TARGET.summary. Exits non-zero on a finding.
run_target() {
    local target=$1
    local name=${target#fuzz_}
    local seeds=$root/tests/fuzz/corpus/$name
    local corpus=$work/corpus/$target
    local crashes=$work/crashes/$target
    local log=$work/$target.log
    rm -rf "$corpus"
    mkdir -p "$corpus" "$crashes"
    if [[ -d $seeds ]]; then
        cp -R "$seeds/." "$corpus/"
    fi
    local args=(-max_total_time="$seconds" -max_len=65536 -timeout=10 -rss_limit_mb=2048
        -print_final_stats=1 -artifact_prefix="$crashes/")
    if [[ -f $root/tests/fuzz/corpus/$name.dict ]]; then
        args+=(-dict="$root/tests/fuzz/corpus/$name.dict")
    fi
    local seed_count before start rc elapsed
    seed_count=$(find "$corpus" -type f | wc -l)
    before=$(find "$crashes" -type f | wc -l)
    echo "fuzz.sh: running $target for ${seconds}s (log: $log)"
    start=$SECONDS
    set +e
    nice -n 10 "$build/tests/fuzz/$target" "${args[@]}" "${extra_args[@]}" "$corpus" >"$log" 2>&1
    rc=$?
    set -e
    elapsed=$((SECONDS - start))

    local execs rate last cov ft corp line
    execs=$(sed -n 's/^stat::number_of_executed_units: *//p' "$log" | tail -n1)
    rate=$(sed -n 's/^stat::average_exec_per_sec: *//p' "$log" | tail -n1)
    last=$(grep -E '^#[0-9]+.* cov: ' "$log" | tail -n1 || true)
    cov=$(sed -n 's/.* cov: \([0-9]*\).*/\1/p' <<<"$last")
    ft=$(sed -n 's/.* ft: \([0-9]*\).*/\1/p' <<<"$last")
    corp=$(sed -n 's/.* corp: \([0-9]*\)\/.*/\1/p' <<<"$last")
    line="$target: execs=${execs:-?} seconds=$elapsed exec/s=${rate:-?} cov=${cov:-?} ft=${ft:-?} corpus=${corp:-?} (seeds $seed_count)"
    if ((rc != 0)); then
        local kind input="(none written)"
        kind=$(grep -m1 -E 'invariant broken|^fuzz_config: |Boost assertion|runtime error: |^SUMMARY: |ERROR: libFuzzer' "$log" || true)
        if (($(find "$crashes" -type f | wc -l) > before)); then
            # shellcheck disable=SC2012  # libFuzzer names artifacts crash-<sha1> etc.
            input=$crashes/$(ls -t "$crashes" | head -n1)
        fi
        line="$line FAILED (exit $rc): ${kind:-see the log}; input: $input"
        # One write, so the tails of two targets failing at once do not interleave.
        printf -- '---- last lines of %s ----\n%s\n----\n' "$log" \
            "$(grep -vE '^#[0-9]+\s+(NEW|REDUCE|pulse|RELOAD)' "$log" | tail -n 40)" >&2
    else
        line="$line ok"
    fi
    echo "$line" >"$work/$target.summary"
    return "$rc"
}

# The targets run side by side, $jobs at a time: each is one process on one core.
mkdir -p "$work"
failed=0
running=0
for target in "${targets[@]}"; do
    rm -f "$work/$target.summary"
    if ((running >= jobs)); then
        wait -n || failed=1
        running=$((running - 1))
    fi
    run_target "$target" &
    running=$((running + 1))
done
while ((running > 0)); do
    wait -n || failed=1
    running=$((running - 1))
done

echo "fuzz.sh: summary"
for target in "${targets[@]}"; do
    if [[ -f $work/$target.summary ]]; then
        echo "  $(cat "$work/$target.summary")"
    else
        echo "  $target: no summary (the run died before writing one)"
        failed=1
    fi
done
exit "$failed"

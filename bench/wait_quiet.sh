#!/usr/bin/env bash
# Waits until the machine looks quiet enough to measure: at most one other runnable task
# (/proc/stat procs_running <= 2, counting this check itself) for 5 consecutive seconds, and
# then the hypervisor lets this VM have its CPUs: a 2 s busy loop on every core loses < 5 % to
# steal (an idle VM shows no steal, so only a busy probe tells; BENCH_MAX_STEAL overrides 5).
# Exits 0 when quiet, 1 after the timeout. Used before each run of the series in README.md:
#
#   bench/wait_quiet.sh 300 && BENCH_PIN=1 bench/healthz.sh 10 64
#
#   bench/wait_quiet.sh [timeout-seconds]       (default 300)
set -euo pipefail
max="${1:-300}"
start=$SECONDS
ok=0
while ((SECONDS - start < max)); do
  r=$(awk '/^procs_running/ {print $2}' /proc/stat)
  if ((r <= 2)); then ok=$((ok + 1)); else ok=0; fi
  if ((ok >= 5)); then
    before=$(awk '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; print t, $9; exit }' /proc/stat)
    pids=()
    for ((c = 0; c < $(nproc); c++)); do (end=$((SECONDS + 2)); while ((SECONDS < end)); do :; done) & pids+=($!); done
    wait "${pids[@]}"
    steal=$(awk -v b="$before" '$1 == "cpu" { t = 0; for (i = 2; i <= 9; i++) t += $i; split(b, x, " ");
      d = t - x[1]; printf "%.0f", (d > 0 ? 100 * ($9 - x[2]) / d : 0); exit }' /proc/stat)
    if ((steal >= ${BENCH_MAX_STEAL:-5})); then
      echo "steal ${steal}% during the probe: waiting" >&2
      ok=0
      sleep 5
      continue
    fi
    echo "steal ${steal}% during the probe"
    echo "quiet after $((SECONDS - start)) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
    exit 0
  fi
  sleep 1
done
echo "not quiet after $max s (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
exit 1

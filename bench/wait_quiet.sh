#!/usr/bin/env bash
# Waits until the machine looks quiet enough to measure: at most one other runnable task
# (/proc/stat procs_running <= 2, counting this check itself) for 5 consecutive seconds.
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
    echo "quiet after $((SECONDS - start)) s (load $(cut -d' ' -f1-3 /proc/loadavg))"
    exit 0
  fi
  sleep 1
done
echo "not quiet after $max s (load $(cut -d' ' -f1-3 /proc/loadavg))" >&2
exit 1

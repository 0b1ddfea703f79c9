#!/usr/bin/env bash
# Load scenario: GET /healthz over keep-alive, segue vs nginx serving a static 200, same run,
# same machine, same client (wrk). Prints requests/s, p50/p99 latency, errors, CPU per request,
# each server's and wrk's CPU use, idle and peak RSS of segue, and segue/nginx ratios.
#
#   BENCH_PIN=1 bench/healthz.sh 10 64                    (pinned: the method the targets use)
#   bench/healthz.sh [duration-seconds] [connections]     (shared; defaults: 10 64)
#
# Pinned mode (BENCH_PIN=1): each server runs on CPU 0 only with 1 worker (segue io_threads: 1,
# nginx worker_processes 1); wrk runs on CPU 1 only with 1 thread (taskset). The same for both
# servers; the client no longer steals the server's core, so latency reflects the server, not
# the scheduler. Needs >= 2 CPUs.
#
# Shared mode (default): both servers get 2 workers (segue io_threads: 2, nginx
# worker_processes 2), wrk gets 2 threads, nobody is pinned: on a 2-core machine 4 busy threads
# share 2 cores and p99 measures time slices (both servers miss 2 ms); requests/s still compare.
#
# BENCH_ACCESS_LOG=1: segue writes its access line per request (log.level info, log.access true,
# the shipped default) to its log file; otherwise it logs warnings only, as nginx (access_log
# off) does.
#
# "CPU us/req" (the server's user+system CPU per request) barely depends on what else runs;
# "server CPU"/"wrk CPU" (% of one core) show whether a run got the cores: the script prints a
# WARNING (do not use the run) when other load on the machine starved it.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
duration="${1:-10}"
conns="${2:-64}"
pin="${BENCH_PIN:-0}"
log_level=warn log_access=false
if [[ "${BENCH_ACCESS_LOG:-0}" == 1 ]]; then log_level=info log_access=true; fi
bench_setup

if [[ "$pin" == 1 ]]; then
  (($(nproc) >= 2)) || { echo "BENCH_PIN=1 needs 2 CPUs" >&2; exit 1; }
  workers=1 server_cpu=0 wrk_threads=1 wrk_pin=(taskset -c 1) mode="pinned: server on CPU 0 (1 worker), wrk -t1 on CPU 1"
else
  workers=2 server_cpu="" wrk_threads=2 wrk_pin=() mode="shared: 2 server workers, wrk -t2, no pinning"
fi
bench_machine_note
echo "# mode: $mode; $duration s, $conns connections"

# --- nginx: static 200 with the same body ---
start_nginx nginx "$workers" \
  "    location = /healthz { default_type application/json; return 200 '{\"status\":\"ok\"}'; }" \
  "$server_cpu"
nport=$nginx_port

# --- segue ---
cat >"$work/segue.yaml" <<YAML
server:
  listen: 127.0.0.1:0
  io_threads: $workers
  drain_timeout: 2s
log:
  level: $log_level
  access: $log_access
storage:
  sqlite_path: $work/segue.db
  blob_dir: $work/blobs
YAML
start_segue "$work/segue.yaml" "$server_cpu"
sport=$segue_port
sleep 0.3
idle_rss_kb=$(rss_kb "$segue_pid")

run_wrk() {  # url -> "rps p50_ms p99_ms requests non2xx socket_errors"; wrk's CPU in $work/wrk.time
  local TIMEFORMAT='%U %S %R'
  { time "${wrk_pin[@]}" wrk -t"$wrk_threads" -c"$conns" -d"${duration}s" --latency "$1" >"$work/wrk.out" 2>&1; } 2>"$work/wrk.time"
  wrk_parse "$work/wrk.out"
}
wrk_cpu() { awk '{ if ($3>0) printf "%.0f", ($1+$2)/$3*100 }' "$work/wrk.time"; }  # % of one core
srv_cpu() { awk -v t="$1" -v hz="$clk_tck" -v d="$duration" 'BEGIN{ printf "%.0f", t/hz/d*100 }'; }

# Warm both, then measure.
"${wrk_pin[@]}" wrk -t"$wrk_threads" -c"$conns" -d2s "http://127.0.0.1:$nport/healthz" >/dev/null 2>&1
"${wrk_pin[@]}" wrk -t"$wrk_threads" -c"$conns" -d2s "http://127.0.0.1:$sport/healthz" >/dev/null 2>&1
# CPU time each server spent during its measured run (all its threads/workers).
mapfile -t nworkers < <(nginx_workers "$work/nginx/nginx.pid")
c0=$(cpu_ticks "${nworkers[@]}")
read -r n_rps n_p50 n_p99 n_n n_bad n_err < <(run_wrk "http://127.0.0.1:$nport/healthz")
n_ticks=$(($(cpu_ticks "${nworkers[@]}") - c0))
n_wrk=$(wrk_cpu)
c0=$(cpu_ticks "$segue_pid")
read -r s_rps s_p50 s_p99 s_n s_bad s_err < <(run_wrk "http://127.0.0.1:$sport/healthz")
s_ticks=$(($(cpu_ticks "$segue_pid") - c0))
s_wrk=$(wrk_cpu)
segue_alive
peak_rss_kb=$(hwm_kb "$segue_pid")

# CPU us/req: the server's user+system CPU per request; server/wrk CPU: % of one core.
printf '%-8s %12s %10s %10s %8s %8s %11s %11s %9s\n' server 'requests/s' 'p50 ms' 'p99 ms' 'non-2xx' 'sockerr' 'CPU us/req' 'server CPU' 'wrk CPU'
printf '%-8s %12.0f %10.3f %10.3f %8d %8d %11s %10s%% %8s%%\n' nginx "$n_rps" "$n_p50" "$n_p99" "$n_bad" "$n_err" \
  "$(us_per_req "$n_ticks" "$n_n")" "$(srv_cpu "$n_ticks")" "$n_wrk"
printf '%-8s %12.0f %10.3f %10.3f %8d %8d %11s %10s%% %8s%%\n' segue "$s_rps" "$s_p50" "$s_p99" "$s_bad" "$s_err" \
  "$(us_per_req "$s_ticks" "$s_n")" "$(srv_cpu "$s_ticks")" "$s_wrk"
# A run where the servers and wrk got much less CPU than the cores have measured the other
# load on the machine, not the servers: say so.
for row in "nginx $(srv_cpu "$n_ticks") $n_wrk" "segue $(srv_cpu "$s_ticks") $s_wrk"; do
  read -r who scpu wcpu <<<"$row"
  if [[ "$pin" == 1 ]] && ((scpu < 80)); then
    echo "WARNING: $who got only $scpu% of its core: other load on the machine; do not use this run"
  elif [[ "$pin" != 1 ]] && ((scpu + wcpu < 160)); then
    echo "WARNING: $who + wrk got only $((scpu + wcpu))% of 2 cores: other load on the machine; do not use this run"
  fi
done
printf 'segue/nginx requests/s ratio: %s (target >= 0.60); CPU per request ratio: %s\n' \
  "$(ratio "$s_rps" "$n_rps")" "$(ratio "$(us_per_req "$s_ticks" "$s_n")" "$(us_per_req "$n_ticks" "$n_n")")"
printf 'segue p99: %s ms (target < 2 ms at %s connections)\n' "$s_p99" "$conns"
printf 'segue RSS: idle %s MiB (target < 20 MiB), peak %s MiB\n' "$(mib "$idle_rss_kb")" "$(mib "$peak_rss_kb")"

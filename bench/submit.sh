#!/usr/bin/env bash
# Load scenario: task submission. POST /v1/extensions with a JSON body over keep-alive, against
# GET /healthz on the same segue process in the same run (wrk + bench/submit.lua, which counts
# every response by status code).
#
#   bench/submit.sh [duration-seconds] [connections]      (defaults: 10 32)
#   BENCH_PIN=1 bench/submit.sh 10 32                     (segue on CPU 0, wrk -t1 on CPU 1)
#   BENCH_SOURCE=file bench/submit.sh 10 32               (extra: the same request as multipart
#       with a 6 s, 8 kHz mono WAV of 96 KB as audio_file: the accepted path while the sandbox
#       takes uploaded files only; each 202 also spools, fsyncs and probes the file)
#
# Segue: a tenant, durable SQLite (storage.sync_full: true: every commit is fsynced before the
# 202 leaves) in a temp dir, log.access: false (log.level: info, so the one "task created" line
# per task is part of the cost), io_threads 2 (1 when pinned). providers.sandbox.delay: 10m
# keeps the sandbox's DSP (the poll step) out of the measurement; the engine's submit step
# (claim the job, call the sandbox, write the update: two more write transactions per task)
# does run during it, as it would in production.
#
# Body: {"audio_url":"http://127.0.0.1:<nginx>/song.wav","extend_after":5,"length":5,
# "num_outputs":1}; nginx serves a 10 s WAV there (segue downloads it only in the poll step,
# after the delay, so not during the run; fetch.allow_cidrs lets it reach 127.0.0.1 then).
# Builds before ac571c1 (sandbox without URL sources) answer 422: the script reports the status
# mix and labels such a run "validation path only".
#
# Targets: >= 2,000 accepted (202) extensions/s and p99 < 10 ms at 32 connections.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
duration="${1:-10}"
conns="${2:-32}"
pin="${BENCH_PIN:-0}"
source_kind="${BENCH_SOURCE:-url}"
[[ "$source_kind" == url || "$source_kind" == file ]] || { echo "BENCH_SOURCE must be url or file" >&2; exit 2; }
key="sk-bench-$RANDOM$RANDOM"
bench_setup

if [[ "$pin" == 1 ]]; then
  (($(nproc) >= 2)) || { echo "BENCH_PIN=1 needs 2 CPUs" >&2; exit 1; }
  io_threads=1 segue_cpu=0 helper_cpu=1 wrk_threads=1 wrk_pin=(taskset -c 1)
  mode="pinned: segue on CPU 0 (io_threads 1), wrk -t1 and nginx on CPU 1"
else
  io_threads=2 segue_cpu="" helper_cpu="" wrk_threads=2 wrk_pin=()
  mode="shared: segue io_threads 2, wrk -t2, no pinning"
fi
bench_machine_note
echo "# mode: $mode; $duration s, $conns connections, storage.sync_full: true, source: $source_kind"

# nginx: the song the audio_url points at (a 10 s WAV).
start_nginx nginx 1 "    location / { }" "$helper_cpu"
bench/make_wav.sh "$work/nginx/root/song.wav" 10
audio_url="http://127.0.0.1:$nginx_port/song.wav"
curl -sf -o /dev/null "$audio_url" || { echo "bench: nginx does not serve $audio_url" >&2; exit 1; }

cat >"$work/segue.yaml" <<YAML
server:
  listen: 127.0.0.1:0
  io_threads: $io_threads
  drain_timeout: 2s
log:
  level: ${BENCH_LOG_LEVEL:-info}
  access: false
tenants:
  - name: bench
    api_keys: ["$key"]
storage:
  sqlite_path: $work/db/segue.db
  blob_dir: $work/blobs
  sync_full: true
providers:
  sandbox:
    delay: 10m
YAML
# Builds with the audio_url guard refuse loopback downloads unless allowed. The download only
# happens in the sandbox's poll step (after the 10 m delay), so never during the measurement.
"$work/segue.bin" --config-docs >"$work/config-docs.md" 2>/dev/null || true
if grep -q 'fetch.allow_cidrs' "$work/config-docs.md"; then
  printf 'fetch:\n  allow_cidrs: ["127.0.0.1/32"]\n' >>"$work/segue.yaml"
  # nginx listens on an ephemeral port; builds that restrict URL ports allow any here.
  grep -q 'fetch.allowed_ports' "$work/config-docs.md" && printf '  allowed_ports: []\n' >>"$work/segue.yaml"
fi
start_segue "$work/segue.yaml" "$segue_cpu"
base="http://127.0.0.1:$segue_port"
body="{\"audio_url\":\"$audio_url\",\"extend_after\":5,\"length\":5,\"num_outputs\":1}"
if [[ "$source_kind" == file ]]; then
  bench/make_wav.sh "$work/small.wav" 6 8000 1
  lua_args=(file "$key" "$work/small.wav")
  label="POST /v1/extensions (multipart, $(($(stat -c %s "$work/small.wav") / 1000)) KB WAV)"
  probe_status=$(curl -s -o "$work/probe.json" -w '%{http_code}' -H "Authorization: Bearer $key" \
    -F "audio_file=@$work/small.wav" -F extend_after=5 -F length=5 -F num_outputs=1 "$base/v1/extensions")
else
  lua_args=(post "$key" "$audio_url")
  label="POST /v1/extensions (JSON)"
  probe_status=$(curl -s -o "$work/probe.json" -w '%{http_code}' -H "Authorization: Bearer $key" \
    -H 'Content-Type: application/json' --data-binary "$body" "$base/v1/extensions")
fi

# One request by hand: what does this build answer?
echo "# one request by hand: HTTP $probe_status $(head -c 300 "$work/probe.json")"
idle_rss_kb=$(rss_kb "$segue_pid")

metric() {  # sum of a metric's samples whose line matches a regex, from /metrics now
  curl -s "$base/metrics" | awk -v re="$1" '$0 !~ /^#/ && $0 ~ re { s += $NF } END { printf "%.6f\n", s }'
}

wrk_lua() {  # url out mode [args...]
  local url=$1 out=$2
  shift 2
  "${wrk_pin[@]}" wrk -t"$wrk_threads" -c"$conns" -d"${duration}s" --latency -s bench/submit.lua \
    "$url" -- "$@" >"$out" 2>&1
}

# /healthz first (warm-up, then measured), while no task exists yet; then the POST warm-up
# (2 s: it creates tasks, as a running gateway has) and the measured POST run.
"${wrk_pin[@]}" wrk -t"$wrk_threads" -c"$conns" -d2s -s bench/submit.lua "$base/healthz" -- get >/dev/null 2>&1
c0=$(cpu_ticks "$segue_pid")
wrk_lua "$base/healthz" "$work/healthz.out" get
h_ticks=$(($(cpu_ticks "$segue_pid") - c0))
segue_alive
"${wrk_pin[@]}" wrk -t"$wrk_threads" -c"$conns" -d2s -s bench/submit.lua "$base/v1/extensions" -- "${lua_args[@]}" >/dev/null 2>&1
segue_alive
created0=$(metric '^segue_tasks_created_total')
submitted0=$(metric '^segue_engine_jobs_total[{]kind="submit"')
wcount0=$(metric '^segue_store_operation_duration_seconds_count[{]op="write"')
wsum0=$(metric '^segue_store_operation_duration_seconds_sum[{]op="write"')
c0=$(cpu_ticks "$segue_pid")
w0=$(thread_ticks "$segue_pid" store-writer)
stat0=$(cpu_split_snapshot)
wrk_lua "$base/v1/extensions" "$work/submit.out" "${lua_args[@]}"
s_ticks=$(($(cpu_ticks "$segue_pid") - c0))
w_ticks=$(($(thread_ticks "$segue_pid" store-writer) - w0))
machine_split=$(cpu_split "$stat0")
segue_alive
created1=$(metric '^segue_tasks_created_total')
submitted1=$(metric '^segue_engine_jobs_total[{]kind="submit"')
wcount1=$(metric '^segue_store_operation_duration_seconds_count[{]op="write"')
wsum1=$(metric '^segue_store_operation_duration_seconds_sum[{]op="write"')
peak_rss_kb=$(hwm_kb "$segue_pid")

read -r h_rps h_p50 h_p99 h_n h_bad h_err < <(wrk_parse "$work/healthz.out")
read -r s_rps s_p50 s_p99 s_n s_bad s_err < <(wrk_parse "$work/submit.out")
# wall time of the run from wrk's own figures (requests / requests per second)
s_secs=$(awk -v n="$s_n" -v r="$s_rps" 'BEGIN{ if (r>0) printf "%.3f", n/r; else print 0 }')
n202=$(awk '$1=="status" && $2==202 {print $3}' "$work/submit.out")
n202=${n202:-0}
accepted_rps=$(awk -v a="$n202" -v s="$s_secs" 'BEGIN{ if (s>0) printf "%.0f", a/s; else print 0 }')
mix=$(awk '$1=="status" { printf "%s%s x %s", sep, $2, $3; sep=", " }' "$work/submit.out")
h_mix=$(awk '$1=="status" { printf "%s%s x %s", sep, $2, $3; sep=", " }' "$work/healthz.out")
lua_errs=$(awk '$1=="errors" {print}' "$work/submit.out")

printf '%-36s %12s %12s %10s %10s %12s\n' run 'requests/s' 'accepted/s' 'p50 ms' 'p99 ms' 'CPU us/req'
printf '%-36s %12.0f %12s %10.3f %10.3f %12s\n' 'GET /healthz' "$h_rps" - "$h_p50" "$h_p99" "$(us_per_req "$h_ticks" "$h_n")"
printf '%-36s %12.0f %12s %10.3f %10.3f %12s\n' "$label" "$s_rps" "$accepted_rps" "$s_p50" "$s_p99" "$(us_per_req "$s_ticks" "$s_n")"
echo "status mix, POST:    ${mix:-none}   ($lua_errs)"
echo "status mix, healthz: ${h_mix:-none}"
echo "machine CPU during the POST run: $machine_split"
# The store's writer thread (named by builds from 2026-11-22 on): every create is one unit on
# it, so its CPU per task and how busy it was say more than wall-clock figures on a noisy VM.
if ((w_ticks > 0)); then
  awk -v t="$w_ticks" -v hz="$(getconf CLK_TCK)" -v n="$s_n" -v secs="$s_secs" 'BEGIN {
    printf "store writer thread: %.0f us CPU per request, busy %.0f%% of the run\n",
      t / hz * 1e6 / (n > 0 ? n : 1), 100 * t / hz / (secs > 0 ? secs : 1) }'
fi
echo "POST latency distribution (wrk): $(awk '/Latency Distribution/ {on=1; next} on && /%/ {printf "%s %s  ", $1, $2} on && !/%/ {on=0}' "$work/submit.out")"
printf 'tasks created during the POST run (segue_tasks_created_total): %.0f (wrk counted %s x 202)\n' \
  "$(awk -v a="$created1" -v b="$created0" 'BEGIN{print a-b}')" "$n202"
awk -v c0="$wcount0" -v c1="$wcount1" -v s0="$wsum0" -v s1="$wsum1" -v secs="$s_secs" 'BEGIN {
  n = c1 - c0; if (n > 0) printf "store write transactions during the POST run: %d (%.0f/s), mean %.2f ms each (queue + commit + fsync)\n", n, n/secs, (s1-s0)/n*1000 }'
printf 'segue/healthz requests/s ratio: %s\n' "$(ratio "$s_rps" "$h_rps")"
# The engine's submit step (claim, call the sandbox, write the update) for the tasks accepted:
# how far behind the API was it at the end of the run, and how long until it caught up?
curl -s -o "$work/metrics.txt" "$base/metrics"
if grep -q '^segue_engine_jobs_total{kind="submit"' "$work/metrics.txt"; then
  awk -v c0="$created0" -v c1="$created1" -v s0="$submitted0" -v s1="$submitted1" -v secs="$s_secs" 'BEGIN {
    printf "engine submit jobs during the POST run: %.0f (%.0f/s) for %.0f tasks created; backlog at the end: %.0f\n",
      s1-s0, (s1-s0)/secs, c1-c0, c1-s1 }'
  t0=$SECONDS
  behind() { awk -v c="$(metric '^segue_tasks_created_total')" -v s="$(metric '^segue_engine_jobs_total[{]kind="submit"')" 'BEGIN{printf "%.0f", c-s}'; }
  while (($(behind) > 0)) && ((SECONDS - t0 < 120)); do sleep 0.5; done
  if (($(behind) > 0)); then
    echo "engine backlog still $(behind) tasks 120 s after the run"
  else
    echo "engine backlog drained within $((SECONDS - t0 + 1)) s after the run"
  fi
fi
printf 'segue RSS: before %s MiB, peak %s MiB; database %s, blobs %s\n' "$(mib "$idle_rss_kb")" "$(mib "$peak_rss_kb")" \
  "$(du -sh "$work/db" | cut -f1)" "$(du -sh "$work/blobs" 2>/dev/null | cut -f1)"
if ((n202 == 0)); then
  echo "NOTE: no request was accepted: these are VALIDATION PATH ONLY figures (auth, JSON parse,"
  echo "      validation, a $(awk '$1=="status" && $2!=202 {print $2; exit}' "$work/submit.out") problem response; no store write)."
  echo "      Targets (>= 2,000 accepted/s, p99 < 10 ms) cannot be judged from this run."
else
  printf 'accepted/s: %s (target >= 2000); p99: %s ms (target < 10 ms at %s connections)\n' \
    "$accepted_rps" "$s_p99" "$conns"
fi

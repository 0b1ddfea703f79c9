#!/usr/bin/env bash
# Webhook delivery: throughput (deliveries/s) and event-to-delivery latency of the real
# dispatcher, with signing, against a local receiver; baseline: the same signed POSTs sent
# straight by the same HTTP client, without the store, in the same run.
#
#   bench/webhooks.sh [events] [rate] [seconds]        (defaults: 20000 1000 10)
#   BENCH_CONCURRENCY=64 BENCH_BATCH=64                 webhooks.concurrency / webhooks.batch
#   BENCH_PER_TASK=10                                   events per task in the throughput backlog
#   BENCH_SYNC=normal                                   SQLite synchronous NORMAL (diagnosis only:
#                                                       production runs FULL)
#   WEBHOOK_BENCH_BIN=path                              measure that binary (else build/webhook_bench,
#                                                       rebuilt incrementally first)
#
# The driver is bench/webhook_bench.cpp, linked with segue_core: a fresh durable SQLite store in
# the temp dir (synchronous FULL, as production), events written by core::engine::append_event
# (event + outbox delivery in one write unit), the real events::dispatcher and net::http_client
# on one IO thread (as gateway/app.cpp runs them), tenant secrets from generate_secret(). The
# receiver is nginx (1 worker, `return 204`, no access log) on 127.0.0.1. Phases, in one process:
#   sign        CPU per delivery body and per signature
#   baseline    N signed POSTs, C in flight, no store
#   throughput  N events pre-loaded (tasks of BENCH_PER_TASK events), dispatcher started, timed
#               until the last outcome is committed
#   latency     a producer writes `rate` events/s for `seconds` s; delivered_at - event_at of
#               every delivery (p50/p90/p99/max)
#
# Target: >= 3,000 deliveries/s (the throughput phase).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
events="${1:-20000}"
rate="${2:-1000}"
seconds="${3:-10}"
conc="${BENCH_CONCURRENCY:-64}"
batch="${BENCH_BATCH:-64}"
per_task="${BENCH_PER_TASK:-10}"
sync="${BENCH_SYNC:-full}"
target=3000

cd "$(dirname "$0")/.."
if [[ -z "${WEBHOOK_BENCH_BIN:-}" ]]; then
  # bench/CMakeLists.txt is picked up at configure time: configure again if this build tree
  # predates it.
  if [[ -f build/build.ninja ]] && ! grep -q webhook_bench build/build.ninja; then
    cmake -S . -B build >/dev/null
  fi
  scripts/build.sh webhook_bench >/dev/null || {
    echo "bench: building webhook_bench failed (WEBHOOK_BENCH_BIN=path measures a built copy)" >&2
    exit 1
  }
fi
bin="${WEBHOOK_BENCH_BIN:-build/bench/webhook_bench}"
[[ -x "$bin" ]] || { echo "bench: $bin is not executable" >&2; exit 1; }
bench_setup
cp "$bin" "$work/webhook_bench"

printf '# %s  HEAD %s%s  binary %s of %s  %s cores  load %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
  "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
  "$(git diff --quiet HEAD -- gateway providers bench/webhook_bench.cpp 2>/dev/null || echo '+dirty')" \
  "$bin" "$(date -u -r "$bin" '+%F %H:%M:%SZ')" "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"

start_nginx recv 1 "    location / { return 204; }"
url="http://127.0.0.1:$nginx_port/hooks/segue"
code=$(curl -s -o /dev/null -w '%{http_code}' -X POST -d '{}' "$url")
[[ "$code" == 204 ]] || { echo "bench: the receiver answered $code, not 204" >&2; exit 1; }
workers=$(nginx_workers "$work/recv/nginx.pid" | tr '\n' ' ')

rc=0
"$work/webhook_bench" --url "$url" --dir "$work/db" --events "$events" --per-task "$per_task" \
  --concurrency "$conc" --batch "$batch" --rate "$rate" --seconds "$seconds" --sync "$sync" \
  --receiver-pids "$workers" | tee "$work/out.txt" || rc=$?

result=$(grep '^RESULT ' "$work/out.txt" || true)
[[ -n "$result" ]] || { echo "bench: webhook_bench printed no RESULT (exit $rc)" >&2; exit 1; }
echo
echo "$result" | awk -v target="$target" -v rc="$rc" '{
  for (i = 2; i <= NF; i++) { split($i, kv, "="); v[kv[1]] = kv[2] }
  printf "deliveries/s %s (baseline, no store: %s requests/s; ratio %.2f)\n", v["throughput_dps"],
    v["baseline_rps"], v["baseline_rps"] > 0 ? v["throughput_dps"] / v["baseline_rps"] : 0
  printf "event -> delivery at %s events/s: p50 %s ms, p90 %s ms, p99 %s ms, max %s ms\n",
    v["lat_rate"], v["lat_p50_ms"], v["lat_p90_ms"], v["lat_p99_ms"], v["lat_max_ms"]
  verdict = (v["throughput_dps"] + 0 >= target) ? "MET" : "MISSED"
  printf "VERDICT: >= %d deliveries/s %s (%s/s)%s\n", target, verdict, v["throughput_dps"],
    (v["problems"] + 0 > 0 || rc != 0) ? "; WARNING: failed or undelivered deliveries, see above" : ""
  if (v["starved"] != "none")
    printf "WARNING: other load starved the threads under test in: %s (discard this run)\n", v["starved"]
}'
exit "$rc"

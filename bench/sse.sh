#!/usr/bin/env bash
# Load scenario: Server-Sent Events at scale (bench/sse_bench.cpp does the measuring).
#
#   idle     IDLE_TASKS tasks that stay queued/submitted (sandbox delay 10m), PER_TASK streams
#            each: the gateway's CPU over S seconds and its RSS grown per stream.
#   active   ACTIVE more tasks, one stream each, while the idle streams stay open; every active
#            task is canceled, RATE per second: event-to-subscriber latency (cancel sent ->
#            its extension.canceled frame on the stream) next to the cancel's own response time
#            (the commit the event is part of): the baseline of the same run.
#   close    all streams closed by the client: time until segue_sse_clients is 0.
#
#   bench/sse.sh [idle-tasks] [per-task] [active] [rate] [seconds]   (defaults: 100 100 1000 200 20)
#   SEGUE_BIN=path (e.g. a build of an older commit, for a before/after in one session);
#   SSE_BENCH_BIN=path (default build/bench/sse_bench).
#
# Durable SQLite (sync_full), io_threads 2, log.level warn, server.max_connections 30000.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
idle_tasks="${1:-100}"
per_task="${2:-100}"
active="${3:-1000}"
rate="${4:-200}"
seconds="${5:-20}"
key="sk-bench-$RANDOM$RANDOM"
bench_setup
bench_machine_note
tool="${SSE_BENCH_BIN:-build/bench/sse_bench}"
[[ -x $tool ]] || scripts/build.sh sse_bench
cp "$tool" "$work/sse_bench.bin"
# Each stream is a socket on both sides (the bench and the gateway are separate processes).
need=$(( idle_tasks * per_task + active + 1000 ))
ulimit -n "$(ulimit -Hn)"
(( $(ulimit -n) >= need )) || { echo "bench: ulimit -n $(ulimit -n) < $need" >&2; exit 1; }

start_nginx media 1 "location / { }"
bench/make_wav.sh "$work/media/root/song.wav" 10

sport=$(free_port)
cat >"$work/segue.yaml" <<YAML
server:
  listen: 127.0.0.1:$sport
  io_threads: 2
  drain_timeout: 2s
  max_connections: 30000
log:
  level: warn
  access: false
tenants:
  - name: bench
    api_keys: ["$key"]
    credits: 1e9
storage:
  sqlite_path: $work/db/segue.db
  blob_dir: $work/blobs
  sync_full: true
fetch:
  allow_cidrs: ["127.0.0.1/32"]
  allowed_ports: []
providers:
  sandbox:
    delay: 10m
YAML
start_segue "$work/segue.yaml"
echo "# $idle_tasks idle tasks x $per_task streams, then $active active tasks x 1 stream canceled at $rate/s; ${seconds} s idle window; load $(cut -d' ' -f1-3 /proc/loadavg)"
"$work/sse_bench.bin" --port "$segue_port" --key "$key" --pid "$segue_pid" \
  --audio-url "http://127.0.0.1:$nginx_port/song.wav" --idle-tasks "$idle_tasks" \
  --idle-per-task "$per_task" --active "$active" --rate "$rate" --seconds "$seconds"
segue_alive
echo "# after: load $(cut -d' ' -f1-3 /proc/loadavg)"

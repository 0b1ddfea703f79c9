#!/usr/bin/env bash
# Load scenario: does the gateway stay as fast with a big database? The same measurements on
#   small   one finished task made through the API (the template) plus 1,000 copies of it,
#   big     the template plus TASKS copies, PER_TASK events each (seeded straight with SQL:
#           10 tenants, `bench` owns a tenth, so the list pages of both are full pages),
# one after the other in the same run, same binary:
#   start-up  launch -> /healthz answers (the port file is written after migrations and the
#             store is open); RSS after start and at the end (VmHWM)
#   GET       /v1/extensions/{id}, /v1/extensions?limit=20 (the bench tenant's newest page),
#             /v1/extensions/{id}/events: wrk, CONNS connections, DURATION s each
#   accept    POST /v1/extensions (JSON, durable SQLite, sandbox delay 10m as in submit.sh),
#             2 s warm-up then DURATION s
#
#   bench/big_db.sh [tasks] [events-per-task] [duration-seconds] [connections]
#                                                        (defaults: 1000000 10 10 32)
#   SEGUE_BIN=path measures that binary. The seeded databases (4.6 GB for the defaults, ~8 min
#   to make) are kept in BENCH_DB_CACHE (default /tmp/segue-big-db) and reused when the counts
#   match; they are made with the binary measured (its schema), so delete them for a binary
#   with other migrations. Each run measures a fresh copy (its writes are thrown away).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
tasks="${1:-1000000}"
per_task="${2:-10}"
duration="${3:-10}"
conns="${4:-32}"
key="sk-bench-big"
cache="${BENCH_DB_CACHE:-/tmp/segue-big-db}"
bench_setup
bench_need sqlite3 sqlite3
bench_machine_note
start_nginx media 1 "location / { }"
bench/make_wav.sh "$work/media/root/song.wav" 10
audio_url="http://127.0.0.1:$nginx_port/song.wav"

config() {  # db-path delay
  cat <<YAML
server:
  listen: 127.0.0.1:0
  io_threads: 2
  drain_timeout: 2s
log:
  level: info
  access: false
tenants:
  - name: bench
    api_keys: ["$key"]
    credits: 1e9
storage:
  sqlite_path: $1
  blob_dir: $work/blobs
  sync_full: true
fetch:
  allow_cidrs: ["127.0.0.1/32"]
  allowed_ports: []
providers:
  sandbox:
    delay: $2
YAML
}
stop_segue() {
  kill -TERM "$segue_pid" 2>/dev/null || true
  for _ in $(seq 100); do kill -0 "$segue_pid" 2>/dev/null || break; sleep 0.05; done
}
start_timed() {  # yaml -> start_ms (launch to /healthz)
  local t0 t1
  t0=$(date +%s%3N)
  start_segue "$1"
  t1=$(date +%s%3N)
  echo $((t1 - t0)) >"$work/start_ms"
}

seed() {  # db count: adds `count` finished tasks (and per_task events each) copied from the template
  local db=$1 n=$2
  sqlite3 "$db" <<SQL
PRAGMA journal_mode = WAL;
PRAGMA synchronous = OFF;
PRAGMA cache_size = -262144;
BEGIN;
CREATE TEMP TABLE n AS SELECT value AS i FROM generate_series(1, $n);
INSERT INTO tasks (id, tenant, status, provider, request_json, error_json, warnings_json,
                   idempotency_key, num_outputs, created_at, updated_at, version)
  SELECT printf('ext_0seed%017d', n.i), CASE WHEN n.i % 10 = 0 THEN 'bench' ELSE 'other' || (n.i % 10) END,
         t.status, t.provider, t.request_json, t.error_json, t.warnings_json, '', t.num_outputs,
         t.created_at - ($n - n.i) * 2, t.updated_at - ($n - n.i) * 2, t.version
  FROM n, tasks t WHERE t.id = '$tid' ORDER BY n.i;
INSERT INTO outputs (task_id, idx, status, data_json, updated_at)
  SELECT printf('ext_0seed%017d', n.i), o.idx, o.status, o.data_json, o.updated_at
  FROM n, outputs o WHERE o.task_id = '$tid' ORDER BY n.i, o.idx;
INSERT INTO attempts (task_id, number, provider, provider_task_id, callback_token, status,
                      error_json, state_json, started_at, finished_at)
  SELECT printf('ext_0seed%017d', n.i), a.number, a.provider, a.provider_task_id || n.i, '',
         a.status, a.error_json, a.state_json, a.started_at, a.finished_at
  FROM n, attempts a WHERE a.task_id = '$tid' ORDER BY n.i, a.number;
CREATE TEMP TABLE tev AS SELECT ROW_NUMBER() OVER (ORDER BY seq) AS k, * FROM events WHERE task_id = '$tid';
INSERT INTO events (id, task_id, tenant, seq, type, data_json, created_at)
  SELECT printf('evt_0seed%012d_%03d', n.i, s.value), printf('ext_0seed%017d', n.i),
         CASE WHEN n.i % 10 = 0 THEN 'bench' ELSE 'other' || (n.i % 10) END, s.value, e.type,
         e.data_json, e.created_at - ($n - n.i) * 2
  FROM n, generate_series(1, $per_task) s
  JOIN tev e ON e.k = ((s.value - 1) % (SELECT COUNT(*) FROM tev)) + 1 ORDER BY n.i, s.value;
COMMIT;
PRAGMA wal_checkpoint(TRUNCATE);
ANALYZE;
SQL
}

mkdir -p "$cache"
if [[ -s "$cache/small.db" && -s "$cache/big.db" && "$(cat "$cache/params" 2>/dev/null)" == "$tasks $per_task" ]]; then
  echo "# reusing the databases in $cache"
else
  rm -f "$cache"/*.db*
  # The template: one task through the API, to the end.
  config "$cache/small.db" 200ms >"$work/t.yaml"
  start_segue "$work/t.yaml"
  tid=$(curl -s -H "Authorization: Bearer $key" -H 'Content-Type: application/json' \
    --data-binary "{\"audio_url\":\"$audio_url\",\"extend_after\":5,\"length\":5,\"num_outputs\":1}" \
    "http://127.0.0.1:$segue_port/v1/extensions" | sed 's/.*"id":"\([^"]*\)".*/\1/')
  st=""
  for _ in $(seq 300); do
    st=$(curl -s -H "Authorization: Bearer $key" "http://127.0.0.1:$segue_port/v1/extensions/$tid" | sed 's/.*"status":"\([a-z_]*\)".*/\1/')
    [[ $st == succeeded ]] && break
    sleep 0.1
  done
  [[ $st == succeeded ]] || { echo "bench: the template task did not succeed ($st)" >&2; exit 1; }
  stop_segue
  echo "$tid" >"$cache/template_id"
  sqlite3 "$cache/small.db" "VACUUM INTO '$cache/template.db'"
  rm -f "$cache"/small.db*
  s0=$(date +%s)
  # small: 1,000 copies (100 of them the bench tenant's), so its list pages are full too.
  cp "$cache/template.db" "$cache/small.db"
  seed "$cache/small.db" 1000 >/dev/null
  cp "$cache/template.db" "$cache/big.db"
  seed "$cache/big.db" "$tasks" >/dev/null
  echo "# seeded $tasks tasks, $((tasks * per_task)) events in $(( $(date +%s) - s0 )) s: $(du -h "$cache/big.db" | cut -f1)"
  echo "$tasks $per_task" >"$cache/params"
fi
tid=$(cat "$cache/template_id")
echo "# template task $tid; big: $(sqlite3 "$cache/big.db" 'SELECT COUNT(*) FROM tasks') tasks, $(du -h "$cache/big.db" | cut -f1)"

run_wrk() {  # url out lua-args...
  local url=$1 out=$2
  shift 2
  wrk -t2 -c"$conns" -d"${duration}s" --latency -s bench/submit.lua "$url" -- "$@" >"$out" 2>&1
}
printf '\n| database | start-up ms | RSS after start MiB | GET task p50/p99 ms (req/s) | list p50/p99 ms (req/s) | events p50/p99 ms (req/s) | accept p50/p99 ms (req/s) | non-2xx | peak RSS MiB |\n|---|---:|---:|---|---|---|---|---:|---:|\n'
for which in small big; do
  cp "$cache/$which.db" "$work/run.db"
  config "$work/run.db" 10m >"$work/$which.yaml"
  sync
  start_timed "$work/$which.yaml"
  base="http://127.0.0.1:$segue_port"
  rss0=$(rss_kb "$segue_pid")
  run_wrk "$base/v1/extensions/$tid" "$work/get.out" get "$key"
  run_wrk "$base/v1/extensions?limit=20" "$work/list.out" get "$key"
  run_wrk "$base/v1/extensions/$tid/events" "$work/events.out" get "$key"
  wrk -t2 -c"$conns" -d2s -s bench/submit.lua "$base/v1/extensions" -- post "$key" "$audio_url" >/dev/null 2>&1
  run_wrk "$base/v1/extensions" "$work/post.out" post "$key" "$audio_url"
  segue_alive
  hwm=$(hwm_kb "$segue_pid")
  bad=0
  row="| $which | $(cat "$work/start_ms") | $(mib "$rss0")"
  for f in get list events post; do
    read -r rps p50 p99 n non2xx errs < <(wrk_parse "$work/$f.out")
    bad=$((bad + non2xx + errs))
    row+=" | $p50 / $p99 ($(printf '%.0f' "$rps"))"
  done
  echo "$row | $bad | $(mib "$hwm") |"
  stop_segue
  rm -f "$work/run.db"*
done
echo "# load after: $(cut -d' ' -f1-3 /proc/loadavg)"

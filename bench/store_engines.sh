#!/usr/bin/env bash
# Durable accepts on each store engine, in one run: the same load (POST /v1/extensions, JSON,
# keep-alive, wrk + bench/submit.lua) against
#   1. SQLite, one segue (storage.sync_full: true: fsync before every 202), the baseline;
#   2. PostgreSQL, one segue;
#   3. PostgreSQL, two segue replicas behind nginx (round robin, keep-alive upstreams).
# PostgreSQL is a throwaway server of scripts/pg.sh in the run's temp dir, durable
# (SEGUE_PG_DURABLE=1: fsync on, synchronous_commit on: a 202 means the task is on disk), on a
# unix socket; each configuration gets a database of its own.
#
#   bench/store_engines.sh [duration-seconds] [connections]      (defaults: 10 32)
#
# SEGUE_BENCH_PGSS=1 also loads pg_stat_statements and prints, after each PostgreSQL run, the
# statements the run's database saw: calls and server time per created task (the submit jobs
# still queued then are printed too: their tasks' engine statements are not all in yet).
#
# SEGUE_BENCH_FRESH_WAL=1 measures PostgreSQL as initdb left it (no WAL segment to recycle yet);
# by default its WAL is cycled once first, as on a server that has been running (below).
#
# Target (issue 14): >= 3,000 accepted/s at p99 < 20 ms with one PostgreSQL replica. On a
# 2-core machine everything (wrk, nginx, PostgreSQL, segue) shares the same two cores: the
# two-replica figure says what a second process costs here, not what a second machine adds.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
duration="${1:-10}"
conns="${2:-32}"
key="sk-bench-$RANDOM$RANDOM"
bench_setup
bench_machine_note
echo "# $duration s per run, $conns connections, wrk -t2; durable commits on both engines"

start_nginx song 1 "    location / { }"
bench/make_wav.sh "$work/song/root/song.wav" 10
audio_url="http://127.0.0.1:$nginx_port/song.wav"

pg_dir="$work/pg"
pgss="${SEGUE_BENCH_PGSS:-0}"
pg_opts="${SEGUE_PG_OPTIONS:-}"
[[ "$pgss" == 1 ]] && pg_opts+=" -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track_utility=on"
# A PostgreSQL that has been running a while recycles its WAL segments (a checkpoint renames
# the ones it no longer needs into the next ones, up to min_wal_size). A cluster initdb'd a
# moment ago has none to recycle: every 16 MB of WAL (every ~2 s under this load) it creates
# and zero-fills a new segment (wal_init_zero), and the commits waiting on that flush stall
# 15-20 ms (bench/README.md 6h). So, unless SEGUE_BENCH_FRESH_WAL=1, the run starts from the
# steady state: 64 segments (1 GB, this run's WAL and more) written once and recycled by a
# CHECKPOINT before the first measurement.
pg_opts+=" -c min_wal_size=1GB"
pg_url=$(SEGUE_PG_DURABLE=1 SEGUE_PG_OPTIONS="$pg_opts" scripts/pg.sh start "$pg_dir")
bench_pg_stop() { scripts/pg.sh stop "$pg_dir" >/dev/null 2>&1 || true; }
trap 'bench_pg_stop; bench_cleanup' EXIT
if [[ "${SEGUE_BENCH_FRESH_WAL:-0}" != 1 ]]; then
  psql "$pg_url" -qAt -c "CREATE TABLE wal_cycle (x int)" \
    -c "DO \$\$ BEGIN FOR i IN 1..64 LOOP INSERT INTO wal_cycle VALUES (i); PERFORM pg_switch_wal(); END LOOP; END \$\$" \
    -c "DROP TABLE wal_cycle" -c "CHECKPOINT" >/dev/null
  echo "# PostgreSQL WAL: $(ls "$pg_dir/data/pg_wal" | grep -c '^0') segments ready (recycled), as on a server running a while"
else
  echo "# PostgreSQL WAL: a fresh cluster's (SEGUE_BENCH_FRESH_WAL=1): new segments are zero-filled as the run needs them"
fi

replica_pids=()
replica_ports=()
start_replica() {  # name yaml
  local name=$1 yaml=$2
  rm -f "$work/$name.port"
  "$work/segue.bin" --config "$yaml" --port-file "$work/$name.port" >"$work/$name.log" 2>&1 &
  local pid=$!
  bench_pids+=("$pid")
  for _ in $(seq 300); do
    [[ -s "$work/$name.port" ]] && break
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.05
  done
  [[ -s "$work/$name.port" ]] || { echo "bench: $name did not start:" >&2; cat "$work/$name.log" >&2; exit 1; }
  replica_pids+=("$pid")
  replica_ports+=("$(cat "$work/$name.port")")
}
stop_replicas() {
  local pid f
  # Errors a run logged (a non-202 in the status mix says there were some): the first few.
  for f in "$work"/[ab].log; do
    grep -Eq '"level":"(error|warn)"' "$f" 2>/dev/null || continue
    echo "# $(basename "$f"): $(grep -Ec '"level":"(error|warn)"' "$f") errors and warnings logged, the first:"
    grep -E '"level":"(error|warn)"' "$f" | head -3 | cut -c1-400
  done
  local pid
  for pid in "${replica_pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
  for pid in "${replica_pids[@]}"; do wait "$pid" 2>/dev/null || true; done
  replica_pids=()
  replica_ports=()
}

config() {  # storage-yaml
  cat <<YAML
server:
  listen: 127.0.0.1:0
  io_threads: 2
  drain_timeout: 2s
log:
  level: warn
  access: false
tenants:
  - name: bench
    api_keys: ["$key"]
    credits: 100000000
api:
  url_signing_key: bench-signing-key
fetch:
  allow_cidrs: ["127.0.0.1/32"]
  allowed_ports: []
providers:
  sandbox:
    delay: 10m
$1
YAML
}

lb_port=""
start_lb() {  # an nginx in front of the replicas (lib.sh's start_nginx with an upstream)
  local upstreams="" p
  for p in "${replica_ports[@]}"; do upstreams+="    server 127.0.0.1:$p;"$'\n'; done
  start_nginx lb 1 "    location / {
      proxy_pass http://segue;
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
    }" "" "  upstream segue {
$upstreams    keepalive 64;
  }"
  lb_port=$nginx_port
}
stop_lb() {
  [[ -f "$work/lb/nginx.pid" ]] && kill -QUIT "$(cat "$work/lb/nginx.pid")" 2>/dev/null || true
  sleep 0.5
}

pg_statements() {  # database: what its run cost the server, per created task
  [[ "$pgss" == 1 ]] || return 0
  local url=${pg_url/\/segue\?//$1?}
  echo "# $1: statements per created task (pg_stat_statements)"
  psql "$url" -qAt -F $'\t' -c "SELECT count(*) FROM tasks" \
    -c "SELECT 'submit jobs queued', count(*) FROM jobs WHERE kind = 'submit'" \
    -c "WITH n AS (SELECT count(*)::float AS n FROM tasks)
        SELECT round((calls / n.n)::numeric, 2) AS per_task,
               round((total_exec_time * 1000 / n.n)::numeric, 1) AS us_per_task,
               round((mean_exec_time * 1000)::numeric, 1) AS us_mean,
               left(regexp_replace(query, '\s+', ' ', 'g'), 90)
        FROM pg_stat_statements, n
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())
        ORDER BY calls DESC LIMIT 40" \
    -c "WITH n AS (SELECT count(*)::float AS n FROM tasks)
        SELECT 'total', round((sum(calls) / max(n.n))::numeric, 1),
               round((sum(total_exec_time) * 1000 / max(n.n))::numeric, 1)
        FROM pg_stat_statements, n
        WHERE dbid = (SELECT oid FROM pg_database WHERE datname = current_database())"
}

results=()
measure() {  # label base-url
  local label=$1 base=$2 out="$work/run-$RANDOM.out"
  wrk -t2 -c"$conns" -d2s -s bench/submit.lua "$base/v1/extensions" -- post "$key" "$audio_url" >/dev/null 2>&1
  wrk -t2 -c"$conns" -d"${duration}s" --latency -s bench/submit.lua "$base/v1/extensions" -- post "$key" "$audio_url" >"$out" 2>&1
  local rps p50 p99 n bad err secs n202 accepted mix
  read -r rps p50 p99 n bad err < <(wrk_parse "$out")
  secs=$(awk -v n="$n" -v r="$rps" 'BEGIN{ if (r>0) printf "%.3f", n/r; else print 0 }')
  n202=$(awk '$1=="status" && $2==202 {print $3}' "$out")
  accepted=$(awk -v a="${n202:-0}" -v s="$secs" 'BEGIN{ if (s>0) printf "%.0f", a/s; else print 0 }')
  mix=$(awk '$1=="status" { printf "%s%s x %s", sep, $2, $3; sep=", " }' "$out")
  results+=("$(printf '%-34s %12s %10.3f %10.3f   %s' "$label" "$accepted" "$p50" "$p99" "${mix:-none}")")
}

# 1. SQLite
config "storage:
  sqlite_path: $work/sqlite/segue.db
  blob_dir: $work/blobs1
  sync_full: true" >"$work/sqlite.yaml"
start_replica a "$work/sqlite.yaml"
measure "SQLite, 1 segue" "http://127.0.0.1:${replica_ports[0]}"
stop_replicas

# 2. PostgreSQL, one replica
psql "$pg_url" -qc "CREATE DATABASE one" >/dev/null
[[ "$pgss" == 1 ]] && psql "${pg_url/\/segue\?//one?}" -qc "CREATE EXTENSION pg_stat_statements" >/dev/null
config "storage:
  engine: postgres
  postgres:
    url: \"${pg_url/\/segue\?//one?}\"
  blob_dir: $work/blobs2" >"$work/pg1.yaml"
start_replica a "$work/pg1.yaml"
measure "PostgreSQL, 1 segue" "http://127.0.0.1:${replica_ports[0]}"
pg_statements one
stop_replicas

# 3. PostgreSQL, two replicas behind nginx
psql "$pg_url" -qc "CREATE DATABASE two" >/dev/null
[[ "$pgss" == 1 ]] && psql "${pg_url/\/segue\?//two?}" -qc "CREATE EXTENSION pg_stat_statements" >/dev/null
config "storage:
  engine: postgres
  postgres:
    url: \"${pg_url/\/segue\?//two?}\"
  blob_dir: $work/blobs3" >"$work/pg2.yaml"
start_replica a "$work/pg2.yaml"
start_replica b "$work/pg2.yaml"
start_lb
measure "PostgreSQL, 2 segue behind nginx" "http://127.0.0.1:$lb_port"
pg_statements two
stop_lb
stop_replicas

printf '%-34s %12s %10s %10s   %s\n' run 'accepted/s' 'p50 ms' 'p99 ms' 'status mix'
printf '%s\n' "${results[@]}"
echo "target: >= 3000 accepted/s at p99 < 20 ms, PostgreSQL with one segue"

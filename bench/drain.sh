#!/usr/bin/env bash
# Load scenario: requests lost to rolling restarts. Two segue processes (SQLite, each its own
# database, `server.shutdown_delay: 300ms`) behind nginx (round robin, upstream keep-alive,
# `proxy_next_upstream error timeout http_502 http_503`, no `non_idempotent`: nginx does not
# resend a POST it has sent). wrk POSTs a cancel of an unknown task (a 404, key-less: the kind
# of request nginx may not resend) as fast as it can, while the replicas are restarted in turn
# (SIGTERM, wait for the exit, start again, wait for /readyz, 1.5 s in the pool again).
# Every answer should be the 404: a 502 is a request a restart cost its client.
#
#   bench/drain.sh [rounds] [connections]          (defaults: 4 16; a round restarts each replica)
#   SEGUE_BIN=path bench/drain.sh                  (that binary, e.g. a build before a change)
#   BENCH_KEEPALIVE_TIMEOUT=200ms bench/drain.sh   (nginx's upstream keepalive_timeout; default
#                                                   60s, nginx's own default)
#
# Baseline in the same run: the same load for 5 s with no restart (its statuses and rate).
# Results of 2026-12-06 (the drain before f811cfd: 17-26 502s per 8 restarts; after: 0) are in
# bench/README.md, section 7.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
rounds="${1:-4}"
conns="${2:-16}"
keepalive_timeout="${BENCH_KEEPALIVE_TIMEOUT:-60s}"
key="sk-bench-$RANDOM$RANDOM"
bench_setup
bench_machine_note
echo "# $rounds rounds of 2 restarts, wrk -t2 -c$conns, nginx upstream keepalive_timeout $keepalive_timeout, shutdown_delay 300ms"

declare -A port pid
for r in a b; do
  port[$r]=$(free_port)
  mkdir -p "$work/$r"
  cat >"$work/$r.yaml" <<YAML
server:
  listen: 127.0.0.1:${port[$r]}
  shutdown_delay: 300ms
  drain_timeout: 5s
log:
  level: warn
  access: false
tenants:
  - name: bench
    api_keys: ["$key"]
storage:
  sqlite_path: $work/$r/segue.db
  blob_dir: $work/$r/blobs
YAML
done
start_replica() {  # name
  "$work/segue.bin" --config "$work/$1.yaml" >>"$work/$1.log" 2>&1 &
  pid[$1]=$!
  bench_pids+=("${pid[$1]}")
  for _ in $(seq 200); do
    curl -sf -o /dev/null "http://127.0.0.1:${port[$1]}/readyz" && return 0
    kill -0 "${pid[$1]}" 2>/dev/null || break
    sleep 0.05
  done
  echo "bench: replica $1 did not become ready; its log:" >&2
  tail -n 30 "$work/$1.log" >&2
  exit 1
}
start_replica a
start_replica b

start_nginx proxy 1 "
    location / {
      proxy_http_version 1.1;
      proxy_set_header Connection \"\";
      proxy_connect_timeout 1s;
      proxy_pass http://segue;
      proxy_next_upstream error timeout http_502 http_503;
    }" "" "
  upstream segue {
    server 127.0.0.1:${port[a]} max_fails=1 fail_timeout=1s;
    server 127.0.0.1:${port[b]} max_fails=1 fail_timeout=1s;
    keepalive 32;
    keepalive_timeout $keepalive_timeout;
  }"

cat >"$work/post.lua" <<LUA
wrk.method = "POST"
wrk.path = "/v1/extensions/ext_00000000000000000000000000/cancel"
wrk.headers["Authorization"] = "Bearer $key"
counts = {}
local threads = {}
function setup(t) table.insert(threads, t) end
function response(status) counts[status] = (counts[status] or 0) + 1 end
function done()
  local total = {}
  for _, t in ipairs(threads) do
    for k, v in pairs(t:get("counts")) do total[k] = (total[k] or 0) + v end
  end
  local s = ""
  for k, v in pairs(total) do s = s .. " " .. k .. "=" .. v end
  io.write("STATUS" .. s .. "\n")
end
LUA

summary() {  # wrk output -> "requests/s, statuses, 502s, socket errors"
  local rps statuses bad errs
  rps=$(awk '/Requests\/sec/ {print $2}' "$1")
  statuses=$(awk '/^STATUS/ {sub(/^STATUS /, ""); print}' "$1")
  bad=$(awk '/^STATUS/ {for (i = 2; i <= NF; i++) {split($i, kv, "="); if (kv[1] != "404") n += kv[2]}} END {print n + 0}' "$1")
  errs=$(awk '/Socket errors/ {gsub(/,/, ""); print $4 + $6 + $8 + $10}' "$1")
  echo "${rps:-0} req/s; statuses: ${statuses:-none}; not 404: $bad; socket errors: ${errs:-0}"
}

url="http://127.0.0.1:$nginx_port/"
wrk -t2 -c"$conns" -d5s -s "$work/post.lua" "$url" >"$work/baseline.out" 2>&1
echo "baseline, no restart (5 s):   $(summary "$work/baseline.out")"

duration=$((rounds * 2 * 4 + 4))
wrk -t2 -c"$conns" -d"${duration}s" -s "$work/post.lua" "$url" >"$work/restarts.out" 2>&1 &
wrk_pid=$!
sleep 2
restarts=0
for _ in $(seq "$rounds"); do
  for r in a b; do
    kill -TERM "${pid[$r]}"
    wait "${pid[$r]}" || true
    start_replica "$r"
    restarts=$((restarts + 1))
    sleep 1.5
    kill -0 "$wrk_pid" 2>/dev/null || break 2
  done
done
wait "$wrk_pid" || true
echo "with $restarts restarts (${duration} s): $(summary "$work/restarts.out")"

#!/usr/bin/env bash
# Load scenario: GET /healthz over keep-alive, segue vs nginx serving a static 200, same run,
# same machine, same client (wrk). Prints requests/s, p50/p99 latency, idle and peak RSS of
# segue, and segue/nginx ratios.
#
#   bench/healthz.sh [duration-seconds] [connections]     (defaults: 10 64)
#
# Both servers get 2 workers and no access log; wrk gets 2 threads. On a 2-core machine all
# three share the cores, so the ratio matters more than the absolute figures.
set -euo pipefail
cd "$(dirname "$0")/.."
duration="${1:-10}"
conns="${2:-64}"
command -v wrk >/dev/null || { apt-get install -y -qq wrk >/dev/null; }
command -v nginx >/dev/null || { apt-get install -y -qq nginx-light >/dev/null; }
[[ -x build/segue ]] || scripts/build.sh segue

work=$(mktemp -d)
cleanup() {
  [[ -n "${segue_pid:-}" ]] && kill "$segue_pid" 2>/dev/null || true
  [[ -f "$work/nginx.pid" ]] && kill "$(cat "$work/nginx.pid")" 2>/dev/null || true
  sleep 0.2
  rm -rf "$work"
}
trap cleanup EXIT

free_port() {  # a random loopback port nobody listens on
  local p
  while :; do
    p=$((20000 + RANDOM % 40000))
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
}

# --- nginx: static 200 with the same body ---
nport=$(free_port)
mkdir -p "$work/nginx"
cat >"$work/nginx.conf" <<NGINX
worker_processes 2;
pid $work/nginx.pid;
error_log $work/nginx-error.log;
daemon on;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $work/nginx;
  proxy_temp_path $work/nginx;
  fastcgi_temp_path $work/nginx;
  uwsgi_temp_path $work/nginx;
  scgi_temp_path $work/nginx;
  keepalive_requests 100000;
  server {
    listen 127.0.0.1:$nport;
    location = /healthz { default_type application/json; return 200 '{"status":"ok"}'; }
  }
}
NGINX
nginx -c "$work/nginx.conf"

# --- segue ---
cat >"$work/segue.yaml" <<YAML
server:
  listen: 127.0.0.1:0
  io_threads: 2
log:
  level: warn
  access: false
YAML
build/segue --config "$work/segue.yaml" --port-file "$work/port" >"$work/segue.log" 2>&1 &
segue_pid=$!
for _ in $(seq 100); do [[ -s "$work/port" ]] && break; sleep 0.05; done
sport=$(cat "$work/port")
sleep 0.3
idle_rss_kb=$(awk '/VmRSS/{print $2}' /proc/$segue_pid/status)

run_wrk() {  # url -> "rps p50_ms p99_ms"
  wrk -t2 -c"$conns" -d"${duration}s" --latency "$1" >"$work/wrk.out" 2>&1
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps=$2 }
    $1=="50%" { p50=ms($2) }
    $1=="99%" { p99=ms($2) }
    END { printf "%s %.3f %.3f\n", rps, p50, p99 }' "$work/wrk.out"
}

# Warm both, then measure.
wrk -t2 -c"$conns" -d2s "http://127.0.0.1:$nport/healthz" >/dev/null 2>&1
wrk -t2 -c"$conns" -d2s "http://127.0.0.1:$sport/healthz" >/dev/null 2>&1
read -r n_rps n_p50 n_p99 < <(run_wrk "http://127.0.0.1:$nport/healthz")
read -r s_rps s_p50 s_p99 < <(run_wrk "http://127.0.0.1:$sport/healthz")
peak_rss_kb=$(awk '/VmHWM/{print $2}' /proc/$segue_pid/status)

printf '%-8s %12s %10s %10s\n' server 'requests/s' 'p50 ms' 'p99 ms'
printf '%-8s %12.0f %10.3f %10.3f\n' nginx "$n_rps" "$n_p50" "$n_p99"
printf '%-8s %12.0f %10.3f %10.3f\n' segue "$s_rps" "$s_p50" "$s_p99"
ratio=$(awk -v a="$s_rps" -v b="$n_rps" 'BEGIN{printf "%.2f", a/b}')
printf 'segue/nginx requests/s ratio: %s (target >= 0.60)\n' "$ratio"
printf 'segue p99: %s ms (target < 2 ms at %s connections)\n' "$s_p99" "$conns"
printf 'segue RSS: idle %.1f MiB (target < 20 MiB), peak %.1f MiB\n' \
  "$(awk -v k="$idle_rss_kb" 'BEGIN{print k/1024}')" "$(awk -v k="$peak_rss_kb" 'BEGIN{print k/1024}')"

# Shared helpers for the bench scripts (sourced, not run). Bash + wrk/curl/nginx + awk only.
#
# A script does:   source "$(dirname "$0")/lib.sh"; bench_setup
# which cds to the repository root, installs what is missing (as root, apt), builds segue if
# build/segue is missing, makes $work (a temp dir) and sets a trap that stops every process
# started through these helpers and removes $work, on any exit.

bench_need() {  # command package
  command -v "$1" >/dev/null && return 0
  if [[ $(id -u) -eq 0 ]] && command -v apt-get >/dev/null; then
    apt-get install -y -qq "$2" >/dev/null 2>&1 || { apt-get update -qq >/dev/null && apt-get install -y -qq "$2" >/dev/null; }
  fi
  command -v "$1" >/dev/null || { echo "bench: $1 is missing (apt-get install $2)" >&2; exit 1; }
}

bench_pids=()         # background processes to stop on exit (segue, samplers)
bench_nginx_pidfiles=()

bench_cleanup() {
  local rc=$? pid pf alive
  set +e
  local npids=()
  for pf in "${bench_nginx_pidfiles[@]}"; do
    pid=$(cat "$pf" 2>/dev/null) && [[ -n "$pid" ]] && npids+=("$pid")
  done
  for pid in "${npids[@]}" "${bench_pids[@]}"; do kill -TERM "$pid" 2>/dev/null; done
  # segue drains (drain_timeout 2s in the bench configs); give everything up to 5 s, then KILL.
  for _ in $(seq 50); do
    alive=0
    for pid in "${npids[@]}" "${bench_pids[@]}"; do kill -0 "$pid" 2>/dev/null && alive=1; done
    ((alive)) || break
    sleep 0.1
  done
  for pid in "${npids[@]}" "${bench_pids[@]}"; do kill -KILL "$pid" 2>/dev/null; done
  wait 2>/dev/null
  [[ -n "${work:-}" && -d "$work" ]] && rm -rf "$work"
  exit "$rc"
}

bench_setup() {
  cd "$(dirname "${BASH_SOURCE[0]}")/.."
  bench_need wrk wrk
  bench_need nginx nginx-light
  bench_need curl curl
  bench_need awk mawk
  bench_need taskset util-linux
  # SEGUE_BIN=path measures that binary instead of build/segue (e.g. one copy for a whole
  # series of runs while others rebuild build/segue).
  if [[ -n "${SEGUE_BIN:-}" ]]; then
    [[ -x "$SEGUE_BIN" ]] || { echo "bench: SEGUE_BIN=$SEGUE_BIN is not executable" >&2; exit 1; }
  else
    [[ -x build/segue ]] || scripts/build.sh segue
  fi
  work=$(mktemp -d /tmp/segue-bench.XXXXXX)
  trap bench_cleanup EXIT
  trap 'exit 130' INT TERM
  # A private copy, so a rebuild of build/segue during the run cannot change what is measured.
  cp "${SEGUE_BIN:-build/segue}" "$work/segue.bin"
}

bench_machine_note() {  # one line: date, HEAD, which binary (and when built), cores, load
  # "+dirty": gateway/ or providers/ differ from HEAD, so build/segue may hold uncommitted code.
  printf '# %s  HEAD %s%s  binary %s of %s  %s cores  load %s\n' "$(date -u +%Y-%m-%dT%H:%M:%SZ)" \
    "$(git rev-parse --short HEAD 2>/dev/null || echo '?')" \
    "$(git diff --quiet HEAD -- gateway providers 2>/dev/null || echo '+dirty')" \
    "${SEGUE_BIN:-build/segue}" "$(date -u -r "${SEGUE_BIN:-build/segue}" '+%F %H:%M:%SZ')" \
    "$(nproc)" "$(cut -d' ' -f1-3 /proc/loadavg)"
}

free_port() {  # a random loopback port nobody listens on
  # Below the kernel's ephemeral range: a port there can be the local end of one of the many
  # client connections a run makes (wrk's, segue's), which nobody listens on but which still
  # makes a later bind() fail ("Address already in use": a pipeline run lost its nginx so).
  local p low
  read -r low _ </proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || low=32768
  ((low > 12000)) || low=60000
  while :; do
    p=$((10000 + RANDOM % (low - 10000)))
    (exec 3<>/dev/tcp/127.0.0.1/$p) 2>/dev/null || { echo "$p"; return; }
  done
}

# start_nginx NAME WORKERS SERVER_BLOCK_BODY [cpu-list] [HTTP_LEVEL_BLOCK]
# Starts nginx (daemon, its own prefix under $work/NAME) listening on a free port; sets
# nginx_port. The body goes inside `server { listen ...; <body> }`.
start_nginx() {  # name workers server-body [cpus] [http-level block, e.g. an upstream]
  local name=$1 workers=$2 body=$3 cpus=${4:-} http_extra=${5:-}
  local dir="$work/$name" echo_mod=""
  # nginx workers run as an unprivileged user: they must reach root/ and create tmp/ themselves.
  chmod 755 "$work"
  mkdir -p "$dir/root"
  chmod 755 "$dir" "$dir/root"
  nginx_port=$(free_port)
  [[ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ]] &&
    echo_mod="load_module /usr/lib/nginx/modules/ngx_http_echo_module.so;"
  cat >"$dir/nginx.conf" <<NGINX
$echo_mod
worker_processes $workers;
pid $dir/nginx.pid;
error_log $dir/error.log;
daemon on;
events { worker_connections 4096; }
http {
  access_log off;
  client_body_temp_path $dir/tmp;
  proxy_temp_path $dir/tmp;
  fastcgi_temp_path $dir/tmp;
  uwsgi_temp_path $dir/tmp;
  scgi_temp_path $dir/tmp;
  keepalive_requests 100000;
  types { audio/wav wav; }
$http_extra
  server {
    listen 127.0.0.1:$nginx_port;
    root $dir/root;
$body
  }
}
NGINX
  bench_nginx_pidfiles+=("$dir/nginx.pid")
  if [[ -n "$cpus" ]]; then taskset -c "$cpus" nginx -c "$dir/nginx.conf"; else nginx -c "$dir/nginx.conf"; fi
  for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$nginx_port/" && return 0; sleep 0.05; done
  echo "bench: nginx did not start" >&2; cat "$dir/error.log" >&2; exit 1
}

# start_segue YAML_FILE [cpu-list]   sets segue_pid, segue_port; log in $work/segue.log
start_segue() {
  local yaml=$1 cpus=${2:-}
  rm -f "$work/segue.port"
  if [[ -n "$cpus" ]]; then
    taskset -c "$cpus" "$work/segue.bin" --config "$yaml" --port-file "$work/segue.port" >"$work/segue.log" 2>&1 &
  else
    "$work/segue.bin" --config "$yaml" --port-file "$work/segue.port" >"$work/segue.log" 2>&1 &
  fi
  segue_pid=$!
  bench_pids+=("$segue_pid")
  for _ in $(seq 200); do
    [[ -s "$work/segue.port" ]] && break
    kill -0 "$segue_pid" 2>/dev/null || break
    sleep 0.05
  done
  if [[ ! -s "$work/segue.port" ]]; then
    echo "bench: segue did not start; its log:" >&2; cat "$work/segue.log" >&2; exit 1
  fi
  segue_port=$(cat "$work/segue.port")
  for _ in $(seq 100); do curl -sf -o /dev/null "http://127.0.0.1:$segue_port/healthz" && return 0; sleep 0.05; done
  echo "bench: segue does not answer /healthz" >&2; exit 1
}

segue_alive() {  # fails loudly if segue died during a run
  kill -0 "$segue_pid" 2>/dev/null && return 0
  echo "bench: segue (pid $segue_pid) exited during the run; its log:" >&2
  tail -n 50 "$work/segue.log" >&2
  exit 1
}

rss_kb() { awk '/^VmRSS/{print $2}' "/proc/$1/status"; }
hwm_kb() { awk '/^VmHWM/{print $2}' "/proc/$1/status"; }
mib() { awk -v k="$1" 'BEGIN{printf "%.1f", k/1024}'; }

# wrk_parse FILE -> "rps p50_ms p99_ms requests non2xx socket_errors"
wrk_parse() {
  awk '
    function ms(v) { if (v ~ /us$/) return v/1000; if (v ~ /ms$/) return v+0; if (v ~ /m$/) return v*60000; if (v ~ /s$/) return v*1000; return v }
    /Requests\/sec/ { rps=$2 }
    $1=="50%" { p50=ms($2) }
    $1=="99%" { p99=ms($2) }
    / requests in / { reqs=$1 }
    /Non-2xx or 3xx responses/ { non2xx=$NF }
    /Socket errors/ { gsub(/,/, ""); errs=$4+$6+$8+$10 }
    END { printf "%s %.3f %.3f %d %d %d\n", rps, p50, p99, reqs, non2xx, errs }' "$1"
}

ratio() { awk -v a="$1" -v b="$2" 'BEGIN{ if (b>0) printf "%.2f", a/b; else print "n/a" }'; }

# cpu_ticks PID... -> user+system CPU time of those processes (all their threads), in clock
# ticks (getconf CLK_TCK per second). CPU per request does not depend on how the shared cores
# were scheduled, unlike requests/s.
cpu_ticks() {
  local p t=0 s
  for p in "$@"; do
    s=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "/proc/$p/stat" 2>/dev/null || echo 0)
    t=$((t + s))
  done
  echo "$t"
}
thread_ticks() {  # pid thread-name -> user+system ticks of that process's threads of that name
  local f t=0 s
  for f in /proc/"$1"/task/*; do
    [[ "$(cat "$f/comm" 2>/dev/null)" == "$2" ]] || continue
    s=$(awk '{ sub(/^.*\) /, ""); print $12 + $13 }' "$f/stat" 2>/dev/null || echo 0)
    t=$((t + s))
  done
  echo "$t"
}
nginx_workers() {  # pids of the workers of the nginx whose pid file is $1
  local master
  master=$(cat "$1")
  awk -v m="$master" '{ sub(/^.*\) /, ""); if ($2 == m) { split(FILENAME, f, "/"); print f[3] } }' \
    /proc/[0-9]*/stat 2>/dev/null || true
}
clk_tck=$(getconf CLK_TCK 2>/dev/null || echo 100)
# The machine's CPU time split between two snapshots of /proc/stat's "cpu" line:
#   stat0=$(cpu_split_snapshot); ...run...; cpu_split "$stat0"   ->  "user 41% system 20% idle 25% iowait 9% steal 5%"
# steal is time the hypervisor gave this VM's vCPUs to others: a run with much steal measured
# a slower machine than one without.
cpu_split_snapshot() { awk '$1 == "cpu" { print $2 + $3, $4 + $7 + $8, $5, $6, $9; exit }' /proc/stat; }
cpu_split() {
  local now
  now=$(cpu_split_snapshot)
  awk -v a="$1" -v b="$now" 'BEGIN {
    split(a, x, " "); split(b, y, " "); t = 0
    for (i = 1; i <= 5; i++) { d[i] = y[i] - x[i]; t += d[i] }
    if (t <= 0) { print "n/a"; exit }
    printf "user %.0f%% system %.0f%% idle %.0f%% iowait %.0f%% steal %.0f%%\n",
      100*d[1]/t, 100*d[2]/t, 100*d[3]/t, 100*d[4]/t, 100*d[5]/t }'
}

us_per_req() {  # ticks requests -> microseconds of CPU per request
  awk -v t="$1" -v n="$2" -v hz="$clk_tck" 'BEGIN{ if (n>0) printf "%.1f", t/hz*1e6/n; else print "n/a" }'
}

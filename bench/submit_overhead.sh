#!/usr/bin/env bash
# Load scenario: the overhead segue adds on the submit path. At one FIXED request rate, in the
# same run, against the same fake MusicGPT process:
#
#   direct   wrk -> fake: POST /api/public/v1/extend (JSON, audio_url), latency of the 200
#   segue    wrk -> segue: POST /v1/extensions (JSON, the same audio_url), latency of the 202;
#            then segue's engine submits each task to the fake. Per task, from the database:
#            the extension.queued event's created_at -> the extension.submitted event's
#            created_at (the gateway-side time from the task's creation to its acceptance
#            upstream), split at the attempt's started_at (set just before the attempt row
#            is written and the call goes out).
#
#   bench/submit_overhead.sh [duration-seconds] [requests-per-second] [connections]
#                                                        (defaults: 20 200 8)
#   BENCH_AUDIO_URL=https://cdn.example/a.mp3 bench/submit_overhead.sh 20 20
#       (a host NAME: every submit then waits for a DNS lookup, see below)
#   SEGUE_BIN=path / FAKE_BIN=path: measure those binaries (default build/segue and
#       build/tests/fakes/fake_musicgpt; both are copied into the temp dir first)
#   BENCH_SYNC_FULL=false bench/submit_overhead.sh 15 200 8
#       (storage.sync_full false: commits are not fsynced, so a task survives a crash of the
#       process but not of the machine; shows what the disk's fdatasync costs the path)
#
# The audio_url. Default https://93.184.215.14/a.mp3: a public IPv4 literal, so segue's URL
# guard at submit is the syntax check only (gateway/api/extensions.cpp: check_url_syntax, and
# check_url returns at once for an IP host). Nothing fetches it: MusicGPT (here the fake, with
# fetch_audio_url off) would download it, not segue. With a host name instead, every
# POST /v1/extensions first resolves it (check_url -> resolve_and_check in
# gateway/net/url_guard.cpp, up to 3 s, accepted even when it does not resolve), on Asio's one
# resolver thread: the submit then measures this machine's DNS, not the gateway.
#
# Pacing: wrk -t1 with bench/submit_overhead.lua, whose delay() hands out absolute start slots
# 1000/rate ms apart (not a closed loop; wrk has no -R). The achieved rate is printed.
# Each phase has a 2 s warm-up first (segue's warm-up uses a second tenant, left out of the
# figures). The fake is reset (POST /_control/reset: its task table and request log emptied)
# before each warm-up, so both phases find it in the same state.
#
# The figure issue 19 names, client -> provider, is measured at the provider: wrk's request()
# stamps its CLOCK_MONOTONIC send time (us) into each body's prompt (sb-m-t<us>), segue forwards
# the prompt, and the fake logs its own CLOCK_MONOTONIC when the whole request was read
# (GET /_control/requests: received_mono_us); the same for requests sent straight to the fake.
# Printed as "client -> provider through segue" and the TO_PROVIDER line.
# The older figure is still printed beside it. The client gets its 202 before the upstream
# call, so the submit path was reported as p50(202) + p50(queued -> submitted); overhead = that
# - p50(direct). The two overlap by the
# create transaction's commit (queued is stamped inside the transaction the 202 waits for), so
# the sum slightly over-counts. Event times are whole milliseconds (created_at is unix ms):
# per-task differences are integers with +-1 ms error; their mean is still unbiased.
#
# Segue: tenant with ample credits, durable SQLite (storage.sync_full: true unless
# BENCH_SYNC_FULL=false), log.level info,
# log.access false, io_threads 2 (BENCH_IO_THREADS=N: N), engine.poll_interval 100ms, providers.musicgpt enabled at the
# fake (upstream.allow_plain_http), api.public_base_url set so segue asks for webhooks and
# providers.musicgpt.reconcile_after 10m: no byId polling during the run; the fake's
# --webhook-delay-ms 600000: no webhook arrives during the run either. Breakers generous,
# retry defaults. The direct body carries a webhook_url of the same shape, so the fake does the
# same work in both phases (its CPU per request is printed for both as a check).
set -euo pipefail
source "$(dirname "$0")/lib.sh"
duration="${1:-20}"
rate="${2:-200}"
conns="${3:-8}"
key="sk-bench-$RANDOM$RANDOM"
warm_key="sk-warm-$RANDOM$RANDOM"
mg_key="mg-bench-$RANDOM"
audio_url="${BENCH_AUDIO_URL:-https://93.184.215.14/a.mp3}"
sync_full="${BENCH_SYNC_FULL:-true}"
[[ $sync_full == true || $sync_full == false ]] || { echo "bench: BENCH_SYNC_FULL is true or false" >&2; exit 1; }
bench_setup
bench_need sqlite3 sqlite3
bench_machine_note
interval=$(awk -v r="$rate" 'BEGIN{ printf "%.4f", 1000 / r }')
echo "# fixed rate $rate req/s (one start slot every $interval ms; wrk -t1 -c$conns), $duration s per phase, 2 s warm-up each; audio_url $audio_url; storage.sync_full: $sync_full"

fake="${FAKE_BIN:-build/tests/fakes/fake_musicgpt}"
[[ -x $fake ]] || scripts/build.sh fake_musicgpt
cp "$fake" "$work/fake.bin"
"$work/fake.bin" --listen 127.0.0.1:0 --port-file "$work/fake.port" --api-key "$mg_key" \
  --webhook-delay-ms 600000 >"$work/fake.log" 2>&1 &
fake_pid=$!
bench_pids+=("$fake_pid")
for _ in $(seq 200); do [[ -s "$work/fake.port" ]] && break; sleep 0.05; done
[[ -s "$work/fake.port" ]] || { echo "bench: fake_musicgpt did not start" >&2; cat "$work/fake.log" >&2; exit 1; }
fport=$(cat "$work/fake.port")
fake_url="http://127.0.0.1:$fport/api/public/v1/extend"

sport=$(free_port)
db="$work/db/segue.db"
cat >"$work/segue.yaml" <<YAML
server:
  listen: 127.0.0.1:$sport
  io_threads: ${BENCH_IO_THREADS:-2}
  drain_timeout: 2s
log:
  level: info
  access: false
tenants:
  - name: bench
    api_keys: ["$key"]
    credits: 1e9
  - name: warm
    api_keys: ["$warm_key"]
    credits: 1e9
storage:
  sqlite_path: $db
  blob_dir: $work/blobs
  sync_full: $sync_full
api:
  public_base_url: http://127.0.0.1:$sport
  default_provider: musicgpt
engine:
  poll_interval: 100ms
upstream:
  allow_plain_http: true
breakers:
  consecutive_failures: 1000
  failure_ratio: 1
  min_requests: 100000
providers:
  musicgpt:
    enabled: true
    base_url: http://127.0.0.1:$fport/api/public
    api_key: $mg_key
    reconcile_after: 10m
    poll_interval: 10m
YAML
start_segue "$work/segue.yaml"
base="http://127.0.0.1:$segue_port"
# The webhook_url of the direct body: the shape segue sends (its callback path, cb_ + 26 chars).
hook_url="$base/v1/providers/musicgpt/webhooks/cb_$(awk 'BEGIN { srand(); a = "0123456789abcdefghjkmnpqrstvwxyz"; for (i = 0; i < 26; i++) printf "%s", substr(a, int(rand() * 32) + 1, 1) }')"

# One request of each kind by hand: both must be accepted.
d_status=$(curl -s -o "$work/probe_direct.json" -w '%{http_code}' -H "Authorization: $mg_key" \
  -H 'Content-Type: application/json' \
  --data-binary "{\"audio_url\":\"$audio_url\",\"extend_after\":3,\"num_outputs\":1,\"webhook_url\":\"$hook_url\"}" "$fake_url")
s_status=$(curl -s -o "$work/probe_segue.json" -w '%{http_code}' -H "Authorization: Bearer $warm_key" \
  -H 'Content-Type: application/json' \
  --data-binary "{\"audio_url\":\"$audio_url\",\"extend_after\":3,\"num_outputs\":1}" "$base/v1/extensions")
echo "# by hand: direct HTTP $d_status, segue HTTP $s_status $(head -c 160 "$work/probe_segue.json")"
[[ "$d_status" == 200 && "$s_status" == 202 ]] || { echo "bench: a probe was not accepted" >&2; exit 1; }

metric() {  # sum of a metric's samples whose line matches a regex, from /metrics now
  curl -s "$base/metrics" | awk -v re="$1" '$0 !~ /^#/ && $0 ~ re { s += $NF } END { printf "%.6f\n", s }'
}
# Disk busy time (ms with I/O in flight, all processes) of the device holding $work: other
# engineers' builds on the shared disk slow segue's fsyncs, and this shows when they did.
disk=$(basename "$(df --output=source "$work" | tail -1)")
disk_ms() { awk -v d="$disk" '$3 == d { print $13; f = 1 } END { if (!f) print 0 }' /proc/diskstats; }
fake_reset() { curl -sf -o /dev/null -X POST "http://127.0.0.1:$fport/_control/reset"; }
paced() {  # url secs out mode key webhook_url tag
  local url=$1 secs=$2 out=$3
  shift 3
  wrk -t1 -c"$conns" -d"${secs}s" --timeout 10s --latency -s bench/submit_overhead.lua "$url" -- \
    "$1" "$2" "$interval" "$audio_url" "$3" "$4" >"$out" 2>&1
}
# Client -> provider per request, in µs: the fake's receive time (CLOCK_MONOTONIC) minus the
# send time wrk wrote into the prompt (sb-m-t<µs>; warm-ups are tagged w and left out).
to_provider() {  # out
  curl -sf "http://127.0.0.1:$fport/_control/requests?route=submit" |
    grep -o '"received_mono_us":[0-9]*\|sb-m-t[0-9]*' |
    awk -F'[:t]' '/received_mono_us/ { r = $NF; next } r != "" { print r - $NF; r = "" }' >"$1"
}
submitted_of() {  # tenant -> "tasks submitted_events"
  sqlite3 "$db" ".timeout 5000" "SELECT (SELECT count(*) FROM tasks WHERE tenant='$1'),
    (SELECT count(*) FROM events WHERE tenant='$1' AND type='extension.submitted');"
}

# Phase 1: direct. Segue idles meanwhile (its engine wakes every 100 ms): its CPU then is the
# background the segue phase's figure contains too.
fake_reset
paced "$fake_url" 2 "$work/direct_warm.out" direct "$mg_key" "$hook_url" w
f0=$(cpu_ticks "$fake_pid")
s0=$(cpu_ticks "$segue_pid")
k0=$(disk_ms)
paced "$fake_url" "$duration" "$work/direct.out" direct "$mg_key" "$hook_url" m
to_provider "$work/direct_to_provider.txt"
d_disk=$(($(disk_ms) - k0))
d_load=$(cut -d' ' -f1 /proc/loadavg)
d_fake_ticks=$(($(cpu_ticks "$fake_pid") - f0))
d_segue_ticks=$(($(cpu_ticks "$segue_pid") - s0))
segue_alive

# Phase 2: through segue (warm-up on the other tenant, then wait until it is all submitted).
fake_reset
paced "$base/v1/extensions" 2 "$work/segue_warm.out" segue "$warm_key" "" w
for _ in $(seq 100); do
  read -r n m < <(submitted_of warm | tr '|' ' ')
  ((m >= n)) && break
  sleep 0.1
done
names=(wcount wsum rcount rsum ucount usum jobs)
regexes=('^segue_store_operation_duration_seconds_count[{]op="write"' '^segue_store_operation_duration_seconds_sum[{]op="write"'
  '^segue_store_operation_duration_seconds_count[{]op="read"' '^segue_store_operation_duration_seconds_sum[{]op="read"'
  '^segue_upstream_request_duration_seconds_count[{]host="musicgpt"' '^segue_upstream_request_duration_seconds_sum[{]host="musicgpt"'
  '^segue_engine_jobs_total[{]kind="submit"')
declare -A m0 m1
for i in "${!names[@]}"; do m0[${names[$i]}]=$(metric "${regexes[$i]}"); done
f0=$(cpu_ticks "$fake_pid")
s0=$(cpu_ticks "$segue_pid")
k0=$(disk_ms)
t_phase=$SECONDS
paced "$base/v1/extensions" "$duration" "$work/segue.out" segue "$key" "" m
s_disk=$(($(disk_ms) - k0))
s_load=$(cut -d' ' -f1 /proc/loadavg)
segue_alive
# Until every task of the phase is submitted (at most 30 s): the CPU figure includes the
# engine's work for the last tasks.
for _ in $(seq 300); do
  read -r n m < <(submitted_of bench | tr '|' ' ')
  ((m >= n)) && break
  sleep 0.1
done
to_provider "$work/segue_to_provider.txt"
s_fake_ticks=$(($(cpu_ticks "$fake_pid") - f0))
s_segue_ticks=$(($(cpu_ticks "$segue_pid") - s0))
phase_secs=$((SECONDS - t_phase))
for i in "${!names[@]}"; do m1[${names[$i]}]=$(metric "${regexes[$i]}"); done
segue_alive

# Per task (tenant bench only): queued -> submitted, split at the attempt's started_at; also
# the API's timestamp (tasks.created_at, before the create transaction is queued) -> queued.
sqlite3 -separator ' ' "$db" ".timeout 5000" "
  SELECT s.created_at - q.created_at, a.started_at - q.created_at, s.created_at - a.started_at,
         q.created_at - t.created_at
  FROM events q
  JOIN events s ON s.task_id = q.task_id AND s.type = 'extension.submitted'
  JOIN attempts a ON a.task_id = q.task_id AND a.number = 1
  JOIN tasks t ON t.id = q.task_id
  WHERE q.type = 'extension.queued' AND q.tenant = 'bench';" >"$work/per_task.txt"
statuses=$(sqlite3 "$db" ".timeout 5000" "SELECT status || ' x ' || count(*) FROM tasks WHERE tenant='bench' GROUP BY status;" | paste -sd, -)
attempts_per_task=$(sqlite3 "$db" ".timeout 5000" "SELECT printf('%.2f', count(*) * 1.0 / (SELECT count(*) FROM tasks WHERE tenant='bench')) FROM attempts a JOIN tasks t ON t.id = a.task_id WHERE t.tenant='bench';")

col_stats() {  # column [file] -> "n p50 p90 p99 max mean" (nearest rank)
  awk -v c="$1" '{ print $c }' "${2:-$work/per_task.txt}" | sort -n | awk '
    { v[NR] = $1; s += $1 }
    function at(p,  i) { i = int(p / 100 * NR); if (i < p / 100 * NR) i++; if (i < 1) i = 1; return v[i] }
    END { if (NR == 0) { print "0 0 0 0 0 0"; exit } printf "%d %d %d %d %d %.2f\n", NR, at(50), at(90), at(99), v[NR], s / NR }'
}
wrk_stats() {  # wrk out -> "p50 p90 p99 max mean (ms) achieved_rate requests"
  awk '$1=="latency_us" { p50=$2; p90=$3; p99=$4; mx=$6; mean=$7 }
       $1=="achieved" { n=$3; r=$7 }
       END { printf "%.3f %.3f %.3f %.3f %.3f %s %s\n", p50/1000, p90/1000, p99/1000, mx/1000, mean/1000, r, n }' "$1"
}
mix() { awk '$1=="status" { printf "%s%s x %s", sep, $2, $3; sep=", " }' "$1"; }

read -r tdn tdp50 tdp90 tdp99 tdmax tdmean < <(col_stats 1 "$work/direct_to_provider.txt")
read -r tsn tsp50 tsp90 tsp99 tsmax tsmean < <(col_stats 1 "$work/segue_to_provider.txt")
read -r dp50 dp90 dp99 dmax dmean drate dn < <(wrk_stats "$work/direct.out")
read -r sp50 sp90 sp99 smax smean srate sn < <(wrk_stats "$work/segue.out")
read -r qn qp50 qp90 qp99 qmax qmean < <(col_stats 1)
read -r _ cp50 cp90 cp99 cmax cmean < <(col_stats 2)
read -r _ hp50 hp90 hp99 hmax hmean < <(col_stats 3)
read -r _ wp50 wp90 wp99 wmax wmean < <(col_stats 4)

printf '%-52s %9s %6s %8s %8s %8s %8s %8s\n' 'path (ms)' 'rate/s' n p50 p90 p99 max mean
printf '%-52s %9s %6s %8.3f %8.3f %8.3f %8.3f %8.3f\n' 'direct: wrk -> fake, 200 (wrk latency)' "$drate" "$dn" "$dp50" "$dp90" "$dp99" "$dmax" "$dmean"
printf '%-52s %9s %6s %8.3f %8.3f %8.3f %8.3f %8.3f\n' 'segue: wrk -> segue, 202 (wrk latency)' "$srate" "$sn" "$sp50" "$sp90" "$sp99" "$smax" "$smean"
printf '%-52s %9s %6s %8d %8d %8d %8d %8.2f\n' 'segue: queued -> submitted (events, whole ms)' - "$qn" "$qp50" "$qp90" "$qp99" "$qmax" "$qmean"
printf '%-52s %9s %6s %8d %8d %8d %8d %8.2f\n' '  queued -> attempt started (commit, wake, claim)' - "$qn" "$cp50" "$cp90" "$cp99" "$cmax" "$cmean"
printf '%-52s %9s %6s %8d %8d %8d %8d %8.2f\n' '  attempt started -> submitted (write, HTTP, apply)' - "$qn" "$hp50" "$hp90" "$hp99" "$hmax" "$hmean"
printf '%-52s %9s %6s %8d %8d %8d %8d %8.2f\n' '  (API stamp -> queued: create txn queue wait)' - "$qn" "$wp50" "$wp90" "$wp99" "$wmax" "$wmean"
us() { awk -v v="$1" 'BEGIN { printf "%8.3f", v / 1000 }'; }
printf '%-52s %9s %6s %s %s %s %s %s\n' 'direct: client sent -> fake received' - "$tdn" "$(us "$tdp50")" "$(us "$tdp90")" "$(us "$tdp99")" "$(us "$tdmax")" "$(us "$tdmean")"
printf '%-52s %9s %6s %s %s %s %s %s\n' 'segue: client sent -> fake received (the submit)' - "$tsn" "$(us "$tsp50")" "$(us "$tsp90")" "$(us "$tsp99")" "$(us "$tsmax")" "$(us "$tsmean")"
echo "status mix: direct $(mix "$work/direct.out"); segue $(mix "$work/segue.out"); tasks: $statuses; attempts/task $attempts_per_task"
awk -v d50="$dp50" -v d99="$dp99" -v s50="$sp50" -v s99="$sp99" -v q50="$qp50" -v q99="$qp99" -v qm="$qmean" -v sm="$smean" -v dm="$dmean" 'BEGIN {
  printf "submit path p50 = p50(202) + p50(queued->submitted) = %.3f + %d = %.3f ms; direct p50 %.3f ms; overhead %.3f ms\n", s50, q50, s50 + q50, d50, s50 + q50 - d50
  printf "  (means: %.3f + %.2f = %.3f ms vs direct %.3f ms: overhead %.3f ms; p99s, which do not add: 202 %.3f, queued->submitted %d, direct %.3f)\n", sm, qm, sm + qm, dm, sm + qm - dm, s99, q99, d99 }'
# Means from segue's metrics over the segue phase (+ the wait for its last submits).
awk -v wc0="${m0[wcount]}" -v wc1="${m1[wcount]}" -v ws0="${m0[wsum]}" -v ws1="${m1[wsum]}" \
    -v rc0="${m0[rcount]}" -v rc1="${m1[rcount]}" -v rs0="${m0[rsum]}" -v rs1="${m1[rsum]}" \
    -v uc0="${m0[ucount]}" -v uc1="${m1[ucount]}" -v us0="${m0[usum]}" -v us1="${m1[usum]}" \
    -v j0="${m0[jobs]}" -v j1="${m1[jobs]}" -v n="$qn" 'BEGIN {
  if (n <= 0) exit
  printf "segue metrics, per task: %.2f store writes (mean %.3f ms: queue + commit + fsync), %.2f reads (mean %.3f ms), %.2f upstream calls (mean %.3f ms, segue side), %.2f submit jobs\n",
    (wc1-wc0)/n, (wc1>wc0 ? (ws1-ws0)/(wc1-wc0)*1000 : 0), (rc1-rc0)/n, (rc1>rc0 ? (rs1-rs0)/(rc1-rc0)*1000 : 0),
    (uc1-uc0)/n, (uc1>uc0 ? (us1-us0)/(uc1-uc0)*1000 : 0), (j1-j0)/n }'
printf 'CPU us/request: segue %s (its idle background during the direct phase: %s us/s), fake %s direct / %s via segue\n' \
  "$(us_per_req "$s_segue_ticks" "$sn")" \
  "$(awk -v t="$d_segue_ticks" -v s="$duration" -v hz="$clk_tck" 'BEGIN{ printf "%.0f", t/hz*1e6/s }')" \
  "$(us_per_req "$d_fake_ticks" "$dn")" "$(us_per_req "$s_fake_ticks" "$sn")"
echo "  (segue's ticks over ${phase_secs} s: the paced run and the wait for its last submits; CLK_TCK $clk_tck)"
awk -v a="$d_disk" -v b="$s_disk" -v s="$duration" -v la="$d_load" -v lb="$s_load" -v d="$disk" 'BEGIN {
  printf "machine: disk %s busy %.0f %% of the direct phase, %.0f %% of the segue phase (all processes, the segue phase counts its own writes); load at their ends %s, %s\n", d, a/(s*10), b/(s*10), la, lb }'
awk -v s50="$tsp50" -v s99="$tsp99" -v d50="$tdp50" -v d99="$tdp99" -v r50="$dp50" 'BEGIN {
  printf "client -> provider through segue: p50 %.3f ms (target < 1), p99 %.3f ms (target < 5); straight to the fake: p50 %.3f, p99 %.3f ms (its whole 200: p50 %.3f ms)\n", s50/1000, s99/1000, d50/1000, d99/1000, r50 }'
printf 'TO_PROVIDER direct_n %d direct_p50_us %d direct_p99_us %d segue_n %d segue_p50_us %d segue_p90_us %d segue_p99_us %d segue_max_us %d\n' \
  "$tdn" "$tdp50" "$tdp99" "$tsn" "$tsp50" "$tsp90" "$tsp99" "$tsmax"
printf 'RESULT direct_p50 %.3f direct_p99 %.3f 202_p50 %.3f 202_p99 %.3f qs_p50 %d qs_p99 %d path_p50 %.3f overhead_p50 %.3f qs_mean %.2f claim_p50 %d call_p50 %d segue_cpu_us %s rate_direct %s rate_segue %s\n' \
  "$dp50" "$dp99" "$sp50" "$sp99" "$qp50" "$qp99" "$(awk -v a="$sp50" -v b="$qp50" 'BEGIN{print a+b}')" \
  "$(awk -v a="$sp50" -v b="$qp50" -v d="$dp50" 'BEGIN{print a+b-d}')" "$qmean" "$cp50" "$hp50" \
  "$(us_per_req "$s_segue_ticks" "$sn")" "$drate" "$srate"
for f in direct segue; do
  r=$(awk '$1=="achieved" { print $7 }' "$work/$f.out")
  if awk -v r="${r:-0}" -v t="$rate" 'BEGIN{ exit !(r < 0.95 * t) }'; then
    echo "WARNING: the $f phase achieved ${r:-0} req/s, not $rate: its wrk output:"
    cat "$work/$f.out"
  fi
done

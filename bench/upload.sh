#!/usr/bin/env bash
# Load scenario: one large multipart upload. A ~200 MiB 16-bit PCM WAV (bench/make_wav.sh) is
# sent with curl -F audio_file=@big.wav -F extend_after=1 to POST /v1/extensions while segue's
# VmRSS is sampled every 50 ms from /proc/<pid>/status; the same upload goes to nginx in the same
# run as the throughput baseline.
#
#   bench/upload.sh                        full speed: nginx baselines, then segue
#   bench/upload.sh --limit-rate 20M       segue only, curl --limit-rate 20M (a slow client):
#                                          memory must stay flat for the whole upload
#   BENCH_WAV_SECONDS=1189 (default; 1189 s of stereo 44.1 kHz = 209,739,644 bytes)
#
# Segue: api.max_upload_bytes: 512MiB, durable SQLite and blobs in a temp dir
# (storage.sync_full: true: the spooled file is fsynced before the 202), sandbox delay 10m so
# the DSP does not start, log.access: false. The upload is streamed to disk in 256 KiB reads
# (SHA-256 on the way), then probed with libsndfile and committed.
#
# nginx baselines (1 worker, client_max_body_size 1g, client_body_buffer_size default):
#   discard: `return 200` - nginx reads the body and throws it away (no disk).
#   spool:   echo_read_request_body (the echo module nginx-light ships) - nginx reads the body
#            into a temp file on the same disk (no fsync), the closest match to segue's work.
#
# RSS: "before" is sampled just before the upload; "peak" is the larger of the 50 ms samples
# and the kernel's VmHWM, which is reset (clear_refs 5) right before the upload, so short
# spikes between samples are caught too. Target: growth < 16 MiB.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
limit_rate=""
while (($#)); do
  case "$1" in
    --limit-rate) limit_rate="${2:?--limit-rate needs a value, e.g. 20M}"; shift 2 ;;
    *) echo "usage: bench/upload.sh [--limit-rate RATE]" >&2; exit 2 ;;
  esac
done
secs="${BENCH_WAV_SECONDS:-1189}"
key="sk-bench-$RANDOM$RANDOM"
bench_setup
bench_machine_note

bench/make_wav.sh "$work/big.wav" "$secs"
size=$(stat -c %s "$work/big.wav")
echo "# upload: $size bytes ($(mib $((size / 1024))) MiB) WAV${limit_rate:+, curl --limit-rate $limit_rate}"

cat >"$work/segue.yaml" <<YAML
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
storage:
  sqlite_path: $work/db/segue.db
  blob_dir: $work/blobs
  sync_full: true
api:
  max_upload_bytes: 512MiB
providers:
  sandbox:
    delay: 10m
YAML

upload() {  # url out-prefix [curl args...] -> "http_code size_upload speed_upload time_total"
  local url=$1 out=$2
  shift 2
  curl -s -o "$out.body" -w '%{http_code} %{size_upload} %{speed_upload} %{time_total}\n' \
    --max-time 600 ${limit_rate:+--limit-rate "$limit_rate"} "$@" \
    -F "audio_file=@$work/big.wav" -F extend_after=1 "$url" >"$out.curl" || true
  cat "$out.curl"
}
mbs() { awk -v b="$1" 'BEGIN{printf "%.0f", b/1e6}'; }  # bytes/s -> MB/s (10^6)

# --- nginx baselines (full speed only: with --limit-rate they would only show the limit) ---
if [[ -z "$limit_rate" ]]; then
  start_nginx nginx 1 "
    client_max_body_size 1g;
    location = /discard { return 200 'ok\n'; }
    location = /spool { echo_read_request_body; echo ok; }"
  read -r nd_code nd_size nd_speed nd_time < <(upload "http://127.0.0.1:$nginx_port/discard" "$work/nd")
  ns_code=""
  if [[ -f /usr/lib/nginx/modules/ngx_http_echo_module.so ]]; then
    read -r ns_code ns_size ns_speed ns_time < <(upload "http://127.0.0.1:$nginx_port/spool" "$work/ns")
  fi
fi

# --- segue ---
start_segue "$work/segue.yaml"
sleep 0.3
echo 5 >"/proc/$segue_pid/clear_refs" 2>/dev/null || true  # reset VmHWM to the current RSS
before_kb=$(rss_kb "$segue_pid")
sampler() {  # every 50 ms: "<ms since start> <VmRSS kB>"
  local t0 now
  t0=$(date +%s%N)
  while kill -0 "$segue_pid" 2>/dev/null; do
    now=$(date +%s%N)
    echo "$(((now - t0) / 1000000)) $(awk '/^VmRSS/{print $2}' "/proc/$segue_pid/status" 2>/dev/null)"
    sleep 0.05
  done
}
sampler >"$work/rss.samples" &
sampler_pid=$!
bench_pids+=("$sampler_pid")
read -r s_code s_size s_speed s_time < <(upload "http://127.0.0.1:$segue_port/v1/extensions" "$work/s" \
  -H "Authorization: Bearer $key")
sleep 0.2
kill "$sampler_pid" 2>/dev/null || true
segue_alive
after_kb=$(rss_kb "$segue_pid")
hwm=$(hwm_kb "$segue_pid")
sampled_peak=$(awk 'NF==2 && $2>m {m=$2} END{print m+0}' "$work/rss.samples")
nsamples=$(awk 'NF==2' "$work/rss.samples" | wc -l)
peak_kb=$((hwm > sampled_peak ? hwm : sampled_peak))
growth_kb=$((peak_kb - before_kb))

if [[ "$s_code" != 202 ]]; then
  echo "segue answered HTTP $s_code (expected 202):"; head -c 600 "$work/s.body"; echo
fi
stored=$(find "$work/blobs" -type f -name 'file_*' -printf '%s\n' -quit 2>/dev/null || true)

printf '%-22s %6s %14s %10s %10s\n' target status 'bytes sent' 'MB/s' 'seconds'
if [[ -z "$limit_rate" ]]; then
  printf '%-22s %6s %14s %10s %10.3f\n' 'nginx discard' "$nd_code" "$nd_size" "$(mbs "$nd_speed")" "$nd_time"
  [[ -n "$ns_code" ]] &&
    printf '%-22s %6s %14s %10s %10.3f\n' 'nginx spool (tmpfile)' "$ns_code" "$ns_size" "$(mbs "$ns_speed")" "$ns_time"
fi
printf '%-22s %6s %14s %10s %10.3f\n' 'segue' "$s_code" "$s_size" "$(mbs "$s_speed")" "$s_time"
echo "segue stored the upload: ${stored:-none} bytes (sent $size as the file part)"
if [[ -z "$limit_rate" ]]; then
  printf 'segue/nginx-discard throughput: %s, segue/nginx-spool: %s\n' \
    "$(ratio "$s_speed" "$nd_speed")" "$(ratio "$s_speed" "${ns_speed:-0}")"
fi
printf 'segue RSS: before %s MiB, peak %s MiB (sampled max %s MiB over %d samples, VmHWM %s MiB), after %s MiB\n' \
  "$(mib "$before_kb")" "$(mib "$peak_kb")" "$(mib "$sampled_peak")" "$nsamples" "$(mib "$hwm")" "$(mib "$after_kb")"
printf 'segue RSS growth during the upload: %s MiB (target < 16 MiB)\n' "$(mib "$growth_kb")"
# A coarse timeline (one line per ~second) so a slow upload shows whether RSS stays flat.
awk 'NF==2 { s = int($1/1000); if (!(s in seen)) { seen[s]=1; order[++n]=s } if ($2 > mx[s]) mx[s]=$2 }
     END { printf "RSS max per second (MiB):"; for (i=1;i<=n;i++) printf " %.1f", mx[order[i]]/1024; print "" }' \
  "$work/rss.samples"

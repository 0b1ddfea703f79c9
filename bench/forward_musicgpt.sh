#!/usr/bin/env bash
# Load scenario (MusicGPT issue): a ~100 MiB upload forwarded by segue to the fake MusicGPT.
# The client uploads to segue (spooled to disk, 202), then segue's engine streams the spooled
# file to the fake as multipart (never holding it in memory). Segue's VmRSS is sampled every
# 50 ms from just before the client upload until the fake has received the whole forward.
# The same file is uploaded straight to the fake in the same run: the throughput baseline.
#
#   bench/forward_musicgpt.sh          (BENCH_WAV_SECONDS=595: ~105 MB of 16-bit stereo WAV)
#
# Target: RSS growth of segue < 16 MiB.
set -euo pipefail
source "$(dirname "$0")/lib.sh"
secs="${BENCH_WAV_SECONDS:-595}"
key="sk-bench-$RANDOM$RANDOM"
bench_setup
bench_machine_note
fake=build/tests/fakes/fake_musicgpt
[[ -x $fake ]] || scripts/build.sh fake_musicgpt
cp "$fake" "$work/fake.bin"

bench/make_wav.sh "$work/big.wav" "$secs"
size=$(stat -c %s "$work/big.wav")
echo "# upload: $size bytes ($(mib $((size / 1024))) MiB) WAV"

"$work/fake.bin" --listen 127.0.0.1:0 --port-file "$work/fake.port" --api-key mg-bench \
  --webhook-delay-ms 600000 >"$work/fake.log" 2>&1 &
bench_pids+=("$!")
for _ in $(seq 200); do [[ -s "$work/fake.port" ]] && break; sleep 0.05; done
fport=$(cat "$work/fake.port")

upload() {  # url out [curl args...] -> "http_code size_upload speed_upload time_total"
  local url=$1 out=$2
  shift 2
  curl -s -o "$out.body" -w '%{http_code} %{size_upload} %{speed_upload} %{time_total}\n' \
    --max-time 600 "$@" -F "audio_file=@$work/big.wav" -F extend_after=1 "$url" >"$out.curl" || true
  cat "$out.curl"
}
mbs() { awk -v b="$1" 'BEGIN{printf "%.0f", b/1e6}'; }

# Baseline: the same multipart straight to the fake.
read -r d_code d_size d_speed d_time < <(upload "http://127.0.0.1:$fport/api/public/v1/extend" "$work/d" \
  -H "Authorization: mg-bench")
curl -s -X POST "http://127.0.0.1:$fport/_control/reset" >/dev/null

sport=$(free_port)
cat >"$work/segue.yaml" <<YAML
server:
  listen: 127.0.0.1:$sport
  io_threads: 2
  drain_timeout: 2s
log:
  level: warn
  access: false
tenants:
  - name: bench
    api_keys: ["$key"]
storage:
  sqlite_path: $work/db/segue.db
  blob_dir: $work/blobs
api:
  max_upload_bytes: 512MiB
  public_base_url: http://127.0.0.1:$sport
  default_provider: musicgpt
engine:
  poll_interval: 50ms
upstream:
  allow_plain_http: true
providers:
  musicgpt:
    enabled: true
    base_url: http://127.0.0.1:$fport/api/public
    api_key: mg-bench
    submit_timeout: 10m
    reconcile_after: 10m
YAML
start_segue "$work/segue.yaml"
sleep 0.3
echo 5 >"/proc/$segue_pid/clear_refs" 2>/dev/null || true
before_kb=$(rss_kb "$segue_pid")
sampler() {
  while kill -0 "$segue_pid" 2>/dev/null; do
    awk '/^VmRSS/{print $2}' "/proc/$segue_pid/status" 2>/dev/null
    sleep 0.05
  done
}
sampler >"$work/rss.samples" &
sampler_pid=$!
bench_pids+=("$sampler_pid")
t0=$(date +%s%N)
read -r s_code s_size s_speed s_time < <(upload "http://127.0.0.1:$sport/v1/extensions" "$work/s" \
  -H "Authorization: Bearer $key")
t_accepted=$(date +%s%N)
# The forward is done when the fake has answered the submit (its request log records it).
forwarded=""
for _ in $(seq 6000); do
  if curl -s "http://127.0.0.1:$fport/_control/requests?route=submit" | grep -q '"status":200'; then
    forwarded=1
    break
  fi
  sleep 0.1
done
t_done=$(date +%s%N)
kill "$sampler_pid" 2>/dev/null || true
segue_alive
hwm=$(hwm_kb "$segue_pid")
sampled=$(awk '$1>m {m=$1} END{print m+0}' "$work/rss.samples")
peak_kb=$((hwm > sampled ? hwm : sampled))
fwd_s=$(awk -v a="$t_accepted" -v b="$t_done" 'BEGIN{printf "%.3f", (b-a)/1e9}')
fwd_speed=$(awk -v s="$size" -v t="$fwd_s" 'BEGIN{ if (t>0) printf "%.0f", s/t; else print 0 }')
received=$(curl -s "http://127.0.0.1:$fport/_control/requests?route=submit" |
  grep -o '"name":"audio_file"[^}]*"size":[0-9]*' | grep -o '"size":[0-9]*' | head -1 | cut -d: -f2)

printf '%-30s %6s %14s %10s %10s\n' path status bytes 'MB/s' seconds
printf '%-30s %6s %14s %10s %10.3f\n' 'client -> fake (direct)' "$d_code" "$d_size" "$(mbs "$d_speed")" "$d_time"
printf '%-30s %6s %14s %10s %10.3f\n' 'client -> segue (spool, 202)' "$s_code" "$s_size" "$(mbs "$s_speed")" "$s_time"
printf '%-30s %6s %14s %10s %10.3f\n' 'segue -> fake (forward)' "${forwarded:+200}" "${received:-?}" "$(mbs "$fwd_speed")" "$fwd_s"
printf 'forward/direct throughput: %s\n' "$(ratio "$fwd_speed" "$d_speed")"
printf 'segue RSS: before %s MiB, peak %s MiB; growth %s MiB (target < 16 MiB)\n' \
  "$(mib "$before_kb")" "$(mib "$peak_kb")" "$(mib $((peak_kb - before_kb)))"
[[ -n "$forwarded" && "${received:-0}" == "$size" ]] || { echo "the forward did not complete with every byte"; exit 1; }

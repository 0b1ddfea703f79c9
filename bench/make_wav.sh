#!/usr/bin/env bash
# Writes a valid 16-bit PCM stereo 44.1 kHz WAV of a 440 Hz sine (deterministic, no
# /dev/urandom), decodable by libsndfile. Needs only bash and awk.
#
#   bench/make_wav.sh OUT.wav SECONDS [RATE] [CHANNELS]     (defaults 44100 2)
#   44.1 kHz stereo: 1 s = 176,400 bytes of audio; 1189 s ~ 200 MiB
set -euo pipefail
usage="usage: make_wav.sh OUT.wav SECONDS [RATE] [CHANNELS]"
out="${1:?$usage}"
secs="${2:?$usage}"
rate="${3:-44100}"
channels="${4:-2}"
[[ "$secs" =~ ^[1-9][0-9]*$ ]] || { echo "SECONDS must be a positive integer" >&2; exit 2; }
[[ "$rate" =~ ^[1-9][0-9]*$ && "$channels" =~ ^[12]$ ]] || { echo "$usage" >&2; exit 2; }

bits=16
block=$((channels * bits / 8))
second_bytes=$((rate * block))
data_bytes=$((secs * second_bytes))

le32() { # little-endian 32-bit as octal escapes for printf
  local v=$1
  printf '\\%03o\\%03o\\%03o\\%03o' $((v & 255)) $(((v >> 8) & 255)) $(((v >> 16) & 255)) $(((v >> 24) & 255))
}
le16() { local v=$1; printf '\\%03o\\%03o' $((v & 255)) $(((v >> 8) & 255)); }

tmp="$out.part"
trap 'rm -f "$tmp" "$tmp.sec"' EXIT
{
  printf 'RIFF'; printf "$(le32 $((36 + data_bytes)))"; printf 'WAVE'
  printf 'fmt '; printf "$(le32 16)"; printf "$(le16 1)"; printf "$(le16 $channels)"
  printf "$(le32 $rate)"; printf "$(le32 $second_bytes)"; printf "$(le16 $block)"; printf "$(le16 $bits)"
  printf 'data'; printf "$(le32 "$data_bytes")"
} >"$tmp"

# One second of a 440 Hz sine (an exact number of periods, so repeating it is seamless),
# built as printf octal escapes by awk, in 4410-frame slices to keep each format string small.
LC_ALL=C awk -v rate="$rate" -v ch="$channels" 'BEGIN {
  pi = atan2(0, -1)
  for (i = 0; i < rate; i++) {
    s = int(sin(2 * pi * 440 * i / rate) * 12000)
    if (s < 0) s += 65536
    lo = s % 256; hi = int(s / 256)
    frame = sprintf("\\%03o\\%03o", lo, hi)
    line = line frame
    if (ch == 2) line = line frame     # right = left
    if ((i + 1) % 4000 == 0) { print line; line = "" }
  }
  if (line != "") print line
}' | while IFS= read -r line; do printf "$line"; done >"$tmp.sec"
[[ $(stat -c %s "$tmp.sec") -eq $second_bytes ]] || { echo "make_wav: bad sample block" >&2; exit 1; }

# Repeat it: doubling keeps this to ~log2(secs) cat calls.
have=1
cp "$tmp.sec" "$tmp.rep"
trap 'rm -f "$tmp" "$tmp.sec" "$tmp.rep" "$tmp.rep2"' EXIT
while ((have * 2 <= secs)); do cat "$tmp.rep" "$tmp.rep" >"$tmp.rep2"; mv "$tmp.rep2" "$tmp.rep"; have=$((have * 2)); done
cat "$tmp.rep" >>"$tmp"
left=$((secs - have))
while ((left > 0)); do
  # append the largest power-of-two prefix of $tmp.rep that fits
  n=$have
  while ((n > left)); do n=$((n / 2)); done
  head -c $((n * second_bytes)) "$tmp.rep" >>"$tmp"
  left=$((left - n))
done
[[ $(stat -c %s "$tmp") -eq $((44 + data_bytes)) ]] || { echo "make_wav: wrong size" >&2; exit 1; }
mv "$tmp" "$out"

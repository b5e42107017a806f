#!/usr/bin/env bash
# What clients that never authenticate can cost the XKS listener, measured
# on loopback (a measurement, not a test: run it by hand).
#
# One release server on the embedded default; keyhold-siege holds SLOW (1000)
# slow HTTP/1.1 clients, each sending 250 KiB of a body it never finishes,
# and H2 (20) HTTP/2 connections trying to hold STREAMS (250) stalled streams
# each, from the source addresses 127.0.0.2-127.0.0.9 (so that the per-address
# cap alone does not turn them away); beside them keyhold-bench sends a
# normal load from 127.0.0.1 (RATE requests/s of Encrypt on 8 connections).
# Printed: the server's peak RSS and open file descriptors, what the
# attackers held, and the normal load's throughput, p99 and errors. Fails
# when a goal is missed: RSS < 128 MiB, descriptors within the cap, p99
# < 10 ms, no error.
#
#   SLOW=1000 H2=20 STREAMS=250 RATE=1000 LOAD_SECONDS=20 scripts/dos.sh
set -euo pipefail
cd "$(dirname "$0")/.."
SLOW=${SLOW:-1000}
H2=${H2:-20}
STREAMS=${STREAMS:-250}
RATE=${RATE:-1000}
LOAD_SECONDS=${LOAD_SECONDS:-20}
RAMP=${RAMP:-10}
cargo build --release --locked -p keyhold-cli -p keyhold-bench
K=$PWD/target/release/keyhold
tmp=$(mktemp -d)
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
export KEYHOLD_DATA_DIR=$tmp/data
"$K" init --listen 127.0.0.1:0 >/dev/null
"$K" store create /demo >/dev/null
(umask 077 && "$K" --json store credential add /demo >"$tmp/cred.json")
"$K" key create /demo demo-key >/dev/null
mkfifo "$tmp/out"
exec 4<>"$tmp/out"
"$K" serve >"$tmp/out" 2>"$tmp/server.log" &
pid=$!
pids+=("$pid")
IFS= read -r -t 30 line <&4 || { echo "the server did not start" >&2; cat "$tmp/server.log" >&2; exit 1; }
cat <&4 >/dev/null &
pids+=($!)
port=${line##*:}
echo "server $pid on port $port; $SLOW slow clients, $H2 HTTP/2 connections x $STREAMS streams"

# The server's RSS (KiB) and descriptors, twice a second.
(while kill -0 "$pid" 2>/dev/null; do
  echo "$(awk '/^VmRSS/ {print $2}' "/proc/$pid/status") $(ls "/proc/$pid/fd" | wc -l)"
  sleep 0.5
done) >"$tmp/samples" &
pids+=($!)

sources=()
for i in 2 3 4 5 6 7 8 9; do sources+=(--source "127.0.0.$i"); done
target/release/keyhold-siege --addr "127.0.0.1:$port" --cacert "$KEYHOLD_DATA_DIR/tls/ca.pem" \
  --slow "$SLOW" --slow-body-kib "${SLOW_KIB:-250}" --h2 "$H2" --h2-streams "$STREAMS" "${sources[@]}" \
  --seconds $((RAMP + LOAD_SECONDS + 5)) >"$tmp/siege.log" 2>&1 &
pids+=($!)
sleep "$RAMP" # let the attackers take what they can before measuring
tail -n 1 "$tmp/siege.log"
load=$(target/release/keyhold-bench --url "https://localhost:$port/demo/kms/xks/v1" --key-id demo-key \
  --credential "$tmp/cred.json" --cacert "$KEYHOLD_DATA_DIR/tls/ca.pem" -c 8 --rate "$RATE" -d "$LOAD_SECONDS")
echo "$load"
tail -n 1 "$tmp/siege.log"
read -r rss_kib fds < <(sort -n "$tmp/samples" | tail -n 1 | awk '{print $1, $2}')
max_fds=$(sort -k2 -n "$tmp/samples" | tail -n 1 | awk '{print $2}')
cap=4096 # xks.max_connections, the default
p99=$(echo "$load" | sed -n 's/.*p99=\([0-9.]*\).*/\1/p' | head -n 1)
errors=$(echo "$load" | sed -n 's/.*errors=\([0-9]*\).*/\1/p' | head -n 1)
echo "peak server RSS: $((rss_kib / 1024)) MiB; peak open descriptors: $max_fds (connection cap $cap)"
echo "normal load: p99 ${p99} ms, errors ${errors}"
ok=true
[ $((rss_kib / 1024)) -lt 128 ] || { echo "GOAL MISSED: RSS >= 128 MiB" >&2; ok=false; }
[ "$max_fds" -le $(( $cap + 64 )) ] || { echo "GOAL MISSED: descriptors over the cap" >&2; ok=false; }
awk -v p="$p99" 'BEGIN { exit !(p < 10) }' || { echo "GOAL MISSED: p99 >= 10 ms" >&2; ok=false; }
[ "$errors" = 0 ] || { echo "GOAL MISSED: errors in the normal load" >&2; ok=false; }
$ok && echo "every goal met"
$ok

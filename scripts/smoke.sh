#!/usr/bin/env bash
# Runs scripts/quickstart.sh in a temporary data directory on a free port,
# runs the curl command it prints, then a short keyhold-bench run.
set -euo pipefail
cd "$(dirname "$0")/.."
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
KEYHOLD_DATA_DIR=$tmp/data KEYHOLD_LISTEN=127.0.0.1:$port scripts/quickstart.sh >"$tmp/out" 2>"$tmp/err" &
pid=$!
trap 'kill $pid 2>/dev/null || true; wait $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 600); do
  grep -q "keyhold listening on" "$tmp/out" 2>/dev/null && break
  kill -0 $pid 2>/dev/null || { cat "$tmp/out" "$tmp/err" >&2; exit 1; }
  sleep 1
done
grep -q "keyhold listening on" "$tmp/out" || { echo "quick start did not come up" >&2; cat "$tmp/err" >&2; exit 1; }
# Run the printed curl command exactly as a user would paste it.
cmd=$(sed -n '/^curl /,/encrypt$/p' "$tmp/out")
answer=$(bash -c "$cmd -sS")
echo "quick start answered: $answer"
echo "$answer" | grep -q '"ciphertext"' || { echo "quick start curl command failed" >&2; exit 1; }
target/release/keyhold-bench --url "https://localhost:$port/demo/kms/xks/v1" --key-id demo-key \
  --credential "$tmp/data/demo-credential.json" --cacert "$tmp/data/tls/ca.pem" -c 4 -d 2

# The load generator's KMIP modes, against a KMIP listener of its own.
K=target/release/keyhold
export KEYHOLD_DATA_DIR=$tmp/kmip
"$K" init --listen 127.0.0.1:0 >/dev/null
"$K" kmip client-cert issue smoke --out "$tmp" >/dev/null
"$K" serve --kmip-listen 127.0.0.1:0 >"$tmp/kout" 2>"$tmp/kerr" &
kpid=$!
trap 'kill $pid $kpid 2>/dev/null || true; wait 2>/dev/null || true; rm -rf "$tmp"' EXIT
for _ in $(seq 1 100); do grep -q "kmip on" "$tmp/kout" 2>/dev/null && break; sleep 0.1; done
kaddr=$(sed -n 's/^keyhold kmip on //p' "$tmp/kout")
[ -n "$kaddr" ] || { echo "KMIP listener did not come up" >&2; cat "$tmp/kerr" >&2; exit 1; }
for op in kmip-cycle kmip-encrypt kmip-locate; do
  out=$(target/release/keyhold-bench --kmip "$kaddr" --client-cert "$tmp/smoke.pem" --client-key "$tmp/smoke.key" \
    --cacert "$KEYHOLD_DATA_DIR/tls/ca.pem" --op $op -c 2 -d 1)
  echo "$out"
  echo "$out" | grep -q "errors=0" || { echo "keyhold-bench --op $op had errors" >&2; exit 1; }
done
echo "smoke test passed"

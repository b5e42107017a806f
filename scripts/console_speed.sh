#!/usr/bin/env bash
# Each console page's first render with 100,000 keys in one store (the
# issue's figure: under 300 ms on this machine). Release build, a fresh
# data directory, curl as the browser; prints the median of 5 loads each.
set -euo pipefail
cd "$(dirname "$0")/.."
KEYS=${KEYS:-100000}
cargo build --release --locked -q -p keyhold-cli
K=$PWD/target/release/keyhold
tmp=$(mktemp -d)
trap 'kill $pid 2>/dev/null || true; rm -rf "$tmp"' EXIT
export KEYHOLD_DATA_DIR=$tmp/data
"$K" init >/dev/null
"$K" store create /big >/dev/null
"$K" key create /big key --count "$KEYS" >/dev/null
token=$("$K" --json admin token create speed --role custodian | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
auditor=$("$K" --json admin token create reader --role auditor | python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
"$K" serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 > "$tmp/out" 2>"$tmp/log" &
pid=$!
for _ in $(seq 200); do grep -q "admin on" "$tmp/out" 2>/dev/null && break; sleep 0.05; done
admin=$(sed -n 's/^keyhold admin on //p' "$tmp/out" | sed 's/127.0.0.1/localhost/')
ca=$KEYHOLD_DATA_DIR/tls/ca.pem
time_page() { # jar path → median seconds of 5 loads, and the status
  for _ in 1 2 3 4 5; do
    curl -sS -o /dev/null --cacert "$ca" -b "$1" -w '%{time_total} (HTTP %{http_code})\n' "https://$admin$2"
  done | sort -n | sed -n 3p
}
for who in token auditor; do
  jar=$tmp/$who.jar
  curl -sS -o /dev/null --cacert "$ca" -c "$jar" --data-urlencode "token=${!who}" "https://$admin/ui/login"
done
echo "console first render, $KEYS keys in /big (median of 5, seconds):"
for p in /ui/ /ui/stores /ui/stores/big "/ui/stores/big?q=key-0999" "/ui/stores/big?after=key-050000" /ui/stores/big/keys/key-050000 /ui/stores/big/credentials; do
  printf '  %-36s %s\n' "$p" "$(time_page "$tmp/token.jar" "$p")"
done
printf '  %-36s %s\n' "/ui/audit (auditor)" "$(time_page "$tmp/auditor.jar" /ui/audit)"

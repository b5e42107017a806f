#!/usr/bin/env bash
# Runs scripts/quickstart.sh in a temporary data directory on a free port and
# types what it prints, as a new user would: the export line, the Encrypt and
# the Decrypt of its answer, `keyhold status` and `keyhold audit verify`; then
# refuses a second quick start on the same port, and makes short
# keyhold-bench runs (XKS and KMIP).
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$PWD
tmp=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
pid=
kpid=
drains=()
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null || true
  [ -n "$kpid" ] && kill "$kpid" 2>/dev/null || true
  # The drains read pipes this script holds open: they end only when killed.
  for d in "${drains[@]}"; do kill "$d" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
# Its output comes through a pipe that this script keeps open (fd 4): read
# up to the last line of the instructions, then drained in the background.
mkfifo "$tmp/qs"
exec 4<>"$tmp/qs"
KEYHOLD_DATA_DIR=$tmp/data KEYHOLD_LISTEN=127.0.0.1:$port scripts/quickstart.sh >"$tmp/qs" 2>"$tmp/err" &
pid=$!
: >"$tmp/out"
deadline=$((SECONDS + 900))
while [ $SECONDS -lt $deadline ]; do
  if IFS= read -r -t 5 line <&4; then
    printf '%s\n' "$line" >>"$tmp/out"
    case $line in *"keyhold --help."*) break ;; esac
  else
    kill -0 $pid 2>/dev/null || break # it exited: its error is in $tmp/err
  fi
done
grep -q "keyhold --help." "$tmp/out" || { echo "quick start did not come up" >&2; cat "$tmp/out" "$tmp/err" >&2; exit 1; }
cat <&4 >/dev/null &
drains+=($!)

# The commands as printed, run in a directory of the user's own.
work=$tmp/user
mkdir "$work"
cd "$work"
export_line=$(grep '^export PATH=' "$tmp/out")
encrypt=$(sed -n '/^curl /,/encrypt | tee encrypted.json; echo$/p' "$tmp/out")
decrypt=$(sed -n '/^jq -c /,/base64 -d; echo$/p' "$tmp/out")
[ -n "$export_line" ] && [ -n "$encrypt" ] && [ -n "$decrypt" ] || { echo "quick start printed no commands" >&2; cat "$tmp/out" >&2; exit 1; }
answer=$(bash -c "$encrypt")
echo "quick start Encrypt answered: $answer"
echo "$answer" | grep -q '"ciphertext"' || { echo "the printed Encrypt failed" >&2; exit 1; }
plain=$(bash -c "$decrypt")
echo "quick start Decrypt answered: $plain"
[ "$plain" = "Hello World!" ] || { echo "the printed Decrypt did not give Hello World! back" >&2; exit 1; }
status=$(bash -c "$export_line; unset KEYHOLD_LISTEN; keyhold status")
echo "$status"
echo "$status" | grep -q "pid " || { echo "keyhold status does not list the running server" >&2; exit 1; }
# The README's own round trip, as written (on this run's port).
readme=$(awk '/^Encrypt, as AWS KMS would/ {f=1} f && /^```sh$/ {g=1; next} g && /^```$/ {exit} g' "$repo/README.md")
[ -n "$readme" ] || { echo "the README's round trip is missing" >&2; exit 1; }
said=$(bash -c "$export_line; set -e; ${readme//localhost:8443/localhost:$port}")
echo "README round trip: ${said##*$'\n'}"
[ "${said##*$'\n'}" = "Hello World!" ] || { echo "the README's round trip did not give Hello World! back" >&2; echo "$said" >&2; exit 1; }
verify=$(bash -c "$export_line; keyhold audit verify")
echo "$verify"
echo "$verify" | grep -q "intact" || { echo "keyhold audit verify failed after the quick start" >&2; exit 1; }
cd - >/dev/null

# A second quick start on the same port stops before building anything.
if KEYHOLD_DATA_DIR=$tmp/data2 KEYHOLD_LISTEN=127.0.0.1:$port scripts/quickstart.sh >"$tmp/second" 2>&1; then
  echo "a second quick start on a taken port did not fail" >&2; exit 1
fi
grep -q "already listens on 127.0.0.1:$port" "$tmp/second" || { cat "$tmp/second" >&2; exit 1; }
! grep -q Compiling "$tmp/second" || { echo "it built before checking the port" >&2; exit 1; }

cargo build --profile quickstart --locked -p keyhold-bench
BENCH=target/quickstart/keyhold-bench
"$BENCH" --url "https://localhost:$port/demo/kms/xks/v1" --key-id demo-key \
  --credential "$tmp/data/demo-credential.json" --cacert "$tmp/data/tls/ca.pem" -c 4 -d 2

# The load generator's KMIP modes, against a KMIP listener of its own.
K=target/quickstart/keyhold
export KEYHOLD_DATA_DIR=$tmp/kmip
"$K" init --listen 127.0.0.1:0 >/dev/null
"$K" kmip client-cert issue smoke --out "$tmp" >/dev/null
mkfifo "$tmp/kq"
exec 5<>"$tmp/kq"
"$K" serve --kmip-listen 127.0.0.1:0 >"$tmp/kq" 2>"$tmp/kerr" &
kpid=$!
kaddr=
deadline=$((SECONDS + 120))
while [ $SECONDS -lt $deadline ]; do
  if IFS= read -r -t 5 line <&5; then
    case $line in "keyhold kmip on "*) kaddr=${line#keyhold kmip on }; break ;; esac
  else
    kill -0 $kpid 2>/dev/null || break
  fi
done
[ -n "$kaddr" ] || { echo "KMIP listener did not come up" >&2; cat "$tmp/kerr" >&2; exit 1; }
cat <&5 >/dev/null &
drains+=($!)
for op in kmip-cycle kmip-encrypt kmip-locate; do
  out=$("$BENCH" --kmip "$kaddr" --client-cert "$tmp/smoke.pem" --client-key "$tmp/smoke.key" \
    --cacert "$KEYHOLD_DATA_DIR/tls/ca.pem" --op $op -c 2 -d 1)
  echo "$out"
  echo "$out" | grep -q "errors=0" || { echo "keyhold-bench --op $op had errors" >&2; exit 1; }
done
echo "smoke test passed"

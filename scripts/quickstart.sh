#!/usr/bin/env bash
# Builds the `keyhold` binary and starts it on the embedded default (SQLite +
# software root of trust: no HSM, no database server), with a ready key store
# (/demo), a SigV4 credential and a key (demo-key). Once the server listens,
# prints the commands to type next: an Encrypt and a Decrypt with curl, and
# the admin CLI. Ctrl-C stops the server; running this again restarts it on
# the same data.
#
#   KEYHOLD_DATA_DIR   data directory (default: keyhold-data in this repository)
#   KEYHOLD_LISTEN     listen address (default 127.0.0.1:8443)
set -euo pipefail
cd "$(dirname "$0")/.."

LISTEN=${KEYHOLD_LISTEN:-127.0.0.1:8443}
HOST=${LISTEN%:*}
PORT=${LISTEN##*:}
# The port first: nothing is worth building if the server cannot listen.
probe=$HOST
[ "$probe" = 0.0.0.0 ] && probe=127.0.0.1
if [ "$PORT" != 0 ] && (exec 3<>"/dev/tcp/$probe/$PORT") 2>/dev/null; then
  echo "quickstart: something already listens on $LISTEN." >&2
  echo "  A Keyhold started earlier? Stop it (Ctrl-C in its terminal), or pick another port:" >&2
  echo "  KEYHOLD_LISTEN=127.0.0.1:9443 scripts/quickstart.sh" >&2
  exit 1
fi

need=()
command -v curl >/dev/null || need+=(curl)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v python3 >/dev/null || need+=(python3)
command -v jq >/dev/null || need+=(jq)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" ca-certificates >/dev/null
  else
    echo "Please install: ${need[*]} (e.g. sudo apt-get install -y ${need[*]})" >&2
    exit 1
  fi
fi
command -v cargo >/dev/null || { echo "Rust is needed: https://rustup.rs" >&2; exit 1; }

# Only the keyhold binary, in a profile made for a first start (optimised,
# no LTO, no debug info); benchmarks build with the release profile.
BIN_DIR=$PWD/target/quickstart
if [ ! -x "$BIN_DIR/keyhold" ]; then
  echo "Building keyhold: about a minute and a half on 2 quiet cores the first time (crates already"
  echo "downloaded), seconds afterwards. Progress:"
fi
started=$(date +%s)
cargo build --profile quickstart --locked -p keyhold-cli --bin keyhold
echo "Built in $(( $(date +%s) - started )) s: $BIN_DIR/keyhold"
KEYHOLD=$BIN_DIR/keyhold
export KEYHOLD_DATA_DIR=${KEYHOLD_DATA_DIR:-$PWD/keyhold-data}
KEYHOLD_DATA_DIR=$(realpath -m "$KEYHOLD_DATA_DIR")
CRED=$KEYHOLD_DATA_DIR/demo-credential.json

if [ ! -f "$KEYHOLD_DATA_DIR/root.key" ]; then
  "$KEYHOLD" init --listen "$LISTEN"
  "$KEYHOLD" store create /demo --description "quick-start key store"
  (umask 077 && "$KEYHOLD" --json store credential add /demo > "$CRED")
  "$KEYHOLD" key create /demo demo-key
fi
read -r AKID SECRET < <(jq -r '"\(.access_key_id) \(.secret_access_key)"' "$CRED")

# The server's first line says it listens (or it exits with its error on
# stderr); only then are the next commands printed.
fifo=$(mktemp -u)
mkfifo "$fifo"
"$KEYHOLD" serve --listen "$LISTEN" >"$fifo" &
pid=$!
exec 3<"$fifo"
rm -f "$fifo"
trap 'kill -TERM $pid 2>/dev/null || true' INT TERM
if ! IFS= read -r first <&3; then
  wait $pid || exit $?
  exit 1
fi
echo "$first"
URL=${first#keyhold listening on }
URL=${URL/127.0.0.1/localhost}
META='"awsPrincipalArn":"arn:aws:iam::111122223333:user/Alice","kmsKeyArn":"arn:aws:kms:us-east-1:111122223333:key/demo"'
cat <<EOT

Keyhold is running: $URL (key store /demo, key demo-key), process $pid.
Data: $KEYHOLD_DATA_DIR (delete it to start afresh). Stop: Ctrl-C here.

In another terminal, set up the admin CLI once:

export PATH="$BIN_DIR:\$PATH" KEYHOLD_DATA_DIR="$KEYHOLD_DATA_DIR"
keyhold status

Encrypt "Hello World!" (AWS KMS sends the same request, signed with SigV4):

curl -sS --cacert "$KEYHOLD_DATA_DIR/tls/ca.pem" \\
  --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" --user "$AKID:$SECRET" \\
  -H "Content-Type: application/json" \\
  -d '{"requestMetadata":{$META,"kmsOperation":"Encrypt","kmsRequestId":"quickstart-1"},"plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM"}' \\
  $URL/demo/kms/xks/v1/keys/demo-key/encrypt | tee encrypted.json; echo

Decrypt that answer (prints Hello World!):

jq -c '{requestMetadata:{$META,kmsOperation:"Decrypt",kmsRequestId:"quickstart-2"},encryptionAlgorithm:"AES_GCM",ciphertext,ciphertextMetadata,initializationVector,authenticationTag}' encrypted.json \\
  | curl -sS --cacert "$KEYHOLD_DATA_DIR/tls/ca.pem" \\
  --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" --user "$AKID:$SECRET" \\
  -H "Content-Type: application/json" -d @- \\
  $URL/demo/kms/xks/v1/keys/demo-key/decrypt | jq -r .plaintext | base64 -d; echo

Then: keyhold key list /demo, keyhold key disable /demo demo-key (break glass:
the next Encrypt is refused), keyhold key enable /demo demo-key, keyhold audit
query, keyhold audit verify, keyhold --help.

EOT
cat <&3 &
# A Ctrl-C interrupts the first wait; the second one collects the server's
# own exit status once it has drained its connections.
while :; do
  wait $pid && rc=0 || rc=$?
  kill -0 $pid 2>/dev/null || break
done
exit $rc

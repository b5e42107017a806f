#!/usr/bin/env bash
# Builds Keyhold and starts it on the embedded default (SQLite + software root
# of trust: no HSM, no database server), with a ready key store (/demo), a
# SigV4 credential and a key (demo-key). Prints a working curl command first.
#
#   KEYHOLD_DATA_DIR   data directory (default ./keyhold-data)
#   KEYHOLD_LISTEN     listen address (default 127.0.0.1:8443)
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v curl >/dev/null || need+=(curl)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v python3 >/dev/null || need+=(python3)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" ca-certificates >/dev/null
  else
    echo "Please install: ${need[*]} (e.g. sudo apt-get install -y ${need[*]})" >&2
    exit 1
  fi
fi
command -v cargo >/dev/null || { echo "Rust is needed: https://rustup.rs" >&2; exit 1; }

cargo build --release --locked -p keyhold-cli -p keyhold-bench
KEYHOLD=$PWD/target/release/keyhold
export KEYHOLD_DATA_DIR=${KEYHOLD_DATA_DIR:-$PWD/keyhold-data}
LISTEN=${KEYHOLD_LISTEN:-127.0.0.1:8443}
PORT=${LISTEN##*:}
CRED=$KEYHOLD_DATA_DIR/demo-credential.json

if [ ! -f "$KEYHOLD_DATA_DIR/root.key" ]; then
  "$KEYHOLD" init --listen "$LISTEN"
  "$KEYHOLD" store create /demo --description "quick-start key store"
  (umask 077 && "$KEYHOLD" --json store credential add /demo > "$CRED")
  "$KEYHOLD" key create /demo demo-key
fi

read -r AKID SECRET < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["access_key_id"], c["secret_access_key"])' "$CRED")
cat <<EOT

Keyhold is starting on https://localhost:$PORT (key store /demo, key demo-key).
Encrypt "Hello World!" with it:

curl --cacert $KEYHOLD_DATA_DIR/tls/ca.pem \\
  --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" --user "$AKID:$SECRET" \\
  -H "Content-Type: application/json" \\
  -d '{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::111122223333:user/Alice","kmsKeyArn":"arn:aws:kms:us-east-1:111122223333:key/demo","kmsOperation":"Encrypt","kmsRequestId":"quickstart-1"},"plaintext":"SGVsbG8gV29ybGQh","encryptionAlgorithm":"AES_GCM"}' \\
  https://localhost:$PORT/demo/kms/xks/v1/keys/demo-key/encrypt

Admin: $KEYHOLD --help   (the data directory is $KEYHOLD_DATA_DIR)
Load:  target/release/keyhold-bench --url https://localhost:$PORT/demo/kms/xks/v1 --key-id demo-key --credential $CRED --cacert $KEYHOLD_DATA_DIR/tls/ca.pem

EOT
exec "$KEYHOLD" serve --listen "$LISTEN"

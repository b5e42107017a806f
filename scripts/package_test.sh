#!/usr/bin/env bash
# The Debian package as an operator meets it, on this machine: it builds,
# installs with dpkg -i (the keyhold user, /var/lib/keyhold 0700,
# /etc/keyhold/keyhold.toml readable by root and keyhold only, the unit,
# manual pages, completions), systemd-analyze verify accepts the unit, and
# the installed binary initialises and serves as the keyhold user (the
# unit's command line, with free loopback ports; containers run no systemd).
# Then it is removed and purged: the data directory stays.
#
# Needs root (dpkg). Refuses to touch a /var/lib/keyhold it did not make.
set -euo pipefail
cd "$(dirname "$0")/.."
if [ "$(id -u)" != 0 ]; then
  echo "package test: needs root (dpkg -i)" >&2
  exit 1
fi
marker=/var/lib/keyhold/.made-by-keyhold-package-test
if [ -e /var/lib/keyhold ] && [ ! -e "$marker" ]; then
  echo "package test: /var/lib/keyhold exists and is not this test's: refusing to touch it" >&2
  exit 1
fi
need=()
command -v adduser >/dev/null || need+=(adduser)
command -v systemd-analyze >/dev/null || need+=(systemd)
command -v runuser >/dev/null || need+=(util-linux)
if [ ${#need[@]} -gt 0 ]; then
  apt-get update -qq && apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
fi
cleanup() {
  [ -n "${pid:-}" ] && kill "$pid" 2>/dev/null || true
  getent passwd keyhold >/dev/null && pkill -u keyhold -x keyhold 2>/dev/null || true
  wait 2>/dev/null || true
  dpkg --purge keyhold >/dev/null 2>&1 || true
  if [ -e "$marker" ]; then rm -rf /var/lib/keyhold; fi
  getent passwd keyhold >/dev/null && deluser --system --quiet keyhold >/dev/null 2>&1 || true
  getent group keyhold >/dev/null && delgroup --system --quiet keyhold >/dev/null 2>&1 || true
  rm -rf "$tmp"
}
tmp=$(mktemp -d)
chmod 755 "$tmp"
trap cleanup EXIT
cleanup_first() { dpkg --purge keyhold >/dev/null 2>&1 || true; [ -e "$marker" ] && rm -rf /var/lib/keyhold || true; }
cleanup_first

deb=$(scripts/package.sh | tail -n 1)
echo "built $deb ($(du -h "$deb" | cut -f1))"
contents=$(dpkg-deb --contents "$deb")
for f in ./usr/bin/keyhold ./etc/keyhold/keyhold.toml ./usr/lib/systemd/system/keyhold.service \
         ./usr/share/man/man1/keyhold.1.gz ./usr/share/man/man1/keyhold-key-create.1.gz \
         ./usr/share/bash-completion/completions/keyhold ./usr/share/zsh/vendor-completions/_keyhold; do
  grep -q " $f\$" <<<"$contents" || { echo "package test: $f is not in the package" >&2; exit 1; }
done

dpkg -i "$deb" >/dev/null
touch "$marker"
getent passwd keyhold >/dev/null || { echo "no keyhold user" >&2; exit 1; }
[ "$(stat -c '%U %a' /var/lib/keyhold)" = "keyhold 700" ] || { echo "/var/lib/keyhold: $(stat -c '%U %a' /var/lib/keyhold)" >&2; exit 1; }
[ "$(stat -c '%U:%G %a' /etc/keyhold/keyhold.toml)" = "root:keyhold 640" ] || { echo "keyhold.toml: $(stat -c '%U:%G %a' /etc/keyhold/keyhold.toml)" >&2; exit 1; }
systemd-analyze verify /usr/lib/systemd/system/keyhold.service
for d in NoNewPrivileges=yes ProtectSystem=strict PrivateTmp=yes MemoryDenyWriteExecute=yes \
         'CapabilityBoundingSet=$' ReadWritePaths=/var/lib/keyhold LimitNOFILE=16384; do
  grep -q "^$d" /usr/lib/systemd/system/keyhold.service || { echo "the unit lacks $d" >&2; exit 1; }
done
bash -c 'source /usr/share/bash-completion/completions/keyhold && complete -p keyhold' >/dev/null
/usr/bin/keyhold --version

# As the keyhold user: make the data directory, then serve with the unit's
# command line (free loopback ports instead of the configured ones).
kh() { runuser -u keyhold -- env -C / /usr/bin/keyhold --config /etc/keyhold/keyhold.toml "$@"; }
runuser -u keyhold -- env -C / /usr/bin/keyhold --data-dir /var/lib/keyhold init --listen 127.0.0.1:0 >/dev/null
kh store create /pkg >/dev/null
kh --json store credential add /pkg > "$tmp/cred.json"
kh key create /pkg k >/dev/null
mkfifo "$tmp/out"
exec 3<>"$tmp/out"
kh serve --listen 127.0.0.1:0 --admin-listen 127.0.0.1:0 --metrics-listen 127.0.0.1:0 >"$tmp/out" 2>"$tmp/err" &
pid=$!
IFS= read -r -t 60 line <&3 || { echo "the packaged server did not start" >&2; cat "$tmp/err" >&2; exit 1; }
port=${line##*:}
# $pid is the shell running runuser; the server is the one keyhold process
# of the keyhold user.
child=$(pgrep -u keyhold -x keyhold || true)
[ -n "$child" ] && [ "$(wc -w <<<"$child")" = 1 ] || { echo "the server does not run as keyhold" >&2; ps -ef | grep [k]eyhold >&2; exit 1; }
read -r AKID SECRET < <(python3 -c 'import json,sys; c=json.load(open(sys.argv[1])); print(c["access_key_id"], c["secret_access_key"])' "$tmp/cred.json")
answer=$(curl -sS --cacert /var/lib/keyhold/tls/ca.pem --aws-sigv4 "aws:amz:us-east-1:kms-xks-proxy" --user "$AKID:$SECRET" \
  -H "Content-Type: application/json" \
  -d '{"requestMetadata":{"awsPrincipalArn":"arn:aws:iam::1:user/a","kmsKeyArn":"arn:aws:kms:us-east-1:1:key/k","kmsOperation":"Encrypt","kmsRequestId":"pkg"},"plaintext":"aGVsbG8=","encryptionAlgorithm":"AES_GCM"}' \
  "https://localhost:$port/pkg/kms/xks/v1/keys/k/encrypt")
grep -q '"ciphertext"' <<<"$answer" || { echo "the packaged server did not encrypt: $answer" >&2; exit 1; }
kh status | grep -q "pid $child" || { echo "keyhold status does not list the server" >&2; kh status >&2; exit 1; }
echo "packaged server (pid $child, user keyhold) answered: $answer"
kill "$child"; wait "$pid" 2>/dev/null || true; pid=
exec 3<&-
kh audit verify | grep -q intact

dpkg -r keyhold >/dev/null
[ ! -e /usr/bin/keyhold ] || { echo "dpkg -r left the binary" >&2; exit 1; }
[ -e /var/lib/keyhold/root.key ] || { echo "removal took the data directory" >&2; exit 1; }
echo "package test passed: $deb"

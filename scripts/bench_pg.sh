#!/usr/bin/env bash
# Keyhold on PostgreSQL, measured beside the SQLite default on this machine:
#   1. XKS Encrypt on one node, SQLite vs PostgreSQL (keys cached).
#   2. Key creation (KMIP Create of AES-256 keys) at 1 and 16 clients, both.
#   3. Two nodes on one database vs one node, each node held to the same CPU
#      share (a cgroup CPU quota, else pinned to one core each), the load
#      generator outside those limits.
# PostgreSQL runs with its defaults (fsync on) in a temp dir on a loopback
# port. Needs Debian's postgresql package (scripts/test.sh installs it).
#
#   DURATION  seconds per run (default 10)
#   QUOTA     CPU share of each node in part 3, in % of one core (default 40)
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --release --locked -p keyhold-cli -p keyhold-bench >&2
K=$PWD/target/release/keyhold
B=$PWD/target/release/keyhold-bench
D=${DURATION:-10}
QUOTA=${QUOTA:-40}
tmp=$(mktemp -d)
chmod 755 "$tmp"
pids=()
pgbin=$(ls -d /usr/lib/postgresql/*/bin | sort -V | tail -1)
as_pg() { if [ "$(id -u)" = 0 ]; then runuser -u postgres -- "$@"; else "$@"; fi; }
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  as_pg "$pgbin/pg_ctl" -D "$tmp/pg" -m immediate stop >/dev/null 2>&1 || true
  for g in /sys/fs/cgroup/cpu/keyhold-bench-*; do [ -d "$g" ] && { rmdir "$g" 2>/dev/null || true; }; done
  rm -rf "$tmp"
  return 0
}
trap cleanup EXIT

# A PostgreSQL cluster of its own.
mkdir -p "$tmp/pgsock" "$tmp/pg"
if [ "$(id -u)" = 0 ]; then chown postgres "$tmp/pgsock" "$tmp/pg"; fi
as_pg "$pgbin/initdb" -D "$tmp/pg" -U keyhold --auth=trust -E UTF8 >/dev/null
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
as_pg "$pgbin/pg_ctl" -D "$tmp/pg" -l "$tmp/pgsock/pg.log" -w \
  -o "-p $port -c listen_addresses=127.0.0.1 -c unix_socket_directories=$tmp/pgsock -c max_connections=200" start >/dev/null
psql -X -q -h 127.0.0.1 -p "$port" -U keyhold -d postgres -c "CREATE DATABASE keyhold" >/dev/null
URL="postgres://keyhold@127.0.0.1:$port/keyhold"
echo "PostgreSQL $("$pgbin/postgres" --version | awk '{print $3}') on 127.0.0.1:$port (fsync on)"

# node NAME [init args...]: a data dir with store /bench, key bench-key and
# a KMIP client certificate (the store and key only on the first node of a
# database).
node() {
  local d=$tmp/$1; shift
  "$K" --data-dir "$d" init --listen 127.0.0.1:0 "$@" >/dev/null
  "$K" --data-dir "$d" kmip client-cert issue bench --out "$d" >/dev/null
}
prepare() {
  local d=$tmp/$1
  "$K" --data-dir "$d" store create /bench >/dev/null
  "$K" --data-dir "$d" --json store credential add /bench > "$tmp/cred-$1.json"
  "$K" --data-dir "$d" key create /bench bench-key >/dev/null
}
node lite; prepare lite
node pg1 --storage-url "$URL"; prepare pg1
node pg2 --storage-url "$URL" --root-key "$tmp/pg1/root.key"
cp "$tmp/cred-pg1.json" "$tmp/cred-pg2.json"

# start NAME [wrapper...]: serves data dir NAME (XKS and KMIP); sets url_NAME
# and kmip_NAME.
start() {
  local n=$1; shift
  local d=$tmp/$n
  : > "$tmp/$n.out"
  "$@" "$K" --data-dir "$d" serve --kmip-listen 127.0.0.1:0 > "$tmp/$n.out" 2> "$tmp/$n.log" &
  pids+=($!)
  eval "pid_$n=$!"
  for _ in $(seq 100); do grep -q "kmip on" "$tmp/$n.out" 2>/dev/null && break; sleep 0.1; done
  eval "url_$n=$(sed -n 's/keyhold listening on https:\/\/127.0.0.1/https:\/\/localhost/p' "$tmp/$n.out")/bench/kms/xks/v1"
  eval "kmip_$n=$(sed -n 's/^keyhold kmip on //p' "$tmp/$n.out")"
}
stop() { local p; eval "p=\$pid_$1"; kill "$p"; wait "$p" 2>/dev/null || true; }
xks() { # NAME args...
  local n=$1; shift; local u; eval "u=\$url_$n"
  echo; echo "\$ keyhold-bench $* [$n]"
  "$B" --url "$u" --credential "$tmp/cred-$n.json" --cacert "$tmp/$n/tls/ca.pem" --key-id bench-key "$@"
}
kmip() { # NAME args...
  local n=$1; shift; local a; eval "a=\$kmip_$n"
  echo; echo "\$ keyhold-bench --op kmip-create $* [$n]"
  "$B" --kmip "$a" --client-cert "$tmp/$n/bench.pem" --client-key "$tmp/$n/bench.key" \
    --cacert "$tmp/$n/tls/ca.pem" --op kmip-create "$@"
}

echo; echo "== 1. XKS Encrypt, one node, keys cached: SQLite vs PostgreSQL"
start lite; xks lite --op encrypt -c 32 -d "$D"
start pg1; xks pg1 --op encrypt -c 32 -d "$D"

echo; echo "== 2. Key creation (KMIP Create, AES-256): 1 and 16 clients"
for c in 1 16; do kmip lite -c "$c" -d "$D"; kmip pg1 -c "$c" -d "$D"; done
stop lite; stop pg1

echo; echo "== 3. Two nodes on one database vs one, each node held to the same CPU share"
if mkdir /sys/fs/cgroup/cpu/keyhold-bench-a 2>/dev/null && mkdir /sys/fs/cgroup/cpu/keyhold-bench-b 2>/dev/null; then
  for g in a b; do
    echo 100000 > /sys/fs/cgroup/cpu/keyhold-bench-$g/cpu.cfs_period_us
    echo $((QUOTA * 1000)) > /sys/fs/cgroup/cpu/keyhold-bench-$g/cpu.cfs_quota_us
  done
  echo "(each node limited to ${QUOTA}% of one core by a cgroup CPU quota; the load generator is not limited)"
  # The shell joins the group, then becomes the server (same pid).
  wrap_a=(sh -c 'echo $$ > /sys/fs/cgroup/cpu/keyhold-bench-a/cgroup.procs; exec "$@"' --)
  wrap_b=(sh -c 'echo $$ > /sys/fs/cgroup/cpu/keyhold-bench-b/cgroup.procs; exec "$@"' --)
else
  echo "(no cgroup CPU controller: each node pinned to one core with taskset; the load generator shares them)"
  wrap_a=(taskset -c 0); wrap_b=(taskset -c 1)
fi
start pg1 "${wrap_a[@]}"
# requests/s from keyhold-bench --json outputs (after the echoed command line).
rps() {
  python3 - "$@" <<'PY'
import json, sys
total = 0
for f in sys.argv[1:]:
    text = open(f).read()
    total += json.loads(text[text.index("{"):])["requests_per_sec"]
print(round(total))
PY
}
xks pg1 --op encrypt -c 32 -d "$D" --json > "$tmp/one.json" 2>/dev/null
one=$(rps "$tmp/one.json")
echo "one node: $one Encrypt/s"
start pg2 "${wrap_b[@]}"
# Two load generators, one per node, at the same time.
xks pg1 --op encrypt -c 32 -d "$D" --json > "$tmp/two-a.json" 2>/dev/null &
a=$!
xks pg2 --op encrypt -c 32 -d "$D" --json > "$tmp/two-b.json" 2>/dev/null &
b=$!
wait $a $b
two=$(rps "$tmp/two-a.json" "$tmp/two-b.json")
echo "two nodes: $two Encrypt/s"
python3 -c "print(f'two nodes / one node: {$two / $one:.2f}x')"

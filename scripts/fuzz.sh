#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each (default 10)
# with libFuzzer coverage. cargo-fuzz is installed from crates.io when missing;
# RUSTC_BOOTSTRAP lets the stable toolchain pass libFuzzer's coverage flags.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-10}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
# A target that does not build, or any crash, fails the run.
targets=$(cargo fuzz list)
[ -n "$targets" ] || { echo "no fuzz targets found" >&2; exit 1; }
out=$(mktemp)
trap 'rm -f "$out"' EXIT
for t in $targets; do
  echo "== fuzz $t for ${secs}s"
  if ! cargo fuzz run -s none "$t" -- -max_total_time="$secs" >"$out" 2>&1; then
    tail -n 60 "$out" >&2
    echo "fuzz target $t failed to build or crashed (artifacts: fuzz/artifacts/$t)" >&2
    exit 1
  fi
  grep -E "^Done" "$out" || true
  if ls "fuzz/artifacts/$t"/crash-* >/dev/null 2>&1; then
    echo "fuzz target $t left a crash: see fuzz/artifacts/$t" >&2
    exit 1
  fi
done

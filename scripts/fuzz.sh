#!/usr/bin/env bash
# Runs every fuzz target (fuzz/fuzz_targets) for FUZZ_SECONDS each (default 10)
# with libFuzzer coverage. cargo-fuzz is installed from crates.io when missing;
# RUSTC_BOOTSTRAP lets the stable toolchain pass libFuzzer's coverage flags.
set -euo pipefail
cd "$(dirname "$0")/.."
secs=${FUZZ_SECONDS:-10}
command -v cargo-fuzz >/dev/null || cargo install cargo-fuzz --locked
export RUSTC_BOOTSTRAP=1
for t in $(cargo fuzz list); do
  echo "== fuzz $t for ${secs}s"
  cargo fuzz run -s none "$t" -- -max_total_time="$secs" 2>&1 | grep -E "^Done|panicked|SUMMARY|ERROR" || true
  # cargo fuzz exits non-zero on a crash; the pipeline above hides it, so check.
  if ls "fuzz/artifacts/$t"/crash-* >/dev/null 2>&1; then
    echo "fuzz target $t crashed: see fuzz/artifacts/$t" >&2
    exit 1
  fi
done

#!/usr/bin/env bash
# Builds the Debian package (target/debian/keyhold_VERSION_ARCH.deb) with
# cargo-deb: the release binary, /etc/keyhold/keyhold.toml, the systemd
# unit, the keyhold system user (made on install), manual pages and shell
# completions generated from the CLI. cargo-deb is installed from
# crates.io when missing.
#
#   PROFILE   cargo profile of the binary (default: release)
set -euo pipefail
cd "$(dirname "$0")/.."
profile=${PROFILE:-release}
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked --version '^3'
cargo build --profile "$profile" --locked -p keyhold-cli --bin keyhold
bin=target/$profile/keyhold
out=target/package
rm -rf "$out"
mkdir -p "$out/completions"
"$bin" man-pages "$out/man"
"$bin" completions bash > "$out/completions/keyhold.bash"
"$bin" completions zsh > "$out/completions/_keyhold"
"$bin" completions fish > "$out/completions/keyhold.fish"
args=(-p keyhold-cli --no-build --locked --strip)
[ "$profile" = release ] || args+=(--profile "$profile")
cargo deb "${args[@]}"
ls -1 target/debian/keyhold_*.deb | tail -n 1

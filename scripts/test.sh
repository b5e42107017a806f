#!/usr/bin/env bash
# Runs every check and test of Keyhold: formatting, clippy, unit and
# integration tests (the real binary over TLS with curl --aws-sigv4), and a
# smoke run of the quick start and the load generator. Installs what it needs.
set -euo pipefail
cd "$(dirname "$0")/.."
export CARGO_TERM_COLOR=never
# Two cores here: keep the build from starving the tests' servers.
export CARGO_BUILD_JOBS=${CARGO_BUILD_JOBS:-2}

need=()
command -v curl >/dev/null || need+=(curl)
command -v cc >/dev/null || need+=(gcc libc6-dev)
command -v python3 >/dev/null || need+=(python3)
command -v sha256sum >/dev/null || need+=(coreutils)
# OpenSSL's command line: an independent implementation for cross-checks.
command -v openssl >/dev/null || need+=(openssl)
# SoftHSMv2 stands in for a real HSM; OpenSC's pkcs11-tool is an independent client.
[ -e /usr/lib/softhsm/libsofthsm2.so ] && command -v softhsm2-util >/dev/null || need+=(softhsm2)
command -v pkcs11-tool >/dev/null || need+=(opensc)
# PostgreSQL: the shared-database backend's tests start their own clusters
# (initdb in temp dirs, loopback ports) and use psql, pg_basebackup, runuser.
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v psql >/dev/null || need+=(postgresql-client)
command -v runuser >/dev/null || need+=(util-linux)
# The web console's browser tests: Debian's Chromium and its WebDriver,
# Selenium (PyPI) to drive them, axe-core (npm) to check accessibility.
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v npm >/dev/null || need+=(npm)
# The FIPS build: aws-lc-fips-sys builds AWS-LC-FIPS with CMake and Go.
command -v cmake >/dev/null || need+=(cmake)
command -v go >/dev/null || need+=(golang-go)
# PyKMIP (from PyPI) is the independent KMIP client of the interop tests.
python3 -c "import kmip, requests, botocore, pymongo, pymongocrypt" 2>/dev/null || python3 -m pip --version >/dev/null 2>&1 || need+=(python3-pip)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    apt-get update -qq && apt-get install -y -qq "${need[@]}" ca-certificates >/dev/null
  else
    sudo apt-get update -qq && sudo apt-get install -y -qq "${need[@]}" ca-certificates >/dev/null
  fi
fi
if ! python3 -c "import kmip" 2>/dev/null; then
  python3 -m pip install -q pykmip 2>/dev/null || python3 -m pip install -q --break-system-packages pykmip
fi
python3 -c "import kmip" || { echo "PyKMIP is not importable" >&2; exit 1; }
# Python requests with botocore's SigV4 signer: an independent XKS client.
if ! python3 -c "import requests, botocore" 2>/dev/null; then
  python3 -m pip install -q requests botocore 2>/dev/null || python3 -m pip install -q --break-system-packages requests botocore
fi
python3 -c "import requests, botocore" || { echo "requests and botocore are not importable" >&2; exit 1; }
# MongoDB's KMIP client (libmongocrypt, through pymongo and pymongocrypt).
if ! python3 -c "import pymongo, pymongocrypt" 2>/dev/null; then
  python3 -m pip install -q pymongo pymongocrypt 2>/dev/null || python3 -m pip install -q --break-system-packages pymongo pymongocrypt
fi
python3 -c "import pymongo, pymongocrypt" || { echo "pymongo and pymongocrypt are not importable" >&2; exit 1; }
# An independent check that the admin API's OpenAPI document is valid.
if ! python3 -c "import openapi_spec_validator" 2>/dev/null; then
  python3 -m pip install -q openapi-spec-validator 2>/dev/null || python3 -m pip install -q --break-system-packages openapi-spec-validator
fi
python3 -c "import openapi_spec_validator" || { echo "openapi-spec-validator is not importable" >&2; exit 1; }
if ! python3 -c "import selenium" 2>/dev/null; then
  python3 -m pip install -q selenium 2>/dev/null || python3 -m pip install -q --break-system-packages selenium
fi
python3 -c "import selenium" || { echo "selenium is not importable" >&2; exit 1; }
# PyJWT: the throw-away identity providers of the DKE and CSE tests mint
# their tokens with it (RS256 through pyca/cryptography).
if ! python3 -c "import jwt" 2>/dev/null; then
  python3 -m pip install -q pyjwt 2>/dev/null || python3 -m pip install -q --break-system-packages pyjwt
fi
python3 -c "import jwt" || { echo "PyJWT is not importable" >&2; exit 1; }
[ -e crates/keyhold-cli/tests/console/node_modules/axe-core/axe.min.js ] \
  || npm ci --prefix crates/keyhold-cli/tests/console --no-audit --no-fund --silent
# curl must speak SigV4 (7.75+).
curl --help all 2>/dev/null | grep -q -- --aws-sigv4 || { echo "curl without --aws-sigv4" >&2; exit 1; }
rustup component list --installed 2>/dev/null | grep -q rustfmt || rustup component add rustfmt clippy 2>/dev/null || true

echo "== cargo fmt --check"
cargo fmt --all -- --check
echo "== cargo clippy"
cargo clippy --workspace --all-targets --locked -- -D warnings
# Licences, bans (ARCHITECTURE.md's "only this crate may use that") and
# sources of every dependency (the advisory database needs the network).
command -v cargo-deny >/dev/null || cargo install --locked cargo-deny
echo "== cargo deny check licenses bans sources"
cargo deny --locked check licenses bans sources
echo "== the admin API's OpenAPI document (docs/openapi.json) is valid OpenAPI"
python3 - <<'PY'
from openapi_spec_validator import validate
from openapi_spec_validator.readers import read_from_filename
spec, _ = read_from_filename("docs/openapi.json")
validate(spec)
print("docs/openapi.json: valid OpenAPI", spec["openapi"])
PY
echo "== cargo test"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
cargo test --workspace --locked 2>&1 | tee "$log"
echo "== OASIS KMIP profile test cases (pass/fail per profile)"
# Each row says whether Keyhold claims the profile (then every mandatory case
# must pass, or this fails) or why it does not.
oasis=$(mktemp)
trap 'rm -f "$log" "$oasis"' EXIT
if ! cargo test -p keyhold-kmip --test oasis --locked -- --nocapture >"$oasis" 2>&1; then
  cat "$oasis" >&2
  echo "OASIS: a claimed profile's case failed" >&2
  exit 1
fi
grep -E "^(OASIS|PROFILE|[A-Z][A-Z0-9_-]+ +[12]\.[0-9] )" "$oasis"
echo "== quick start and load generator smoke test"
scripts/smoke.sh
echo "== the Debian package: build, install, serve as the keyhold user, remove"
if [ "$(id -u)" = 0 ]; then
  scripts/package_test.sh
elif command -v sudo >/dev/null && sudo -n true 2>/dev/null; then
  sudo scripts/package_test.sh
else
  echo "the package test needs root (dpkg -i): run scripts/package_test.sh as root" >&2
  exit 1
fi
echo "== the FIPS build (--features fips): clippy, then the crypto, root, KMIP, XKS and HSM crates' tests and every integration test of the binary"
# The same tests with aws-lc-rs's FIPS module and rustls's FIPS provider
# linked; the FIPS-only refusals (ChaCha20, new Triple DES, GCM outside
# the module, SHA-1 signatures, Argon2id, non-FIPS TLS) are asserted by
# the fips tests, which pass in both builds.
cargo clippy -p keyhold-cli -p keyhold-kmip --features keyhold-crypto/fips --all-targets --locked -- -D warnings
fips_log=$(mktemp)
trap 'rm -f "$log" "$oasis" "$fips_log"' EXIT
cargo test --locked -p keyhold-crypto -p keyhold-root -p keyhold-kmip -p keyhold-xks -p keyhold-service \
  --features keyhold-crypto/fips --lib --test fips --test softhsm --test recovery --test asymmetric \
  --test evp_openssl --test batch_audit \
  --test hsm_timeout --test hsm_pairs 2>&1 | tee "$fips_log"
# Every integration test of the binary (XKS, KMIP, HSM, PostgreSQL, the
# other clouds, the console), on the FIPS binary.
cargo test --locked -p keyhold-cli --features fips --tests 2>&1 | tee -a "$fips_log"
echo "== OASIS KMIP profile test cases on the FIPS build (what FIPS mode refuses listed as fips)"
if ! cargo test -p keyhold-kmip --features keyhold-crypto/fips --test oasis --locked -- --nocapture >"$oasis" 2>&1; then
  cat "$oasis" >&2
  echo "OASIS (FIPS build): a claimed profile's case failed" >&2
  exit 1
fi
grep -E "^(OASIS|PROFILE|fips|[A-Z][A-Z0-9_-]+ +[12]\.[0-9] +mandatory)" "$oasis"
awk '/^test result:/ { p += $4; f += $6 } END { printf "FIPS build tests: %d passed, %d failed\n", p, f }' "$fips_log"
echo "== fuzz targets (network-facing parsers)"
FUZZ_SECONDS=${FUZZ_SECONDS:-10} scripts/fuzz.sh
# One closing line for the whole run (cargo prints one per test binary).
awk '/^test result:/ { p += $4; f += $6 } END { printf "tests: %d passed, %d failed\n", p, f }' "$log"

#!/usr/bin/env bash
# Runs every test Palisade has, installing what they need on the way:
#   - nftables and iproute2 (Debian packages; root tests use them),
#   - a Python venv in .venv with the real Tencent clients (tests/requirements.txt),
#   - the Rust workspace tests (unit, property, integration),
#   - the Python end-to-end tests against a freshly started `palisade serve`.
# Usage: ./scripts/test.sh            (everything)
#        PALISADE_SKIP_PY=1 ./scripts/test.sh   (Rust only)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s ==\n' "$*"; }

need_pkgs=()
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v conntrack >/dev/null 2>&1 || need_pkgs+=(conntrack)
if [ "${#need_pkgs[@]}" -gt 0 ]; then
  if [ "$(id -u)" = 0 ]; then
    say "installing ${need_pkgs[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq "${need_pkgs[@]}" >/dev/null
  else
    echo "note: ${need_pkgs[*]} missing and not root; root-only tests will be skipped" >&2
  fi
fi

if [ -z "${PALISADE_SKIP_PY:-}" ]; then
  say "python venv (.venv) with the Tencent clients"
  if [ ! -x .venv/bin/python ]; then
    python3 -m venv .venv
  fi
  .venv/bin/pip install -q --disable-pip-version-check -r tests/requirements.txt
fi

say "cargo build"
cargo build --workspace --all-targets
say "cargo test"
cargo test --workspace

if [ -z "${PALISADE_SKIP_PY:-}" ]; then
  say "python end-to-end tests"
  PALISADE_BIN="$PWD/target/debug/palisade" .venv/bin/python -m pytest -q tests/
fi

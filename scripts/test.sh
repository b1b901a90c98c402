#!/usr/bin/env bash
# Runs every test Palisade has, installing what they need on the way:
#   - nftables and iproute2 (Debian packages; root tests use them),
#   - a Python venv in .venv with the real Tencent clients (tests/requirements.txt),
#   - Tencent's Node.js SDK in tests/node/node_modules (tests/node/package-lock.json),
#     when node and npm are installed (the Node.js test says it was skipped otherwise),
#   - the Rust workspace tests (unit, property, integration),
#   - the Python end-to-end tests against a freshly started `palisade serve`,
#     the web console's in headless Chromium (Debian's chromium, chromium-driver).
# Usage: ./scripts/test.sh            (everything)
#        PALISADE_SKIP_PY=1 ./scripts/test.sh   (Rust only)
set -euo pipefail
cd "$(dirname "$0")/.."

say() { printf '\n== %s ==\n' "$*"; }

# A whole run takes about 3 GiB (a fresh clone on 2026-12-03: target/ 2.3 GiB,
# .venv 0.7 GiB, tests/node/node_modules 4.4 MiB; fuzz/target/ is no longer built
# here); a full disk shows up later as a linker "Bus error" or "No space left on
# device", so say how much there is before starting.
avail_kib=$(df -Pk . | awk 'NR == 2 {print $4}')
echo "disk: $((avail_kib / 1024)) MiB free under $PWD"
if [ "$avail_kib" -lt $((4 * 1024 * 1024)) ]; then
  echo "warning: less than 4 GiB free; the build may fail with 'No space left on device'" >&2
fi

need_pkgs=()
command -v nft >/dev/null 2>&1 || need_pkgs+=(nftables)
command -v ip >/dev/null 2>&1 || need_pkgs+=(iproute2)
command -v conntrack >/dev/null 2>&1 || need_pkgs+=(conntrack)
command -v openssl >/dev/null 2>&1 || need_pkgs+=(openssl)   # test certificates (testkit::private_ca)
# The web console's browser tests (tests/console) drive headless Chromium.
command -v chromium >/dev/null 2>&1 || need_pkgs+=(chromium)
command -v chromedriver >/dev/null 2>&1 || need_pkgs+=(chromium-driver)
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
  if command -v npm >/dev/null 2>&1; then
    say "Node.js SDK (tests/node)"
    (cd tests/node && npm ci --no-audit --no-fund --silent)
  else
    echo "note: npm missing; the Node.js SDK test will be skipped" >&2
  fi
fi

# ---- BEGIN PostgreSQL block (issue 8: PostgreSQL store, several servers) ----
# Installs Debian's PostgreSQL (root only) and starts a private throw-away
# cluster for this run on a free 127.0.0.1 port (scripts/pg-cluster.sh), so
# the store's Rust tests and the API tests also run against PostgreSQL.
# The cluster is stopped and deleted when this script exits, whatever happens.
# PALISADE_TEST_PG=URL uses an existing server instead; PALISADE_SKIP_PG=1
# skips the PostgreSQL half.
pg_dir=""
stop_pg() { if [ -n "$pg_dir" ]; then scripts/pg-cluster.sh stop "$pg_dir" || true; fi; }
trap stop_pg EXIT
if [ -z "${PALISADE_TEST_PG:-}" ] && [ -z "${PALISADE_SKIP_PG:-}" ]; then
  if ! ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && [ "$(id -u)" = 0 ]; then
    say "installing postgresql"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    apt-get install -y -qq postgresql >/dev/null
    # The package may start the system cluster; this script leaves nothing running.
    if command -v pg_lsclusters >/dev/null; then
      pg_lsclusters -h | awk '$4 == "online" {print $1, $2}' | while read -r v c; do
        pg_ctlcluster "$v" "$c" stop || true
      done
    fi
  fi
  if ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 && { [ "$(id -u)" = 0 ] || command -v initdb >/dev/null; }; then
    say "private PostgreSQL cluster"
    pg_dir=$(mktemp -d /tmp/palisade-pg.XXXXXX)
    scripts/pg-cluster.sh start "$pg_dir"
    set -a; . "$pg_dir/env"; set +a
  else
    echo "note: PostgreSQL not installed and not root; PostgreSQL tests will be skipped" >&2
  fi
fi
# ---- END PostgreSQL block ----

# PALISADE_REQUIRE=root,postgres,browser (set by .ci/run) makes every test
# that would be skipped for want of root, PostgreSQL or Chromium fail instead
# (crates/testkit, tests/api/conftest.py, tests/console/conftest.py): CI
# cannot pass without them.
required() { case ",${PALISADE_REQUIRE:-}," in *",$1,"*|*",all,"*) return 0 ;; *) return 1 ;; esac; }
if required root && [ "$(id -u)" != 0 ]; then
  echo "error: PALISADE_REQUIRE lists root, but this is not root" >&2
  exit 1
fi
if required postgres && [ -z "${PALISADE_TEST_PG:-}" ]; then
  echo "error: PALISADE_REQUIRE lists postgres, but no PostgreSQL server is available (PALISADE_TEST_PG unset)" >&2
  exit 1
fi
if required browser && ! { command -v chromium && command -v chromedriver; } >/dev/null 2>&1; then
  echo "error: PALISADE_REQUIRE lists browser, but chromium or chromedriver is missing" >&2
  exit 1
fi
if required postgres && [ -n "${PALISADE_SKIP_PY:-}" ]; then
  echo "error: PALISADE_REQUIRE lists postgres, which includes the API tests on PostgreSQL; unset PALISADE_SKIP_PY" >&2
  exit 1
fi

say "cargo build"
cargo build --workspace --all-targets
say "cargo test"
# Tests that cannot run here (no root, no PostgreSQL) append a SKIPPED line
# with the reason to this file (crates/testkit); listed after the tests.
export PALISADE_SKIP_LOG="$PWD/target/skipped-tests.txt"
rm -f "$PALISADE_SKIP_LOG"
cargo test --workspace
if [ -s "$PALISADE_SKIP_LOG" ]; then
  say "Rust tests skipped (PALISADE_REQUIRE=root,postgres makes these fail)"
  sort -u "$PALISADE_SKIP_LOG" | sed 's/^/  /'
fi

# Fuzzing: `cargo test` above replays every stored fuzz input (the corpus,
# the seeds and past failures, crates/fuzzing/tests/replay.rs), so the run is
# deterministic. Searching for new inputs is `scripts/fuzz.sh`, run on its own.

if [ -z "${PALISADE_SKIP_PY:-}" ]; then
  say "python end-to-end tests"
  PALISADE_BIN="$PWD/target/debug/palisade" .venv/bin/python -m pytest -q -rs tests/
  # ---- BEGIN PostgreSQL block: the API tests again, on PostgreSQL ----
  if [ -n "${PALISADE_TEST_PG:-}" ]; then
    say "python end-to-end API tests on PostgreSQL"
    PALISADE_STORE="$PALISADE_TEST_PG" PALISADE_BIN="$PWD/target/debug/palisade" \
      .venv/bin/python -m pytest -q -rs tests/api
  fi
  # ---- END PostgreSQL block ----
fi

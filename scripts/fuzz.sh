#!/usr/bin/env bash
# Runs every fuzz target in fuzz/ for a bounded time (issue 8, item 5).
# Fuzzer: cargo-fuzz (libFuzzer) on the STABLE toolchain with no sanitizer
# (`-s none`) and debug assertions on (`-a`, so integer overflow panics).
# Installs cargo-fuzz when missing. A crash stops the script non-zero and
# leaves the input in fuzz/artifacts/<target>/; turn it into a regression
# test next to the code it concerns.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET]   (default 15; 8 targets)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd fuzz
cargo fuzz build -s none -a
for t in $(cargo fuzz list); do
  mkdir -p "corpus/$t"
  seeds=()
  [ -d "seeds/$t" ] && seeds=("seeds/$t")
  echo "== fuzz $t for ${secs}s"
  cargo fuzz run -s none -a "$t" "corpus/$t" "${seeds[@]}" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units)|panicked|ERROR|SUMMARY|artifact' || true
  # (`ls` of the three globs fails whenever one of them matches nothing.)
  found="$(find "artifacts/$t" -maxdepth 1 \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \) 2>/dev/null || true)"
  if [ -n "$found" ]; then
    echo "fuzz target $t found a failing input:" >&2
    ls "artifacts/$t" >&2
    exit 1
  fi
done

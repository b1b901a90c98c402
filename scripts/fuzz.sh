#!/usr/bin/env bash
# Searches for new failing inputs with every fuzz target in fuzz/, for a
# bounded time each. Not part of scripts/test.sh or CI: a search can find a
# new input at any time, and that must not fail an unrelated change. CI
# replays what is stored instead (`cargo test -p palisade-fuzzing`: the
# corpus in fuzz/corpus/, the seeds in fuzz/seeds/, past failures in
# fuzz/regressions/).
# Fuzzer: cargo-fuzz (libFuzzer) on the STABLE toolchain with no sanitizer
# (`-s none`) and debug assertions on (`-a`, so integer overflow panics).
# Installs cargo-fuzz when missing. A failing input is copied to
# fuzz/regressions/<target>/ (commit it with the fix: from then on every
# test run replays it) and the script exits non-zero. New corpus entries are
# minimised into fuzz/corpus/<target>/ (`cargo fuzz cmin`); commit them to
# widen what CI replays.
# Usage: scripts/fuzz.sh [SECONDS_PER_TARGET] [TARGET...]   (default 15 s, every target)
set -euo pipefail
cd "$(dirname "$0")/.."
secs="${1:-15}"
shift || true
command -v cargo-fuzz >/dev/null 2>&1 || cargo install cargo-fuzz --locked
cd fuzz
cargo fuzz build -s none -a
targets=("$@")
[ "${#targets[@]}" -gt 0 ] || mapfile -t targets < <(cargo fuzz list)
failed=0
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  inputs=("corpus/$t")
  [ -d "seeds/$t" ] && inputs+=("seeds/$t")
  [ -d "regressions/$t" ] && inputs+=("regressions/$t")
  echo "== fuzz $t for ${secs}s"
  rm -rf "artifacts/$t"
  cargo fuzz run -s none -a "$t" "${inputs[@]}" -- \
    -max_total_time="$secs" -rss_limit_mb=4096 -timeout=30 -print_final_stats=1 2>&1 \
    | grep -E '^(Done|stat::number_of_executed_units)|panicked|ERROR|SUMMARY|artifact' || true
  found="$(find "artifacts/$t" -maxdepth 1 -type f \( -name 'crash-*' -o -name 'timeout-*' -o -name 'oom-*' \) 2>/dev/null || true)"
  if [ -n "$found" ]; then
    mkdir -p "regressions/$t"
    cp $found "regressions/$t/"
    echo "fuzz target $t found a failing input, copied to fuzz/regressions/$t/:" >&2
    echo "$found" >&2
    failed=1
    continue
  fi
  # Keep the corpus small: only inputs that add coverage (in place).
  cargo fuzz cmin -s none -a "$t" "corpus/$t" >/dev/null 2>&1 || echo "   (cmin failed; corpus left as is)" >&2
  echo "   corpus/$t: $(ls "corpus/$t" | wc -l) inputs"
done
exit "$failed"

#!/usr/bin/env bash
# The classifier benchmark of BENCHMARKS.md ("Classifier"): Palisade's
# classifier, the linear scan, and DPDK's rte_acl (dpdk-test-acl, scalar and
# the vector methods this CPU has) on the same projected ClassBench rules and
# the same packets, side by side in one run.
#
# usage: scripts/bench-classify.sh [SET...]
#   SET: ClassBench file names in $CLASSBENCH_DIR (default: all six sets)
# environment:
#   CLASSBENCH_DIR  default ../shared/data/classbench (beside the repository)
#   PALISADE        the palisade binary (default target/release/palisade)
#   PACKETS         packets per set (default 1000000)
#   REPEAT          runs of each timing; the fastest counts (default 3)
#   ITER            dpdk-test-acl passes over the trace per run (default 5)
#   OUT             working directory (default: a new temporary one)
#
# For each set: `palisade bench classify --export-dpdk` generates the packets,
# checks the classifier against the linear scan, times both, and writes the
# projected rules and packets in dpdk-test-acl's formats (destination
# 0.0.0.0/0 and source ports 0 : 65535 on every rule; the trace's
# destination and source port are 0). dpdk-test-acl then runs once with
# --verbose=2 to check that rte_acl gives the same answer as Palisade on every
# packet, and with --verbose=0 (no output in the timed loop) for the timings;
# its ns/lookup is 1e9 / its pkt/sec. The timings are interleaved: REPEAT
# rounds of (palisade bench classify --verify 0, each rte_acl method), and
# the fastest of each counts, so load from other processes hits all alike.
# ours_ns is Palisade's batch classification (classify_batch, 16 packets
# side by side), as rte_acl_classify classifies batches of 256. EAL runs without hugepages
# (--no-huge) on one core (-l 0); the AVX-512 methods need
# --force-max-simd-bitwidth=512.
set -euo pipefail

root=$(cd "$(dirname "$0")/.." && pwd)
data=${CLASSBENCH_DIR:-$root/../shared/data/classbench}
palisade=${PALISADE:-$root/target/release/palisade}
packets=${PACKETS:-1000000}
repeat=${REPEAT:-3}
iter=${ITER:-5}
out=${OUT:-$(mktemp -d -t palisade-bench-classify.XXXXXX)}
sets=("$@")
[ ${#sets[@]} -gt 0 ] || sets=(acl1_1k fw1_1k ipc1_1k acl1_10k fw1_10k ipc1_10k)

die() { echo "bench-classify: $*" >&2; exit 2; }
[ -x "$palisade" ] || die "no palisade binary at $palisade (cargo build --release -p palisade, or set PALISADE)"
"$palisade" bench classify --help >/dev/null 2>&1 || die "$palisade has no 'bench classify' subcommand"
[ -d "$data" ] || die "no ClassBench sets at $data (set CLASSBENCH_DIR)"
acl=${DPDK_TEST_ACL:-$(command -v dpdk-test-acl || true)}
[ -n "$acl" ] || echo "bench-classify: dpdk-test-acl not found (apt-get install dpdk-dev); rte_acl columns left empty" >&2

# The vector methods of this CPU, best last.
algs=(scalar)
flags=$(grep -m1 '^flags' /proc/cpuinfo || true)
has() { [[ " $flags " == *" $1 "* ]]; }
has sse4_1 && algs+=(sse)
has avx2 && algs+=(avx2)
if has avx512f && has avx512bw && has avx512vl && has avx512dq; then algs+=(avx512x16 avx512x32); fi

eal=(--no-huge -m 2048 -l 0 --log-level=error --force-max-simd-bitwidth=512)

# ns/lookup of one dpdk-test-acl method, one run.
acl_ns() {
  local dir=$1 alg=$2
  "$acl" "${eal[@]}" -- --rulesf="$dir/rules.cb" --tracef="$dir/trace" \
      --tracenum="$packets" --iter="$iter" --verbose=0 --alg="$alg" 2>/dev/null |
    sed -n 's/.*cycles\/pkt, \([0-9.]*\) pkt\/sec.*/\1/p' |
    awk '$1 > 0 { printf "%.2f", 1e9 / $1 }'
}

# Palisade's batch ns/lookup, one timing-only run (no linear scan).
our_ns() {
  "$palisade" bench classify --rules "$1" --packets "$packets" --verify 0 --passes "$iter" \
      --output json 2>/dev/null | python3 -c 'import json, sys; print("%.2f" % json.load(sys.stdin)["ns_per_lookup"])'
}

# The smaller of two numbers ("" and "n/a" lose).
min() {
  if [ -z "$1" ] || [ "$1" = n/a ]; then echo "${2:-n/a}"; return; fi
  if [ -z "$2" ] || [ "$2" = n/a ]; then echo "$1"; return; fi
  awk -v a="$1" -v b="$2" 'BEGIN { print (a < b) ? a : b }'
}

# rte_acl's runtime memory (bytes), from its build log.
acl_memory() {
  "$acl" --no-huge -m 2048 -l 0 --log-level=lib.acl:debug -- --rulesf="$1/rules.cb" \
      --tracef="$1/trace" --tracenum=1 --verbose=0 --alg=scalar 2>&1 |
    sed -n 's/^total: \([0-9]*\) bytes.*/\1/p' | head -1
}

# Whether rte_acl names the same rule as Palisade for every packet: "checked mismatches".
acl_check() {
  local dir=$1
  "$acl" "${eal[@]}" -- --rulesf="$dir/rules.cb" --tracef="$dir/trace" \
      --tracenum="$packets" --iter=1 --verbose=2 --alg=scalar 2>/dev/null |
    awk -v lr="$dir/line_rules" -v ans="$dir/answers" '
      BEGIN { n = 0; while ((getline l < lr) > 0) map[n++] = l
              k = 0; while ((getline a < ans) > 0) want[++k] = a }
      /^ipv4_5tuple:/ { split($0, f, /[ ,:]+/); r = f[6]
                        got = (r == 4294967295) ? -1 : map[r]
                        if (got != want[f[2]]) bad++
                        tot++ }
      END { print tot + 0, bad + 0 }'
}

echo "machine: $(nproc) cores, $(lscpu | sed -n 's/^Model name: *//p'); load: $(cut -d' ' -f1-3 /proc/loadavg)"
echo "packets per set: $packets; fastest of $repeat runs; dpdk methods: ${algs[*]}; work dir: $out"
header="set rules mismatches verified ours_ns linear_ns vs_linear build_ms memory_KiB acl_memory_KiB"
for a in "${algs[@]}"; do header+=" ${a}_ns"; done
header+=" acl_agrees vs_scalar vs_best_vector"
rows=()
for set in "${sets[@]}"; do
  dir=$out/$set
  mkdir -p "$dir"
  echo "== $set" >&2
  "$palisade" bench classify --rules "$data/$set" --packets "$packets" --output json \
      --export-dpdk "$dir" >"$dir/palisade.json" || true
  read -r rules mism verified ns lin build mem < <(python3 -c '
import json, sys
r = json.load(open(sys.argv[1]))
print(r["rules"], r["mismatches"], r["verified"], "%.2f" % r["ns_per_lookup"],
      "%.1f" % r["linear_ns_per_lookup"], "%.1f" % r["build_ms"], "%.0f" % (r["memory_bytes"] / 1024))
' "$dir/palisade.json")
  scalar="" bestvec=""
  agrees="n/a" acl_kib="n/a"
  declare -A best=()
  if [ -n "$acl" ]; then
    read -r checked bad < <(acl_check "$dir")
    agrees="$((checked - bad))/$checked"
    m=$(acl_memory "$dir")
    [ -n "$m" ] && acl_kib=$((m / 1024))
  fi
  # Interleave the timings (ours, then each rte_acl method, $repeat times),
  # so a change in the machine's load hits all of them alike.
  for _ in $(seq "$repeat"); do
    ns=$(min "$ns" "$(our_ns "$data/$set")")
    if [ -n "$acl" ]; then
      for a in "${algs[@]}"; do best[$a]=$(min "${best[$a]:-}" "$(acl_ns "$dir" "$a")"); done
    fi
  done
  row="$set $rules $mism $verified $ns $lin $(awk -v a="$lin" -v b="$ns" 'BEGIN { printf "%.0fx", a / b }') $build $mem $acl_kib"
  for a in "${algs[@]}"; do
    v=${best[$a]:-n/a}
    row+=" $v"
    if [ "$a" = scalar ]; then scalar=$v
    elif [ "$v" != n/a ] && { [ -z "$bestvec" ] || awk -v x="$v" -v y="$bestvec" 'BEGIN { exit !(x < y) }'; }; then bestvec=$v; fi
  done
  ratio() { [ -n "$1" ] && [ "$1" != n/a ] && awk -v a="$1" -v b="$ns" 'BEGIN { printf "%.2f", a / b }' || echo n/a; }
  row+=" $agrees $(ratio "$scalar") $(ratio "$bestvec")"
  rows+=("$row")
done

echo
{ echo "$header"; printf '%s\n' "${rows[@]}"; } | column -t
echo
echo "vs_linear = linear_ns / ours_ns; vs_scalar = rte_acl scalar ns / ours_ns (>= 1: ours is as fast or faster);"
echo "vs_best_vector = best rte_acl vector ns / ours_ns (>= 0.5: within 2x). acl_agrees: packets on which"
echo "rte_acl names the same rule as Palisade. verified: packets checked against the linear scan."

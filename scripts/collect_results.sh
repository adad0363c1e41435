#!/usr/bin/env bash
# Copy what backs the tables of docs/results.md into docs/data/: every run's metrics.jsonl and
# resolved.toml and every comparison/sweep table, from the run directories the reproduce_*.sh
# scripts wrote (runs/<family>/...), keeping their layout. Run it after the scripts; commit
# docs/data/.
set -euo pipefail
cd "$(dirname "$0")/.."
for family in "$@"; do
  src=runs/$family
  [ -d "$src" ] || { echo "no $src: run its reproduce script first" >&2; exit 1; }
  find "$src" \( -name metrics.jsonl -o -name resolved.toml -o -name comparison.md -o -name comparison.csv \
    -o -name local_eval.jsonl -o -name fairness.md -o -name sweep.md -o -name sweep.csv -o -name best.toml -o -name matrix.md -o -name matrix.csv -o -name "heat_*.svg" -o -name "heat_*.png" \) -print0 |
    while IFS= read -r -d '' f; do
      dst=docs/data/${f#runs/}
      mkdir -p "$(dirname "$dst")"
      cp "$f" "$dst"
    done
  echo "copied $src -> docs/data/$family" >&2
done

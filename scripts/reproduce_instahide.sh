#!/usr/bin/env bash
# Reproduces docs/results.md "InstaHide (issue 15)": the accuracy cost of encoding every local
# mini-batch, configs/papers/instahide_fmnist.toml (10 iid Fashion-MNIST clients, lenet, FedAvg,
# 40 rounds of 5 local epochs), against plain training and Mixup with the same k (mask = false).
# Metric, chosen before the runs: the final test accuracy on the clean test images, mean and
# spread over run seeds 0, 1, 2. Nothing tuned (the plain run's learning rate 0.1 is kept for
# every variant). Needs `apt-get install dataset-fashion-mnist`; about 20 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/fedkit
OUT=${OUT:-runs/instahide}
DATA=docs/data/instahide
CFG=configs/papers/instahide_fmnist.toml
mkdir -p "$OUT" "$DATA"
for seed in 0 1 2; do
  for variant in plain mixup4 instahide4 instahide2 mask1; do
    dir="$OUT/s$seed-$variant"
    case $variant in
      plain) sets=(--set 'pipeline=[]') ;;
      mixup4) sets=(--set pipeline.0.mask=false) ;;
      instahide4) sets=() ;;
      instahide2) sets=(--set pipeline.0.k=2) ;;
      mask1) sets=(--set pipeline.0.k=1 --set pipeline.0.upper=1.0) ;;
    esac
    [ -f "$dir/checkpoint.bin" ] && grep -q '"round":40' "$dir/metrics.jsonl" 2>/dev/null \
      || { rm -rf "$dir"; "$BIN" run "$CFG" --set seed="$seed" "${sets[@]}" --out "$dir" -q >/dev/null; }
    mkdir -p "$DATA/s$seed-$variant"
    cp "$dir/resolved.toml" "$DATA/s$seed-$variant/"
    grep '"test_acc"' "$dir/metrics.jsonl" > "$DATA/s$seed-$variant/evals.jsonl"
  done
done
python3 - "$DATA" <<'PY'
import json, statistics, sys
data = sys.argv[1]
def ms(v):
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"
rows = (("plain", "plain training"), ("mixup4", "Mixup, k = 4 (no mask)"), ("instahide4", "InstaHide, k = 4"),
        ("instahide2", "InstaHide, k = 2"), ("mask1", "sign mask only (k = 1)"))
table = ["| encoding | test accuracy, round 10 | round 20 | round 40 |", "|---|---|---|---|"]
summary = []
for variant, label in rows:
    evals = [[json.loads(l) for l in open(f"{data}/s{s}-{variant}/evals.jsonl")] for s in (0, 1, 2)]
    at = lambda r: [next(e["test_acc"] for e in ev if e["round"] == r) for ev in evals]
    summary.append({"variant": variant, "test_acc": {r: at(r) for r in (10, 20, 40)}})
    table.append(f"| {label} | {ms(at(10))} | {ms(at(20))} | {ms(at(40))} |")
json.dump(summary, open(f"{data}/summary.json", "w"), indent=1)
open(f"{data}/table.md", "w").write("\n".join(table) + "\n")
print("\n".join(table))
PY

#!/usr/bin/env bash
# Reproduces docs/results.md "Representation similarity across seeds (issue 16)": FedAvg trains
# configs/papers/cka_seeds_fmnist.toml (Fashion-MNIST, 10 iid clients, a plain mlp with six
# hidden ReLU layers of 128, 20 rounds) with run seeds 0, 1 and 2; `fedkit analyze cka`
# compares the three final global models on 500 test images (and again on 2000):
# - layer identification (Kornblith et al.'s Table 2): for every ordered pair of models and
#   every one of the 7 layers of the first, is the same layer of the second the most similar?
#   Metric chosen before the runs: the share identified, mean and spread over the 6 ordered
#   pairs, per similarity metric;
# - the grounding test (Ding et al.): Spearman's rho between each metric's distance and the
#   accuracy change when the features' lowest-variance principal components are deleted.
# Nothing is tuned: every metric runs at its paper's default (RBF sigma 0.5 x the median
# distance, SVCCA 99% of the variance). Needs `apt-get install dataset-fashion-mnist`; ~3
# minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/fedkit
OUT=${OUT:-runs/cka}
DATA=docs/data/cka
CFG=configs/papers/cka_seeds_fmnist.toml
mkdir -p "$OUT" "$DATA"
runs=()
for seed in 0 1 2; do
  dir="$OUT/seed$seed"
  [ -f "$dir/checkpoint.bin" ] || "$BIN" run "$CFG" --set seed="$seed" --out "$dir" -q >/dev/null
  mkdir -p "$DATA/seed$seed"
  cp "$dir/resolved.toml" "$DATA/seed$seed/"
  grep '"test_acc"' "$dir/metrics.jsonl" | tail -1 > "$DATA/seed$seed/last_eval.jsonl"
  runs+=(--run "$dir")
done
for n in 500 2000; do
  "$BIN" analyze cka "${runs[@]}" --samples "$n" --out "$OUT/analysis-$n" 2>/dev/null
  mkdir -p "$DATA/analysis-$n"
  cp "$OUT/analysis-$n/report.json" "$OUT/analysis-$n/report.md" "$DATA/analysis-$n/"
done
cp "$OUT/analysis-500/layers-cka.png" "$OUT/analysis-500/layers-cca.png" "$OUT/analysis-500/layers-procrustes.png" "$DATA/"
python3 - "$DATA" <<'PY'
import json, sys
data = sys.argv[1]
for n in (500, 2000):
    r = json.load(open(f"{data}/analysis-{n}/report.json"))
    print(f"{n} probe samples")
    for m in r["metrics"]:
        li = r["layer_identification"][m]
        g = next(x for x in r["grounding"]["metrics"] if x["metric"] == m)
        print(f"| {m} | {100 * li['share']:.1f}% ± {100 * li['pair_std']:.1f} | {g['spearman']:.3f} | {g['bad_share']:.3f} |")
PY

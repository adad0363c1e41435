#!/usr/bin/env bash
# Reproduces docs/results.md "Activation sparsity over training" and "Linear regions along
# lines" (issue 16):
# configs/papers/cka_seeds_fmnist.toml (FedAvg, Fashion-MNIST, the plain mlp with six hidden
# ReLU layers of 128, 20 rounds), keeping the global model every 2 rounds, run seeds 0, 1, 2;
# `fedkit analyze sparsity` measures each kept model's share of zero activations per layer on
# 500 test images, and `fedkit analyze linear_regions` counts the linear regions exactly along
# 20 lines between test images. Metrics, chosen before the runs: the zero share at
# initialisation, at its minimum over rounds and at round 20, per layer; the regions a line at
# rounds 0 and 20; mean ± std over the seeds. ~3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/fedkit
OUT=${OUT:-runs/sparsity}
DATA=docs/data/sparsity
CFG=configs/papers/cka_seeds_fmnist.toml
mkdir -p "$OUT" "$DATA"
for seed in 0 1 2; do
  dir="$OUT/seed$seed"
  [ -f "$dir/checkpoint.bin" ] || "$BIN" run "$CFG" --set seed="$seed" --set 'output.keep_models="every:2"' \
    --out "$dir" -q >/dev/null
  "$BIN" analyze sparsity --run "$dir" >/dev/null
  "$BIN" analyze linear_regions --run "$dir" >/dev/null 2>&1
  mkdir -p "$DATA/seed$seed"
  cp "$dir/resolved.toml" "$dir/analyze-sparsity/report.json" "$DATA/seed$seed/"
  cp "$dir/analyze-linear-regions/report.json" "$DATA/seed$seed/regions.json"
done
cp "$OUT/seed0/analyze-sparsity/sparsity.png" "$DATA/sparsity-seed0.png"
cp "$OUT/seed0/analyze-linear-regions/regions.png" "$DATA/regions-seed0.png"
python3 - "$DATA" <<'PY'
import json, statistics, sys
data = sys.argv[1]
reps = [json.load(open(f"{data}/seed{s}/report.json")) for s in (0, 1, 2)]
def ms(v):
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"
print("| layer | initial | minimum (round) | round 20 | dead units, initial | dead, round 20 |")
print("|---|---|---|---|---|---|")
for j, name in enumerate(reps[0]["layers"]):
    z = [[row[j] for row in r["zero_share"]] for r in reps]
    d = [[row[j] for row in r["dead_share"]] for r in reps]
    mins = [min(s) for s in z]
    at = [r["rounds"][s.index(min(s))] for r, s in zip(reps, z)]
    print(f"| {name} | {ms([s[0] for s in z])} | {ms(mins)} ({', '.join(map(str, at))}) | {ms([s[-1] for s in z])} | "
          f"{ms([s[0] for s in d])} | {ms([s[-1] for s in d])} |")
reg = [json.load(open(f"{data}/seed{s}/regions.json")) for s in (0, 1, 2)]
for i, label in ((0, "initial"), (-1, "round 20")):
    print(f"regions a line, {label}: {ms([r['regions_mean'][i] for r in reg])}")
PY

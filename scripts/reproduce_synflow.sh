#!/usr/bin/env bash
# SynFlow (Tanaka et al., NeurIPS 2020) at CPU scale (issue 14, docs/results.md), on
# configs/papers/synflow_fmnist.toml (Fashion-MNIST, LeNet-300-100, 10 epochs after pruning at
# initialisation), 3 seeds. Arms at each density (10%, 1%, 0.3%, 0.1% of the weights kept):
# SynFlow (100 data-free iterations) and magnitude pruning at initialisation (one shot, global:
# the paper's baseline). Metric chosen before the runs: test_acc after the last epoch. Nothing
# tuned.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/synflow}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
arms=()
for d in 0.1 0.01 0.003 0.001; do
  arms+=(--variant "synflow_$d=compress.density=$d")
  arms+=(--variant "magnitude_$d=compress.density=$d;compress.iterations=1;compress.score=\"magnitude\"")
done
"$BIN" compare configs/papers/synflow_fmnist.toml --at 5,10 --extra density "${arms[@]}" \
  --variant "dense=compress.density=1.0;compress.iterations=1" --seeds "$SEEDS" --out "$OUT/fmnist" -q

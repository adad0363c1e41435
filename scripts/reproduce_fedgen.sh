#!/usr/bin/env bash
# FedGen (Zhu et al., ICML 2021) at CPU scale (issue 13, docs/results.md), on
# configs/papers/fedgen_dirichlet_fmnist.toml (Fashion-MNIST, 20 clients, Dir(0.1)), 3 seeds.
# Arms: fedavg; fedgen with its defaults (alpha 1, a 32-noise 256-hidden generator, 20 Adam
# steps of 64 a round at 1e-3: fixed before any run). Metric chosen before the runs: the global
# model's test_acc over the last 3 evaluations; fedgen_loss_after at the end. Nothing tuned.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/fedgen}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
"$BIN" compare configs/papers/fedgen_dirichlet_fmnist.toml --at 10,20,40 --last 3 \
  --metric test_acc --extra fedgen_loss_before,fedgen_loss_after \
  --variant "fedavg=algorithm.use=\"fedavg\"" \
  --variant "fedgen=algorithm.use=\"fedgen\"" \
  --seeds "$SEEDS" --out "$OUT/fmnist_dir01" -q

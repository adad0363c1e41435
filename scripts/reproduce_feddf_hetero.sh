#!/usr/bin/env bash
# FedDF across architectures (Lin et al., NeurIPS 2020, section 3) at CPU scale (issue 13,
# docs/results.md), on configs/papers/feddf_hetero_fmnist.toml (Fashion-MNIST, 20 clients,
# Dir(0.1), half MLP and half LeNet-5), 3 seeds. Arms: FedAvg within each architecture (feddf
# with steps = 0) and FedDF (its defaults: 200 Adam steps of 64 unlabeled samples per
# prototype and round at 1e-3, T = 1; fixed before any run). Metrics chosen before the runs:
# each prototype's test accuracy over the last 3 evaluations (test_acc: the MLP, the headline
# column; test_acc_group0: LeNet-5). Nothing tuned.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/feddf_hetero}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
"$BIN" compare configs/papers/feddf_hetero_fmnist.toml --at 10,20,30 --last 3 --metric test_acc \
  --extra test_acc_group0,feddf_kl_end,feddf_kl_end_group0 \
  --variant "fedavg_per_arch=algorithm.steps=0" \
  --variant "feddf=algorithm.steps=200" \
  --seeds "$SEEDS" --out "$OUT/fmnist_dir01" -q

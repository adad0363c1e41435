#!/usr/bin/env bash
# FedFomo (Zhang et al., ICLR 2021) at CPU scale (issue 13, docs/results.md), on the two
# personalisation federations: four label-permuted groups (configs/papers/ifca_permuted_fmnist.toml,
# 40 rounds) and two classes per client (configs/papers/personalization_fmnist.toml, 60 rounds),
# 3 seeds each. Arms: FedFomo with the paper's M = 5, epsilon 0.3, and standalone training
# (`local`); FedAvg and FedAvg + fine-tuning on the same federations are in the IFCA and
# Per-FedAvg tables (same configs and seeds). Metric chosen before the runs: local_acc_mean over
# the last 3 evaluations. Nothing tuned. Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/fedfomo}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
"$BIN" compare configs/papers/ifca_permuted_fmnist.toml --at 10,20,40 --last 3 \
  --metric local_acc_mean --extra test_acc,local_acc_min,client_fomo_peers_used \
  --variant "fedfomo=algorithm.use=\"fedfomo\"" \
  --variant "local=algorithm.use=\"local\"" \
  --seeds "$SEEDS" --out "$OUT/fmnist_permuted4" -q
"$BIN" compare configs/papers/personalization_fmnist.toml --at 20,40,60 --last 3 \
  --metric local_acc_mean --extra test_acc,local_acc_min,client_fomo_peers_used \
  --variant "fedfomo=algorithm.use=\"fedfomo\"" \
  --variant "local=algorithm.use=\"local\"" \
  --seeds "$SEEDS" --out "$OUT/fmnist_c2" -q

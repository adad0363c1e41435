#!/usr/bin/env bash
# IFCA (Ghosh et al., NeurIPS 2020) on four label-permuted groups (issue 13, docs/results.md):
# configs/papers/ifca_permuted_fmnist.toml, 40 rounds, 3 seeds. Arms: IFCA with k = 4 (the true
# number of groups) and k = 2, FedAvg, and FedAvg + 5 fine-tuning steps. Metrics chosen before
# the runs: cluster_acc and local_acc_mean over the last 3 evaluations. Every arm has client
# lr 0.05; nothing tuned. Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/ifca}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
"$BIN" compare configs/papers/ifca_permuted_fmnist.toml --at 10,20,40 --last 3 \
  --metric local_acc_mean --extra cluster_acc,test_acc,local_acc_min \
  --variant "ifca_k4=algorithm.use=\"ifca\";algorithm.clusters=4" \
  --variant "ifca_k2=algorithm.use=\"ifca\";algorithm.clusters=2" \
  --variant "fedavg=algorithm.use=\"fedavg\"" \
  --variant "fedavg_ft5=algorithm.use=\"fedavg\";eval.finetune_steps=5" \
  --seeds "$SEEDS" --out "$OUT/fmnist_permuted4" -q

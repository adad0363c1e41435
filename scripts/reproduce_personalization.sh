#!/usr/bin/env bash
# Per-FedAvg (Fallah et al. 2020) and pFedMe (T. Dinh et al. 2020) against FedAvg and FedAvg +
# local fine-tuning under #C = 2 (issue 13, docs/results.md), on
# configs/papers/personalization_fmnist.toml: 60 rounds, 3 seeds, headline local_acc_mean (each
# client's own model on its held-out local test split), fixed before the runs. Every arm uses
# the same client.lr = 0.05 (beta / eta) and its paper's default for its own parameters (no
# tuning for any arm): Per-FedAvg alpha = 0.01 (FO and HF), pFedMe lambda = 15, personal_lr =
# 0.01, K = 5; FedAvg + fine-tuning runs 1 and 5 local steps before evaluating. Two more
# Per-FedAvg arms with alpha = 0.05 (the fine-tuning step size) are a sensitivity check, added
# after the first results and reported as such, not as the headline. Resumable.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/personalization}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
"$BIN" compare configs/papers/personalization_fmnist.toml --at 20,40,60 --last 3 \
  --metric local_acc_mean --extra test_acc,local_acc_min,local_acc_p10 \
  --variant "fedavg=algorithm.use=\"fedavg\"" \
  --variant "fedavg_ft1=algorithm.use=\"fedavg\";eval.finetune_steps=1" \
  --variant "fedavg_ft5=algorithm.use=\"fedavg\";eval.finetune_steps=5" \
  --variant "perfedavg_fo=algorithm.use=\"perfedavg\";algorithm.alpha=0.01" \
  --variant "perfedavg_hf=algorithm.use=\"perfedavg\";algorithm.alpha=0.01;algorithm.variant=\"hf\"" \
  --variant "perfedavg_fo_a05=algorithm.use=\"perfedavg\";algorithm.alpha=0.05" \
  --variant "perfedavg_hf_a05=algorithm.use=\"perfedavg\";algorithm.alpha=0.05;algorithm.variant=\"hf\"" \
  --variant "pfedme=algorithm.use=\"pfedme\";algorithm.lambda=15;algorithm.personal_lr=0.01;algorithm.inner_steps=5" \
  --seeds "$SEEDS" --out "$OUT/fmnist_c2" -q

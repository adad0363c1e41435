#!/usr/bin/env bash
# FedAwS (Yu et al., ICML 2020) at CPU scale (issue 13, docs/results.md), on
# configs/papers/fedaws_fmnist.toml (Fashion-MNIST, 100 clients of one class each), 3 seeds.
# Arms: fedaws (nu_pos 0.9, nu 0.5, 10 spreadout steps of 0.1 a round: fixed before any run);
# positive (the same positive loss without the spreadout: FedAvg of the positive loss);
# fedavg_ce (FedAvg with the softmax cross-entropy on the one-class clients); all_labels (FedAvg
# on an IID split: every client has every class). Metric chosen before the runs: test_acc over
# the last 3 evaluations (rounds 90-100); fedaws_cos_max at the end. Nothing tuned.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/fedaws}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
"$BIN" compare configs/papers/fedaws_fmnist.toml --at 10,50,100 --last 3 \
  --metric test_acc --extra fedaws_cos_max \
  --variant "fedaws=algorithm.use=\"fedaws\"" \
  --variant "positive=algorithm.use=\"fedaws\";algorithm.spread_steps=0" \
  --variant "fedavg_ce=algorithm.use=\"fedavg\"" \
  --variant "all_labels=algorithm.use=\"fedavg\";data.partition={use=\"iid\"}" \
  --seeds "$SEEDS" --out "$OUT/fmnist_one_class" -q

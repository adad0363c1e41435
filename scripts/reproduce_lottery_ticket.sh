#!/usr/bin/env bash
# The lottery ticket hypothesis (Frankle and Carbin, ICLR 2019) at CPU scale (issue 14,
# docs/results.md), on configs/papers/lottery_ticket_fmnist.toml (Fashion-MNIST, LeNet-300-100,
# 20% pruned per step after every 4 epochs, 8 steps: 16.8% of the weights left), 3 seeds.
# Arms: dense (no pruning step falls in the run), the ticket (survivors rewound to their initial
# values), and the random re-initialisation control (survivors drawn afresh). Metric chosen
# before the runs: test_acc after the last round (trained at 16.8% density), with the
# accuracies at the ends of the iterations at densities 1, 0.41 and 0.21 beside it. Centrally
# (one client holding the data, as `fedkit train` runs it), then inside FedAvg (10 IID clients,
# all every round, one local epoch). Nothing tuned: lr, batch and the pruning schedule are
# fixed before any run.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/lottery_ticket}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
CFG=configs/papers/lottery_ticket_fmnist.toml
arms=(--variant "dense=compress.every=1000" --variant "ticket=compress.reinit=false"
  --variant "reinit=compress.reinit=true")
"$BIN" compare "$CFG" --set data.clients=1 --set 'data.partition={use="iid"}' --set sampling.per_round=1 \
  --at 4,20,32,36 --extra density,model_zeros "${arms[@]}" --seeds "$SEEDS" --out "$OUT/central" -q
"$BIN" compare "$CFG" --set data.clients=10 --set 'data.partition={use="iid"}' --set sampling.per_round=10 \
  --at 4,20,32,36 --extra density,model_zeros "${arms[@]}" --seeds "$SEEDS" --out "$OUT/fedavg" -q

#!/usr/bin/env bash
# BinaryConnect and k-bit weights at CPU scale (issue 14, docs/results.md), on
# configs/papers/binary_connect_fmnist.toml (Fashion-MNIST, LeNet-300-100, 20 epochs), 3 seeds.
# Arms: fp32 (no quantiser), binary (deterministic), binary (stochastic), 4-bit, 2-bit weights.
# Metric chosen before the runs: test_acc, mean of the last 3 evaluations (epochs 10, 15, 20).
# Centrally, then inside FedAvg (10 IID clients, all every round). Nothing tuned: every arm
# shares lr, batch and epochs.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/binary_connect}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
arms=(--variant "fp32=model={use=\"mlp\", hidden=[300, 100]}"
  --variant "binary=model.quant={weights=\"binary\"}"
  --variant "binary_stochastic=model.quant={weights=\"binary\", stochastic=true}"
  --variant "bits4=model.quant={weights=\"bits\", bits=4}"
  --variant "bits2=model.quant={weights=\"bits\", bits=2}")
for setting in central fedavg; do
  n=1
  [ "$setting" = fedavg ] && n=10
  "$BIN" compare configs/papers/binary_connect_fmnist.toml --set data.clients=$n --set sampling.per_round=$n \
    --at 5,10,20 --last 3 "${arms[@]}" --seeds "$SEEDS" --out "$OUT/$setting" -q
done

#!/usr/bin/env bash
# FedProx (MLSys 2020) Figure 1 on Synthetic(1,1): FedAvg vs FedProx (mu = 0: partial work only;
# mu = 1) at 0%, 50% and 90% stragglers, SEEDS seeds (default 3; each seed also draws its own
# Synthetic(1,1) data). The headline metric, chosen before the runs, is the paper's plotted one:
# the global model's training loss, at rounds 10/25/50/100/200, with `sd_last100` (its standard
# deviation over the last 100 rounds: the instability). One table per straggler level in
# ${OUT:-runs/fedprox}/drop<d>/comparison.md.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/fedprox}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
for drop in 0 0.5 0.9; do
  "$BIN" compare configs/papers/fedprox_synthetic_1_1.toml --out "$OUT/drop$drop" --seeds "$SEEDS" -q \
    --set sampling.drop_percent=$drop --metric train_loss --at 10,25,50,100,200 --last 100 --extra test_acc \
    --variant "fedavg=algorithm.use=fedavg" --variant "fedprox_mu0=algorithm.use=fedprox;algorithm.mu=0" \
    --variant "fedprox_mu1=algorithm.use=fedprox;algorithm.mu=1" > /dev/null
  echo "### drop $drop"; echo; cat "$OUT/drop$drop/comparison.md"; echo
done

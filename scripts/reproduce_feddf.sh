#!/usr/bin/env bash
# FedDF (Lin et al., NeurIPS 2020) and FedBE (Chen and Chao, ICLR 2021) at CPU scale (issue 13,
# docs/results.md): configs/papers/feddf_dirichlet_fmnist.toml, Dir(0.1), 40 rounds, 3 seeds.
# Arms: FedAvg, FedDF with 200 distillation steps a round (batch 64, Adam lr 1e-3, T = 1), and
# FedBE (Gaussian, M = 10 samples, the same distillation with SWA). Metric chosen
# before the runs: test_acc of the global model, mean of the last 3 evaluations. Nothing tuned.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/feddf}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
"$BIN" compare configs/papers/feddf_dirichlet_fmnist.toml --at 10,20,40 --last 3 \
  --extra feddf_kl_start,feddf_kl_end \
  --variant "fedavg=algorithm.use=\"fedavg\"" \
  --variant "feddf=algorithm.use=\"feddf\"" \
  --variant "fedbe=algorithm.use=\"fedbe\"" \
  --seeds "$SEEDS" --out "$OUT/fmnist_dir0.1" -q
# Added after the first results: the paper's regime of much local work (5 local epochs), where
# the clients drift further apart.
"$BIN" compare configs/papers/feddf_dirichlet_fmnist.toml --at 10,20,40 --last 3 \
  --extra feddf_kl_start,feddf_kl_end --set client.epochs=5 \
  --variant "fedavg=algorithm.use=\"fedavg\"" \
  --variant "feddf=algorithm.use=\"feddf\"" \
  --variant "fedbe=algorithm.use=\"fedbe\"" \
  --seeds "$SEEDS" --out "$OUT/fmnist_dir0.1_e5" -q

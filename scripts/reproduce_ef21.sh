#!/usr/bin/env bash
# EF21-SGDM (Fatkhullin et al., NeurIPS 2023) against EF21 and top-k with and without classic
# error feedback (issue 11, docs/results.md). FedSGD on configs/papers/compression_fmnist.toml:
# one stochastic gradient (batch 32) a sampled client a round, 10 of 100 clients (EF21-PP),
# 300 rounds, server step gamma = 0.1 for every arm, top-k 1%; then the EF21 arms with all 100
# clients every round, and DIANA / EF21-P + DIANA. 3 seeds, resumable, about 11 minutes on 2
# cores.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/ef21}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
sgd='client.max_steps=1;client.lr=0.1;aggregator.weighted=false'
ef='algorithm.use="ef21_sgdm";algorithm.lr=0.1;algorithm.fraction=0.01'
"$BIN" compare configs/papers/compression_fmnist.toml --set rounds=300 --at 100,200,300 \
  --variant "sgd_dense=$sgd" \
  --variant "sgd_topk=$sgd;pipeline=[{ use = \"topk\", fraction = 0.01 }]" \
  --variant "sgd_topk_ef=$sgd;pipeline=[{ use = \"topk\", fraction = 0.01, error_feedback = true }]" \
  --variant "ef21=$ef;algorithm.momentum=1.0" \
  --variant "ef21_sgdm=$ef;algorithm.momentum=0.1" \
  --seeds "$SEEDS" --out "$OUT/mlp_dir0.5" -q
# Full participation (the paper's setting): all 100 clients every round.
"$BIN" compare configs/papers/compression_fmnist.toml --set rounds=300 --set sampling.per_round=100 \
  --at 100,200,300 \
  --variant "sgd_topk=$sgd;pipeline=[{ use = \"topk\", fraction = 0.01 }]" \
  --variant "ef21=$ef;algorithm.momentum=1.0" \
  --variant "ef21_sgdm=$ef;algorithm.momentum=0.1" \
  --seeds "$SEEDS" --out "$OUT/mlp_dir0.5_full" -q
# DIANA (random-k 1% of gradient differences), uplink only and with the top-k 10% downlink:
# EF21-P + DIANA, with every client every round.
di='algorithm.use="diana";algorithm.lr=0.1;algorithm.fraction=0.01'
"$BIN" compare configs/papers/compression_fmnist.toml --set rounds=300 --set sampling.per_round=100 \
  --at 100,200,300 \
  --variant "diana=$di" \
  --variant "ef21p_diana=$di;downlink.use=\"topk\";downlink.fraction=0.1" \
  --seeds "$SEEDS" --out "$OUT/mlp_dir0.5_full_diana" -q

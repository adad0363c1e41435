#!/usr/bin/env bash
# The small transformer as a word-level language model (issue 14's owner piece, docs/results.md),
# on configs/papers/transformer_fortunes.toml (Debian's fortune files, one client per topic,
# windows of 32 tokens, vocabulary 2000), 3 seeds. Arms: the transformer (2 blocks, d = 64, 4
# heads) and its bigram baseline (`model.layers = 0`: no attention, each position sees only its
# own token). Metric chosen before the runs: test_loss (mean next-token cross-entropy in nats;
# perplexity = exp) after the last round. Centrally (one client holding the data, as
# `fedkit train` runs it; 4 epochs), then inside FedAvg over the topics (every client every round,
# one local epoch, 8 rounds). Nothing tuned: Adam at lr 0.002, batch 32, fixed before any run.
# Needs `apt-get install fortunes`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/transformer_lm}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
CFG=configs/papers/transformer_fortunes.toml
arms=(--variant "transformer=model.layers=2" --variant "bigram=model.layers=0")
"$BIN" compare "$CFG" --set data.clients=1 --set 'data.partition={use="iid"}' --set sampling.per_round=1 \
  --set rounds=4 --metric test_loss --at 1,2,4 "${arms[@]}" --seeds "$SEEDS" --out "$OUT/central" -q
"$BIN" compare "$CFG" --set sampling.per_round=1000 --set rounds=8 --metric test_loss --at 1,4,8 \
  "${arms[@]}" --seeds "$SEEDS" --out "$OUT/fedavg" -q

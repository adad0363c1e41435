#!/usr/bin/env bash
# Bidirectional compression against uplink-only (issue 11, docs/results.md): QSGD (s = 16) on
# the uplink of configs/papers/compression_fmnist.toml, and on the downlink nothing, fp16,
# QSGD (s = 16, buckets of 512) or top-k 10%, each as the compressed model change with primal
# error feedback (EF21-P). 3 seeds, resumable, about 2 minutes on 2 cores.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/downlink}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
up='pipeline=[{ use = "qsgd", levels = 16 }]'
"$BIN" compare configs/papers/compression_fmnist.toml \
  --variant "uplink_only=$up" \
  --variant "down_fp16=$up;downlink.use=\"fp16\"" \
  --variant "down_qsgd=$up;downlink.use=\"qsgd\";downlink.levels=16;downlink.bucket=512" \
  --variant "down_topk10=$up;downlink.use=\"topk\";downlink.fraction=0.1" \
  --seeds "$SEEDS" --out "$OUT/mlp_dir0.5" -q

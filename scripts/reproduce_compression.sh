#!/usr/bin/env bash
# Accuracy against bits sent for the compression baselines (issue 11, docs/results.md) on
# configs/papers/compression_fmnist.toml, 3 seeds: no compression, fp16, top-k 1% with and
# without error feedback, random-k 1% with error feedback, QSGD at s = 4 and 16, signSGD with
# majority vote and EF-signSGD. Resumable; about 8 minutes on 2 cores.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/compression}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
v() { printf -- '--variant\n%s=pipeline=[{ use = "%s"%s }]\n' "$1" "$2" "$3"; }
mapfile -t variants < <(
  printf -- '--variant\nnone=pipeline=[]\n'
  v fp16 fp16 ""
  v topk_1pct topk ", fraction = 0.01"
  v topk_1pct_ef topk ", fraction = 0.01, error_feedback = true"
  v randk_1pct_ef randk ", fraction = 0.01, error_feedback = true"
  v qsgd_4 qsgd ", levels = 4"
  v qsgd_16 qsgd ", levels = 16"
  v signsgd_vote signsgd ", vote = true"
  v ef_signsgd signsgd ", error_feedback = true"
)
"$BIN" compare configs/papers/compression_fmnist.toml "${variants[@]}" --seeds "$SEEDS" \
  --out "$OUT/mlp_dir0.5" -q

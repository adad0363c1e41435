#!/usr/bin/env bash
# DAdaQuant (Hönig et al., ICML 2022) against static Federated QSGD (issue 11, docs/results.md)
# on configs/papers/compression_fmnist.toml, 3 seeds, QSGD buckets of 512 values (so that the
# bits grow with the level): static QSGD at q = 16 and q = 4; DAdaQuant from q_min = 1 to
# q_max = 16 with both adaptations, time-adaptive only, and client-adaptive only.
# Then static q = 16, q = 1 and DAdaQuant over 150 rounds. Resumable; about 4 minutes on 2
# cores. Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/dadaquant}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
d='use = "dadaquant", q_min = 1, q_max = 16, bucket = 512'
"$BIN" compare configs/papers/compression_fmnist.toml \
  --variant 'qsgd_16=pipeline=[{ use = "qsgd", levels = 16, bucket = 512 }]' \
  --variant 'qsgd_4=pipeline=[{ use = "qsgd", levels = 4, bucket = 512 }]' \
  --variant "dadaquant=pipeline=[{ $d }]" \
  --variant "time_only=pipeline=[{ $d, client_adaptive = false }]" \
  --variant "client_only=pipeline=[{ $d, time_adaptive = false }]" \
  --extra dadaquant_q,dadaquant_mean_q --seeds "$SEEDS" --out "$OUT/mlp_dir0.5" -q
# 150 rounds: long enough for the time-adaptive level to move.
"$BIN" compare configs/papers/compression_fmnist.toml --set rounds=150 --at 50,100,150 \
  --variant 'qsgd_16=pipeline=[{ use = "qsgd", levels = 16, bucket = 512 }]' \
  --variant 'qsgd_1=pipeline=[{ use = "qsgd", levels = 1, bucket = 512 }]' \
  --variant "dadaquant=pipeline=[{ $d }]" \
  --extra dadaquant_q,dadaquant_mean_q --seeds "$SEEDS" --out "$OUT/mlp_dir0.5_150" -q

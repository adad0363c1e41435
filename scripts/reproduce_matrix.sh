#!/usr/bin/env bash
# The Fashion-MNIST attack x defence matrix of docs/results.md (issue 9): every attack preset the
# issue lists against every defence, one seed (SEEDS to change), on the cell of
# configs/papers/robustness_matrix_fmnist.toml (lenet, 100 clients Dir(0.5), 10 a round, 10%
# malicious, 40 rounds). Resumable: rerunning skips finished cells. About 1.5 hours on 2 cores.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/matrix}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-1}
ATTACKS=${ATTACKS:-none,model_replacement,constrain_and_scale,dba,edge_case,neurotoxin,alie,min_max,label_flip}
DEFENSES=${DEFENSES:-mean,krum,multi_krum,median,trimmed_mean,bulyan,flame,rlr,sparsefed,deepsight,fltrust,norm_bound}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
# CRFL's model-norm bound: the unclipped lenet reaches a norm of about 11 in this setting, so a
# static bound of 10 (the authors' growing bound 2 + 0.1 t would cap it at 6 and cost 28 points
# of clean accuracy in 40 rounds).
"$BIN" matrix configs/papers/robustness_matrix_fmnist.toml --attacks "$ATTACKS" --defenses "$DEFENSES" \
  --defense "crfl=aggregator.use=crfl;aggregator.dynamic=false;aggregator.clip=10.0" \
  --seeds "$SEEDS" --out "$OUT" -q

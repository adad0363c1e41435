#!/usr/bin/env bash
# Sample-level DP-SGD inside FedAvg on Fashion-MNIST (issue 10, docs/results.md): the federation
# of scripts/reproduce_dp_fedavg.sh (1000 clients of 60 images, Poisson q = 0.1, 100 rounds,
# logreg), every client training with `dp_sgd` (Poisson batches of expected size 10, so q_i =
# 1/6 and 6 steps a round; per-example clip C = 1). The noise multiplier of each sample-level
# epsilon in {1, 3, 8} at delta = 1e-5 comes from `fedkit privacy noise` for 600 steps: a client
# that joins all 100 rounds, so the bound holds for every client whatever the cohorts. Then
# both levels at once: user-level epsilon 3 (dp_fixed_clip) with sample-level epsilon 3.
# 3 seeds, resumable, about 3 minutes on 2 cores. Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/dp_sgd}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
CFG=configs/papers/dp_fedavg_fmnist.toml
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
sigma() {
  "$BIN" privacy noise --epsilon "$1" --delta "$2" --sampling-rate "$3" --steps "$4" --json |
    python3 -c "import json, sys; print(json.load(sys.stdin)['noise_multiplier'])"
}
variants=(--variant "none=pipeline=[]")
for eps in 8 3 1; do
  z=$(sigma "$eps" 1e-5 0.16666666666666666 600)
  variants+=(--variant "sgd_eps$eps=pipeline=[{ use = \"dp_sgd\", clip = 1.0, noise_multiplier = $z, delta = 1e-5 }]")
done
z_user=$(sigma 3 "$(python3 -c "print(1000 ** -1.1)")" 0.1 100)
z_sample=$(sigma 3 1e-5 0.16666666666666666 600)
variants+=(--variant "both_eps3=pipeline=[{ use = \"dp_sgd\", clip = 1.0, noise_multiplier = $z_sample, delta = 1e-5 }, { use = \"dp_fixed_clip\", clip = 0.5, noise_multiplier = $z_user }]")
"$BIN" compare "$CFG" "${variants[@]}" --set "data.clients=1000" --extra sample_epsilon,epsilon \
  --seeds "$SEEDS" --out "$OUT/n1000_logreg" -q

#!/usr/bin/env bash
# DP-FedAvg on Fashion-MNIST (issue 10, docs/results.md): test accuracy against epsilon in
# {1, 3, 8} and without DP, 3 seeds, on configs/papers/dp_fedavg_fmnist.toml. Two federations
# (1000 and 3000 clients, Poisson q = 0.1, 100 rounds) with logreg, and the 3000-client one with
# the mlp 784-200-200-10. The noise multiplier of each epsilon comes from `fedkit privacy noise`
# at delta = N^-1.1; then adaptive clipping against three fixed bounds at epsilon 3. Resumable.
# About 5 minutes on 2 cores.
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/dp_fedavg}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
CFG=configs/papers/dp_fedavg_fmnist.toml
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
for setting in "1000 logreg" "3000 logreg" "3000 mlp"; do
  read -r n model <<<"$setting"
  delta=$(python3 -c "print($n ** -1.1)")
  variants=(--variant "none=pipeline=[]")
  for eps in 8 3 1; do
    z=$("$BIN" privacy noise --epsilon "$eps" --delta "$delta" --sampling-rate 0.1 --steps 100 --json |
      python3 -c "import json, sys; print(json.load(sys.stdin)['noise_multiplier'])")
    variants+=(--variant "eps$eps=pipeline.0.noise_multiplier=$z")
  done
  "$BIN" compare "$CFG" "${variants[@]}" --set "data.clients=$n" --set "model.use=\"$model\"" \
    --extra epsilon --seeds "$SEEDS" --out "$OUT/n${n}_$model" -q
done
# Adaptive clipping (Andrew et al. 2021) against fixed bounds, N = 1000, logreg, epsilon 3.
delta=$(python3 -c "print(1000 ** -1.1)")
z=$("$BIN" privacy noise --epsilon 3 --delta "$delta" --sampling-rate 0.1 --steps 100 --json |
  python3 -c "import json, sys; print(json.load(sys.stdin)['noise_multiplier'])")
variants=()
for c in 0.1 0.5 2.0; do
  variants+=(--variant "fixed_$c=pipeline=[{ use = \"dp_fixed_clip\", clip = $c, noise_multiplier = $z }]")
done
variants+=(--variant "adaptive=pipeline=[{ use = \"dp_adaptive_clip\", initial_clip = 0.1, noise_multiplier = $z }]")
"$BIN" compare "$CFG" "${variants[@]}" --set "data.clients=1000" --extra epsilon,dp_clip --seeds "$SEEDS" \
  --out "$OUT/adaptive_n1000_logreg" -q

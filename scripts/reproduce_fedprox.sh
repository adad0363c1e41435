#!/usr/bin/env bash
# FedProx (MLSys 2020) Figure 1 on Synthetic(1,1): FedAvg vs FedProx (mu = 1) at 0%, 50% and 90%
# stragglers. Writes run directories under ${OUT:-runs/fedprox} and prints one table.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/fedprox}
BIN=${BIN:-target/release/fedkit}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
dirs=()
for drop in 0 0.5 0.9; do
  # fedprox0: FedProx with mu = 0 (partial work from stragglers, no proximal term).
  for algo in fedavg fedprox0 fedprox; do
    d="$OUT/drop$drop-$algo"
    rm -rf "$d"
    case $algo in
      fedavg) a=(--set algorithm.use='"fedavg"') ;;
      fedprox0) a=(--set algorithm.use='"fedprox"' --set algorithm.mu=0.0) ;;
      fedprox) a=(--set algorithm.use='"fedprox"' --set algorithm.mu=1.0) ;;
    esac
    "$BIN" run configs/papers/fedprox_synthetic_1_1.toml --quiet --out "$d" \
      --set sampling.drop_percent=$drop "${a[@]}" >/dev/null
    dirs+=("$d")
  done
done
"$BIN" report "${dirs[@]}" --last 20

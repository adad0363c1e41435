#!/usr/bin/env bash
# NIID-Bench (ICDE 2022) Fashion-MNIST rows: FedAvg and FedProx (mu = 0.01) under iid, Dir(0.5),
# #C = 1, 2, 3, with lenet, 10 clients, 10 local epochs, batch 64, SGD lr 0.01 momentum 0.9.
# ROUNDS (default 50, the paper's) can be lowered: each round is ~25 s on 2 cores with the native lenet.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/niid_bench}
ROUNDS=${ROUNDS:-50}
BIN=${BIN:-target/release/fedkit}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
dirs=()
for part in "iid" "dir0.5" "c1" "c2" "c3"; do
  case $part in
    iid) p=(--set data.partition.use='"iid"') ;;
    dir0.5) p=(--set data.partition.use='"dirichlet_label"' --set data.partition.alpha=0.5) ;;
    c*) p=(--set data.partition.use='"label_quantity"' --set data.partition.k=${part#c}) ;;
  esac
  for algo in fedavg fedprox; do
    d="$OUT/$part-$algo"
    rm -rf "$d"
    a=(--set algorithm.use="\"$algo\"")
    [ "$algo" = fedprox ] && a+=(--set algorithm.mu=0.01)
    "$BIN" run configs/papers/niid_bench_fmnist.toml --quiet --out "$d" --set rounds=$ROUNDS "${p[@]}" "${a[@]}" >/dev/null
    dirs+=("$d")
  done
done
"$BIN" report "${dirs[@]}" --last 1

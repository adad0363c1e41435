#!/usr/bin/env bash
# NIID-Bench (Li et al., ICDE 2022) Fashion-MNIST table: FedAvg, FedProx (mu = 0.01), SCAFFOLD and
# FedNova under iid, Dir(0.5), #C = 1, 2, 3, with lenet (simple-cnn), 10 clients all sampled, 10
# local epochs, batch 64, SGD lr 0.01 momentum 0.9 weight decay 1e-5, 50 rounds, seed 0 (one seed,
# as the published table). Each run is ~10 minutes on 2 cores (~13 s a round).
#
# Resumable: a finished run (50 rounds in its metrics.jsonl) is skipped, an interrupted one is
# continued from its checkpoint. Run directories go to OUT (default runs/niid_bench50); each
# finished run's metrics.jsonl and resolved.toml are copied to docs/data/niid_bench/<run>/.
# ALGOS and PARTS select a subset, e.g. ALGOS="fedavg fedprox" PARTS="c2 c3".
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/niid_bench50}
ROUNDS=${ROUNDS:-50}
BIN=${BIN:-target/release/fedkit}
ALGOS=${ALGOS:-"fedavg fedprox scaffold fednova"}
PARTS=${PARTS:-"iid dir0.5 c1 c2 c3"}
DATA=docs/data/niid_bench
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
dirs=()
for part in $PARTS; do
  case $part in
    iid) p=(--set data.partition.use='"iid"') ;;
    dir0.5) p=(--set data.partition.use='"dirichlet_label"' --set data.partition.alpha=0.5) ;;
    c*) p=(--set data.partition.use='"label_quantity"' --set data.partition.k=${part#c}) ;;
  esac
  for algo in $ALGOS; do
    d="$OUT/$part-$algo"
    a=(--set algorithm.use="\"$algo\"")
    [ "$algo" = fedprox ] && a+=(--set algorithm.mu=0.01)
    done_rounds=$( [ -f "$d/metrics.jsonl" ] && tail -n 1 "$d/metrics.jsonl" | sed -E 's/.*"round":([0-9]+).*/\1/' || echo 0)
    if [ "$done_rounds" -ge "$ROUNDS" ]; then
      echo "$d: done"
    elif [ -f "$d/checkpoint.bin" ]; then
      echo "$d: resuming after round $done_rounds"
      "$BIN" run --resume "$d" --rounds "$ROUNDS" --quiet >/dev/null
    else
      echo "$d: starting"
      rm -rf "$d"
      "$BIN" run configs/papers/niid_bench_fmnist.toml --quiet --out "$d" --set rounds="$ROUNDS" "${p[@]}" "${a[@]}" >/dev/null
    fi
    mkdir -p "$DATA/$part-$algo"
    cp "$d/metrics.jsonl" "$d/resolved.toml" "$DATA/$part-$algo/"
    dirs+=("$d")
  done
done
"$BIN" report "${dirs[@]}" --last 1

#!/usr/bin/env bash
# HeteroFL (Diao et al., ICLR 2021) at CPU scale (issue 13, docs/results.md): the global model
# trained by clients of mixed widths against every client at full width (FedAvg's model) and
# every client at the smallest width, on configs/papers/heterofl_fmnist.toml (IID, 100 clients),
# 3 seeds. Arms: full (rates = [1]); a-e (the paper's five levels 1, 1/2, 1/4, 1/8, 1/16 in
# equal shares); a+e (1 and 1/16, half each); e (everyone at 1/16: the 784-13-13-10 MLP, since
# the global model is the widest clients' model). Metric chosen before the
# runs: test_acc over the last 3 evaluations; bytes_up per round at the end. Nothing tuned (the
# config's lr is the other Fashion-MNIST MLP runs'). Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/heterofl}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
"$BIN" compare configs/papers/heterofl_fmnist.toml --at 10,25,50 --last 3 \
  --metric test_acc --extra bytes_up,heterofl_rate_mean \
  --variant "full=algorithm.rates=[1.0]" \
  --variant "a-e=algorithm.rates=[1.0, 0.5, 0.25, 0.125, 0.0625]" \
  --variant "a+e=algorithm.rates=[1.0, 0.0625]" \
  --variant "e=algorithm.rates=[1.0];model.hidden=[13, 13]" \
  --seeds "$SEEDS" --out "$OUT/fmnist_iid" -q

#!/usr/bin/env bash
# FedHeNN (Makhija et al., ICML 2022) at CPU scale (issue 13, docs/results.md), on
# configs/papers/fedhenn_fmnist.toml (Fashion-MNIST, 20 clients of 150 samples, Dir(0.5)).
# Metric chosen before the runs: local_acc_mean (each client's own model on its held-out local
# test split) over the last 3 evaluations. Arms, with three architectures (MLP, LeNet-5, wide
# MLP) and with the MLP alone: `local` (standalone training, the paper's baseline) and fedhenn.
# FedHeNN's eta is tuned first, on a tuning seed (10) that the reported seeds (0, 1, 2) do not
# use, over {0.5, 2, 8}; `local` has nothing to tune (both share lr, epochs and batch size).
# Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/fedhenn}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
CFG=configs/papers/fedhenn_fmnist.toml
"$BIN" compare "$CFG" --set seed=10 --at 20,40 --last 3 --metric local_acc_mean \
  --variant "eta0.5=algorithm.eta=0.5" --variant "eta2=algorithm.eta=2.0" --variant "eta8=algorithm.eta=8.0" \
  --out "$OUT/tune" -q
ETA=${ETA:-$(python3 - "$OUT/tune/comparison.csv" <<'PY'
import csv, sys
rows = list(csv.DictReader(open(sys.argv[1])))
col = "mean_last3"
best = max(rows, key=lambda r: float(r[col].split()[0]))
print(best["variant"].removeprefix("eta"))
PY
)}
echo "eta = $ETA (tuned on seed 10)"
for arch in hetero mlp; do
  groups=()
  [ "$arch" = mlp ] && groups=(--set 'model.per_client=[]')
  "$BIN" compare "$CFG" "${groups[@]}" --at 20,40 --last 3 --metric local_acc_mean \
    --extra local_acc_min,local_acc_p10,fedhenn_cka_to_mean \
    --variant "local=algorithm.use=\"local\"" \
    --variant "fedhenn=algorithm.use=\"fedhenn\";algorithm.eta=$ETA" \
    --seeds "$SEEDS" --out "$OUT/$arch" -q
done

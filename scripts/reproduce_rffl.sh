#!/usr/bin/env bash
# RFFL (Xu and Lyu, FL-ICML 2021) at CPU scale (issue 13, docs/results.md):
# configs/papers/rffl_fmnist.toml, 40 rounds, 3 seeds. Metrics chosen before the runs:
# - fairness: the Pearson correlation of each client's standalone local accuracy (algorithm
#   `local`) and its final local accuracy (`fedkit fairness`), for RFFL, RFFL without
#   sparsified rewards, and FedAvg;
# - robustness: with clients 10 and 11 free-riding (uniform noise uploads), the honest
#   clients' mean final local accuracy and whether RFFL removes the free riders.
# Nothing is tuned: RFFL has the paper's alpha 0.95, Gamma 0.5, beta 1/3; every arm has
# client lr 0.05. Needs `apt-get install dataset-fashion-mnist`.
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/rffl}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
CFG=configs/papers/rffl_fmnist.toml
"$BIN" compare "$CFG" --at 10,20,40 --last 3 --metric local_acc_mean --extra test_acc,local_acc_min \
  --variant "rffl=algorithm.use=\"rffl\"" \
  --variant "rffl_dense=algorithm.use=\"rffl\";algorithm.sparsify=false" \
  --variant "fedavg=algorithm.use=\"fedavg\"" \
  --variant "local=algorithm.use=\"local\"" \
  --seeds "$SEEDS" --out "$OUT/clean" -q
"$BIN" compare "$CFG" --at 10,20,40 --last 3 --metric local_acc_mean --extra test_acc,rffl_removed \
  --set "threat.ids=[10,11]" --set 'pipeline=[{use="free_rider",on="malicious"}]' \
  --variant "rffl=algorithm.use=\"rffl\"" \
  --variant "fedavg=algorithm.use=\"fedavg\"" \
  --variant "local=algorithm.use=\"local\"" \
  --seeds "$SEEDS" --out "$OUT/free_riders" -q
summary="$OUT/fairness.md"
: > "$summary"
for s in $(seq 0 $((SEEDS - 1))); do
  for arm in rffl rffl_dense fedavg; do
    echo "## clean, $arm, seed $s" >> "$summary"
    "$BIN" fairness "$OUT/clean/$arm/seed$s" --standalone "$OUT/clean/local/seed$s" >> "$summary"
  done
  for arm in rffl fedavg; do
    echo "## free riders 10 and 11, $arm, seed $s (honest clients)" >> "$summary"
    "$BIN" fairness "$OUT/free_riders/$arm/seed$s" --standalone "$OUT/free_riders/local/seed$s" --exclude 10,11 >> "$summary"
  done
done
grep -h "^## \|^fairness\|^mean" "$summary"

#!/usr/bin/env bash
# Reproduces docs/results.md "Membership inference (issue 15)": fedkit attack membership on the
# final FedAvg model of configs/papers/membership_fmnist.toml (Fashion-MNIST, mlp).
#
# Metrics, chosen before the runs: AUC and the TPR at 0.1% and 1% FPR of the loss threshold and
# of online LiRA (16 shadow models, each a re-run of the federated training on a random half of
# the population), over all 1200 members and 1200 non-members, mean and spread over run seeds
# 0, 1, 2. Nothing tuned. Needs `apt-get install dataset-fashion-mnist`; ~3 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/fedkit
OUT=${OUT:-runs/membership}
DATA=docs/data/membership
CFG=configs/papers/membership_fmnist.toml
mkdir -p "$OUT" "$DATA"
for seed in 0 1 2; do
  dir="$OUT/s$seed"
  [ -f "$dir/checkpoint.bin" ] || "$BIN" run "$CFG" --set seed="$seed" --out "$dir" -q >/dev/null
  [ -f "$dir/attack-membership/report.json" ] || "$BIN" attack membership --run "$dir" --shadows 16 >/dev/null
done
cp "$OUT/s0/attack-membership/roc.png" "$DATA/roc-s0.png"
python3 - "$OUT" "$DATA" <<'PY'
import json, statistics, sys
out, data = sys.argv[1], sys.argv[2]
reps = [json.load(open(f"{out}/s{s}/attack-membership/report.json")) for s in (0, 1, 2)]
def ms(v):
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"
table = ["| attack | AUC | TPR at 0.1% FPR | TPR at 1% FPR |", "|---|---|---|---|"]
for k, name in enumerate(["loss threshold", "LiRA (online)"]):
    rows = [r["results"][k] for r in reps]
    assert all(x["attack"] == name for x in rows)
    table.append(f"| {name} | " + " | ".join(ms([x[m] for x in rows]) for m in ("auc", "tpr_at_0.1%_fpr", "tpr_at_1%_fpr")) + " |")
summary = [{"seed": s, "members": r["members_scored"], "mean_loss_members": r["mean_loss_members"],
            "mean_loss_non_members": r["mean_loss_non_members"], "results": r["results"]} for s, r in enumerate(reps)]
json.dump(summary, open(f"{data}/summary.json", "w"), indent=1)
open(f"{data}/table.md", "w").write("\n".join(table) + "\n")
print("\n".join(table))
PY

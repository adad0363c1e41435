#!/usr/bin/env bash
# Reproduces docs/results.md "Membership inference on distilled and personalised models (issue
# 15)": fedkit attack membership on configs/papers/membership_fmnist.toml (Fashion-MNIST, 10 iid
# clients of 120 images, mlp, 30 rounds of 5 local epochs) trained four ways, all with
# data.unlabeled_share = 0.5, so that every variant draws the same non-members from the same half
# of the 58,800 unheld training images (the other half is FedDF's unlabeled pool; the others
# read neither):
# - fedavg: the global model;
# - feddf: the FedDF student (the server distils the ensemble of the 10 client models into it,
#   200 Adam steps of 64 unlabeled samples a round; the shadows distil on the same pool);
# - local: standalone training, each sample scored on its own client's model (--personalised);
# - perfedavg: Per-FedAvg, each sample scored on its client's adapted model (--personalised).
# Metrics, chosen before the runs: AUC and the TPR at 1% FPR of online LiRA (16 shadow models,
# each a re-run of the same training) and of the loss threshold, and the scored models' mean
# test accuracy; mean and spread over run seeds 0, 1, 2. Nothing tuned.
# Needs `apt-get install dataset-fashion-mnist`; ~35 minutes on 2 cores (FedDF's are 25).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/fedkit
OUT=${OUT:-runs/membership_models}
DATA=docs/data/membership_models
CFG=configs/papers/membership_fmnist.toml
mkdir -p "$OUT" "$DATA"
for seed in 0 1 2; do
  for alg in fedavg feddf local perfedavg; do
    dir="$OUT/s$seed-$alg"
    flags=()
    case $alg in local|perfedavg) flags=(--personalised) ;; esac
    [ -f "$dir/checkpoint.bin" ] || "$BIN" run "$CFG" --set seed="$seed" --set data.unlabeled_share=0.5 \
      --set "algorithm.use=\"$alg\"" --out "$dir" -q >/dev/null
    [ -f "$dir/attack-membership/report.json" ] || "$BIN" attack membership --run "$dir" --shadows 16 "${flags[@]}" >/dev/null
    mkdir -p "$DATA/s$seed-$alg"
    cp "$dir/resolved.toml" "$dir/attack-membership/report.json" "$DATA/s$seed-$alg/"
    grep '"test_acc"' "$dir/metrics.jsonl" | tail -1 > "$DATA/s$seed-$alg/last_eval.jsonl"
  done
done
python3 - "$DATA" <<'PY'
import json, statistics, sys
data = sys.argv[1]
def ms(v):
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"
table = ["| model | test accuracy | attack | AUC | TPR at 1% FPR | TPR at 0.1% FPR |", "|---|---|---|---|---|---|"]
summary = []
rows = (("fedavg", "FedAvg global model"), ("feddf", "FedDF distilled student"),
        ("local", "standalone clients' own models"), ("perfedavg", "Per-FedAvg adapted models"))
for alg, label in rows:
    reps = [json.load(open(f"{data}/s{s}-{alg}/report.json")) for s in (0, 1, 2)]
    # Reports from before `scored_models_test_acc`: a global model's is the run's final test_acc.
    assert all("scored_models_test_acc" in r or r.get("model", "global") == "global" for r in reps)
    acc = [r.get("scored_models_test_acc", json.loads(open(f"{data}/s{s}-{alg}/last_eval.jsonl").read())["test_acc"])
           for s, r in enumerate(reps)]
    for k, name in ((1, "LiRA (online)"), (0, "loss threshold")):
        res = [r["results"][k] for r in reps]
        assert all(x["attack"] == name for x in res)
        table.append(f"| {label} | {ms(acc)} | {name} | " + " | ".join(ms([x[m] for x in res]) for m in ("auc", "tpr_at_1%_fpr", "tpr_at_0.1%_fpr")) + " |")
        summary.append({"model": alg, "attack": name, "scored_models_test_acc": acc, "results": res})
json.dump(summary, open(f"{data}/summary.json", "w"), indent=1)
open(f"{data}/table.md", "w").write("\n".join(table) + "\n")
print("\n".join(table))
PY

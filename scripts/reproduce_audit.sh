#!/usr/bin/env bash
# Reproduces docs/results.md "One-run privacy auditing (issue 15)": fedkit attack audit on
# configs/papers/audit_dp_fedavg_fmnist.toml (user-level DP-FedAvg on Fashion-MNIST, 500 canary
# clients of 1000), for noise multipliers z in {3, 1, 0.3, 0.1} and a null run whose canaries send
# nothing (norm 0). Metric, chosen before the runs: the epsilon lower bound at 95% confidence
# (split over 4 numbers of guesses) beside the accountant's epsilon at the same delta (1e-6),
# mean and spread over run seeds 0, 1, 2, for the canaries scored on the final model and on every
# intermediate model (--score rounds; the runs keep every round's model). Nothing tuned. Needs
# `apt-get install dataset-fashion-mnist`; a few minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/fedkit
OUT=${OUT:-runs/audit}
DATA=docs/data/audit
CFG=configs/papers/audit_dp_fedavg_fmnist.toml
mkdir -p "$OUT" "$DATA"
for seed in 0 1 2; do
  for z in 3.0 1.0 0.3 0.1 null; do
    dir="$OUT/s$seed-z$z"
    if [ "$z" = null ]; then sets=(--set pipeline.0.norm=0.0); else sets=(--set "pipeline.1.noise_multiplier=$z"); fi
    [ -f "$dir/checkpoint.bin" ] || "$BIN" run "$CFG" --set seed="$seed" "${sets[@]}" \
      --set 'output.keep_models="every:1"' --out "$dir" -q >/dev/null
    [ -f "$dir/attack-audit/report.json" ] || "$BIN" attack audit --run "$dir" >/dev/null
    [ -f "$dir/attack-audit-rounds/report.json" ] || "$BIN" attack audit --run "$dir" --score rounds \
      --out "$dir/attack-audit-rounds" >/dev/null
  done
done
python3 - "$OUT" "$DATA" <<'PY'
import json, statistics, sys
out, data = sys.argv[1], sys.argv[2]
def ms(v):
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"
table = ["| noise multiplier z | accountant epsilon | audit lower bound (95%), final model | correct of m guesses | bound, every round's model | correct of m |",
         "|---|---|---|---|---|---|"]
summary = []
for z in ("3.0", "1.0", "0.3", "0.1", "null"):
    reps = [json.load(open(f"{out}/s{s}-z{z}/attack-audit/report.json")) for s in (0, 1, 2)]
    rounds = [json.load(open(f"{out}/s{s}-z{z}/attack-audit-rounds/report.json")) for s in (0, 1, 2)]
    summary.append({"z": z, "runs": reps, "runs_scored_every_round": rounds})
    full = [next(g for g in r["guesses"] if g["k"] == r["canaries"]) for r in reps]
    full_r = [next(g for g in r["guesses"] if g["k"] == r["canaries"]) for r in rounds]
    label = "1.0, canaries send nothing" if z == "null" else z
    table.append(f"| {label} | {ms([r['accountant_epsilon'] for r in reps])} | {ms([r['epsilon_lower_bound'] for r in reps])} | "
                 f"{statistics.mean(g['correct'] for g in full):.0f} of {full[0]['guesses']} | "
                 f"{ms([r['epsilon_lower_bound'] for r in rounds])} | {statistics.mean(g['correct'] for g in full_r):.0f} of {full_r[0]['guesses']} |")
json.dump(summary, open(f"{data}/summary.json", "w"), indent=1)
open(f"{data}/table.md", "w").write("\n".join(table) + "\n")
print("\n".join(table))
PY

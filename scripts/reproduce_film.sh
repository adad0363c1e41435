#!/usr/bin/env bash
# Reproduces docs/results.md "FILM (issue 15)": fedkit attack film on the one-step updates of
# configs/papers/film_fortunes.toml (the transformer language model on Debian's fortune files).
#
# Metrics, chosen before the runs: the bag of words' precision and recall against the batch's
# input tokens, and ROUGE-1/2/L F1 of the best beam against the batch's closest sequence, over
# clients 0-4 of each run, mean and spread over run seeds 0, 1, 2. Settings: batch size B in
# {1, 4, 16} windows of 32 tokens, from an untrained model and from one trained centrally for 4
# epochs (`fedkit train`, whose training data includes the clients' windows: the memorisation
# the paper exploits). Beam width 16 and no repeated bigrams, fixed before the runs; nothing tuned.
# Needs `apt-get install fortunes` and `cargo build --release`; ~15 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/fedkit
OUT=${OUT:-runs/film}
DATA=docs/data/film
CFG=configs/papers/film_fortunes.toml
mkdir -p "$OUT" "$DATA"

echo "the trained language model: 4 central epochs" >&2
[ -f "$OUT/pretrain/resolved.toml" ] ||
  "$BIN" train configs/papers/transformer_fortunes.toml --set rounds=4 --out "$OUT/pretrain" -q >/dev/null

for seed in 0 1 2; do
  for b in 1 4 16; do
    for start in untrained trained; do
      dir="$OUT/s$seed-b$b-$start"
      sets=(--set seed="$seed" --set data.subsample="$(python3 -c "print($b / 34.5)")")
      [ "$start" = trained ] && sets+=(--set init_from="\"$OUT/pretrain\"")
      [ -f "$dir/resolved.toml" ] || "$BIN" run "$CFG" "${sets[@]}" --out "$dir" -q >/dev/null
      for c in 0 1 2 3 4; do
        [ -f "$dir/attack-c$c/report.json" ] ||
          "$BIN" attack film --run "$dir" --round 1 --client "$c" --out "$dir/attack-c$c" >/dev/null
      done
    done
  done
done

python3 - "$OUT" "$DATA" <<'EOF'
import glob, json, statistics, sys
out, data = sys.argv[1], sys.argv[2]
def ms(v):
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.3f}"
keys = ["bag_precision", "bag_recall", "best_rouge1", "best_rouge2", "best_rougeL"]
table = ["| B | model | bag precision | bag recall | ROUGE-1 | ROUGE-2 | ROUGE-L |", "|---|---|---|---|---|---|---|"]
summary = {"beam": 16, "rows": []}
for b in (1, 4, 16):
    for start in ("untrained", "trained"):
        per_seed = []
        for seed in (0, 1, 2):
            reps = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/s{seed}-b{b}-{start}/attack-c*/report.json"))]
            if reps:
                per_seed.append({"seed": seed, **{k: statistics.mean(r[k] for r in reps) for k in keys},
                                 "attacks": [{k: r[k] for k in ["client", "sequences", "bag_size"] + keys} for r in reps]})
        if not per_seed:
            continue
        summary["rows"].append({"batch": b, "model": start, "per_seed": per_seed})
        table.append(f"| {b} | {start} | " + " | ".join(ms([p[k] for p in per_seed]) for k in keys) + " |")
    example = f"{out}/s0-b{b}-trained/attack-c0/report.md"
    if glob.glob(example):
        open(f"{data}/example-b{b}-trained.md", "w").write(open(example).read())
json.dump(summary, open(f"{data}/summary.json", "w"), indent=1)
open(f"{data}/table.md", "w").write("\n".join(table) + "\n")
print("\n".join(table))
EOF

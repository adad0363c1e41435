#!/usr/bin/env bash
# Reproduces docs/results.md "Attacking the InstaHide encodings (issue 15)": Carlini et al.'s
# attack, scaled to 2 cores (crates/fedkit-methods/src/privacy_attacks/instahide_attack.rs), on
# the encodings of client 0's first 50 Fashion-MNIST images in configs/papers/instahide_fmnist.toml,
# 20 epochs of encodings (1000), for Mixup and InstaHide with k = 2 and 4 and the sign mask alone.
# The attack reads only the run's configuration and the client's images (not its models), so each
# run trains one round. Metric, chosen before the runs: the mean SSIM of the 50 images against
# their reconstructions (and the share with SSIM >= 0.5), mean and spread over run seeds 0, 1, 2;
# the budget is the attack's default (2 restarts of 30 alternations), not tuned on these runs.
# Needs `apt-get install dataset-fashion-mnist`; about 5 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/fedkit
OUT=${OUT:-runs/instahide_attack}
DATA=docs/data/instahide_attack
CFG=configs/papers/instahide_fmnist.toml
mkdir -p "$OUT" "$DATA"
for seed in 0 1 2; do
  for variant in mixup2 instahide2 mask1 mixup4 instahide4; do
    dir="$OUT/s$seed-$variant"
    case $variant in
      mixup2) sets=(--set pipeline.0.k=2 --set pipeline.0.mask=false) ;;
      instahide2) sets=(--set pipeline.0.k=2) ;;
      mask1) sets=(--set pipeline.0.k=1 --set pipeline.0.upper=1.0) ;;
      mixup4) sets=(--set pipeline.0.mask=false) ;;
      instahide4) sets=() ;;
    esac
    [ -f "$dir/resolved.toml" ] || "$BIN" run "$CFG" --set seed="$seed" --set rounds=1 "${sets[@]}" --out "$dir" -q >/dev/null
    "$BIN" attack instahide --run "$dir" --client 0 --images 50 --epochs 20 --out "$dir/attack" >/dev/null
    mkdir -p "$DATA/s$seed-$variant"
    cp "$dir/resolved.toml" "$dir/attack/report.json" "$dir/attack/report.md" "$DATA/s$seed-$variant/"
  done
done
cp "$OUT/s0-instahide2/attack/reconstructions.png" "$DATA/s0-instahide2/"
python3 - "$DATA" <<'PY'
import json, statistics, sys
data = sys.argv[1]
def ms(v):
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"
rows = (("mixup2", "Mixup, k = 2"), ("instahide2", "InstaHide, k = 2"), ("mask1", "sign mask only, k = 1"),
        ("mixup4", "Mixup, k = 4"), ("instahide4", "InstaHide, k = 4"))
table = ["| encoding | key-less SSIM | key-less SSIM >= 0.5 | mixing right | known-mixing SSIM | mean-image SSIM |",
         "|---|---|---|---|---|---|"]
summary = []
for variant, label in rows:
    reps = [json.load(open(f"{data}/s{s}-{variant}/report.json")) for s in (0, 1, 2)]
    get = lambda name, key: [next(r[key] for r in rep["rows"] if r["attack"] == name) for rep in reps]
    has = all(any(r["attack"] == "key-less" for r in rep["rows"]) for rep in reps)
    row = {"variant": variant, "known_ssim": get("known mixing", "ssim"), "mean_image_ssim": get("mean image", "ssim")}
    if has:
        row.update(keyless_ssim=get("key-less", "ssim"), keyless_share=get("key-less", "recovered_share"),
                   mixing_right=get("key-less", "mixing_right"))
    summary.append(row)
    kl = (ms(row["keyless_ssim"]), ms(row["keyless_share"]), ms(row["mixing_right"])) if has else ("not built (k > 2)", "-", "-")
    table.append(f"| {label} | {kl[0]} | {kl[1]} | {kl[2]} | {ms(row['known_ssim'])} | {ms(row['mean_image_ssim'])} |")
json.dump(summary, open(f"{data}/summary.json", "w"), indent=1)
open(f"{data}/table.md", "w").write("\n".join(table) + "\n")
print("\n".join(table))
PY

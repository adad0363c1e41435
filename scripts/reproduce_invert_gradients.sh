#!/usr/bin/env bash
# Reproduces docs/results.md "Inverting gradients (issue 15)": fedkit attack invert on the FedSGD
# updates of configs/papers/invert_gradients_fmnist.toml (Fashion-MNIST, lenet).
#
# The metric, chosen before the runs: mean PSNR of the reconstructions minus the mean PSNR of the
# training set's mean image, over clients 0-4 of each run, mean and spread over run seeds 0, 1, 2,
# after a fixed budget of IT iterations (default 10000) per restart. The TV weight alpha and the
# step size are chosen on validation clients 10-14 of seed 0 (batch 1, 4 restarts), never on the
# reported clients.
#
# Settings: batch size B in {1, 4} (4 restarts), B = 16 (clients 0-2) and B = 64 (client 0), one
# restart each, for time; at B = 1 also a FedAvg-trained model, five full-batch local epochs
# instead of one step (the naive attack), and local DP noise (dp_fixed_clip, mode = "local",
# C = 1) of multiplier z (clients 0-2).
# Needs `apt-get install dataset-fashion-mnist` and `cargo build --release`; about an hour on 2 cores (one attack at a time).
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/fedkit
OUT=${OUT:-runs/invert_gradients}
DATA=docs/data/invert_gradients
CFG=configs/papers/invert_gradients_fmnist.toml
IT=${IT:-10000}
mkdir -p "$OUT" "$DATA"

# run NAME SEED B [--set ...]: one round of the config with B samples per client.
run() {
  local name=$1 seed=$2 b=$3
  shift 3
  [ -f "$OUT/$name/resolved.toml" ] && return
  "$BIN" run "$CFG" --set seed="$seed" --set data.subsample="$(python3 -c "print($b / 120)")" \
    --set 'output.keep_clients=[0,1,2,3,4,10,11,12,13,14]' "$@" --out "$OUT/$name" -q >/dev/null
}
# attack RUN CLIENT TV [flags]: invert that client's round-1 update into RUN/attack-c<C>-tv<TV>,
# or into the folder of an --out among the flags.
attack() {
  local dir="$OUT/$1/attack-c$2-tv$3" i j out=()
  for ((i = 4; i <= $#; i++)); do [ "${!i}" = --out ] && { j=$((i + 1)); dir=${!j}; }; done
  [ -f "$dir/report.json" ] && return
  [[ " ${*:4} " == *" --out "* ]] || out=(--out "$dir")
  "$BIN" attack invert --run "$OUT/$1" --round 1 --client "$2" --iterations "$IT" --tv "$3" "${out[@]}" "${@:4}" >/dev/null
}

echo "validation: alpha and the step size on clients 10-14 (seed 0, B = 1, 4 restarts)" >&2
run val 0 1
for lr in 0.1 0.03; do
  for tv in 1e-3 3e-3; do
    for c in 10 11 12 13 14; do attack val "$c" "$tv" --lr "$lr" --restarts 4 --out "$OUT/val/attack-c$c-tv$tv-lr$lr"; done
  done
done
read -r TV LR < <(python3 - "$OUT" <<'EOF'
import glob, json, sys
gain = {}
for f in glob.glob(f"{sys.argv[1]}/val/attack-c*-tv*-lr*/report.json"):
    r = json.load(open(f))
    gain.setdefault((r["tv"], r["lr"]), []).append(r["mean_psnr"] - r["baseline_psnr"])
tv, lr = max(gain, key=lambda k: sum(gain[k]) / len(gain[k]))
print(tv, lr)
EOF
)
echo "chosen alpha = $TV, lr = $LR" >&2

echo "a FedAvg-trained lenet to start from (10 clients, 5 rounds)" >&2
[ -f "$OUT/pretrain/resolved.toml" ] || "$BIN" run "$CFG" --set rounds=5 --set data.clients=10 --set data.subsample=1.0 \
  --set client.batch_size=32 --set sampling.per_round=10 --set output.keep_models='"none"' --set 'output.keep_clients=[]' \
  --out "$OUT/pretrain" -q >/dev/null

for seed in 0 1 2; do
  echo "seed $seed" >&2
  for b in 1 4 16 64; do
    run "s$seed-b$b" "$seed" "$b"
    case $b in
      1 | 4) for c in 0 1 2 3 4; do attack "s$seed-b$b" "$c" "$TV" --lr "$LR" --restarts 4; done ;;
      16) for c in 0 1 2; do attack "s$seed-b$b" "$c" "$TV" --lr "$LR" --restarts 1; done ;;
      64) attack "s$seed-b$b" 0 "$TV" --lr "$LR" --restarts 1 ;;
    esac
  done
  run "s$seed-trained" "$seed" 1 --set init_from="\"$OUT/pretrain\""
  run "s$seed-epochs5" "$seed" 1 --set client.epochs=5
  for name in trained epochs5; do
    for c in 0 1 2 3 4; do attack "s$seed-$name" "$c" "$TV" --lr "$LR" --restarts 4; done
  done
  # Naive against unrolled on the five-epoch updates, one restart each (the unrolled attack
  # costs about eight times as much per iteration), clients 0-2.
  for c in 0 1 2; do
    attack "s$seed-epochs5" "$c" "$TV" --lr "$LR" --restarts 1 --out "$OUT/s$seed-epochs5/attack-c$c-naive1"
    attack "s$seed-epochs5" "$c" "$TV" --lr "$LR" --restarts 1 --unrolled --out "$OUT/s$seed-epochs5/attack-c$c-unrolled1"
  done
  for z in 0.001 0.01 0.1; do
    run "s$seed-dp$z" "$seed" 1 --set "pipeline=[{use=\"dp_fixed_clip\", mode=\"local\", clip=1.0, noise_multiplier=$z}]"
    for c in 0 1 2; do attack "s$seed-dp$z" "$c" "$TV" --lr "$LR" --restarts 4; done
  done
done

python3 - "$OUT" "$DATA" "$TV" "$IT" "$LR" <<'EOF'
import glob, json, os, shutil, statistics, sys
out, data, tv, it, lr = sys.argv[1:6]
rows = [("B = 1, untrained, FedSGD", "b1"), ("B = 4", "b4"), ("B = 16 (clients 0-2, 1 restart)", "b16"), ("B = 64 (client 0, 1 restart)", "b64"),
        ("B = 1, FedAvg-trained model", "trained"), ("B = 1, 5 local epochs (naive)", "epochs5"),
        ("B = 1, 5 local epochs, naive, 1 restart (clients 0-2)", "epochs5:naive1"),
        ("B = 1, 5 local epochs, unrolled, 1 restart (clients 0-2)", "epochs5:unrolled1"),
        ("B = 1, local DP z = 0.001 (clients 0-2)", "dp0.001"), ("B = 1, local DP z = 0.01", "dp0.01"), ("B = 1, local DP z = 0.1", "dp0.1")]
def ms(v):
    return f"{statistics.mean(v):.2f} ± {statistics.stdev(v) if len(v) > 1 else 0.0:.2f}"
summary = {"tv": float(tv), "lr": float(lr), "iterations": int(it), "rows": []}
table = ["| setting | PSNR (dB) | mean-image PSNR (dB) | gain (dB) | SSIM | labels right | iterations/s |", "|---|---|---|---|---|---|---|"]
for label, key in rows:
    per_seed = []
    for seed in (0, 1, 2):
        run, _, tag = key.partition(":")
        files = sorted(glob.glob(f"{out}/s{seed}-{run}/attack-c*-{tag or 'tv' + tv}/report.json"))
        reps = [json.load(open(f)) for f in files]
        if not reps:
            continue
        m = lambda k: statistics.mean(r[k] for r in reps)
        per_seed.append({"seed": seed, "psnr": m("mean_psnr"), "baseline": m("baseline_psnr"), "ssim": m("mean_ssim"),
                         "labels": m("label_accuracy"), "its": m("iterations_per_second"),
                         "attacks": [{k: r[k] for k in ("client", "mean_psnr", "baseline_psnr", "mean_ssim", "label_accuracy",
                                                        "matching_loss", "seconds")} for r in reps]})
        metrics = [json.loads(l) for l in open(f"{out}/s{seed}-{run}/metrics.jsonl")]
        eps = [m["epsilon"] for m in metrics if m.get("epsilon") is not None]
        if eps:
            per_seed[-1]["epsilon"] = eps[-1]
        if seed == 0:
            shutil.copy(os.path.join(os.path.dirname(files[0]), "reconstructions.png"), f"{data}/{key.replace(':', '-')}.png")
    if not per_seed:
        continue
    col = lambda k: [p[k] for p in per_seed]
    gain = [p["psnr"] - p["baseline"] for p in per_seed]
    summary["rows"].append({"setting": label, "key": key, "per_seed": per_seed})
    table.append(f"| {label} | {ms(col('psnr'))} | {ms(col('baseline'))} | {ms(gain)} | {ms(col('ssim'))} | "
                 f"{100 * statistics.mean(col('labels')):.0f}% | {statistics.mean(col('its')):.0f} |")
json.dump(summary, open(f"{data}/summary.json", "w"), indent=1)
open(f"{data}/table.md", "w").write("\n".join(table) + "\n")
print("\n".join(table))
EOF

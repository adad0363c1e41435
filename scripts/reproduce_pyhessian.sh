#!/usr/bin/env bash
# Reproduces docs/results.md "Loss curvature: PyHessian on FedAvg and FedSAM (issue 16)":
# configs/papers/fedsam_flatness.toml (Fashion-MNIST, 20 clients by Dirichlet(0.3) labels, the
# mlp 784-200-200-10, 30 rounds) with plain local SGD and with SAM (rho = 0.05), run seeds 0,
# 1, 2; `fedkit analyze hessian` then measures each final global model on the same 1000
# training samples: the top 3 Hessian eigenvalues, the trace (Hutchinson) and the spectral
# density (50 Lanczos steps). Metrics, chosen before the runs: the top eigenvalue and the trace,
# mean and spread over the seeds, beside the final test accuracy. Nothing tuned (SAM's rho is
# the config's). Needs `apt-get install dataset-fashion-mnist`; ~10 minutes on 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=target/release/fedkit
OUT=${OUT:-runs/pyhessian}
DATA=docs/data/pyhessian
CFG=configs/papers/fedsam_flatness.toml
mkdir -p "$OUT" "$DATA"
# plain local SGD: the same config without its [local] SAM table
sed -e 's/^use = "sam"$/use = "plain"/' -e '/^rho = /d' "$CFG" > "$OUT/fedavg_plain.toml"
for local in plain sam; do
  cfg=$CFG
  [ "$local" = plain ] && cfg="$OUT/fedavg_plain.toml"
  runs=()
  for seed in 0 1 2; do
    dir="$OUT/$local-s$seed"
    [ -f "$dir/checkpoint.bin" ] || "$BIN" run "$cfg" --set seed="$seed" \
      --set 'output.keep_models="last"' --set eval.every=30 --out "$dir" -q >/dev/null
    mkdir -p "$DATA/$local-s$seed"
    cp "$dir/resolved.toml" "$DATA/$local-s$seed/"
    grep '"test_acc"' "$dir/metrics.jsonl" | tail -1 > "$DATA/$local-s$seed/last_eval.jsonl"
    runs+=(--run "$dir")
  done
  "$BIN" analyze hessian "${runs[@]}" --out "$OUT/hessian-$local" 2>/dev/null
  mkdir -p "$DATA/hessian-$local"
  cp "$OUT/hessian-$local/report.json" "$OUT/hessian-$local/report.md" "$DATA/hessian-$local/"
done
"$BIN" analyze hessian --run "$OUT/plain-s0" --run "$OUT/sam-s0" --out "$OUT/hessian-s0" 2>/dev/null
cp "$OUT/hessian-s0/density.png" "$DATA/density-s0.png"
python3 - "$DATA" <<'PY'
import json, statistics, sys
data = sys.argv[1]
def ms(v):
    return f"{statistics.mean(v):.3f} ± {statistics.stdev(v):.3f}"
for local in ("plain", "sam"):
    r = json.load(open(f"{data}/hessian-{local}/report.json"))
    top = [m["top_eigenvalues"][0] for m in r["models"]]
    tr = [m["trace"] for m in r["models"]]
    acc = [json.loads(open(f"{data}/{local}-s{s}/last_eval.jsonl").read())["test_acc"] for s in (0, 1, 2)]
    print(f"| {local} | {ms(acc)} | {ms(top)} | {ms(tr)} |")
PY

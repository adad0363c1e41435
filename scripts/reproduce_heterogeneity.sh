#!/usr/bin/env bash
# The heterogeneity family's reproductions (docs/results.md, "Heterogeneous data and imbalance"):
# long-tailed labels (logit adjustment, LDAM-DRW against cross-entropy), federated denoising-
# autoencoder pre-training with few labels, and the memorisation of noisy labels. Every tuned
# number comes from `fedkit sweep` (the same learning-rate grid for every method, selected on a
# validation split held out of the clients' data, SEEDS seeds); the test columns are reported,
# never used to select. Rerunning resumes. ONLY=longtail|dae|memorization runs one part.
# About 30 minutes on 2 cores with 3 seeds (needs `apt-get install dataset-fashion-mnist`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/heterogeneity}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
BIN=$(realpath "$BIN")
P=configs/papers
want() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }
sweep() { # name config grid args...
  local name=$1 cfg=$2 grid=$3; shift 3
  echo "== $name" >&2
  "$BIN" sweep "$P/$cfg.toml" --grid "$grid" --out "$OUT/$name" --seeds "$SEEDS" -q "$@" > /dev/null
  echo "### $name"; echo; cat "$OUT/$name/sweep.md"; echo
}

if want longtail; then
  # Imbalance ratio 100; selected by the balanced validation accuracy (mean of the last 5
  # evaluations); reported: the balanced test accuracy.
  lt=(--select validation_balanced --report test_acc_balanced --last 5)
  grid="client.lr=0.02,0.05,0.1,0.2,0.4"
  sweep longtail_ce long_tail_fmnist "$grid" "${lt[@]}" --set loss.use=cross_entropy
  sweep longtail_focal long_tail_fmnist "$grid" "${lt[@]}" --set loss.use=focal
  sweep longtail_la long_tail_fmnist "$grid" "${lt[@]}" --set loss.use=logit_adjusted
  sweep longtail_la_posthoc long_tail_fmnist "$grid" "${lt[@]}" --set loss.use=logit_adjusted --set loss.mode=post_hoc
  sweep longtail_ldam long_tail_fmnist "$grid" "${lt[@]}" --set loss.use=ldam
  sweep longtail_ldam_drw long_tail_fmnist "$grid" "${lt[@]}" --set loss.use=ldam --set loss.drw_round=40
fi

if want dae; then
  # One federated pre-training run (all 60k training images, labels unused), then fine-tuning on
  # 0.5% of the labels (300; 20% of them held out for validation), from it or from scratch.
  pre="$OUT/dae_pretrain"
  if [ ! -f "$pre/checkpoint.bin" ] || ! grep -q '"round":40' "$pre/metrics.jsonl"; then
    echo "== dae_pretrain" >&2
    rm -rf "$pre"
    "$BIN" run "$P/dae_pretrain.toml" --out "$pre" -q --set rounds=40 --set client.lr=0.5 > /dev/null
  fi
  ft=(--last 5 --set data.subsample=0.005 --set eval.validation=0.2)
  grid="client.lr=0.03,0.1,0.3,1.0,3.0,10.0"
  sweep dae_pretrained dae_finetune "$grid" "${ft[@]}" --set "init_from=\"$(realpath "$pre")\""
  sweep dae_scratch dae_finetune "$grid" "${ft[@]}"
  sweep dae_probe_pretrained dae_finetune "$grid" "${ft[@]}" --set "init_from=\"$(realpath "$pre")\"" --set model.freeze_encoder=true
  sweep dae_probe_scratch dae_finetune "$grid" "${ft[@]}" --set model.freeze_encoder=true
fi

if want memorization; then
  echo "== memorization" >&2
  "$BIN" compare "$P/memorization_fmnist.toml" --out "$OUT/memorization" --seeds "$SEEDS" -q --at 4,20,60 \
    --extra train_acc_clean,noisy_memorized,noisy_true,critical_ratio \
    --variant "clean=data.label_noise.fraction=0" --variant "noisy40=data.label_noise.fraction=0.4" \
    --variant "random=data.label_noise.fraction=1.0;data.label_noise.kind=random" \
    --variant "noisy40_wd=data.label_noise.fraction=0.4;client.weight_decay=0.001" > /dev/null
  echo "### memorization"; echo; cat "$OUT/memorization/comparison.md"; echo
fi

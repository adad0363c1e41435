#!/usr/bin/env bash
# The optimisation family's reproductions (docs/results.md, "Federated optimisation family"):
# one `fedkit compare` per paper effect, each writing OUT/<name>/comparison.md. Rerunning skips
# finished comparisons and resumes interrupted ones. ONLY=name runs one of them.
# About 45 minutes in all on 2 cores (Fashion-MNIST ones need `apt-get install dataset-fashion-mnist`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/optimisation}
BIN=${BIN:-target/release/fedkit}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
BIN=$(realpath "$BIN")
P=configs/papers

cmp() { # name config args...
  local name=$1 cfg=$2; shift 2
  if [ -n "${ONLY:-}" ] && [ "$ONLY" != "$name" ]; then return; fi
  echo "== $name" >&2
  "$BIN" compare "$P/$cfg.toml" --out "$OUT/$name" -q "$@" > /dev/null
  echo "### $name"; echo; cat "$OUT/$name/comparison.md"; echo
}

cmp fednova_inconsistency fednova_objective_inconsistency --algorithms fedavg,fednova --at 25,50,100
cmp fednova_equal_epochs fednova_objective_inconsistency --algorithms fedavg,fednova --at 25,50,100 \
  --set sampling.drop_percent=0
cmp afl afl_worst_client --algorithms fedavg,afl,drfa --at 50,100,150 \
  --variant "afl_eg=algorithm.use=afl;algorithm.solver=extragradient" \
  --variant "afl_fast=algorithm.use=afl;algorithm.lambda_lr=0.05"
cmp hsgd hsgd_sandwich --at 25,50,100,150 --variant local_sgd_I=algorithm.groups=1 \
  --variant hsgd_fixed=algorithm.groups=3 --variant "hsgd_random=algorithm.groups=3;algorithm.grouping=random" \
  --variant local_sgd_G=algorithm.groups=30
cmp large_cohort large_cohort --at 10,20,40 --variant "m10=sampling.per_round=10" \
  --variant "m50=sampling.per_round=50" --variant "m200=sampling.per_round=200" \
  --variant "m1000=sampling.per_round=1000" --variant "m1000_none=sampling.per_round=1000;algorithm.lr_scaling=none" \
  --variant "m1000_linear=sampling.per_round=1000;algorithm.lr_scaling=linear"
cmp composite_l1 composite_l1 --algorithms feddualavg,fedmid,fedavg --at 10,20,30 \
  --variant "fedavg_l2=algorithm.use=fedavg;client.weight_decay=0.001"
cmp fedopt fedopt_comparison --algorithms fedavg,fedavgm,fedadam,fedyogi,fedadagrad --at 10,20,30
sweep=()
for a in fedadam fedyogi fedadagrad; do
  for lr in 0.003 0.03 0.1 0.3; do sweep+=(--variant "${a}_$lr=algorithm.use=$a;algorithm.server_lr=$lr"); done
done
for lr in 0.3 0.5; do sweep+=(--variant "fedavgm_$lr=algorithm.use=fedavgm;algorithm.server_lr=$lr"); done
sweep+=(--variant "fedavgm_1_m0.5=algorithm.use=fedavgm;algorithm.momentum=0.5")
cmp fedopt_sweep fedopt_comparison --algorithms fedavg --at 10,20,30 --target 0.7 "${sweep[@]}"
if [ -z "${ONLY:-}" ] || [ "$ONLY" = fedopt_sweep ]; then
  (cd "$OUT/fedopt_sweep" && "$BIN" report fedavg fedadam_0.03 fedyogi_0.03 fedadagrad_0.3 fedavgm_0.5 --last 10 --target 0.7)
fi
cmp fedbn fedbn_feature_shift --algorithms fedavg,fedbn --at 5,10,20
cmp fedbn_noise fedbn_feature_shift --algorithms fedavg,fedbn --at 5,10,20 \
  --set 'data.partition={ use = "noise_feature", sigma = 1.0 }'
cmp fedsam fedsam_flatness --at 10,20,30 --set eval.hessian_samples=2000 \
  --variant "plain=local.use=plain" --variant "sam=local.use=sam;local.rho=0.05" \
  --variant "wrm=local.use=wrm;local.steps=5"
cmp fednar fednar_weight_decay --at 10,20,30 \
  --variant "avg=algorithm.use=fedavg;local.use=plain" \
  --variant "avg_nar=algorithm.use=fedavg;local.use=fednar;local.max_norm=1;local.decay=0.99" \
  --variant "prox=algorithm.use=fedprox;local.use=plain" \
  --variant "prox_nar=algorithm.use=fedprox;local.use=fednar;local.max_norm=1;local.decay=0.99"
cmp feddyn feddyn_dirichlet --algorithms fedavg,feddyn --at 10,20,30 \
  --variant "feddyn_a0.1=algorithm.use=feddyn;algorithm.alpha=0.1"
cmp fedlaw fedlaw_noniid --algorithms fedavg --at 10,20,30 \
  --variant "fedlaw_p200=algorithm.use=fedlaw;algorithm.proxy_samples=200" \
  --variant "fedlaw_p1000=algorithm.use=fedlaw;algorithm.proxy_samples=1000" \
  --variant "fedlaw_e5=algorithm.use=fedlaw;algorithm.server_epochs=5" \
  --variant "fedlaw_gamma_only=algorithm.use=fedlaw;algorithm.learn_lambda=false"
for part in iid dir0.5 c1 c2 c3; do
  case $part in
    iid) p=(--set data.partition.use=iid) ;;
    dir0.5) p=(--set data.partition.use=dirichlet_label --set data.partition.alpha=0.5) ;;
    c*) p=(--set data.partition.use=label_quantity --set data.partition.k=${part#c}) ;;
  esac
  cmp "niid_$part" niid_bench_fmnist_mlp --algorithms fedavg,scaffold,fednova --at 5,10,20 \
    --set rounds=${NIID_ROUNDS:-20} "${p[@]}" --variant "fedprox=algorithm.use=fedprox;algorithm.mu=0.01"
done

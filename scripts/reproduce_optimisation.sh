#!/usr/bin/env bash
# The optimisation family's reproductions (docs/results.md, "Federated optimisation family"):
# one `fedkit compare` (or `fedkit sweep` for tuned baselines) per paper effect, SEEDS seeds each
# (default 3: mean ± std in every cell), writing OUT/<name>/comparison.md (or sweep.md).
# Rerunning skips finished runs and resumes interrupted ones. ONLY=name runs one of them.
# About 2 hours on 2 cores with 3 seeds (Fashion-MNIST needs `apt-get install dataset-fashion-mnist`).
set -euo pipefail
cd "$(dirname "$0")/.."
OUT=${OUT:-runs/optimisation}
BIN=${BIN:-target/release/fedkit}
SEEDS=${SEEDS:-3}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
BIN=$(realpath "$BIN")
P=configs/papers

want() { [ -z "${ONLY:-}" ] || [ "$ONLY" = "$1" ]; }
cmp() { # name config args...
  local name=$1 cfg=$2; shift 2
  want "$name" || return 0
  echo "== $name" >&2
  "$BIN" compare "$P/$cfg.toml" --out "$OUT/$name" --seeds "$SEEDS" -q "$@" > /dev/null
  echo "### $name"; echo; cat "$OUT/$name/comparison.md"; echo
}
sweep() { # name config grid args...
  local name=$1 cfg=$2 grid=$3; shift 3
  want "$name" || return 0
  echo "== $name" >&2
  "$BIN" sweep "$P/$cfg.toml" --grid "$grid" --out "$OUT/$name" --seeds "$SEEDS" -q "$@" > /dev/null
  echo "### $name"; echo; cat "$OUT/$name/sweep.md"; echo
}
# The settings of a sweep's selected point, as compare's KEY=VALUE;KEY=VALUE.
best() { sed -n 's/^selected: [^ ]* (`\(.*\)`).*/\1/p' "$OUT/$1/sweep.md"; }

# SCAFFOLD on unequal clients (the divergence fixed in issue 18): train loss and accuracy.
cmp scaffold_unequal scaffold_unequal_clients --algorithms fedavg,scaffold --extra train_loss --at 10,20,40 \
  --variant "scaffold_raw=algorithm.use=scaffold;algorithm.normalize=none" \
  --variant "scaffold_raw_uniform=algorithm.use=scaffold;algorithm.normalize=none;aggregator.weighted=false"
cmp fednova_inconsistency fednova_objective_inconsistency --algorithms fedavg,fednova --at 25,50,100
cmp fednova_equal_epochs fednova_objective_inconsistency --algorithms fedavg,fednova --at 25,50,100 \
  --set sampling.drop_percent=0
cmp afl afl_worst_client --algorithms fedavg,afl,drfa --at 50,100,150 \
  --variant "afl_eg=algorithm.use=afl;algorithm.solver=extragradient" \
  --variant "afl_fast=algorithm.use=afl;algorithm.lambda_lr=0.05"
# The same on Fashion-MNIST, where every client's own test split has 857 samples or more.
cmp afl_fmnist afl_worst_client_fmnist --algorithms fedavg,afl,drfa --at 50,100,150
cmp hsgd hsgd_sandwich --at 25,50,100,150 --variant local_sgd_I=algorithm.groups=1 \
  --variant hsgd_fixed=algorithm.groups=3 --variant "hsgd_random=algorithm.groups=3;algorithm.grouping=random" \
  --variant local_sgd_G=algorithm.groups=30
lc=()
for m in 10 50 200 1000; do
  for s in none sqrt linear; do lc+=(--variant "m${m}_$s=sampling.per_round=$m;algorithm.lr_scaling=$s"); done
done
cmp large_cohort large_cohort --at 10,20,40 "${lc[@]}"
cmp composite_l1 composite_l1 --algorithms feddualavg,fedmid,fedavg --at 10,20,30 \
  --variant "fedavg_l2=algorithm.use=fedavg;client.weight_decay=0.001"
# FedOpt: every method gets the same budget, 4 values of its learning rate (FedAvg: the client
# lr; the server optimisers: the server lr), selected on a validation split by the mean validation
# accuracy of the last 10 evaluations; the test columns of the selected points are the result.
sweep fedopt_fedavg fedopt_comparison "client.lr=0.03,0.1,0.3,1.0" --last 10
sweep fedopt_fedadam fedopt_comparison "algorithm.server_lr=0.003,0.01,0.03,0.1" --last 10 --set algorithm.use=fedadam
sweep fedopt_fedyogi fedopt_comparison "algorithm.server_lr=0.003,0.01,0.03,0.1" --last 10 --set algorithm.use=fedyogi
sweep fedopt_fedadagrad fedopt_comparison "algorithm.server_lr=0.03,0.1,0.3,1.0" --last 10 --set algorithm.use=fedadagrad
sweep fedopt_fedavgm fedopt_comparison "algorithm.server_lr=0.03,0.1,0.3,1.0" --last 10 --set algorithm.use=fedavgm
if want fedopt; then
  v=(--variant "fedavg=$(best fedopt_fedavg)")
  for a in fedadam fedyogi fedadagrad fedavgm; do v+=(--variant "$a=algorithm.use=$a;$(best fedopt_$a)"); done
  ONLY=fedopt cmp fedopt fedopt_comparison --at 10,20,30 --last 10 --target 0.7 --set eval.validation=0.1 "${v[@]}"
fi
cmp fedbn fedbn_feature_shift --algorithms fedavg,fedbn --at 5,10,20
cmp fedbn_noise fedbn_feature_shift --algorithms fedavg,fedbn --at 5,10,20 \
  --set 'data.partition={ use = "noise_feature", sigma = 1.0 }'
cmp fedsam fedsam_flatness --at 10,20,30 --set eval.hessian_samples=2000 \
  --variant "plain=local.use=plain" --variant "sam=local.use=sam;local.rho=0.05" \
  --variant "wrm=local.use=wrm;local.steps=5"
# FedNAR: the authors' rule (clipping + the learning rate annealed by rho^t), and a control with
# the annealing but no clipping (a huge bound), to separate the two.
cmp fednar fednar_weight_decay --at 10,20,30 \
  --variant "avg=algorithm.use=fedavg;local.use=plain" \
  --variant "avg_nar=algorithm.use=fedavg;local.use=fednar;local.max_norm=1;local.decay=0.99" \
  --variant "avg_anneal_only=algorithm.use=fedavg;local.use=fednar;local.max_norm=1e9;local.decay=0.99" \
  --variant "prox=algorithm.use=fedprox;local.use=plain" \
  --variant "prox_nar=algorithm.use=fedprox;local.use=fednar;local.max_norm=1;local.decay=0.99"
cmp feddyn feddyn_dirichlet --algorithms fedavg,feddyn --at 10,20,30 \
  --variant "feddyn_a0.1=algorithm.use=feddyn;algorithm.alpha=0.1"
cmp fedlaw fedlaw_noniid --algorithms fedavg --at 10,20,30 \
  --variant "fedlaw_p200=algorithm.use=fedlaw;algorithm.proxy_samples=200" \
  --variant "fedlaw_p1000=algorithm.use=fedlaw;algorithm.proxy_samples=1000" \
  --variant "fedlaw_e5=algorithm.use=fedlaw;algorithm.server_epochs=5" \
  --variant "fedlaw_gamma_only=algorithm.use=fedlaw;algorithm.learn_lambda=false"
# The MLP-scale NIID-Bench grid (the 50-round lenet table is scripts/reproduce_niid_bench.sh); by
# default only #C=2, where the SCAFFOLD variants differ. NIID_PARTS="iid dir0.5 c1 c2 c3" runs all.
for part in ${NIID_PARTS:-c2}; do
  case $part in
    iid) p=(--set data.partition.use=iid) ;;
    dir0.5) p=(--set data.partition.use=dirichlet_label --set data.partition.alpha=0.5) ;;
    c*) p=(--set data.partition.use=label_quantity --set data.partition.k=${part#c}) ;;
  esac
  extra=()
  if [ "$part" = c2 ]; then
    # Which SCAFFOLD explains NIID-Bench's #C=2 failure: the raw sample-weighted deltas, and
    # NIID-Bench's code (the correction outside the momentum, divided by the plain step count).
    extra=(--variant "scaffold_raw=algorithm.use=scaffold;algorithm.normalize=none"
      --variant "scaffold_niid=algorithm.use=scaffold;algorithm.normalize=none;algorithm.correction=niid_bench")
  fi
  cmp "niid_$part" niid_bench_fmnist_mlp --algorithms fedavg,scaffold,fednova --at 5,10,20 \
    --set rounds=${NIID_ROUNDS:-20} "${p[@]}" --variant "fedprox=algorithm.use=fedprox;algorithm.mu=0.01" "${extra[@]}"
done

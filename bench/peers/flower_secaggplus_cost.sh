#!/usr/bin/env bash
# Flower's SecAgg+ client cost per round against fedkit's (issue 10, docs/performance.md):
# installs flwr (no torch) into a throwaway venv and times one client's four stages with
# flwr's own secaggplus_mod functions, for neighbourhoods of 9, 18, 24 and 30 on the mlp's
# 199,210 values. fedkit's side: cargo run --release -p fedkit-privacy --example secagg_cost
# 199210 secagg_plus 10,50,200,1000.
set -euo pipefail
cd "$(dirname "$0")"
venv=$(mktemp -d)
trap 'rm -rf "$venv"' EXIT
python3 -m venv "$venv"
"$venv/bin/pip" install -q "flwr==${FLWR_VERSION:-1.42.0}"
for k in 9 18 24 30; do
  "$venv/bin/python" flower_secaggplus_cost.py 199210 "$k"
done

#!/usr/bin/env bash
# The fedkit side of the peer benchmark, one round of each workload (CI runs this; the full
# side-by-side benchmark is bench/peers/run.py). Workloads needing Fashion-MNIST are skipped, with
# a note, when the dataset is not installed.
set -euo pipefail
cd "$(dirname "$0")/../.."
BIN=${BIN:-target/release/fedkit}
[ -x "$BIN" ] || cargo build --release -p fedkit-cli
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
python3 - "$tmp" <<'PY'
import sys, tomllib
w = tomllib.load(open("bench/peers/workloads.toml", "rb"))
for name, t in w.items():
    open(f"{sys.argv[1]}/{name}.toml", "w").write(t["config"])
PY
for cfg in "$tmp"/*.toml; do
  name=$(basename "$cfg" .toml)
  if grep -q fashion_mnist "$cfg" && [ ! -e /usr/share/datasets/fashion-mnist ]; then
    echo "$name: skipped (Fashion-MNIST not installed: apt-get install dataset-fashion-mnist)"
    continue
  fi
  echo "$name: one round"
  "$BIN" run "$cfg" --set rounds=1 --set eval.every=1 --out "$tmp/run-$name" -q
done

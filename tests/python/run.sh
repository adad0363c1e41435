#!/usr/bin/env bash
# fedkit's outputs read back by the Python packages users load them with (CI's Python suite, about
# a minute after the venv exists): the safetensors model export and [model] init (NumPy predictions
# equal fedkit's metrics, for logreg, mlp and, with Fashion-MNIST installed, lenet, cnn and resnet), the
# model store, and the TensorBoard event file (tensorboard's EventAccumulator). The venv
# (tests/python/.venv: numpy, safetensors, tensorboard; no torch) is created on first use.
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
root="$here/../.."
python=$("$here/venv.sh")
venv="$(dirname "$(dirname "$python")")"
py="$python $here/check_outputs.py"
fedkit="$root/target/release/fedkit"
[ -x "$fedkit" ] || (cd "$root" && cargo build --release --quiet)
out=$(mktemp -d)
trap 'rm -rf "$out"' EXIT
smoke="$root/configs/smoke/synthetic.toml"

# One run per model: export its final model and check NumPy's predictions against the metrics.
check_model() { # label config sets...
    local label=$1 config=$2
    shift 2
    local sets=()
    for s in "$@"; do sets+=(--set "$s"); done
    "$fedkit" run "$config" --out "$out/$label" --quiet "${sets[@]}" \
        --set 'output.keep_models="every:2"' --set 'output.keep_clients=[0,1,2,3]' --set output.tensorboard=true
    "$fedkit" data export "$config" --out "$out/$label.data" "${sets[@]}" >/dev/null
    "$fedkit" model export "$out/$label" --out "$out/$label.safetensors" >/dev/null
    $py model "$out/$label" "$out/$label.data" "$out/$label.safetensors"
    $py tensorboard "$out/$label"
}
check_model logreg "$smoke"
check_model mlp "$smoke" 'model.use="mlp"' 'model.hidden=[32,16]'

# The store's final-round file is the checkpoint's model; a kept client update exists.
"$fedkit" model export "$out/logreg" --round 3 --out "$out/r3.safetensors" >/dev/null
"$venv/bin/python" - "$out/r3.safetensors" "$out/logreg.safetensors" <<'PY'
import sys
from safetensors.numpy import load_file
a, b = load_file(sys.argv[1]), load_file(sys.argv[2])
assert a.keys() == b.keys() and all((a[k] == b[k]).all() for k in a), "store and checkpoint differ"
print("ok model store: round 3's stored model equals the final export")
PY
ls "$out/logreg/models/" | grep -q 'update.safetensors' || { echo "FAIL: no client update kept" >&2; exit 1; }

# [model] init: a NumPy-made model in PyTorch's names starts a run; round 0 evaluates it.
$py make-init "$out/mlp.data" "$out/init.safetensors"
"$fedkit" run "$smoke" --out "$out/init" --quiet --set rounds=1 --set 'model.use="mlp"' \
    --set 'model.hidden=[32,16]' --set "model.init=\"$out/init.safetensors\""
$py init "$out/init" "$out/mlp.data" "$out/init.safetensors"

if [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte.gz ] || [ -f /usr/share/datasets/fashion-mnist/t10k-labels-idx1-ubyte ]; then
    fm=(data.name='"fashion_mnist"' data.clients=10 data.subsample=0.05 rounds=2 client.lr=0.05 client.batch_size=32 sampling.per_round=5)
    check_model lenet "$smoke" "${fm[@]}" 'model.use="lenet"' client.lr=0.2 client.epochs=2
    check_model cnn "$smoke" "${fm[@]}" 'model.use="cnn"' 'model.channels=[8,16]' 'model.hidden=32'
    check_model resnet "$smoke" "${fm[@]}" 'model.use="resnet"' model.depth=8 model.width=4 rounds=1 data.subsample=0.01
    check_model resnet_gn "$smoke" "${fm[@]}" 'model.use="resnet"' model.depth=8 model.width=4 'model.norm="group"' rounds=1 data.subsample=0.01
else
    echo "note: Fashion-MNIST not installed (scripts/install-test-deps.sh); the lenet and cnn checks are skipped" >&2
fi
echo "tests/python: all checks passed"

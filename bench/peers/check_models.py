"""Check that the PyTorch twins of fedkit's models compute what fedkit computes, on an exported
federation (same data, same initial weights):

1. the initial model: fedkit's round-0 test loss and accuracy (eval.initial) against the PyTorch
   module loaded from init.f32 (checks the layout, the [in, out] -> [out, in] transposition, the
   flatten order and the forward pass);
2. with `--step`: one round in which every client takes one full-batch SGD step (batch_size >= its
   sample count, all clients sampled), so FedAvg's sample-weighted mean is exactly one gradient
   step on the whole training set, w1 = w0 - lr * grad(mean loss); fedkit's round-1 test loss
   against PyTorch's (checks the gradients and FedAvg's weighting). Affordable for logreg and mlp;
   for cnn it trains one epoch of full batches (minutes on 2 cores).

    .venv/bin/python bench/peers/check_models.py --config CONFIG --data EXPORT_DIR [--step]

`--data` must be the export of the same config (`fedkit data export CONFIG --out EXPORT_DIR`).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

import peerlib  # noqa: E402

ROOT = Path(__file__).resolve().parents[2]


def fedkit_rows(config: str, sets: list[str]) -> list[dict]:
    with tempfile.TemporaryDirectory() as tmp:
        cmd = [str(ROOT / "target/release/fedkit"), "run", config, "--out", f"{tmp}/run", "-q"]
        for s in sets:
            cmd += ["--set", s]
        subprocess.run(cmd, check=True, env={**os.environ, "RAYON_NUM_THREADS": "2"}, stdout=subprocess.DEVNULL)
        return [json.loads(l) for l in Path(f"{tmp}/run/metrics.jsonl").read_text().splitlines()]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--config", required=True)
    ap.add_argument("--data", required=True)
    ap.add_argument("--step", action="store_true")
    a = ap.parse_args()
    torch.set_num_threads(2)
    fed = peerlib.Federation(a.data)
    model = fed.model()
    back = peerlib.to_fedkit_params(model, fed.meta["layout"])
    assert np.array_equal(back, fed.init), "layout round trip failed"
    loss0, acc0 = peerlib.evaluate(model, fed.test_x, fed.test_y)
    ok = True

    if a.step:
        n_clients, biggest = len(fed.clients), int(fed.sizes.max())
        sets = ["rounds=1", "eval.every=1", "eval.initial=true", f"sampling.per_round={n_clients}",
                f"client.batch_size={biggest}", "client.epochs=1"]
    else:
        sets = ["rounds=1", "eval.every=1", "eval.initial=true", "sampling.per_round=1", "client.max_steps=1"]
    rows = fedkit_rows(a.config, sets)
    r0 = rows[0]
    print(f"initial model  fedkit test_loss {r0['test_loss']:.6f} acc {r0['test_acc']:.4f} | "
          f"torch test_loss {loss0:.6f} acc {acc0:.4f}")
    ok &= abs(r0["test_loss"] - loss0) < 1e-4 * max(1.0, abs(loss0)) and abs(r0["test_acc"] - acc0) < 1e-3

    if a.step:
        # FedAvg of one full-batch step per client = one step on the sample-weighted full loss.
        model.train()
        model.zero_grad()
        idx = np.concatenate(fed.clients)
        for s in range(0, len(idx), 8192):
            b = idx[s : s + 8192]
            x = torch.from_numpy(np.array(fed.train_x[b]))
            y = torch.from_numpy(fed.train_y[b])
            (F.cross_entropy(model(x), y, reduction="sum") / len(idx)).backward()
        with torch.no_grad():
            for p in model.parameters():
                p -= fed.lr * p.grad
        loss1, acc1 = peerlib.evaluate(model, fed.test_x, fed.test_y)
        r1 = rows[-1]
        print(f"after 1 step   fedkit test_loss {r1['test_loss']:.6f} acc {r1['test_acc']:.4f} | "
              f"torch test_loss {loss1:.6f} acc {acc1:.4f}")
        ok &= abs(r1["test_loss"] - loss1) < 1e-3 * max(1.0, abs(loss1)) and abs(r1["test_acc"] - acc1) < 2e-3
    print("OK: fedkit and the PyTorch model agree" if ok else "MISMATCH between fedkit and the PyTorch model")
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()

"""Reads fedkit's outputs back with the Python packages users load them with, and checks them.

  check_outputs.py model RUN DATA FILE   # FILE (fedkit model export) predicts in NumPy what RUN's
                                         # final metrics say: same test accuracy, same loss
  check_outputs.py init RUN DATA FILE    # RUN started from FILE ([model] init): its round-0
                                         # metrics are FILE's NumPy predictions
  check_outputs.py make-init DATA OUT    # random weights in PyTorch's names and shapes
  check_outputs.py tensorboard RUN       # RUN/tb, read by tensorboard's EventAccumulator, holds
                                         # every metric of RUN/metrics.jsonl at every round

DATA is a `fedkit data export` of the run's config (the test set as fedkit's models see it).
Only numpy, safetensors and tensorboard are needed (no torch).
"""

import json
import pathlib
import sys
import tomllib

import numpy as np
from safetensors import safe_open
from safetensors.numpy import load_file, save_file


def fail(msg):
    print(f"FAIL: {msg}", file=sys.stderr)
    sys.exit(1)


def records(run):
    return [json.loads(l) for l in (pathlib.Path(run) / "metrics.jsonl").read_text().splitlines() if l.strip()]


def test_set(data):
    d = pathlib.Path(data)
    meta = json.loads((d / "meta.json").read_text())
    x = np.fromfile(d / "test_x.f32", dtype="<f4").reshape([-1] + meta["feature_shape"])
    y = np.fromfile(d / "test_y.u32", dtype="<u4")
    return meta, x, y


def conv(x, w, b, pad, stride=1):
    """PyTorch's Conv2d: x [N, C, H, W], w [O, C, k, k]."""
    k = w.shape[-1]
    x = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    win = np.lib.stride_tricks.sliding_window_view(x, (k, k), axis=(2, 3))[:, :, ::stride, ::stride]
    y = np.einsum("nchwij,ocij->nohw", win, w, optimize=True)
    return y if b is None else y + b[None, :, None, None]


def norm(x, t, name, groups):
    """BatchNorm2d in eval mode (running statistics), or GroupNorm without them."""
    g, b = t[f"{name}.weight"][None, :, None, None], t[f"{name}.bias"][None, :, None, None]
    if f"{name}.running_mean" in t:
        m, v = t[f"{name}.running_mean"][None, :, None, None], t[f"{name}.running_var"][None, :, None, None]
        return (x - m) / np.sqrt(v + 1e-5) * g + b
    n, c, h, w = x.shape
    y = x.reshape(n, groups, -1)
    y = (y - y.mean(axis=2, keepdims=True)) / np.sqrt(y.var(axis=2, keepdims=True) + 1e-5)
    return y.reshape(n, c, h, w) * g + b


def resnet(spec, t, x):
    """The CIFAR ResNet with option-A shortcuts (docs/models.md)."""
    groups = spec.get("groups", 2)
    h = relu(norm(conv(x, t["conv1.weight"], None, 1), t, "bn1", groups))
    blocks = sorted({k.rsplit(".", 2)[0] for k in t if k.startswith("layer")}, key=lambda s: (int(s[5]), int(s.split(".")[1])))
    for blk in blocks:
        w1 = t[f"{blk}.conv1.weight"]
        stride = 2 if w1.shape[0] != w1.shape[1] else 1
        y = relu(norm(conv(h, w1, None, 1, stride), t, f"{blk}.bn1", groups))
        y = norm(conv(y, t[f"{blk}.conv2.weight"], None, 1), t, f"{blk}.bn2", groups)
        if y.shape[1] != h.shape[1]:
            sub = h[:, :, ::2, ::2]
            pad = (y.shape[1] - h.shape[1]) // 2
            h = np.pad(sub, ((0, 0), (pad, y.shape[1] - h.shape[1] - pad), (0, 0), (0, 0)))
        h = relu(y + h)
    return linear(h.mean(axis=(2, 3)), t, "fc")


def pool(x):
    n, c, h, w = x.shape
    return x[:, :, : h // 2 * 2, : w // 2 * 2].reshape(n, c, h // 2, 2, w // 2, 2).max(axis=(3, 5))


def relu(x):
    return np.maximum(x, 0)


def linear(x, t, name):
    # PyTorch's Linear: y = x W^T + b, W [out, in].
    return x @ t[f"{name}.weight"].T + t[f"{name}.bias"]


def forward(spec, t, x):
    """The PyTorch module of docs/models.md, in NumPy."""
    name = spec["use"]
    if name == "logreg":
        return linear(x.reshape(len(x), -1), t, "linear")
    if name == "mlp":
        h = x.reshape(len(x), -1)
        n = len([k for k in t if k.startswith("fc") and k.endswith(".weight")])
        for i in range(1, n):
            h = relu(linear(h, t, f"fc{i}"))
        return linear(h, t, f"fc{n}")
    if name in ("cnn", "lenet"):
        pad = 2 if name == "cnn" else 0
        h = pool(relu(conv(x, t["conv1.weight"], t["conv1.bias"], pad)))
        h = pool(relu(conv(h, t["conv2.weight"], t["conv2.bias"], pad)))
        h = h.reshape(len(h), -1)
        fcs = sorted(k[:-7] for k in t if k.startswith("fc") and k.endswith(".weight"))
        for f in fcs[:-1]:
            h = relu(linear(h, t, f))
        return linear(h, t, fcs[-1])
    if name == "resnet":
        return resnet(spec, t, x)
    fail(f"no NumPy forward pass for model {name}")


def predict(spec, t, x):
    logits = np.concatenate([forward(spec, t, x[i : i + 1000].astype(np.float64)) for i in range(0, len(x), 1000)])
    z = logits - logits.max(axis=1, keepdims=True)
    logp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
    return logits.argmax(axis=1), logp


def compare(label, rec, spec, t, x, y):
    pred, logp = predict(spec, t, x)
    acc = float((pred == y).mean())
    loss = float(-logp[np.arange(len(y)), y].mean())
    # Ties and f32-vs-f64 rounding may flip a prediction whose two top logits agree to ~1e-6.
    if abs(acc - rec["test_acc"]) > 1.5 / len(y) or abs(loss - rec["test_loss"]) > 1e-4 * max(1.0, loss):
        fail(f"{label}: NumPy gives test_acc {acc:.6f}, test_loss {loss:.6f}; fedkit logged {rec['test_acc']:.6f}, {rec['test_loss']:.6f}")
    print(f"ok {label}: {spec['use']}, {len(y)} test samples: NumPy test_acc {acc:.4f} = fedkit's {rec['test_acc']:.4f}, loss {loss:.5f} vs {rec['test_loss']:.5f}")


def main():
    cmd, *args = sys.argv[1:]
    if cmd in ("model", "init"):
        run, data, file = args
        t = load_file(file)
        with safe_open(file, "np") as f:
            meta = f.metadata()
        if meta.get("format") != "fedkit":
            fail(f"{file}: metadata {meta} lacks format = fedkit")
        spec = tomllib.loads((pathlib.Path(run) / "resolved.toml").read_text())["model"]
        _, x, y = test_set(data)
        recs = [r for r in records(run) if "test_acc" in r]
        rec = recs[-1] if cmd == "model" else next(r for r in recs if r["round"] == 0)
        compare(f"{cmd} {file}", rec, spec, t, x, y)
    elif cmd == "make-init":
        data, out = args
        meta, _, _ = test_set(data)
        rng = np.random.default_rng(7)
        t = {}
        for e in meta["layout"]:
            shape = e["shape"]
            if e["kind"] == "Weight" and len(shape) == 2:
                shape = [shape[1], shape[0]]  # PyTorch's Linear stores [out, in]
            t[e["name"]] = (rng.standard_normal(shape) * 0.1).astype(np.float32)
        save_file(t, out, metadata={"format": "fedkit", "source": "numpy"})
        print(f"ok make-init: {out} ({', '.join(f'{k}{list(v.shape)}' for k, v in t.items())})")
    elif cmd == "tensorboard":
        (run,) = args
        from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

        ea = EventAccumulator(str(pathlib.Path(run) / "tb"), size_guidance={"scalars": 0})
        ea.Reload()
        recs = records(run)
        tags = set(ea.Tags()["scalars"])
        n = 0
        for r in recs:
            for k, v in r.items():
                if k == "round":
                    continue
                if k not in tags:
                    fail(f"tensorboard: no scalar {k}")
                got = {s.step: s.value for s in ea.Scalars(k)}
                if r["round"] not in got or got[r["round"]] != np.float32(v):
                    fail(f"tensorboard: {k} at round {r['round']}: {got.get(r['round'])} != {v}")
                n += 1
        print(f"ok tensorboard: {n} scalars ({len(tags)} tags x {len(recs)} rounds) equal metrics.jsonl")
    else:
        fail(f"unknown command {cmd}")


if __name__ == "__main__":
    main()

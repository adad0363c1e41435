"""Shared pieces of the peer implementations (Flower, pfl, plain PyTorch): the exported
federation, the fedkit models as PyTorch modules with fedkit's initial weights, local SGD,
evaluation and cohort sampling.

The federation comes from `fedkit data export CONFIG --out DIR` (crates/fedkit-cli/src/export.rs):
train_x.f32 / test_x.f32 (n x prod(feature_shape), little-endian f32), train_y.u32 / test_y.u32,
clients.json (one list of training-sample indices per client), cohorts.json (the clients fedkit
trains in each round), orders.u32 (the order in which each of them visits its samples, epoch by
epoch), init.f32 (the initial global model, flat, in the layout's order) and
meta.json (shapes, layout, the resolved fedkit config).
"""

from __future__ import annotations

import json
import math
import os
import time
import tomllib
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F



def _process_start() -> float:
    """Wall-clock time at which this process started (Linux /proc), else now."""
    try:
        ticks = int(Path("/proc/self/stat").read_text().rsplit(")", 1)[1].split()[19])
        uptime = float(Path("/proc/uptime").read_text().split()[0])
        return time.time() - uptime + ticks / os.sysconf("SC_CLK_TCK")
    except (OSError, ValueError, IndexError):
        return time.time()


T0 = _process_start()  # startup_s in the results counts from here (interpreter start)


class Federation:
    """The exported federation. Features are memory-mapped (shared page cache across processes,
    so two workers or two Ray actors do not each hold a copy); labels are loaded as int64."""

    def __init__(self, data_dir: str | os.PathLike):
        d = Path(data_dir)
        self.dir = d
        needed = ["meta.json", "train_x.f32", "train_y.u32", "test_x.f32", "test_y.u32", "clients.json",
                  "cohorts.json", "orders.u32", "init.f32"]
        missing = [f for f in needed if not (d / f).is_file()]
        if missing:
            raise SystemExit(f"{d} is not a complete export (missing {', '.join(missing)}); "
                             "run `target/release/fedkit data export CONFIG --out DIR` with this fedkit")
        self.meta = json.loads((d / "meta.json").read_text())
        self.config = tomllib.loads(self.meta["config"])
        self.feature_shape = list(self.meta["feature_shape"])
        self.dim = int(np.prod(self.feature_shape))
        self.classes = int(self.meta["classes"])
        self.train_x = np.memmap(d / "train_x.f32", dtype="<f4", mode="r").reshape(-1, self.dim)
        self.test_x = np.memmap(d / "test_x.f32", dtype="<f4", mode="r").reshape(-1, self.dim)
        self.train_y = np.fromfile(d / "train_y.u32", dtype="<u4").astype(np.int64)
        self.test_y = np.fromfile(d / "test_y.u32", dtype="<u4").astype(np.int64)
        self.clients = [np.asarray(c, dtype=np.int64) for c in json.loads((d / "clients.json").read_bytes())]
        self.sizes = np.array([len(c) for c in self.clients], dtype=np.int64)
        self.init = np.fromfile(d / "init.f32", dtype="<f4")
        self.cohorts = [[int(c) for c in r] for r in json.loads((d / "cohorts.json").read_bytes())]
        self.orders = np.memmap(d / "orders.u32", dtype="<u4", mode="r")
        self._order_at: dict[tuple[int, int], int] = {}
        assert self.init.size == self.meta["params"], "init.f32 does not match meta.json"
        assert len(self.clients) == self.meta["clients"]
        c = self.config["client"]
        if c.get("optimizer", "sgd") != "sgd" or c.get("momentum", 0.0) != 0.0 or c.get("weight_decay", 0.0) != 0.0:
            raise SystemExit("the peer benchmark implements plain SGD (momentum 0, no weight decay) only")
        if self.config.get("algorithm", {}).get("use", "fedavg") != "fedavg":
            raise SystemExit("the peer benchmark implements FedAvg only")
        self.lr = float(c["lr"])
        self.epochs = int(c["epochs"])
        self.batch_size = int(c["batch_size"])
        self.per_round = int(self.config["sampling"]["per_round"])
        self.seed = int(self.config.get("seed", 0))
        self.rounds = int(self.config["rounds"])
        self.eval_batch_size = int(self.config.get("eval", {}).get("batch_size", 256))

    def batch_orders(self, rnd: int, cid: int) -> list[np.ndarray]:
        """Client `cid`'s sample order (positions into its clients.json list) for each local epoch
        of round `rnd` (1-based): fedkit's own, from orders.u32 (clients in cohorts.json order)."""
        if not self._order_at:
            at = 0
            for r, cohort in enumerate(self.cohorts, 1):
                for c in cohort:
                    self._order_at[(r, c)] = at
                    at += self.epochs * int(self.sizes[c])
            if at != self.orders.size:
                raise SystemExit(f"{self.dir}/orders.u32 holds {self.orders.size} values, cohorts.json needs {at}")
        if (rnd, cid) not in self._order_at:
            raise SystemExit(f"client {cid} is not in round {rnd}'s cohort in {self.dir}/cohorts.json")
        at, n = self._order_at[(rnd, cid)], int(self.sizes[cid])
        return [np.asarray(self.orders[at + e * n : at + (e + 1) * n], dtype=np.int64) for e in range(self.epochs)]

    def client_data(self, cid: int) -> tuple[torch.Tensor, torch.Tensor]:
        """The client's samples (features, labels) in clients.json order, as tensors."""
        idx = self.clients[cid]
        return torch.from_numpy(np.ascontiguousarray(self.train_x[idx])), torch.from_numpy(self.train_y[idx])

    def model(self) -> "Net":
        """The config's model with fedkit's initial weights."""
        m = build_model(self.config["model"], self.feature_shape, self.classes)
        load_fedkit_params(m, self.init, self.meta["layout"])
        return m


# --- models: the same architectures and parameter names as crates/fedkit-models ---------------


class Net(nn.Module):
    """Base: inputs arrive flat [n, prod(feature_shape)]. `loss` and `metrics` are what pfl's
    PyTorchModel requires of a module."""

    def loss(self, x, y):
        return F.cross_entropy(self(x), y)

    @torch.no_grad()
    def metrics(self, x, y):
        from pfl.metrics import Weighted  # only pfl calls this

        logits = self(x)
        n = len(y)
        loss = F.cross_entropy(logits, y, reduction="sum").item()
        correct = (logits.argmax(1) == y).sum().item()
        return {"loss": Weighted(loss, n), "accuracy": Weighted(correct, n)}


class LogReg(Net):
    """fedkit `logreg`: logits = x W + b (entries linear.weight [d, C], linear.bias)."""

    def __init__(self, d: int, classes: int):
        super().__init__()
        self.linear = nn.Linear(d, classes)

    def forward(self, x):
        return self.linear(x)


class Mlp(Net):
    """fedkit `mlp` (norm = "none"): fc1..fcK with ReLU between them."""

    def __init__(self, d: int, hidden: list[int], classes: int):
        super().__init__()
        sizes = [d, *hidden, classes]
        self.n = len(sizes) - 1
        for i in range(self.n):
            setattr(self, f"fc{i + 1}", nn.Linear(sizes[i], sizes[i + 1]))

    def forward(self, x):
        for i in range(self.n):
            x = getattr(self, f"fc{i + 1}")(x)
            if i + 1 < self.n:
                x = F.relu(x)
        return x


class Cnn(Net):
    """fedkit `cnn` (norm = "none"): conv5x5(c1, pad 2), ReLU, maxpool 2, conv5x5(c2, pad 2), ReLU,
    maxpool 2, flatten (NCHW order, as burn's reshape), fc1 (hidden), ReLU, fc2."""

    def __init__(self, shape: list[int], channels: list[int], hidden: int, classes: int):
        super().__init__()
        c, h, w = shape
        self.shape = (c, h, w)
        self.conv1 = nn.Conv2d(c, channels[0], 5, padding=2)
        self.conv2 = nn.Conv2d(channels[0], channels[1], 5, padding=2)
        self.fc1 = nn.Linear(channels[1] * (h // 4) * (w // 4), hidden)
        self.fc2 = nn.Linear(hidden, classes)

    def forward(self, x):
        x = x.view(-1, *self.shape)
        x = F.max_pool2d(F.relu(self.conv1(x)), 2)
        x = F.max_pool2d(F.relu(self.conv2(x)), 2)
        x = F.relu(self.fc1(x.flatten(1)))
        return self.fc2(x)


def build_model(spec: dict, feature_shape: list[int], classes: int) -> Net:
    use = spec.get("use", "logreg")
    d = int(np.prod(feature_shape))
    if spec.get("norm", "none") != "none":
        raise SystemExit("the peer benchmark's models have no normalisation layers")
    if use == "logreg":
        return LogReg(d, classes)
    if use == "mlp":
        return Mlp(d, list(spec.get("hidden", [200, 200])), classes)
    if use == "cnn":
        return Cnn(feature_shape, list(spec.get("channels", [32, 64])), int(spec.get("hidden", 512)), classes)
    raise SystemExit(f"model {use!r} has no PyTorch twin in bench/peers/peerlib.py")


def load_fedkit_params(model: nn.Module, flat: np.ndarray, layout: list[dict]) -> None:
    """Copy a flat fedkit parameter vector into `model`. Linear weights are stored [in, out] by
    fedkit and [out, in] by PyTorch (transposed here); convolutions are [out, in, k, k] in both."""
    sd = model.state_dict()
    if set(sd) != {e["name"] for e in layout}:
        raise SystemExit(f"layout {[e['name'] for e in layout]} does not match the torch model {list(sd)}")
    new = {}
    for e in layout:
        shape, off = e["shape"], e["offset"]
        t = torch.from_numpy(flat[off : off + math.prod(shape)].copy()).reshape(shape)
        if len(shape) == 2:
            t = t.t()
        if tuple(t.shape) != tuple(sd[e["name"]].shape):
            raise SystemExit(f"{e['name']}: fedkit shape {shape} vs torch {tuple(sd[e['name']].shape)}")
        new[e["name"]] = t.contiguous()
    model.load_state_dict(new)


def to_fedkit_params(model: nn.Module, layout: list[dict]) -> np.ndarray:
    """The inverse of load_fedkit_params (for checks)."""
    sd = model.state_dict()
    out = np.zeros(sum(math.prod(e["shape"]) for e in layout), dtype=np.float32)
    for e in layout:
        t = sd[e["name"]].detach()
        if len(e["shape"]) == 2:
            t = t.t()
        out[e["offset"] : e["offset"] + t.numel()] = t.contiguous().numpy().ravel()
    return out


# --- training and evaluation ---------------------------------------------------------------------


def local_sgd(model: nn.Module, x: torch.Tensor, y: torch.Tensor, orders: list[np.ndarray], batch_size: int,
              lr: float) -> float:
    """fedkit's local training: one epoch per entry of `orders` (fedkit's sample order for that
    epoch, Federation.batch_orders), mini-batches of `batch_size` (the last may be partial), mean
    cross-entropy, plain SGD. Returns the sample-weighted mean loss."""
    opt = torch.optim.SGD(model.parameters(), lr=lr)
    model.train()
    n = len(y)
    total, seen = 0.0, 0
    for order in orders:
        perm = torch.from_numpy(order)
        for s in range(0, n, batch_size):
            b = perm[s : s + batch_size]
            opt.zero_grad(set_to_none=True)
            loss = F.cross_entropy(model(x[b]), y[b])
            loss.backward()
            opt.step()
            total += loss.item() * len(b)
            seen += len(b)
    return total / max(seen, 1)


@torch.no_grad()
def evaluate(model: nn.Module, x: np.ndarray, y: np.ndarray, batch_size: int = 256) -> tuple[float, float]:
    """(mean loss, accuracy) over the whole set, in batches (fedkit's eval.batch_size)."""
    model.eval()
    loss, correct = 0.0, 0
    for s in range(0, len(y), batch_size):
        xb = torch.from_numpy(np.array(x[s : s + batch_size]))
        yb = torch.from_numpy(y[s : s + batch_size])
        logits = model(xb)
        loss += F.cross_entropy(logits, yb, reduction="sum").item()
        correct += (logits.argmax(1) == yb).sum().item()
    return loss / len(y), correct / len(y)


def cohorts(fed: "Federation", rounds: int) -> list[list[int]]:
    """The cohort of each round 1..rounds: fedkit's own draws, exported as cohorts.json, so every
    framework trains exactly the same clients each round."""
    if rounds > len(fed.cohorts):
        raise SystemExit(f"{fed.dir}/cohorts.json holds {len(fed.cohorts)} rounds; {rounds} were asked for")
    return fed.cohorts[:rounds]


def write_result(path: str | None, **fields) -> None:
    fields.setdefault("process_s", time.time() - T0)
    text = json.dumps(fields, indent=1)
    if path:
        Path(path).write_text(text)
    print(text)

"""Reference labels for FLAME's clustering step: Python's `hdbscan` (the package FLAME's code uses)
on precomputed cosine distances with min_cluster_size = n // 2 + 1, min_samples = 1,
allow_single_cluster = True. Writes flame_hdbscan.json beside this script.

Run in a throwaway venv:  python3 -m venv /tmp/v && /tmp/v/bin/pip install numpy hdbscan &&
/tmp/v/bin/python make_flame_fixture.py
"""
import json, os
import numpy as np
import hdbscan

rng = np.random.default_rng(2022)
cases = []
for case in range(40):
    n = int(rng.integers(5, 21))
    d = int(rng.integers(3, 20))
    if case % 2:
        # no clear structure: where the core-distance convention decides the labels
        x = rng.normal(size=(n, d))
    else:
        bad = int(rng.integers(0, n // 2))
        base = rng.normal(size=d)
        x = base + rng.normal(scale=float(rng.uniform(0.05, 1.0)), size=(n - bad, d))
        if bad:
            other = rng.normal(size=d)
            x = np.vstack([x, other + rng.normal(scale=0.1, size=(bad, d))])
    norm = np.linalg.norm(x, axis=1, keepdims=True)
    cos = (x @ x.T) / (norm * norm.T)
    dist = np.round(np.clip(1.0 - cos, 0.0, None), 6)
    np.fill_diagonal(dist, 0.0)
    labels = hdbscan.HDBSCAN(metric="precomputed", min_cluster_size=n // 2 + 1, min_samples=1,
                             allow_single_cluster=True).fit_predict(dist.astype(np.float64))
    cases.append({"n": n, "distances": dist.flatten().tolist(), "labels": labels.tolist()})
with open(os.path.join(os.path.dirname(os.path.abspath(__file__)), "flame_hdbscan.json"), "w") as f:
    json.dump({"generator": "hdbscan " + getattr(hdbscan, "__version__", "?"), "cases": cases}, f)

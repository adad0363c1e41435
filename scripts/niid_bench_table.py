#!/usr/bin/env python3
"""The NIID-Bench table of docs/results.md from docs/data/niid_bench/<partition>-<algorithm>/metrics.jsonl:
test accuracy (%) at round 50 (the published metric) beside the published value, then the best
round and the mean of rounds 41-50 (the round-to-round swing under label skew)."""
import json, os, sys

DATA = os.path.join(os.path.dirname(__file__), "..", "docs", "data", "niid_bench")
PUBLISHED = {  # NIID-Bench (Li et al., ICDE 2022), Fashion-MNIST, simple-cnn, 50 rounds
    "fedavg": {"iid": 89.0, "dir0.5": 88.4, "c1": 10.0, "c2": 81.0, "c3": 83.2},
    "fedprox": {"iid": 89.5, "dir0.5": 88.6, "c1": 38.0, "c2": 78.8, "c3": 82.5},
    "scaffold": {"iid": 89.5, "dir0.5": 88.4, "c1": 10.0, "c2": 10.0, "c3": 84.2},
    "fednova": {"iid": 89.3, "dir0.5": 88.1, "c1": 11.1, "c2": 70.5, "c3": 83.2},
}
PARTS = [("iid", "iid"), ("dir0.5", "Dir(0.5)"), ("c1", "#C=1"), ("c2", "#C=2"), ("c3", "#C=3")]

def accs(run):
    p = os.path.join(DATA, run, "metrics.jsonl")
    if not os.path.exists(p):
        return None
    rows = [json.loads(l) for l in open(p) if l.strip()]
    return [(r["round"], r["test_acc"]) for r in rows if "test_acc" in r]

algos = sys.argv[1:] or list(PUBLISHED)
print("| partition | " + " | ".join(f"{a} published | {a} ours @50 (best, mean 41-50)" for a in algos) + " |")
print("|---|" + "---|---|" * len(algos))
for key, name in PARTS:
    cells = []
    for a in algos:
        acc = accs(f"{key}-{a}")
        pub = PUBLISHED.get(a, {}).get(key)
        cells.append("-" if pub is None else f"{pub:.1f}")
        if not acc or acc[-1][0] < 50:
            cells.append("(not run)" if not acc else f"(round {acc[-1][0]})")
            continue
        last = [v for r, v in acc if 41 <= r <= 50]
        cells.append(f"{100 * acc[-1][1]:.1f} ({100 * max(v for _, v in acc):.1f}, {100 * sum(last) / len(last):.1f})")
    print(f"| {name} | " + " | ".join(cells) + " |")

#!/usr/bin/env python3
"""Durability table (issue 9, docs/results.md) from a `fedkit matrix` output of
scripts/reproduce_durability.sh: per attack, backdoor accuracy at the last attack round, its mean
over the evaluations 10-40 rounds after the attack stopped (the metric fixed before the runs),
and at the last round; mean and std over seeds. Usage: durability_table.py OUT [STOP]"""
import json
import statistics
import sys
from pathlib import Path

out = Path(sys.argv[1])
stop = int(sys.argv[2]) if len(sys.argv) > 2 else 30


def curve(path):
    return {r["round"]: r["backdoor_acc"] for r in map(json.loads, path.open()) if "backdoor_acc" in r}


def fmt(xs):
    return f"{statistics.mean(xs):.3f} ± {statistics.stdev(xs) if len(xs) > 1 else 0.0:.3f}"


print(f"| attack | at round {stop} (attack ends) | mean, rounds {stop + 10}-{stop + 40} | last round | kept (post / end) |")
print("|---|---|---|---|---|")
for cell in sorted(p for p in out.iterdir() if p.is_dir()):
    ends, posts, lasts, kept = [], [], [], []
    for seed in sorted(cell.glob("seed*")):
        c = curve(seed / "metrics.jsonl")
        post = [v for r, v in c.items() if stop + 10 <= r <= stop + 40]
        if stop not in c or not post:
            sys.exit(f"{seed}: no evaluation at round {stop} or after {stop + 10}: wrong STOP or an unfinished run")
        ends.append(c[stop])
        posts.append(statistics.mean(post))
        lasts.append(c[max(c)])
        kept.append(posts[-1] / max(c[stop], 1e-9))
    name = cell.name.split("__")[0]
    print(f"| {name} | {fmt(ends)} | {fmt(posts)} | {fmt(lasts)} | {fmt(kept)} |")

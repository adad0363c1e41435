#!/usr/bin/env python3
"""Reference RDP values from Google's dp-accounting for fedkit-privacy's tests (issue 10).
Run through scripts/dp_reference.sh, which installs dp-accounting into a throwaway venv.
Writes crates/fedkit-privacy/tests/data/rdp_reference.json: for every (q, sigma) of the grid and
both samplings, the RDP of one step at dp-accounting's default orders, and epsilon (with its
order) for every (steps, delta)."""
import importlib.metadata
import json
import logging
import math
import sys
from pathlib import Path

import dp_accounting
from dp_accounting import dp_event
from dp_accounting.rdp import rdp_privacy_accountant as rdp

logging.getLogger("absl").setLevel(logging.ERROR)  # its non-convergence warnings: those orders are inf


def num(x):
    """A float for JSON; infinity (an excluded order) as null."""
    return None if math.isinf(x) else float(x)


QS = [1e-4, 1e-3, 0.01, 0.04, 0.1, 1.0]
SIGMAS = [0.5, 0.8, 1.0, 1.3, 2.0, 5.0, 10.0]
STEPS = [1, 100, 10_000, 1_000_000]
DELTAS = [1e-3, 1e-5, 1e-9]
POPULATION = 10_000  # sampling without replacement: m = q * POPULATION of POPULATION


def event(q, sigma, sampling):
    g = dp_event.GaussianDpEvent(sigma)
    if sampling == "poisson":
        return dp_event.PoissonSampledDpEvent(q, g)
    return dp_event.SampledWithoutReplacementDpEvent(POPULATION, round(q * POPULATION), g)


def accountant(sampling):
    rel = (dp_accounting.NeighboringRelation.ADD_OR_REMOVE_ONE if sampling == "poisson"
           else dp_accounting.NeighboringRelation.REPLACE_ONE)
    return rdp.RdpAccountant(rdp.DEFAULT_RDP_ORDERS, rel)


cases = []
for sampling in ["poisson", "without_replacement"]:
    for q in QS:
        for sigma in SIGMAS:
            one = accountant(sampling).compose(event(q, sigma, sampling), 1)
            eps = []
            for steps in STEPS:
                acc = accountant(sampling).compose(event(q, sigma, sampling), steps)
                for delta in DELTAS:
                    e, order = acc.get_epsilon_and_optimal_order(delta)
                    eps.append({"steps": steps, "delta": delta, "epsilon": num(e), "order": float(order)})
            cases.append({"sampling": sampling, "q": q, "sigma": sigma,
                          "rdp": [num(r) for r in one._rdp], "epsilons": eps})

# The published values, on their libraries' order grid (TF-Privacy's and Opacus's).
tf_orders = [1 + x / 10.0 for x in range(1, 100)] + list(range(12, 64))
published = []
for name, q, sigma, steps, delta in [("tf_privacy_mnist", 150 / 60000, 1.3, 6000, 1e-5),
                                     ("opacus", 0.04, 1.5, 2250, 1e-5)]:
    acc = rdp.RdpAccountant(tf_orders).compose(event(q, sigma, "poisson"), steps)
    e, order = acc.get_epsilon_and_optimal_order(delta)
    published.append({"name": name, "q": q, "sigma": sigma, "steps": steps, "delta": delta,
                      "epsilon": float(e), "order": float(order)})

out = Path(sys.argv[1])
out.write_text(json.dumps({"generator": "dp-accounting " + importlib.metadata.version("dp-accounting"),
                           "orders": [float(o) for o in rdp.DEFAULT_RDP_ORDERS],
                           "population": POPULATION, "cases": cases, "published": published}, indent=None, allow_nan=False) + "\n")
print(f"wrote {out}: {len(cases)} cases")

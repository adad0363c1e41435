#!/usr/bin/env python3
"""Reference PLD epsilons from Google's dp-accounting for fedkit-privacy's tests (issue 10).
Run through scripts/dp_reference.sh, which installs dp-accounting into a throwaway venv.
Writes crates/fedkit-privacy/tests/data/pld_reference.json: epsilon of the PLD accountant
(defaults: add/remove-one, value_discretization_interval 1e-4) for the Poisson-subsampled
Gaussian over a grid of (q, sigma, steps, delta); full participation (q = 1) only
where sigma / sqrt(steps) >= 0.3 (below, the grid outgrows memory)."""
import importlib.metadata
import json
import math
import sys

from dp_accounting import dp_event
from dp_accounting.pld import pld_privacy_accountant as pld

QS = [1e-3, 0.01, 0.04, 0.1, 1.0]
SIGMAS = [0.5, 0.8, 1.0, 2.0, 5.0, 10.0]
STEPS = [1, 100, 10_000]
DELTAS = [1e-3, 1e-5, 1e-7]

cases = []
for q in QS:
    for sigma in SIGMAS:
        for steps in STEPS:
            if q == 1.0 and sigma / math.sqrt(steps) < 0.3:
                continue  # one Gaussian of noise sigma / sqrt(T): a grid too fine to hold
            acc = pld.PLDAccountant()
            g = dp_event.GaussianDpEvent(sigma)
            ev = g if q == 1.0 else dp_event.PoissonSampledDpEvent(q, g)
            acc.compose(ev, steps)
            for delta in DELTAS:
                eps = acc.get_epsilon(delta)
                cases.append({"q": q, "sigma": sigma, "steps": steps, "delta": delta,
                              "epsilon": None if math.isinf(eps) else float(eps)})
            print(q, sigma, steps, file=sys.stderr)
out = {"dp_accounting": importlib.metadata.version("dp-accounting"), "cases": cases}
with open(sys.argv[1], "w") as f:
    json.dump(out, f, indent=0)

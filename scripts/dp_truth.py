#!/usr/bin/env python3
"""High-precision RDP values (mpmath, 80 digits) for the cases where float64 accountants lose
digits: Poisson at q = 1e-4, sigma = 10 (RDP near 1e-9, where dp-accounting's lgamma-based
binomials carry about 1e-9 relative error), and the without-replacement bound at high orders
(its forward differences cancel). Run by scripts/dp_reference.sh; writes
crates/fedkit-privacy/tests/data/rdp_truth.json."""
import json
import sys

import mpmath as mp

mp.mp.dps = 80


def poisson(q, s, a):
    """RDP of the Poisson-subsampled Gaussian at integer order a: ln(A_a) / (a - 1)."""
    q, s = mp.mpf(q), mp.mpf(s)
    terms = (mp.binomial(a, i) * q**i * (1 - q) ** (a - i) * mp.e ** (mp.mpf(i * i - i) / (2 * s * s))
             for i in range(a + 1))
    return mp.log(mp.fsum(terms)) / (a - 1)


def without_replacement(q, s, a):
    """Wang, Balle, Kasiviswanathan 2019, Theorem 27, with exact forward differences."""
    q, s = mp.mpf(q), mp.mpf(s)
    cgf = lambda x: x * (x + 1) / (2 * s * s)
    gauss = lambda x: x / (2 * s * s)
    seq = [mp.mpf(1)] + [mp.e ** cgf(mp.mpf(i)) for i in range(a + 2)]
    log_diffs = []
    for _ in range(a + 2):
        seq = [seq[j + 1] - seq[j] for j in range(len(seq) - 1)]
        log_diffs.append(mp.log(abs(seq[0])) if seq[0] != 0 else mp.ninf)
    log_f2m1 = gauss(2) + mp.log(1 - mp.e ** (-gauss(2)))
    total = mp.mpf(1)
    for i in range(2, a + 1):
        if i == 2:
            t = 2 * mp.log(q) + mp.log(mp.binomial(a, 2)) + min(mp.log(4) + log_f2m1, gauss(2) + mp.log(2))
        else:
            lo, hi = log_diffs[2 * (i // 2) - 1], log_diffs[2 * ((i + 1) // 2) - 1]
            t = min(mp.log(4) + (lo + hi) / 2, mp.log(2) + cgf(i - 1)) + i * mp.log(q) + mp.log(mp.binomial(a, i))
        total += mp.e**t
    return mp.log(total) / (a - 1)


out = []
for a in list(range(2, 64)) + [128, 256, 512, 1024]:
    out.append({"sampling": "poisson", "q": 1e-4, "sigma": 10.0, "order": a, "rdp": float(poisson(1e-4, 10.0, a))})
for q in [0.001, 0.01, 0.1]:
    for s in [0.8, 2.0, 10.0]:
        for a in [16, 32, 63, 128, 256]:
            out.append({"sampling": "without_replacement", "q": q, "sigma": s, "order": a,
                        "rdp": float(without_replacement(q, s, a))})
with open(sys.argv[1], "w") as f:
    json.dump({"generator": f"mpmath {mp.__version__}, {mp.mp.dps} digits", "values": out}, f)
    f.write("\n")
print(f"wrote {sys.argv[1]}: {len(out)} values")

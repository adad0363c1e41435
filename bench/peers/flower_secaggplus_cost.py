"""Flower's SecAgg+ client cost per round (flwr's own secaggplus_mod stage functions), for a
neighbourhood of K + 1 clients on a vector of LEN float32: the comparison row for fedkit's
secagg_cost example. Usage: python secaggplus_client_cost.py LEN K."""
import sys, time
import numpy as np
from flwr.common import ndarrays_to_parameters
import importlib; m = importlib.import_module("flwr.client.mod.secure_aggregation.secaggplus_mod")
from flwr.common.secure_aggregation.secaggplus_constants import Key

LEN, K = int(sys.argv[1]), int(sys.argv[2])
n = K + 1
cfg = {Key.SAMPLE_NUMBER: n, Key.SHARE_NUMBER: n, Key.THRESHOLD: n // 2 + 1, Key.CLIPPING_RANGE: 8.0,
       Key.TARGET_RANGE: 1 << 22, Key.MOD_RANGE: 1 << 32, Key.MAX_WEIGHT: 1000.0}
states = [m.SecAggPlusState(current_stage="setup", nid=i) for i in range(n)]
t = {}
def timed(name, f):
    t0 = time.perf_counter(); r = f(); t[name] = t.get(name, 0.0) + time.perf_counter() - t0; return r
pks = {}
for i, s in enumerate(states):
    r = timed(f"setup{i}", lambda: m._setup(s, cfg))
    pks[str(i)] = (r[Key.PUBLIC_KEY_1], r[Key.PUBLIC_KEY_2])
inbox = {i: ([], []) for i in range(n)}
for i, s in enumerate(states):
    r = timed(f"share{i}", lambda: m._share_keys(s, pks))
    for dst, ct in zip(r[Key.DESTINATION_LIST], r[Key.CIPHERTEXT_LIST]):
        inbox[dst][0].append(i); inbox[dst][1].append(ct)
x = np.random.default_rng(0).normal(0, 0.01, LEN).astype(np.float32)
params = ndarrays_to_parameters([x])
s = states[0]
timed("masked0", lambda: m._collect_masked_vectors(s, {Key.CIPHERTEXT_LIST: inbox[0][1], Key.SOURCE_LIST: inbox[0][0]}, 1, params))
timed("unmask0", lambda: m._unmask(s, {Key.ACTIVE_NODE_ID_LIST: list(range(n)), Key.DEAD_NODE_ID_LIST: []}))
client0 = t["setup0"] + t["share0"] + t["masked0"] + t["unmask0"]
print(f"flower secagg+ client: len {LEN}, neighbours {K}: {client0:.3f} s "
      f"(setup {t['setup0']:.3f}, share {t['share0']:.3f}, mask {t['masked0']:.3f}, unmask {t['unmask0']:.4f})")

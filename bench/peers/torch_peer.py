"""Plain PyTorch FedAvg loop: the parent process takes each round's cohort (fedkit's, from
cohorts.json), splits it across `--workers` worker processes (1 torch thread each, balanced by
sample count), each worker trains its clients one after the other from the global model and sends
back the sample-weighted sum of its clients' models; the parent averages. The final model is evaluated on the whole test set.

    .venv/bin/python bench/peers/torch_peer.py --data DIR [--rounds R] [--workers 2] [--result FILE]
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
import numpy as np  # noqa: E402
import torch  # noqa: E402

import peer_cli  # noqa: E402
import peerlib  # noqa: E402


def worker(conn, data_dir: str, rank: int) -> None:
    torch.set_num_threads(1)
    fed = peerlib.Federation(data_dir)
    model = fed.model()
    params = list(model.parameters())
    conn.send("ready")
    while True:
        msg = conn.recv()
        if msg is None:
            return
        global_flat, clients, rnd = msg
        acc = np.zeros_like(global_flat, dtype=np.float64)
        weight, loss_sum = 0, 0.0
        for cid in clients:
            set_flat(params, global_flat)
            x, y = fed.client_data(int(cid))
            loss_sum += peerlib.local_sgd(model, x, y, fed.batch_orders(rnd, int(cid)), fed.batch_size, fed.lr) * len(y)
            acc += len(y) * torch.nn.utils.parameters_to_vector(params).detach().numpy()
            weight += len(y)
        conn.send((acc, weight, loss_sum))


def set_flat(params: list[torch.Tensor], flat: np.ndarray) -> None:
    """Copy a flat vector into the parameters (a copy: vector_to_parameters would alias `flat`)."""
    src = torch.from_numpy(flat)
    with torch.no_grad():
        i = 0
        for p in params:
            p.copy_(src[i : i + p.numel()].view_as(p))
            i += p.numel()


def split(clients: list[int], sizes: np.ndarray, k: int) -> list[list[int]]:
    """Greedy: largest client first onto the least-loaded worker."""
    parts, load = [[] for _ in range(k)], np.zeros(k)
    for c in sorted(clients, key=lambda c: -sizes[c]):
        i = int(np.argmin(load))
        parts[i].append(c)
        load[i] += sizes[c]
    return parts


def main() -> None:
    a = peer_cli.parse(__doc__)

    torch.set_num_threads(1)
    fed = peerlib.Federation(a.data)
    rounds = a.rounds or fed.rounds
    ctx = mp.get_context("spawn")
    pipes, procs = [], []
    for r in range(a.workers):
        parent, child = ctx.Pipe()
        p = ctx.Process(target=worker, args=(child, a.data, r), daemon=True)
        p.start()
        pipes.append(parent)
        procs.append(p)
    for c in pipes:
        assert c.recv() == "ready"
    model = fed.model()
    params = list(model.parameters())
    w = torch.nn.utils.parameters_to_vector(params).detach().numpy().copy()
    t_train = time.time()
    startup_s = t_train - peerlib.T0
    client_loss = None
    for rnd, cohort in enumerate(peerlib.cohorts(fed, rounds), 1):
        parts = split(cohort, fed.sizes, a.workers)
        for c, part in zip(pipes, parts):
            c.send((w, part, rnd))
        acc, weight, loss_sum = np.zeros(w.shape, dtype=np.float64), 0, 0.0
        for c in pipes:
            s, n, l = c.recv()
            acc += s
            weight += n
            loss_sum += l
        w = (acc / weight).astype(np.float32)
        client_loss = loss_sum / weight
    train_s = time.time() - t_train
    for c in pipes:
        c.send(None)
    for p in procs:
        p.join()
    t_eval = time.time()
    torch.set_num_threads(a.eval_threads)
    set_flat(params, w)
    test_loss, test_acc = peerlib.evaluate(model, fed.test_x, fed.test_y, fed.eval_batch_size)
    peerlib.write_result(
        a.result, framework="torch", rounds=rounds, test_acc=test_acc, test_loss=test_loss, client_loss=client_loss,
        startup_s=startup_s, train_s=train_s, eval_s=time.time() - t_eval,
        workers=a.workers, threads_per_worker=1,
    )


if __name__ == "__main__":
    main()

"""pfl-research 0.6 FedAvg (SimulatedBackend + FederatedAveraging + PyTorchModel) on the exported
federation, with `--workers` processes of 1 torch thread each, distributed the way pfl documents
("Fast distributed simulations"): the same script started once per worker with
PFL_WORKER_ADDRESSES / PFL_WORKER_RANK, pfl sharding each cohort across the workers (balanced by
the users' sample counts) and all-reducing the model update over torch.distributed (gloo).

    .venv/bin/python bench/peers/pfl_peer.py --data DIR [--rounds R] [--workers 2] [--result FILE]

Setup (see README.md for the differences from fedkit): local SGD with pfl's own training loop
(`do_multiple_epochs_of`, sequential mini-batches of `local_batch_size`, the last one partial) over
the user's samples, put in fedkit's order for that round when the user's dataset is made (pfl
itself does not shuffle; E = 1 only); FedAvg weighted by sample count (`WeightByDatapoints`), central SGD with lr 1; each
round the users fedkit trains that round (cohorts.json, replayed by CohortSampler);
pfl's per-user evaluation before and after local training is switched off; the final model is
evaluated on the whole test set on rank 0.
"""

from __future__ import annotations

import dataclasses
import os
import socket
import subprocess
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
import peer_cli  # noqa: E402


class CohortSampler:
    """pfl user sampler (`callable() -> user_id`): consecutive blocks of `per_round` draws are
    one round's cohort, replayed from fedkit's cohorts.json (peerlib.cohorts). pfl's sampling
    subprocess keeps a cache of draws ahead of the rounds, so after the last round the replay
    wraps around (those draws are never trained). Every worker holds an identical copy, so they
    agree on the cohorts."""

    def __init__(self, cohorts: list[list[int]]):
        self.draws = [c for cohort in cohorts for c in cohort]
        self.i = 0

    def __call__(self) -> int:
        c = self.draws[self.i % len(self.draws)]
        self.i += 1
        return c


def worker(a) -> None:
    os.environ.setdefault("PFL_PYTORCH_DEVICE", "cpu")
    import warnings

    warnings.filterwarnings("ignore", category=FutureWarning)  # pfl 0.6 uses torch's deprecated reduce_op
    import numpy as np
    import torch

    torch.set_num_threads(1)
    import peerlib

    fed = peerlib.Federation(a.data)
    rounds = a.rounds or fed.rounds
    # pfl derives its central random streams from numpy's global seed: the same on every worker.
    np.random.seed(fed.seed)
    torch.manual_seed(fed.seed)

    from pfl.aggregate.simulate import SimulatedBackend
    from pfl.aggregate.weighting import WeightByDatapoints
    from pfl.algorithm import FederatedAveraging, NNAlgorithmParams
    from pfl.data.dataset import Dataset
    from pfl.data.federated_dataset import FederatedDataset
    from pfl.hyperparam import NNEvalHyperParams, NNTrainHyperParams
    from pfl.internal.ops.selector import get_default_framework_module as get_ops
    from pfl.model.pytorch import PyTorchModel

    net = fed.model()
    model = PyTorchModel(
        model=net,
        local_optimizer_create=torch.optim.SGD,
        central_optimizer=torch.optim.SGD(net.parameters(), lr=1.0),
    )
    dist = get_ops().distributed
    rank, world = dist.global_rank, dist.world_size
    if fed.epochs != 1:
        raise SystemExit("pfl_peer.py replays fedkit's batch order for E = 1 only (pfl's loop repeats one order)")

    trained = [0]
    current_round = [0]  # set by FedAvg.get_next_central_contexts before the round's users are made

    def make_user(uid: int):
        """The user's samples in fedkit's order for this round (pfl's loop slices them in order)."""
        trained[0] += 1
        x, y = fed.client_data(int(uid))
        perm = torch.from_numpy(fed.batch_orders(current_round[0], int(uid))[0])
        return Dataset(raw_data=[x[perm], y[perm]], user_id=uid)

    sizes = {i: int(n) for i, n in enumerate(fed.sizes)}
    train_data = FederatedDataset(
        make_user,
        CohortSampler(peerlib.cohorts(fed, rounds)),
        user_id_to_weight=sizes if world > 1 else None,
    )

    class FedAvg(FederatedAveraging):
        """pfl's FederatedAveraging without its per-user evaluation before and after local
        training (it runs whenever iteration % evaluation_frequency == 0, so always in round 0)."""

        def get_next_central_contexts(self, model, iteration, *args, **kwargs):
            current_round[0] = iteration + 1
            contexts, m, metrics = super().get_next_central_contexts(model, iteration, *args, **kwargs)
            if contexts is not None:
                contexts = tuple(dataclasses.replace(c, do_evaluation=False) for c in contexts)
            return contexts, m, metrics

    algorithm_params = NNAlgorithmParams(
        central_num_iterations=rounds,
        evaluation_frequency=rounds,
        train_cohort_size=fed.per_round,
        val_cohort_size=None,
    )
    backend = SimulatedBackend(training_data=train_data, val_data=train_data, postprocessors=[WeightByDatapoints()])
    train_params = NNTrainHyperParams(
        local_num_epochs=fed.epochs, local_learning_rate=fed.lr, local_batch_size=fed.batch_size
    )
    t_train = time.time()
    startup_s = t_train - peerlib.T0
    FedAvg().run(
        algorithm_params=algorithm_params,
        backend=backend,
        model=model,
        model_train_params=train_params,
        model_eval_params=NNEvalHyperParams(local_batch_size=256),
        send_metrics_to_platform=False,
    )
    train_s = time.time() - t_train
    print(f"pfl worker {rank}/{world}: trained {trained[0]} users in {train_s:.2f}s", file=sys.stderr)
    if rank == 0:
        t_eval = time.time()
        torch.set_num_threads(a.eval_threads)
        test_loss, test_acc = peerlib.evaluate(net, fed.test_x, fed.test_y, fed.eval_batch_size)
        peerlib.write_result(
            a.result, framework="pfl", rounds=rounds, test_acc=test_acc, test_loss=test_loss, client_loss=None,
            startup_s=startup_s, train_s=train_s, eval_s=time.time() - t_eval,
            workers=world, threads_per_worker=1,
        )
    # pfl's cohort sampler (world > 1) runs in a subprocess that only its atexit hook stops: stop
    # it here, then leave without the interpreter's teardown (gloo needs no orderly goodbye).
    sampler = getattr(train_data, "_sample_fn", None)
    if hasattr(sampler, "_sample_process"):
        sampler._sample_process.terminate()
        sampler._sample_process.join(5)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def main() -> None:
    a = peer_cli.parse(__doc__)
    if a.workers <= 1 or "PFL_WORKER_RANK" in os.environ:
        worker(a)
        return
    # Launcher: one process per worker, as pfl's docs start them.
    port = free_port()
    addresses = ",".join(f"localhost:{port + i}" for i in range(a.workers))
    procs = []
    for rank in range(a.workers):
        env = {**os.environ, "PFL_WORKER_ADDRESSES": addresses, "PFL_WORKER_RANK": str(rank),
               "OMP_NUM_THREADS": "1", "MKL_NUM_THREADS": "1"}
        procs.append(subprocess.Popen([sys.executable, __file__, *sys.argv[1:]], env=env))
    codes = [p.wait() for p in procs]
    if any(codes):
        raise SystemExit(f"pfl workers exited with {codes}")


if __name__ == "__main__":
    main()

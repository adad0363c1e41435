"""Flower 1.42 FedAvg in the Simulation Runtime (Ray backend): one SuperNode per fedkit client,
`--actors` Ray actors with 1 CPU (and 1 torch thread) each. See flower_app.py for the apps.

    .venv/bin/python bench/peers/flower_peer.py --data DIR [--rounds R] [--actors 2] [--result FILE]
"""

from __future__ import annotations

import json
import os
import sys
import time
import tomllib
from pathlib import Path

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE))
os.environ.setdefault("RAY_DEDUP_LOGS", "0")
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # no network here; no telemetry in timings
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")

import peer_cli  # noqa: E402
import peerlib  # noqa: E402


def main() -> None:
    a = peer_cli.parse(__doc__, "--actors")

    from flwr.simulation import run_simulation

    import flower_app

    meta = json.loads((Path(a.data) / "meta.json").read_text())
    rounds = a.rounds or tomllib.loads(meta["config"])["rounds"]
    flower_app.JOB.update(data=str(Path(a.data).resolve()), rounds=rounds, eval_threads=a.eval_threads)
    backend_config = {
        "init_args": {"num_cpus": a.actors, "num_gpus": 0, "include_dashboard": False, "log_to_driver": True},
        "client_resources": {"num_cpus": 1, "num_gpus": 0.0},
    }
    t = time.time()
    run_simulation(
        server_app=flower_app.server_app,
        client_app=flower_app.client_app,
        num_supernodes=meta["clients"],
        backend_config=backend_config,
    )
    r = flower_app.RESULT
    if "test_acc" not in r:
        raise SystemExit("the Flower simulation ended without the final evaluation (see the log above)")
    peerlib.write_result(
        a.result, framework="flower", rounds=rounds, test_acc=r["test_acc"], test_loss=r["test_loss"],
        client_loss=r.get("client_loss"), startup_s=r["train_start"] - peerlib.T0,
        train_s=r["train_end"] - r["train_start"], eval_s=r["eval_s"], simulation_s=time.time() - t,
        actors=a.actors, threads_per_actor=1,
    )


if __name__ == "__main__":
    main()

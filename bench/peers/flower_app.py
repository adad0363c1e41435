"""The Flower side of the peer benchmark: a message-API ClientApp and ServerApp (Flower 1.42)
run by flower_peer.py in the Simulation Runtime. A module of its own (not the entry script) so
that the Ray actors import these functions by reference and keep the per-process data cache.

Client: plain local SGD (peerlib.local_sgd) on the fedkit client named in the message (`cid`),
1 torch thread. Server: Flower's stock FedAvg (weighted by `num-examples`) with one change,
`ReplayFedAvg`: the round's nodes are drawn by FedAvg's own sampler as usual, and each message
tells its node which client of fedkit's cohort for that round (cohorts.json) to train, so Flower
trains exactly the clients fedkit trains. No federated evaluation; a central evaluation on the
whole test set after the last round.
"""

from __future__ import annotations

import os
import random
import sys
import time

import torch
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict
from flwr.clientapp import ClientApp
from flwr.serverapp import Grid, ServerApp
from flwr.serverapp.strategy import FedAvg

import peerlib

# ---- client side (runs inside the Ray actors) ---------------------------------------------------

_CACHE: dict = {}


def _client_state(data_dir: str):
    """The federation and a model, once per actor process."""
    if _CACHE.get("dir") != data_dir:
        torch.set_num_threads(1)
        fed = peerlib.Federation(data_dir)
        _CACHE.update(dir=data_dir, fed=fed, model=fed.model())
        print(f"flower actor {os.getpid()}: loaded the federation from {data_dir}", file=sys.stderr, flush=True)
    return _CACHE["fed"], _CACHE["model"]


client_app = ClientApp()


@client_app.train()
def train(msg: Message, context: Context) -> Message:
    cfg = msg.content["config"]
    fed, model = _client_state(str(cfg["data"]))
    torch.set_num_threads(1)
    pid = int(cfg["cid"])  # the client of fedkit's cohort this node trains (ReplayFedAvg)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    x, y = fed.client_data(pid)
    orders = fed.batch_orders(int(cfg["server-round"]), pid)
    loss = peerlib.local_sgd(model, x, y, orders, fed.batch_size, fed.lr)
    content = RecordDict(
        {
            "arrays": ArrayRecord(model.state_dict()),
            "metrics": MetricRecord({"train_loss": loss, "num-examples": len(y)}),
        }
    )
    return Message(content=content, reply_to=msg)


# ---- server side (a thread of the driver process) -----------------------------------------------


class ReplayFedAvg(FedAvg):
    """FedAvg whose round-r cohort is fedkit's (`cohorts[r - 1]`): FedAvg samples the nodes, then
    each node's message carries the client id it trains (`cid`) in its own config record."""

    def __init__(self, cohorts: list[list[int]], **kwargs):
        super().__init__(**kwargs)
        self.cohorts = cohorts

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        messages = list(super().configure_train(server_round, arrays, config, grid))
        cohort = self.cohorts[server_round - 1]
        if len(messages) != len(cohort):
            raise RuntimeError(f"round {server_round}: {len(messages)} nodes sampled for {len(cohort)} clients")
        out = []
        for m, cid in zip(messages, cohort):
            node_config = ConfigRecord({**dict(config), "cid": int(cid)})
            content = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: node_config})
            out.append(Message(content=content, message_type=m.metadata.message_type, dst_node_id=m.metadata.dst_node_id))
        return out


# Filled by the ServerApp for flower_peer.py to report.
RESULT: dict = {}
JOB: dict = {}  # set by flower_peer.py before run_simulation: data, rounds, eval_threads

server_app = ServerApp()


@server_app.main()
def main(grid: Grid, context: Context) -> None:
    RESULT["main_start"] = time.time()
    fed = peerlib.Federation(JOB["data"])
    rounds, n = JOB["rounds"], len(fed.clients)
    random.seed(fed.seed)  # FedAvg samples nodes with Python's random.sample
    strategy = ReplayFedAvg(
        peerlib.cohorts(fed, rounds),
        fraction_train=fed.per_round / n,
        min_train_nodes=fed.per_round,
        min_available_nodes=n,
        fraction_evaluate=0.0,  # no federated evaluation
    )
    model = fed.model()

    def evaluate(server_round: int, arrays: ArrayRecord) -> MetricRecord | None:
        if server_round != rounds:
            return None
        t = time.time()
        RESULT["train_end"] = t
        torch.set_num_threads(JOB["eval_threads"])
        model.load_state_dict(arrays.to_torch_state_dict())
        loss, acc = peerlib.evaluate(model, fed.test_x, fed.test_y, fed.eval_batch_size)
        RESULT.update(test_loss=loss, test_acc=acc, eval_s=time.time() - t)
        return MetricRecord({"test_loss": loss, "test_acc": acc})

    RESULT["train_start"] = time.time()
    result = strategy.start(
        grid=grid,
        initial_arrays=ArrayRecord(model.state_dict()),
        num_rounds=rounds,
        train_config=ConfigRecord({"data": str(JOB["data"])}),
        evaluate_fn=evaluate,
    )
    last = result.train_metrics_clientapp.get(rounds)
    if last is not None and "train_loss" in last:
        RESULT["client_loss"] = float(last["train_loss"])

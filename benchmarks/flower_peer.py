"""hpcfed's pFedMMA clients under Flower's simulation engine (Ray backend): the Flower side of benchmarks/flower.py.

Flower virtual client i *is* hpcfed client i: the same ClientHost code (hpcfed/train/client.py), built in-process
without MPI exactly as hpcfed.train.setup.build_host builds it, trained with the same `host.train(client, round)`,
uploading only `host.shared_contribution()` with its train-set size as weight. The server is Flower's stock FedAvg
(sum of w_i / sum(w) * theta_i in float64), the float32 cast on arrival as in hpcfed's `weighted_average`.

Personal state (the personal adapter weights, the optimizer's momentum, the data-order RNG) lives in Flower's
`Context.state`, the per-node RecordDict that survives across rounds (Flower ships it to whichever actor runs the
node, with every message): actors are shared by all virtual clients, so nothing per client may stay in them.
What an actor does keep is the frozen backbone: one ClientHost per actor process, built on its first message.

Evaluation mirrors hpcfed's loop with eval_every=rounds: every client, after aggregation, in the first and the last
round only. Round 1 carries no parameters: every client starts from the same seeded initialisation, as in hpcfed,
whose server never builds the model either.

Run with .venv-flower (benchmarks/flower_setup.sh), on splits made by `hpcfed split`:
  python benchmarks/flower_peer.py configs/demo.yaml -o rounds=4 --splits S.h5 --result R.json --workdir W
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import sys
import time
import traceback
from pathlib import Path

# Flower phones home and checks for updates unless told not to; Ray 2.55 warns about accelerator variables.
os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")
os.environ.setdefault("FLWR_DISABLE_UPDATE_CHECK", "1")
os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402


class Cpu:
    """The one thing build_host reads of hpcfed's MPI Runtime."""

    device = "cpu"


class Peer:
    """One actor's hpcfed ClientHost, holding every client, and the moves of a client's personal state between
    the host and Flower's Context.state."""

    def __init__(self, config: str, overrides: list[str], splits_file: str):
        import torch

        from hpcfed.config import load_config
        from hpcfed.data import load_listing
        from hpcfed.train.setup import build_host, prepare_splits

        torch.set_num_threads(1)  # as hpcfed's runtime.threads: one thread per worker
        # output= the split file: prepare_splits reuses its splits (and refuses them if they do not match the config).
        cfg = load_config(config, [*overrides, f"output={splits_file}"])
        listing = load_listing(cfg.data.dataset, cfg.data.root, cfg.data.domains, cfg.data.class_names_file)
        prepared = prepare_splits(cfg, listing)
        listing = listing.without(prepared.unreadable)
        self.host = build_host(cfg, Cpu(), listing, prepared.splits, list(range(cfg.clients)))
        self.initial = copy.deepcopy(self.host.client_states())  # what a client holds before its first round
        self.initial_shared = self.host.global_shared.clone()

    def restore(self, index: int, state: RecordDict) -> None:
        """Put client `index`'s personal state from its Context into the host (its initial state the first time)."""
        if "local" not in state.array_records:
            self.host.set_client_state(index, self.initial[index])
            return
        optimizer = self.initial[index]["optimizer"]
        if optimizer is not None:
            per_param: dict[int, dict] = {}
            for key, value in state.array_records["optimizer"].to_torch_state_dict().items():
                param, name = key.split("/")
                per_param.setdefault(int(param), {})[name] = value
            optimizer = {"state": per_param, "param_groups": optimizer["param_groups"]}
        self.host.set_client_state(index, {"local": state.array_records["local"].to_torch_state_dict(),
                                           "optimizer": optimizer,
                                           "data_rng": json.loads(state.config_records["data_rng"]["state"])})

    def save(self, index: int, state: RecordDict) -> None:
        saved = self.host.client_states()[index]
        state.array_records["local"] = ArrayRecord(torch_state_dict=saved["local"])
        moments = {f"{param}/{name}": value for param, values in (saved["optimizer"] or {"state": {}})["state"].items()
                   for name, value in values.items()}
        state.array_records["optimizer"] = ArrayRecord(torch_state_dict=moments) if moments else ArrayRecord()
        # PCG64's state holds 128-bit integers: JSON keeps them exact, a ConfigRecord int would not.
        state.config_records["data_rng"] = ConfigRecord({"state": json.dumps(saved["data_rng"])})

    def set_global(self, arrays: ArrayRecord) -> None:
        import torch

        received = arrays.to_numpy_ndarrays()[0]
        self.host.global_shared = (self.initial_shared.clone() if received.size == 0
                                   else torch.from_numpy(received.astype(np.float32)))


_PEERS: dict[str, Peer] = {}  # per actor process; this module is imported by the actors, so it lives across messages


def peer_for(config: ConfigRecord) -> Peer:
    key = config["setup"]
    if key not in _PEERS:
        setup = json.loads(key)
        _PEERS[key] = Peer(setup["config"], setup["overrides"], setup["splits"])
    return _PEERS[key]


app = ClientApp()


@app.train()
def train(msg: Message, context: Context) -> Message:
    peer = peer_for(msg.content["config"])
    started = time.time()  # this worker is ready: backbone built, data listed
    index = int(context.node_config["partition-id"])
    peer.restore(index, context.state)
    peer.set_global(msg.content["arrays"])
    client = peer.host.clients[index]
    t = time.time()
    loss = peer.host.train(client, int(msg.content["config"]["server-round"]) - 1)
    train_s = time.time() - t  # the part hpcfed's /timing/train also measures
    peer.save(index, context.state)
    metrics = MetricRecord({"num-examples": len(client.split.train), "train_loss": loss, "client": index,
                            "pid": os.getpid(), "started": started, "train_s": train_s})
    return Message(RecordDict({"arrays": ArrayRecord([peer.host.shared_contribution()]), "metrics": metrics}),
                   reply_to=msg)


@app.evaluate()
def evaluate(msg: Message, context: Context) -> Message:
    peer = peer_for(msg.content["config"])
    index = int(context.node_config["partition-id"])
    peer.restore(index, context.state)
    peer.set_global(msg.content["arrays"])
    client = peer.host.clients[index]
    scores = peer.host.evaluate(client)
    metrics = MetricRecord({"num-examples": len(client.split.test), "client": index,
                            "test_accuracy": scores["test_accuracy"], "val_accuracy": scores["val_accuracy"]})
    return Message(RecordDict({"metrics": metrics}), reply_to=msg)


RESULT: dict = {"round_start": [], "first_round": [], "busiest_train_s": [], "test_accuracy": {}, "error": None}


def _ok(replies, n_clients: int, what: str) -> list[Message]:
    """Flower logs a failed client and aggregates the rest; a benchmark must stop instead."""
    replies = list(replies)
    failed = [m.error.reason for m in replies if m.has_error()]
    if failed or len(replies) != n_clients:
        raise RuntimeError(f"{what}: {len(replies) - len(failed)} of {n_clients} clients replied; errors: {failed}")
    return replies


class TimedFedAvg(FedAvg):
    """FedAvg over every client, stamping when each round starts; evaluates in the first and last round only."""

    def __init__(self, n_clients: int, rounds: int):
        super().__init__(fraction_train=1.0, fraction_evaluate=1.0, min_train_nodes=n_clients,
                         min_evaluate_nodes=n_clients, min_available_nodes=n_clients)
        self.n_clients, self.rounds = n_clients, rounds

    def configure_train(self, server_round, arrays, config, grid):
        RESULT["round_start"].append(time.time())
        return super().configure_train(server_round, arrays, config, grid)

    def aggregate_train(self, server_round, replies):
        replies = _ok(replies, self.n_clients, f"round {server_round} training")
        calls = [{k: r.content["metrics"][k] for k in ("client", "pid", "started", "train_s")} for r in replies]
        if server_round == 1:
            RESULT["first_round"] = calls
        per_worker: dict[int, float] = {}
        for call in calls:
            per_worker[call["pid"]] = per_worker.get(call["pid"], 0.0) + call["train_s"]
        RESULT["busiest_train_s"].append(max(per_worker.values()))
        return super().aggregate_train(server_round, replies)

    def configure_evaluate(self, server_round, arrays, config, grid):
        if server_round not in (1, self.rounds):
            return []
        return super().configure_evaluate(server_round, arrays, config, grid)

    def aggregate_evaluate(self, server_round, replies):
        if server_round not in (1, self.rounds):
            return None
        replies = _ok(replies, self.n_clients, f"round {server_round} evaluation")
        accuracy = {int(r.content["metrics"]["client"]): r.content["metrics"]["test_accuracy"] for r in replies}
        RESULT["test_accuracy"][server_round] = [accuracy[c] for c in range(self.n_clients)]
        return super().aggregate_evaluate(server_round, replies)


def make_server(setup: dict, n_clients: int, rounds: int) -> ServerApp:
    server = ServerApp()

    @server.main()
    def main(grid: Grid, context: Context) -> None:
        config = ConfigRecord({"setup": json.dumps(setup)})
        try:
            TimedFedAvg(n_clients, rounds).start(grid=grid, initial_arrays=ArrayRecord([np.zeros(0)]),
                                                 num_rounds=rounds, train_config=config, evaluate_config=config)
            RESULT["finished"] = time.time()
        except Exception:  # run_simulation would only log it; the driver must see the failure
            RESULT["error"] = traceback.format_exc()

    return server


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("config")
    parser.add_argument("-o", "--override", dest="overrides", action="append", default=[], metavar="KEY=VALUE")
    parser.add_argument("--splits", required=True, help="run file holding the splits (from `hpcfed split`)")
    parser.add_argument("--result", required=True, help="JSON file for timestamps and accuracies")
    parser.add_argument("--workdir", required=True, help="Flower home and Ray session dir (keep the path short)")
    parser.add_argument("--workers", type=int, default=2, help="Ray actors, one CPU each")
    args = parser.parse_args()

    from hpcfed.config import load_config

    cfg = load_config(args.config, args.overrides)
    workdir = Path(args.workdir).resolve()
    os.environ["FLWR_HOME"] = str(workdir / "flwr")  # run_simulation writes here instead of ~/.flwr
    from flwr.simulation import run_simulation

    setup = {"config": str(Path(args.config).resolve()), "overrides": args.overrides,
             "splits": str(Path(args.splits).resolve())}
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": args.workers, "logging_level": "ERROR", "log_to_driver": True,
                             "include_dashboard": False, "_temp_dir": str(workdir / "ray")}}
    run_simulation(server_app=make_server(setup, cfg.clients, cfg.rounds), client_app=app,
                   num_supernodes=cfg.clients, backend_config=backend)
    Path(args.result).write_text(json.dumps(RESULT, indent=1))
    if RESULT["error"] or "finished" not in RESULT:
        sys.stderr.write(f"flower_peer: the ServerApp failed:\n{RESULT['error']}\n")
        return 1
    return 0


if __name__ == "__main__":
    # Run as the module `flower_peer`, not as __main__: Ray pickles the ClientApp with every message, and only
    # functions of an importable module travel by reference, so each actor keeps its built host (_PEERS).
    here = str(Path(__file__).resolve().parent)
    sys.path.insert(0, here)
    os.environ["PYTHONPATH"] = os.pathsep.join(p for p in (here, os.environ.get("PYTHONPATH")) if p)  # Ray actors
    import flower_peer

    sys.exit(flower_peer.main())

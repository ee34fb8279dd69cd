"""Checkpoint write, verify and read time and file count at 10, 100 and 1,000 clients: one file per client rank
(hpcfed now) against one file per client (hpcfed before rank files), side by side in one run.

    python benchmarks/checkpoint_bench.py [--out runs/bench/checkpoint]

Every client's record is the personal state of a pFedMMA client of configs/demo.yaml after one local epoch
(adapter weights, Adam moments, data RNG: about 0.6 MB), so the files have a realistic size. The ranks of a job of
CLIENT_RANKS client ranks are simulated in one process, each rank's part written and read in turn; the layouts
alternate, so both meet the same machine. The files were just written, so reads come from the page cache: the
figures show the per-file cost a local disk adds, far below what a parallel file system's metadata server adds."""

from __future__ import annotations

import argparse
import copy
import json
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).parent))

from common import REPO, log, median  # noqa: E402

CLIENTS = (10, 100, 1000)
CLIENT_RANKS = 4
LAYOUTS = ("per client", "per rank")  # before, now
METRICS = {"files": "files", "mb": "MB", "write": "write s", "verify": "verify s", "read": "read s (every rank)",
           "read one client": "read one client s"}


def demo_client_record(out: Path) -> tuple[dict, dict]:
    """(a trained pFedMMA client's checkpoint record, the global state) of the demo config."""
    from hpcfed.config import load_config
    from hpcfed.data import load_listing
    from hpcfed.runtime import init_runtime
    from hpcfed.train.setup import build_host, prepare_splits

    cfg = load_config(REPO / "configs/demo.yaml", [f"output={out / 'demo.h5'}"])
    listing = load_listing(cfg.data.dataset, cfg.data.root, cfg.data.domains, cfg.data.class_names_file)
    host = build_host(cfg, init_runtime("cpu", 1), listing, prepare_splits(cfg, listing, overwrite=True).splits, [0])
    host.train(host.clients[0], 0)
    return host.client_states()[0], host.global_state()


class Recorder:
    """What checkpoint.load needs of a rank's host: the clients it hosts, somewhere to put their states."""

    def __init__(self, clients: list[int]):
        self.clients, self.states = clients, {}

    def set_global_state(self, state: dict) -> None:
        self.global_state = state

    def set_client_state(self, index: int, state: dict) -> None:
        self.states[index] = state


def write(layout: str, folder: Path, placement: list[list[int]], records: dict[int, dict], global_state: dict) -> Path:
    """A checkpoint in `layout`, written as save() writes it (rank 0 first, the reference rank with global.pt)."""
    from hpcfed.train import checkpoint

    tmp = folder / "round-000001.tmp"
    tmp.mkdir(parents=True)
    parts = [checkpoint.write_part(tmp, 0, {}, {"update.pt": {}})]
    for rank, clients in enumerate(placement, start=1):
        singles = {"global.pt": global_state} if rank == 1 else {}
        if layout == "per client":  # the layout before rank files: every record a file of its own
            parts.append(checkpoint.write_part(tmp, rank, {}, {**singles, **{f"client-{i:05d}.pt": records[i]
                                                                             for i in clients}}))
        else:
            parts.append(checkpoint.write_part(tmp, rank, {i: records[i] for i in clients}, singles))
    header = {"round": 1, "rows": 1, "config_digest": "bench", "world_size": len(placement) + 1}
    checkpoint.seal(tmp, folder / "round-000001", header, parts, keep=1)
    final = folder / "round-000001"
    if layout == "per client":  # its manifest had no client map
        manifest = json.loads((final / "manifest.json").read_text())
        del manifest["clients"]
        (final / "manifest.json").write_text(json.dumps(manifest))
    return final


def measure(n_clients: int, record: dict, global_state: dict, out: Path, reps: int) -> dict[str, dict]:
    from hpcfed.runtime.mpi import place_clients
    from hpcfed.train import checkpoint

    placement = place_clients(np.ones(n_clients), CLIENT_RANKS)  # the run's own client -> rank map
    # a copy per client: torch.save writes a tensor shared by several records once
    records = {index: copy.deepcopy(record) for index in range(n_clients)}
    times = {layout: {"write": [], "verify": [], "read": [], "read one client": []} for layout in LAYOUTS}
    sizes = {}
    for _ in range(reps):
        for layout in LAYOUTS:
            folder = out / f"{n_clients}-{layout.replace(' ', '-')}"
            shutil.rmtree(folder, ignore_errors=True)
            t = time.perf_counter()
            path = write(layout, folder, placement, records, global_state)
            times[layout]["write"].append(time.perf_counter() - t)
            t = time.perf_counter()
            checkpoint.verify(path, "bench", n_clients)
            times[layout]["verify"].append(time.perf_counter() - t)
            t = time.perf_counter()
            for clients in placement:  # every rank restores its clients
                checkpoint.load(path, Recorder(clients))
            times[layout]["read"].append(time.perf_counter() - t)
            t = time.perf_counter()
            checkpoint.load(path, Recorder([n_clients // 2]))
            times[layout]["read one client"].append(time.perf_counter() - t)
            files = list(path.iterdir())
            sizes[layout] = {"files": len(files), "mb": sum(f.stat().st_size for f in files) / 2**20}
            shutil.rmtree(folder)
    return {layout: {**sizes[layout], **{k: median(v) for k, v in times[layout].items()}} for layout in LAYOUTS}


def run(out: Path, reps: int = 3) -> list[dict]:
    """Rows for benchmarks/run.py: baseline = one file per client, hpcfed = one file per client rank."""
    out.mkdir(parents=True, exist_ok=True)
    record, global_state = demo_client_record(out)
    rows = []
    for n in CLIENTS:
        log(f"checkpoint layouts: {n} clients on {CLIENT_RANKS} client ranks")
        figures = measure(n, record, global_state, out, reps)
        old, new = figures["per client"], figures["per rank"]
        notes = f"{CLIENT_RANKS} client ranks simulated in one process"
        for metric, label in METRICS.items():
            rows.append({"section": "checkpoint", "workload": f"{n} clients", "metric": label,
                         "baseline": old[metric], "hpcfed": new[metric], "ratio": old[metric] / new[metric],
                         "reps": reps, "notes": notes})
    return rows


def markdown(rows: list[dict]) -> str:
    lines = ["| clients | metric | one file per client | one file per rank | ratio |", "|---|---|---|---|---|"]
    for r in rows:
        shape = {"files": ",.0f", "MB": ".1f"}.get(r["metric"], ".3f")
        values = [format(r[k], shape) for k in ("baseline", "hpcfed")]
        lines.append(f"| {r['workload']} | {r['metric']} | {values[0]} | {values[1]} | {r['ratio']:.1f}x |")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default="runs/bench/checkpoint", type=Path)
    parser.add_argument("--reps", default=3, type=int)
    args = parser.parse_args()
    rows = run(args.out, args.reps)
    (args.out / "checkpoint.json").write_text(json.dumps({"client_ranks": CLIENT_RANKS, "rows": rows}, indent=1))
    sys.stdout.write(markdown(rows))


if __name__ == "__main__":
    main()

"""The same data split over 10, 100 and 1,000 clients on 2 client ranks (mpiexec -n 3): time per round and per
phase, the per-client fixed cost, peak memory per rank against the personal state of the clients added.

Digits-5-offline (9,797 images, every domain, iid), tiny CLIP, pFedMMA, one local epoch, every client trains every
round (participation 1.0), so the images trained on and scored are the same at every N: what grows with N is the
fixed cost per client (more, smaller batches; per-client state swaps; per-client text passes). The 1,000-client
run scores train.eval_clients sampled clients before its last round, which scores all of them (README,
"Evaluation of many clients")."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
from common import BIN, ENV, REPO, hpcfed_train, log, median

from hpcfed.train.checkpoint import checkpoint_root

CONFIG = str(REPO / "configs/demo.yaml")
DATA = {"data.dataset": "digits5_offline", "data.domains": "null", "data.prompt": "'a photo of the {}.'",
        "partition.scheme": "iid", "partition.base_novel": "false", "partition.min_samples": 1,
        "participation": 1.0, "train.local_epochs": 1, "eval_every": 1, "eval_zero_shot": "false",
        "runtime.checkpoint_every": 0}  # the last round still checkpoints: its archives give the personal state
EVAL_CLIENTS = {1000: 100}  # clients -> train.eval_clients (0: all)


def _phases(result: dict, rounds: slice) -> dict[str, float]:
    """Median over `rounds` of each phase: the slower client rank for train/evaluate/aggregate (the Allreduce with
    the wait for the slower rank); write: rank 0 assembling the round's row (/timing/io; the HDF5 write itself
    comes after the timed round)."""
    t = result["timing"]
    per_round = {"train": t["train"][:, 1:].max(1), "evaluate": t["evaluate"][:, 1:].max(1),
                 "aggregate": t["aggregate"][:, 1:].max(1), "write": t["io"][:, 0],
                 "round": np.asarray(result["round_seconds"])}
    return {name: median(values[rounds]) for name, values in per_round.items()}


def _describe(p: dict[str, float]) -> str:
    return (f"train {p['train']:.2f} / evaluate {p['evaluate']:.2f} / aggregate {p['aggregate']:.2f} / write "
            f"{p['write']:.3f} s")


def personal_state(run: Path) -> dict[str, float]:
    """What one client's personal state costs to hold, from the records the run's last checkpoint wrote for client
    rank 1: MiB of tensor data per client, and MiB of resident memory per client when a fresh process holds them
    all (tensor data plus each tensor's and dict's own overhead)."""
    archive = next(checkpoint_root(run).glob("round-*/rank-0001.zip"))
    out = subprocess.run([str(BIN / "python"), __file__, "--personal-state", str(archive)], env=ENV, cwd=REPO,
                         capture_output=True, text=True, check=True).stdout
    return json.loads(out)


def _hold_records(archive: Path) -> None:
    """--personal-state: load every record of `archive` and print the per-client sizes as JSON."""
    import ctypes
    import zipfile

    import torch

    from hpcfed.torchfile import load_torch_file

    def resident() -> int:
        return int(Path("/proc/self/statm").read_text().split()[1]) * 4096

    with zipfile.ZipFile(archive) as z:
        blobs = [z.read(name) for name in z.namelist()]
    before = resident()
    records = [load_torch_file(blob) for blob in blobs]
    ctypes.CDLL("libc.so.6").malloc_trim(0)  # freed read buffers are not the records' memory
    held = resident() - before

    def tensor_bytes(tree) -> int:
        if isinstance(tree, torch.Tensor):
            return tree.numel() * tree.element_size()
        if isinstance(tree, dict):
            return sum(tensor_bytes(v) for v in tree.values())
        return sum(tensor_bytes(v) for v in tree) if isinstance(tree, list | tuple) else 0

    print(json.dumps({"clients": len(records), "tensor_mib": tensor_bytes(records) / len(records) / 2**20,
                      "held_mib": held / len(records) / 2**20}))


def client_scaling(out: Path, counts=(10, 100, 1000), client_ranks: int = 2) -> list[dict]:
    log(f"the same data over {counts} clients on {client_ranks} client ranks, every client every round")
    rows, full, memory = [], {}, {}  # full: N -> phases of rounds that scored every client
    for n in counts:
        sample = EVAL_CLIENTS.get(n, 0)
        rounds = 4 if sample else 3  # round 1 pays the first decode of every image: rounds 2.. are the steady ones
        overrides = {**DATA, "clients": n, "rounds": rounds, "train.eval_clients": sample}
        result = hpcfed_train(client_ranks + 1, CONFIG, overrides, out / f"clients-{n}.h5", match_memory=True)
        steady = _phases(result, slice(1, rounds - 1 if sample else rounds))
        full[n] = _phases(result, slice(rounds - 1, rounds)) if sample else steady
        memory[n] = max(result["peak_rank_mb"])
        evaluated = f"{sample} sampled clients evaluated per round (train.eval_clients: {sample}), all {n} at the " \
                    f"last round" if sample else f"all {n} clients evaluated every round"
        log(f"  {n} clients: {steady['round']:.2f} s/round ({_describe(steady)}), peak {memory[n]:.0f} MB per rank")
        rows.append({"section": "clients", "workload": f"{n} clients, {client_ranks} client ranks, all train",
                     "metric": "s per round", "baseline": None, "hpcfed": steady["round"], "ratio": None, "reps": 1,
                     "notes": f"{evaluated}; median of rounds 2..{rounds - 1 if sample else rounds}: "
                              f"{_describe(steady)}; peak {memory[n]:.0f} MB per rank"})
        if sample:
            rows.append({"section": "clients", "workload": f"{n} clients, last round (all {n} evaluated)",
                         "metric": "s per round", "baseline": None, "hpcfed": full[n]["round"], "ratio": None,
                         "reps": 1, "notes": _describe(full[n])})
    small, large = counts[0], counts[-1]
    steady_large = rows[[r["workload"] for r in rows].index(f"{large} clients, {client_ranks} client ranks, "
                                                            f"all train")]["hpcfed"]
    for name, value, what in (("", steady_large, f"train.eval_clients {EVAL_CLIENTS.get(large, 0)}"),
                              (", all evaluated", full[large]["round"], f"all {large} evaluated")):
        rows.append({"section": "clients", "workload": f"{large} vs {small} clients{name}", "metric": "s per round",
                     "baseline": full[small]["round"], "hpcfed": value, "ratio": full[small]["round"] / value,
                     "reps": 1, "notes": f"target: {large} clients at most 3x the {small}-client round (ratio >= "
                                         f"0.33); {what} at {large}, every client trains at both"})
    # Fully evaluated rounds, the same images trained and scored at every N: slopes over N are per-client costs.
    ns = np.array(counts, dtype=float)
    slope = {phase: 1000 * np.polyfit(ns, [full[n][phase] for n in counts], 1)[0]
             for phase in ("round", "train", "evaluate")}
    log(f"  per-client fixed cost: {slope['round']:.1f} ms (training {slope['train']:.1f}, evaluation "
        f"{slope['evaluate']:.1f})")
    rows.append({"section": "clients", "workload": f"{', '.join(map(str, counts))} clients, all evaluated",
                 "metric": "ms per client per round", "baseline": None, "hpcfed": slope["round"], "ratio": None,
                 "reps": 1, "notes": f"slope over N of the round time (the same images trained and scored at every "
                                     f"N): training {slope['train']:.1f} ms, evaluation {slope['evaluate']:.1f} ms "
                                     f"(on the slower of {client_ranks} ranks, each holding N/{client_ranks} "
                                     f"clients)"})
    state = personal_state(out / f"clients-{large}.h5")
    # The steeper of the slopes to the largest N: a small N's larger evaluation batches can raise its own peak.
    base = max(counts[:-1], key=lambda n: (memory[large] - memory[n]) / (large - n))
    growth = (memory[large] - memory[base]) / ((large - base) / client_ranks)
    log(f"  peak memory per rank grows {growth:.3f} MB per added client; personal state {state['held_mib']:.3f} MB "
        f"held ({state['tensor_mib']:.3f} MB of tensors)")
    rows.append({"section": "clients", "workload": f"{base} -> {large} clients", "metric": "MB per added client",
                 "baseline": state["held_mib"], "hpcfed": growth, "ratio": state["held_mib"] / growth, "reps": 1,
                 "notes": f"growth of the peak per rank ({memory[base]:.0f} -> {memory[large]:.0f} MB; peaks "
                          f"{', '.join(f'{n}: {memory[n]:.0f}' for n in counts)}) per client "
                          f"added to a rank, against the personal state a process needs to hold one client's "
                          f"checkpoint record ({state['tensor_mib']:.3f} MB of it tensor data: local parameters, "
                          f"optimizer state); target ratio >= 1"})
    return rows


if __name__ == "__main__":
    if sys.argv[1:2] != ["--personal-state"] or len(sys.argv) != 3:
        sys.exit("this module is a section of make bench: run `benchmarks/run.py --only clients` (its own entry "
                 "point, --personal-state ARCHIVE, is what that section calls)")
    _hold_records(Path(sys.argv[2]))

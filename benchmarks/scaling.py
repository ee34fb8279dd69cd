"""The same data split over 10, 100 and 1,000 clients on 2 client ranks (mpiexec -n 3): time per round and per
phase, the per-client fixed cost, peak memory per rank.

Digits-5-offline (9,797 images, every domain, iid), tiny CLIP, pFedMMA, one local epoch, 10 participants per round
(participation 10/N), every round evaluated. The images to score are the same at every N (every client's validation
and test split: the whole dataset's), so what evaluation adds with N is its fixed cost per client; training differs
(10 participants hold 590, 59 or 6 images each). The 1,000-client run scores train.eval_clients sampled clients
before its last round, which scores all of them (README, "Evaluation of many clients")."""

from __future__ import annotations

from pathlib import Path

import numpy as np
from common import REPO, hpcfed_train, log, median

CONFIG = str(REPO / "configs/demo.yaml")
DATA = {"data.dataset": "digits5_offline", "data.domains": "null", "data.prompt": "'a photo of the {}.'",
        "partition.scheme": "iid", "partition.base_novel": "false", "partition.min_samples": 1,
        "train.local_epochs": 1, "eval_every": 1, "eval_zero_shot": "false", "runtime.checkpoint_every": 0}
PARTICIPANTS = 10
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


def client_scaling(out: Path, counts=(10, 100, 1000), client_ranks: int = 2) -> list[dict]:
    log(f"the same data over {counts} clients on {client_ranks} client ranks")
    rows, full = [], {}  # full: N -> phases of rounds that scored every client
    for n in counts:
        sample = EVAL_CLIENTS.get(n, 0)
        rounds = 4 if sample else 3  # round 0 trains every client: rounds 1.. are the steady ones
        overrides = {**DATA, "clients": n, "participation": min(1.0, PARTICIPANTS / n), "rounds": rounds,
                     "train.eval_clients": sample}
        result = hpcfed_train(client_ranks + 1, CONFIG, overrides, out / f"clients-{n}.h5", match_memory=True)
        steady = _phases(result, slice(1, rounds - 1 if sample else rounds))
        full[n] = _phases(result, slice(rounds - 1, rounds)) if sample else steady
        rank_mb = max(result["peak_rank_mb"])
        evaluated = f"{sample} sampled clients evaluated per round (train.eval_clients: {sample}), all {n} at the " \
                    f"last round" if sample else f"all {n} clients evaluated every round"
        log(f"  {n} clients: {steady['round']:.2f} s/round ({_describe(steady)}), peak {rank_mb:.0f} MB per rank")
        rows.append({"section": "scaling", "workload": f"{n} clients, {client_ranks} client ranks, "
                     f"{PARTICIPANTS} participants", "metric": "s per round", "baseline": None,
                     "hpcfed": steady["round"], "ratio": None, "reps": 1,
                     "notes": f"{evaluated}; median of rounds 2..{rounds - 1 if sample else rounds}: "
                              f"{_describe(steady)}; peak {rank_mb:.0f} MB per rank"})
        if sample:
            rows.append({"section": "scaling", "workload": f"{n} clients, last round (all {n} evaluated)",
                         "metric": "s per round", "baseline": None, "hpcfed": full[n]["round"], "ratio": None,
                         "reps": 1, "notes": _describe(full[n])})
        rows.append({"section": "scaling", "workload": f"{n} clients on {client_ranks} client ranks",
                     "metric": "peak MB per rank", "baseline": None, "hpcfed": rank_mb, "ratio": None, "reps": 1,
                     "notes": "PSS of the largest rank"})
    small, large = counts[0], counts[-1]
    steady_large = [r for r in rows if r["workload"].startswith(f"{large} clients, ")][0]["hpcfed"]
    steady_small = full[small]["round"]
    rows.append({"section": "scaling", "workload": f"{large} vs {small} clients", "metric": "s per round",
                 "baseline": steady_small, "hpcfed": steady_large, "ratio": steady_small / steady_large, "reps": 1,
                 "notes": f"target: {large} clients at most 3x the {small}-client round (ratio >= 0.33); "
                          f"train.eval_clients {EVAL_CLIENTS.get(large, 0)} at {large}"})
    # Rounds that scored every client: round time minus training, and evaluation alone, against N.
    ns = np.array(counts, dtype=float)
    outside = np.polyfit(ns, [full[n]["round"] - full[n]["train"] for n in counts], 1)[0]
    evaluate = np.polyfit(ns, [full[n]["evaluate"] for n in counts], 1)[0]
    log(f"  per-client fixed cost: {1000 * outside:.1f} ms (evaluation {1000 * evaluate:.1f} ms)")
    rows.append({"section": "scaling", "workload": f"{', '.join(map(str, counts))} clients, all evaluated",
                 "metric": "ms per client per round", "baseline": None, "hpcfed": 1000 * outside, "ratio": None,
                 "reps": 1, "notes": f"slope over N of the round time minus training (fully evaluated rounds, "
                                     f"the same images scored at every N); evaluation phase alone "
                                     f"{1000 * evaluate:.1f} ms per client (on the slower of {client_ranks} ranks, "
                                     f"each holding N/{client_ranks} clients)"})
    return rows

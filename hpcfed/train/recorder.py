"""Rank 0's side of each round: assemble the rows gathered from the client ranks, write them to the run file,
print one progress line, and at the end store the selected and last rounds in /final."""

from __future__ import annotations

import sys
import time

import numpy as np

from hpcfed.config import Config
from hpcfed.metrics import format_accuracy, format_bytes, format_duration, select_round
from hpcfed.results import CLIENT_METRICS, PHASES, RunWriter
from hpcfed.rng import evaluation_sample
from hpcfed.runtime import SERVER


def is_eval_round(cfg: Config, r: int) -> bool:
    return (r + 1) % cfg.eval_every == 0 or r == 0 or r == cfg.rounds - 1


def evaluated_clients(cfg: Config, r: int) -> np.ndarray | None:
    """The clients an evaluation round scores: with train.eval_clients, a sample drawn from the seed at every
    round but the last (the same on any number of ranks); None: every client (the last round always)."""
    return None if r == cfg.rounds - 1 else evaluation_sample(cfg.seed, r, cfg.clients, cfg.train.eval_clients)


def _fully_evaluated(cfg: Config, r: int, rows: dict[str, np.ndarray]) -> bool:
    """Whether a stored round scored every client: not sampled, or (the last round of an earlier, shorter start)
    a client outside its sample has a score."""
    sample = evaluated_clients(cfg, r)
    if sample is None:
        return True
    outside = np.setdiff1d(np.arange(cfg.clients), sample)
    return any(np.isfinite(rows[name][outside]).any() for name in CLIENT_METRICS if name != "train_loss")


class Recorder:
    """Rank 0's record of the run (see the module docstring)."""

    def __init__(self, cfg: Config, writer: RunWriter, splits, n_domains: int, first_round: int = 0):
        self.cfg, self.writer, self.n_domains, self.first_round = cfg, writer, n_domains, first_round
        self.client_domain = np.array([c.domain for c in splits.clients])
        # Rounds evaluated before a resume come back from the run file, for the model selection at the end; with
        # more rounds than before, the old last round was evaluated although is_eval_round now says no.
        before = {name: writer.file[f"metrics/client/{name}"][:first_round] for name in CLIENT_METRICS}
        self.evaluated = {r: {name: rows[r] for name, rows in before.items()} for r in range(first_round)
                          if is_eval_round(cfg, r) or np.isfinite(before["test_accuracy"][r]).any()}
        # Model selection looks only at rounds that scored every client (train.eval_clients samples the others).
        self.fully_evaluated = {r for r, rows in self.evaluated.items() if _fully_evaluated(cfg, r, rows)}
        self.started = time.perf_counter()

    def zero_shot(self, gathered: list[dict[int, dict[str, float]]]) -> None:
        """Store CLIP zero-shot per client (gathered from every rank before round 1) in /final/zeroshot."""
        rows = {name: np.full(self.cfg.clients, np.nan) for name in CLIENT_METRICS}
        for rank_metrics in gathered:
            for c, values in rank_metrics.items():
                for name, v in values.items():
                    rows[name][c] = v
        self.writer.write_final("zeroshot", -1, rows, self.client_domain, self.n_domains)
        sys.stdout.write(f"zero-shot  Local {format_accuracy(np.nanmean(rows['test_accuracy']))}  (CLIP, before "
                         "training)\n")
        sys.stdout.flush()

    def round(self, r: int, selected: np.ndarray, evaluate: bool, gathered: list, comm: dict, round_start: float,
              update: dict | None = None):
        t = time.perf_counter()
        rows = {name: np.full(self.cfg.clients, np.nan) for name in CLIENT_METRICS}
        for rank_metrics, _ in gathered:
            for c, values in rank_metrics.items():
                for name, v in values.items():
                    rows[name][c] = v
        round_seconds = time.perf_counter() - round_start
        mean_acc = float(np.nanmean(rows["test_accuracy"])) if evaluate else float("nan")
        train_losses = rows["train_loss"][np.isfinite(rows["train_loss"])]
        global_row = {"mean_test_accuracy": mean_acc,
                      "mean_train_loss": float(train_losses.mean()) if len(train_losses) else float("nan"),
                      "participants": len(selected), "round_seconds": round_seconds}
        timing_rows = {p: np.array([g[1][p] for g in gathered]) for p in PHASES}
        timing_rows["io"][SERVER] = time.perf_counter() - t
        self.writer.write_round(r, rows, global_row, timing_rows, comm, update or {})
        sampled = evaluate and evaluated_clients(self.cfg, r) is not None
        if evaluate:
            self.evaluated[r] = rows
            if not sampled:
                self.fully_evaluated.add(r)
        elapsed = time.perf_counter() - self.started
        # The aggregate phase is mostly client ranks waiting for the slowest one, then the Allreduce itself.
        sync_share = float(np.mean(timing_rows["aggregate"][1:]) / max(round_seconds, 1e-9))
        moved = int(comm["up"].sum() + comm["down"].sum())
        eta = elapsed / (r + 1 - self.first_round) * (self.cfg.rounds - r - 1)
        sys.stdout.write(
            f"round {r + 1:>3}/{self.cfg.rounds}  Local {format_accuracy(mean_acc)}"
            f"{f' ({self.cfg.train.eval_clients} sampled)' if sampled else ''}  "
            f"train loss {global_row['mean_train_loss']:.3f}  {round_seconds:.2f} s/round  "
            f"wait+sync {sync_share:.0%}  moved {format_bytes(moved)}  ETA {format_duration(eta)}\n")
        sys.stdout.flush()

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        rounds, candidates = sorted(self.evaluated), sorted(self.fully_evaluated)
        chosen, how = select_round(candidates, {r: self.evaluated[r]["val_accuracy"] for r in candidates})
        if len(candidates) < len(rounds):  # /final/selection holds 64 bytes
            how += ", full rounds only"  # train.eval_clients: the others scored a sample
        for which, r in (("selected", chosen), ("last", rounds[-1])):
            self.writer.write_final(which, r, self.evaluated[r], self.client_domain, self.n_domains)
        self.writer.write_selection(how)
        self.writer.close("finished")
        return self.evaluated[rounds[0]]["test_accuracy"], self.evaluated[rounds[-1]]["test_accuracy"]

"""Rank 0's side of each round: assemble the rows gathered from the client ranks, write them to the run file,
print one progress line, and at the end store the selected and last rounds in /final."""

from __future__ import annotations

import sys
import time

import numpy as np

from hpcfed.config import Config
from hpcfed.metrics import format_accuracy, format_bytes, format_duration, select_round
from hpcfed.results import CLIENT_METRICS, PHASES, RunWriter
from hpcfed.runtime import SERVER


def is_eval_round(cfg: Config, r: int) -> bool:
    return (r + 1) % cfg.eval_every == 0 or r == 0 or r == cfg.rounds - 1


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
        if evaluate:
            self.evaluated[r] = rows
        elapsed = time.perf_counter() - self.started
        # The aggregate phase is mostly client ranks waiting for the slowest one, then the Allreduce itself.
        sync_share = float(np.mean(timing_rows["aggregate"][1:]) / max(round_seconds, 1e-9))
        moved = int(comm["up"].sum() + comm["down"].sum())
        eta = elapsed / (r + 1 - self.first_round) * (self.cfg.rounds - r - 1)
        sys.stdout.write(
            f"round {r + 1:>3}/{self.cfg.rounds}  Local {format_accuracy(mean_acc)}  "
            f"train loss {global_row['mean_train_loss']:.3f}  {round_seconds:.2f} s/round  "
            f"wait+sync {sync_share:.0%}  moved {format_bytes(moved)}  ETA {format_duration(eta)}\n")
        sys.stdout.flush()

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        rounds = sorted(self.evaluated)
        chosen, how = select_round(rounds, {r: self.evaluated[r]["val_accuracy"] for r in rounds})
        for which, r in (("selected", chosen), ("last", rounds[-1])):
            self.writer.write_final(which, r, self.evaluated[r], self.client_domain, self.n_domains)
        self.writer.write_selection(how)
        self.writer.close("finished")
        return self.evaluated[rounds[0]]["test_accuracy"], self.evaluated[rounds[-1]]["test_accuracy"]

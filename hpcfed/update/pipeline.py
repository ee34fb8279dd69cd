"""`SharedUpdate`: the stages of hpcfed.update in the order of a round (see the package docstring)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from hpcfed.update.dropout import Dropout
from hpcfed.update.privacy import Privacy
from hpcfed.update.secagg import SecureAggregation
from hpcfed.update.server_opt import make_server_optimizer


@dataclass(frozen=True)
class RoundPlan:
    """Who does what in round `round`; every rank computes the same plan from the seed."""

    round: int
    selected: np.ndarray  # sampled clients
    trains: np.ndarray  # selected clients that train (the others dropped out before training)
    contributes: np.ndarray  # clients whose update reaches the sum
    dropped_after_masking: np.ndarray  # trained and masked, lost before the sum (secure aggregation recovers)
    virtual_seconds: np.ndarray  # [clients] time on the virtual clock (nan: did not train)


class SharedUpdate:
    """One per rank for the whole run; `state_dict` is the same on every rank and goes into checkpoints."""

    def __init__(self, cfg, n_shared: int, train_sizes: np.ndarray | None = None):
        self.cfg, self.n_shared = cfg, n_shared
        # A client's work on the virtual clock: its training samples (one each when not given) x local epochs.
        train_sizes = np.ones(cfg.clients) if train_sizes is None else train_sizes
        self.dropout = Dropout(cfg.dropout, cfg.seed, train_sizes * cfg.train.local_epochs)
        self.privacy = Privacy(cfg.privacy, cfg.seed, cfg.trained_clients, cfg.participation)
        self.secagg = SecureAggregation(cfg.secure_aggregation, cfg.seed, cfg.clients)
        self.optimizer = make_server_optimizer(cfg.server, n_shared)

    @property
    def buffer_size(self) -> int:
        """Floats summed per round: the weighted deltas, the weight total, then whatever the stages add."""
        return self.n_shared + 1 + self.privacy.extra_slots

    def plan(self, r: int, selected: np.ndarray) -> RoundPlan:
        return self.dropout.plan(r, selected)

    def contribution(self, plan: RoundPlan, client: int, delta: torch.Tensor, weight: float) -> torch.Tensor:
        """What `client` adds to the buffer: its (clipped) delta times its weight, the weight, the stages' slots."""
        delta, weight, extra = self.privacy.client(plan, client, delta, weight)
        return torch.cat([delta * weight, delta.new_tensor([weight]), extra.to(delta)])

    def accumulator(self, plan: RoundPlan, buffer):
        """Where this round's client rows go (`.add(client, row)`) before the sum lands in `buffer`: added into
        it, or (secure aggregation) encoded and masked into integers."""
        return self.secagg.accumulator(plan, buffer)

    def allreduce(self, rt, plan: RoundPlan, accumulator) -> None:
        """Sum over all ranks into `accumulator.buffer`; rank 0 first adds its own part (noise) into its zeros."""
        if rt.is_server:
            self.privacy.server(plan, torch.as_tensor(accumulator.buffer), self.n_shared)
        self.secagg.allreduce(rt, plan, accumulator)

    def step(self, plan: RoundPlan, global_shared: torch.Tensor | None, summed) -> torch.Tensor | None:
        """The new global state from the summed buffer (float32, on global_shared's device); None when nobody
        contributed. Every rank calls it, so the server optimizer's state is the same everywhere; the server
        (global_shared None) only advances that state."""
        summed = torch.as_tensor(summed)
        mean_delta = self.privacy.mean_delta(plan, summed, self.n_shared)
        if mean_delta is None:
            return None
        move = self.optimizer.step(mean_delta.double().cpu())
        if global_shared is None:
            return None
        return (global_shared.double() + move.to(global_shared.device)).float()

    def after_round(self, plan: RoundPlan, summed) -> None:
        """Stage state that depends on the sum (adaptive clip norm); every rank, after `step`."""
        self.privacy.after_round(plan, torch.as_tensor(summed), self.n_shared)

    def upload_bytes(self, plan: RoundPlan, plain_floats: int) -> np.ndarray:
        """Per client, the bytes it uploads this round (`plain_floats` fp32 values without secure aggregation)."""
        return self.secagg.upload_bytes(plan, plain_floats, self.buffer_size)

    def record(self, plan: RoundPlan) -> dict[str, np.ndarray | float]:
        """This round's /update rows for the run file (rank 0 writes them)."""
        return {**self.dropout.record(plan), **self.privacy.record(plan), **self.secagg.record(plan)}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "privacy": self.privacy.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.privacy.load_state_dict(state["privacy"])

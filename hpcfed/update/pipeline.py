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
    virtual_seconds: np.ndarray  # [clients] time on the virtual clock (nan: not selected)


class SharedUpdate:
    """One per rank for the whole run; `state_dict` is the same on every rank and goes into checkpoints."""

    def __init__(self, cfg, n_shared: int):
        self.cfg, self.n_shared = cfg, n_shared
        self.dropout = Dropout(cfg.dropout, cfg.seed, cfg.clients)
        self.privacy = Privacy(cfg.privacy, cfg.seed, cfg.clients, cfg.participation)
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

    def allreduce(self, rt, plan: RoundPlan, buffer) -> None:
        """Sum `buffer` over all ranks in place; rank 0 first adds its own part (noise) into its zeros."""
        if rt.is_server:
            self.privacy.server(plan, torch.as_tensor(buffer), self.n_shared)
        self.secagg.allreduce(rt, plan, buffer, self.n_shared)

    def step(self, plan: RoundPlan, global_shared: torch.Tensor, summed) -> torch.Tensor | None:
        """The new global state from the summed buffer (float32 on the CPU); None when nobody contributed."""
        summed = torch.as_tensor(summed)
        mean_delta = self.privacy.mean_delta(plan, summed, self.n_shared)
        if mean_delta is None:
            return None
        return self.optimizer.step(global_shared.double(), mean_delta.double().cpu()).float()

    def after_round(self, plan: RoundPlan, summed) -> None:
        """Stage state that depends on the sum (adaptive clip norm); every rank, after `step`."""
        self.privacy.after_round(plan, torch.as_tensor(summed), self.n_shared)

    def record(self, plan: RoundPlan) -> dict[str, np.ndarray | float]:
        """This round's /update rows for the run file (rank 0 writes them)."""
        return {**self.dropout.record(plan), **self.privacy.record(plan)}

    def state_dict(self) -> dict:
        return {"optimizer": self.optimizer.state_dict(), "privacy": self.privacy.state_dict()}

    def load_state_dict(self, state: dict) -> None:
        self.optimizer.load_state_dict(state["optimizer"])
        self.privacy.load_state_dict(state["privacy"])

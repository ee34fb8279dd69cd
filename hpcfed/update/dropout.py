"""Client dropouts and stragglers (`dropout:` section). Off by default: every selected client trains and
contributes."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np


@dataclass
class DropoutConfig:
    """The `dropout:` section of a run config."""

    probability: float = 0.0  # chance that a selected client drops out in a round


class Dropout:
    def __init__(self, cfg: DropoutConfig, seed: int, n_clients: int):
        self.cfg, self.seed, self.n_clients = cfg, seed, n_clients

    def plan(self, r: int, selected: np.ndarray):
        from hpcfed.update.pipeline import RoundPlan

        return RoundPlan(r, selected, selected, selected, selected[:0], np.full(self.n_clients, np.nan))

    def record(self, plan) -> dict[str, np.ndarray]:
        return {}

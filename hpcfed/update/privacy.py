"""Central differential privacy of the shared update (`privacy:` section). Off by default: every hook passes the
update through unchanged."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch


@dataclass
class PrivacyConfig:
    """The `privacy:` section of a run config."""

    enabled: bool = False


class Privacy:
    extra_slots = 0  # floats this stage adds to the summed buffer

    def __init__(self, cfg: PrivacyConfig, seed: int, n_clients: int, participation: float):
        self.cfg, self.seed, self.n_clients, self.participation = cfg, seed, n_clients, participation

    def client(self, plan, client: int, delta: torch.Tensor, weight: float):
        """(delta, weight, extra slots) that `client` contributes."""
        return delta, weight, delta.new_zeros(self.extra_slots)

    def server(self, plan, buffer: torch.Tensor, n_shared: int) -> None:
        """Rank 0's own addition to its zeros before the Allreduce."""

    def mean_delta(self, summed: torch.Tensor, n_shared: int) -> torch.Tensor | None:
        total = float(summed[n_shared])
        return summed[:n_shared] / total if total > 0 else None

    def after_round(self, plan, summed: torch.Tensor, n_shared: int) -> None:
        pass

    def record(self, plan) -> dict[str, float | np.ndarray]:
        return {}

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass

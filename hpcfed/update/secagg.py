"""Simulated secure aggregation (`secure_aggregation:` section). Off by default: the plain float64 Allreduce."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass
class SecureAggregationConfig:
    """The `secure_aggregation:` section of a run config."""

    enabled: bool = False


class SecureAggregation:
    def __init__(self, cfg: SecureAggregationConfig, seed: int, n_clients: int):
        self.cfg, self.seed, self.n_clients = cfg, seed, n_clients

    def allreduce(self, rt, plan, buffer, n_shared: int) -> None:
        rt.allreduce_shared(buffer)

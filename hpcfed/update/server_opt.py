"""Server optimizers on the shared state (`server:` section): the mean client delta is a pseudo-gradient the
server steps along. FedAvg (lr 1) gives x + mean delta, the plain average of the clients' parameters."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch

from hpcfed.options import option
from hpcfed.registry import Registry


@dataclass
class ServerConfig:
    """The `server:` section of a run config."""

    optimizer: str = "fedavg"  # a name in SERVER_OPTIMIZERS
    lr: float = option(1.0, gt=0, fix="use e.g. lr: 1.0 for FedAvg")  # server learning rate


class ServerOptimizer:
    """x_{t+1} = x_t + lr * mean delta; subclasses keep state (momentum, moments) in float64."""

    def __init__(self, cfg: ServerConfig, n: int):
        self.cfg, self.n = cfg, n

    def step(self, x: torch.Tensor, mean_delta: torch.Tensor) -> torch.Tensor:
        return x + self.cfg.lr * mean_delta

    def state_dict(self) -> dict:
        return {}

    def load_state_dict(self, state: dict) -> None:
        pass


SERVER_OPTIMIZERS: Registry[Callable[[ServerConfig, int], ServerOptimizer]] = Registry("server optimizer",
                                                                                       "server.optimizer")
SERVER_OPTIMIZERS.register("fedavg")(ServerOptimizer)


def make_server_optimizer(cfg: ServerConfig, n: int) -> ServerOptimizer:
    return SERVER_OPTIMIZERS[cfg.optimizer](cfg, n)

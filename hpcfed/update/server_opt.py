"""Server optimizers on the shared state (`server:` section): the mean client delta Δ_t is a pseudo-gradient the
server steps along (Reddi et al., "Adaptive Federated Optimization", ICLR 2021, Algorithm 2).

    fedavg      x_{t+1} = x_t + η Δ_t                                       (η = 1: the clients' average)
    fedavgm     m_t = β m_{t-1} + Δ_t;  x_{t+1} = x_t + η m_t                (Hsu et al. 2019, as Flower's FedAvgM)
    fedadagrad  v_t = v_{t-1} + Δ_t²
    fedyogi     v_t = v_{t-1} - (1-β2) Δ_t² sign(v_{t-1} - Δ_t²)
    fedadam     v_t = β2 v_{t-1} + (1-β2) Δ_t²
                and for these three: m_t = β1 m_{t-1} + (1-β1) Δ_t;  x_{t+1} = x_t + η m_t / (sqrt(v_t) + τ)

As in the paper, m_{-1} = 0, v_{-1} = τ² and no bias correction (Flower starts v at 0 and bias-corrects FedAdam's η).
The state depends on Δ_t only, so every rank, the server too, keeps the same state from the same summed buffer and
rank 0 can checkpoint it; `step` returns x_{t+1} - x_t, which each client rank adds to its global state."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import torch

from hpcfed.errors import ConfigError
from hpcfed.options import option
from hpcfed.registry import Registry


@dataclass
class ServerConfig:
    """The `server:` section of a run config."""

    optimizer: str = "fedavg"  # a name in SERVER_OPTIMIZERS
    # server learning rate η; null: the optimizer's own default (Flower's: fedavg, fedavgm 1; fedadam, fedadagrad
    # 0.1; fedyogi 0.01); the paper tunes it per task
    lr: float | None = option(None, gt=0, fix="use e.g. lr: 1.0 for fedavg, 0.1 for fedadam, or null for the "
                              "optimizer's default")
    momentum: float = option(0.9, ge=0, lt=1, fix="use e.g. momentum: 0.9 (0 makes fedavgm plain fedavg)")  # fedavgm β
    betas: list[float] = field(default_factory=lambda: [0.9, 0.99])  # β1, β2 of fedadam, fedyogi, fedadagrad
    # τ, how adaptive the step is (larger: closer to momentum SGD); also v_{-1} = τ²
    tau: float = option(1e-3, gt=0, fix="use e.g. tau: 0.001 (the paper's)")


def check_server(cfg: ServerConfig) -> None:
    """What the declared ranges cannot say: the optimizer's name is known, betas are two numbers in [0, 1)."""
    SERVER_OPTIMIZERS[cfg.optimizer]  # noqa: B018 (an unknown name raises, listing the known ones)
    fix = "use e.g. betas: [0.9, 0.99] (the paper's β1, β2)"
    if len(cfg.betas) != 2:
        raise ConfigError("server.betas", f"needs two numbers [β1, β2], got {cfg.betas}", fix)
    for i, beta in enumerate(cfg.betas):
        if not 0 <= beta < 1:
            raise ConfigError(f"server.betas[{i}]", f"must lie in [0, 1), got {beta}", fix)


class ServerOptimizer:
    """FedAvg: the step is η Δ_t. Subclasses keep their state in float64 tensors of the shared size."""

    default_lr = 1.0
    state_names: tuple[str, ...] = ()

    def __init__(self, cfg: ServerConfig, n: int):
        self.cfg, self.n = cfg, n
        self.lr = self.default_lr if cfg.lr is None else cfg.lr

    def step(self, mean_delta: torch.Tensor) -> torch.Tensor:
        """x_{t+1} - x_t for this round's mean delta (float64 on the CPU); advances the state."""
        return self.lr * mean_delta

    def state_dict(self) -> dict[str, torch.Tensor]:
        return {name: getattr(self, name).clone() for name in self.state_names}

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name in self.state_names:
            value = state.get(name)
            if value is None or value.shape != (self.n,):
                raise ValueError(f"the checkpoint's server optimizer state has no {name} of {self.n} values (it "
                                 f"holds {sorted(state)}): it was written for another server.optimizer or model")
            setattr(self, name, value.to(torch.float64).clone())


SERVER_OPTIMIZERS: Registry[Callable[[ServerConfig, int], ServerOptimizer]] = Registry("server optimizer",
                                                                                       "server.optimizer")
SERVER_OPTIMIZERS.register("fedavg")(ServerOptimizer)


@SERVER_OPTIMIZERS.register("fedavgm")
class FedAvgM(ServerOptimizer):
    """Flower's FedAvgM and torch.optim.SGD's momentum (no dampening) on the gradient -Δ_t."""

    state_names = ("m",)

    def __init__(self, cfg: ServerConfig, n: int):
        super().__init__(cfg, n)
        self.m = torch.zeros(n, dtype=torch.float64)

    def step(self, mean_delta: torch.Tensor) -> torch.Tensor:
        self.m = self.cfg.momentum * self.m + mean_delta
        return self.lr * self.m


class AdaptiveOptimizer(ServerOptimizer):
    """Algorithm 2's shared part; subclasses say how the second moment v_t follows from v_{t-1} and Δ_t²."""

    default_lr = 0.1
    state_names = ("m", "v")

    def __init__(self, cfg: ServerConfig, n: int):
        super().__init__(cfg, n)
        self.beta1, self.beta2 = cfg.betas
        self.m = torch.zeros(n, dtype=torch.float64)
        self.v = torch.full((n,), cfg.tau**2, dtype=torch.float64)  # the paper's v_{-1} >= τ², at its least

    def second_moment(self, v: torch.Tensor, delta_squared: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def step(self, mean_delta: torch.Tensor) -> torch.Tensor:
        self.m = self.beta1 * self.m + (1 - self.beta1) * mean_delta
        self.v = self.second_moment(self.v, mean_delta * mean_delta)
        return self.lr * self.m / (self.v.sqrt() + self.cfg.tau)


@SERVER_OPTIMIZERS.register("fedadagrad")
class FedAdagrad(AdaptiveOptimizer):
    def second_moment(self, v: torch.Tensor, delta_squared: torch.Tensor) -> torch.Tensor:
        return v + delta_squared


@SERVER_OPTIMIZERS.register("fedyogi")
class FedYogi(AdaptiveOptimizer):
    default_lr = 0.01

    def second_moment(self, v: torch.Tensor, delta_squared: torch.Tensor) -> torch.Tensor:
        return v - (1 - self.beta2) * delta_squared * torch.sign(v - delta_squared)


@SERVER_OPTIMIZERS.register("fedadam")
class FedAdam(AdaptiveOptimizer):
    def second_moment(self, v: torch.Tensor, delta_squared: torch.Tensor) -> torch.Tensor:
        return self.beta2 * v + (1 - self.beta2) * delta_squared


def make_server_optimizer(cfg: ServerConfig, n: int) -> ServerOptimizer:
    return SERVER_OPTIMIZERS[cfg.optimizer](cfg, n)

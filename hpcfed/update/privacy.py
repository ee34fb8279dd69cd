"""Central differential privacy of the shared update (`privacy:` section), as DP-FedAvg (McMahan et al. 2018,
"Learning Differentially Private Recurrent Language Models") with optional adaptive clipping (Andrew et al. 2021,
"Differentially Private Learning with Adaptive Clipping"). Off by default: every hook passes the update through.

With privacy on, a round releases (sum of clipped deltas + N(0, (z C)^2 I)) / m:
- each contributing client's delta is scaled to L2 norm <= C and weighted 1 (a size-based weight would let a
  client's data set size into the sum unbounded);
- rank 0 adds the noise once into its zeros before the Allreduce, from its own stream keyed by the round, so the
  noise does not depend on how many ranks run the job;
- m is the number of clients sampled that round, fixed before anyone trains: DP-FedAvg's fixed-denominator
  estimator. Its sensitivity is C / m whoever contributes; dividing by the actual count would make the
  denominator depend on the data (who is in the sum) and fall outside the Gaussian mechanism the accountant
  assumes.
Adaptive clipping: each client also adds b - 1/2 to one extra slot (b = 1 if its norm <= C), rank 0 adds
N(0, sigma_b^2) there, and every rank moves C <- C exp(-eta (b_mean - gamma)) with b_mean = slot / m + 1/2, the
noised fraction of unclipped clients (Andrew et al., Algorithm 1). The slot has sensitivity 1/2, so the count is a
second Gaussian mechanism of noise multiplier 2 sigma_b, composed with the sum in the accountant."""

from __future__ import annotations

import math
from dataclasses import dataclass
from functools import cached_property

import numpy as np
import torch

from hpcfed.errors import ConfigError
from hpcfed.options import option
from hpcfed.rng import Stream, generator, sample_size


@dataclass
class PrivacyConfig:
    """The `privacy:` section of a run config."""

    enabled: bool = False
    # z: the noise on the summed deltas has standard deviation z * clip_norm per coordinate
    noise_multiplier: float = option(1.0, ge=0, fix="use e.g. noise_multiplier: 1.0 (0 adds no noise and gives "
                                     "no privacy)")
    # C: each client's shared delta is scaled down to this L2 norm; with adaptive_clip, C of the first round
    clip_norm: float = option(1.0, gt=0, fix="use e.g. clip_norm: 1.0, or adaptive_clip: true to learn it")
    adaptive_clip: bool = False  # C follows a quantile of the clients' delta norms (Andrew et al. 2021)
    # gamma: the share of clients whose delta adaptive clipping leaves unclipped
    target_quantile: float = option(0.5, gt=0, lt=1, fix="use e.g. target_quantile: 0.5 (the median norm)")
    # eta: C <- C * exp(-clip_lr * (unclipped share - target_quantile)) after each round
    clip_lr: float = option(0.2, gt=0, fix="use e.g. clip_lr: 0.2 (Andrew et al.)")
    # sigma_b: noise on the count of unclipped clients; null: clients per sampled round / 20 (Andrew et al.)
    clipped_count_stddev: float | None = option(None, ge=0, fix="use e.g. clients per round / 20, or null for "
                                                "that")
    delta: float = option(1e-5, gt=0, lt=1, fix="use e.g. delta: 1e-5, well below 1/clients")
    # refuse a config whose planned rounds would spend more than this epsilon (null: no budget)
    target_epsilon: float | None = option(None, gt=0, fix="use e.g. target_epsilon: 8, or null for no budget")


def clipped_count_stddev(cfg: PrivacyConfig, n_clients: int, participation: float) -> float:
    if cfg.clipped_count_stddev is not None:
        return cfg.clipped_count_stddev
    return sample_size(1, n_clients, participation) / 20


def make_accountant(cfg: PrivacyConfig, n_clients: int, participation: float):
    """The accountant of this config's rounds: the sum's Gaussian, with adaptive clipping also the count's."""
    from hpcfed.update.accountant import Accountant  # dp-accounting loads only for private runs

    multipliers = [cfg.noise_multiplier]
    if cfg.adaptive_clip:
        multipliers.append(2 * clipped_count_stddev(cfg, n_clients, participation))  # the slot's sensitivity: 1/2
    return Accountant(multipliers, sample_size(0, n_clients, participation) / n_clients,
                      sample_size(1, n_clients, participation) / n_clients)


class Privacy:
    def __init__(self, cfg: PrivacyConfig, seed: int, n_clients: int, participation: float):
        self.cfg, self.seed, self.n_clients, self.participation = cfg, seed, n_clients, participation
        self.adaptive = cfg.enabled and cfg.adaptive_clip
        self.extra_slots = 1 if self.adaptive else 0  # floats this stage adds to the summed buffer
        self.clip_norm = cfg.clip_norm  # C of the coming round
        self.round_clip_norm = cfg.clip_norm  # C of the round just aggregated, for the run file
        self.count_stddev = clipped_count_stddev(cfg, n_clients, participation)

    @cached_property
    def accountant(self):
        return make_accountant(self.cfg, self.n_clients, self.participation)

    def client(self, plan, client: int, delta: torch.Tensor, weight: float):
        """(delta, weight, extra slots) that `client` contributes: with privacy, clipped to C and weight 1."""
        if not self.cfg.enabled:
            return delta, weight, delta.new_zeros(0)
        norm = float(torch.linalg.vector_norm(delta))
        clipped = delta * (self.clip_norm / norm) if norm > self.clip_norm else delta
        unclipped = [float(norm <= self.clip_norm) - 0.5] if self.adaptive else []
        return clipped, 1.0, delta.new_tensor(unclipped)

    def server(self, plan, buffer: torch.Tensor, n_shared: int) -> None:
        """Rank 0's own addition to its zeros before the Allreduce: the round's noise, drawn once."""
        if not self.cfg.enabled:
            return
        noise = generator(self.seed, Stream.PRIVACY_NOISE, plan.round, 0).normal(
            0.0, self.cfg.noise_multiplier * self.clip_norm, n_shared)
        buffer[:n_shared] += torch.from_numpy(noise).to(buffer)
        if self.adaptive:
            buffer[n_shared + 1] += generator(self.seed, Stream.PRIVACY_NOISE, plan.round, 1).normal(
                0.0, self.count_stddev)

    def mean_delta(self, plan, summed: torch.Tensor, n_shared: int) -> torch.Tensor | None:
        """The summed deltas over the weight total; with privacy, over the clients sampled (see the docstring)."""
        if self.cfg.enabled:
            return summed[:n_shared] / len(plan.selected)
        total = float(summed[n_shared])
        return summed[:n_shared] / total if total > 0 else None

    def after_round(self, plan, summed: torch.Tensor, n_shared: int) -> None:
        """The next round's clip norm, from the noised count (every rank computes the same)."""
        self.round_clip_norm = self.clip_norm
        if self.adaptive:
            unclipped_share = float(summed[n_shared + 1]) / len(plan.selected) + 0.5
            self.clip_norm *= math.exp(-self.cfg.clip_lr * (unclipped_share - self.cfg.target_quantile))

    def record(self, plan) -> dict[str, float | np.ndarray]:
        """Epsilon spent after this round (all rounds so far) and the clip norm it used."""
        if not self.cfg.enabled:
            return {}
        return {"epsilon": self.accountant.epsilon(plan.round + 1, self.cfg.delta), "clip_norm": self.round_clip_norm}

    def state_dict(self) -> dict:
        return {"clip_norm": self.clip_norm} if self.cfg.enabled else {}

    def load_state_dict(self, state: dict) -> None:
        self.clip_norm = state.get("clip_norm", self.clip_norm)


def check_privacy(config) -> None:
    """Before launch: what the guarantee cannot cover, and a budget the planned rounds would exceed."""
    from hpcfed.methods import METHODS

    cfg = config.privacy
    if not cfg.enabled:
        return
    method = METHODS[config.method.name] if config.method.name in METHODS else None
    if method is not None and method.published:
        raise ConfigError("privacy.enabled", f"method {config.method.name} publishes {list(method.published)} per "
                          "client for the other clients to read, outside the clipped and noised sum, so no privacy "
                          "guarantee covers it", "turn privacy off for this method, or use one that shares only "
                          "through the averaged state (e.g. pfedmma)")
    if cfg.delta >= 1 / config.clients:
        raise ConfigError("privacy.delta", f"{cfg.delta:g} is not below 1/clients = {1 / config.clients:.3g}: a "
                          "mechanism that publishes one client's update whole with probability delta would satisfy "
                          "it", f"use a delta well below {1 / config.clients:.3g}, e.g. delta: 1e-5")
    if cfg.target_epsilon is not None:
        _check_budget(config)


def _check_budget(config) -> None:
    cfg = config.privacy
    accountant = make_accountant(cfg, config.trained_clients, config.participation)
    over = accountant.first_round_over(cfg.target_epsilon, config.rounds, cfg.delta)
    if over is None:
        return
    spent = accountant.epsilon(config.rounds, cfg.delta)
    fewer = f"rounds: {over - 1} (the most that fit), " if over > 1 else ""
    count = " or privacy.clipped_count_stddev" if cfg.adaptive_clip else ""
    lower = f"participation below {config.participation:g}, " if sample_size(1, config.clients,
                                                                            config.participation) > 1 else ""
    raise ConfigError("privacy.target_epsilon",
                      f"the planned {config.rounds} rounds would spend epsilon {spent:.3g} at delta {cfg.delta:g}, "
                      f"over the budget {cfg.target_epsilon:g} from round {over} on (epsilon "
                      f"{accountant.epsilon(over, cfg.delta):.3g} after it)",
                      f"plan {fewer}a larger privacy.noise_multiplier (now {cfg.noise_multiplier:g}){count}, "
                      f"{lower}or a larger target_epsilon")

"""Client dropouts and stragglers (`dropout:` section). Off by default: every selected client trains and
contributes (the virtual clock still runs, and is recorded).

Each round, every selected client
1. drops out before training with `probability`: one coin per client and round from the DROPOUT stream keyed by the
   round, so every rank draws the same coins whatever the rank count. It downloads, trains and uploads nothing.
2. else trains for work / speed virtual seconds: work = training samples x local epochs, speed = samples per virtual
   second, drawn once per client from the `speed` distribution, times a per-round lognormal `jitter` (the
   per-example duration model of FLSim's TrainingTimeEstimator, with FLGo's lognormal client responsiveness).
3. past the `deadline`, its update arrives after the server closed the round: it trained (its personal state moved
   on) but is left out of the sum (plan.dropped_after_masking; secure aggregation recovers its masks).
Round 0 is no exception: the sampler takes everyone in round 0 as the reference code does, but whether a device is
reachable does not depend on the round, and sparing round 0 would make the recorded dropout rate differ from
`probability`. A round in which nobody contributes keeps the global state (hpcfed.update.privacy's mean_delta)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hpcfed.options import option
from hpcfed.registry import Registry
from hpcfed.rng import Stream, generator

# /update/dropped codes (hpcfed.results): not selected or contributed, gone before training, trained but too late
CONTRIBUTED, DROPPED_BEFORE_TRAINING, ARRIVED_LATE = 0, 1, 2


@dataclass
class DropoutConfig:
    """The `dropout:` section of a run config."""

    # chance that a selected client drops out of a round before training
    probability: float = option(0.0, ge=0, lt=1, fix="use e.g. probability: 0.2 (0 turns dropouts off; 1 would "
                                "leave no client to train)")
    speed: str = "lognormal"  # how client speeds spread: a name in SPEEDS
    # the median client's speed, in training samples per virtual second
    samples_per_second: float = option(100.0, gt=0, fix="use e.g. samples_per_second: 100")
    # lognormal: standard deviation of the log speed (0: every client as fast as the median)
    speed_sigma: float = option(0.5, ge=0, fix="use e.g. speed_sigma: 0.5, or 0 for equal speeds")
    # standard deviation of a per-round lognormal factor on each client's time (0: the same time every round)
    jitter: float = option(0.0, ge=0, fix="use e.g. jitter: 0.2, or 0 for none")
    # virtual seconds the server waits for updates; later ones are left out of the sum (0: it waits for all)
    deadline: float = option(0.0, ge=0, fix="use e.g. deadline: 2.0 virtual seconds, or 0 to wait for every "
                             "client")


SpeedDistribution = Callable[[np.random.Generator, int, DropoutConfig], np.ndarray]
SPEEDS: Registry[SpeedDistribution] = Registry("client speed distribution", "dropout.speed")


@SPEEDS.register("lognormal")
def lognormal_speeds(rng: np.random.Generator, n_clients: int, cfg: DropoutConfig) -> np.ndarray:
    """Median `samples_per_second`, log-speed spread `speed_sigma`: most clients near the median, a few far slower
    (FLGo's 'LN' responsiveness)."""
    return cfg.samples_per_second * np.exp(cfg.speed_sigma * rng.standard_normal(n_clients))


@SPEEDS.register("constant")
def constant_speeds(rng: np.random.Generator, n_clients: int, cfg: DropoutConfig) -> np.ndarray:
    """Every client at `samples_per_second` (speed_sigma unused): time follows the work alone, so a deadline cuts
    the clients with the most training data."""
    return np.full(n_clients, cfg.samples_per_second)


def check_dropout(cfg: DropoutConfig) -> None:
    """Config validation: the speed distribution is a known name (the ranges are declared on the fields)."""
    SPEEDS[cfg.speed]  # noqa: B018


class Dropout:
    """The plan stage of hpcfed.update: who trains and whose update reaches the sum, the same on every rank."""

    def __init__(self, cfg: DropoutConfig, seed: int, work: np.ndarray):
        self.cfg, self.seed = cfg, seed
        self.work = np.asarray(work, dtype=np.float64)  # per client: training samples x local epochs
        self.speed = SPEEDS[cfg.speed](generator(seed, Stream.CLIENT_SPEED), len(self.work), cfg)

    def plan(self, r: int, selected: np.ndarray):
        from hpcfed.update.pipeline import RoundPlan  # pipeline builds this stage

        rng = generator(self.seed, Stream.DROPOUT, r)
        # A draw for every client, selected or not: a client's fate does not depend on who else was sampled.
        coins = rng.random(len(self.work))
        jitter = np.exp(self.cfg.jitter * rng.standard_normal(len(self.work)))
        trains = selected[coins[selected] >= self.cfg.probability]
        seconds = np.full(len(self.work), np.nan)
        seconds[trains] = self.work[trains] / self.speed[trains] * jitter[trains]
        late = trains[seconds[trains] > self.cfg.deadline] if self.cfg.deadline > 0 else trains[:0]
        return RoundPlan(r, selected, trains, np.setdiff1d(trains, late), late, seconds)

    def record(self, plan) -> dict[str, np.ndarray]:
        """/update/dropped and /update/virtual_seconds of the round (nan: did not train)."""
        dropped = np.full(len(self.work), CONTRIBUTED, dtype=np.int8)
        dropped[np.setdiff1d(plan.selected, plan.trains)] = DROPPED_BEFORE_TRAINING
        dropped[plan.dropped_after_masking] = ARRIVED_LATE
        return {"dropped": dropped, "virtual_seconds": plan.virtual_seconds}

"""The privacy spent by the noised sum of the shared update, from Google's dp-accounting (its RDP accountant).

Each round releases the clipped sum plus Gaussian noise (with adaptive clipping, also the noised count of
unclipped clients): a Gaussian mechanism on the clients sampled that round. The sampling is accounted as Poisson
with rate q = (clients sampled) / clients, the approximation DP-FedAvg (McMahan et al. 2018) and most FL papers
use: hpcfed samples a fixed-size subset without replacement, for which this is not a proven bound
(dp-accounting's SampledWithoutReplacementDpEvent under replace-one neighbours would be). Round 0 takes every
client (q = 1). Dropouts only remove contributions, which costs no privacy.

Why RDP rather than the tighter PLD accountant: the RDP of k rounds is k times that of one, so epsilon after every
planned round costs one conversion each (the budget check before launch needs them all, on every rank), where PLD
composes anew for each k; it is also what both papers report."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from absl import logging as absl_logging
from dp_accounting import ComposedDpEvent, GaussianDpEvent, PoissonSampledDpEvent
from dp_accounting.rdp import rdp_privacy_accountant as rdp


class Accountant:
    """Epsilon after k rounds (cumulative, at a given delta). Every round is the same Gaussian mechanism,
    Poisson-subsampled at `first_rate` in round 0 and at `rate` after."""

    def __init__(self, noise_multipliers: Sequence[float], first_rate: float, rate: float,
                 orders: Sequence[float] | None = None):
        # Several Gaussians released together (sum and count) compose into one; dp-accounting does the algebra.
        self.noise_multipliers = tuple(noise_multipliers)
        self.orders = np.asarray(orders if orders is not None else rdp.DEFAULT_RDP_ORDERS, dtype=float)
        self.private = min(self.noise_multipliers) > 0  # a release without noise has no finite epsilon
        if not self.private:
            return
        self.first_round = self._one_round(first_rate)
        self.later_round = self.first_round if rate == first_rate else self._one_round(rate)

    def _one_round(self, rate: float) -> np.ndarray:
        """The RDP curve (one value per order) of one round at sampling rate `rate`."""
        gaussians = [GaussianDpEvent(z) for z in self.noise_multipliers]
        mechanism = gaussians[0] if len(gaussians) == 1 else ComposedDpEvent(gaussians)
        accountant = rdp.RdpAccountant(orders=list(self.orders))
        # Near noise multiplier 1 the series of some fractional orders does not converge; dp-accounting drops
        # those orders (the bound stays valid) with one warning each, on every rank: not worth a log line.
        verbosity = absl_logging.get_verbosity()
        absl_logging.set_verbosity(absl_logging.ERROR)
        try:
            accountant.compose(PoissonSampledDpEvent(rate, mechanism))
        finally:
            absl_logging.set_verbosity(verbosity)
        return accountant.rdp

    def epsilon(self, rounds: int, delta: float) -> float:
        """Epsilon at `delta` after the first `rounds` rounds (0 before any)."""
        if rounds <= 0:
            return 0.0
        if not self.private:
            return math.inf
        # (not 0 * later_round: its infinite orders would turn into NaN)
        curve = self.first_round if rounds == 1 else self.first_round + (rounds - 1) * self.later_round
        return float(rdp.compute_epsilon(self.orders, curve, delta)[0])

    def first_round_over(self, target: float, rounds: int, delta: float) -> int | None:
        """The first round (counted from 1) after which epsilon exceeds `target`, within `rounds`; None if none.
        Epsilon only grows with the rounds, so a bisection finds it."""
        if self.epsilon(rounds, delta) <= target:
            return None
        low, high = 0, rounds  # epsilon(low) <= target < epsilon(high)
        while high - low > 1:
            middle = (low + high) // 2
            low, high = (middle, high) if self.epsilon(middle, delta) <= target else (low, middle)
        return high

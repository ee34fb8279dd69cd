"""Simulated secure aggregation inside the one Allreduce (`secure_aggregation:` section), after Bonawitz et al.
2017, "Practical Secure Aggregation for Privacy-Preserving Machine Learning". Off by default: the plain float64 sum.

An Allreduce of unsigned integers wraps modulo 2^k, which is the arithmetic of pairwise masking. Each contributing
client encodes its row (weighted delta, weight, stage slots) in fixed point and adds, for every other client that
masks this round, the mask of that pair from the pair's own stream: the lower client id adds it, the higher one
subtracts it. The masks cancel bit for bit in the sum, so the decoded aggregate equals the unmasked fixed-point sum,
while each masked row on its own is uniform noise. A client that masked but whose row never arrived
(`plan.dropped_after_masking`) leaves its pairs' masks in the sum; every rank regenerates and removes them, as the
protocol's recovery does from the survivors' shares of the lost client's key. Simulated: masks come from the run's
seed rather than from key agreement, and there are no self-masks (the protocol's guard against late arrivals)."""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch

from hpcfed.errors import ConfigError, UserError
from hpcfed.options import option
from hpcfed.rng import Stream, seed_sequence

# What a real protocol would send besides the masked row (counted in /comm/bytes_up, never actually sent here).
PUBLIC_KEY_BYTES = 32  # a client's key-agreement public key (X25519), once per round
SHARE_BYTES = 32  # one Shamir share of a 256-bit key: one to each peer, and one per lost client at recovery


@dataclass
class SecureAggregationConfig:
    """The `secure_aggregation:` section of a run config; `secure_aggregation: true` is short for enabled: true."""

    enabled: bool = False
    # fractional bits of the fixed-point encoding: each value becomes a multiple of 2^-bits
    bits: int = option(24, ge=1, le=62, fix="use e.g. 24 (steps of 6e-8) with modulus_bits 64, 16 with 32")
    # every coordinate of a client's row (weighted delta and the weight itself) is clipped to [-range, range]
    range: float = option(2.0**20, gt=0, fix="use a bound above the largest weighted delta and weight (a client's "
                          "training-set size by default), e.g. 1048576")
    # width of the integers summed: 32 halves the upload but leaves far less headroom
    modulus_bits: int = option(64, choices=(32, 64))


def check_headroom(n_clients: int, cfg: SecureAggregationConfig) -> None:
    """Refuse a modulus the sum could overflow: every client at +range plus rank 0's own part (privacy noise) must
    stay below 2^(k-1), past which the two's-complement sum would read as negative."""
    if not cfg.enabled:
        return
    rows, top = n_clients + 1, cfg.modulus_bits - 1
    if rows * cfg.range * 2.0**cfg.bits < 2.0**top:
        return
    fixes = []
    bits = math.ceil(top - math.log2(rows * cfg.range)) - 1  # the largest that fits
    if bits >= 1:
        fixes.append(f"secure_aggregation.bits: {bits}")
    fixes.append(f"secure_aggregation.range: {2.0 ** (math.ceil(top - cfg.bits - math.log2(rows)) - 1):g}")
    if cfg.modulus_bits == 32:
        fixes.append("secure_aggregation.modulus_bits: 64")
    raise ConfigError("secure_aggregation.range",
                      f"{n_clients} clients (plus rank 0's part) x range {cfg.range:g} x 2^{cfg.bits} can reach "
                      f"{rows * cfg.range * 2.0**cfg.bits:.3g}, which overflows the signed range of the "
                      f"{cfg.modulus_bits}-bit sum (2^{top} = {2.0**top:.3g})", "set " + ", or ".join(fixes))


class FixedPoint:
    """Values as k-bit two's-complement multiples of 2^-bits, clipped to ±range; one slot more counts the clipped
    values (summed with the rest, so rank 0 learns the round's total without any client's own count)."""

    def __init__(self, cfg: SecureAggregationConfig):
        self.scale, self.limit = 2.0**cfg.bits, cfg.range
        self.unsigned, self.signed = np.dtype(f"uint{cfg.modulus_bits}"), np.dtype(f"int{cfg.modulus_bits}")

    def encode(self, values: np.ndarray) -> np.ndarray:
        clipped = np.count_nonzero(np.abs(values) > self.limit)
        fixed = np.rint(np.clip(values, -self.limit, self.limit) * self.scale).astype(np.int64)
        return np.append(fixed, clipped).astype(self.unsigned)  # a negative v wraps to 2^k - |v|

    def decode(self, total: np.ndarray) -> tuple[np.ndarray, int]:
        """(the summed values in float64, how many were clipped)."""
        return total[:-1].view(self.signed) / self.scale, int(total[-1])


def pair_mask(seed: int, round_index: int, a: int, b: int, length: int, dtype: np.dtype) -> np.ndarray:
    """The mask clients a and b share this round: uniform k-bit integers from the pair's own stream."""
    stream = seed_sequence(seed, Stream.PAIR_MASK, round_index, min(a, b), max(a, b))
    return np.random.PCG64(stream).random_raw(length).astype(dtype)  # 32 bits: the low half, uniform as well


class PlainSum:
    """Client rows added into the float64 buffer: the sum without secure aggregation."""

    def __init__(self, buffer):
        self.buffer = buffer

    def add(self, client: int, row: torch.Tensor) -> None:
        torch.as_tensor(self.buffer).add_(row)


class MaskedSum:
    """This rank's part of a round's masked sum: each client's row in fixed point plus its pairwise masks. The
    float `buffer` stays zeros (rank 0: its own part, the privacy noise) until the sum is decoded into it."""

    def __init__(self, stage: SecureAggregation, plan, buffer):
        self.stage, self.plan, self.buffer = stage, plan, buffer
        self.total = np.zeros(len(buffer) + 1, stage.fixed.unsigned)

    def add(self, client: int, row: torch.Tensor) -> None:
        self.total += self.stage.masked_row(self.plan, client, row.detach().cpu().numpy())


class SecureAggregation:
    def __init__(self, cfg: SecureAggregationConfig, seed: int, n_clients: int):
        self.cfg, self.seed, self.n_clients = cfg, seed, n_clients
        self.fixed = FixedPoint(cfg)
        self.clipped: tuple[int, int] | None = None  # (round, coordinates clipped to ±range), for the run file
        self.warned = False

    def accumulator(self, plan, buffer) -> PlainSum | MaskedSum:
        return MaskedSum(self, plan, buffer) if self.cfg.enabled else PlainSum(buffer)

    def masks(self, round_index: int, client: int, peers: np.ndarray, length: int) -> np.ndarray:
        """What `client` adds for its pairs with `peers`: +mask toward a higher id, -mask toward a lower one."""
        total = np.zeros(length, self.fixed.unsigned)
        for peer in peers[peers != client]:
            mask = pair_mask(self.seed, round_index, client, peer, length, self.fixed.unsigned)
            if client < peer:
                total += mask
            else:
                total -= mask
        return total

    def masked_row(self, plan, client: int, row: np.ndarray) -> np.ndarray:
        """`client`'s row as it leaves the client: fixed point plus masks toward every client that masks."""
        if not np.isfinite(row).all():
            raise UserError(f"client {client}'s update in round {plan.round} is not finite (training diverged), so "
                            "secure aggregation cannot encode it in fixed point; lower train.lr, or set "
                            "secure_aggregation.enabled: false to follow the diverged run")
        maskers = np.union1d(plan.contributes, plan.dropped_after_masking)
        return self.fixed.encode(row) + self.masks(plan.round, client, maskers, len(row) + 1)

    def allreduce(self, rt, plan, accumulator: PlainSum | MaskedSum) -> None:
        """Sum over all ranks into `accumulator.buffer`: float64 as is, or masked integers decoded after the sum."""
        if not self.cfg.enabled:
            rt.allreduce_shared(accumulator.buffer)
            return
        buffer = torch.as_tensor(accumulator.buffer)
        total = accumulator.total + self.fixed.encode(buffer.cpu().numpy())  # rank 0's own part, unmasked
        rt.allreduce_shared(total)
        # A lost client's masks with the survivors are what the survivors' leftover masks lack to cancel.
        for lost in plan.dropped_after_masking:
            total += self.masks(plan.round, lost, plan.contributes, len(total))
        summed, clipped = self.fixed.decode(total)
        buffer.copy_(torch.from_numpy(summed))
        self.clipped = (plan.round, clipped)
        if clipped and rt.is_server and not self.warned:
            self.warned = True
            sys.stderr.write(f"hpcfed: secure aggregation clipped {clipped} coordinates to ±{self.cfg.range:g} in "
                             f"round {plan.round + 1} (counted per round in /update/clipped_to_range); raise "
                             "secure_aggregation.range if the updates are meant to be that large\n")

    def upload_bytes(self, plan, plain_floats: int, buffer_size: int) -> np.ndarray:
        """Per client, the bytes uploaded this round: fp32 shared parameters, or the masked row in k-bit integers
        plus what a real protocol sends besides (a public key, a share to each peer, a share per lost client)."""
        up = np.zeros(self.n_clients, dtype=np.int64)
        if not self.cfg.enabled:
            up[plan.contributes] = 4 * plain_floats
            return up
        peers = len(np.union1d(plan.contributes, plan.dropped_after_masking)) - 1
        before_masking = PUBLIC_KEY_BYTES + SHARE_BYTES * peers
        up[plan.dropped_after_masking] = before_masking  # the lost clients' rows never arrived
        row = (buffer_size + 1) * self.cfg.modulus_bits // 8
        up[plan.contributes] = before_masking + row + SHARE_BYTES * len(plan.dropped_after_masking)
        return up

    def record(self, plan) -> dict[str, int]:
        round_index, clipped = self.clipped or (None, 0)
        return {"clipped_to_range": clipped} if round_index == plan.round else {}

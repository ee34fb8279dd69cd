"""Every random stream of a run, derived from one seed with numpy's SeedSequence.

A stream is named by (purpose, client, round), never by rank, so that client sampling, data order and
initialisation are the same whether the job runs on 3 ranks or 11."""

from __future__ import annotations

from enum import IntEnum, unique

import numpy as np


@unique  # two purposes on one number would share their random numbers
class Stream(IntEnum):
    PARTITION = 1
    INIT = 2
    SAMPLING = 3
    CLIENT_DATA = 4
    CLIENT_TORCH = 5
    CLIENT_AUGMENT = 6  # crops and flips, per (client, round, epoch): nothing to checkpoint
    PAIR_MASK = 7  # secure aggregation's mask of a client pair, per (round, lower client, higher client)
    DROPOUT = 8  # who drops out and the clock's jitter, per round (hpcfed.update.dropout)
    CLIENT_SPEED = 9  # every client's speed, drawn once for the run
    PRIVACY_NOISE = 10  # the server's Gaussian noise, per round: the same on any number of ranks
    HOLDOUT = 11  # which clients never train (partition.holdout_clients), drawn once for the run
    HOLDOUT_STEPS = 12  # a held-out client's adaptation steps, per (client, round, 0 data order / 1 torch)
    EVAL_SAMPLE = 13  # which clients a sampled evaluation round scores (train.eval_clients), per round


def seed_sequence(seed: int, stream: Stream, *key: int) -> np.random.SeedSequence:
    return np.random.SeedSequence(seed, spawn_key=(int(stream), *map(int, key)))


def generator(seed: int, stream: Stream, *key: int) -> np.random.Generator:
    return np.random.Generator(np.random.PCG64(seed_sequence(seed, stream, *key)))


def torch_seed(seed: int, stream: Stream, *key: int) -> int:
    return int(seed_sequence(seed, stream, *key).generate_state(1, dtype=np.uint64)[0] >> 1)


def sample_size(round_index: int, n_clients: int, participation: float) -> int:
    """How many clients a round samples: all in round 0 (as the reference code), then max(1, int(frac*C))."""
    if round_index == 0 or participation >= 1.0:
        return n_clients
    return max(1, int(participation * n_clients))


def sample_clients(seed: int, round_index: int, n_clients: int, participation: float,
                   held_out: np.ndarray | None = None) -> np.ndarray:
    """Clients taking part in a round, `sample_size` of them drawn without replacement from the clients that
    train: `held_out` ones never do, and participation is a share of the others (without any held out, the
    draw is the same as before they existed)."""
    pool = np.setdiff1d(np.arange(n_clients), [] if held_out is None else held_out)
    m = sample_size(round_index, len(pool), participation)
    if m == len(pool):
        return pool
    return np.sort(pool[generator(seed, Stream.SAMPLING, round_index).choice(len(pool), m, replace=False)])


def evaluation_sample(seed: int, round_index: int, n_clients: int, eval_clients: int) -> np.ndarray | None:
    """The clients a sampled evaluation round scores: `eval_clients` of them drawn without replacement from its
    own stream, per round; None (every client) when eval_clients is 0 or covers them all."""
    if eval_clients == 0 or eval_clients >= n_clients:
        return None
    return np.sort(generator(seed, Stream.EVAL_SAMPLE, round_index).choice(n_clients, eval_clients, replace=False))

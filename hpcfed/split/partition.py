"""make_splits: which sample belongs to which client, and its train/validation/test share.

Order of work, all drawn from the run seed's PARTITION stream and never from the rank count:
1. the candidates: base classes only for base-to-novel, no image of partition.holdout_domain, the official split
   (or a seeded one where the protocol needs a global test set and the dataset has none), k shots per class;
2. the scheme's partitioner (hpcfed.split.schemes.PARTITIONERS) gives one pool per client;
3. each pool is split into train/val/test: by the split where there is one, else by val/test fractions; a part
   the official split lacks (val for CIFAR, test for PACS) is cut from the client's train by its fraction;
4. the clients held out of training (their own HOLDOUT stream) and the held-out domain's test set."""

from __future__ import annotations

import dataclasses

import numpy as np

from hpcfed.data.listing import Listing
from hpcfed.errors import SplitError
from hpcfed.rng import Stream, generator
from hpcfed.split.base import TEST, TRAIN, VAL, Candidates, ClientSplit, PartitionConfig, Splits
from hpcfed.split.classes import base_novel_classes, few_shot, seeded_subset, seeded_test_from_train
from hpcfed.split.schemes import NEEDS_SUBSET, PARTITIONERS

__all__ = ["PARTITIONERS", "ClientSplit", "SplitError", "Splits", "make_splits"]


def held_out_domain(listing: Listing, cfg: PartitionConfig) -> int | None:
    """The index of partition.holdout_domain in the listing's domains (None when not set); refuses a name the
    dataset lacks and a dataset with a single domain."""
    name = cfg.holdout_domain
    if name is None:
        return None
    names = listing.domain_names
    if len(names) < 2:
        raise SplitError(f"partition.holdout_domain is {name!r}, but the data has a single domain ({names[0]!r}): "
                         "leave-one-domain-out needs a multi-domain dataset (e.g. office_home, domainnet, pacs) "
                         "with at least two domains in data.domains; remove partition.holdout_domain")
    if name not in names:
        raise SplitError(f"partition.holdout_domain {name!r} is not a domain of this data; its domains are "
                         f"{', '.join(names)}: set partition.holdout_domain to one of them")
    return names.index(name)


def _candidates(listing: Listing, cfg: PartitionConfig, base: np.ndarray, rng: np.random.Generator) -> Candidates:
    subset = listing.subset
    needs_global_test = cfg.base_novel or cfg.shots > 0 or cfg.scheme in NEEDS_SUBSET
    if subset is None and needs_global_test:
        subset = seeded_subset(listing.labels, cfg, rng)
    elif subset is not None and needs_global_test and not np.any(subset == TEST):
        subset = seeded_test_from_train(listing.labels, subset, cfg, rng)
    held_out = held_out_domain(listing, cfg)
    # Leave-one-domain-out: no image of the held-out domain may reach any client, in any part of its split.
    members = np.flatnonzero(np.isin(listing.labels, base) & (listing.domains != held_out)).astype(np.int64)
    if len(members) == 0:
        raise SplitError("the dataset listing has no samples to partition; check data.dataset and data.domains")
    if subset is not None:
        subset = np.asarray(subset, dtype=np.int64)
    if cfg.shots > 0:
        members, subset = few_shot(members, listing.labels, subset, cfg.shots, listing.class_names, rng)
    official = subset is not None
    client_domains = tuple(d for d in range(len(listing.domain_names)) if d != held_out)
    return Candidates(members, listing.labels, listing.domains, listing.domain_names, client_domains,
                      listing.class_names, subset,
                      val_from_train=official and not np.any(subset[members] == VAL),
                      test_from_train=official and not np.any(subset[members] == TEST), notes=listing.notes)


def _cut(pool: np.ndarray, test_fraction: float, val_fraction: float,
         rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    """A random test_fraction (at least one sample, when asked for) and val_fraction of the pool; the rest trains."""
    shuffled = pool[rng.permutation(len(pool))]
    n_test = max(1, round(test_fraction * len(pool))) if test_fraction > 0 else 0
    n_val = round(val_fraction * len(pool))
    test, val, train = np.split(shuffled, [n_test, n_test + n_val])
    return np.sort(train), np.sort(val), np.sort(test)


def _divide(pool: np.ndarray, cand: Candidates, cfg: PartitionConfig,
            rng: np.random.Generator) -> tuple[np.ndarray, ...]:
    if cand.subset is None:
        return _cut(pool, cfg.test_fraction, cfg.val_fraction, rng)
    train, val, test = (pool[cand.subset[pool] == s] for s in (TRAIN, VAL, TEST))
    if not (cand.val_from_train or cand.test_from_train):
        return train, val, test
    # A part the official split lacks comes out of the client's train: val for CIFAR (train/test only), test for
    # PACS (its test lists hold the whole domain, for leave-one-domain-out).
    train, cut_val, cut_test = _cut(train, cfg.test_fraction * cand.test_from_train,
                                    cfg.val_fraction * cand.val_from_train, rng)
    return train, cut_val if cand.val_from_train else val, cut_test if cand.test_from_train else test


def _client(i: int, pool: np.ndarray, domain: int, cand: Candidates, cfg: PartitionConfig,
            rng: np.random.Generator) -> ClientSplit:
    train, val, test = _divide(pool, cand, cfg, rng)
    if len(train) < cfg.min_samples:
        raise SplitError(f"client {i} gets {len(train)} training samples (< partition.min_samples = "
                         f"{cfg.min_samples}); use fewer clients or more data")
    if len(test) == 0:
        raise SplitError(f"client {i} gets no test samples (its classes have none in the test split); use fewer "
                         f"clients, another scheme, or a larger partition.test_fraction")
    return ClientSplit(train, val, test, domain, np.unique(cand.labels[train]))


def _base_novel_fields(listing: Listing, cand: Candidates, base: np.ndarray, novel: np.ndarray) -> dict:
    """§1.6a Base and Novel test sets: every test image of a base / novel class (not only the clients' own)."""
    is_test = cand.subset == TEST
    return {"base_classes": base, "novel_classes": novel,
            "base_test": np.flatnonzero(is_test & np.isin(listing.labels, base)).astype(np.int64),
            "novel_test": np.flatnonzero(is_test & np.isin(listing.labels, novel)).astype(np.int64)}


def _holdout_fields(listing: Listing, cfg: PartitionConfig, n_clients: int, seed: int, base: np.ndarray) -> dict:
    """The clients that never train, drawn from their own stream (the other draws stay as without them), and the
    unseen domain's test set: every image of the held-out domain (its train, val and test alike, as in
    DomainBed's leave-one-domain-out), of the classes the clients train on."""
    out = {}
    if cfg.holdout_clients >= n_clients:
        raise SplitError(f"partition.holdout_clients = {cfg.holdout_clients} leaves no client of {n_clients} to "
                         f"train; hold out at most {n_clients - 1}")
    if cfg.holdout_clients:
        draw = generator(seed, Stream.HOLDOUT).choice(n_clients, cfg.holdout_clients, replace=False)
        out["holdout_clients"] = np.sort(draw).astype(np.int64)
    domain = held_out_domain(listing, cfg)
    if domain is not None:
        out["unseen_domain_test"] = np.flatnonzero((listing.domains == domain) & np.isin(listing.labels, base)
                                                   ).astype(np.int64)
    return out


def make_splits(listing: Listing, cfg: PartitionConfig, n_clients: int, seed: int) -> Splits:
    """A pure function of (listing, cfg, n_clients, seed): no rank, no global numpy or Python RNG."""
    rng = generator(seed, Stream.PARTITION)
    classes = np.unique(listing.labels)
    base, novel = base_novel_classes(classes) if cfg.base_novel else (classes, classes[:0])
    cand = _candidates(listing, cfg, base, rng)
    pools = PARTITIONERS[cfg.scheme](cand, cfg, n_clients, rng)
    clients = tuple(_client(i, pool, domain, cand, cfg, rng) for i, (pool, domain) in enumerate(pools))
    extra = _base_novel_fields(listing, cand, base, novel) if cfg.base_novel else {}
    extra.update(_holdout_fields(listing, cfg, n_clients, seed, base))
    params = {**dataclasses.asdict(cfg), "clients": n_clients, "official_subset": listing.subset is not None}
    return Splits(clients, cfg.scheme, seed, listing.digest(), params, **extra)

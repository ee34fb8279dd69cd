"""Partitioners: each maps the candidates to one index pool per client, with the client's domain (-1: mixed).
`make_splits` then turns every pool into train/val/test. A partitioner draws only from the rng it is given."""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from hpcfed.errors import SplitError
from hpcfed.registry import Registry
from hpcfed.split.base import TEST, TRAIN, VAL, Candidates, PartitionConfig
from hpcfed.split.classes import disjoint_class_chunks

Pools = list[tuple[np.ndarray, int]]
Partitioner = Callable[[Candidates, PartitionConfig, int, np.random.Generator], Pools]
# `@PARTITIONERS.register("name")` above a partitioner makes it `partition.scheme: name` in configs.
PARTITIONERS: Registry[Partitioner] = Registry("partition scheme", "partition.scheme")
# §1.6b, CIFAR-10 `noniid-labeldir`: a draw is kept only when every client has 10 training samples.
LABELDIR_MIN_SIZE = 10


def _join(parts: list[list[np.ndarray]]) -> list[np.ndarray]:
    return [np.sort(np.concatenate(p)).astype(np.int64) for p in parts]


def _even_pools(cand: Candidates, members: np.ndarray, n_pools: int, rng: np.random.Generator) -> list[np.ndarray]:
    """Shuffle and deal each stratum (train, val, test) out in near-equal parts."""
    parts: list[list[np.ndarray]] = [[] for _ in range(n_pools)]
    for stratum in cand.strata(members):
        order = stratum[rng.permutation(len(stratum))]
        for part, chunk in zip(parts, np.array_split(order, n_pools), strict=True):
            part.append(chunk)
    return _join(parts)


def _dirichlet_pools(cand: Candidates, members: np.ndarray, n_pools: int, beta: float, min_train: int,
                     rng: np.random.Generator, where: str) -> list[np.ndarray]:
    """Label shift: per class, Dirichlet(beta) shares over pools, applied alike to the class's train, val and test
    samples (§1.6b, §1.6c), so a client's test set follows its own label distribution. A draw is redone until
    every pool has `min_train` training candidates and, with a test split, a test sample. `where` names the
    samples in errors ("domain photo", "the data")."""
    if cand.n_train(members) < n_pools * min_train:
        raise SplitError(f"{where} has {cand.n_train(members)} training samples, too few to give {n_pools} clients "
                         f"{min_train} each; use fewer clients or a smaller partition.min_samples")
    labels = cand.labels
    short_of_train = short_of_test = 0  # failed draws, by requirement, to name the one that failed
    for _ in range(1000):
        parts: list[list[np.ndarray]] = [[] for _ in range(n_pools)]
        for cls in np.unique(labels[members]):
            strata = [s[rng.permutation(len(s))] for s in cand.strata(members[labels[members] == cls])]
            shares = rng.dirichlet(np.full(n_pools, beta))
            for idx in strata:
                cuts = (np.cumsum(shares)[:-1] * len(idx)).astype(int)
                for part, piece in zip(parts, np.split(idx, cuts), strict=True):
                    part.append(piece)
        pools = _join(parts)
        enough_train = min(cand.n_train(p) for p in pools) >= min_train
        every_test = all(cand.has_test(p) for p in pools)
        if enough_train and every_test:
            return pools
        short_of_train, short_of_test = short_of_train + (not enough_train), short_of_test + (not every_test)
    if short_of_train >= short_of_test:
        raise SplitError(f"{where}: no Dirichlet(beta={beta}) draw in 1000 gave every client {min_train} training "
                         f"samples ({short_of_train} draws left a client short); raise partition.beta (less label "
                         f"skew), lower partition.min_samples or use fewer clients")
    n_test = int(np.count_nonzero(cand.subset[members] == TEST))
    raise SplitError(f"{where}: no Dirichlet(beta={beta}) draw in 1000 gave every client a test sample "
                     f"({short_of_test} draws left a client without one; the official test split holds {n_test} "
                     f"images); raise partition.beta (less label skew) or use fewer clients")


@PARTITIONERS.register("iid")
def iid(cand: Candidates, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator) -> Pools:
    """No shift: a random near-equal share of every stratum per client."""
    return [(p, -1) for p in _even_pools(cand, cand.members, n_clients, rng)]


@PARTITIONERS.register("dirichlet")
def dirichlet(cand: Candidates, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator) -> Pools:
    """Label shift by Dirichlet(beta) with the min_samples rule (with an official split: as label_dirichlet)."""
    pools = _dirichlet_pools(cand, cand.members, n_clients, cfg.beta, cand.train_minimum(cfg, cfg.min_samples), rng,
                             "the data")
    return [(p, -1) for p in pools]


@PARTITIONERS.register("label_dirichlet")
def label_dirichlet(cand: Candidates, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator) -> Pools:
    """§1.6b CIFAR-10: per-class Dirichlet(beta) shares split the official train AND test sets; 10 samples min."""
    at_least = max(cfg.min_samples, LABELDIR_MIN_SIZE)
    pools = _dirichlet_pools(cand, cand.members, n_clients, cfg.beta, cand.train_minimum(cfg, at_least), rng,
                             "the data")
    return [(p, -1) for p in pools]


def _domain_client_counts(cand: Candidates, cfg: PartitionConfig, n_clients: int) -> list[int]:
    """Clients per domain: `clients_per_domain` each, or with 0 the clients spread over the domains in
    proportion to their sizes (largest remainder, at least one each), e.g. 10 clients on Office-Home's 4."""
    n_domains = len(cand.client_domains)
    if cfg.clients_per_domain > 0:
        if n_clients != n_domains * cfg.clients_per_domain:
            held_out = " (the held-out one not counted)" if cfg.holdout_domain else ""
            raise SplitError(f"scheme {cfg.scheme} gives {n_domains} domains{held_out} x {cfg.clients_per_domain} "
                             f"clients_per_domain = {n_domains * cfg.clients_per_domain} clients, but clients is "
                             f"{n_clients}; set clients: {n_domains * cfg.clients_per_domain}, or "
                             f"partition.clients_per_domain: 0 to spread {n_clients} clients by domain size")
        return [cfg.clients_per_domain] * n_domains
    if n_clients < n_domains:
        raise SplitError(f"{n_clients} clients cannot cover {n_domains} domains; use clients >= {n_domains} or "
                         f"fewer data.domains")
    sizes = np.array([np.sum(cand.domains[cand.members] == d) for d in cand.client_domains], dtype=float)
    share = 1 + sizes / sizes.sum() * (n_clients - n_domains)
    counts = np.floor(share).astype(int)
    for d in np.argsort(-(share - counts), kind="stable")[: n_clients - counts.sum()]:
        counts[d] += 1
    return counts.tolist()


def _require_train_and_test(cand: Candidates, members: np.ndarray, where: str) -> None:
    """A domain whose official split has no training or no test images fails here, with its counts, rather than
    after 1000 Dirichlet draws or as one client's empty set."""
    if cand.subset is None:
        return
    counts = np.bincount(cand.subset[members], minlength=3)
    given = f"its lists give train {counts[TRAIN]}, val {counts[VAL]}, test {counts[TEST]}"
    if counts[TRAIN] == 0:
        raise SplitError(f"{where} has no training images in the official split ({given}); check the split lists "
                         "the dataset reader names in its notes (split_files), or remove them to cut each client's "
                         "data by partition.val_fraction and test_fraction")
    if not cand.has_test(members):
        raise SplitError(f"{where} has no test images in the official split ({given}) while other domains have "
                         "some; add the missing test list, or remove the lists to cut each client's data by "
                         "partition.val_fraction and test_fraction")


def _per_domain(cand: Candidates, cfg: PartitionConfig, n_clients: int,
                split: Callable[[np.ndarray, str, int], list[np.ndarray]]) -> Pools:
    """Feature shift (§1.6c): each domain's samples go to that domain's clients only, in domain order."""
    out = []
    for d, k in zip(cand.client_domains, _domain_client_counts(cand, cfg, n_clients), strict=True):
        name = cand.domain_names[d]
        members = cand.members[cand.domains[cand.members] == d]
        _require_train_and_test(cand, members, f"domain {name}")
        out.extend((p, d) for p in split(members, name, k))
    return out


@PARTITIONERS.register("domain")
def domain(cand: Candidates, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator) -> Pools:
    """Feature shift only: the samples of each domain dealt out iid to its clients."""
    return _per_domain(cand, cfg, n_clients, lambda m, _, k: _even_pools(cand, m, k, rng))


@PARTITIONERS.register("domain_dirichlet")
def domain_dirichlet(cand: Candidates, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator) -> Pools:
    """Feature + label shift (§1.6c, FedBN-style): Dirichlet(beta) label shift inside each domain."""
    minimum = cand.train_minimum(cfg, cfg.min_samples)
    return _per_domain(cand, cfg, n_clients, lambda m, name, k: _dirichlet_pools(
        cand, m, k, cfg.beta, minimum, rng, f"domain {name}"))


@PARTITIONERS.register("pathological")
def pathological(cand: Candidates, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator) -> Pools:
    """k classes per client (McMahan-style pathological non-IID): a shuffled class cycle gives client i the k
    classes at positions i*k .. i*k+k-1, so a client never holds a class twice; each class is dealt out evenly
    among its holders. Classes no client holds (clients * k < classes) are left out."""
    classes, k = cand.classes(), cfg.classes_per_client
    if k > len(classes):
        raise SplitError(f"partition.classes_per_client = {k} but the data has only {len(classes)} classes; "
                         f"set partition.classes_per_client <= {len(classes)}")
    cycle = classes[rng.permutation(len(classes))]
    held = [cycle[(i * k + np.arange(k)) % len(classes)] for i in range(n_clients)]
    parts: list[list[np.ndarray]] = [[] for _ in range(n_clients)]
    for cls in classes:
        holders = [i for i, h in enumerate(held) if cls in h]
        if not holders:
            continue
        for chunk, i in zip(_even_pools(cand, cand.members[cand.labels[cand.members] == cls], len(holders), rng),
                            holders, strict=True):
            parts[i].append(chunk)
    return [(p, -1) for p in _join(parts)]


@PARTITIONERS.register("disjoint_classes")
def disjoint_classes(cand: Candidates, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator) -> Pools:
    """pFedMMA (§1.6a): disjoint class chunks from the fixed seed-2023 shuffle; a client gets every candidate of
    its classes (all k shots for training, all test images for its Local test)."""
    chunks = disjoint_class_chunks(cand.classes(), n_clients)
    return [(cand.members[np.isin(cand.labels[cand.members], chunk)], -1) for chunk in chunks]


@PARTITIONERS.register("superclass_dirichlet")
def superclass_dirichlet(cand: Candidates, cfg: PartitionConfig, n_clients: int, rng: np.random.Generator) -> Pools:
    """§1.6b CIFAR-100 (pachinko-style): train and test pooled; each client draws samples_per_client samples from
    a coarse Dirichlet(beta) over superclasses times a fine Dirichlet(fine_alpha) inside each superclass,
    without replacement (an exhausted class drops out and the rest are renormalised)."""
    coarse_of = _coarse_map(cand)
    fine = cand.classes()
    need = n_clients * cfg.samples_per_client
    if need > len(cand.members):
        raise SplitError(f"superclass_dirichlet: {n_clients} clients x partition.samples_per_client = "
                         f"{cfg.samples_per_client} needs {need} samples, the data has {len(cand.members)}; lower "
                         f"partition.samples_per_client or use fewer clients")
    queues = [cand.members[cand.labels[cand.members] == c] for c in fine]
    queues = [q[rng.permutation(len(q))] for q in queues]
    taken = np.zeros(len(fine), dtype=np.int64)
    groups = [np.flatnonzero(coarse_of[fine] == g) for g in np.unique(coarse_of[fine])]
    pools = []
    for _ in range(n_clients):
        probs = np.zeros(len(fine))
        coarse = rng.dirichlet(np.full(len(groups), cfg.beta))
        for share, group in zip(coarse, groups, strict=True):
            probs[group] = share * rng.dirichlet(np.full(len(group), cfg.fine_alpha))
        remaining = np.array([len(q) for q in queues]) - taken
        counts = _draw_without_replacement(probs, remaining, cfg.samples_per_client, rng)
        pools.append(np.sort(np.concatenate([q[t:t + n] for q, t, n in zip(queues, taken, counts, strict=True)])))
        taken += counts
    return [(p.astype(np.int64), -1) for p in pools]


def _draw_without_replacement(probs: np.ndarray, remaining: np.ndarray, n: int,
                              rng: np.random.Generator) -> np.ndarray:
    counts = np.zeros(len(probs), dtype=np.int64)
    while n > 0:
        open_ = remaining - counts > 0
        p = probs * open_
        # A tiny beta can put all mass on exhausted classes; the rest is then drawn uniformly from the open ones.
        p = p / p.sum() if p.sum() > 0 else open_ / open_.sum()
        draw = np.minimum(rng.multinomial(n, p), remaining - counts)
        counts += draw
        n -= int(draw.sum())
    return counts


def _coarse_map(cand: Candidates) -> np.ndarray:
    """Coarse label per fine class from listing.notes['coarse_labels'] (one per sample or one per class)."""
    raw = cand.notes.get("coarse_labels")
    if raw is None:
        raise SplitError("scheme superclass_dirichlet needs listing.notes['coarse_labels'] (CIFAR-100 superclasses), "
                         "which this dataset lacks; use scheme dirichlet or label_dirichlet")
    raw = np.asarray(raw, dtype=np.int64)
    if len(raw) != len(cand.labels):
        if len(raw) == len(cand.class_names):
            return raw
        raise SplitError(f"listing.notes['coarse_labels'] has {len(raw)} entries, neither one per sample "
                         f"({len(cand.labels)}) nor one per class ({len(cand.class_names)}); fix the dataset reader")
    coarse = np.full(len(cand.class_names), -1, dtype=np.int64)
    coarse[cand.labels] = raw
    if np.any(coarse[cand.labels] != raw):
        raise SplitError("listing.notes['coarse_labels'] gives one class two superclasses; fix the dataset reader")
    return coarse


# Schemes defined by a global train/test split: a listing without an official one gets a seeded cut first.
NEEDS_SUBSET = frozenset({"label_dirichlet"})

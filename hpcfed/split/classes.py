"""Class-level rules of the few-shot protocols (methods.md §1.6a): base/novel classes, the pFedMMA class->client
map, k-shot sampling, and a seeded train/val/test cut for listings that have no official split."""

from __future__ import annotations

import dataclasses
import math
import random

import numpy as np

from hpcfed.errors import SplitError
from hpcfed.split.base import TEST, TRAIN, VAL, PartitionConfig

# §1.6a: the reference code shuffles the class list after `random.seed(2023)`, whatever the run's seed.
PFEDMMA_CLASS_SEED = 2023
# CoOp draws min(shots, 4) validation images per class.
MAX_VAL_SHOTS = 4


def base_novel_classes(classes: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """CoOp `subsample_classes`: sort the class ids; base = the first ceil(n/2), novel = the rest."""
    ordered = np.unique(classes)
    m = math.ceil(len(ordered) / 2)
    return ordered[:m], ordered[m:]


def disjoint_class_chunks(classes: np.ndarray, n_clients: int) -> list[np.ndarray]:
    """pFedMMA's class->client map (§1.6a): shuffle with a fixed `random.seed(2023)`, cut contiguous chunks of
    round(n / n_clients) classes; the last client takes the remainder. Classes are disjoint across clients."""
    ordered = [int(c) for c in np.unique(classes)]
    # The reference shuffles list(range(n)) of the re-indexed classes; the permutation depends only on n, so
    # shuffling the sorted ids gives the same map. Python's own round (half to even) as in the reference.
    random.Random(PFEDMMA_CLASS_SEED).shuffle(ordered)
    size = round(len(ordered) / n_clients)
    if size < 1 or size * (n_clients - 1) >= len(ordered):
        raise SplitError(f"{len(ordered)} classes cannot be cut into {n_clients} disjoint chunks of "
                         f"round({len(ordered)}/{n_clients}) = {size} classes with a non-empty last chunk; "
                         f"use fewer clients or a dataset with more classes")
    chunks = [ordered[i * size:(i + 1) * size] for i in range(n_clients - 1)]
    chunks.append(ordered[(n_clients - 1) * size:])
    return [np.asarray(c, dtype=np.int64) for c in chunks]


def seeded_subset(labels: np.ndarray, cfg: PartitionConfig, rng: np.random.Generator) -> np.ndarray:
    """A per-class train/val/test cut by val_fraction and test_fraction, for protocols that need a global test
    set (base-to-novel, k-shot, train/test Dirichlet) on a listing without an official split."""
    subset = np.full(len(labels), TRAIN, dtype=np.int64)
    for cls in np.unique(labels):
        idx = np.flatnonzero(labels == cls)
        idx = idx[rng.permutation(len(idx))]
        # Every class with two or more images keeps at least one test and one training image.
        n_test = min(len(idx) - 1, max(1, round(cfg.test_fraction * len(idx)))) if len(idx) > 1 else 0
        n_val = min(len(idx) - 1 - n_test, round(cfg.val_fraction * len(idx))) if len(idx) > 1 else 0
        subset[idx[:n_test]] = TEST
        subset[idx[n_test:n_test + n_val]] = VAL
    return subset


def seeded_test_from_train(labels: np.ndarray, subset: np.ndarray, cfg: PartitionConfig,
                           rng: np.random.Generator) -> np.ndarray:
    """An official split without a test part (PACS: its test lists hold the whole domain) with a per-class
    test_fraction of its training images marked test, for the protocols that need a global test set."""
    train = np.flatnonzero(subset == TRAIN)
    cut = seeded_subset(labels[train], dataclasses.replace(cfg, val_fraction=0.0), rng)
    marked = subset.copy()
    marked[train[cut == TEST]] = TEST
    return marked


def few_shot(members: np.ndarray, labels: np.ndarray, subset: np.ndarray, shots: int,
             class_names: tuple[str, ...], rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """CoOp few-shot sampling: `shots` training images per class, min(shots, 4) validation images per class (from
    the val split, or else from the training images not drawn); every test image stays. Returns the kept
    members and the subset with the drawn validation images marked as such."""
    subset = subset.copy()
    has_val = bool(np.any(subset[members] == VAL))
    kept = []
    for cls in np.unique(labels[members]):
        idx = members[labels[members] == cls]
        train = idx[subset[idx] == TRAIN]
        if len(train) < shots:
            raise SplitError(f"class {cls} ({class_names[cls]!r}) has {len(train)} training images, fewer than "
                             f"partition.shots = {shots}; set partition.shots <= {len(train)}")
        picked = rng.choice(train, shots, replace=False)
        source = idx[subset[idx] == VAL] if has_val else np.setdiff1d(train, picked)
        val = rng.choice(source, min(shots, MAX_VAL_SHOTS, len(source)), replace=False)
        subset[val] = VAL
        kept += [picked, val, idx[subset[idx] == TEST]]
    return np.sort(np.concatenate(kept)).astype(np.int64), subset

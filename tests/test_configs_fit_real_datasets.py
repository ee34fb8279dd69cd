"""Every shipped config splits its real dataset: each client gets training and test samples (and base-to-novel
its Base and Novel test sets). Real datasets are synthetic listings of their published shape
(tests/real_dataset_counts.py, no images); the offline built datasets are read as built, when they are."""

from __future__ import annotations

import functools

import numpy as np
import pytest
from real_dataset_counts import SHAPES, Shape, coarse_labels

from hpcfed.config import Config, load_config
from hpcfed.data.built import BUILT, built_root, read_stamp
from hpcfed.data.listing import Listing
from hpcfed.data.registry import load_listing
from hpcfed.errors import SplitError
from hpcfed.split import Splits, make_splits

from conftest import REPO

CONFIGS = sorted(p for p in (REPO / "configs").rglob("*.yaml") if not p.name.startswith("_"))
CONFIG_IDS = [str(p.relative_to(REPO / "configs")) for p in CONFIGS]


def synthetic_listing(name: str, shape: Shape, domains: tuple[str, ...] | None) -> Listing:
    """A listing of the dataset's shape: per domain, class and subset as many paths as it has images."""
    chosen = domains or shape.domains
    paths, labels, domain_ids, subsets = [], [], [], []
    for d, domain in enumerate(chosen):
        for label, counts in enumerate(shape.counts[shape.domains.index(domain)]):
            per_subset = counts if shape.split else (counts,)
            subset = np.repeat(np.arange(len(per_subset)), per_subset) if shape.split else np.full(counts, -1)
            paths += [f"{domain}/c{label:03d}/img_{k:06d}.jpg" for k in range(len(subset))]
            labels.append(np.full(len(subset), label))
            domain_ids.append(np.full(len(subset), d))
            subsets.append(subset)
    labels_array = np.concatenate(labels).astype(np.int64)
    notes = {"coarse_labels": coarse_labels(shape, labels_array)} if shape.coarse_of_class else {}
    return Listing(root=REPO / "synthetic" / name, paths=tuple(paths), labels=labels_array,
                   domains=np.concatenate(domain_ids).astype(np.int64),
                   class_names=tuple(f"class {c}" for c in range(shape.n_classes)), domain_names=tuple(chosen),
                   subset=np.concatenate(subsets).astype(np.int64) if shape.split else None, notes=notes)


@functools.cache
def real_listing(name: str, root: str | None, domains: tuple[str, ...] | None) -> Listing:
    """Read once per dataset (ImageNet's 1.3 M rows take a second); read-only, since make_splits must not write."""
    if name in SHAPES:
        listing = synthetic_listing(name, SHAPES[name], domains)
    elif name in BUILT:  # built by `make data`; its real listing is small and fast to read
        if read_stamp(built_root(name, root)) is None:
            pytest.skip(f"{name} is not built on this machine (make data)")
        listing = load_listing(name, root, list(domains) if domains else None)
    else:
        pytest.fail(f"no real counts for dataset {name!r}: add its published shape to tests/real_dataset_counts.py")
    for array in (listing.labels, listing.domains, listing.subset):
        if array is not None:
            array.setflags(write=False)
    return listing


def split_config(path, *overrides: str, next_seed: int = 0) -> tuple[Config, Splits]:
    cfg = load_config(path, ["model.pretrained=null", *overrides])
    data = cfg.data
    listing = real_listing(data.dataset, data.root, tuple(data.domains) if data.domains else None)
    return cfg, make_splits(listing, cfg.partition, cfg.clients, cfg.seed + next_seed)


# Papers report the mean of three seeds (runs/..._seed{seed}.h5): each must split, not only the config's own.
@pytest.mark.parametrize("next_seed", [0, 1, 2], ids=["seed", "seed+1", "seed+2"])
@pytest.mark.parametrize("path", CONFIGS, ids=CONFIG_IDS)
def test_every_shipped_config_gives_every_client_training_and_test_data(path, next_seed):
    cfg, splits = split_config(path, next_seed=next_seed)
    assert len(splits.clients) == cfg.clients
    for i, client in enumerate(splits.clients):
        assert len(client.train) >= cfg.partition.min_samples and len(client.test) > 0, f"client {i}"
    if cfg.partition.base_novel:
        assert len(splits.base_test) > 0 and len(splits.novel_test) > 0
        assert len(splits.novel_classes) > 0


def test_the_harness_refuses_eurosat_base_to_novel_with_ten_clients():
    """The config as first published: 10 clients cannot hold disjoint shares of EuroSAT's 5 base classes."""
    with pytest.raises(SplitError, match="5 classes cannot be cut into 10 disjoint chunks"):
        split_config(REPO / "configs/base2novel/eurosat.yaml", "clients=10")


def test_the_smallest_real_classes_bound_the_shots():
    """Caltech101's smallest classes hold 16 training images: 16 shots fit, 17 do not."""
    with pytest.raises(SplitError, match="has 16 training images, fewer than partition.shots = 17"):
        split_config(REPO / "configs/base2novel/caltech101.yaml", "partition.shots=17")

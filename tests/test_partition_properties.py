"""Partitioner properties over random listings (hypothesis), the methods.md §1.6 protocol rules, and the errors."""

from __future__ import annotations

import hashlib
import math
import os
import random
import subprocess
import sys
from dataclasses import replace
from pathlib import Path

import numpy as np
import pytest
from hypothesis import given, reject, settings
from hypothesis import strategies as st

from hpcfed.config import PartitionConfig, parse_config
from hpcfed.data.listing import Listing
from hpcfed.errors import ConfigError, SplitError
from hpcfed.split import PARTITIONERS, Splits, base_novel_classes, disjoint_class_chunks, make_splits

SETTINGS = settings(max_examples=120, deadline=None)
DOMAIN_SCHEMES = ("domain", "domain_dirichlet")


def make_listing(labels: np.ndarray, domains: np.ndarray | None = None, n_domains: int = 1, kind: str | None = None,
                 seed: int = 0, coarse: int = 0) -> Listing:
    """An in-memory listing with fake paths. kind: None (no official split), 'train_test', 'train_val_test' or
    'train_val' (PACS: its test lists hold the whole domain): a per-class official split (30% test, 15% val when
    present)."""
    labels = np.asarray(labels, dtype=np.int64)
    n_classes = int(labels.max()) + 1
    subset = None
    if kind is not None:
        g = np.random.default_rng(seed)
        subset = np.zeros(len(labels), dtype=np.int64)
        for c in range(n_classes):
            idx = g.permutation(np.flatnonzero(labels == c))
            n_test = round(0.3 * len(idx)) if "test" in kind else 0
            n_val = round(0.15 * len(idx)) if "val" in kind else 0
            subset[idx[:n_test]], subset[idx[n_test:n_test + n_val]] = 2, 1
    notes = {"coarse_labels": (np.arange(n_classes) % coarse)[labels]} if coarse else {}
    return Listing(Path("/fake"), tuple(f"img{i:05d}.png" for i in range(len(labels))), labels,
                   np.zeros(len(labels), np.int64) if domains is None else np.asarray(domains, dtype=np.int64),
                   tuple(f"class{c}" for c in range(n_classes)), tuple(f"d{d}" for d in range(n_domains)),
                   subset=subset, notes=notes)


@st.composite
def listings(draw, coarse: bool = False) -> Listing:
    seed = draw(st.integers(0, 2**32 - 1))
    g = np.random.default_rng(seed)
    n_classes, n_domains = draw(st.integers(4, 10)), draw(st.integers(1, 3))
    labels = g.permutation(np.repeat(np.arange(n_classes), g.integers(14, 40, n_classes)))
    domains = np.arange(len(labels)) % n_domains  # every domain holds a share of every class
    domains = domains[g.permutation(len(labels))]
    kind = draw(st.sampled_from([None, "train_test", "train_val_test", "train_val"]))
    return make_listing(labels, domains, n_domains, kind, seed, coarse=draw(st.integers(2, 3)) if coarse else 0)


@st.composite
def cases(draw) -> tuple[Listing, PartitionConfig, int]:
    scheme = draw(st.sampled_from(sorted(PARTITIONERS)))
    listing = draw(listings(coarse=scheme == "superclass_dirichlet"))
    pooled = scheme == "superclass_dirichlet"
    cfg = PartitionConfig(scheme=scheme, beta=draw(st.sampled_from([0.5, 1.0, 5.0])),
                          clients_per_domain=draw(st.integers(1, 2)), classes_per_client=draw(st.integers(1, 3)),
                          shots=0 if pooled else draw(st.sampled_from([0, 3, 6])),
                          base_novel=False if pooled else draw(st.booleans()),
                          samples_per_client=draw(st.integers(10, 30)))
    if scheme in DOMAIN_SCHEMES:
        n_clients = len(listing.domain_names) * cfg.clients_per_domain
    else:
        n_clients = draw(st.integers(2, 4))
    return listing, cfg, n_clients


def split_or_reject(listing: Listing, cfg: PartitionConfig, n_clients: int, seed: int = 0) -> Splits:
    try:
        return make_splits(listing, cfg, n_clients, seed)
    except SplitError:  # a draw the data cannot satisfy (e.g. too few samples): the documented refusal
        reject()


def fingerprint(splits: Splits) -> str:
    h = hashlib.sha256()
    for c in splits.clients:
        for part in (c.train, c.val, c.test):
            h.update(np.asarray(part, dtype=np.int64).tobytes())
            h.update(b"|")
        h.update(str(c.domain).encode())
    for name in ("base_test", "novel_test"):
        value = getattr(splits, name)
        h.update(b"-" if value is None else value.tobytes())
    return h.hexdigest()[:16]


def check_invariants(listing: Listing, cfg: PartitionConfig, splits: Splits, n_clients: int) -> None:
    assert len(splits.clients) == n_clients
    every = np.concatenate([np.concatenate([c.train, c.val, c.test]) for c in splits.clients])
    assert len(every) == len(np.unique(every)), "an index is used twice"
    assert every.min() >= 0 and every.max() < len(listing)
    for c in splits.clients:
        assert len(c.train) >= cfg.min_samples and len(c.test) >= 1, "an empty client"
        assert all(p.dtype == np.int64 and np.all(np.diff(p) > 0) for p in (c.train, c.val, c.test))
        assert np.array_equal(c.classes, np.unique(listing.labels[c.train]))
        if listing.subset is not None:
            has_val, has_test = bool(np.any(listing.subset == 1)), bool(np.any(listing.subset == 2))
            assert np.all(listing.subset[c.train] == 0) and np.all(listing.subset[c.test] == (2 if has_test else 0))
            assert np.all(listing.subset[c.val] == (1 if has_val else 0))
        if cfg.scheme in DOMAIN_SCHEMES:
            assert np.all(listing.domains[np.concatenate([c.train, c.val, c.test])] == c.domain)
    if cfg.shots:
        counts = np.bincount(listing.labels[np.concatenate([c.train for c in splits.clients])])
        assert counts.max() <= cfg.shots
    if cfg.base_novel:
        check_base_novel(listing, splits)
    assert splits.params["scheme"] == cfg.scheme and splits.params["clients"] == n_clients


def check_base_novel(listing: Listing, splits: Splits) -> None:
    classes = np.unique(listing.labels)
    base, novel = splits.base_classes, splits.novel_classes
    assert np.array_equal(base, classes[:math.ceil(len(classes) / 2)]) and np.array_equal(novel, classes[len(base):])
    for c in splits.clients:
        assert np.all(np.isin(listing.labels[np.concatenate([c.train, c.val, c.test])], base)), "a novel class leaked"
        assert np.all(np.isin(c.test, splits.base_test))
    assert np.all(np.isin(listing.labels[splits.base_test], base))
    assert np.all(np.isin(listing.labels[splits.novel_test], novel))
    if listing.subset is not None and np.any(listing.subset == 2):  # every official test image of its half
        assert len(splits.base_test) + len(splits.novel_test) == np.count_nonzero(listing.subset == 2)


@SETTINGS
@given(cases())
def test_every_scheme_keeps_indices_disjoint_clients_full_and_the_official_split(case):
    listing, cfg, n_clients = case
    check_invariants(listing, cfg, split_or_reject(listing, cfg, n_clients), n_clients)


@SETTINGS
@given(cases(), st.integers(0, 2**31 - 1))
def test_same_seed_same_split_without_touching_global_rngs(case, seed):
    listing, cfg, n_clients = case
    np_state, py_state = np.random.get_state(), random.getstate()
    first = split_or_reject(listing, cfg, n_clients, seed)
    np_after = np.random.get_state()
    assert np.array_equal(np_state[1], np_after[1]) and np_state[2:] == np_after[2:]
    assert random.getstate() == py_state
    assert fingerprint(make_splits(listing, cfg, n_clients, seed)) == fingerprint(first)


def chunkable(n_classes: int, n_clients: int) -> bool:
    size = round(n_classes / n_clients)
    return size >= 1 and size * (n_clients - 1) < n_classes


@SETTINGS
@given(listings(), st.sampled_from(["iid", "dirichlet", "pathological", "label_dirichlet"]), st.data())
def test_disjoint_classes_where_the_protocol_requires_it(listing, other, data):
    """pFedMMA clients hold disjoint base classes; the test images follow the client's own classes (§1.6a)."""
    n_base = math.ceil(len(listing.class_names) / 2)
    n_clients = data.draw(st.sampled_from([k for k in range(2, 5) if chunkable(n_base, k)]))
    cfg = PartitionConfig(scheme="disjoint_classes", base_novel=True, shots=3)
    splits = split_or_reject(listing, cfg, n_clients)
    seen: set[int] = set()
    for c in splits.clients:
        own = set(c.classes.tolist())
        assert not own & seen and set(listing.labels[c.test].tolist()) <= own
        assert np.all(np.bincount(listing.labels[c.train])[c.classes] == cfg.shots)
        seen |= own
    assert seen == set(splits.base_classes.tolist())
    # Base/novel holds whatever the scheme; other schemes may share classes between clients.
    check_base_novel(listing, split_or_reject(listing, replace(cfg, scheme=other, shots=0), n_clients))


@SETTINGS
@given(listings(), st.integers(2, 4))
def test_label_dirichlet_test_set_follows_the_clients_train_distribution(listing, n_clients):
    """§1.6b CIFAR-10: one set of per-class shares cuts train and test, so shares agree up to rounding."""
    cfg = PartitionConfig(scheme="label_dirichlet", beta=0.5, val_fraction=0.0)
    splits = split_or_reject(listing, cfg, n_clients)
    for cls in np.unique(listing.labels):
        n_train = sum(np.count_nonzero(listing.labels[c.train] == cls) for c in splits.clients)
        n_test = sum(np.count_nonzero(listing.labels[c.test] == cls) for c in splits.clients)
        for c in splits.clients:
            share_train = np.count_nonzero(listing.labels[c.train] == cls) / n_train
            share_test = np.count_nonzero(listing.labels[c.test] == cls) / n_test
            assert abs(share_train - share_test) <= 1 / n_train + 1 / n_test + 1e-9
        if listing.subset is not None and np.any(listing.subset == 2):  # else a seeded test cut from the train
            assert n_test == np.count_nonzero((listing.subset == 2) & (listing.labels == cls))
    assert min(len(c.train) for c in splits.clients) >= 10


@SETTINGS
@given(listings(coarse=True), st.integers(2, 5), st.integers(5, 30))
def test_superclass_dirichlet_gives_each_client_its_sample_count_from_pooled_data(listing, n_clients, per_client):
    cfg = PartitionConfig(scheme="superclass_dirichlet", beta=0.3, samples_per_client=per_client, min_samples=1)
    splits = split_or_reject(listing, cfg, n_clients)
    for c in splits.clients:
        assert len(c.train) + len(c.val) + len(c.test) == per_client


# ---- protocol tables and fixed examples ----------------------------------------------------------------------

# methods.md §1.6a: dataset -> (classes, base, novel, classes per client 0-8, classes of client 9)
PFEDMMA_TABLE = {"Pets": (37, 19, 18, 2, 1), "Flowers": (102, 51, 51, 5, 6), "DTD": (47, 24, 23, 2, 6),
                 "Caltech": (100, 50, 50, 5, 5), "Food": (101, 51, 50, 5, 6), "UCF": (101, 51, 50, 5, 6),
                 "SUN397": (397, 199, 198, 20, 19)}


@pytest.mark.parametrize("dataset", sorted(PFEDMMA_TABLE))
def test_pfedmma_class_counts_match_the_methods_table(dataset):
    n, n_base, n_novel, first, last = PFEDMMA_TABLE[dataset]
    base, novel = base_novel_classes(np.arange(n))
    assert (len(base), len(novel)) == (n_base, n_novel)
    chunks = disjoint_class_chunks(base, 10)
    assert [len(c) for c in chunks] == [first] * 9 + [last]
    # The reference: random.seed(2023); random.shuffle(class_list); contiguous chunks, last takes the rest.
    state = random.getstate()
    try:
        random.seed(2023)
        reference = list(range(n_base))
        random.shuffle(reference)
    finally:
        random.setstate(state)
    assert np.array_equal(np.concatenate(chunks), base[reference])
    # Train images per client at 16 shots: 16 x classes (the table's last column).
    listing = make_listing(np.repeat(np.arange(n), 24), kind="train_test")  # 17 train images per class
    splits = make_splits(listing, PartitionConfig(scheme="disjoint_classes", shots=16, base_novel=True), 10, seed=3)
    assert splits.train_sizes().tolist() == [16 * first] * 9 + [16 * last]


def test_other_seed_other_split_except_the_fixed_pfedmma_class_map():
    g = np.random.default_rng(1)
    listing = make_listing(g.permutation(np.repeat(np.arange(8), 30)), g.integers(0, 2, 240), 2, "train_val_test")
    for scheme in sorted(PARTITIONERS):
        cfg = PartitionConfig(scheme=scheme, clients_per_domain=2, shots=5 * (scheme == "disjoint_classes"),
                              samples_per_client=40)
        with_coarse = replace(listing, notes={"coarse_labels": np.arange(8) % 2})
        a, b = (make_splits(with_coarse, cfg, 4, seed) for seed in (0, 1))
        assert fingerprint(a) != fingerprint(b), scheme
    # Without shots, pFedMMA's split depends on no seed at all: the class map is fixed and every image is used.
    cfg = PartitionConfig(scheme="disjoint_classes", base_novel=True)
    assert fingerprint(make_splits(listing, cfg, 2, 0)) == fingerprint(make_splits(listing, cfg, 2, 1))


def test_calls_do_not_influence_each_other():
    listing = make_listing(np.arange(300) % 6, np.arange(300) % 3, 3, "train_test")
    a = PartitionConfig(scheme="dirichlet", shots=10)
    b = PartitionConfig(scheme="domain_dirichlet", clients_per_domain=2)
    first = fingerprint(make_splits(listing, a, 3, 5))
    make_splits(listing, b, 6, 5)
    assert fingerprint(make_splits(listing, a, 3, 5)) == first


def fresh_process_fingerprints() -> list[str]:
    listing = make_listing(np.arange(300) % 6, np.arange(300) % 3, 3, "train_test", coarse=2)
    cfgs = [PartitionConfig(scheme="iid", shots=4), PartitionConfig(scheme="pathological", base_novel=True),
            PartitionConfig(scheme="label_dirichlet"), PartitionConfig(scheme="domain_dirichlet", clients_per_domain=2),
            PartitionConfig(scheme="superclass_dirichlet", samples_per_client=40)]
    return [fingerprint(make_splits(listing, cfg, 6, 5)) for cfg in cfgs]


SUBPROCESS = """
import numpy as np, random, sys
sys.path.insert(0, {tests!r})
from test_partition_properties import fresh_process_fingerprints
np.random.seed(99); random.seed(99)  # another global state must not matter
print(*fresh_process_fingerprints())
"""


def test_same_split_in_a_fresh_process_with_another_hash_seed():
    here = fresh_process_fingerprints()
    code = SUBPROCESS.format(tests=str(Path(__file__).parent))
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True,
                         env={**os.environ, "PYTHONHASHSEED": "12345"})
    assert out.stdout.split() == here


def test_pool_schemes_without_an_official_split_are_unchanged():
    """Regression pin: digests made by the code before the new schemes (configs/demo.yaml uses this path)."""
    idx = np.arange(360)
    listing = make_listing((idx * 7) % 6, (idx // 5) % 3, 3)
    expected = {"domain_dirichlet": (6, "0b8ebc473cc75cb3"), "iid": (5, "5ff470bc48183718"),
                "dirichlet": (4, "f3e43e498050b97a")}
    for scheme, (n_clients, digest) in expected.items():
        cfg = PartitionConfig(scheme=scheme, clients_per_domain=2, beta=0.5, val_fraction=0.1, test_fraction=0.3)
        splits = make_splits(listing, cfg, n_clients, seed=0)
        h = hashlib.sha256()
        for c in splits.clients:
            for part in (c.train, c.val, c.test):
                h.update(part.tobytes())
                h.update(b"|")
            h.update(str(c.domain).encode())
        assert h.hexdigest()[:16] == digest, scheme


def test_domain_scheme_is_iid_inside_each_domain():
    listing = make_listing(np.arange(240) % 4, np.arange(240) % 2, 2)
    splits = make_splits(listing, PartitionConfig(scheme="domain", clients_per_domain=3), 6, seed=0)
    assert [c.domain for c in splits.clients] == [0, 0, 0, 1, 1, 1]
    assert splits.train_sizes().max() - splits.train_sizes().min() <= 1


def test_pathological_gives_each_client_k_classes():
    listing = make_listing(np.arange(400) % 10, kind="train_test")
    splits = make_splits(listing, PartitionConfig(scheme="pathological", classes_per_client=2), 5, seed=0)
    assert all(len(c.classes) == 2 for c in splits.clients)
    assert set(np.concatenate([c.classes for c in splits.clients]).tolist()) == set(range(10))


# ---- errors --------------------------------------------------------------------------------------------------


def test_more_shots_than_images_names_the_class_and_its_count():
    labels = np.r_[np.zeros(30), np.ones(30), np.full(8, 2)].astype(np.int64)
    with pytest.raises(SplitError, match=r"class 2 \('class2'\) has 6 training images.*partition.shots = 7"):
        make_splits(make_listing(labels, kind="train_test"), PartitionConfig(scheme="iid", shots=7), 2, seed=0)


@pytest.mark.parametrize("cfg,n_clients,coarse,match", [
    (PartitionConfig(scheme="disjoint_classes", base_novel=True), 10, 0, "16 classes cannot be cut into 10"),
    (PartitionConfig(scheme="pathological", classes_per_client=40), 4, 0, "classes_per_client <= 32"),
    (PartitionConfig(scheme="superclass_dirichlet"), 2, 0, "coarse_labels"),
    (PartitionConfig(scheme="superclass_dirichlet", samples_per_client=2000), 2, 4, "lower partition.samples_per_"),
    (PartitionConfig(scheme="iid"), 900, 0, r"client 0 gets 1 training samples \(< partition.min_samples"),
    (PartitionConfig(scheme="domain"), 3, 0, "set clients: 1"),
])
def test_impossible_partitions_are_refused_with_the_fix(cfg, n_clients, coarse, match):
    listing = make_listing(np.arange(640) % 32, kind="train_test", coarse=coarse)
    with pytest.raises(SplitError, match=match):
        make_splits(listing, cfg, n_clients, seed=0)


def test_client_without_test_images_is_refused():
    labels = np.arange(100) % 2
    listing = make_listing(labels, kind="train_test")
    subset = listing.subset.copy()
    subset[labels == 1] = 0  # class 1 has no test images
    with pytest.raises(SplitError, match=r"client \d gets no test samples"):
        make_splits(replace(listing, subset=subset), PartitionConfig(scheme="disjoint_classes"), 2, seed=0)


def test_an_official_split_without_test_cuts_each_clients_test_from_its_own_train():
    """PACS: its test lists hold the whole domain, so the official split is train and val only; each client's test
    is a seeded test_fraction of its own train, and its val stays the official one."""
    labels, domains = np.arange(400) % 4, np.arange(400) // 100
    listing = make_listing(labels, domains, n_domains=4, kind="train_val")
    cfg = PartitionConfig(scheme="domain_dirichlet", clients_per_domain=2, beta=0.5)
    splits = make_splits(listing, cfg, 8, seed=0)
    for c in splits.clients:
        assert len(c.train) >= cfg.min_samples and len(c.test) == max(1, round(0.3 * (len(c.train) + len(c.test))))
        assert np.all(listing.subset[c.test] == 0) and np.all(listing.subset[c.val] == 1)
        assert np.all(listing.domains[c.test] == c.domain)
    assert sum(len(c.val) for c in splits.clients) == np.count_nonzero(listing.subset == 1)
    assert fingerprint(splits) == fingerprint(make_splits(listing, cfg, 8, seed=0))
    assert fingerprint(splits) != fingerprint(make_splits(listing, cfg, 8, seed=1))


@pytest.mark.parametrize("scheme", DOMAIN_SCHEMES)
@pytest.mark.parametrize("moved_to,match", [
    (1, r"domain d1 has no test images in the official split \(its lists give train \d+, val \d+, test 0\)"),
    (2, r"domain d1 has no training images in the official split \(its lists give train 0, val 0, test 100\)"),
])
def test_a_domain_without_test_or_training_images_is_named_before_any_draw(scheme, moved_to, match):
    labels, domains = np.arange(200) % 2, np.arange(200) // 100
    listing = make_listing(labels, domains, n_domains=2, kind="train_test")
    subset = listing.subset.copy()
    subset[(domains == 1) & (subset != moved_to)] = moved_to  # d1: test images become val, or everything test
    if moved_to == 1:
        subset[(domains == 1) & (np.arange(200) % 3 > 0)] = 0  # keep training images in d1
    with pytest.raises(SplitError, match=match):
        make_splits(replace(listing, subset=subset), PartitionConfig(scheme=scheme), 2, seed=0)


def test_failed_dirichlet_draws_name_the_requirement_that_failed():
    skewed = make_listing(np.arange(200) % 2)
    with pytest.raises(SplitError, match=r"gave every client \d+ training samples .* lower partition.min_samples"):
        make_splits(skewed, PartitionConfig(scheme="dirichlet", beta=0.01), 10, seed=0)
    few_tests = make_listing(np.arange(600) % 2, kind="train_test")
    subset = few_tests.subset.copy()
    subset[subset == 2] = 0
    subset[:2] = 2  # one test image per class
    with pytest.raises(SplitError, match=r"gave every client a test sample .* official test split holds 2 images"):
        make_splits(replace(few_tests, subset=subset), PartitionConfig(scheme="dirichlet", beta=5.0), 3, seed=0)


@pytest.mark.parametrize("key,value", [("shots", -1), ("classes_per_client", 0), ("fine_alpha", 0),
                                       ("samples_per_client", 0), ("base_novel", "yes")])
def test_bad_partition_keys_are_named(key, value):
    with pytest.raises(ConfigError) as err:
        parse_config({"partition": {key: value}})
    assert err.value.key == f"partition.{key}" and "Fix:" in str(err.value)


def test_new_schemes_and_fields_parse():
    cfg = parse_config({"partition": {"scheme": "disjoint_classes", "shots": 16, "base_novel": True}})
    assert cfg.partition.shots == 16 and cfg.partition.base_novel is True

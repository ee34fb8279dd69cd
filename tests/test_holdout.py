"""Held-out clients and leave-one-domain-out (partition.holdout_clients, holdout_domain), without MPI: who is held
out, what no client may hold, how a new client is scored, and the bad combinations refused before compute."""

import dataclasses
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hpcfed.config import parse_config
from hpcfed.data import load_listing
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.errors import ConfigError, SplitError
from hpcfed.extract.cache import Plan
from hpcfed.rng import sample_clients
from hpcfed.split import make_splits
from hpcfed.split.base import PartitionConfig
from hpcfed.train.setup import build_host

from conftest import PACS_DOMAINS, REPO, make_image_tree, make_pacs_tree


@pytest.fixture(scope="module")
def three_domains(tmp_path_factory):
    return make_image_tree(tmp_path_factory.mktemp("lodo") / "tree", domains=("a", "b", "c"), per_class=12)


def _every_client_index(splits) -> np.ndarray:
    return np.concatenate([np.concatenate([c.train, c.val, c.test]) for c in splits.clients])


@pytest.mark.parametrize("scheme", ["domain_dirichlet", "domain", "dirichlet", "iid"])
def test_no_client_holds_an_image_of_the_held_out_domain(three_domains, scheme):
    listing = read_imagefolder(three_domains, domain_level=True)
    cfg = PartitionConfig(scheme=scheme, clients_per_domain=2, beta=1.0, holdout_domain="b")
    splits = make_splits(listing, cfg, 4, seed=0)
    b = listing.domain_names.index("b")
    assert not np.any(listing.domains[_every_client_index(splits)] == b)
    assert all(c.domain != b for c in splits.clients)
    # Every client is scored on the whole held-out domain, and on nothing else there.
    np.testing.assert_array_equal(splits.unseen_domain_test, np.flatnonzero(listing.domains == b))


def test_the_feature_cache_holds_the_held_out_domain_for_evaluation(three_domains):
    listing = read_imagefolder(three_domains, domain_level=True)
    splits = make_splits(listing, PartitionConfig(scheme="iid", holdout_domain="c"), 2, seed=0)
    plan = Plan.of(splits, views=4)
    assert set(splits.unseen_domain_test.tolist()) <= set(plan.eval_index.tolist())
    assert not set(splits.unseen_domain_test.tolist()) & set(plan.view_index.tolist())  # never trained on


def test_leave_one_domain_out_on_the_pacs_layout_keeps_the_domain_out_of_every_train_split(tmp_path):
    make_pacs_tree(tmp_path / "PACS" / "pacs_data" / "pacs_data", tmp_path / "PACS" / "pacs_label", per_class=6)
    listing = load_listing("pacs", root=str(tmp_path / "PACS"))
    assert listing.domain_names == PACS_DOMAINS and listing.subset is not None
    for held in PACS_DOMAINS:
        cfg = PartitionConfig(scheme="domain_dirichlet", clients_per_domain=1, beta=1.0, holdout_domain=held)
        splits = make_splits(listing, cfg, 3, seed=0)
        d = PACS_DOMAINS.index(held)
        train = np.concatenate([c.train for c in splits.clients])
        assert len(train) and not np.any(listing.domains[train] == d), held
        assert not np.any(listing.domains[_every_client_index(splits)] == d), held
        assert sorted(c.domain for c in splits.clients) == [i for i in range(4) if i != d]
        assert set(listing.domains[splits.unseen_domain_test]) == {d}
        assert len(splits.unseen_domain_test) == np.count_nonzero(listing.domains == d)


def test_an_unknown_held_out_domain_is_refused_naming_the_domains(three_domains):
    listing = read_imagefolder(three_domains, domain_level=True)
    with pytest.raises(SplitError, match=r"'z' is not a domain of this data; its domains are a, b, c"):
        make_splits(listing, PartitionConfig(scheme="iid", holdout_domain="z"), 2, seed=0)


def test_holding_out_the_only_domain_is_refused(tmp_path):
    root = make_image_tree(tmp_path / "one", domains=("only",), per_class=6)
    listing = read_imagefolder(root / "only")  # classes at the top: one domain
    assert len(listing.domain_names) == 1
    with pytest.raises(SplitError, match="single domain.*multi-domain dataset"):
        make_splits(listing, PartitionConfig(scheme="iid", holdout_domain=listing.domain_names[0]), 2, seed=0)


def test_held_out_clients_come_from_their_own_stream_and_leave_every_split_as_it_was(three_domains):
    listing = read_imagefolder(three_domains, domain_level=True)
    plain = make_splits(listing, PartitionConfig(scheme="domain_dirichlet", clients_per_domain=2, beta=1.0), 6, 0)
    held = make_splits(listing, PartitionConfig(scheme="domain_dirichlet", clients_per_domain=2, beta=1.0,
                                                holdout_clients=2), 6, 0)
    assert plain.holdout_clients is None
    assert len(held.holdout_clients) == 2 and len(set(held.holdout_clients.tolist())) == 2
    assert set(held.holdout_clients.tolist()) <= set(range(6))
    for a, b in zip(plain.clients, held.clients, strict=True):
        np.testing.assert_array_equal(a.train, b.train)
        np.testing.assert_array_equal(a.test, b.test)
    other_seed = make_splits(listing, dataclasses.replace(PartitionConfig(scheme="iid"), holdout_clients=2), 6, 1)
    draws = {tuple(make_splits(listing, PartitionConfig(scheme="iid", holdout_clients=2), 6, s).holdout_clients)
             for s in range(6)}
    assert len(draws) > 1, "the held-out set should depend on the seed"
    assert tuple(other_seed.holdout_clients) in draws


def test_sampling_never_draws_a_held_out_client_and_is_unchanged_without_any():
    held = np.array([1, 4])
    for r in range(30):
        chosen = sample_clients(7, r, 10, 0.5, held)
        assert not set(chosen.tolist()) & {1, 4}
        assert len(chosen) == (8 if r == 0 else 4)  # participation is a share of the 8 that train
        np.testing.assert_array_equal(sample_clients(7, r, 10, 0.3), sample_clients(7, r, 10, 0.3, None))
    np.testing.assert_array_equal(sample_clients(7, 0, 10, 1.0, held), [0, 2, 3, 5, 6, 7, 8, 9])


@pytest.mark.parametrize(("changes", "key", "words"), [
    ({"clients": 3, "partition": {"holdout_clients": 3}}, "partition.holdout_clients", "leaves none to train"),
    ({"train": {"holdout_steps": 5}}, "train.holdout_steps", "no client is held out"),
    ({"data": {"domains": ["a", "b"]}, "partition": {"holdout_domain": "c"}}, "partition.holdout_domain",
     "not among data.domains"),
    ({"data": {"domains": ["a"]}, "partition": {"holdout_domain": "a"}}, "partition.holdout_domain",
     "leaves no domain"),
])
def test_bad_holdout_combinations_are_refused_by_the_config_check(changes, key, words):
    with pytest.raises(ConfigError) as caught:
        parse_config({"clients": 4, **changes})
    assert caught.value.key == key and words in str(caught.value)


def _state(client) -> tuple:
    return ({n: t.clone() for n, t in client.local.items()}, client.optimizer.state_dict()["state"],
            dict(client.data_rng.bit_generator.state["state"]), dict(client.trained_shared))


@pytest.mark.parametrize("method", ["promptfl", "pfedmoap", "pfedmma"])
def test_scoring_a_new_client_adapts_a_copy_and_leaves_the_client_as_it_was(three_domains, method):
    listing = read_imagefolder(three_domains, domain_level=True)
    cfg = parse_config({"clients": 3, "model": {"name": "hpcfed-tiny"}, "method": {"name": method},
                        "data": {"dataset": "imagefolder", "root": str(three_domains)},
                        "partition": {"scheme": "domain_dirichlet", "clients_per_domain": 1, "holdout_clients": 1},
                        "train": {"lr": 0.05, "batch_size": 8, "holdout_steps": 6}})
    splits = make_splits(listing, cfg.partition, 3, 0)
    new = int(splits.holdout_clients[0])
    host = build_host(cfg, SimpleNamespace(device="cpu"), listing, splits, [new])
    client = host.clients[new]
    before, global_before = _state(client), host.global_shared.clone()
    fresh_params = {n: p.detach().clone() for n, p in host.method.added.named_parameters()}
    first = host.evaluate_new_client(client, 0)
    adapted_params = {n: p.detach().clone() for n, p in host.method.added.named_parameters()}
    assert any(not torch.equal(fresh_params[n], adapted_params[n]) for n in fresh_params), "no step was taken"
    after = _state(client)
    assert torch.equal(host.global_shared, global_before)  # nothing reaches the global state either
    for name in before[0]:
        assert torch.equal(before[0][name], after[0][name]), name
    assert before[1:] == after[1:] == ({}, before[2], {})  # its own optimizer never stepped; nothing trained
    # The same new client, the same round: the same scores (adaptation seeded by client and round only).
    assert host.evaluate_new_client(client, 0) == first
    assert set(first) == {"unseen_fresh_accuracy", "unseen_adapted_accuracy"}
    # Fresh is the global state with untrained personal parameters: what `evaluate` calls global_accuracy.
    assert first["unseen_fresh_accuracy"] == host.evaluate(client).get("global_accuracy",
                                                                      host.evaluate(client)["test_accuracy"])


LODO = [("office_home.yaml", d, ()) for d in ("Art", "Clipart", "Product", "Real World")]
# DomainNet-10: 5 clients for each of the 5 domains left.
LODO += [("domainnet10.yaml", d, ("clients=25",))
         for d in ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")]


@pytest.mark.parametrize(("config", "domain", "overrides"), LODO, ids=[f"{c}-{d}" for c, d, _ in LODO])
def test_leave_one_domain_out_splits_of_the_shipped_configs_on_their_real_shapes(config, domain, overrides):
    from test_configs_fit_real_datasets import real_listing, split_config

    cfg, splits = split_config(REPO / "configs" / config, f"partition.holdout_domain={domain}", *overrides)
    listing = real_listing(cfg.data.dataset, cfg.data.root, tuple(cfg.data.domains) if cfg.data.domains else None)
    d = listing.domain_names.index(domain)
    assert len(splits.clients) == cfg.clients
    assert not np.any(listing.domains[_every_client_index(splits)] == d)
    assert {c.domain for c in splits.clients} == set(range(len(listing.domain_names))) - {d}
    np.testing.assert_array_equal(splits.unseen_domain_test, np.flatnonzero(listing.domains == d))


def test_the_new_keys_at_their_defaults_keep_the_split_hash_and_experiment_digest_of_earlier_runs():
    """A run made before the holdout keys existed keeps its split file and resumes from its checkpoints: the
    digests of a default config are the ones hpcfed computed before (at commit 0776693, for this listing digest)."""
    from hpcfed.config import Config
    from hpcfed.config.schema import ADDED_LATER
    from hpcfed.train.checkpoint import _other_config
    from hpcfed.train.setup import split_hash

    listing = SimpleNamespace(digest=lambda: "0123456789abcdef")
    cfg = Config()
    assert (split_hash(cfg, listing), cfg.experiment_digest()) == ("755d1f25d0c20282", "c257b5b7ff9dafbb"), (
        "a config key added without an entry in hpcfed.config.schema.ADDED_LATER changes every earlier run's digests")
    held_out = dataclasses.replace(cfg, partition=dataclasses.replace(cfg.partition, holdout_clients=2))
    assert split_hash(held_out, listing) != split_hash(cfg, listing)
    assert held_out.experiment_digest() != cfg.experiment_digest()
    # A checkpoint written before the key existed has no such key: it reads as the old behaviour and is named.
    stored = {"config_digest": cfg.experiment_digest(), "experiment": cfg.experiment()}
    assert "holdout_clients" not in stored["experiment"]["partition"] and "partition.holdout_clients" in ADDED_LATER
    message = _other_config(stored, held_out.experiment_digest(), held_out.experiment())
    assert "partition.holdout_clients: 0 in the checkpoint, 2 now" in message

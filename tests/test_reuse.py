"""Evaluation values reused while the parameters are the same (hpcfed.train.reuse): the numbers equal those of a
recomputation for every client, a value never reaches different parameters, and the work is done once."""

from types import SimpleNamespace

import pytest
import torch

from hpcfed.config import parse_config
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.split import make_splits
from hpcfed.train import reuse
from hpcfed.train.reuse import SameParameters
from hpcfed.train.setup import build_host

from conftest import make_image_tree


def test_values_are_found_only_for_parameters_equal_in_every_element():
    weight = torch.zeros(3, 2)
    same = SameParameters([weight])
    first = same.values()
    first["text"] = 1
    assert same.values() is first
    weight[2, 1] = 1e-30  # a change far below any tolerance is another model
    changed = same.values()
    assert changed is not first and changed == {}
    weight[2, 1] = 0.0
    assert same.values() is first  # back to the first parameters: its values again


def test_least_recently_used_entries_go_first():
    weight = torch.zeros(1)
    same = SameParameters([weight], slots=2)
    kept = same.values()
    for value in (1.0, 2.0):
        weight.fill_(value)
        same.values()
    weight.fill_(0.0)
    assert same.values() is not kept  # evicted after two other models


@pytest.fixture(scope="module")
def tree(tmp_path_factory):
    return make_image_tree(tmp_path_factory.mktemp("reuse") / "tree", domains=("a", "b"),
                           classes=("cat", "dog", "fish", "bird"), per_class=10)


@pytest.mark.parametrize("method", ["pfedmma", "fedmma", "pfedmoap"])
def test_every_client_scores_what_a_recomputation_gives(tree, method, monkeypatch):
    """Base-to-novel, 4 trained clients: personal parameters (pFedMMA), everything shared (FedMMA), own trained
    prompts and experts (pFedMoAP); each client's metrics with reuse equal those recomputed from scratch."""
    listing = read_imagefolder(tree, domain_level=True)
    cfg = parse_config({"clients": 4, "model": {"name": "hpcfed-tiny"}, "method": {"name": method},
                        "data": {"dataset": "imagefolder", "root": str(tree), "domains": ["a", "b"]},
                        "partition": {"scheme": "iid", "base_novel": True, "val_fraction": 0.2},
                        "train": {"lr": 0.05, "batch_size": 8, "local_epochs": 1}})
    host = build_host(cfg, SimpleNamespace(device="cpu"), listing, make_splits(listing, cfg.partition, 4, 0),
                      [0, 1, 2, 3])
    for c in range(4):
        host.train(host.clients[c], 0)
    calls = {"text": 0}
    text_features = host.method.text_features

    def counted(*args):
        calls["text"] += 1
        return text_features(*args)

    monkeypatch.setattr(host.method, "text_features", counted)
    reused = [host.evaluate(host.clients[c]) for c in range(4)]
    reused_calls = calls["text"]
    monkeypatch.setattr(reuse.SameParameters, "values", lambda self: {})  # every value recomputed
    calls["text"] = 0
    recomputed = [host.evaluate(host.clients[c]) for c in range(4)]
    assert reused == recomputed
    assert reused_calls < calls["text"]

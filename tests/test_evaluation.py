"""The evaluation protocol (methods.md §1.7, §1.11) end to end, and FedProx's pull toward the global state."""

from types import SimpleNamespace

import h5py
import numpy as np
import pytest

from hpcfed.config import parse_config
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.metrics import harmonic_mean
from hpcfed.split import make_splits
from hpcfed.train.setup import build_host

from conftest import HPCFED, make_image_tree, run_mpi, write_config

CLASSES = ("cat", "dog", "fish", "bird", "tree", "car")


@pytest.fixture(scope="module")
def six_class_tree(tmp_path_factory):
    return make_image_tree(tmp_path_factory.mktemp("six") / "tree", domains=("a", "b"), classes=CLASSES,
                           per_class=12)


@pytest.mark.mpi
def test_base_to_novel_run_stores_local_base_novel_hm_and_the_selected_round(tmp_path, six_class_tree):
    cfg = write_config(tmp_path / "b2n.yaml", six_class_tree, rounds=3, clients=3, participation=1.0,
                       partition={"scheme": "disjoint_classes", "base_novel": True, "val_fraction": 0.2,
                                  "test_fraction": 0.3})
    done = run_mpi(3, [str(HPCFED), "train", str(cfg)], timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(cfg.with_suffix(".h5"), "r") as f:
        m = {k: f[f"metrics/client/{k}"][:] for k in ("test_accuracy", "base_accuracy", "novel_accuracy", "hm",
                                                      "val_accuracy", "global_accuracy")}
        assert all(np.isfinite(v).all() for v in m.values())  # every client, every round (eval_every 1)
        for r in range(3):
            for c in range(3):
                assert m["hm"][r, c] == pytest.approx(harmonic_mean(m["test_accuracy"][r, c],
                                                                    m["base_accuracy"][r, c],
                                                                    m["novel_accuracy"][r, c]))
        selected = int(f["final/selected_round"][()])
        means = m["val_accuracy"].mean(axis=1)
        assert selected == int(np.argmax(means)) and f["final/last_round"][()] == 2
        assert "val_accuracy" in f["final/selection"][()].decode()
        np.testing.assert_array_equal(f["final/selected/test_accuracy"][:], m["test_accuracy"][selected])
        summary = {k: f[f"final/selected/summary/{k}"][()] for k in ("test_accuracy", "base_accuracy",
                                                                      "novel_accuracy", "hm")}
        assert summary["hm"] == pytest.approx(harmonic_mean(summary["test_accuracy"], summary["base_accuracy"],
                                                            summary["novel_accuracy"]))
        assert len(f["splits/base_classes"][:]) == 3 and len(f["splits/novel_classes"][:]) == 3


@pytest.mark.mpi
def test_domain_run_stores_per_domain_means_and_local_has_no_global_model(tmp_path, six_class_tree):
    cfg = write_config(tmp_path / "dom.yaml", six_class_tree, rounds=1, method={"name": "local"})
    done = run_mpi(2, [str(HPCFED), "train", str(cfg)], timeout=120)
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(cfg.with_suffix(".h5"), "r") as f:
        acc = f["final/last/test_accuracy"][:]
        domain = f["splits/client_domain"][:]
        for d in (0, 1):
            assert f["final/last/domain_mean/test_accuracy"][d] == pytest.approx(acc[domain == d].mean())
            assert f["final/last/domain_std/test_accuracy"][d] == pytest.approx(acc[domain == d].std())
        assert np.isnan(f["metrics/client/global_accuracy"][:]).all()  # nothing shared: no global model
        assert np.isnan(f["metrics/client/base_accuracy"][:]).all()  # not a base-to-novel run


def _drift(tree, prox_mu):
    listing = read_imagefolder(tree, domain_level=True)
    cfg = parse_config({"clients": 2, "model": {"name": "hpcfed-tiny"}, "method": {"name": "promptfl"},
                        "data": {"dataset": "imagefolder", "root": str(tree), "domains": ["a", "b"]},
                        "partition": {"scheme": "domain_dirichlet", "clients_per_domain": 1},
                        "train": {"lr": 0.05, "batch_size": 8, "local_epochs": 2, "prox_mu": prox_mu}})
    host = build_host(cfg, SimpleNamespace(device="cpu"), listing, make_splits(listing, cfg.partition, 2, 0), [0])
    start = host.global_shared.clone()
    host.train(host.clients[0], 0)
    return float((host._flat_shared() - start).norm())


def test_fedprox_keeps_shared_parameters_closer_to_the_global_state(six_class_tree):
    assert _drift(six_class_tree, prox_mu=50.0) < 0.5 * _drift(six_class_tree, prox_mu=0.0)

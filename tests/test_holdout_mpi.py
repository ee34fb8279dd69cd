"""Held-out clients and leave-one-domain-out in real runs under mpiexec: held-out clients are never sampled, add
nothing to any Allreduce, are never trained, are scored each evaluation as new clients; with a held-out domain no
client trains on it and every client is scored on it; `hpcfed report` shows both."""

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hpcfed.cli import main as cli
from hpcfed.data.imagefolder import read_imagefolder

from conftest import HPCFED, run_mpi, write_config

pytestmark = pytest.mark.mpi
SCRIPTS = Path(__file__).parent / "mpi_scripts"


@pytest.fixture(scope="module")
def held_out_run(tmp_path_factory, image_tree):
    """pFedMoAP (shared, published and personal parameters) on 6 clients over 3 client ranks, 2 held out."""
    folder = tmp_path_factory.mktemp("holdout")
    cfg = write_config(folder / "held.yaml", image_tree, clients=6, participation=0.5, rounds=3, eval_zero_shot=True,
                       method={"name": "pfedmoap", "options": {"n_experts": 3}},
                       partition={"scheme": "domain_dirichlet", "clients_per_domain": 3, "beta": 1.0,
                                  "holdout_clients": 2},
                       train={"lr": 0.01, "batch_size": 8, "local_epochs": 1, "holdout_steps": 3})
    out = folder / "probe.json"
    done = run_mpi(4, [sys.executable, str(SCRIPTS / "probe_holdout.py"), str(out), str(cfg)], timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(cfg.with_suffix(".h5"), "r") as f:
        held = f["splits/holdout_clients"][:]
        data = {name: f[name][()] for name in ("metrics/client/train_loss", "metrics/client/test_accuracy",
                                               "metrics/client/unseen_fresh_accuracy",
                                               "metrics/client/unseen_adapted_accuracy", "comm/bytes_up",
                                               "comm/bytes_down", "final/selected/unseen_fresh_accuracy",
                                               "final/selected/summary/unseen_fresh_accuracy",
                                               "final/selected/summary/unseen_adapted_accuracy",
                                               "final/selected/summary/test_accuracy",
                                               "final/zeroshot/test_accuracy", "final/zeroshot/unseen_fresh_accuracy")}
    return cfg.with_suffix(".h5"), set(held.tolist()), json.loads(out.read_text()), data


def test_held_out_clients_are_never_sampled(held_out_run):
    _, held, records, _ = held_out_run
    assert len(held) == 2
    for record in records:
        assert not held & set(record["selected"]), record["round"]
    # round 0 takes every client that trains; later rounds half of those 4
    assert {len(r["selected"]) for r in records if r["round"] == 0} == {4}
    assert {len(r["selected"]) for r in records if r["round"] > 0} == {2}


def test_the_allreduce_sums_the_contributions_of_trained_clients_only(held_out_run):
    _, held, records, _ = held_out_run
    sizes = {int(c): info["train_size"] for r in records for c, info in r.get("clients", {}).items()}
    for r in sorted({r["round"] for r in records}):
        selected = next(x["selected"] for x in records if x["round"] == r)
        expected = sum(sizes[c] for c in selected if c not in held)
        for record in (x for x in records if x["round"] == r and x["stage"] == "aggregated"):
            assert record["weight_slot"] == pytest.approx(expected), (r, record["rank"])
        for record in (x for x in records if x["round"] == r and x["stage"] == "trained"):
            mine = {int(c) for c in record.get("clients", {})}
            own = sum(sizes[c] for c in (mine & set(selected)) - held)
            assert record["weight_slot"] == pytest.approx(own), (r, record["rank"])
            if mine and mine <= held:  # a rank of held-out clients only adds nothing at all
                assert record["buffer_abs_sum"] == 0
    hosts = {int(c) for r in records for c in r.get("clients", {})}
    assert held <= hosts  # the held-out clients were hosted (and evaluated) like the others


def test_held_out_clients_never_train_and_never_publish(held_out_run):
    _, held, records, data = held_out_run
    states = {c: {json.dumps(r["clients"][str(c)], sort_keys=True) for r in records if str(c) in r.get("clients", {})}
              for c in held}
    for c, seen in states.items():
        assert len(seen) == 1, f"client {c} changed state"  # same personal state at every Allreduce
        (state,) = seen
        assert json.loads(state)["optimizer_steps"] == 0 and json.loads(state)["trained_shared"] == []
    for record in records:
        if "published_known" in record:
            assert not any(record["published_known"][c] for c in held)
    idx = sorted(held)
    assert np.isnan(data["metrics/client/train_loss"][:, idx]).all()
    assert (data["comm/bytes_up"][:, idx] == 0).all() and (data["comm/bytes_down"][:, idx] == 0).all()


def test_held_out_clients_are_scored_fresh_and_adapted_and_the_others_as_before(held_out_run):
    _, held, _, data = held_out_run
    idx, others = sorted(held), sorted(set(range(6)) - held)
    for name in ("unseen_fresh_accuracy", "unseen_adapted_accuracy"):
        rows = data[f"metrics/client/{name}"]
        assert np.isfinite(rows[:, idx]).all(), name  # every round is evaluated (eval_every 1)
        assert np.isnan(rows[:, others]).all(), name
    assert np.isnan(data["metrics/client/test_accuracy"][:, idx]).all()  # not in the trained clients' mean
    assert np.isfinite(data["metrics/client/test_accuracy"][:, others]).all()
    assert data["final/selected/summary/unseen_fresh_accuracy"] == pytest.approx(
        np.mean(data["final/selected/unseen_fresh_accuracy"][idx]))
    assert np.isfinite(data["final/selected/summary/unseen_adapted_accuracy"])
    # The zero-shot baseline scores them the same way (nothing to adapt), and keeps them out of its Local mean.
    assert np.isfinite(data["final/zeroshot/unseen_fresh_accuracy"][idx]).all()
    assert np.isnan(data["final/zeroshot/test_accuracy"][idx]).all()
    assert np.isfinite(data["final/zeroshot/test_accuracy"][others]).all()


@pytest.fixture(scope="module")
def lodo_run(tmp_path_factory, image_tree):
    """Leave domain b out: 3 clients, all of domain a, each also scored on every image of b."""
    folder = tmp_path_factory.mktemp("lodo")
    cfg = write_config(folder / "lodo.yaml", image_tree, clients=3, participation=1.0, rounds=2,
                       partition={"scheme": "domain_dirichlet", "clients_per_domain": 3, "beta": 1.0,
                                  "holdout_domain": "b"})
    done = run_mpi(3, [str(HPCFED), "train", str(cfg)], timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "held-out domain, every client on it, selected round:" in done.stdout  # the end-of-run summary
    return cfg.with_suffix(".h5")


def test_no_client_of_a_leave_one_domain_out_run_holds_the_domain(lodo_run, image_tree):
    listing = read_imagefolder(image_tree, domains=["a", "b"], domain_level=True)
    with h5py.File(lodo_run, "r") as f:
        parts = [f[f"splits/clients/{i}/{p}"][:] for i in range(3) for p in ("train", "val", "test")]
        unseen = f["splits/unseen_domain_test"][:]
        assert list(f["splits/client_domain"][:]) == [0, 0, 0]
        scores = f["metrics/client/unseen_domain_accuracy"][:]
        domain_mean = f["final/selected/domain_mean/unseen_domain_accuracy"][:]
    assert not np.any(listing.domains[np.concatenate(parts)] == 1)
    np.testing.assert_array_equal(unseen, np.flatnonzero(listing.domains == 1))
    assert np.isfinite(scores).all() and scores.shape == (2, 3)
    assert np.isfinite(domain_mean[0]) and np.isnan(domain_mean[1])  # clients of a score it; b has no clients


def test_the_report_shows_unseen_clients_and_the_per_domain_table(held_out_run, lodo_run):
    shown = CliRunner().invoke(cli, ["report", str(held_out_run[0]), str(lodo_run)])
    assert shown.exit_code == 0, shown.output
    lines = shown.output.splitlines()
    header = next(line for line in lines if line.startswith("method"))
    assert "Unseen fresh" in header and "Unseen adapted" in header and "Unseen domain" in header
    with h5py.File(held_out_run[0], "r") as f:
        fresh = 100 * f["final/selected/summary/unseen_fresh_accuracy"][()]
    row = next(line for line in lines if line.startswith("pfedmoap"))
    assert f"{fresh:.1f}" in row
    assert any(line.startswith("Accuracy per domain") for line in lines)
    domain_header = next(line for line in lines if line.startswith("method") and "b (held out)" in line)
    assert domain_header.split()[1] == "a"
    with h5py.File(lodo_run, "r") as f:
        local_a = 100 * f["final/selected/domain_mean/test_accuracy"][0]
        unseen_b = 100 * f["final/selected/summary/unseen_domain_accuracy"][()]
    domain_row = lines[lines.index(domain_header) + 1]
    assert domain_row.split()[:3] == ["pfedmma", f"{local_a:.1f}", f"{unseen_b:.1f}"]

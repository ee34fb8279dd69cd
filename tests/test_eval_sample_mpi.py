"""train.eval_clients under mpiexec: evaluation rounds before the last score a sample of the clients drawn from the
seed (the same on 2 and 3 client ranks), the others are stored as NaN (never as zeros), the last round scores
every client, and model selection looks only at rounds that scored every client."""

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hpcfed.cli import main as cli
from hpcfed.rng import evaluation_sample

from conftest import HPCFED, run_mpi, write_config

pytestmark = pytest.mark.mpi
CLIENTS, SAMPLE, ROUNDS = 6, 2, 3


@pytest.fixture(scope="module")
def sampled_runs(tmp_path_factory, image_tree):
    """The same run on 2 and 3 client ranks (mpiexec -n 3 and -n 4)."""
    out = {}
    for n in (3, 4):
        cfg = write_config(tmp_path_factory.mktemp(f"eval{n}") / "run.yaml", image_tree, clients=CLIENTS,
                           rounds=ROUNDS, partition={"scheme": "domain_dirichlet", "clients_per_domain": 3,
                                                     "beta": 1.0},
                           train={"lr": 0.01, "batch_size": 8, "eval_clients": SAMPLE})
        done = run_mpi(n, [str(HPCFED), "train", str(cfg)])
        assert done.returncode == 0, done.stderr[-3000:]
        with h5py.File(cfg.with_suffix(".h5"), "r") as f:
            data = {name: f[f"metrics/client/{name}"][:] for name in f["metrics/client"]}
            data["selected_round"] = int(f["final/selected_round"][()])
            data["selection"] = f["final/selection"].asstr()[()]
        out[n] = (cfg.with_suffix(".h5"), data, done.stdout)
    return out


def test_rounds_before_the_last_score_the_seeded_sample_on_any_rank_count(sampled_runs):
    for n in (3, 4):
        accuracy = sampled_runs[n][1]["test_accuracy"]
        for r in range(ROUNDS - 1):
            expected = evaluation_sample(0, r, CLIENTS, SAMPLE)
            assert np.flatnonzero(np.isfinite(accuracy[r])).tolist() == expected.tolist(), (n, r)
    three, four = sampled_runs[3][1], sampled_runs[4][1]
    for name in ("test_accuracy", "val_accuracy", "global_accuracy"):
        np.testing.assert_array_equal(three[name], four[name])


def test_clients_outside_the_sample_are_nan_not_zero(sampled_runs):
    data = sampled_runs[3][1]
    for r in range(ROUNDS - 1):
        outside = np.setdiff1d(np.arange(CLIENTS), evaluation_sample(0, r, CLIENTS, SAMPLE))
        for name in ("val_accuracy", "test_accuracy", "test_loss", "global_accuracy"):
            assert np.isnan(data[name][r, outside]).all(), (name, r)


def test_last_round_scores_every_client_and_is_the_only_selection_candidate(sampled_runs):
    path, data, stdout = sampled_runs[3]
    assert np.isfinite(data["test_accuracy"][ROUNDS - 1]).all()
    assert np.isfinite(data["val_accuracy"][ROUNDS - 1]).all()
    assert data["selected_round"] == ROUNDS - 1
    assert data["selection"].endswith("full rounds only")
    assert f"({SAMPLE} sampled)" in stdout and "round 1 sample" in stdout


def test_report_and_status_read_a_sampled_run(sampled_runs):
    path = sampled_runs[3][0]
    report = CliRunner().invoke(cli, ["report", str(path)])
    assert report.exit_code == 0, report.output
    status = CliRunner().invoke(cli, ["status", str(path)])
    assert status.exit_code == 0, status.output
    assert f"round {ROUNDS} (latest evaluated" in status.output and "mean over clients" in status.output

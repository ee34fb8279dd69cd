"""Dropouts and stragglers in a real run under mpiexec (3 ranks): the run file records the plan every rank
followed, dropped clients neither train nor move bytes, late ones train but stay out of the sum."""

import numpy as np
import pytest

from hpcfed.config import load_config
from hpcfed.results import open_run
from hpcfed.rng import sample_clients
from hpcfed.update import SharedUpdate
from hpcfed.update.dropout import ARRIVED_LATE, CONTRIBUTED, DROPPED_BEFORE_TRAINING

from conftest import HPCFED, run_mpi, write_config

pytestmark = pytest.mark.mpi
N_SHARED = 3168  # hpcfed-tiny with pfedmma: 3 levels x Linear(32, 32)


@pytest.fixture(scope="module")
def run_file(tmp_path_factory, image_tree):
    # With seed 0 on the test tree this deadline leaves one client late every round, and round 3 with no update.
    path = write_config(tmp_path_factory.mktemp("dropout") / "run.yaml", image_tree, participation=1.0,
                        dropout={"probability": 0.5, "deadline": 0.4})
    done = run_mpi(3, [str(HPCFED), "train", str(path)])
    assert done.returncode == 0, done.stderr[-3000:]
    cfg = load_config(path)
    with open_run(cfg.output_path) as f:
        sizes = np.array([len(f[f"splits/clients/{i}/train"]) for i in range(cfg.clients)])
        data = {name: f[name][:] for name in ("update/dropped", "update/virtual_seconds", "comm/bytes",
                                              "comm/bytes_up", "comm/bytes_down", "metrics/client/train_loss",
                                              "metrics/client/test_loss")}
    return cfg, sizes, data


def test_the_run_file_holds_the_plan_every_rank_computes_from_the_seed(run_file):
    cfg, sizes, data = run_file
    update = SharedUpdate(cfg, N_SHARED, sizes)
    for r in range(cfg.rounds):
        record = update.record(update.plan(r, sample_clients(cfg.seed, r, cfg.clients, cfg.participation)))
        np.testing.assert_array_equal(data["update/dropped"][r], record["dropped"])
        np.testing.assert_allclose(data["update/virtual_seconds"][r], record["virtual_seconds"], equal_nan=True)
    codes = data["update/dropped"]
    assert (codes == DROPPED_BEFORE_TRAINING).any() and (codes == ARRIVED_LATE).any(), codes
    late = codes == ARRIVED_LATE
    assert (data["update/virtual_seconds"][late] > cfg.dropout.deadline).all()


def test_clients_that_dropped_out_have_no_training_loss_and_late_ones_do(run_file):
    _, _, data = run_file
    trained = np.isfinite(data["metrics/client/train_loss"])
    codes = data["update/dropped"]
    np.testing.assert_array_equal(trained, codes != DROPPED_BEFORE_TRAINING)  # participation 1: all selected
    np.testing.assert_array_equal(np.isfinite(data["update/virtual_seconds"]), trained)


def test_only_contributing_clients_upload_and_only_training_ones_download(run_file):
    _, _, data = run_file
    codes, trained = data["update/dropped"], np.isfinite(data["metrics/client/train_loss"])
    contributed = trained & (codes == CONTRIBUTED)
    np.testing.assert_array_equal(data["comm/bytes_up"], np.where(contributed, 4 * N_SHARED, 0))
    np.testing.assert_array_equal(data["comm/bytes_down"] > 0, trained)
    np.testing.assert_array_equal(data["comm/bytes"], 4 * N_SHARED * contributed.sum(axis=1))


def test_a_round_in_which_no_update_arrives_keeps_the_global_state(run_file):
    _, _, data = run_file
    codes, loss = data["update/dropped"], data["metrics/client/test_loss"]
    trained = np.isfinite(data["metrics/client/train_loss"])
    updated = (trained & (codes == CONTRIBUTED)).any(axis=1)
    assert not updated.all(), "the config should give a round without any update; change the deadline"
    # A client that did not train keeps its personal state, so only the global state can change its test loss.
    for r in range(1, len(codes)):
        idle = ~trained[r]
        if idle.any():
            assert np.array_equal(loss[r, idle], loss[r - 1, idle]) == (not updated[r]), r

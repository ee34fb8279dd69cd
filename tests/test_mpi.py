"""MPI behaviour under a real mpiexec with several ranks (2 to 4, oversubscribed on 2 cores)."""

import json
import sys
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcfed.results import open_run

from conftest import HPCFED, run_mpi, write_config

SCRIPTS = Path(__file__).parent / "mpi_scripts"
pytestmark = pytest.mark.mpi


def metrics(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {name: f[f"metrics/client/{name}"][:] for name in f["metrics/client"]}


@pytest.fixture(scope="module")
def runs_on_2_and_4_ranks(tmp_path_factory, image_tree):
    out = {}
    for n in (2, 4):
        # Fresh crops every epoch: they too must come from per-client streams, never from the rank.
        cfg = write_config(tmp_path_factory.mktemp(f"n{n}") / "run.yaml", image_tree, eval_zero_shot=True,
                           **{"train.augment": True})
        done = run_mpi(n, [str(HPCFED), "train", str(cfg)])
        assert done.returncode == 0, done.stderr[-3000:]
        out[n] = (cfg.with_suffix(".h5"), done)
    return out


def test_rank_count_does_not_change_per_client_metrics_with_fresh_crops(runs_on_2_and_4_ranks):
    two, four = metrics(runs_on_2_and_4_ranks[2][0]), metrics(runs_on_2_and_4_ranks[4][0])
    for name in ("test_accuracy", "val_accuracy"):
        np.testing.assert_array_equal(two[name], four[name])
    for name in ("train_loss", "test_loss", "val_loss"):
        np.testing.assert_allclose(two[name], four[name], rtol=0, atol=1e-5, equal_nan=True)
    # The runs really trained: participants have losses, others NaN, and every client was evaluated.
    assert np.isfinite(two["train_loss"][0]).all()  # round 0 takes every client
    assert np.isnan(two["train_loss"][1]).sum() == 2  # participation 0.5 of 4 clients
    assert np.isfinite(two["test_accuracy"]).all()


def test_run_file_layout_and_communication_accounting(runs_on_2_and_4_ranks):
    path, done = runs_on_2_and_4_ranks[4]
    with h5py.File(path, "r") as f:
        assert f["status"][()].decode() == "finished"
        assert int(f["progress/rounds_done"][()]) == 3
        participants = f["metrics/global/participants"][:]
        assert list(participants) == [4, 2, 2]
        assert f["timing/train"].shape == (3, 4)  # [round, rank]
        assert f["env"].attrs["world_size"] == 4
        n_shared = 3168  # hpcfed-tiny with pfedmma: 3 levels x Linear(32, 32)
        np.testing.assert_array_equal(f["comm/bytes"][:], 4 * n_shared * participants)
        train = [set(f[f"splits/clients/{i}/train"][:]) for i in range(4)]
        test = [set(f[f"splits/clients/{i}/test"][:]) for i in range(4)]
        assert all(not (a & b) for i, a in enumerate(train) for j, b in enumerate(train) if i != j)
        assert all(not (tr & te) for tr, te in zip(train, test, strict=True))
    assert "round   3/3" in done.stdout and "ETA" in done.stdout
    assert "mean" in done.stdout  # the per-client table


@pytest.fixture(scope="module")
def probe_records(tmp_path_factory, image_tree):
    tmp = tmp_path_factory.mktemp("probe")
    cfg = write_config(tmp / "probe.yaml", image_tree, rounds=4)
    out = tmp / "probe.json"
    done = run_mpi(4, [sys.executable, str(SCRIPTS / "probe_train.py"), str(out), str(cfg)])
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(out.read_text())


def test_shared_parameters_are_bitwise_equal_on_every_rank_after_aggregation(probe_records):
    after = [r for r in probe_records if r["stage"] == "aggregated" and r["rank"] != 0]
    assert {r["rank"] for r in after} == {1, 2, 3}
    for rnd in range(4):
        digests = {r["global_shared"] for r in after if r["round"] == rnd}
        assert len(digests) == 1, f"round {rnd}: ranks disagree on the shared parameters"
    # ...and aggregation really changed them from one round to the next.
    assert len({r["global_shared"] for r in after if r["rank"] == 1}) == 4


def test_only_shared_parameters_enter_the_aggregation_buffer(probe_records):
    for r in probe_records:
        if r["rank"] != 0:
            assert r["buffer_len"] == r["n_shared"] + 1
    assert {r["buffer_len"] for r in probe_records} == {3168 + 1}  # the server's buffer too


def test_local_parameters_are_never_touched_by_aggregation_or_other_ranks(probe_records):
    by_rank = {}
    for r in probe_records:
        if r["rank"] != 0:
            by_rank.setdefault(r["rank"], []).append(r)
    hosted = [set(records[0]["local"]) for records in by_rank.values()]
    assert sorted(c for h in hosted for c in h) == ["0", "1", "2", "3"]  # each client lives on one rank
    for records in by_rank.values():
        previous = None
        for rnd in range(4):
            trained = next(r for r in records if r["round"] == rnd and r["stage"] == "trained")
            aggregated = next(r for r in records if r["round"] == rnd and r["stage"] == "aggregated")
            assert trained["local"] == aggregated["local"]  # the Allreduce left personal state alone
            if previous is not None:
                for client, state in trained["local"].items():
                    if int(client) not in trained["selected"]:
                        assert state == previous[client]  # not trained this round: unchanged
                    else:
                        assert state != previous[client]  # trained: its own update happened
            previous = aggregated["local"]


def test_an_exception_on_one_rank_ends_the_job_quickly(tmp_path, image_tree):
    cfg = write_config(tmp_path / "fail.yaml", image_tree, rounds=5, participation=1.0,
                       method={"name": "fails_in_round_one"})
    failed_at = tmp_path / "failed_at"
    done = run_mpi(3, [sys.executable, str(SCRIPTS / "failing_rank.py"), "train", str(cfg)], timeout=120,
                   env={"HPCFED_TEST_FAILED_AT": str(failed_at)})
    ended = time.time()
    assert done.returncode != 0
    assert "injected failure on rank 2" in done.stderr and "rank 2 of 3 failed" in done.stderr
    assert ended - float(failed_at.read_text()) < 30  # from the exception to the end of mpiexec
    with open_run(cfg.with_suffix(".h5")) as f:  # what was written stays readable (SWMR reader)
        # Rank 0 may be stopped while it writes round 0's row: what was flushed stays readable.
        assert int(f["progress/rounds_done"][()]) in (0, 1)
        assert f["metrics/client/test_accuracy"].shape == (5, 4)
        # The server stored the failing rank's traceback before the abort (what `hpcfed status` shows).
        assert f["status"].asstr()[()] == "failed" and int(f["error_rank"][()]) == 2
        assert "injected failure on rank 2" in f["error"].asstr()[()]


def test_bad_input_on_launch_stops_all_ranks_with_one_message(tmp_path, image_tree):
    cfg = write_config(tmp_path / "few.yaml", image_tree, clients=2,
                       partition={"scheme": "iid"})
    done = run_mpi(4, [str(HPCFED), "train", str(cfg)], timeout=60)
    assert done.returncode != 0
    assert done.stderr.count("config error at 'clients'") == 1
    assert not cfg.with_suffix(".h5").exists()


def test_existing_results_are_never_overwritten_without_asking(tmp_path, image_tree):
    cfg = write_config(tmp_path / "keep.yaml", image_tree)
    cfg.with_suffix(".h5").write_bytes(b"precious")
    done = run_mpi(2, [str(HPCFED), "train", str(cfg)], timeout=60)
    assert done.returncode != 0 and "--overwrite" in done.stderr
    assert cfg.with_suffix(".h5").read_bytes() == b"precious"


def test_round_zero_zero_shot_equals_a_zeroshot_run_on_the_same_splits(runs_on_2_and_4_ranks, tmp_path, image_tree):
    cfg = write_config(tmp_path / "zs.yaml", image_tree, rounds=1, **{"method.name": "zeroshot"})
    done = run_mpi(2, [str(HPCFED), "train", str(cfg)])
    assert done.returncode == 0, done.stderr[-3000:]
    with h5py.File(cfg.with_suffix(".h5"), "r") as f:
        clip_zero_shot = f["final/last/test_accuracy"][:]
    for n in (2, 4):
        path, stdout = runs_on_2_and_4_ranks[n][0], runs_on_2_and_4_ranks[n][1].stdout
        with h5py.File(path, "r") as f:
            np.testing.assert_array_equal(f["final/zeroshot/test_accuracy"][:], clip_zero_shot)
            assert f["final/zeroshot/summary/test_accuracy"][()] == pytest.approx(clip_zero_shot.mean())
            trained = f["final/selected/test_accuracy"][:]
        assert not np.array_equal(trained, clip_zero_shot)  # the pfedmma run did train past it
        assert "zero-shot" in stdout and "clients below their zero-shot accuracy" in stdout

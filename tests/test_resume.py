"""Checkpoint and resume under a real mpiexec: a run stopped by SIGUSR1 or by a killed rank and then resumed
gives the metrics of an uninterrupted run (bitwise on the same rank count, 1e-5 on another)."""

import hashlib
import json
import shutil
import sys
import zipfile
from pathlib import Path

import numpy as np
import pytest

from hpcfed.config import load_config
from hpcfed.results import open_run
from hpcfed.train import checkpoint
from hpcfed.train.checkpoint import EXIT_CHECKPOINTED

from conftest import HPCFED, run_mpi, write_config

SCRIPT = Path(__file__).parent / "mpi_scripts" / "signal_rank.py"
pytestmark = pytest.mark.mpi
ROUNDS = 5


def config(path: Path, image_tree: Path, **runtime) -> Path:
    # Fresh crops every epoch: a resumed run must draw the crops the uninterrupted one drew.
    return write_config(path, image_tree, rounds=ROUNDS, participation=1.0, runtime=runtime,
                        **{"train.augment": True})


def train(n: int, cfg: Path, *args: str, env: dict | None = None):
    return run_mpi(n, [sys.executable, str(SCRIPT), "train", str(cfg), *args], env=env)


def results(path: Path) -> dict[str, np.ndarray]:
    with open_run(path) as f:
        out = {f"metrics/client/{k}": f[f"metrics/client/{k}"][:] for k in f["metrics/client"]}
        out.update({f"final/selected/{k}": f[f"final/selected/{k}"][:] for k in f["final/selected"]
                    if k not in ("summary", "domain_mean", "domain_std")})
        out["status"] = f["status"].asstr()[()]
    return out


def moved(cfg: Path, to: Path) -> Path:
    """The same experiment under another output path (run file and checkpoints copied along)."""
    shutil.copy(cfg.with_suffix(".h5"), to.with_suffix(".h5"))
    shutil.copytree(cfg.with_suffix(".ckpt"), to.with_suffix(".ckpt"))
    text = cfg.read_text().replace(str(cfg.with_suffix(".h5")), str(to.with_suffix(".h5")))
    to.write_text(text)
    return to


@pytest.fixture(scope="module")
def reference(tmp_path_factory, image_tree) -> dict:
    cfg = config(tmp_path_factory.mktemp("ref") / "ref.yaml", image_tree, checkpoint_every=0)
    done = train(3, cfg)
    assert done.returncode == 0, done.stderr[-3000:]
    return results(cfg.with_suffix(".h5"))


@pytest.fixture(scope="module")
def interrupted(tmp_path_factory, image_tree):
    """Rank 2 gets SIGUSR1 during round 1 (0-based); no periodic checkpoints."""
    cfg = config(tmp_path_factory.mktemp("sig") / "sig.yaml", image_tree, checkpoint_every=0)
    done = train(3, cfg, env={"HPCFED_TEST_SIGNAL_IN": "1"})
    return cfg, done


def test_a_signal_stops_every_rank_at_the_round_boundary_with_a_checkpoint(interrupted):
    cfg, done = interrupted
    assert done.returncode == EXIT_CHECKPOINTED, done.stderr[-3000:]
    assert "stopped by" in done.stdout and "--resume auto" in done.stdout
    with open_run(cfg.with_suffix(".h5")) as f:
        assert f["status"].asstr()[()] == "interrupted"
        assert int(f["progress/rounds_done"][()]) == 2  # the round in which the signal came was finished
    found = checkpoint.find(cfg.with_suffix(".ckpt"), load_config(cfg, []).experiment_digest(), 4)
    assert found is not None and found.round == 2 and found.rows == 2


def as_per_client_files(ckpt: Path) -> None:
    """Rewrite a checkpoint in the layout hpcfed wrote before rank archives: their client-NNNNN.pt members loose
    in the directory, no client map in the manifest."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    for name in set(manifest.pop("clients").values()):
        with zipfile.ZipFile(ckpt / name) as archive:
            archive.extractall(ckpt)
        (ckpt / name).unlink()
    manifest["files"] = {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in ckpt.glob("*.pt")}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def test_a_checkpoint_of_more_clients_than_ranks_is_at_most_ranks_plus_two_files(interrupted):
    cfg, _ = interrupted  # 4 clients on 3 ranks: 2 rank files, global.pt, update.pt, manifest.json
    ckpt = cfg.with_suffix(".ckpt") / "round-000002"
    files = sorted(p.name for p in ckpt.iterdir())
    assert len(files) <= 3 + 2, files
    assert not [name for name in files if name.startswith("client-")]
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert sorted(int(index) for index in manifest["clients"]) == [0, 1, 2, 3]


def test_a_rank_archive_is_written_a_client_at_a_time_not_built_in_memory(tmp_path):
    import tracemalloc

    import torch

    states = {i: {"local": {"w": torch.full((256, 1024), float(i))}} for i in range(32)}  # 1 MB each, 32 in all
    tracemalloc.start()
    part = checkpoint.write_part(tmp_path, 1, states, {})
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    # about 8 MB (a record and torch.save's buffers); the whole archive in memory was 32 MB at least
    assert peak < 16 * 2**20, f"writing the 32 MB archive held {peak / 2**20:.1f} MB at once"
    archive = tmp_path / "rank-0001.zip"
    assert part["files"] == {"rank-0001.zip": hashlib.sha256(archive.read_bytes()).hexdigest()}
    with zipfile.ZipFile(archive) as z:
        assert len(z.namelist()) == 32 and z.testzip() is None


def test_a_checkpoint_in_the_per_client_layout_resumes_to_the_same_results(interrupted, reference, tmp_path):
    cfg = moved(interrupted[0], tmp_path / "old.yaml")
    as_per_client_files(cfg.with_suffix(".ckpt") / "round-000002")
    assert len(list((cfg.with_suffix(".ckpt") / "round-000002").glob("client-*.pt"))) == 4
    done = train(3, cfg, "--resume", "auto")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {cfg.with_suffix('.h5')} at round 3" in done.stdout and "skipping" not in done.stderr
    got = results(cfg.with_suffix(".h5"))
    for name, values in reference.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)


def test_resume_on_another_rank_count_matches_within_float_tolerance(interrupted, reference, tmp_path):
    cfg = moved(interrupted[0], tmp_path / "other.yaml")  # before the same-count resume below continues it
    done = train(2, cfg, "--resume", "auto")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "resuming" in done.stdout
    got = results(cfg.with_suffix(".h5"))
    assert got.pop("status") == "finished"
    for name, values in got.items():
        np.testing.assert_allclose(values, reference[name], rtol=1e-5, atol=1e-5, err_msg=name)


def test_resume_on_the_same_rank_count_is_bitwise_equal_to_an_uninterrupted_run(interrupted, reference):
    cfg, _ = interrupted
    done = train(3, cfg, "--resume", "auto")
    assert done.returncode == 0, done.stderr[-3000:]
    assert f"resuming {cfg.with_suffix('.h5')} at round 3" in done.stdout
    got = results(cfg.with_suffix(".h5"))
    for name, values in reference.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)
    with open_run(cfg.with_suffix(".h5")) as f:
        assert '"round": 2' in f["status"].attrs["resumes"]
    again = train(2, cfg, "--resume", "auto")  # a finished run is left alone
    assert again.returncode == 0 and "already finished" in again.stdout
    np.testing.assert_array_equal(results(cfg.with_suffix(".h5"))["metrics/client/test_accuracy"],
                                  reference["metrics/client/test_accuracy"])


@pytest.fixture(scope="module")
def killed(tmp_path_factory, image_tree):
    """Rank 2 is SIGKILLed during round 3 (0-based); checkpoints every round."""
    cfg = config(tmp_path_factory.mktemp("kill") / "kill.yaml", image_tree, checkpoint_every=1)
    done = train(3, cfg, env={"HPCFED_TEST_KILL_IN": "3"})
    return cfg, done


def test_a_killed_rank_ends_the_job_and_leaves_a_loadable_checkpoint(killed):
    cfg, done = killed
    assert done.returncode != 0
    with open_run(cfg.with_suffix(".h5")) as f:  # readable although its writer was killed
        assert int(f["progress/rounds_done"][()]) == 3
    found = checkpoint.find(cfg.with_suffix(".ckpt"), load_config(cfg, []).experiment_digest(), 4)
    assert found is not None and found.round == 3
    assert sorted(p.name for p in cfg.with_suffix(".ckpt").iterdir()) == ["round-000002", "round-000003"]


def test_a_corrupt_newest_checkpoint_falls_back_to_the_previous_one(killed, reference):
    cfg, _ = killed
    newest = cfg.with_suffix(".ckpt") / "round-000003" / "rank-0001.zip"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF
    newest.write_bytes(bytes(data))
    done = train(3, cfg, "--resume", "auto")
    assert done.returncode == 0, done.stderr[-3000:]
    assert "skipping checkpoint round-000003" in done.stderr and "rank-0001.zip is corrupt" in done.stderr
    assert "resuming from the older checkpoint round-000002" in done.stderr
    got = results(cfg.with_suffix(".h5"))  # rows 3 written before the kill were dropped and recomputed
    for name, values in reference.items():
        np.testing.assert_array_equal(got[name], values, err_msg=name)


def test_no_valid_checkpoint_is_an_error_never_a_silent_restart(tmp_path, image_tree):
    cfg = config(tmp_path / "bad.yaml", image_tree)
    broken = cfg.with_suffix(".ckpt") / "round-000004"
    broken.mkdir(parents=True)
    (broken / "manifest.json").write_text("{not json")
    done = run_mpi(2, [str(HPCFED), "train", str(cfg), "--resume", "auto"], timeout=120)
    assert done.returncode != 0
    assert "no usable checkpoint" in done.stderr and "round-000004" in done.stderr
    assert not cfg.with_suffix(".h5").exists()


def test_resume_and_overwrite_together_are_refused_before_launch(tmp_path, image_tree):
    cfg = config(tmp_path / "both.yaml", image_tree)
    done = run_mpi(2, [str(HPCFED), "train", str(cfg), "--resume", "auto", "--overwrite"], timeout=60)
    assert done.returncode != 0 and done.stderr.count("pass only one of them") == 1


def test_a_finished_run_is_extended_with_more_rounds_and_keeps_its_first_rounds(tmp_path, image_tree):
    cfg = write_config(tmp_path / "grow.yaml", image_tree, rounds=2, participation=1.0)
    first = run_mpi(3, [str(HPCFED), "train", str(cfg)])
    assert first.returncode == 0, first.stderr[-3000:]
    before = results(cfg.with_suffix(".h5"))
    assert (cfg.with_suffix(".ckpt") / "round-000002").is_dir()  # the last round is checkpointed
    more = run_mpi(3, [str(HPCFED), "train", str(cfg), "-o", "rounds=3", "--resume", "auto"])
    assert more.returncode == 0, more.stderr[-3000:]
    assert f"resuming {cfg.with_suffix('.h5')} at round 3" in more.stdout and "round   3/3" in more.stdout
    with open_run(cfg.with_suffix(".h5")) as f:
        assert f["status"].asstr()[()] == "finished" and int(f["progress/rounds_done"][()]) == 3
        assert int(f["final/last_round"][()]) == 2 and "rounds: 3" in f["config"].asstr()[()]
        for name in f["metrics/client"]:
            rows = f[f"metrics/client/{name}"][:]
            assert rows.shape[0] == 3
            np.testing.assert_array_equal(rows[:2], before[f"metrics/client/{name}"], err_msg=name)
        assert np.isfinite(f["metrics/client/test_accuracy"][2]).all()  # round 3 was run and evaluated
    # Fewer rounds than the file holds: refused by resume_point (tests/test_more_rounds.py).

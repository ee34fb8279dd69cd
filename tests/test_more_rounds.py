"""A run may be given more rounds when it resumes (`-o rounds=N --resume auto`), never fewer than it holds:
the run file's per-round datasets grow, and resume_point continues a finished run from its last checkpoint."""

import h5py
import numpy as np
import pytest

from hpcfed.config import load_config
from hpcfed.data import load_listing
from hpcfed.errors import CheckpointError, ConfigError
from hpcfed.results import PER_ROUND_GROUPS, RunWriter, open_run
from hpcfed.train import checkpoint
from hpcfed.train.setup import nothing_left, prepare_splits, resume_point

from conftest import write_config


def config(tmp_path, image_tree, rounds: int):
    return load_config(write_config(tmp_path / "run.yaml", image_tree, rounds=rounds), [])


@pytest.fixture
def finished(tmp_path, image_tree):
    """The config of a finished 2-round run file (every round evaluated, accuracy 0.5 and 0.6)."""
    cfg = config(tmp_path, image_tree, 2)
    prepare_splits(cfg, load_listing(cfg.data.dataset, cfg.data.root, cfg.data.domains, None))
    writer = RunWriter.create(cfg.output_path, config_yaml=cfg.to_yaml(), config_hash=cfg.digest(), env={},
                              n_clients=cfg.clients, rounds=cfg.rounds, n_ranks=3, n_domains=2)
    no_bytes = np.zeros(cfg.clients, dtype=np.int64)
    for r, accuracy in enumerate((0.5, 0.6)):
        writer.write_round(r, {"test_accuracy": np.full(cfg.clients, accuracy)}, {"round_seconds": 1.0},
                           {"train": np.ones(3)}, {"up": no_bytes + 8, "down": no_bytes})
    writer.close("finished")
    return cfg


def fake_checkpoint(cfg, rounds_done: int):
    """A checkpoint that checkpoint.verify accepts: intact torch files (their contents are never used here)."""
    folder = checkpoint.checkpoint_root(cfg.output_path) / f"round-{rounds_done:06d}"
    tmp = folder.with_name(folder.name + ".tmp")
    tmp.mkdir(parents=True)
    part = checkpoint.write_part(tmp, 1, {i: {"client": i} for i in range(cfg.clients)}, {"global.pt": {}})
    header = {"round": rounds_done, "rows": rounds_done, "config_digest": cfg.experiment_digest()}
    checkpoint.seal(tmp, folder, header, [part], keep=1)
    return folder


def per_round_shapes(path) -> dict[str, tuple]:
    with open_run(path) as f:
        return {f"{g}/{n}": f[f"{g}/{n}"].shape for g in PER_ROUND_GROUPS for n in f[g]}


def test_reopening_with_more_rounds_grows_every_per_round_dataset_and_keeps_the_rows(finished, tmp_path,
                                                                                     image_tree):
    longer = config(tmp_path, image_tree, 5)
    writer = RunWriter.reopen(longer.output_path, 2, 3, longer.rounds, longer.to_yaml(), longer.digest())
    writer.close("running")
    assert {shape[0] for shape in per_round_shapes(longer.output_path).values()} == {5}
    with open_run(longer.output_path) as f:
        np.testing.assert_array_equal(f["metrics/client/test_accuracy"][:2, 0], [0.5, 0.6])
        assert np.isnan(f["metrics/client/test_accuracy"][2:]).all()  # new rows: not run yet
        assert (f["comm/bytes_up"][:2] == 8).all() and (f["comm/bytes_up"][2:] == 0).all()
        assert "rounds: 5" in f["config"].asstr()[()] and f["config"].attrs["hash"] == longer.digest()


def test_a_run_file_made_with_fixed_length_datasets_is_grown_too(finished, tmp_path, image_tree):
    with h5py.File(finished.output_path, "r+") as f:  # as hpcfed wrote it before the datasets could grow
        values = f["metrics/client/test_accuracy"][:]
        del f["metrics/client/test_accuracy"]
        f.create_dataset("metrics/client/test_accuracy", data=values, fillvalue=np.nan)
    longer = config(tmp_path, image_tree, 4)
    RunWriter.reopen(longer.output_path, 2, 3, longer.rounds, longer.to_yaml(), longer.digest()).close("running")
    with open_run(longer.output_path) as f:
        accuracy = f["metrics/client/test_accuracy"]
        assert accuracy.shape == (4, longer.clients) and accuracy.maxshape[0] is None
        np.testing.assert_array_equal(accuracy[:2, 0], [0.5, 0.6])


def test_a_finished_run_with_as_many_rounds_has_nothing_left(finished):
    start = resume_point(finished, "auto", overwrite=False)
    assert nothing_left(finished, start)


def test_a_finished_run_with_more_rounds_continues_from_its_last_checkpoint(finished, tmp_path, image_tree):
    folder = fake_checkpoint(finished, 2)
    start = resume_point(config(tmp_path, image_tree, 3), "auto", overwrite=False)
    assert start is not None and start.path == folder and start.round == 2
    assert not nothing_left(finished, start)


def test_fewer_rounds_than_the_run_file_holds_are_refused(finished, tmp_path, image_tree):
    fake_checkpoint(finished, 2)
    for resume in ("auto", str(checkpoint.checkpoint_root(finished.output_path) / "round-000002")):
        with pytest.raises(ConfigError) as err:
            resume_point(config(tmp_path, image_tree, 1), resume, overwrite=False)
        assert err.value.key == "rounds" and "already holds 2 rounds" in str(err.value)
        assert "resume with rounds >= 2" in str(err.value)


def test_a_finished_run_without_a_checkpoint_says_why_it_cannot_be_extended(finished, tmp_path, image_tree):
    with pytest.raises(CheckpointError) as err:
        resume_point(config(tmp_path, image_tree, 4), "auto", overwrite=False)
    message = str(err.value)
    assert "finished 2 rounds but has no checkpoint" in message and "to 4 rounds" in message
    assert "-o output=<new path>" in message and "--resume never --overwrite" in message

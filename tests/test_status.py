"""`hpcfed status` reads a run file written by the real writer: state, round, metrics, ETA, failures, checkpoints."""

import json
import os
import socket
import subprocess
import time

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hpcfed.cli import main
from hpcfed.config import load_config
from hpcfed.data import load_listing
from hpcfed.metrics import format_duration, harmonic_mean
from hpcfed.results import CLIENT_METRICS, RunWriter
from hpcfed.train.setup import prepare_splits

from conftest import write_config

ROUND_SECONDS = 12.0


@pytest.fixture
def cfg(tmp_path, image_tree):
    """A config whose run file holds splits only, as `hpcfed split` leaves it."""
    cfg = load_config(write_config(tmp_path / "run.yaml", image_tree, rounds=5), [])
    listing = load_listing(cfg.data.dataset, cfg.data.root, cfg.data.domains, cfg.data.class_names_file)
    prepare_splits(cfg, listing)
    return cfg


def start_training(cfg, env: dict | None = None) -> RunWriter:
    return RunWriter.create(cfg.output_path, config_yaml=cfg.to_yaml(), config_hash=cfg.digest(), env=env or {},
                            n_clients=cfg.clients, rounds=cfg.rounds, n_ranks=2, n_domains=2)


def write_round(writer: RunWriter, cfg, r: int, **client_values: float) -> None:
    """Round r with the same value for every client of each named metric (absent metrics stay NaN)."""
    client = {name: np.full(cfg.clients, value) for name, value in client_values.items()}
    no_bytes = np.zeros(cfg.clients, dtype=np.int64)
    writer.write_round(r, client, {"round_seconds": ROUND_SECONDS}, {}, {"up": no_bytes, "down": no_bytes})


def percent(fraction: float) -> str:
    """Accuracies as `hpcfed report` prints them: percent with one decimal."""
    return f"{100 * fraction:.1f}%"


def client_mean(cfg, name: str, r: int) -> float:
    """Mean over clients of metric `name` at 0-based round r, read back from the run file."""
    with h5py.File(cfg.output_path, "r") as f:
        return float(np.nanmean(f[f"metrics/client/{name}"][r]))


def status_of(cfg) -> str:
    result = CliRunner().invoke(main, ["status", str(cfg.output_path)])
    assert result.exit_code == 0, result.output
    return result.output


def test_a_split_only_run_is_reported_as_split_with_its_config(cfg):
    out = status_of(cfg)
    assert "state    split" in out and "not trained" in out
    assert cfg.digest() in out and cfg.method.name in out and cfg.name in out
    assert f"0 of {cfg.rounds}" in out


def test_a_running_job_shows_its_round_latest_accuracy_and_eta(cfg):
    writer = start_training(cfg)
    write_round(writer, cfg, 0, test_accuracy=0.5)
    write_round(writer, cfg, 1, test_accuracy=0.75)
    writer.file.close()  # the job's handle; the file still says running, as it does while a job runs
    out = status_of(cfg)
    assert "state    running" in out
    assert f"rounds   2 of {cfg.rounds}" in out
    assert f"accuracy round 2 (latest evaluated): Local {percent(client_mean(cfg, 'test_accuracy', 1))}" in out
    assert f"ETA {format_duration(ROUND_SECONDS * (cfg.rounds - 2))}" in out
    assert "STALLED" not in out


def test_rounds_not_evaluated_are_skipped_for_the_latest_metrics(cfg):
    writer = start_training(cfg)
    write_round(writer, cfg, 0, test_accuracy=0.5)
    write_round(writer, cfg, 1, train_loss=1.0)  # trained but not evaluated: accuracy stays NaN
    writer.file.close()
    out = status_of(cfg)
    assert f"rounds   2 of {cfg.rounds}" in out
    assert f"accuracy round 1 (latest evaluated): Local {percent(client_mean(cfg, 'test_accuracy', 0))}" in out


def test_base_novel_runs_show_base_novel_and_their_harmonic_mean(cfg):
    writer = start_training(cfg)
    write_round(writer, cfg, 0, test_accuracy=0.8, base_accuracy=0.7, novel_accuracy=0.4)
    writer.close("finished")
    means = [client_mean(cfg, name, 0) for name in ("test_accuracy", "base_accuracy", "novel_accuracy")]
    local, base, novel = map(percent, means)
    assert f"Local {local}, Base {base}, Novel {novel}, HM {percent(harmonic_mean(*means))}" in status_of(cfg)


def test_a_finished_run_also_shows_the_round_report_shows_when_it_is_not_the_latest(cfg):
    writer = start_training(cfg)
    rounds = [{"test_accuracy": 0.6, "val_accuracy": 0.9}, {"test_accuracy": 0.7, "val_accuracy": 0.8}]
    for r, values in enumerate(rounds):
        write_round(writer, cfg, r, **values)
    for which, r in (("selected", 0), ("last", 1)):  # as the recorder does at the end: round 1 validated best
        rows = {name: np.full(cfg.clients, rounds[r].get(name, np.nan)) for name in CLIENT_METRICS}
        writer.write_final(which, r, rows, np.zeros(cfg.clients, dtype=int), n_domains=2)
    writer.close("finished")
    out = status_of(cfg)
    assert f"accuracy round 2 (latest evaluated): Local {percent(client_mean(cfg, 'test_accuracy', 1))}" in out
    with h5py.File(cfg.output_path, "r") as f:
        selected = float(f["final/selected/summary/test_accuracy"][()])
    assert f"round 1 (selected on validation accuracy, as 'hpcfed report' shows): Local {percent(selected)}" in out
    with h5py.File(cfg.output_path, "r+") as f:
        f["status"][()] = "running"  # as `--resume auto -o rounds=...` leaves a finished run: the old selection stays
    assert "selected on validation" not in status_of(cfg)


def test_a_finished_run_has_no_eta(cfg):
    writer = start_training(cfg)
    for r in range(cfg.rounds):
        write_round(writer, cfg, r, test_accuracy=0.5)
    writer.close("finished")
    out = status_of(cfg)
    assert "state    finished" in out and f"{cfg.rounds} of {cfg.rounds}" in out
    assert f"{ROUND_SECONDS:.1f} s per round" in out and "ETA" not in out


def test_a_private_run_shows_the_privacy_spent_and_others_do_not(cfg):
    writer = start_training(cfg)
    write_round(writer, cfg, 0, test_accuracy=0.5)
    assert "privacy" not in status_of(cfg)  # the /update/epsilon row stays NaN without privacy
    no_bytes = np.zeros(cfg.clients, dtype=np.int64)
    writer.write_round(1, {}, {"round_seconds": ROUND_SECONDS}, {}, {"up": no_bytes, "down": no_bytes},
                       {"epsilon": 2.345678, "clip_norm": 0.25})
    writer.file.close()
    assert f"privacy  epsilon 2.35 at delta {cfg.privacy.delta} after round 2, clip norm 0.25" in status_of(cfg)


def test_a_failed_run_names_the_failing_rank_and_its_traceback(cfg):
    traceback = "Traceback (most recent call last):\nDataError: image 7 of client 3 is unreadable"
    start_training(cfg).close("failed", error=traceback, error_rank=2)
    out = status_of(cfg)
    assert "state    failed" in out and "rank 2 failed:" in out
    assert all(f"  {line}" in out for line in traceback.splitlines())


def test_a_failed_run_without_a_known_rank_still_shows_the_message(cfg):
    start_training(cfg).close("failed", error="KeyboardInterrupt")
    assert "a rank failed:\n  KeyboardInterrupt" in status_of(cfg)


def test_a_failed_run_without_a_recorded_message_points_to_the_job_log(cfg):
    start_training(cfg).close("failed")
    assert "no error message was recorded; see the job's stderr log" in status_of(cfg)


def test_a_running_file_untouched_for_a_few_rounds_is_reported_stalled_or_killed(cfg):
    writer = start_training(cfg)
    write_round(writer, cfg, 0, test_accuracy=0.5)
    writer.file.close()
    quiet = max(3 * ROUND_SECONDS, 120)
    os.utime(cfg.output_path, (time.time() - quiet + 30,) * 2)
    assert "STALLED" not in status_of(cfg)
    os.utime(cfg.output_path, (time.time() - quiet - 30,) * 2)
    out = status_of(cfg)
    assert "state    running: STALLED OR KILLED: no write for" in out and "--resume auto" in out
    assert "ETA" not in out


def test_a_running_file_whose_server_process_is_gone_is_reported_killed_at_once(cfg):
    gone = subprocess.Popen(["true"])
    gone.wait()
    writer = start_training(cfg, env={"hostnames": [socket.gethostname(), "other"], "server_pid": gone.pid})
    write_round(writer, cfg, 0, test_accuracy=0.5)
    writer.file.close()
    out = status_of(cfg)
    assert f"STALLED OR KILLED: its server process {gone.pid} on {socket.gethostname()} no longer exists" in out


def test_a_running_file_whose_server_process_lives_is_running(cfg):
    writer = start_training(cfg, env={"hostnames": [socket.gethostname()], "server_pid": os.getpid()})
    write_round(writer, cfg, 0, test_accuracy=0.5)
    writer.file.close()
    assert "state    running: the job is writing this file" in status_of(cfg)


def test_an_interrupted_run_lists_its_newest_complete_checkpoint(cfg):
    writer = start_training(cfg)
    write_round(writer, cfg, 0, test_accuracy=0.5)
    writer.close("interrupted")
    checkpoints = cfg.output_path.with_suffix(".ckpt")
    for r in (1, 2):
        (checkpoints / f"round-{r:06d}").mkdir(parents=True)
        (checkpoints / f"round-{r:06d}" / "manifest.json").write_text(json.dumps({"round": r}))
    unfinished = checkpoints / "round-000003.tmp"  # a write cut short: never a checkpoint
    unfinished.mkdir()
    (unfinished / "manifest.json").write_text(json.dumps({"round": 3}))
    out = status_of(cfg)
    assert "state    interrupted" in out and "will resume" in out
    assert f"checkpoint  after round 2: {checkpoints / 'round-000002'}" in out


def test_a_missing_run_file_is_an_error_that_says_what_to_pass(tmp_path):
    result = CliRunner().invoke(main, ["status", str(tmp_path / "nowhere.h5")])
    assert result.exit_code != 0
    assert "nowhere.h5 not found" in result.output and "output" in result.output


def test_a_file_that_is_not_hdf5_is_refused(tmp_path):
    path = tmp_path / "notes.h5"
    path.write_text("not a run file")
    result = CliRunner().invoke(main, ["status", str(path)])
    assert result.exit_code != 0 and "is not an HDF5 file" in result.output and "hpcfed train" in result.output


def test_an_hdf5_file_without_the_run_layout_is_refused(tmp_path):
    path = tmp_path / "other.h5"
    with h5py.File(path, "w") as f:
        f["x"] = np.arange(3)
    result = CliRunner().invoke(main, ["status", str(path)])
    assert result.exit_code != 0 and "not an hpcfed run file" in result.output

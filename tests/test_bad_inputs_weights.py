"""Bad model weights, damaged resume checkpoints and several problems at once, under the bad-input contract of
tests/badinput.py: each case asserts the exit code, a first line naming the problem (and the file) and the fix,
no traceback, and that the damaged files keep their bytes.

`hpcfed train` refuses bad weights before MPI starts, so those cases run in this process; check-env starts MPI
and resume checkpoints are read after launch, so those run as real processes on 2 ranks. One MPI run, stopped by
a signal after round 2 of 3, makes the checkpoints that the resume cases damage copies of."""

import hashlib
import json
import os
import shutil
import sys
import zipfile
from pathlib import Path

import pytest
import torch
from badinput import assert_refused, fingerprint, run_in_process, run_process

from hpcfed.config import load_config
from hpcfed.errors import CheckpointOfAnotherConfig
from hpcfed.models import WEIGHTS_DIR
from hpcfed.train import checkpoint
from hpcfed.train.checkpoint import EXIT_CHECKPOINTED

from conftest import run_mpi, write_config

SHIPPED = WEIGHTS_DIR / "hpcfed-tinyclip-vit-p12-96-w192.pt"
SIGNAL_SCRIPT = Path(__file__).parent / "mpi_scripts" / "signal_rank.py"
SENTINEL = Path("/tmp/hpcfed_pwned_by_checkpoint")  # what unpickling the refused object below would create


class RunsCode:
    def __reduce__(self):
        return (os.system, (f"touch {SENTINEL}",))


def vit_b16_state_dict() -> dict:
    """ViT-B-16's keys and shapes at a few bytes each (expanded views of one element)."""
    import open_clip

    model = open_clip.create_model("ViT-B-16", device="meta")
    return {k: torch.zeros(()).expand(v.shape) for k, v in model.state_dict().items()}


def whole_model():
    """hpcfed-tiny as a module rather than its state dict (torch.save(model)), without data: the usual mistake."""
    import open_clip

    from hpcfed.models import register_hpcfed_configs

    register_hpcfed_configs()
    return open_clip.create_model("hpcfed-tiny", device="meta")


@pytest.fixture(scope="module")
def weights(tmp_path_factory) -> dict[str, Path]:
    """One file per weights problem, and the text the refusal must show for it."""
    folder = tmp_path_factory.mktemp("weights")
    files = {name: folder / f"{name}.pt" for name in ("empty", "truncated", "tensor", "vit_b16", "random_dict",
                                                      "whole_model")}
    files["empty"].write_bytes(b"")
    shipped = SHIPPED.read_bytes()
    files["truncated"].write_bytes(shipped[:len(shipped) // 2])
    torch.save(torch.zeros(3, 4), files["tensor"])
    torch.save(vit_b16_state_dict(), files["vit_b16"])
    torch.save({"encoder.weight": torch.zeros(2, 2)}, files["random_dict"])
    torch.save(whole_model(), files["whole_model"])
    files["missing"] = folder / "no_such_weights.pt"
    return files


WEIGHTS_CASES = {  # file -> (problem on the first line, fix on the first line)
    "missing": ("neither a file nor an open_clip tag", "give a checkpoint path"),
    "empty": ("is empty (0 bytes)", "copy empty.pt again"),
    "truncated": ("is truncated or not a file written by torch.save", "copy truncated.pt again"),
    "tensor": ("holds a single tensor of shape [3, 4], not a state dict", "torch.save(model.state_dict()"),
    "vit_b16": ("does not fit architecture hpcfed-tiny", "set model.name to the architecture"),
    "random_dict": ("does not fit architecture hpcfed-tiny: 110 of its 110 parameters are missing",
                    "point model.pretrained at weights of hpcfed-tiny"),
    "whole_model": ("holds the Python object open_clip.model.CLIP, which hpcfed does not unpickle",
                    "torch.save(model.state_dict()"),
}


def weights_config(folder: Path, image_tree: Path, weights_file: Path, **overrides) -> Path:
    return write_config(folder / "w.yaml", image_tree, **{"model.pretrained": str(weights_file), **overrides})


def assert_names_the_file(outcome, path: Path) -> None:
    assert str(path) in outcome.first_line, outcome.first_line
    assert "weights_only" not in outcome.out + outcome.err  # torch's advice to load it unsafely is never passed on


@pytest.mark.parametrize("case", list(WEIGHTS_CASES))
def test_train_refuses_bad_weights_before_launch(case, weights, image_tree, tmp_path):
    cfg = weights_config(tmp_path, image_tree, weights[case])
    before = fingerprint(weights[case])  # 'absent' for the missing file
    outcome = run_in_process(["train", str(cfg)], cwd=tmp_path)
    problem, fix = WEIGHTS_CASES[case]
    assert_refused(outcome, 2, problem, fix, untouched=before)
    assert_names_the_file(outcome, weights[case])
    assert "model.pretrained" in outcome.first_line
    assert not (tmp_path / "w.h5").exists()


@pytest.mark.mpi
@pytest.mark.parametrize("case", list(WEIGHTS_CASES))
def test_check_env_fails_the_model_check_for_bad_weights(case, weights, image_tree, tmp_path):
    cfg = weights_config(tmp_path, image_tree, weights[case])
    before = fingerprint(weights[case])
    outcome = run_process(["check-env", str(cfg)], ranks=2)
    problem, fix = WEIGHTS_CASES[case]
    assert_refused(outcome, 1, problem, fix, untouched=before)
    assert_names_the_file(outcome, weights[case])
    assert outcome.first_line.startswith("hpcfed: check-env: model:")
    assert "ok    dataset" in outcome.out  # the data were checked all the same


def test_train_reports_missing_weights_and_missing_data_together(weights, image_tree, tmp_path):
    cfg = weights_config(tmp_path, image_tree, weights["missing"], **{"data.root": str(tmp_path / "no_data")})
    before = fingerprint(weights["missing"], tmp_path / "no_data")  # both absent, and left so
    outcome = run_in_process(["train", str(cfg)], cwd=tmp_path)
    assert_refused(outcome, 2, "2 problems, the first: config error at 'model.pretrained'", "give a checkpoint path",
                   untouched=before)
    second = outcome.err.splitlines()[1]
    assert "2. config error at 'data.root'" in second and str(tmp_path / "no_data") in second and "Fix:" in second


@pytest.mark.mpi
def test_check_env_reports_config_weights_and_data_problems_at_once(weights, image_tree, tmp_path):
    missing_data = tmp_path / "no_data"
    cfg = weights_config(tmp_path, image_tree, weights["truncated"],
                         **{"data.root": str(missing_data), "train.lr": -1.0})
    before = fingerprint(weights["truncated"])
    outcome = run_process(["check-env", str(cfg)], ranks=2)
    assert_refused(outcome, 1, "3 checks failed (see the report), the first: config: config error at 'train.lr'",
                   "use e.g. lr: 0.001", untouched=before)
    assert "FAIL  config    config error at 'train.lr'" in outcome.out
    assert f"FAIL  model     config error at 'model.pretrained': weights file {weights['truncated']}" in outcome.out
    assert f"FAIL  dataset   dataset root {missing_data} does not exist" in outcome.out
    assert "3 failed" in outcome.out


def test_check_env_says_where_shipped_weights_come_from(tmp_path):
    from hpcfed.checkenv import check_model_weights

    cfg = load_config(write_config(tmp_path / "s.yaml", tmp_path, **{
        "model.name": "hpcfed-tinyclip-vit-p12-96-w192", "model.pretrained": SHIPPED.name}), [])
    check = check_model_weights(cfg)
    assert check.status == "ok" and f"shipped with hpcfed ({SHIPPED})" in check.message


# ---- resume checkpoints -----------------------------------------------------------------------------------------


def resume_config(path: Path, image_tree: Path) -> Path:
    # participation 1.0: the signal script counts rounds per client; one epoch and no zero-shot pass: the cases
    # are about the checkpoints, not the training
    return write_config(path, image_tree, rounds=3, participation=1.0, eval_zero_shot=False,
                        **{"runtime.checkpoint_every": 1, "train.local_epochs": 1})


@pytest.fixture(scope="module")
def stopped_run(tmp_path_factory, image_tree) -> Path:
    """A run stopped by SIGUSR1 in round 2 of 3: checkpoints round-000001 and round-000002, run file interrupted."""
    cfg = resume_config(tmp_path_factory.mktemp("run") / "r.yaml", image_tree)
    done = run_mpi(3, [sys.executable, str(SIGNAL_SCRIPT), "train", str(cfg)], env={"HPCFED_TEST_SIGNAL_IN": "1"})
    assert done.returncode == EXIT_CHECKPOINTED, done.stderr[-3000:]
    assert sorted(p.name for p in cfg.with_suffix(".ckpt").iterdir()) == ["round-000001", "round-000002"]
    return cfg


def copy_run(stopped: Path, folder: Path, image_tree: Path) -> Path:
    """The same experiment in `folder` (config, run file, checkpoints): each case damages its own copy."""
    cfg = resume_config(folder / "r.yaml", image_tree)
    shutil.copy(stopped.with_suffix(".h5"), cfg.with_suffix(".h5"))
    shutil.copytree(stopped.with_suffix(".ckpt"), cfg.with_suffix(".ckpt"))
    return cfg


def rewrite_manifest(ckpt: Path) -> None:
    """The checksums recomputed for the files as they are now, as a user 'repairing' a checkpoint would."""
    manifest = json.loads((ckpt / "manifest.json").read_text())
    manifest["files"] = {name: hashlib.sha256((ckpt / name).read_bytes()).hexdigest() for name in manifest["files"]}
    (ckpt / "manifest.json").write_text(json.dumps(manifest))


def truncate(file: Path) -> None:
    data = file.read_bytes()
    file.write_bytes(data[:len(data) // 2])


def empty(file: Path) -> None:
    file.write_bytes(b"")


def pickle_code(file: Path) -> None:
    torch.save({"state": RunsCode()}, file)


def pickle_code_in_archive(file: Path) -> None:
    """Every client-NNNNN.pt member of a rank archive replaced by a pickle that would run code."""
    with zipfile.ZipFile(file) as archive:
        names = archive.namelist()
    pickle_code(file.with_suffix(".member"))
    with zipfile.ZipFile(file, "w") as archive:
        for name in names:
            archive.write(file.with_suffix(".member"), name)
    file.with_suffix(".member").unlink()


DAMAGE = {  # damage, file -> problem on the first line
    # half an archive of zips (torch files) may still open as the member it ends in
    "truncated": (truncate, "rank-0001.zip", ("rank-0001.zip is truncated or not a zip archive",
                                              "rank-0001.zip is truncated or not the archive the manifest describes")),
    "empty": (empty, "global.pt", "global.pt is empty (0 bytes)"),
    "pickled_code": (pickle_code_in_archive, "rank-0002.zip", tuple(
        f"rank-0002.zip has a member client-{i:05d}.pt that holds the Python object posix.system" for i in range(4))),
}


@pytest.mark.mpi
@pytest.mark.parametrize("case", list(DAMAGE))
def test_resume_from_a_damaged_checkpoint_with_a_rewritten_manifest_is_refused(case, stopped_run, image_tree,
                                                                               tmp_path):
    cfg = copy_run(stopped_run, tmp_path, image_tree)
    damage, name, problem = DAMAGE[case]
    ckpt = cfg.with_suffix(".ckpt") / "round-000002"
    damage(ckpt / name)
    rewrite_manifest(ckpt)
    before = fingerprint(cfg.with_suffix(".ckpt"), cfg.with_suffix(".h5"))
    outcome = run_process(["train", str(cfg), "--resume", str(ckpt)], ranks=2)
    problems = (problem,) if isinstance(problem, str) else problem
    assert_refused(outcome, 2, tuple(f"cannot resume from {ckpt}: {p}" for p in problems),
                   "pick another checkpoint with --resume",
                   untouched=before)
    assert "weights_only" not in outcome.err and not SENTINEL.exists()


@pytest.mark.mpi
def test_resume_auto_skips_a_damaged_newest_checkpoint_and_falls_back(stopped_run, image_tree, tmp_path):
    cfg = copy_run(stopped_run, tmp_path, image_tree)
    newest = cfg.with_suffix(".ckpt") / "round-000002"
    pickle_code_in_archive(newest / "rank-0002.zip")
    rewrite_manifest(newest)
    before = fingerprint(newest)
    # no new checkpoints: the damaged one would be replaced by round 2's
    outcome = run_process(["train", str(cfg), "--resume", "auto", "-o", "runtime.checkpoint_every=0"], ranks=2,
                          timeout=120)
    shown = outcome.out + outcome.err
    assert outcome.code == 0 and "Traceback" not in shown, shown
    assert outcome.first_line.startswith("hpcfed: warning: skipping checkpoint round-000002: rank-0002.zip has a "
                                         "member client-"), shown
    assert "that holds the Python object posix.system" in outcome.first_line, shown
    assert "resuming from the older checkpoint round-000001" in outcome.err
    assert f"resuming {cfg.with_suffix('.h5')} at round 2" in outcome.out
    assert fingerprint(newest) == before and not SENTINEL.exists()


@pytest.mark.mpi
def test_resume_with_another_config_names_the_differing_key(stopped_run, image_tree, tmp_path):
    cfg = copy_run(stopped_run, tmp_path, image_tree)
    ckpt = cfg.with_suffix(".ckpt") / "round-000002"
    before = fingerprint(cfg.with_suffix(".ckpt"), cfg.with_suffix(".h5"))
    outcome = run_process(["train", str(cfg), "--resume", str(ckpt), "-o", "train.lr=0.02"], ranks=2)
    assert_refused(outcome, 2, "train.lr: 0.01 in the checkpoint, 0.02 now",
                   "resume with the same config and overrides", untouched=before)
    assert str(ckpt) in outcome.first_line


def test_a_manifest_without_the_config_values_keeps_the_digest_message(stopped_run, image_tree, tmp_path):
    cfg = copy_run(stopped_run, tmp_path, image_tree)
    ckpt = cfg.with_suffix(".ckpt") / "round-000001"
    manifest = json.loads((ckpt / "manifest.json").read_text())
    assert manifest.pop("experiment")["train"]["lr"] == 0.01
    (ckpt / "manifest.json").write_text(json.dumps(manifest))
    other = load_config(cfg, ["train.lr=0.02"])
    with pytest.raises(CheckpointOfAnotherConfig, match=r"another config \(digest .*resume with the same config"):
        checkpoint.verify(ckpt, other.experiment_digest(), other.clients, other.experiment())

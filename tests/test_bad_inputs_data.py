"""Bad images and data roots (issue #19), through `hpcfed split` as a user runs it (tests/badinput.py).

A damaged image (truncated, empty, not an image) is found by the split stage's full decode and left out with a
warning; a damaged entry of the tree (symlink loop, broken link, unreadable folder) is skipped with a warning; both
are stored with the splits, and the stored splits never index them. A data root or domain that cannot be used at
all is refused with one line naming the path and the fix, and nothing on disk changes."""

from __future__ import annotations

import errno
import io
import os
import re
import shutil
import subprocess
import sys
import warnings
from pathlib import Path

import numpy as np
import pytest
from badinput import LIMIT_SECONDS, assert_refused, fingerprint, run_in_process
from PIL import Image, ImageFile

from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.results import open_run, read_splits

from conftest import HPCFED, make_image_tree, run_mpi, write_config

PER_CLASS = 6
GOOD = 2 * 3 * PER_CLASS  # domains a, b x classes cat, dog, ice_cream
SKIPPED_ONE = r"skipped 1 unusable entry under [^:]*: .*"  # the listing's warning, before the entry


@pytest.fixture
def tree(tmp_path) -> Path:
    return make_image_tree(tmp_path / "tree", per_class=PER_CLASS)


def _split(tmp_path: Path, root: Path, **overrides):
    cfg = write_config(tmp_path / "c.yaml", root, **overrides)
    return cfg, run_in_process(["split", str(cfg)], tmp_path)


def _jpeg_bytes() -> bytes:
    pixels = np.random.default_rng(1).integers(0, 256, (32, 32, 3), dtype=np.uint8)
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG")
    return out.getvalue()


def _stored(cfg: Path, root: Path) -> tuple[set[str], dict]:
    """The paths the run file's splits index (the listing as read, minus the unreadable images it records, must
    be the one the splits were made from), and its notes."""
    with open_run(cfg.with_suffix(".h5")) as f:
        splits = read_splits(f)
        notes = {k: v.tolist() if isinstance(v, np.ndarray) else v for k, v in f["splits/notes"].attrs.items()}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # the skipped entries, said already by the split
        listing = read_imagefolder(root, domains=["a", "b"]).without(notes.get("corrupt_paths", []))
    assert listing.digest() == splits.listing_digest
    indexed = np.concatenate([np.concatenate([c.train, c.val, c.test]) for c in splits.clients])
    assert len(indexed) == len(set(indexed.tolist())) == len(listing)
    return {listing.paths[i] for i in indexed}, notes


def _assert_accepted(outcome, cfg: Path, root: Path, bad: str, note: str) -> dict:
    """Exit 0, every good image in the stored splits, `bad` (relative to root) in none, and in notes[`note`]."""
    assert outcome.exception is None and "Traceback" not in outcome.out + outcome.err, outcome.out + outcome.err
    assert outcome.code == 0, outcome.out + outcome.err
    paths, notes = _stored(cfg, root)
    assert bad not in paths and len(paths) == GOOD
    assert any(bad in entry for entry in notes[note]), notes
    return notes


# ---- damaged images: found by the decode pass, left out, recorded as notes['corrupt_paths'] -----------------


def test_a_truncated_jpeg_is_left_out(tmp_path, tree):
    # A header check passes this file: only a full decode finds it (it used to stop a client in round 1).
    (tree / "a" / "cat" / "bad.jpg").write_bytes(_jpeg_bytes()[:-200])
    with pytest.warns(UserWarning, match=rf"1 of {GOOD + 1} images .* cannot be read .*a/cat/bad.jpg"):
        cfg, outcome = _split(tmp_path, tree)
    notes = _assert_accepted(outcome, cfg, tree, "a/cat/bad.jpg", "corrupt_paths")
    assert notes["corrupt_images"] == 1
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False  # nothing turned truncated files into grey-padded images


def test_a_truncated_png_is_left_out(tmp_path, tree):
    png = tree / "b" / "dog" / "003.png"
    png.write_bytes(png.read_bytes()[:-40])
    with pytest.warns(UserWarning, match=r"1 of \d+ images .* cannot be read .*b/dog/003.png"):
        cfg, outcome = _split(tmp_path, tree)
    assert outcome.code == 0 and "Traceback" not in outcome.err
    paths, notes = _stored(cfg, tree)
    assert "b/dog/003.png" not in paths and len(paths) == GOOD - 1 and notes["corrupt_paths"] == ["b/dog/003.png"]


def test_a_zero_byte_image_is_left_out(tmp_path, tree):
    (tree / "a" / "ice_cream" / "empty.png").write_bytes(b"")
    with pytest.warns(UserWarning, match=r"1 of \d+ images .* cannot be read .*a/ice_cream/empty.png"):
        cfg, outcome = _split(tmp_path, tree)
    _assert_accepted(outcome, cfg, tree, "a/ice_cream/empty.png", "corrupt_paths")


def test_a_text_file_named_jpg_is_left_out(tmp_path, tree):
    (tree / "b" / "cat" / "notes.jpg").write_text("not an image, just text\n")
    with pytest.warns(UserWarning, match=r"1 of \d+ images .* cannot be read .*b/cat/notes.jpg"):
        cfg, outcome = _split(tmp_path, tree)
    _assert_accepted(outcome, cfg, tree, "b/cat/notes.jpg", "corrupt_paths")


def test_a_tree_of_damaged_images_only_is_refused(tmp_path, tree):
    # Nothing left to train on: refused, not an empty split.
    for png in tree.rglob("*.png"):
        png.write_bytes(b"")
    before = fingerprint(tree)
    cfg, outcome = _split(tmp_path, tree)
    assert_refused(outcome, 2, f"none of the {GOOD} images", "not truncated", untouched=before)
    assert not cfg.with_suffix(".h5").exists()


# ---- damaged entries of the tree: skipped while listing, recorded as notes['skipped_paths'] ------------------


# entry (relative to the tree) -> where it links (relative to the entry's folder, {tmp}: the test's folder), why
LINKS = {
    "symlink-loop-in-a-class-folder": ("a/cat/loop", "..", "symlink loop"),
    "symlink-loop-among-class-folders": ("b/loop", "..", "symlink loop"),  # would be a class holding the domains
    "link-to-itself-named-like-an-image": ("a/dog/self.png", "self.png", "symlink loop"),
    "broken-symlink": ("b/ice_cream/gone.png", "{tmp}/moved_away.png", "broken symlink"),
}


@pytest.mark.parametrize("case", LINKS)
def test_a_bad_link_in_the_tree_is_skipped(case, tmp_path, tree):
    entry, target, why = LINKS[case]
    (tree / entry).symlink_to(target.replace("{tmp}", str(tmp_path)))
    with pytest.warns(UserWarning, match=SKIPPED_ONE + re.escape(f"{entry} ({why}")):
        cfg, outcome = _split(tmp_path, tree)
    _assert_accepted(outcome, cfg, tree, entry, "skipped_paths")


def _unreadable(monkeypatch, folder: Path) -> None:
    """Listing `folder` fails as it does for a mode-000 folder of another user. Root reads such a folder anyway,
    so os.scandir is made to refuse it: the readers list every folder through os.scandir."""
    real = os.scandir

    def scandir(path="."):
        if Path(path) == folder:
            raise PermissionError(errno.EACCES, "Permission denied", str(path))
        return real(path)

    monkeypatch.setattr(os, "scandir", scandir)


def test_an_unreadable_class_folder_is_skipped(tmp_path, tree, monkeypatch):
    _unreadable(monkeypatch, tree / "a" / "dog")
    with pytest.warns(UserWarning, match=SKIPPED_ONE + r"a/dog \(cannot be read: Permission denied\)"):
        cfg, outcome = _split(tmp_path, tree)
    assert outcome.code == 0 and "Traceback" not in outcome.err, outcome.err
    paths, notes = _stored(cfg, tree)
    assert not any(p.startswith("a/dog/") for p in paths) and len(paths) == GOOD - PER_CLASS
    assert notes["skipped_entries"] == 1


def _obeying_file_modes() -> list[str] | None:
    """A command prefix under which this user cannot read a mode-000 folder: none for a normal user; for root,
    setpriv without the capabilities that let root read anything (None when that is not possible here)."""
    if os.geteuid() != 0:
        return []
    setpriv = shutil.which("setpriv")
    if setpriv is None:
        return None
    drop = "-dac_override,-dac_read_search"
    prefix = [setpriv, f"--inh-caps={drop}", f"--bounding-set={drop}"]
    return prefix if subprocess.run([*prefix, "true"], capture_output=True).returncode == 0 else None


def test_a_mode_000_class_folder_is_skipped(tmp_path, tree):
    # A real unreadable folder, in a process of its own (the capabilities are dropped for that process only).
    prefix = _obeying_file_modes()
    if prefix is None:
        pytest.skip("running as root without setpriv or the right to drop CAP_DAC_OVERRIDE: root would read a "
                    "mode-000 folder anyway (test_an_unreadable_class_folder_is_skipped covers the case in-process)")
    cfg = write_config(tmp_path / "c.yaml", tree)
    env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
    env.pop("SLURM_NTASKS", None)
    folder = tree / "b" / "cat"
    folder.chmod(0)
    try:
        done = subprocess.run([*prefix, sys.executable, "-m", "hpcfed", "split", str(cfg)], capture_output=True,
                              text=True, timeout=LIMIT_SECONDS, env=env, cwd=tmp_path)
    finally:
        folder.chmod(0o755)
    assert done.returncode == 0 and "Traceback" not in done.stderr, done.stderr
    assert re.search(SKIPPED_ONE + r"b/cat \(cannot be read: Permission denied\)", done.stderr)
    shutil.rmtree(folder)  # what this test process, as root, would otherwise still read
    folder.mkdir()
    paths, _ = _stored(cfg, tree)
    assert not any(p.startswith("b/cat/") for p in paths) and len(paths) == GOOD - PER_CLASS


# ---- roots and domains that cannot be used: refused, one line naming the path and the fix --------------------


def _refused(tmp_path, root: Path, problem, fix, before: dict | None = None, **overrides) -> None:
    """Exit 2, a first line naming a path under `root`, the problem and the fix; no file changed (`before`: a
    fingerprint taken earlier, else of everything in tmp_path now) and no run file made."""
    before = before or fingerprint(tmp_path)
    cfg, outcome = _split(tmp_path, root, **overrides)
    assert_refused(outcome, 2, problem, fix, untouched=before)
    assert str(root) in outcome.first_line
    assert not cfg.with_suffix(".h5").exists()


def test_a_root_that_is_a_file_is_refused(tmp_path):
    root = tmp_path / "images.tar"
    root.write_bytes(b"an archive, not yet unpacked")
    _refused(tmp_path, root, f"{root} is a file, not a folder", "set data.root to the folder")


def test_a_missing_root_is_refused(tmp_path):
    _refused(tmp_path, tmp_path / "not_here", "not_here does not exist", "set data.root to the folder")


def test_a_root_that_is_a_broken_symlink_is_refused(tmp_path):
    (tmp_path / "data").symlink_to(tmp_path / "unmounted")
    _refused(tmp_path, tmp_path / "data", "data does not exist", "set data.root")


def test_an_unreadable_root_is_refused(tmp_path, tree, monkeypatch):
    before = fingerprint(tmp_path)
    _unreadable(monkeypatch, tree)
    _refused(tmp_path, tree, f"{tree} cannot be read (Permission denied)", "chmod", before)


def test_an_empty_root_is_refused(tmp_path):
    (tmp_path / "empty").mkdir()
    _refused(tmp_path, tmp_path / "empty", "empty/a does not exist", "holds no folders at all: set data.root")


def test_a_root_without_class_folders_is_refused(tmp_path, tree):
    loose = tmp_path / "loose"
    loose.mkdir()
    for png in sorted((tree / "a" / "cat").iterdir()):
        (loose / png.name).write_bytes(png.read_bytes())  # images straight in the root, no <class>/ folders
    _refused(tmp_path, loose, f"{loose} has no class folders", "put each class's images in a folder",
             **{"data.domains": None, "partition.scheme": "iid"})


def test_a_missing_domain_is_refused(tmp_path, tree):
    _refused(tmp_path, tree, f"domain folder {tree / 'c'} does not exist", "set data.domains to the available "
             "domains", **{"data.domains": ["a", "c"]})


def test_a_domain_that_is_a_file_is_refused(tmp_path, tree):
    (tree / "c").write_text("not a folder")
    _refused(tmp_path, tree, "c is a file, not a folder", "set data.domains",
             **{"data.domains": ["a", "c"]})


def test_an_unreadable_domain_is_refused(tmp_path, tree, monkeypatch):
    before = fingerprint(tmp_path)
    _unreadable(monkeypatch, tree / "b")
    _refused(tmp_path, tree, "b cannot be read (Permission denied)", "chmod", before)


def test_a_file_where_a_class_folder_should_be_is_refused(tmp_path, tree):
    dog = tree / "b" / "dog"
    for png in dog.iterdir():
        png.unlink()
    dog.rmdir()
    dog.write_text("a file, not a folder")
    _refused(tmp_path, tree, f"classes differ between domains: {dog.parent} has extra [] and lacks ['dog']",
             "every domain needs the same class folders")


def test_a_class_folder_with_no_images_is_kept_with_a_warning(tmp_path, tree):
    # The class is still learnt from domain b; an empty folder is more often a failed copy, hence the warning.
    for png in (tree / "a" / "dog").iterdir():
        png.unlink()
    with pytest.warns(UserWarning, match=r"1 class folder\(s\) under .* hold no images: a/dog; add the images"):
        cfg, outcome = _split(tmp_path, tree)
    assert outcome.code == 0 and "Traceback" not in outcome.err, outcome.err
    paths, _ = _stored(cfg, tree)
    assert len(paths) == GOOD - PER_CLASS and any(p.startswith("b/dog/") for p in paths)


# ---- one real run: the truncated JPEG no longer stops a client ------------------------------------------------


@pytest.mark.mpi
def test_training_runs_past_a_truncated_jpeg_on_three_ranks(tmp_path, tree):
    # Every client trains and is evaluated in round 1: the file would be read if it were in any split.
    (tree / "a" / "cat" / "bad.jpg").write_bytes(_jpeg_bytes()[:-200])
    (tree / "b" / "dog" / "gone.png").symlink_to(tmp_path / "moved_away.png")
    cfg = write_config(tmp_path / "t.yaml", tree, rounds=1, participation=1.0)
    done = run_mpi(3, [str(HPCFED), "train", str(cfg)], timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "Traceback" not in done.stderr
    # each warning once, from rank 0, though every rank lists the tree
    assert done.stderr.count("cannot be read and are left out, e.g. ['a/cat/bad.jpg']") == 1
    assert done.stderr.count("skipped 1 unusable entry") == 1
    paths, notes = _stored(cfg, tree)
    assert "a/cat/bad.jpg" not in paths and len(paths) == GOOD and notes["corrupt_paths"] == ["a/cat/bad.jpg"]
    with open_run(cfg.with_suffix(".h5")) as f:
        assert f["status"].asstr()[()] == "finished"

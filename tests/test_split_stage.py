"""`hpcfed split` stores the splits in the run file; `hpcfed train` reuses them or refuses a mismatch."""

import h5py
import numpy as np
import pytest
from badinput import run_in_process
from click.testing import CliRunner

from hpcfed.cli import main
from hpcfed.config import load_config
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.results import open_run, read_splits
from hpcfed.split import make_splits

from conftest import HPCFED, PACS_DOMAINS, PACS_LABELS, make_image_tree, make_pacs_tree, run_mpi, write_config


@pytest.fixture
def tree(tmp_path):
    return make_image_tree(tmp_path / "tree", per_class=12)


def test_split_writes_splits_counts_and_a_plot(tmp_path, tree):
    cfg = write_config(tmp_path / "s.yaml", tree)
    result = CliRunner().invoke(main, ["split", str(cfg), "--plot", str(tmp_path / "labels.png")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "labels.png").read_bytes()[:4] == b"\x89PNG"
    listing = read_imagefolder(tree, domains=["a", "b"])
    expected = make_splits(listing, load_config(cfg).partition, 4, seed=0)
    with open_run(cfg.with_suffix(".h5")) as f:
        stored = read_splits(f)
        counts = f["splits/label_counts/train"][:]
        assert f["status"][()].decode() == "split"
    for a, b in zip(stored.clients, expected.clients, strict=True):
        assert np.array_equal(a.train, b.train) and np.array_equal(a.test, b.test) and a.domain == b.domain
        assert counts.shape == (4, 3)
    assert stored.listing_digest == listing.digest()
    assert counts.sum() == sum(len(c.train) for c in expected.clients)


def test_split_refuses_to_replace_other_splits_without_overwrite(tmp_path, tree):
    cfg = write_config(tmp_path / "s.yaml", tree)
    runner = CliRunner()
    assert runner.invoke(main, ["split", str(cfg)]).exit_code == 0
    assert "reused" in runner.invoke(main, ["split", str(cfg)]).output  # same inputs: nothing to do
    other = runner.invoke(main, ["split", str(cfg), "-o", "seed=3"])
    assert other.exit_code == 2 and "do not match" in other.output and "--overwrite" in other.output
    assert runner.invoke(main, ["split", str(cfg), "-o", "seed=3", "--overwrite"]).exit_code == 0


def test_split_of_pacs_with_its_official_lists_gives_every_client_train_val_and_test(tmp_path):
    """The authors' archive (pacs_data/pacs_data + pacs_label, test list = train + crossval): crossval is each
    client's val, its test is cut from its own train, and the command's table shows all three non-empty."""
    make_pacs_tree(tmp_path / "PACS" / "pacs_data" / "pacs_data", tmp_path / "PACS" / "pacs_label",
                   classes=tuple(PACS_LABELS), per_class=10, n_val=3)
    cfg = write_config(tmp_path / "pacs.yaml", tmp_path, clients=8, **{"data.dataset": "pacs",
                       "data.domains": list(PACS_DOMAINS), "partition.clients_per_domain": 2})
    outcome = run_in_process(["split", str(cfg)], tmp_path)
    assert outcome.code == 0 and outcome.exception is None, outcome.out + outcome.err
    rows = [line.split() for line in outcome.out.splitlines()[2:]]  # client, domain, train, val, test, classes
    assert [r[1] for r in rows] == [d for d in PACS_DOMAINS for _ in range(2)]
    assert all(int(n) > 0 for r in rows for n in r[2:5]), outcome.out
    with open_run(cfg.with_suffix(".h5")) as f:
        stored = read_splits(f)
        notes = f["splits/notes"].attrs
        assert notes["test_list"] == "whole domain" and list(notes["official_labels"]) == list(range(1, 8))
    assert len(stored.clients) == 8
    for c in stored.clients:
        assert len(c.train) and len(c.val) and len(c.test)
        assert not set(c.train.tolist()) & set(c.test.tolist())


@pytest.mark.mpi
def test_train_reuses_stored_splits_and_refuses_a_changed_listing(tmp_path, tree):
    cfg = write_config(tmp_path / "s.yaml", tree, rounds=1)
    assert CliRunner().invoke(main, ["split", str(cfg)]).exit_code == 0
    (tree / "b" / "dog" / "003.png").unlink()  # the data changed after the split was made
    refused = run_mpi(2, [str(HPCFED), "train", str(cfg)], timeout=120)
    assert refused.returncode != 0 and "dataset listing changed" in refused.stderr
    make_image_tree(tree, per_class=12)  # restore the same files
    done = run_mpi(2, [str(HPCFED), "train", str(cfg)], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]
    assert "using the splits stored in" in done.stdout
    with h5py.File(cfg.with_suffix(".h5"), "r") as f:
        assert f["status"][()].decode() == "finished" and "splits/label_counts" in f


@pytest.mark.mpi
def test_a_corrupt_image_is_counted_left_out_and_training_still_runs(tmp_path, tree):
    (tree / "a" / "cat" / "002.png").write_bytes(b"\x89PNG truncated")
    cfg = write_config(tmp_path / "c.yaml", tree, rounds=1)
    with pytest.warns(UserWarning, match="1 of 72 images .* cannot be read"):
        result = CliRunner().invoke(main, ["split", str(cfg)])
    assert result.exit_code == 0, result.output
    with open_run(cfg.with_suffix(".h5")) as f:
        assert f["splits/notes"].attrs["corrupt_images"] == 1
        assert list(f["splits/notes"].attrs["corrupt_paths"]) == ["a/cat/002.png"]
        assert f["splits/label_counts/train"][:].sum() + f["splits/label_counts/val"][:].sum() \
            + f["splits/label_counts/test"][:].sum() == 71
    done = run_mpi(2, [str(HPCFED), "train", str(cfg)], timeout=120)
    assert done.returncode == 0, done.stderr[-2000:]

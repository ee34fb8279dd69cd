"""`hpcfed report --published`: a paper's published numbers beside those of run files made by a real short run,
with the difference and every way the run's protocol differs from the paper's."""

from __future__ import annotations

import math
import shutil

import h5py
import pytest
import yaml
from click.testing import CliRunner

from hpcfed.cli import main
from hpcfed.report.papers import PAPERS
from hpcfed.report.published import build_comparison
from hpcfed.report.runs import read_runs
from hpcfed.results import open_run

from conftest import HPCFED, make_image_tree, run_mpi, write_config

pytestmark = pytest.mark.mpi
TABLE_A, DOMAINNET = PAPERS["pfedmma"][0], PAPERS["pfedmma"][1]
# What the run's stored config says where it follows the paper's base-to-novel protocol (methods.md §1.5).
AS_THE_PAPER = {("partition", "shots"): 16, ("clients",): 10, ("model", "name"): "ViT-B-16",
                ("model", "pretrained"): "openai", ("rounds",): 50, ("data", "domains"): None}


def with_config(source, target, changes: dict) -> None:
    """A copy of run file `source` whose stored config has `changes` ({key path tuple: value}), as a run made
    under that protocol would store it (the report reads the protocol only from there)."""
    shutil.copy(source, target)
    with h5py.File(target, "r+") as f:
        config = yaml.safe_load(f["config"].asstr()[()])
        for path, value in changes.items():
            node = config
            for key in path[:-1]:
                node = node[key]
            node[path[-1]] = value
        del f["config"]
        f["config"] = yaml.safe_dump(config)


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """A real base-to-novel pFedMMA run, and copies stored as if run on the paper's datasets and protocol, by
    a method the paper does not report, and on DomainNet without base-to-novel."""
    folder = tmp_path_factory.mktemp("published")
    tree = make_image_tree(folder / "tree", domains=("a", "b"), classes=("cat", "dog", "fish", "bird", "tree", "car"),
                           per_class=12)
    cfg = write_config(folder / "b2n.yaml", tree, rounds=2, clients=3, participation=1.0,
                       partition={"scheme": "disjoint_classes", "base_novel": True, "val_fraction": 0.2,
                                  "test_fraction": 0.3})
    made = {"measured": cfg.with_suffix(".h5")}
    done = run_mpi(3, [str(HPCFED), "train", str(cfg)], timeout=180)
    assert done.returncode == 0, done.stderr[-3000:]
    made["dtd"], made["pets"] = folder / "dtd.h5", folder / "pets.h5"
    with_config(made["measured"], made["dtd"], {**AS_THE_PAPER, ("data", "dataset"): "dtd"})
    with_config(made["measured"], made["pets"], {**AS_THE_PAPER, ("data", "dataset"): "oxford_pets",
                                                 ("rounds",): 100})
    made["fedlora"] = folder / "fedlora.h5"
    with_config(made["measured"], made["fedlora"], {("method", "name"): "fedlora"})
    made["domainnet"] = folder / "domainnet.h5"
    with_config(made["measured"], made["domainnet"], {("data", "dataset"): "domainnet10",
                                                      ("partition", "base_novel"): False})
    return made


def summary(path) -> dict[str, float]:
    with open_run(path) as f:
        return {name: 100 * float(f[f"final/selected/summary/{name}"][()])
                for name in ("test_accuracy", "base_accuracy", "novel_accuracy", "hm")}


def comparison(*paths):
    return build_comparison(read_runs(list(paths)), "pfedmma")


def test_published_numbers_sit_beside_the_measured_ones_with_the_difference(runs):
    table, _ = comparison(runs["measured"])
    assert len(table) == 1
    row, measured, paper = table.iloc[0], summary(runs["measured"]), TABLE_A.numbers["pfedmma"]
    assert row["method"] == "pfedmma" and row["published in"] == TABLE_A.table and row["seeds"] == 1
    for metric, name in (("Local", "test_accuracy"), ("Base", "base_accuracy"), ("Novel", "novel_accuracy"),
                         ("HM", "hm")):
        assert row[f"{metric} paper"] == paper[metric]
        assert row[f"{metric} run"] == pytest.approx(measured[name])
        assert row[f"{metric} diff"] == pytest.approx(measured[name] - paper[metric])
    assert (paper["Local"], paper["HM"]) == (97.17, 84.15)  # methods.md §1.9 Table A


def test_each_protocol_difference_is_named_run_vs_paper(runs):
    row = comparison(runs["measured"])[0].iloc[0]
    assert row["protocol differs"].split("; ") == [
        "dataset imagefolder is not the paper's", "shots all vs 16", "clients 3 vs 10",
        "backbone hpcfed-tiny (None) vs ViT-B-16 (openai)", "rounds 2 vs 50"]


def test_a_run_under_the_papers_protocol_is_not_flagged_and_datasets_are_averaged_like_the_paper(runs):
    table, _ = comparison(runs["dtd"], runs["pets"])
    rows = {r["dataset"]: r for _, r in table.iterrows()}
    assert rows["dtd"]["protocol differs"] == "no"
    assert rows["oxford_pets"]["protocol differs"] == "rounds 100 vs 50"
    # Table A has only the 7-dataset mean: the mean of the measured datasets is set beside it, as a partial mean.
    mean = rows["mean of dtd, oxford_pets"]
    assert mean["HM run"] == pytest.approx((rows["dtd"]["HM run"] + rows["oxford_pets"]["HM run"]) / 2)
    assert mean["protocol differs"] == "2 of the paper's 7 datasets; rounds 100 vs 50"


def test_methods_and_datasets_without_a_published_number_are_named_not_invented(runs):
    table, notes = comparison(runs["measured"], runs["fedlora"], runs["domainnet"])
    assert list(table["method"]) == ["pfedmma", "pfedmma"]
    assert any(n.startswith("fedlora on imagefolder") and n.endswith(f"not in {TABLE_A.table}") for n in notes)
    domainnet = table[table["published in"] == DOMAINNET.table].iloc[0]
    assert domainnet["Local paper"] == 47.17  # Table B has Local only
    assert all(math.isnan(domainnet[f"{m} {k}"]) for m in ("Base", "Novel", "HM") for k in ("paper", "diff"))
    assert "clients 3 vs 30" in domainnet["protocol differs"]


def test_the_cli_prints_the_comparison_after_the_table(runs):
    result = CliRunner().invoke(main, ["report", str(runs["measured"]), "--published", "pfedmma"])
    assert result.exit_code == 0, result.output
    text = result.output
    assert text.index("Published beside measured: pFedMMA") > text.index("-- dataset imagefolder")
    line = next(line for line in text.splitlines() if line.startswith("pfedmma") and "vs paper" not in line
                and "97.17" in line)
    assert "shots all vs 16" in line and "rounds 2 vs 50" in line
    assert "methods.md §1.9 Table A" in text


@pytest.mark.parametrize("name,expected", [("fedvlm", "no Local/Base/Novel/HM numbers for FedVLM"),
                                           ("nosuchpaper", "no published numbers are stored under that name")])
def test_a_paper_without_numbers_is_refused_naming_the_known_ones_before_reading_runs(tmp_path, name, expected):
    result = CliRunner().invoke(main, ["report", str(tmp_path / "missing.h5"), "--published", name])
    assert result.exit_code == 2
    assert expected in result.output and "papers with published numbers: pfedmma" in result.output
    assert "not found" not in result.output  # refused before the run files are read

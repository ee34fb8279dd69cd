"""`hpcfed report` on run files made by real short runs: the table, its files, the figures, the tidy frames."""

from __future__ import annotations

import shutil
import subprocess

import h5py
import numpy as np
import pandas as pd
import pytest
from click.testing import CliRunner

from hpcfed.cli import main
from hpcfed.report import tidy
from hpcfed.results import open_run

from conftest import HPCFED, REPO, run_mpi, write_config

pytestmark = pytest.mark.mpi


@pytest.fixture(scope="module")
def runs(tmp_path_factory, image_tree) -> dict:
    """Two seeds of pFedMMA, a seed-0 run on another partition, a split-only file and an interrupted copy."""
    folder = tmp_path_factory.mktemp("report")
    cfg = write_config(folder / "base.yaml", image_tree, rounds=2)
    made = {name: folder / f"{name}.h5" for name in ("seed0", "seed1", "other_split", "split_only", "interrupted")}
    trainings = {"seed0": ["seed=0"], "seed1": ["seed=1"], "other_split": ["seed=0", "partition.beta=0.3"]}
    for name, overrides in trainings.items():
        args = [str(HPCFED), "train", str(cfg), "-o", f"output={made[name]}"]
        for override in overrides:
            args += ["-o", override]
        result = run_mpi(2, args)
        assert result.returncode == 0, result.stderr[-2000:]
    split = subprocess.run([str(HPCFED), "split", str(cfg), "-o", f"output={made['split_only']}", "-o", "seed=2"],
                           capture_output=True, text=True, cwd=REPO, timeout=120)
    assert split.returncode == 0, split.stderr[-2000:]
    shutil.copy(made["seed1"], made["interrupted"])  # as a job stopped by SIGUSR1 after its first round leaves it
    with h5py.File(made["interrupted"], "r+") as f:
        f["status"][()] = "interrupted"
        f["progress/rounds_done"][()] = 1
    return made


def report(*args) -> str:
    result = CliRunner().invoke(main, ["report", *map(str, args)])
    assert result.exit_code == 0, result.output
    return result.output


def summary_over_seeds(paths, which: str = "selected") -> tuple[float, float]:
    """Mean and sample std over the runs of the client mean of Local accuracy, in %, straight from the arrays."""
    per_run = []
    for path in paths:
        with open_run(path) as f:
            per_run.append(100 * np.nanmean(f[f"final/{which}/test_accuracy"][:]))
    return float(np.mean(per_run)), float(np.std(per_run, ddof=1))


def final_rounds(paths, which: str = "selected") -> str:
    """The round of /final/{which} of each run, counted from 1, in the order given."""
    rounds = []
    for path in paths:
        with open_run(path) as f:
            rounds.append(str(int(f[f"final/{which}_round"][()]) + 1))
    return " ".join(rounds)


def read_csv_table(runs, tmp_path, *extra) -> pd.DataFrame:
    out = tmp_path / "table.csv"
    report(*runs.values(), "--format", "csv", "--out", out, *extra)
    return pd.read_csv(out)


def averaged_row(table: pd.DataFrame) -> pd.Series:
    rows = table[table["status"] == "finished"]
    assert len(rows) == 1, table
    return rows.iloc[0]


def test_table_numbers_are_the_mean_and_std_over_seeds_of_the_run_arrays(runs, tmp_path):
    mean, std = summary_over_seeds([runs["seed0"], runs["seed1"]])
    row = averaged_row(read_csv_table(runs, tmp_path))
    assert row["method"] == "pfedmma" and row["seeds"] == 2 and row["seed list"] == "0 1"
    assert row["Local"] == pytest.approx(mean) and row["Local std"] == pytest.approx(std)
    assert row["accuracy at"] == "round selected on validation"
    assert str(row["round"]) == final_rounds([runs["seed0"], runs["seed1"]])  # one per seed, as the seed list
    text = report(*runs.values())
    assert text.splitlines()[0].split()[:5] == ["method", "Local", "Base", "Novel", "HM"]
    assert f"{mean:.1f} ± {std:.1f}" in text
    assert "at the round selected on validation accuracy (column round: that round of each seed" in text


def test_last_shows_the_last_round_and_says_so(runs, tmp_path):
    mean, std = summary_over_seeds([runs["seed0"], runs["seed1"]], "last")
    row = averaged_row(read_csv_table(runs, tmp_path, "--last"))
    assert row["Local"] == pytest.approx(mean) and row["Local std"] == pytest.approx(std)
    assert str(row["round"]) == final_rounds([runs["seed0"], runs["seed1"]], "last")
    assert "at the last evaluated round" in report(*runs.values(), "--last")


def test_a_run_on_another_split_is_flagged_and_left_out_of_the_means(runs, tmp_path):
    with open_run(runs["seed0"]) as a, open_run(runs["other_split"]) as b:
        assert a["splits"].attrs["split_hash"] != b["splits"].attrs["split_hash"]
    table = read_csv_table(runs, tmp_path)
    flagged = table[table["status"].str.contains("other_split.h5")].iloc[0]
    assert flagged["status"].startswith("NOT AVERAGED: split") and flagged["seeds"] == 1
    assert averaged_row(table)["seeds"] == 2
    assert "WARNING: 3 run(s) left out of the means" in report(*runs.values())


def test_unfinished_runs_are_labelled_and_left_out_of_the_means(runs, tmp_path):
    table = read_csv_table(runs, tmp_path)
    status = {path: table[table["status"].str.contains(f"{path}.h5")]["status"].iloc[0]
              for path in ("split_only", "interrupted")}
    assert status["split_only"].startswith("NOT AVERAGED: split, 0 rounds done")
    assert status["interrupted"].startswith("NOT AVERAGED: interrupted, 1 rounds done")
    assert averaged_row(table)["Local"] == pytest.approx(summary_over_seeds([runs["seed0"], runs["seed1"]])[0])


def test_markdown_and_latex_files_are_written(runs, tmp_path):
    report(*runs.values(), "--format", "md", "--out", tmp_path / "table.md")
    lines = (tmp_path / "table.md").read_text().splitlines()
    assert lines[0].startswith("| dataset | method | Local") and lines[1].startswith("|---|")
    assert sum(line.startswith("| imagefolder[a,b] |") for line in lines) == 4  # averaged row + 3 left out
    report(*runs.values(), "--format", "latex", "--out", tmp_path / "table.tex")
    latex = (tmp_path / "table.tex").read_text()
    assert "\\begin{tabular}" in latex and "$\\pm$" in latex and "\\caption{Accuracy in \\%" in latex


def test_plots_directory_holds_the_figures(runs, tmp_path):
    import matplotlib.image

    output = report(*runs.values(), "--plots", tmp_path / "plots")
    hashes = set()
    for path in runs.values():
        with open_run(path) as f:
            hashes.add(f["splits"].attrs["split_hash"])
    expected = {"accuracy_vs_round.png", "client_accuracy.png", "accuracy_vs_bytes.png", "time_per_round.png"}
    expected |= {f"label_distribution_{h}.png" for h in hashes}
    assert {p.name for p in (tmp_path / "plots").iterdir()} == expected
    for name in expected:
        image = matplotlib.image.imread(tmp_path / "plots" / name)
        assert image.shape[0] > 100 and image.shape[1] > 100 and image.std() > 0, name
        assert f"plot: {tmp_path / 'plots' / name}" in output


def shown_tick_labels(axis) -> list:
    """The tick labels drawn on an axis: non-empty text at a tick inside the view (call after canvas.draw())."""
    low, high = sorted(axis.get_view_interval())
    index = 0 if axis.axis_name == "x" else 1
    return [label for label in axis.get_ticklabels()
            if label.get_text() and low <= label.get_position()[index] <= high]


@pytest.mark.parametrize("sent", [[2.1e6, 3.2e6, 4.2e6], [101e3, 203e3], [0, 2.1e6, 4.2e6],
                                  [0, 3e3, 5e4, 2e7, 4e8], [0, 0]],
                         ids=["within one decade", "under a doubling", "zero and one decade", "six decades", "nothing"])
def test_the_bytes_axis_has_labels_in_byte_units_whatever_its_range(sent):
    from hpcfed.report.figures import bytes_axis
    from hpcfed.report.plots import _pyplot

    fig, ax = _pyplot().subplots(figsize=(5.5, 4.0))
    ax.plot(sent, np.arange(len(sent)), "o-")
    bytes_axis(ax)
    fig.canvas.draw()
    labels = [label.get_text() for label in shown_tick_labels(ax.xaxis)]
    _pyplot().close(fig)
    assert len(labels) >= (1 if max(sent) == 0 else 2), labels
    assert all(text.endswith("B") and "mB" not in text for text in labels), labels  # bytes, never millibytes


def test_the_accuracy_vs_bytes_figure_labels_its_bytes_axis(runs):
    from hpcfed.report.figures import accuracy_vs_bytes
    from hpcfed.report.runs import experiment_labels, experiments, read_runs

    groups = experiments(read_runs([runs["seed0"], runs["seed1"]]))  # 2 rounds: bytes within one decade
    fig = accuracy_vs_bytes(groups, experiment_labels(groups))
    fig.canvas.draw()
    assert len(shown_tick_labels(fig.axes[0].xaxis)) >= 2


@pytest.mark.parametrize("n_ranks", [16, 64])  # "0 (server)" ran into "1" from 12 ranks on
def test_the_rank_labels_of_time_per_round_do_not_overlap(runs, tmp_path, n_ranks):
    from hpcfed.report.figures import time_per_round
    from hpcfed.report.runs import experiment_labels, experiments, read_run

    wide = tmp_path / f"ranks{n_ranks}.h5"
    shutil.copy(runs["seed0"], wide)
    with h5py.File(wide, "r+") as f:  # as a run on n_ranks ranks records it: every worker like rank 1
        for phase in f["timing"]:
            timing = f[f"timing/{phase}"]
            timing.resize(n_ranks, axis=1)
            timing[:, 2:] = timing[:, 1:2]
    groups = experiments([read_run(wide)])
    fig = time_per_round(groups, experiment_labels(groups))
    fig.canvas.draw()
    ax = fig.axes[0]
    boxes = [label.get_window_extent() for label in shown_tick_labels(ax.xaxis)]
    assert len(boxes) >= 2 and "0 = server" in ax.get_xlabel()
    assert not any(a.overlaps(b) for i, a in enumerate(boxes) for b in boxes[i + 1:])


@pytest.mark.parametrize("which", ["selected", "last"])
def test_client_accuracy_shows_the_clients_at_the_round_the_table_shows(runs, which):
    from hpcfed.report.figures import client_accuracy
    from hpcfed.report.runs import experiment_labels, experiments, read_runs

    seeds = [runs["seed0"], runs["seed1"]]
    groups = experiments(read_runs(seeds, which))
    ax = client_accuracy(groups, experiment_labels(groups), which).axes[0]
    expected = []
    for path in seeds:
        with open_run(path) as f:
            accuracy = f[f"final/{which}/test_accuracy"][:]
        expected += list(100 * accuracy[np.isfinite(accuracy)])
    points = np.concatenate([points.get_offsets()[:, 1] for points in ax.collections])  # one point per client
    assert sorted(points) == pytest.approx(sorted(expected))
    assert ("selected on validation" if which == "selected" else "last evaluated round") in ax.get_title()


def test_a_file_that_is_not_hdf5_gives_an_error_naming_it(runs, tmp_path):
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not hdf5")
    result = CliRunner().invoke(main, ["report", str(runs["seed0"]), str(broken)])
    assert result.exit_code == 2 and f"{broken} is not an HDF5 file" in result.output


def test_tidy_has_one_row_per_round_client_and_metric(runs):
    frame = tidy(runs["seed0"])
    with open_run(runs["seed0"]) as f:
        accuracy = f["metrics/client/test_accuracy"][:]
    local = frame[frame["metric"] == "test_accuracy"].set_index(["round", "client"])["value"]
    assert not local.index.duplicated().any()
    for (r, client), value in local.items():
        assert value == accuracy[r - 1, client]
    assert len(local) == np.isfinite(accuracy).sum()
    assert set(frame["method"]) == {"pfedmma"} and set(frame["seed"]) == {0}


def test_tidy_names_each_clients_domain_and_mixed_for_a_client_of_several(runs, tmp_path):
    mixed = tmp_path / "mixed_client.h5"
    shutil.copy(runs["seed0"], mixed)
    with h5py.File(mixed, "r+") as f:
        f["splits/client_domain"][0] = -1  # as the iid and label-skew schemes record a client of every domain
        names, client_domain = list(f["splits/domain_names"].asstr()[()]), f["splits/client_domain"][:]
    expected = {client: names[d] if d >= 0 else "mixed" for client, d in enumerate(client_domain)}
    frame = tidy(mixed)
    assert list(frame.columns[-4:]) == ["client", "domain", "metric", "value"]
    pairs = frame[["client", "domain"]].drop_duplicates()
    assert len(pairs) == len(expected) and dict(zip(pairs["client"], pairs["domain"], strict=True)) == expected
    assert expected[0] == "mixed" and set(expected.values()) - {"mixed"} <= set(names)


def test_another_setting_of_a_method_is_its_own_row_named_by_what_differs(runs, tmp_path):
    out = tmp_path / "settings.csv"
    report(runs["seed1"], runs["other_split"], "--format", "csv", "--out", out)  # different seeds: no clash
    table = pd.read_csv(out)
    assert sorted(table["method"]) == ["pfedmma (partition.beta=0.3)", "pfedmma (partition.beta=1.0)"]
    assert (table["status"] == "finished").all() and (table["seeds"] == 1).all()


def test_a_run_made_before_a_config_key_existed_groups_with_runs_that_have_its_default(runs, tmp_path):
    old = tmp_path / "older_version.h5"
    shutil.copy(runs["seed1"], old)
    with h5py.File(old, "r+") as f:  # as written by an hpcfed without the extract section and augment_views
        import yaml

        config = yaml.safe_load(f["config"].asstr()[()])
        del config["extract"], config["train"]["augment_views"]
        del f["config"]
        f["config"] = yaml.safe_dump(config)
    out = tmp_path / "mixed_versions.csv"
    report(runs["seed0"], old, "--format", "csv", "--out", out)
    row = averaged_row(pd.read_csv(out))
    assert row["method"] == "pfedmma" and row["seeds"] == 2


def test_each_row_names_the_recipe_it_trained_with(runs):
    # write_config sets lr 0.01 and batch 8; pFedMMA's recipe adds SGD and 2 local epochs
    assert "sgd lr 0.01 bs 8 ep 2" in report(runs["seed0"], runs["seed1"])
    from hpcfed.report.runs import read_run
    from hpcfed.report.table import recipe

    run = read_run(runs["seed0"])
    assert recipe(run) == "sgd lr 0.01 bs 8 ep 2"
    run.trained = False  # what a zero-shot run reads: no client ever had a training loss
    assert recipe(run) == "no training"

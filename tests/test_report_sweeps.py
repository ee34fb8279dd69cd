"""`hpcfed report --plots` on runs that sweep the dropout probability or the privacy spent: accuracy-vs-dropout
and accuracy-vs-epsilon, drawn only when the runs differ there. The run files are written directly (RunWriter),
with known accuracies; no training."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import yaml
from click.testing import CliRunner

from hpcfed.cli import main
from hpcfed.config import Config
from hpcfed.report.runs import experiment_labels, experiments, read_run, read_runs
from hpcfed.report.sweeps import SWEEPS, accuracy_vs, swept
from hpcfed.report.table import _cell, build_table, caption, shown
from hpcfed.results import CLIENT_METRICS, PHASES, RunWriter, create_split_file, open_run
from hpcfed.split import ClientSplit, Splits

CLIENTS, ROUNDS = 4, 3
SPREAD = np.array([-0.04, 0.04, -0.02, 0.02])  # around the run's mean client accuracy


def synthetic_run(path, seed: int, accuracy: float, dropout: float = 0.0, epsilon: list[float] | None = None):
    """A finished run file whose clients reach `accuracy` on average in the last round (also the selected one);
    `epsilon` per round comes with a privacy section that sets it (a noise level named after the last one)."""
    cfg = Config(name="sweep", seed=seed, rounds=ROUNDS, clients=CLIENTS)
    cfg.dropout.probability = dropout
    tree = cfg.to_dict()
    if epsilon is not None:
        tree["privacy"] = {**tree["privacy"], "enabled": True, "noise_multiplier": 10 / epsilon[-1]}
    config_yaml = yaml.safe_dump(tree, sort_keys=False)
    clients = tuple(ClientSplit(train=np.arange(4 * i, 4 * i + 2), val=np.array([4 * i + 2]),
                                test=np.array([4 * i + 3]), domain=0) for i in range(CLIENTS))
    listing = SimpleNamespace(class_names=["cat", "dog"], domain_names=["photo"], notes={},
                              labels=np.arange(4 * CLIENTS) % 2)
    create_split_file(path, config_yaml=config_yaml, config_hash=cfg.digest(), listing=listing,
                      splits=Splits(clients, "iid", seed, "listing"), split_hash=f"split{seed}", source_digest="x")
    writer = RunWriter.create(path, config_yaml=config_yaml, config_hash=cfg.digest(), env={}, n_clients=CLIENTS,
                              rounds=ROUNDS, n_ranks=2, n_domains=1)
    for r in range(ROUNDS):
        rows = {name: np.full(CLIENTS, 0.5) for name in CLIENT_METRICS}
        rows["test_accuracy"] = rows["val_accuracy"] = (accuracy + SPREAD) * (r + 1) / ROUNDS
        writer.write_round(r, rows, {"mean_test_accuracy": float(rows["test_accuracy"].mean())},
                           {phase: np.ones(2) for phase in PHASES},
                           {"up": np.full(CLIENTS, 100), "down": np.full(CLIENTS, 100)},
                           {"epsilon": epsilon[r]} if epsilon else {})
    for which in ("selected", "last"):
        writer.write_final(which, ROUNDS - 1, rows, np.zeros(CLIENTS, dtype=int), 1)
    writer.write_selection("best validation accuracy")
    writer.close("finished")
    return path


def plots(paths, directory, *extra) -> set[str]:
    result = CliRunner().invoke(main, ["report", *map(str, paths), "--plots", str(directory), *extra])
    assert result.exit_code == 0, result.output
    return {p.name for p in directory.iterdir()}


def local_accuracy(paths) -> np.ndarray:
    """Each run's client mean of Local accuracy at the selected round, in %, straight from the arrays."""
    out = []
    for path in paths:
        with open_run(path) as f:
            out.append(100 * f["final/selected/test_accuracy"][:].mean())
    return np.array(out)


@pytest.fixture(scope="module")
def dropout_runs(tmp_path_factory):
    folder = tmp_path_factory.mktemp("dropout_sweep")
    return {(p, seed): synthetic_run(folder / f"p{p}_s{seed}.h5", seed, accuracy, dropout=p)
            for p, accuracies in ((0.0, (0.80, 0.84)), (0.5, (0.60, 0.70))) for seed, accuracy in enumerate(accuracies)}


def test_runs_that_differ_in_dropout_get_an_accuracy_vs_dropout_figure(dropout_runs, tmp_path):
    import matplotlib.image

    written = plots(dropout_runs.values(), tmp_path / "plots")
    assert "accuracy_vs_dropout.png" in written and "accuracy_vs_epsilon.png" not in written
    image = matplotlib.image.imread(tmp_path / "plots" / "accuracy_vs_dropout.png")
    assert image.shape[0] > 100 and image.std() > 0


def test_each_dropout_point_is_the_mean_and_std_over_seeds_of_the_tables_accuracy(dropout_runs):
    groups = experiments(read_runs(list(dropout_runs.values())))
    fig = accuracy_vs(SWEEPS[0], groups)
    (container,) = fig.axes[0].containers
    x, y = (np.asarray(values, dtype=float) for values in container.lines[0].get_data())
    half_bars = [abs(segment[1][1] - segment[0][1]) / 2 for segment in container.lines[2][0].get_segments()]
    expected = {p: local_accuracy([dropout_runs[p, 0], dropout_runs[p, 1]]) for p in (0.0, 0.5)}
    np.testing.assert_allclose(x, [0.0, 0.5])
    np.testing.assert_allclose(y, [expected[0.0].mean(), expected[0.5].mean()])
    np.testing.assert_allclose(half_bars, [expected[0.0].std(ddof=1), expected[0.5].std(ddof=1)])
    assert fig.axes[0].get_legend().get_texts()[0].get_text() == "pfedmma"  # one line: nothing else differs


def test_runs_alike_in_dropout_and_privacy_get_neither_sweep_figure(dropout_runs):
    assert swept(experiments(read_runs([dropout_runs[0.5, 0], dropout_runs[0.5, 1]]))) == []
    assert [s.name for s in swept(experiments(read_runs(list(dropout_runs.values()))))] == ["accuracy_vs_dropout"]


def test_the_privacy_spent_is_the_last_finite_epsilon_of_the_run(tmp_path):
    path = synthetic_run(tmp_path / "dp.h5", 0, 0.7, epsilon=[0.5, 1.5, np.nan])
    assert read_run(path).epsilon == 1.5
    with h5py.File(path, "r+") as f:  # a run file made before /update existed
        del f["update"]
    assert read_run(path).epsilon == np.inf
    assert read_run(synthetic_run(tmp_path / "plain.h5", 0, 0.7)).epsilon == np.inf


def test_runs_that_differ_in_epsilon_get_an_accuracy_vs_epsilon_figure(tmp_path):
    paths = [synthetic_run(tmp_path / f"eps{eps}_s{seed}.h5", seed, 0.5 + 0.03 * eps + 0.01 * seed,
                           epsilon=[eps / 3, eps / 2, eps]) for eps in (2.0, 8.0) for seed in (0, 1)]
    paths += [synthetic_run(tmp_path / f"plain_s{seed}.h5", seed, 0.9) for seed in (0, 1)]
    groups = experiments(read_runs(paths, "last"))
    assert [s.name for s in swept(groups)] == ["accuracy_vs_epsilon"]
    fig = accuracy_vs(SWEEPS[1], groups, "last")
    ax = fig.axes[0]
    (container,) = ax.containers
    x, y = (np.asarray(values, dtype=float) for values in container.lines[0].get_data())
    np.testing.assert_allclose(x, [2.0, 8.0])
    np.testing.assert_allclose(y, [local_accuracy(paths[0:2]).mean(), local_accuracy(paths[2:4]).mean()])
    # The runs without privacy: a horizontal line at their accuracy, in the line's colour, named so.
    (no_privacy,) = [line for line in ax.get_lines() if line.get_linestyle() == "--"]
    np.testing.assert_allclose(no_privacy.get_ydata(), local_accuracy(paths[4:]).mean())
    assert "no privacy" in no_privacy.get_label()
    fig.canvas.draw()
    low, high = ax.get_xlim()
    shown = [t.get_text() for t in ax.xaxis.get_ticklabels() if t.get_text() and low <= t.get_position()[0] <= high]
    assert {"2", "5"} <= set(shown), shown  # within one decade, still labelled


def test_the_table_shows_epsilon_only_when_a_run_used_privacy(tmp_path):
    plain_file = synthetic_run(tmp_path / "plain.h5", 0, 0.7)
    plain = read_runs([plain_file])
    assert "epsilon" not in shown(build_table(plain)) and "epsilon" not in caption(plain, "selected")
    both = read_runs([plain_file, synthetic_run(tmp_path / "dp.h5", 0, 0.7, epsilon=[0.5, 1.5, 2.5])])
    table = build_table(both)
    assert "epsilon" in shown(table) and "epsilon:" in caption(both, "selected")
    assert sorted(_cell(row, "epsilon") for _, row in table.iterrows()) == ["2.5", "inf"]


def test_a_run_without_privacy_is_not_labelled_with_the_noise_it_never_added(tmp_path):
    runs = read_runs([synthetic_run(tmp_path / "plain.h5", 0, 0.7),
                      synthetic_run(tmp_path / "dp.h5", 0, 0.7, epsilon=[0.5, 1.5, 2.5])])
    labels = sorted(experiment_labels(experiments(runs)).values())
    assert labels == ["pfedmma (privacy.enabled=False)",
                      "pfedmma (privacy.enabled=True, privacy.noise_multiplier=4.0)"], labels

"""The figures of `hpcfed report --plots DIR`: one PNG per question, every averaged experiment in each."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from matplotlib.ticker import EngFormatter

from hpcfed.report import frames
from hpcfed.report.plots import _pyplot, plot_label_distribution
from hpcfed.report.runs import RunInfo, experiment_labels, experiments
from hpcfed.results import open_run

PHASE_COLOURS = {"train": "tab:blue", "aggregate": "tab:orange", "evaluate": "tab:green", "io": "tab:gray"}


def _style(i: int) -> dict:
    """Colour and marker of the i-th method: tab20 keeps a dozen methods apart (the default cycle repeats at 10)."""
    return {"color": _pyplot().get_cmap("tab20")(i % 20), "marker": "osD^v<>ph*"[i % 10]}


def _accuracy_per_round(run: RunInfo) -> pd.Series:
    """Mean test accuracy over the evaluated clients, in %, indexed by round (from 1)."""
    metrics = frames.client_metrics(run.path)
    return 100 * metrics[metrics["metric"] == "test_accuracy"].groupby("round")["value"].mean()


def _save(fig, path: Path) -> Path:
    fig.savefig(path, dpi=120)
    _pyplot().close(fig)
    return path


def _panels(datasets: list[str], width: float = 5.5, height: float = 4.0):
    fig, axes = _pyplot().subplots(1, len(datasets), figsize=(width * len(datasets), height), squeeze=False,
                                   layout="constrained")
    return fig, dict(zip(datasets, axes[0], strict=True))


def accuracy_vs_round(groups: dict, labels: dict):
    fig, axes = _panels(sorted({key[0] for key in groups}))
    for i, (key, members) in enumerate(groups.items()):
        curves = pd.concat([_accuracy_per_round(run) for run in members], axis=1)
        mean = curves.mean(axis=1)
        line, = axes[key[0]].plot(mean.index, mean, label=f"{labels[key]} (n={len(members)})", **_style(i))
        if len(members) > 1:
            axes[key[0]].fill_between(mean.index, curves.min(axis=1), curves.max(axis=1), alpha=0.2,
                                      color=line.get_color())
    for dataset, ax in axes.items():
        ax.set(title=f"{dataset}\ntest accuracy per round", xlabel="round", ylabel="mean client accuracy (%)")
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.grid(alpha=0.3)
        ax.legend(title="mean over seeds, band min-max", fontsize=8, title_fontsize=8)
    return fig


def client_accuracy(groups: dict, labels: dict, which: str = "selected"):
    fig, axes = _panels(sorted({key[0] for key in groups}))
    per_dataset: dict[str, list] = {}
    for key, members in groups.items():
        finals = pd.concat([frames.final_clients(run.path, which) for run in members])
        per_dataset.setdefault(key[0], []).append(
            (labels[key], 100 * finals[finals["metric"] == "test_accuracy"]["value"].to_numpy()))
    for dataset, ax in axes.items():
        names, values = zip(*per_dataset[dataset], strict=True)
        ax.boxplot(values, showmeans=True, showfliers=False)  # the points show every client
        for i, v in enumerate(values, start=1):
            ax.scatter(i + np.random.default_rng(i).uniform(-0.12, 0.12, len(v)), v, s=12, alpha=0.6, color="k")
        ax.set_xticks(range(1, len(names) + 1), names, rotation=30, ha="right")
        at = "round selected on validation accuracy" if which == "selected" else "last evaluated round"
        ax.set(title=f"{dataset}\nper-client accuracy at the\n{at}", ylabel="client test accuracy (%)",
               xlabel="method (clients of all seeds; triangle = mean)")
        ax.grid(axis="y", alpha=0.3)
    return fig


def bytes_axis(ax) -> None:
    """Label the x axis, in bytes, as 0 B, 500 kB, 2 MB. Log-like only when the data span two decades: a log
    axis within one decade has no major tick, hence no label at all. symlog, as local-only methods send 0 B;
    its linear part ends a power of ten below the smallest amount, one decade's width from 0."""
    smallest, largest = ax.xaxis.get_minpos(), ax.dataLim.xmax  # minpos: the smallest positive value
    if largest >= 100 * smallest:
        ax.set_xscale("symlog", linthresh=10 ** np.floor(np.log10(smallest)))
    else:
        ax.xaxis.get_major_locator().set_params(integer=True, min_n_ticks=1)  # no "-20 mB" around a lone 0 B
    ax.xaxis.set_major_formatter(EngFormatter(unit="B"))


def accuracy_vs_bytes(groups: dict, labels: dict):
    fig, axes = _panels(sorted({key[0] for key in groups}))
    for i, (key, members) in enumerate(groups.items()):
        curves = []
        for run in members:
            sent = frames.communication(run.path).groupby("round")["bytes"].sum().cumsum()
            accuracy = _accuracy_per_round(run)
            curves.append(pd.DataFrame({"bytes": sent.loc[accuracy.index], "accuracy": accuracy}))
        mean = pd.concat(curves).groupby(level=0).mean()
        axes[key[0]].plot(mean["bytes"], mean["accuracy"], label=labels[key], **_style(i))
    for dataset, ax in axes.items():
        bytes_axis(ax)
        ax.set(title=f"{dataset}\naccuracy vs communication", ylabel="mean client accuracy (%)",
               xlabel="communicated so far, up + down, all clients")
        ax.grid(alpha=0.3)
        ax.legend(title="method (mean over seeds)", fontsize=8, title_fontsize=8)
    return fig


def time_per_round(groups: dict, labels: dict):
    plt = _pyplot()
    cols = min(4, len(groups))  # a grid: a dozen methods in one row would be unreadable
    rows = -(-len(groups) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.0 * cols + 1.5, 3.6 * rows), squeeze=False, sharey=True,
                             layout="constrained")
    for ax in axes.flat[len(groups):]:
        ax.set_visible(False)
    for ax, (key, members) in zip(axes.flat, groups.items(), strict=False):
        timing = pd.concat([frames.timing(run.path) for run in members])
        seconds = timing.groupby(["rank", "phase"])["seconds"].mean().unstack("phase")  # mean over rounds, seeds
        bottom = np.zeros(len(seconds))
        for phase in [p for p in PHASE_COLOURS if p in seconds] + [p for p in seconds if p not in PHASE_COLOURS]:
            ax.bar(seconds.index, seconds[phase], bottom=bottom, label=phase, color=PHASE_COLOURS.get(phase))
            bottom += seconds[phase].to_numpy()
        # Bare numbers, as many as fit: "0 (server)" ran into rank 1's label once there were a few ranks.
        ax.xaxis.get_major_locator().set_params(integer=True)
        ax.set(title=f"{labels[key]}\non {key[0]}", xlabel="MPI rank (0 = server)")
        ax.grid(axis="y", alpha=0.3)
    for row in axes:
        row[0].set_ylabel("seconds per round\n(mean over rounds, seeds)")
    # Each stacked segment's base is a sticky edge; a ~0 s phase on top of the tallest bar would cut its margin.
    axes[0][0].use_sticky_edges = False
    axes[0][0].set_ylim(bottom=0)  # shared by every panel
    phases = {}  # one legend entry per phase, whichever panels have it
    for ax in axes.flat:
        handles, names = ax.get_legend_handles_labels()
        phases.update(zip(names, handles, strict=True))
    fig.legend(phases.values(), phases.keys(), title="phase", loc="outside right upper", frameon=False)
    return fig


def label_distributions(runs: list[RunInfo], directory: Path) -> list[Path]:
    """One figure per distinct split among the runs, named after its split hash."""
    written, seen = [], set()
    for run in runs:
        if run.split_hash in seen:
            continue
        seen.add(run.split_hash)
        with open_run(run.path) as f:
            splits = f["splits"]
            counts = {part: splits[f"label_counts/{part}"][:] for part in ("train", "val", "test")}
            domains = list(splits["domain_names"].asstr()[()])
            clients = [f"{i} {domains[d] if d >= 0 else ''}".strip() for i, d in enumerate(splits["client_domain"][:])]
            classes = list(splits["class_names"].asstr()[()])
            title = f"{run.dataset}: split {run.split_hash} ({splits.attrs.get('scheme', '?')}, seed {run.seed})"
        written.append(plot_label_distribution(counts, classes, clients, title,
                                               directory / f"label_distribution_{run.split_hash}.png"))
    return written


def write_figures(runs: list[RunInfo], directory: str | Path, which: str = "selected") -> list[Path]:
    """`which` (selected or last) as for the table, so that client_accuracy and the sweeps (accuracy vs dropout,
    vs ε: only when the runs differ in it) show the table's round."""
    directory = Path(directory)
    directory.mkdir(parents=True, exist_ok=True)
    groups = experiments(runs)
    labels = experiment_labels(groups)
    figures = {"accuracy_vs_round": accuracy_vs_round(groups, labels),
               "client_accuracy": client_accuracy(groups, labels, which),
               "accuracy_vs_bytes": accuracy_vs_bytes(groups, labels),
               "time_per_round": time_per_round(groups, labels)} if groups else {}
    from hpcfed.report.sweeps import accuracy_vs, swept  # it draws with this module's panels and styles

    figures |= {sweep.name: accuracy_vs(sweep, groups, which) for sweep in swept(groups)}
    written = [_save(fig, directory / f"{name}.png") for name, fig in figures.items()]
    return written + label_distributions(runs, directory)

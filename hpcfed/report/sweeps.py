"""Figures of accuracy against a quantity the runs sweep: the client dropout probability, the privacy spent (ε).
`hpcfed report --plots` draws one when the runs given differ in it. Each line is one experiment but for the swept
settings (same method and every other key); each point the table's Local accuracy, mean ± std over seeds."""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np
from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

from hpcfed.report.figures import _panels, _style
from hpcfed.report.runs import RunInfo


@dataclass(frozen=True)
class Sweep:
    name: str  # of the PNG file
    title: str
    x_label: str
    value: Callable[[RunInfo], float]  # the swept quantity of a run
    sets_it: Callable[[str], bool]  # the config keys that set it: runs differing only there share a line
    log: bool = False
    unbounded: str = ""  # legend text for an infinite value (drawn as a horizontal line)


SWEEPS = (
    Sweep("accuracy_vs_dropout", "accuracy vs client dropout", "dropout probability (per client and round)",
          lambda run: float(run.flat_setting.get("dropout.probability", 0.0)),
          lambda key: key == "dropout.probability"),
    # ε follows from the privacy section (noise, clipping, δ), which therefore does not split a line.
    Sweep("accuracy_vs_epsilon", "accuracy vs privacy spent", "privacy spent by the run, ε (log scale)",
          lambda run: run.epsilon, lambda key: key.startswith("privacy."), log=True,
          unbounded="no privacy (ε = ∞)"),
)


def swept(groups: dict[tuple[str, str, str], list[RunInfo]]) -> list[Sweep]:
    """The sweeps whose quantity differs among the averaged runs."""
    runs = [run for members in groups.values() for run in members]
    return [s for s in SWEEPS if len({float(f"{s.value(run):.6g}") for run in runs}) > 1]


def _lines(groups: dict, sweep: Sweep) -> dict[tuple[str, str, str], list[tuple[float, np.ndarray]]]:
    """(dataset, method, the other settings as JSON) -> points (swept value, Local accuracy in % per seed)."""
    lines: dict[tuple[str, str, str], list[tuple[float, np.ndarray]]] = {}
    for (dataset, method, _), members in groups.items():
        others = {k: v for k, v in members[0].flat_setting.items() if not sweep.sets_it(k)}
        x = float(np.mean([sweep.value(run) for run in members]))
        accuracy = np.array([100 * run.summary.get("test_accuracy", math.nan) for run in members])
        lines.setdefault((dataset, method, json.dumps(others, sort_keys=True, default=str)), []).append(
            (x, accuracy))
    return lines


def _labels(keys: list[tuple[str, str, str]]) -> dict[tuple[str, str, str], str]:
    """The method, plus the other settings that tell its lines apart (as experiment_labels names experiments)."""
    labels = {}
    for key in keys:
        siblings = [json.loads(other[2]) for other in keys if other[:2] == key[:2]]
        differing = sorted({k for s in siblings for k in s if any(k not in o or o[k] != s[k] for o in siblings)})
        own = json.loads(key[2])
        labels[key] = f"{key[1]} ({', '.join(f'{k}={own.get(k)}' for k in differing)})" if differing else key[1]
    return labels


def _log_axis(ax) -> None:
    """ε on a log axis labelled 1, 2, 5, 10, ...: a plain log axis within one decade shows no label at all."""
    ax.set_xscale("log")
    ax.xaxis.set_major_locator(LogLocator(subs=(1.0, 2.0, 5.0)))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda value, _: f"{value:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())


def accuracy_vs(sweep: Sweep, groups: dict, which: str = "selected"):
    lines = _lines(groups, sweep)
    labels = _labels(list(lines))
    fig, axes = _panels(sorted({key[0] for key in lines}))
    on_the_axis = set()  # datasets with a finite value to place on the x axis
    for i, (key, points) in enumerate(lines.items()):
        ax, style = axes[key[0]], _style(i)
        points = sorted(points, key=lambda point: point[0])
        mean = [float(np.nanmean(y)) for _, y in points]
        std = [float(np.nanstd(y, ddof=1)) if np.isfinite(y).sum() > 1 else 0.0 for _, y in points]
        finite = [j for j, (x, _) in enumerate(points) if math.isfinite(x)]
        if finite:
            on_the_axis.add(key[0])
            ax.errorbar([points[j][0] for j in finite], [mean[j] for j in finite], yerr=[std[j] for j in finite],
                        capsize=3, label=labels[key], **style)
        for j in sorted(set(range(len(points))) - set(finite)):
            ax.axhline(mean[j], linestyle="--", color=style["color"], label=f"{labels[key]}, {sweep.unbounded}")
    at = "round selected on validation" if which == "selected" else "last evaluated round"
    for dataset, ax in axes.items():
        if sweep.log and dataset in on_the_axis:
            _log_axis(ax)
        ax.set(title=f"{dataset}\n{sweep.title}", xlabel=sweep.x_label,
               ylabel=f"mean client accuracy (%)\nat the {at}")
        ax.grid(alpha=0.3)
        ax.legend(title="mean ± std over seeds", fontsize=8, title_fontsize=8)
    return fig

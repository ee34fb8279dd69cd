"""The per-domain table of leave-one-domain-out runs (partition.holdout_domain): the Local accuracy of each
domain's clients, and every client on the held-out domain; one row per (dataset, method), seeds as mean ± std."""

from __future__ import annotations

import math

import pandas as pd

from hpcfed.report.runs import RunInfo, experiment_labels, experiments
from hpcfed.results import open_run

HELD_OUT = "{} (held out)"  # the held-out domain's column


def held_out_domain(run: RunInfo) -> str | None:
    return run.flat_setting.get("partition.holdout_domain")


def domain_accuracies(run: RunInfo, which: str) -> dict[str, float]:
    """{domain: mean Local accuracy of its clients} for the domains clients hold, then the held-out domain's
    column: the mean over clients of their accuracy on it (in %)."""
    held = held_out_domain(run)
    with open_run(run.path) as f:
        names = list(f["splits/domain_names"].asstr()[()])
        local = f[f"final/{which}/domain_mean/test_accuracy"][:]
        unseen = float(f[f"final/{which}/summary/unseen_domain_accuracy"][()])
    out = {name: 100 * float(local[d]) for d, name in enumerate(names) if name != held}
    out[HELD_OUT.format(held)] = 100 * unseen
    return out


def _cell(values: list[float]) -> str:
    series = pd.Series(values, dtype=float)
    if series.isna().all():
        return "-"
    spread = f" ± {series.std():.1f}" if series.notna().sum() > 1 else ""  # ddof=1 as the main table
    return f"{series.mean():.1f}{spread}"


def domain_table(runs: list[RunInfo], which: str = "selected") -> str:
    """The table as text ("" when no run held a domain out): one block per dataset, since the domains differ."""
    groups = {key: members for key, members in experiments(runs).items() if held_out_domain(members[0])}
    if not groups:
        return ""
    labels = experiment_labels(experiments(runs))
    lines = [("Accuracy per domain in %, mean over clients at the "
              + ("round selected on validation" if which == "selected" else "last evaluated round")
              + "; a domain's column: Local of its clients; '<domain> (held out)': every client on all images of "
              "the domain no client holds; mean ± sample std over seeds.")]
    for dataset in dict.fromkeys(key[0] for key in groups):
        rows = {labels[key]: [domain_accuracies(run, which) for run in members]
                for key, members in groups.items() if key[0] == dataset}
        columns = list(dict.fromkeys(name for per_run in rows.values() for acc in per_run for name in acc))
        # The held-out domains last (runs of one dataset may hold out different domains).
        columns = [c for c in columns if not c.endswith(HELD_OUT.format(""))] + \
                  [c for c in columns if c.endswith(HELD_OUT.format(""))]
        cells = [[label, *(_cell([acc.get(c, math.nan) for acc in per_run]) for c in columns)]
                 for label, per_run in rows.items()]
        widths = [max(len(str(r[i])) for r in [["method", *columns], *cells]) for i in range(len(columns) + 1)]
        lines.append(f"-- dataset {dataset}")
        for row in [["method", *columns], *cells]:
            lines.append("  ".join([row[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(row[1:], widths[1:],
                                                                                           strict=True)]))
    return "\n".join(lines)

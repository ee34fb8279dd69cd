"""`hpcfed report --published NAME`: a paper's published Local/Base/Novel/HM (hpcfed.report.papers) beside the
measured ones of the run files, with the difference, per dataset, and each way the run's protocol differs from
the paper's (dataset, shots, clients, backbone, rounds), read from the config stored in the run file."""

from __future__ import annotations

import math

import pandas as pd

from hpcfed.errors import ReportError
from hpcfed.metrics import ACCURACY_NAMES
from hpcfed.report.papers import NOT_TABULATED, PAPERS, PublishedTable
from hpcfed.report.runs import RunInfo, experiment_labels, experiments

METRICS = tuple(ACCURACY_NAMES.values())  # Local, Base, Novel, HM
SUMMARY_NAME = {column: name for name, column in ACCURACY_NAMES.items()}


def published_tables(name: str) -> tuple[PublishedTable, ...]:
    """The published tables of paper NAME; a ReportError naming the known papers otherwise."""
    if name.lower() in PAPERS:
        return PAPERS[name.lower()]
    known = ", ".join(sorted(PAPERS))
    why = NOT_TABULATED.get(name.lower(), "no published numbers are stored under that name")
    raise ReportError(f"--published {name}: {why}; papers with published numbers: {known}")


def matching_table(tables: tuple[PublishedTable, ...], dataset: str, base_novel: bool) -> PublishedTable | None:
    """The table about this dataset under this protocol; else, for a base-to-novel run on another dataset, the
    paper's base-to-novel average (the difference is then flagged); else None."""
    for table in tables:
        if dataset in table.datasets and table.protocol.base_novel == base_novel:
            return table
    return next((t for t in tables if t.averaged and base_novel and t.protocol.base_novel), None)


def protocol_differences(setting: dict, table: PublishedTable) -> list[str]:
    """Each way the run's stored config differs from the protocol of the published numbers, as 'run vs paper'."""
    p, differences = table.protocol, []
    dataset = setting.get("data.dataset")
    if dataset not in table.datasets:
        differences.append(f"dataset {dataset} is not the paper's")
    shots = setting.get("partition.shots", 0)
    if shots != p.shots:
        differences.append(f"shots {shots or 'all'} vs {p.shots or 'all'}")
    if setting.get("clients") != p.clients:
        differences.append(f"clients {setting.get('clients')} vs {p.clients}")
    backbone = (setting.get("model.name"), setting.get("model.pretrained"))
    if backbone != (p.backbone, p.pretrained):
        differences.append(f"backbone {backbone[0]} ({backbone[1]}) vs {p.backbone} ({p.pretrained})")
    if p.rounds is not None and setting.get("rounds") != p.rounds:
        differences.append(f"rounds {setting.get('rounds')} vs {p.rounds}")
    return differences


def _row(dataset: str, label: str, method: str, table: PublishedTable, measured: dict[str, float], seeds: int,
         differences: list[str]) -> dict:
    """`label`: the method with the settings that tell its experiments apart; `method`: its registered name."""
    row = {"dataset": dataset, "method": label, "method name": method, "published in": table.table, "seeds": seeds}
    published = table.numbers[method]
    for metric in METRICS:
        paper = published.get(metric)
        row[f"{metric} paper"] = math.nan if paper is None else paper
        row[f"{metric} run"] = measured[metric]
        row[f"{metric} diff"] = measured[metric] - row[f"{metric} paper"]
    row["protocol differs"] = "; ".join(differences) or "no"
    return row


def _mean_rows(rows: list[dict], tables: tuple[PublishedTable, ...]) -> list[dict]:
    """For a table that only has the mean over its datasets: the mean of the measured rows of those datasets
    (each dataset's HM averaged, as the papers do), where a method was run on more than one of them."""
    means = []
    for table in (t for t in tables if t.averaged):
        by_label: dict[str, list[dict]] = {}
        for row in rows:
            if row["published in"] == table.table and row["dataset name"] in table.datasets:
                by_label.setdefault(row["method"], []).append(row)
        for label, members in by_label.items():
            names = sorted({r["dataset name"] for r in members})
            if len(names) < 2:
                continue
            measured = {m: float(pd.Series([r[f"{m} run"] for r in members]).mean()) for m in METRICS}
            differences = sorted({d for r in members for d in r["protocol differs"].split("; ") if d != "no"})
            if len(names) < len(table.datasets):
                differences.insert(0, f"{len(names)} of the paper's {len(table.datasets)} datasets")
            mean = _row(f"mean of {', '.join(names)}", label, members[0]["method name"], table, measured,
                        min(r["seeds"] for r in members), differences)
            means.append({**mean, "dataset name": None})
    return means


def build_comparison(runs: list[RunInfo], name: str) -> tuple[pd.DataFrame, list[str]]:
    """One row per (dataset, method setting) that the paper has a number for: published, measured (mean over
    seeds, in %) and their difference per metric, and the protocol differences; plus notes on what was not
    compared and why."""
    tables = published_tables(name)
    groups = experiments(runs)
    labels = experiment_labels(groups)
    rows, notes = [], []
    for key, members in groups.items():
        setting = members[0].flat_setting
        table = matching_table(tables, setting.get("data.dataset"), bool(setting.get("partition.base_novel")))
        method = key[1]  # the method's name (with its adapter family for local and fedavg)
        if table is None:
            notes.append(f"{labels[key]} on {key[0]}: the paper has no table for this dataset and protocol")
            continue
        if method not in table.numbers:
            notes.append(f"{labels[key]} on {key[0]}: not in {table.table}")
            continue
        measured = {m: float(pd.Series([100 * r.summary.get(SUMMARY_NAME[m], math.nan) for r in members]).mean())
                    for m in METRICS}
        row = _row(key[0], labels[key], method, table, measured, len(members), protocol_differences(setting, table))
        rows.append({**row, "dataset name": setting.get("data.dataset")})
    rows += _mean_rows(rows, tables)
    notes += [f"{r.path}: left out ({r.problem})" for r in runs if r.problem]
    columns = ["dataset", "method", "published in", "seeds", *(f"{m} {k}" for m in METRICS
                                                              for k in ("paper", "run", "diff")), "protocol differs"]
    return pd.DataFrame(rows, columns=columns), notes


def _number(value: float, fmt: str = ".1f") -> str:
    return "-" if math.isnan(value) else f"{value:{fmt}}"


def format_comparison(table: pd.DataFrame, notes: list[str], name: str, which: str) -> str:
    tables = published_tables(name)
    at = "the round selected on validation" if which == "selected" else "the last evaluated round"
    lines = [f"Published beside measured: {tables[0].paper}; accuracy in %, run = mean over seeds at {at}, "
             "diff = run - paper"]
    if table.empty:
        return "\n".join([*lines, "(no run matches a published number)", *(f"Not compared: {n}" for n in notes)])
    width = max([len("method")] + [len(m) for m in table["method"]])
    lines.append((" " * (width + 10) + "".join(f"{m:<22}" for m in METRICS)).rstrip())  # over each "paper"
    lines.append(f"{'method':<{width}}  seeds" + "   paper    run   diff" * len(METRICS)
                 + "  protocol differs (run vs paper)")
    for (dataset, published_in), rows in table.groupby(["dataset", "published in"], sort=False):
        lines.append(f"-- dataset {dataset} vs {published_in}")
        for _, row in rows.iterrows():
            # The paper's numbers as printed there (2 decimals), the run's as `hpcfed report` prints them.
            cells = "".join(f"  {_number(row[f'{m} paper'], '.2f'):>6}  {_number(row[f'{m} run']):>5}  "
                            f"{_number(row[f'{m} diff'], '+.1f'):>5}" for m in METRICS)
            lines.append(f"{row['method']:<{width}}  {row['seeds']:>5}{cells}  {row['protocol differs']}")
    used = [t for t in tables if t.table in set(table["published in"])]
    lines += [f"{t.table}: {t.source}." for t in used]
    lines += [f"Not compared: {note}" for note in notes]
    return "\n".join(lines)

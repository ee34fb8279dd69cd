"""The results table of a set of run files: one row per (dataset, method), seeds as mean ± std."""

from __future__ import annotations

import math

import pandas as pd

from hpcfed.metrics import ACCURACY_NAMES
from hpcfed.report.runs import RunInfo, experiment_labels, experiments

# Column name in the table: summary name in the run file (the names `hpcfed status` prints too).
ACCURACIES = {column: name for name, column in ACCURACY_NAMES.items()}
FORMATS = ("text", "md", "csv", "latex")
# Shown when a run has them: clients held out of training scored as new clients (partition.holdout_clients), and
# the trained clients on the domain no client holds (partition.holdout_domain).
UNSEEN = {"Unseen fresh": "unseen_fresh_accuracy", "Unseen adapted": "unseen_adapted_accuracy",
          "Unseen domain": "unseen_domain_accuracy"}


def recipe(run: RunInfo) -> str:
    """How the run trained, in a few words (each method runs at its own reference recipe)."""
    t = {k.removeprefix("train."): v for k, v in run.flat_setting.items() if k.startswith("train.")}
    if not t or not run.trained:
        return "no training"
    return f"{t.get('optimizer')} lr {t.get('lr'):g} bs {t.get('batch_size')} ep {t.get('local_epochs')}"


def _row(dataset: str, method: str, runs: list[RunInfo], status: str) -> dict:
    by_seed = sorted(runs, key=lambda r: r.seed)
    row = {"dataset": dataset, "method": method, "seeds": len(runs),
           "seed list": " ".join(str(r.seed) for r in by_seed)}
    for column, name in {**ACCURACIES, **UNSEEN}.items():
        values = pd.Series([100 * r.summary.get(name, math.nan) for r in runs], dtype=float)
        row[column] = values.mean() if values.notna().any() else math.nan
        row[f"{column} std"] = values.std() if values.notna().sum() > 1 else math.nan  # ddof=1: sample std
    row["up B/round"] = float(pd.Series([r.up_per_round for r in runs]).mean())
    row["down B/round"] = float(pd.Series([r.down_per_round for r in runs]).mean())
    row["epsilon"] = max(r.epsilon for r in runs)  # the seeds of one setting spend the same
    # One per seed, in the order of the seed list: a sorted set ("1 3") read as if seed 0 stopped at round 1.
    row["round"] = " ".join(str(r.final_round + 1) if r.final_round >= 0 else "-" for r in by_seed)
    row["recipe"] = " / ".join(sorted({recipe(r) for r in runs}))
    row["status"] = status
    return row


def build_table(runs: list[RunInfo], which: str = "selected") -> pd.DataFrame:
    """Averaged experiments first, then every run left out of the means, each with the reason."""
    groups = experiments(runs)
    labels = experiment_labels(groups)
    rows = [_row(key[0], labels[key], members, "finished") for key, members in groups.items()]
    rows += [_row(r.dataset, r.method, [r], f"NOT AVERAGED: {r.problem} ({r.path})") for r in runs if r.problem]
    table = pd.DataFrame(rows)
    table["accuracy at"] = "round selected on validation" if which == "selected" else "last evaluated round"
    return table


def caption(runs: list[RunInfo], which: str) -> str:
    text = ("Accuracy in %, mean over clients at the round selected on validation accuracy"
            if which == "selected" else "Accuracy in %, mean over clients at the last evaluated round")
    text += (" (column round: that round of each seed in the seed list, counted from 1); "
             "Local = each client on its own test split; mean ± sample std over seeds; "
             "HM = 3-way harmonic mean of the mean Local, Base, Novel; bytes summed over clients, mean per round.")
    def reported(name: str) -> bool:
        return any(math.isfinite(r.summary.get(name, math.nan)) for r in runs)

    if reported("unseen_fresh_accuracy"):
        text += ("\nUnseen clients: Unseen fresh = clients held out of training (partition.holdout_clients) with the "
                 "global shared state and a new client's personal parameters; Unseen adapted = the same after "
                 "train.holdout_steps local steps on their own train split (a copy, discarded after scoring).")
    if reported("unseen_domain_accuracy"):
        text += ("\nUnseen domain = the trained clients on every image of partition.holdout_domain, which no client "
                 "holds (per domain below).")
    if any(math.isfinite(r.epsilon) for r in runs):
        text += ("\nepsilon: privacy spent by all rounds at the run's privacy.delta (client-level central DP of "
                 "the shared update, RDP accountant, fixed-size sampling accounted as Poisson; the choice of the "
                 "round on validation accuracy is not accounted).")
    left_out = [r for r in runs if r.problem]
    if left_out:
        text += f"\nWARNING: {len(left_out)} run(s) left out of the means, listed as NOT AVERAGED."
    return text


def _cell(row: pd.Series, column: str, plus_minus: str = "±") -> str:
    if column in ACCURACIES or column in UNSEEN:
        if math.isnan(row[column]):
            return "-"
        spread = "" if math.isnan(row[f"{column} std"]) else f" {plus_minus} {row[f'{column} std']:.1f}"
        return f"{row[column]:.1f}{spread}"
    if column.endswith("B/round"):
        return "-" if math.isnan(row[column]) else f"{row[column]:,.0f}"
    if column == "epsilon":
        return f"{row[column]:.3g}" if math.isfinite(row[column]) else "inf"  # no privacy: no bound
    return str(row[column])


# The seed list rather than the count: the round column has one number per seed, in that order.
SHOWN = ("method", *ACCURACIES, "seed list", "up B/round", "down B/round", "round", "recipe", "status")


def shown(table: pd.DataFrame) -> tuple[str, ...]:
    """SHOWN, with the UNSEEN accuracies after HM when any run has them, and the privacy spent after the bytes
    when any run used privacy."""
    after_hm = len(ACCURACIES) + 1
    unseen = tuple(c for c in UNSEEN if c in table and table[c].notna().any())
    columns = (*SHOWN[:after_hm], *unseen, *SHOWN[after_hm:])
    if "epsilon" not in table or not table["epsilon"].astype(float).map(math.isfinite).any():
        return columns
    at = columns.index("down B/round") + 1
    return (*columns[:at], "epsilon", *columns[at:])


def _aligned(cells: list[str], widths: list[int]) -> str:
    """Method left-aligned, numbers right-aligned, the status (last) as it is."""
    padded = [cells[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(cells[1:-1], widths[1:], strict=True)]
    return "  ".join([*padded, cells[-1]])


def format_text(table: pd.DataFrame, text_caption: str) -> str:
    columns = shown(table)
    cells = [[_cell(row, c) for c in columns] for _, row in table.iterrows()]
    widths = [max([len(c)] + [len(r[i]) for r in cells]) for i, c in enumerate(columns[:-1])]
    lines = [_aligned(list(columns), widths)]
    for dataset in table["dataset"].unique():
        lines.append(f"-- dataset {dataset}")
        lines += [_aligned(row_cells, widths) for row_cells, in_dataset in
                  zip(cells, table["dataset"] == dataset, strict=True) if in_dataset]
    return "\n".join(lines) + "\n" + text_caption


def format_markdown(table: pd.DataFrame, text_caption: str) -> str:
    columns = ("dataset", *shown(table))
    lines = ["| " + " | ".join(columns) + " |", "|" + "|".join("---" for _ in columns) + "|"]
    lines += ["| " + " | ".join(_cell(row, c).replace("|", "/") for c in columns) + " |" for _, row in table.iterrows()]
    return "\n".join(lines) + "\n\n" + text_caption.replace("\n", "\n\n") + "\n"


def _latex_escape(text: str) -> str:
    for char in "\\&%$#_{}":
        text = text.replace(char, "\\" + char)
    return text


def format_latex(table: pd.DataFrame, text_caption: str) -> str:
    columns = ("dataset", *shown(table))
    latex_caption = _latex_escape(text_caption).replace("±", "$\\pm$").replace("\n", " ")
    lines = ["\\begin{table}", "\\centering", "\\caption{" + latex_caption + "}",
             "\\begin{tabular}{ll" + "r" * (len(columns) - 3) + "l}", "\\hline",
             " & ".join(_latex_escape(c) for c in columns) + " \\\\", "\\hline"]
    lines += [" & ".join(_latex_escape(_cell(row, c, "PLUSMINUS")).replace("PLUSMINUS", "$\\pm$") for c in columns)
              + " \\\\" for _, row in table.iterrows()]
    return "\n".join([*lines, "\\hline", "\\end{tabular}", "\\end{table}"]) + "\n"


def format_table(table: pd.DataFrame, text_caption: str, fmt: str = "text") -> str:
    if fmt == "csv":  # numbers unrounded, one column per mean and std; "accuracy at" stands for the caption
        return table.to_csv(index=False)
    return {"text": format_text, "md": format_markdown, "latex": format_latex}[fmt](table, text_caption)

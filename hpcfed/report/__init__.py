"""Report: tables and figures from run files (offline, no MPI), and tidy pandas frames for your own analysis."""

from __future__ import annotations

from pathlib import Path


def tidy(path: str | Path):
    """Per-client metrics of a run file as a pandas DataFrame, one row per round x client x metric
    (columns run, dataset, method, seed, round, client, domain, metric, value; domain "mixed" for a client
    drawing on several domains; values as stored, so accuracies are fractions where `hpcfed report` prints
    percent); more in hpcfed.report.frames."""
    from hpcfed.report.frames import client_metrics  # pandas only when asked for

    return client_metrics(path)

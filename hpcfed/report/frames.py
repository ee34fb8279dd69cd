"""Tidy pandas DataFrames of a run file: one row per observation, so runs concatenate and group easily.

Rounds are counted from 1, as `hpcfed train` prints them; only the valid rows (/progress/rounds_done) are read.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from hpcfed.report.runs import dataset_label, method_label, read_config
from hpcfed.results import open_run


def _run_columns(f, path: Path) -> dict:
    config = read_config(f)
    return {"run": path.stem, "dataset": dataset_label(config), "method": method_label(config),
            "seed": int(config.get("seed", -1))}


def client_domains(f) -> np.ndarray:
    """Each client's domain name from /splits; "mixed" for a client drawing on several domains (domain -1), as
    `hpcfed split` prints it."""
    names = list(f["splits/domain_names"].asstr()[()])
    return np.array([names[d] if d >= 0 else "mixed" for d in f["splits/client_domain"][:]], dtype=object)


def _with_domain(frame: pd.DataFrame, domains: np.ndarray) -> pd.DataFrame:
    """The client's domain as a column right after `client`, to group clients by domain."""
    frame.insert(frame.columns.get_loc("client") + 1, "domain", domains[frame["client"].to_numpy(dtype=int)])
    return frame


def _long(arrays: dict[str, np.ndarray], second: str, key: str, value: str) -> pd.DataFrame:
    """{key: [round, second]} arrays as rows (round, second, key, value)."""
    parts = []
    for name, array in arrays.items():
        rounds, columns = np.meshgrid(np.arange(1, array.shape[0] + 1), np.arange(array.shape[1]), indexing="ij")
        parts.append(pd.DataFrame({"round": rounds.ravel(), second: columns.ravel(), key: name,
                                   value: array.ravel()}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["round", second, key, value])


def _with_run(frame: pd.DataFrame, run: dict) -> pd.DataFrame:
    return frame.assign(**run)[[*run, *frame.columns]]


def _group_frame(path: str | Path, group: str, column: str, key: str, value: str, dropna: bool) -> pd.DataFrame:
    """The [round, column] arrays of one HDF5 group (rounds done only) as a long frame with the run's columns
    (and the domain when the column is the client)."""
    path = Path(path)
    with open_run(path) as f:
        done = int(f["progress/rounds_done"][()]) if "progress" in f else 0
        arrays = {name: f[f"{group}/{name}"][:done] for name in f[group]} if done else {}
        frame = _long(arrays, column, key, value)
        if column == "client":
            frame = _with_domain(frame, client_domains(f))
        run = _run_columns(f, path)
    if dropna:
        frame = frame.dropna(subset=[value]).reset_index(drop=True)
    return _with_run(frame, run)


def client_metrics(path: str | Path, dropna: bool = True) -> pd.DataFrame:
    """Columns run, dataset, method, seed, round, client, domain, metric, value; dropna leaves out the
    (round, client) pairs that were not evaluated or did not take part (NaN in the file)."""
    return _group_frame(path, "metrics/client", "client", "metric", "value", dropna)


def timing(path: str | Path) -> pd.DataFrame:
    """Columns run, dataset, method, seed, round, rank, phase, seconds (rank 0 is the server)."""
    return _group_frame(path, "timing", "rank", "phase", "seconds", dropna=True)


def communication(path: str | Path) -> pd.DataFrame:
    """Columns run, dataset, method, seed, round, client, domain, direction (up, down), bytes."""
    path = Path(path)
    with open_run(path) as f:
        done = int(f["progress/rounds_done"][()]) if "progress" in f else 0
        arrays = {direction: f[f"comm/bytes_{direction}"][:done] for direction in ("up", "down")} if done else {}
        frame = _with_domain(_long(arrays, "client", "direction", "bytes"), client_domains(f))
        run = _run_columns(f, path)
    return _with_run(frame, run)


def final_clients(path: str | Path, which: str = "selected") -> pd.DataFrame:
    """Columns run, dataset, method, seed, round, client, domain, metric, value at /final/{which} (selected or
    last)."""
    path = Path(path)
    with open_run(path) as f:
        group = f[f"final/{which}"]
        arrays = {name: group[name][:][None, :] for name in f["metrics/client"] if name in group}
        frame = _with_domain(_long(arrays, "client", "metric", "value"), client_domains(f))
        frame["round"] = int(f[f"final/{which}_round"][()]) + 1
        run = _run_columns(f, path)
    return _with_run(frame.dropna(subset=["value"]).reset_index(drop=True), run)

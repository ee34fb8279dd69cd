"""What `hpcfed report` knows about each run file, and which runs may be averaged together."""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import yaml

from hpcfed.errors import ReportError, RunFileDamaged
from hpcfed.results import open_run

# Keys that differ between the seeds of one experiment without changing what is measured.
NOT_THE_SETTING = ("seed", "output", "name", "runtime")


@dataclass
class RunInfo:
    path: Path
    dataset: str
    method: str
    seed: int
    setting: str  # hash of the config without NOT_THE_SETTING: equal for the seeds of one experiment
    flat_setting: dict  # that config as {dotted.key: value}, to say how two settings differ
    status: str
    split_hash: str
    rounds_done: int
    final_round: int  # 0-based row of /final/{which}; -1 when there is none
    summary: dict[str, float] = field(default_factory=dict)  # /final/{which}/summary, mean over clients
    up_per_round: float = math.nan  # bytes summed over clients, mean over the valid rounds
    down_per_round: float = math.nan
    trained: bool = True  # False when no client ever had a training loss (zero-shot): no recipe to show
    epsilon: float = math.inf  # privacy spent by the run (the last finite /update/epsilon); inf: no privacy
    problem: str = ""  # why the run is left out of the means; "" when it is averaged

    @property
    def label(self) -> str:
        return f"{self.method} seed {self.seed}"


def dataset_label(config: dict) -> str:
    data = config.get("data", {})
    domains = data.get("domains")
    label = f"{data.get('dataset', '?')}[{','.join(map(str, domains))}]" if domains else str(data.get("dataset", "?"))
    # Leave-one-domain-out: each held-out domain is its own benchmark, on splits of its own.
    held_out = (config.get("partition") or {}).get("holdout_domain")
    return f"{label} ({held_out} held out)" if held_out else label


def method_label(config: dict) -> str:
    method = config.get("method", {})
    family = (method.get("options") or {}).get("family")
    return f"{method.get('name', '?')}[{family}]" if family else str(method.get("name", "?"))


def setting_hash(config: dict) -> str:
    kept = {k: v for k, v in config.items() if k not in NOT_THE_SETTING}
    return hashlib.sha256(json.dumps(kept, sort_keys=True, default=str).encode()).hexdigest()[:12]


def flatten(config: dict, prefix: str = "") -> dict:
    flat = {}
    for key, value in config.items():
        if prefix or key not in NOT_THE_SETTING:
            flat.update(flatten(value, f"{prefix}{key}.") if isinstance(value, dict) else {f"{prefix}{key}": value})
    return flat


def read_config(f) -> dict:
    """The run's resolved config. Keys added to hpcfed after the run was made take their defaults (new keys
    default to the old behaviour), so runs of one experiment made by two versions still group together."""
    from hpcfed.config.resolve import merge_trees
    from hpcfed.config.schema import Config

    return merge_trees(Config().to_dict(), yaml.safe_load(f["config"].asstr()[()]) or {})


def read_run(path: str | Path, which: str = "selected") -> RunInfo:
    path = Path(path)
    if not path.is_file():
        raise ReportError(f"run file {path} not found; pass run files (or patterns such as 'runs/*.h5') written "
                          "by 'hpcfed train'")
    try:
        f = open_run(path)
    except RunFileDamaged as e:
        raise ReportError(str(e)) from e
    except OSError as e:
        raise ReportError(f"cannot read run file {path}: {e}; pass HDF5 run files written by 'hpcfed train'") from e
    with f:
        if "config" not in f or "status" not in f or "splits" not in f:
            raise ReportError(f"cannot read run file {path}: an HDF5 file without /config, /status or /splits; "
                              "pass run files written by 'hpcfed train'")
        config = read_config(f)
        run = RunInfo(path=path, dataset=dataset_label(config), method=method_label(config),
                      seed=int(config.get("seed", -1)), setting=setting_hash(config), flat_setting=flatten(config),
                      status=f["status"].asstr()[()].strip(), split_hash=str(f["splits"].attrs["split_hash"]),
                      rounds_done=int(f["progress/rounds_done"][()]) if "progress" in f else 0, final_round=-1)
        if "final" in f and int(f[f"final/{which}_round"][()]) >= 0:
            run.final_round = int(f[f"final/{which}_round"][()])
            summary = f[f"final/{which}/summary"]
            run.summary = {name: float(summary[name][()]) for name in summary}
        if run.rounds_done:
            run.up_per_round = float(np.mean(f["comm/bytes_up"][:run.rounds_done].sum(axis=1)))
            run.down_per_round = float(np.mean(f["comm/bytes_down"][:run.rounds_done].sum(axis=1)))
            run.trained = bool(np.isfinite(f["metrics/client/train_loss"][:run.rounds_done]).any())
            spent = f["update/epsilon"][:run.rounds_done] if "update/epsilon" in f else np.empty(0)
            if np.isfinite(spent).any():
                run.epsilon = float(spent[np.isfinite(spent)][-1])
    if run.status != "finished":
        run.problem = f"{run.status}, {run.rounds_done} rounds done"
    return run


def flag_mixed_splits(runs: list[RunInfo]) -> None:
    """Runs of one dataset and seed must share their split (methods compared on the same clients). The split
    most of them use is the reference (on a tie, that of the run given first); the others are flagged."""
    by_seed: dict[tuple[str, int], list[RunInfo]] = {}
    for run in runs:
        if not run.problem:
            by_seed.setdefault((run.dataset, run.seed), []).append(run)
    for same_seed in by_seed.values():
        counts = Counter(run.split_hash for run in same_seed)
        reference = max(counts, key=lambda h: (counts[h], -[r.split_hash for r in same_seed].index(h)))
        for run in same_seed:
            if run.split_hash != reference:
                run.problem = f"split {run.split_hash} differs from {reference} of the other seed-{run.seed} runs"


def flag_repeated_seeds(runs: list[RunInfo]) -> None:
    """The same run given twice (e.g. a copy of its file) would count one seed double."""
    first: dict[tuple, RunInfo] = {}
    for run in runs:
        if not run.problem:
            key = (run.dataset, run.method, run.setting, run.seed)
            if key in first:
                run.problem = f"repeats the config and seed of {first[key].path}"
            first.setdefault(key, run)


def read_runs(paths: list[str | Path], which: str = "selected") -> list[RunInfo]:
    """Every run file, with `problem` set on those that must not be averaged with the others."""
    runs = [read_run(path, which) for path in paths]
    flag_mixed_splits(runs)
    flag_repeated_seeds(runs)
    return runs


def experiments(runs: list[RunInfo]) -> dict[tuple[str, str, str], list[RunInfo]]:
    """The runs that may be averaged, by (dataset, method, setting): same config but for the seed."""
    groups: dict[tuple[str, str, str], list[RunInfo]] = {}
    for run in runs:
        if not run.problem:
            groups.setdefault((run.dataset, run.method, run.setting), []).append(run)
    return groups


def experiment_labels(groups: dict[tuple[str, str, str], list[RunInfo]]) -> dict[tuple[str, str, str], str]:
    """The method name, plus the config keys that tell its settings apart where it was run with several."""
    labels = {}
    for key, members in groups.items():
        siblings = [group[0].flat_setting for other, group in groups.items() if other[:2] == key[:2]]
        differing = sorted({k for flat in siblings for k in flat if any(k not in f or f[k] != flat[k]
                                                                        for f in siblings)})
        own = members[0].flat_setting
        # The options of a section switched off (privacy.enabled false) did nothing: naming them only misleads.
        shown = [k for k in differing if k.endswith(".enabled") or own.get(f"{k.rsplit('.', 1)[0]}.enabled", True)]
        labels[key] = f"{key[1]} ({', '.join(f'{k}={own.get(k)}' for k in shown)})" if shown else key[1]
    return labels

"""`hpcfed status`: how far a run has come, read from its run file while the job writes it (SWMR) or after."""

from __future__ import annotations

import json
import os
import socket
import time
from pathlib import Path

import numpy as np
import yaml

from hpcfed.errors import RunFileDamaged, StatusError
from hpcfed.metrics import ACCURACY_NAMES, format_accuracies, format_duration, harmonic_mean
from hpcfed.results import open_run

STATE_MEANING = {
    "split": "splits only, not trained yet",
    "running": "the job is writing this file",
    "finished": "all rounds done",
    "failed": "the job stopped on an error",
    "interrupted": "checkpointed on a signal; will resume",
}




def _open(path: Path):
    if not path.is_file():
        raise StatusError(f"run file {path} not found; pass the 'output' path of a config that "
                          "'hpcfed split' or 'hpcfed train' has written")
    try:
        f = open_run(path)
    except RunFileDamaged as e:
        raise StatusError(str(e)) from e
    except OSError as e:
        raise StatusError(f"cannot open {path} as an HDF5 run file ({e}); if its job has only just started, retry "
                          "in a few seconds, else pass a run file written by 'hpcfed split' or 'hpcfed train'") from e
    if "config" not in f or "status" not in f:
        f.close()
        raise StatusError(f"{path} is an HDF5 file but not an hpcfed run file (no /config or /status); pass a run "
                          "file written by 'hpcfed split' or 'hpcfed train'")
    return f


def _latest_metrics(f, done: int) -> tuple[int, dict[str, float], int] | None:
    """(round, client means, clients scored) of the newest evaluated round among the valid rows; NaN marks 'not
    evaluated'."""
    accuracy = f["metrics/client/test_accuracy"][:done]
    evaluated = [r for r in range(done) if np.isfinite(accuracy[r]).any()]
    if not evaluated:
        return None
    r = evaluated[-1]
    means = {}
    for name in ("test_accuracy", "base_accuracy", "novel_accuracy"):
        row = f[f"metrics/client/{name}"][r]
        if np.isfinite(row).any():
            means[name] = float(np.nanmean(row))
    if "base_accuracy" in means and "novel_accuracy" in means:
        # HM of the client-averaged Local, Base and Novel, as /final/*/summary/hm (methods.md §1.7).
        means["hm"] = harmonic_mean(means["test_accuracy"], means["base_accuracy"], means["novel_accuracy"])
    return r, means, int(np.isfinite(accuracy[r]).sum())


def _eval_clients(f) -> int:
    """train.eval_clients of the run (0 in runs made before it existed)."""
    config = yaml.safe_load(f["config"].asstr()[()]) or {}
    return int((config.get("train") or {}).get("eval_clients") or 0)


def _selected_metrics(f) -> tuple[int, dict[str, float]] | None:
    """(round, client means) at the round selected on validation accuracy: written when the run finishes."""
    if "final" not in f or int(f["final/selected_round"][()]) < 0:
        return None
    summary = f["final/selected/summary"]
    means = {name: float(summary[name][()]) for name in ACCURACY_NAMES}
    return int(f["final/selected_round"][()]), {name: v for name, v in means.items() if np.isfinite(v)}


def _accuracy_lines(f, done: int, state: str) -> list[str]:
    """The latest evaluated round while a job runs; once it is finished, also the round selected on validation,
    whose numbers `hpcfed report` shows (the two differ when a later round validated worse). Only once finished:
    a finished run extended with more rounds keeps its old selection until it finishes again."""
    latest = _latest_metrics(f, done)
    selected = _selected_metrics(f) if state == "finished" else None
    if not latest:
        return []
    r, means, clients = latest
    sample = _eval_clients(f)
    # A round that scored a sample (train.eval_clients) is a mean over those clients only.
    sampled = 0 < sample < f["metrics/client/test_accuracy"].shape[1] and clients <= sample
    over = f"mean over the {clients} clients sampled (train.eval_clients)" if sampled else "mean over clients"
    also = "; also selected on validation accuracy" if selected and selected[0] == r else ""
    lines = [f"accuracy round {r + 1} (latest evaluated{also}): {format_accuracies(means)}, {over}"]
    if selected and selected[0] != r:
        lines.append(f"         round {selected[0] + 1} (selected on validation accuracy, as 'hpcfed report' "
                     f"shows): {format_accuracies(selected[1])}")
    return lines


def _failure(f) -> str:
    """The failing rank's traceback from /error and /error_rank ("" and -1, or absent in older files: none)."""
    error = f["error"].asstr(errors="replace")[()].strip() if "error" in f else ""
    rank = int(f["error_rank"][()]) if "error_rank" in f else -1
    if not error:
        return "no error message was recorded; see the job's stderr log"
    indented = "\n".join(f"  {line}" for line in error.splitlines())
    return f"{f'rank {rank}' if rank >= 0 else 'a rank'} failed:\n{indented}"


def newest_checkpoint(path: Path) -> tuple[int, Path] | None:
    """(round, directory) of the newest complete checkpoint in <run>.ckpt/; *.tmp are unfinished writes."""
    found = []
    for directory in path.with_suffix(".ckpt").glob("round-*"):
        if directory.suffix == ".tmp" or not (directory / "manifest.json").is_file():
            continue
        try:
            found.append((int(json.loads((directory / "manifest.json").read_text())["round"]), directory))
        except (ValueError, KeyError, TypeError):
            continue  # a manifest we cannot read does not describe a usable checkpoint
    return max(found, default=None)


def describe_run(path: str | Path, now: float | None = None) -> str:
    """The status report of one run file, as printed by `hpcfed status`."""
    path, now = Path(path), time.time() if now is None else now
    with _open(path) as f:
        config = yaml.safe_load(f["config"].asstr()[()]) or {}
        state = f["status"].asstr()[()].strip()
        dead = _why_dead(f, now - os.stat(path).st_mtime) if state == "running" else None
        meaning = f"STALLED OR KILLED: {dead}" if dead else STATE_MEANING.get(state, "unknown state")
        lines = [f"run      {config.get('name', '?')} (config {f['config'].attrs.get('hash', '?')}), "
                 f"method {config.get('method', {}).get('name', '?')}",
                 f"state    {state}: {meaning}"]
        if state == "failed":
            lines.append(f"error    {_failure(f)}")
        resumes = json.loads(f["status"].attrs.get("resumes", "[]"))
        if resumes:
            starts = ", ".join(f"round {r['round'] + 1} on {r['world_size']} ranks"
                               + (f" of {' '.join(r['nodes'])}" if r.get("nodes") else "") for r in resumes)
            lines.append(f"resumed  {len(resumes)} time(s): {starts}")
        if "progress" in f:
            lines += _progress_lines(f, "stalled" if dead else state)
            lines += _privacy_lines(f, config)
        else:
            lines.append(f"rounds   0 of {config.get('rounds', '?')} (not trained yet)")
    checkpoint = newest_checkpoint(path)
    if checkpoint:
        lines.append(f"checkpoint  after round {checkpoint[0]}: {checkpoint[1]}")
    return "\n".join(lines)


def _privacy_lines(f, config: dict) -> list[str]:
    """The privacy spent so far, when the run used privacy (its /update/epsilon rows are written)."""
    done = int(f["progress/rounds_done"][()])
    if "update/epsilon" not in f or done == 0 or np.isnan(f["update/epsilon"][done - 1]):  # NaN: no privacy
        return []
    delta = (config.get("privacy") or {}).get("delta", "?")
    return [f"privacy  epsilon {f['update/epsilon'][done - 1]:.3g} at delta {delta} after round {done}, clip norm "
            f"{f['update/clip_norm'][done - 1]:.3g}"]


def _why_dead(f, seconds_since_write: float) -> str | None:
    """Why a file marked 'running' has no live job, or None. A job killed outright (SIGKILL, OOM, node failure)
    cannot record its end: on the server's host its process is simply gone; elsewhere the file stops changing
    for longer than a few rounds take (rank 0 writes after every round)."""
    env = f["env"].attrs if "env" in f else {}
    host, pid = (list(env.get("hostnames", [""])) or [""])[0], int(env.get("server_pid", -1))
    if pid > 0 and host == socket.gethostname() and not _alive(pid):
        return f"its server process {pid} on {host} no longer exists; resume with --resume auto"
    done = int(f["progress/rounds_done"][()]) if "progress" in f else 0
    seconds = f["metrics/global/round_seconds"][:done] if "metrics" in f else np.array([])
    slowest = float(np.nanmax(seconds)) if np.isfinite(seconds).any() else None
    limit = max(3 * slowest, 120.0) if slowest is not None else 1800.0
    if seconds_since_write > limit:
        pace = f"its slowest round took {format_duration(slowest)}" if slowest is not None else "no round is done yet"
        return (f"no write for {format_duration(seconds_since_write)} while {pace}; check the scheduler "
                "(squeue/sacct) and the job log, then resume with --resume auto")
    return None


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True  # exists, owned by another user
    return True


def _progress_lines(f, state: str) -> list[str]:
    done, total = int(f["progress/rounds_done"][()]), f["metrics/global/mean_test_accuracy"].shape[0]
    lines = [f"rounds   {done} of {total}"]
    lines += _accuracy_lines(f, done, state)
    round_seconds = f["metrics/global/round_seconds"][:done]
    mean_round = float(np.nanmean(round_seconds)) if np.isfinite(round_seconds).any() else float("nan")
    if np.isfinite(mean_round):
        eta = f", ETA {format_duration(mean_round * (total - done))}" if state == "running" else ""
        lines.append(f"time     {mean_round:.1f} s per round{eta}")
    return lines

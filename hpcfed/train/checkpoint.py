"""Checkpoints at round boundaries, one file per client, so a run resumes on any number of ranks.

    <run>.ckpt/round-000012/manifest.json   round, results rows, config digest and values, sha256 of every file
    <run>.ckpt/round-000012/global.pt       global shared state (+ published table), by the reference client rank
    <run>.ckpt/round-000012/update.pt       the shared update's state (server optimizer, privacy), by rank 0
    <run>.ckpt/round-000012/client-00007.pt personal parameters, optimizer state, data RNG of client 7

A checkpoint is written under `round-NNNNNN.tmp` and renamed only once the manifest is complete, so a crash
mid-write leaves the previous checkpoint as the newest valid one. Every rank must see the directory
(a shared file system on a cluster)."""

from __future__ import annotations

import hashlib
import io
import json
import shutil
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import torch

from hpcfed.config.schema import ADDED_LATER
from hpcfed.errors import CheckpointError, CheckpointOfAnotherConfig
from hpcfed.runtime import EXIT_STOPPED, SERVER, Runtime
from hpcfed.torchfile import UnreadableTorchFile, load_torch_file

EXIT_CHECKPOINTED = EXIT_STOPPED  # stopped on a signal after checkpointing; requeue and resume
SHOWN_DIFFERENCES = 3  # config keys named when a checkpoint belongs to another config


@dataclass
class Checkpoint:
    path: Path
    round: int  # rounds completed: training resumes at this round index
    rows: int  # valid rows of the results file


def checkpoint_root(output_path: str | Path) -> Path:
    return Path(output_path).with_suffix(".ckpt")


def _save(obj, path: Path) -> str:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    data = buffer.getvalue()
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def save(rt: Runtime, root: Path, rounds_done: int, rows: int, digest: str, host, keep: int,
         experiment: dict | None = None, update=None) -> Path:
    """Collective: every rank writes its clients, rank 0 seals the checkpoint and prunes old ones. `experiment`:
    the config values `digest` is made from, kept to name what differs when a resume is refused."""
    final = root / f"round-{rounds_done:06d}"
    tmp = final.with_name(final.name + ".tmp")
    if rt.is_server:
        shutil.rmtree(tmp, ignore_errors=True)  # a leftover of a crash mid-write
        tmp.mkdir(parents=True)
    rt.barrier()
    files = {}
    if rt.is_server and update is not None:  # the same on every rank (hpcfed.update): rank 0 writes it
        files["update.pt"] = _save(update.state_dict(), tmp / "update.pt")
    if host is not None:
        for index, state in host.client_states().items():
            name = f"client-{index:05d}.pt"
            files[name] = _save(state, tmp / name)
        if rt.is_reference:
            files["global.pt"] = _save(host.global_state(), tmp / "global.pt")
    gathered = rt.world.gather(files, root=SERVER)
    if rt.is_server:
        manifest = {"round": rounds_done, "rows": rows, "config_digest": digest, "world_size": rt.size,
                    "written": time.strftime("%Y-%m-%dT%H:%M:%S"), "files": {k: v for f in gathered for k, v in
                                                                             f.items()}}
        if experiment is not None:
            manifest["experiment"] = experiment
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
        shutil.rmtree(final, ignore_errors=True)
        tmp.rename(final)
        for old in sorted(root.glob("round-[0-9]*[0-9]"))[:-keep]:
            shutil.rmtree(old, ignore_errors=True)
    rt.barrier()
    return final


def verify(path: Path, digest: str, n_clients: int, experiment: dict | None = None) -> Checkpoint:
    """The checkpoint at `path` if it is complete, intact and made by this experiment; else CheckpointError
    (CheckpointOfAnotherConfig naming the differing keys when both this run's and the checkpoint's `experiment`
    values are known)."""
    try:
        manifest = json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"no readable manifest.json ({e})") from None
    if manifest.get("config_digest") != digest:
        raise CheckpointOfAnotherConfig(_other_config(manifest, digest, experiment))
    expected = {"global.pt"} | {f"client-{i:05d}.pt" for i in range(n_clients)}
    missing = expected - set(manifest["files"])
    if missing:
        raise CheckpointError(f"the manifest lacks {sorted(missing)[:3]}")
    for name, sha in manifest["files"].items():
        _verify_file(path / name, sha)
    return Checkpoint(path, int(manifest["round"]), int(manifest["rows"]))


def _verify_file(file: Path, sha: str) -> None:
    try:
        data = file.read_bytes()
    except OSError as e:
        raise CheckpointError(f"{file.name} is unreadable ({e})") from None
    if hashlib.sha256(data).hexdigest() != sha:
        raise CheckpointError(f"{file.name} is corrupt (checksum mismatch)")
    # A matching checksum proves only that the manifest was written for these bytes (it may have been
    # rewritten by hand): the file must also load, as load() will load it.
    try:
        load_torch_file(file)
    except UnreadableTorchFile as e:
        raise CheckpointError(f"{file.name} {e}") from None


def _other_config(manifest: dict, digest: str, experiment: dict | None) -> str:
    fix = "resume with the same config and overrides (runtime and output may differ), or start a new output"
    stored = manifest.get("experiment")
    differences = _differences(stored, experiment) if stored is not None and experiment is not None else []
    if not differences:  # a manifest from before the values were stored, or a change of the digest itself
        return f"it belongs to another config (digest {manifest.get('config_digest')}, this run {digest}); {fix}"
    shown = "; ".join(f"{key}: {json.dumps(old)} in the checkpoint, {json.dumps(new)} now"
                      for key, old, new in differences[:SHOWN_DIFFERENCES])
    more = f" (and {len(differences) - SHOWN_DIFFERENCES} more)" if len(differences) > SHOWN_DIFFERENCES else ""
    return f"it belongs to another config: {shown}{more}; {fix}"


def _differences(stored: dict, current: dict) -> list[tuple[str, object, object]]:
    """(dotted key, checkpoint's value, this run's value) for each key both have with different values; a key
    added to hpcfed later is, where a side lacks it, at the value that means "as before it existed"."""
    old, new = _flatten(stored), _flatten(json.loads(json.dumps(current)))  # the same JSON types on both sides
    for key, value in ADDED_LATER.items():
        old.setdefault(key, value), new.setdefault(key, value)
    # method options as they are written in YAML and overrides: method.<option>
    return [(key.replace("method.options.", "method.", 1), old[key], new[key]) for key in new
            if key in old and old[key] != new[key]]


def _flatten(tree: dict, prefix: str = "") -> dict[str, object]:
    out = {}
    for key, value in tree.items():
        if isinstance(value, dict) and value:
            out.update(_flatten(value, f"{prefix}{key}."))
        else:
            out[f"{prefix}{key}"] = value
    return out


def find(root: Path, digest: str, n_clients: int, experiment: dict | None = None) -> Checkpoint | None:
    """The newest valid checkpoint under `root`, warning about each newer one that is not; None when there is
    none at all. Raises when checkpoints exist but none is valid: never a silent restart from round 0."""
    candidates = sorted(root.glob("round-[0-9]*[0-9]"), reverse=True)
    problems = []
    for path in candidates:
        try:
            found = verify(path, digest, n_clients, experiment)
        except CheckpointError as e:
            problems.append(f"{path}: {e}")
            sys.stderr.write(f"hpcfed: warning: skipping checkpoint {path.name}: {e}\n")
            continue
        if problems:
            sys.stderr.write(f"hpcfed: warning: resuming from the older checkpoint {path.name}\n")
        return found
    if problems:
        raise CheckpointError("no usable checkpoint: " + "; ".join(problems) +
                              ". Pass --resume PATH to pick one, or --resume never --overwrite to start again")
    return None


def load(path: Path, host, update=None) -> None:
    """Restore the clients this rank hosts (any subset of the run's clients), the global state and the shared
    update's state (server optimizer moments, adaptive clip norm; on every rank, the server too)."""
    if update is not None and (path / "update.pt").exists():
        update.load_state_dict(_load_file(path / "update.pt"))
    if host is None:
        return
    host.set_global_state(_load_file(path / "global.pt"))
    for index in host.clients:
        host.set_client_state(index, _load_file(path / f"client-{index:05d}.pt"))


def _load_file(file: Path):
    try:
        return load_torch_file(file, mmap=False)
    except UnreadableTorchFile as e:  # verified on rank 0, so it changed since: another job writes there?
        raise CheckpointError(f"{file} {e} (it changed after it was verified); resume from another checkpoint "
                              "with --resume PATH, or check that no other job writes to this run") from None

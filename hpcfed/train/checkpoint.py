"""Checkpoints at round boundaries: one archive per client rank, so a 1,000-client run writes a few large files (a
shared file system pays per file) and still resumes on any number of ranks.

    <run>.ckpt/round-000012/manifest.json   round, results rows, config digest and values, sha256 of every file,
                                            the file holding each client's record
    <run>.ckpt/round-000012/global.pt       global shared state (+ published table), by the reference client rank
    <run>.ckpt/round-000012/update.pt       the shared update's state (server optimizer, privacy), by rank 0
    <run>.ckpt/round-000012/rank-0003.zip   the clients rank 3 hosted: a member client-00007.pt (a torch file:
                                            personal parameters, optimizer state, data RNG) per client

A job of N ranks (1 server + N-1 client ranks) writes at most N + 2 files, the manifest counted. A resumed rank
reads the members of the clients it now hosts from whichever archives the manifest names, each member alone (the
archive is stored, not compressed). Checkpoints written before rank archives (the same client-00007.pt files
loose in the directory, no client map in the manifest) still resume.

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
import zipfile
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


def _client_file(index: int) -> str:
    return f"client-{index:05d}.pt"


def _torch_bytes(obj) -> bytes:
    buffer = io.BytesIO()
    torch.save(obj, buffer)
    return buffer.getvalue()


def _write(data: bytes, path: Path) -> str:
    path.write_bytes(data)
    return hashlib.sha256(data).hexdigest()


def _sha256(path: Path) -> str:
    """The file's sha256, read in pieces: a rank archive of 500 clients is 300 MB."""
    digest = hashlib.sha256()
    with path.open("rb") as f:
        while piece := f.read(1 << 22):
            digest.update(piece)
    return digest.hexdigest()


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
    singles = {}
    if rt.is_server and update is not None:  # the same on every rank (hpcfed.update): rank 0 writes it
        singles["update.pt"] = update.state_dict()
    if host is not None and rt.is_reference:
        singles["global.pt"] = host.global_state()
    part = write_part(tmp, rt.rank, host.client_states() if host is not None else {}, singles)
    parts = rt.world.gather(part, root=SERVER)
    if rt.is_server:
        header = {"round": rounds_done, "rows": rows, "config_digest": digest, "world_size": rt.size}
        if experiment is not None:
            header["experiment"] = experiment
        seal(tmp, final, header, parts, keep)
    rt.barrier()
    return final


def write_part(folder: Path, rank: int, client_states: dict[int, dict], singles: dict[str, object]) -> dict:
    """One rank's share of a checkpoint: its clients' records in one zip archive, a client-NNNNN.pt member each,
    and each of `singles` (file name -> state) in a torch file of its own. Returns what the manifest needs: the
    sha256 of each file and the file holding each client."""
    files, clients = {}, {}
    if client_states:
        name = f"rank-{rank:04d}.zip"
        # Straight to the file, a member at a time: the whole archive in memory would add its size twice over to
        # the rank's peak (a BytesIO and its getvalue copy), 600 MB at 500 clients of 0.6 MB.
        with zipfile.ZipFile(folder / name, "w") as archive:  # stored, not compressed: a member is read alone
            for index, state in client_states.items():
                archive.writestr(_client_file(index), _torch_bytes(state))
        files[name] = _sha256(folder / name)
        clients = dict.fromkeys(client_states, name)
    for name, state in singles.items():
        files[name] = _write(_torch_bytes(state), folder / name)
    return {"files": files, "clients": clients}


def seal(folder: Path, final: Path, header: dict, parts: list[dict], keep: int) -> None:
    """Rank 0: the manifest of every rank's part, written last; the rename that makes the checkpoint valid; the
    pruning of all but the `keep` newest."""
    manifest = {**header, "written": time.strftime("%Y-%m-%dT%H:%M:%S"),
                "files": {k: v for part in parts for k, v in part["files"].items()},
                "clients": {k: v for part in parts for k, v in part["clients"].items()}}
    (folder / "manifest.json").write_text(json.dumps(manifest, indent=1, sort_keys=True))
    shutil.rmtree(final, ignore_errors=True)
    folder.rename(final)
    for old in sorted(final.parent.glob("round-[0-9]*[0-9]"))[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def verify(path: Path, digest: str, n_clients: int, experiment: dict | None = None) -> Checkpoint:
    """The checkpoint at `path` if it is complete, intact and made by this experiment; else CheckpointError
    (CheckpointOfAnotherConfig naming the differing keys when both this run's and the checkpoint's `experiment`
    values are known)."""
    manifest = _manifest(path)
    if manifest.get("config_digest") != digest:
        raise CheckpointOfAnotherConfig(_other_config(manifest, digest, experiment))
    holders = _holders(manifest, range(n_clients))
    unplaced = [f"client {index}" for index, name in holders.items() if name is None]
    needed = {"global.pt", *(name for name in holders.values() if name is not None)}
    missing = sorted(needed - set(manifest["files"])) + unplaced
    if missing:
        raise CheckpointError(f"the manifest lacks {missing[:3]}")
    placed = _by_file(holders)
    for name, sha in manifest["files"].items():
        _verify_checksum(path / name, sha)
        # A matching checksum proves only that the manifest was written for these bytes (it may have been
        # rewritten by hand): the file must also load, as load() will load it.
        try:
            _records(path / name, placed[name]) if name in placed else load_torch_file(path / name)
        except UnreadableTorchFile as e:
            raise CheckpointError(f"{name} {e}") from None
    return Checkpoint(path, int(manifest["round"]), int(manifest["rows"]))


def _manifest(path: Path) -> dict:
    try:
        return json.loads((path / "manifest.json").read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"no readable manifest.json ({e})") from None


def _holders(manifest: dict, clients) -> dict[int, str | None]:
    """The file holding each client's record (None: the manifest places it nowhere). A checkpoint written before
    rank archives has no "clients" in its manifest and one client-NNNNN.pt per client, which holds the record
    itself."""
    if "clients" not in manifest:
        return {index: _client_file(index) for index in clients}
    return {index: manifest["clients"].get(str(index)) for index in clients}


def _by_file(holders: dict[int, str | None]) -> dict[str, list[int]]:
    placed = {}
    for index, name in holders.items():
        placed.setdefault(name, []).append(index)
    return placed


def _records(file: Path, indices: list[int]) -> dict[int, object]:
    """The records of clients `indices` in `file`: members of a rank archive, each read alone, or the file itself
    in the per-client layout. Raises UnreadableTorchFile saying what is wrong with it."""
    if file.suffix != ".zip":
        return {index: load_torch_file(file, mmap=False) for index in indices}
    try:
        with zipfile.ZipFile(file) as archive:
            names = set(archive.namelist())
            missing = [_client_file(i) for i in indices if _client_file(i) not in names]
            if missing:  # a truncated archive may open as the client file it ends inside, itself a zip
                raise UnreadableTorchFile(f"is truncated or not the archive the manifest describes (it lacks "
                                          f"{missing[:3]})", damaged=True)
            return {index: _member(archive, _client_file(index)) for index in indices}
    except (zipfile.BadZipFile, OSError) as e:  # BadZipFile also for a member's CRC mismatch
        raise UnreadableTorchFile(f"is truncated or not a zip archive ({e})", damaged=True) from None


def _member(archive: zipfile.ZipFile, member: str):
    try:
        return load_torch_file(archive.read(member))
    except UnreadableTorchFile as e:
        raise UnreadableTorchFile(f"has a member {member} that {e}", e.damaged) from None


def _verify_checksum(file: Path, sha: str) -> None:
    try:
        actual = _sha256(file)
    except OSError as e:
        raise CheckpointError(f"{file.name} is unreadable ({e})") from None
    if actual != sha:
        raise CheckpointError(f"{file.name} is corrupt (checksum mismatch)")


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
    """Restore the clients this rank hosts (any subset of the run's clients, from whichever files hold them), the
    global state and the shared update's state (server optimizer moments, adaptive clip norm; on every rank, the
    server too)."""
    if update is not None and (path / "update.pt").exists():
        update.load_state_dict(_load_file(path / "update.pt"))
    if host is None:
        return
    host.set_global_state(_load_file(path / "global.pt"))
    for name, indices in _by_file(_holders(_manifest(path), host.clients)).items():
        for index, record in _load_file(path / name, indices).items():
            host.set_client_state(index, record)


def _load_file(file: Path, indices: list[int] | None = None):
    """The torch file `file`, or the records of clients `indices` in it."""
    try:
        return load_torch_file(file, mmap=False) if indices is None else _records(file, indices)
    except UnreadableTorchFile as e:  # verified on rank 0, so it changed since: another job writes there?
        raise CheckpointError(f"{file} {e} (it changed after it was verified); resume from another checkpoint "
                              "with --resume PATH, or check that no other job writes to this run") from None

"""The run file: one HDF5 file per run, written by rank 0 only, readable while the job runs (SWMR).

Layout (the contract between train, status and report):
  /config                 resolved config as YAML text (of the latest start, when resumed); attrs: hash
  /env                    attrs: versions, MPI library, git commit, world_size, per rank: hostnames, local_ranks
                          (index among the ranks of its host), devices; nodes (each host once), client placement
  /splits                 written by `hpcfed split` (or train): attrs: split_hash, scheme, seed, listing_digest,
                          partitioner parameters; class_names, domain_names, client_domain [C],
                          holdout_clients [k] (clients that never train), unseen_domain_test (listing indices
                          of the held-out domain, scored by every client), base_test, novel_test,
                          clients/<i>/{train,val,test,...} index arrays into the dataset listing,
                          label_counts/{train,val,test} [client, class], notes (e.g. corrupt_images, test_list,
                          official_labels)
  /metrics/client/<name>  [round, client] float64, NaN where not evaluated or not taking part; a held-out
                          client has only unseen_fresh_accuracy and unseen_adapted_accuracy (UNSEEN_METRICS)
  /metrics/global/<name>  [round]
  /timing/<phase>         [round, rank] seconds
  /comm/bytes             [round] bytes uploaded by the clients whose update reached the sum (shared, fp32; with
                          secure aggregation the masked integers and the protocol's keys and shares)
  /comm/bytes_up, /comm/bytes_down  [round, client] per client (downloads: every client that trained, a late one
                          too; they include e.g. pFedMoAP's experts)
  /update/dropped          [round, client] 0 contributed or not selected, 1 dropped before training, 2 after masking
  /update/virtual_seconds  [round, client] the client's time on the virtual clock (nan: did not train)
  /update/epsilon, /update/clip_norm  [round] privacy spent so far (at privacy.delta) and the clip norm used
  /update/clipped_to_range  [round] values secure aggregation clipped to ±range, over all clients (-1: off)
  /final/{selected,last}/<name>      [client] at the round chosen on validation accuracy, and at the last
                                     evaluated round; /final/{selected,last}_round; /final/selection (how)
  /final/zeroshot/<name>             [client] CLIP zero-shot on the same splits before any training (round -1;
                                     written when `eval_zero_shot`), with summary/ and domain_mean/ as above
  /final/{selected,last,zeroshot}/summary/<name>      mean over clients; summary/hm = HM of the mean L, B, N
  /final/{selected,last,zeroshot}/domain_mean/<name>  [domain] mean over the clients of each domain (+ domain_std)
  /progress/rounds_done   rows of /metrics that are valid
  /status                 running | finished | failed | interrupted (checkpointed on a signal; resume it)
                          attrs: resumes (JSON list of {round, world_size, nodes}, one per resumed start)
  /error, /error_rank     on failure: the failing rank's traceback (last 4000 bytes) and its rank; "" and -1
Every dataset is created up front: SWMR forbids creating objects once readers may be attached. The per-round
datasets (PER_ROUND_GROUPS) can grow along the round axis: a resumed run may be given more rounds."""

from __future__ import annotations

import dataclasses
import json
import os
import time
from pathlib import Path

import h5py
import numpy as np

from hpcfed.errors import RunFileDamaged, RunFileExists
from hpcfed.metrics import harmonic_mean

# test_accuracy is the Local accuracy of the papers (each client on its own test split).
# unseen_*: held-out clients scored as new clients (fresh, and after train.holdout_steps), and every client on
# the held-out domain (partition.holdout_clients, holdout_domain); NaN elsewhere.
UNSEEN_METRICS = ("unseen_fresh_accuracy", "unseen_adapted_accuracy", "unseen_domain_accuracy")
CLIENT_METRICS = ("train_loss", "val_accuracy", "val_loss", "test_accuracy", "test_loss", "base_accuracy",
                  "novel_accuracy", "hm", "global_accuracy", *UNSEEN_METRICS)
SUMMARY = ("test_accuracy", "base_accuracy", "novel_accuracy", "hm", "global_accuracy", "val_accuracy",
           *UNSEEN_METRICS)
GLOBAL_METRICS = ("mean_test_accuracy", "mean_train_loss", "participants", "round_seconds")
PHASES = ("train", "aggregate", "evaluate", "io")
ERROR_BYTES = 4000
TRAINING_GROUPS = ("env", "metrics", "final", "timing", "comm", "progress", "error", "error_rank")
PER_ROUND_GROUPS = ("metrics/client", "metrics/global", "timing", "comm", "update")  # a row per round each
# The shared update's record (hpcfed.update), made with the file (a SWMR writer cannot add datasets later):
# per round and client, or per round.
UPDATE_PER_CLIENT = {"dropped": ("i1", 0), "virtual_seconds": ("f8", np.nan)}
UPDATE_PER_ROUND = {"epsilon": ("f8", np.nan), "clip_norm": ("f8", np.nan), "clipped_to_range": ("i8", -1)}




def _put(group: h5py.Group, name: str, value) -> None:
    """Arrays become datasets, scalars attributes, dicts JSON attributes; None is simply absent."""
    if value is None:
        return
    if isinstance(value, np.ndarray):
        group.create_dataset(name, data=value)
    elif isinstance(value, dict):
        group.attrs[name] = json.dumps(value, default=str)
        group.attrs["json_fields"] = [*group.attrs.get("json_fields", []), name]
    elif isinstance(value, (list, tuple)) and value and isinstance(value[0], str):
        group.create_dataset(name, data=list(value), dtype=h5py.string_dtype())
    else:
        group.attrs[name] = value


def _get(group: h5py.Group, cls: type) -> dict:
    json_fields = set(group.attrs.get("json_fields", []))
    out = {}
    for field in dataclasses.fields(cls):
        if field.name in group and isinstance(group[field.name], h5py.Dataset):
            dataset = group[field.name]
            if h5py.check_string_dtype(dataset.dtype):
                out[field.name] = tuple(dataset.asstr()[()])
            else:
                out[field.name] = np.asarray(dataset[()])
        elif field.name in group.attrs:
            value = group.attrs[field.name]
            out[field.name] = json.loads(value) if field.name in json_fields else (
                value.item() if isinstance(value, np.generic) else value)
    return out


def write_splits(f: h5py.File, splits, split_hash: str, source_digest: str, class_names, domain_names,
                 labels: np.ndarray, notes: dict | None = None) -> None:
    g = f.create_group("splits")
    g.attrs["split_hash"] = split_hash
    g.attrs["source_digest"] = source_digest  # the listing as read from disk, before unreadable files left
    for field in dataclasses.fields(splits):
        if field.name != "clients":
            _put(g, field.name, getattr(splits, field.name))
    g.create_dataset("class_names", data=list(class_names), dtype=h5py.string_dtype())
    g.create_dataset("domain_names", data=list(domain_names), dtype=h5py.string_dtype())
    g.create_dataset("client_domain", data=[c.domain for c in splits.clients])
    n_classes = len(class_names)
    for part in ("train", "val", "test"):
        counts = [np.bincount(labels[getattr(c, part)], minlength=n_classes) for c in splits.clients]
        g.create_dataset(f"label_counts/{part}", data=np.array(counts))
    for i, client in enumerate(splits.clients):
        cg = g.create_group(f"clients/{i}")
        for field in dataclasses.fields(client):
            _put(cg, field.name, getattr(client, field.name))
    notes_group = g.create_group("notes")
    for key, value in (notes or {}).items():
        if isinstance(value, (int, float, str)):
            notes_group.attrs[key] = value
        elif isinstance(value, (list, tuple)) and all(isinstance(v, str) for v in value):
            notes_group.attrs.create(key, list(value), dtype=h5py.string_dtype())
        elif isinstance(value, (list, tuple)) and all(isinstance(v, int) for v in value):  # e.g. official_labels
            notes_group.attrs[key] = np.asarray(value, dtype=np.int64)


def read_splits(f: h5py.File):
    """The Splits stored in a run file (the inverse of write_splits)."""
    from hpcfed.split import ClientSplit, Splits

    g = f["splits"]
    clients = tuple(ClientSplit(**_get(g[f"clients/{i}"], ClientSplit)) for i in range(len(g["clients"])))
    fields = _get(g, Splits)
    fields.pop("clients", None)
    return Splits(clients=clients, **fields)


def create_split_file(path: Path, *, config_yaml: str, config_hash: str, splits, split_hash: str,
                      source_digest: str, listing, overwrite: bool = False) -> None:
    """The output of `hpcfed split`: a run file that holds /config and /splits, ready for `hpcfed train`."""
    path = Path(path)
    if path.exists() and not overwrite:
        raise RunFileExists(f"run file {path} already exists; pass --overwrite to replace it, or set "
                            f"-o output=<new path> to keep it")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp")  # renamed when complete: a stop mid-write leaves no half file
    with h5py.File(tmp, "w", libver="latest") as f:
        f.create_dataset("config", data=config_yaml)
        f["config"].attrs["hash"] = config_hash
        write_splits(f, splits, split_hash, source_digest, listing.class_names, listing.domain_names,
                     listing.labels, listing.notes)
        f.create_dataset("status", shape=(), dtype=h5py.string_dtype(length=16), data="split")
    os.replace(tmp, path)


def _rewrite(path: Path) -> None:
    """Copy the run file object by object. A writer that was killed leaves the file marked as open for writing,
    which refuses any new writer (the h5clear tool is not in h5py); a SWMR reader still reads it, and the copy
    is clean."""
    tmp = path.with_name(path.name + ".tmp")
    with open_run(path) as src, h5py.File(tmp, "w", libver="latest") as dst:
        for name in src:
            src.copy(name, dst)
    os.replace(tmp, path)


class RunWriter:
    """Rank 0's handle on a run file in SWMR mode: `create` adds the training datasets to a file made by
    `create_split_file`, `reopen` continues one after a checkpoint."""

    def __init__(self, path: Path, file: h5py.File):
        self.path, self.file = Path(path), file
        self.rounds = file["metrics/global/mean_test_accuracy"].shape[0]

    @classmethod
    def create(cls, path: Path, *, config_yaml: str, config_hash: str, env: dict, n_clients: int, rounds: int,
               n_ranks: int, n_domains: int, replace: bool = False) -> RunWriter:
        f = h5py.File(path, "r+", libver="latest")
        if "metrics" in f and not replace:
            f.close()
            raise RunFileExists(f"run file {path} already holds training results; continue it with --resume auto, "
                                f"replace it with --overwrite, or set -o output=<new path>")
        for group in TRAINING_GROUPS:  # a replaced run's training results (its splits stay)
            if group in f:
                del f[group]
        del f["config"]  # the split stage may have stored the config without train-only overrides
        f.create_dataset("config", data=config_yaml)
        f["config"].attrs["hash"] = config_hash
        env_group = f.create_group("env")
        for key, value in env.items():
            # str() because some versions are str subclasses (torch's TorchVersion) that h5py cannot store.
            if isinstance(value, list):
                env_group.attrs.create(key, [str(v) for v in value], dtype=h5py.string_dtype())
            else:
                env_group.attrs[key] = str(value) if isinstance(value, str) else value
        for name in CLIENT_METRICS:
            f.create_dataset(f"metrics/client/{name}", shape=(rounds, n_clients), maxshape=(None, n_clients),
                             dtype="f8", fillvalue=np.nan)
        for which in ("selected", "last", "zeroshot"):
            for name in CLIENT_METRICS:
                f.create_dataset(f"final/{which}/{name}", shape=(n_clients,), dtype="f8", fillvalue=np.nan)
            for name in SUMMARY:
                f.create_dataset(f"final/{which}/summary/{name}", shape=(), dtype="f8", fillvalue=np.nan)
                for stat in ("domain_mean", "domain_std"):
                    f.create_dataset(f"final/{which}/{stat}/{name}", shape=(n_domains,), dtype="f8",
                                     fillvalue=np.nan)
            f.create_dataset(f"final/{which}_round", shape=(), dtype="i8", data=-1)
        f.create_dataset("final/selection", shape=(), dtype=h5py.string_dtype(length=64), data="")
        for name in GLOBAL_METRICS:
            f.create_dataset(f"metrics/global/{name}", shape=(rounds,), maxshape=(None,), dtype="f8",
                             fillvalue=np.nan)
        for phase in PHASES:
            f.create_dataset(f"timing/{phase}", shape=(rounds, n_ranks), maxshape=(None, None), dtype="f8",
                             fillvalue=np.nan)  # may widen when a run resumes on more ranks
        f.create_dataset("comm/bytes", shape=(rounds,), maxshape=(None,), dtype="i8", fillvalue=0)
        for direction in ("up", "down"):
            f.create_dataset(f"comm/bytes_{direction}", shape=(rounds, n_clients), maxshape=(None, n_clients),
                             dtype="i8", fillvalue=0)
        for name, (dtype, fill) in UPDATE_PER_CLIENT.items():
            f.create_dataset(f"update/{name}", shape=(rounds, n_clients), maxshape=(None, n_clients), dtype=dtype,
                             fillvalue=fill)
        for name, (dtype, fill) in UPDATE_PER_ROUND.items():
            f.create_dataset(f"update/{name}", shape=(rounds,), maxshape=(None,), dtype=dtype, fillvalue=fill)
        f.create_dataset("progress/rounds_done", shape=(), dtype="i8", data=0)
        f.create_dataset("error", shape=(), dtype=h5py.string_dtype(length=ERROR_BYTES), data="")
        f.create_dataset("error_rank", shape=(), dtype="i8", data=-1)
        f["status"][()] = "running"
        f.swmr_mode = True
        f.flush()
        return cls(path, f)

    @classmethod
    def reopen(cls, path: Path, rows: int, world_size: int, rounds: int, config_yaml: str, config_hash: str,
               nodes: list[str] | None = None) -> RunWriter:
        """Reopen a run file to continue after a checkpoint of `rows` rounds, for `rounds` rounds in all (more
        or fewer than it was made for): later rows are dropped (NaN), since the rounds after the checkpoint
        will be run again. /config becomes the resumed config, whose `rounds` may differ. The resumed start is
        recorded with its world size and `nodes` (/env keeps those of the first start)."""
        _rewrite(Path(path))
        f = h5py.File(path, "r+", libver="latest")
        if "metrics" not in f:
            f.close()
            raise RunFileExists(f"run file {path} holds no training results to resume; start with --resume never")
        _set_rounds(f, rounds)
        del f["config"]
        f.create_dataset("config", data=config_yaml)
        f["config"].attrs["hash"] = config_hash
        for group in ("metrics/client", "metrics/global", "timing"):
            for name in f[group]:
                f[f"{group}/{name}"][rows:] = np.nan
        for name in ("bytes", "bytes_up", "bytes_down"):
            f[f"comm/{name}"][rows:] = 0
        f["progress/rounds_done"][()] = rows
        for phase in f["timing"]:
            timing = f[f"timing/{phase}"]
            timing.resize(max(timing.shape[1], world_size), axis=1)
        status = f["status"]
        resumed = {"round": rows, "world_size": world_size, **({"nodes": nodes} if nodes is not None else {})}
        resumes = json.loads(status.attrs.get("resumes", "[]")) + [resumed]
        status.attrs["resumes"] = json.dumps(resumes)
        f["error"][()], f["error_rank"][()] = "", -1
        status[()] = "running"
        f.swmr_mode = True
        f.flush()
        return cls(path, f)

    def write_round(self, r: int, client: dict[str, np.ndarray], global_: dict[str, float],
                    timing: dict[str, np.ndarray], comm: dict[str, np.ndarray],
                    update: dict[str, np.ndarray | float] | None = None) -> None:
        f = self.file
        for name, values in client.items():
            f[f"metrics/client/{name}"][r] = values
        for name, value in global_.items():
            f[f"metrics/global/{name}"][r] = value
        for phase, values in timing.items():
            f[f"timing/{phase}"][r, :len(values)] = values  # a resumed run may have fewer ranks than columns
        f["comm/bytes_up"][r] = comm["up"]
        f["comm/bytes_down"][r] = comm["down"]
        f["comm/bytes"][r] = int(comm["up"].sum())
        for name, values in (update or {}).items():
            f[f"update/{name}"][r] = values
        f["progress/rounds_done"][()] = r + 1
        f.flush()

    def write_final(self, which: str, r: int, client: dict[str, np.ndarray], client_domain: np.ndarray,
                    n_domains: int) -> None:
        f = self.file
        for name, values in client.items():
            f[f"final/{which}/{name}"][:] = values
        for name in SUMMARY:
            values = client[name]
            mean = float(np.nanmean(values)) if np.isfinite(values).any() else np.nan
            f[f"final/{which}/summary/{name}"][()] = mean
            for d in range(n_domains):
                own = values[(client_domain == d) & np.isfinite(values)]
                f[f"final/{which}/domain_mean/{name}"][d] = own.mean() if len(own) else np.nan
                f[f"final/{which}/domain_std/{name}"][d] = own.std() if len(own) else np.nan
        # Per dataset, HM of the client-averaged Local, Base and Novel (methods.md §1.7).
        means = [f[f"final/{which}/summary/{m}"][()] for m in ("test_accuracy", "base_accuracy", "novel_accuracy")]
        f[f"final/{which}/summary/hm"][()] = harmonic_mean(*means)
        f[f"final/{which}_round"][()] = r
        f.flush()

    def write_selection(self, how: str) -> None:
        self.file["final/selection"][()] = how

    def close(self, status: str, error: str | None = None, error_rank: int | None = None) -> None:
        self.file["status"][()] = status
        if error is not None:  # datasets made up front: a SWMR writer cannot add objects or attributes
            self.file["error"][()] = error.encode()[-ERROR_BYTES:].decode(errors="ignore")
            self.file["error_rank"][()] = -1 if error_rank is None else error_rank
        self.file.flush()
        self.file.close()


def _set_rounds(f: h5py.File, rounds: int) -> None:
    """Give every per-round dataset `rounds` rows (new rows hold the fill value)."""
    for group in PER_ROUND_GROUPS:
        for name in f[group] if group in f else ():  # /update is newer than some run files
            data = f[f"{group}/{name}"]
            if data.shape[0] == rounds:
                continue
            if data.maxshape[0] is None:
                data.resize(rounds, axis=0)
            else:  # a file made when these datasets had a fixed length: copied into a growable one
                kept, fill, dtype, maxshape = data[:rounds], data.fillvalue, data.dtype, data.maxshape
                del f[f"{group}/{name}"]
                grown = f.create_dataset(f"{group}/{name}", shape=(rounds, *kept.shape[1:]),
                                         maxshape=(None, *maxshape[1:]), dtype=dtype, fillvalue=fill)
                grown[:len(kept)] = kept


HDF5_SIGNATURE = b"\x89HDF\r\n\x1a\n"
WRITER_FLAGS = 0x1 | 0x4  # superblock consistency flags: open for writing, open for SWMR writing


def _superblock(path: Path) -> tuple[int, int]:
    """(end of the file as its HDF5 superblock records it, consistency flags), read from the raw bytes. The
    superblock sits at 0 or, after a user block, at 512, 1024, 2048, ... bytes."""
    size = path.stat().st_size
    with open(path, "rb") as f:
        at = 0
        while at < max(size, 1):
            f.seek(at)
            head = f.read(64)
            if head.startswith(HDF5_SIGNATURE):
                break
            at = 512 if at == 0 else 2 * at
        else:
            raise RunFileDamaged(f"{path} is not an HDF5 file (no HDF5 signature in its {size} bytes); pass a run "
                                 "file written by 'hpcfed split' or 'hpcfed train'")
    if len(head) < 64:  # shorter than the smallest superblock with its addresses
        raise RunFileDamaged(f"run file {path} is truncated: {size} bytes, less than its HDF5 header; copy it again "
                             "or restore it from a backup")
    version = head[8]
    if version >= 2:  # signature, version, offset size, length size, flags, base, extension, end of file
        offset_size, flags, fields = head[9], head[11], 12
    else:  # versions 0/1: more version bytes and B-tree constants before the addresses
        offset_size, flags, fields = head[13], int.from_bytes(head[20:24], "little"), 24 if version == 0 else 28
    address = [int.from_bytes(head[fields + i * offset_size:fields + (i + 1) * offset_size], "little")
               for i in range(3)]
    base, end = address[0], address[2]  # the end-of-file address is relative to the base address
    return base + end, flags


def open_run(path: str | Path) -> h5py.File:
    """Open a run file for reading, also while its job is still writing it (SWMR), and never wait on a damaged
    one: h5py's SWMR reader retries forever on a truncated file, so its length is checked against the length
    its header records first, and SWMR is used only when a writer has the file open."""
    path = Path(path)
    for _ in range(3):  # a live writer grows the file just after it records the new end: look again
        end, flags = _superblock(path)
        size = path.stat().st_size
        if size >= end or not flags & WRITER_FLAGS:
            break
        time.sleep(0.2)
    if size < end:
        raise RunFileDamaged(f"run file {path} is truncated: {size} bytes of the {end} its HDF5 header records (a "
                             "half-finished copy or a full disk); copy it again or restore it from a backup")
    try:
        if flags & WRITER_FLAGS:
            return h5py.File(path, "r", libver="latest", swmr=True)
        return h5py.File(path, "r")
    except OSError as e:
        state = "marked as open by a writer" if flags & WRITER_FLAGS else "not marked as open by any writer"
        raise RunFileDamaged(f"run file {path} cannot be read ({state}; HDF5 says: {e}); if its job is "
                             "starting, retry in a few seconds, else restore the file from a backup") from e

"""Everything before the first round, one named step each: listing -> splits -> client host -> run file.

Used by `hpcfed train` (all steps, `set_up`), `hpcfed split` (`prepare_splits`), `hpcfed extract` (`extract_only`)
and the benchmarks. Steps that every rank runs go through `agree`, so bad input on any rank stops all of them
with one message instead of a hang."""

from __future__ import annotations

import dataclasses
import hashlib
import os
import shutil
import socket
import sys
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import yaml

from hpcfed.config import Config, MethodConfig
from hpcfed.config.schema import without_added_defaults
from hpcfed.data import Listing, load_listing
from hpcfed.data.verify import verify_images
from hpcfed.errors import CheckpointError, CheckpointOfAnotherConfig, ConfigError, DataError, RunFileExists, SplitError
from hpcfed.results import RunWriter, create_split_file, open_run, read_splits
from hpcfed.rng import Stream, torch_seed
from hpcfed.runtime import SERVER, Runtime, agree, place_clients
from hpcfed.split import Splits, make_splits
from hpcfed.train import checkpoint
from hpcfed.train.checkpoint import Checkpoint
from hpcfed.update import SharedUpdate

RESUME_MODES = ("auto", "never")  # or the path of one checkpoint directory


def read_listing(cfg: Config, quiet: bool = False) -> Listing:
    """The dataset listing; `quiet` hides its warnings (every rank reads it, rank 0 alone reports)."""
    with warnings.catch_warnings():
        if quiet:
            warnings.simplefilter("ignore")
        return load_listing(cfg.data.dataset, cfg.data.root, cfg.data.domains, cfg.data.class_names_file)


# ---- splits (the split stage) ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Prepared:
    splits: Splits
    reused: bool
    unreadable: tuple[str, ...]  # files left out of the listing before splitting (corrupt images)
    staged: Path | None = None  # train --overwrite: the new split file, put in place once set-up has worked


def staged_path(path: Path) -> Path:
    return path.with_name(path.name + ".new")


def split_hash(cfg: Config, listing: Listing) -> str:
    """Everything a split depends on: the data listing, the partition settings, the client count, the seed."""
    partition = without_added_defaults({"partition": dataclasses.asdict(cfg.partition)})["partition"]
    key = {"listing": listing.digest(), "partition": partition, "clients": cfg.clients, "seed": cfg.seed}
    return hashlib.sha256(yaml.safe_dump(key, sort_keys=True).encode()).hexdigest()[:16]


def _stored(path: Path) -> tuple[str | None, str | None, bool]:
    """(split hash, digest of the listing as read from disk, has training results) of an existing run file."""
    try:
        f = open_run(path)
    except OSError as e:
        raise RunFileExists(f"output {path} exists and is not a readable hpcfed run file ({e}); it is left "
                            f"untouched: pass --overwrite to replace it, or set -o output=<new path>") from e
    with f:
        if "splits" not in f:
            return None, None, "metrics" in f
        return f["splits"].attrs["split_hash"], f["splits"].attrs["source_digest"], "metrics" in f


def usable_output(cfg: Config, overwrite: bool, resuming: bool) -> tuple[str | None, str | None, bool] | None:
    """`_stored` of the run file at `output`, None when there is none or it is to be replaced; refuses a damaged
    file, and one that holds training results unless the run continues it. Cheap: `hpcfed train` calls it before
    MPI starts, the split stage again."""
    path = cfg.output_path
    if overwrite or not path.exists():
        return None
    stored = _stored(path)
    if stored[2] and not resuming:
        raise RunFileExists(f"run file {path} already holds training results; continue it with --resume auto, "
                            f"replace it with --overwrite, or set -o output=<new path>")
    return stored


def _stored_unreadable(path: Path) -> tuple[str, ...]:
    with open_run(path) as f:
        return tuple(f["splits/notes"].attrs.get("corrupt_paths", ()))


def prepare_splits(cfg: Config, listing: Listing, overwrite: bool = False, resuming: bool = False,
                   stage: bool = False) -> Prepared:
    """Reuse the run file's splits when their hash matches, refuse a mismatch, else make and store them.
    `listing` is the dataset as read from disk; unreadable images are found here, once, before splitting.
    `resuming`: the file may hold training results (train --resume continues or replaces them).
    `stage`: an existing file is not replaced yet; the new one waits beside it (`Prepared.staged`)."""
    path, wanted = cfg.output_path, split_hash(cfg, listing)
    existing = usable_output(cfg, overwrite, resuming)
    if existing is not None:
        stored, old_digest, _ = existing
        if stored == wanted:
            with open_run(path) as f:
                return Prepared(read_splits(f), True, _stored_unreadable(path))
        if stored is not None:
            why = ("the dataset listing changed since the split was made (files added, removed or relabelled: "
                   f"listing {old_digest} then, {listing.digest()} now)" if old_digest != listing.digest()
                   else "the partition settings, client count or seed differ from those of the stored split")
            raise SplitError(f"run file {path} holds splits that do not match this config: {why}; re-run "
                             f"'hpcfed split' with --overwrite, or set -o output=<new path>")
    readable = verify_images(listing)
    splits = make_splits(readable, cfg.partition, cfg.clients, cfg.seed)
    staged = staged_path(path) if stage and path.exists() else None
    create_split_file(staged or path, config_yaml=cfg.to_yaml(), config_hash=cfg.digest(), splits=splits,
                      split_hash=wanted, source_digest=listing.digest(), listing=readable, overwrite=True)
    return Prepared(splits, False, tuple(readable.notes.get("corrupt_paths", ())), staged)


def _same_listing(listing: Listing, splits: Splits) -> None:
    if listing.digest() != splits.listing_digest:
        raise DataError(f"host {socket.gethostname()} sees a different dataset listing ({listing.digest()}, "
                        f"{len(listing)} samples) than the one the splits were made from ({splits.listing_digest}); "
                        f"every node must see the same files under {listing.root}: compare that folder on this host "
                        "with the server's (hpcfed check-env under the same launch names each node's listing)")


def shared_splits(cfg: Config, rt: Runtime, listing: Listing, overwrite: bool, resuming: bool
                  ) -> tuple[Listing, Prepared]:
    """Collective: rank 0 makes or reuses the splits and shares them; every rank drops the images rank 0 found
    unreadable and checks that it sees the listing the splits were made from."""
    prepared = agree(rt.world, lambda: prepare_splits(cfg, listing, overwrite, resuming, stage=overwrite)
                     if rt.is_server else None)
    prepared = rt.world.bcast(prepared, root=SERVER)
    listing = listing.without(prepared.unreadable)
    agree(rt.world, lambda: _same_listing(listing, prepared.splits))
    return listing, prepared


# ---- the client host -------------------------------------------------------------------------------------------


def build_host(cfg: Config, rt: Runtime, listing: Listing, splits: Splits, my_clients: list[int], images=None):
    """The frozen backbone with the method's parameters attached and this rank's clients (`rt`: only its device;
    `images`: an ImageSource to share, e.g. with its decoded images already in memory)."""
    import torch

    from hpcfed.data.images import ImageSource
    from hpcfed.methods import METHODS
    from hpcfed.models import create_backbone
    from hpcfed.train.client import ClientHost

    # Same seed on every rank: identical frozen backbone and identical initial parameters everywhere.
    torch.manual_seed(torch_seed(cfg.seed, Stream.INIT, 0))
    clip, preprocess, tokenizer = create_backbone(cfg.model.name, cfg.model.pretrained, rt.device)
    method = METHODS[cfg.method.name](cfg.method.options)
    init = torch.Generator().manual_seed(torch_seed(cfg.seed, Stream.INIT, 1))
    added = method.attach(clip, init).to(rt.device)
    images = images or ImageSource(listing, preprocess, cache=cfg.data.cache_images, invert=cfg.data.invert)
    return ClientHost(cfg, clip, added, method, images, listing.labels, listing.class_names, tokenizer, splits,
                      my_clients, rt.device)


def zero_shot_metrics(cfg: Config, rt: Runtime, listing: Listing, splits: Splits, host) -> dict[int, dict]:
    """Every metric of this rank's clients under CLIP zero-shot (the same backbone, splits, prompts and images,
    no added parameters): the baseline each client's personalization is measured against."""
    if host is None:
        return {}
    baseline = build_host(dataclasses.replace(cfg, method=MethodConfig("zeroshot")), rt, listing, splits,
                          sorted(host.clients), images=host.images)
    held_out = set(() if splits.holdout_clients is None else splits.holdout_clients.tolist())
    # Held-out clients as new clients (zero-shot has nothing to adapt, so no round's steps are drawn).
    return {c: baseline.evaluate_new_client(baseline.clients[c], 0) if c in held_out
            else baseline.evaluate(baseline.clients[c]) for c in baseline.clients}


# ---- resume point and run file ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class RunFileState:
    """How far an existing run file has come (all False/0 when there is none, or it holds splits only)."""

    trained: bool  # holds training results
    rounds_done: int
    finished: bool


def run_file_state(path: Path) -> RunFileState:
    if not path.exists():
        return RunFileState(False, 0, False)
    try:
        f = open_run(path)
    except OSError as e:
        raise RunFileExists(f"output {path} exists and is not a readable hpcfed run file ({e}); it is left "
                            f"untouched: pass --resume never --overwrite to replace it, or set -o output=<new path>"
                            ) from None
    with f:
        if "metrics" not in f:
            return RunFileState(False, 0, False)
        return RunFileState(True, int(f["progress/rounds_done"][()]), f["status"].asstr()[()].strip() == "finished")


def _refuse_fewer_rounds(cfg: Config, done: int, what: str) -> None:
    if cfg.rounds < done:
        raise ConfigError("rounds", f"is {cfg.rounds}, but {what} already holds {done} rounds; a resumed run can "
                          "only keep or extend its rounds",
                          f"resume with rounds >= {done}, or start a shorter run with --overwrite or -o "
                          "output=<new path>")


def _no_checkpoint_to_extend(cfg: Config, done: int) -> CheckpointError:
    root = checkpoint.checkpoint_root(cfg.output_path)
    return CheckpointError(
        f"{cfg.output_path} finished {done} rounds but has no checkpoint in {root} to continue from to "
        f"{cfg.rounds} rounds (runs made before hpcfed checkpointed the last round have none of it, "
        f"and none at all with runtime.checkpoint_every 0 or above the rounds); train {cfg.rounds} rounds from "
        f"round 0 with -o output=<new path> to keep this file, or with --resume never --overwrite to replace it")


def resume_point(cfg: Config, resume: str, overwrite: bool) -> Checkpoint | None:
    """Where training starts (rank 0): None for round 0, else the checkpoint to continue from. A run file that
    finished gives `Checkpoint(run file, rounds, rounds)` (nothing left to run) when it holds cfg.rounds rounds;
    with more rounds it continues from its newest checkpoint (a finished run keeps one of its last round)."""
    root = checkpoint.checkpoint_root(cfg.output_path)
    if resume == "never":
        return None
    if overwrite:
        raise RunFileExists("--overwrite starts the run again and --resume continues it: pass only one of them")
    state = run_file_state(cfg.output_path)
    _refuse_fewer_rounds(cfg, state.rounds_done, f"run file {cfg.output_path}")
    if resume != "auto":
        try:
            found = checkpoint.verify(Path(resume), cfg.experiment_digest(), cfg.clients, cfg.experiment())
        except CheckpointOfAnotherConfig as e:
            raise CheckpointOfAnotherConfig(f"cannot resume from {resume}: {e}") from None
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume from {resume}: {e}; pick another checkpoint with --resume PATH, "
                                  "or take the newest valid one with --resume auto") from None
        _refuse_fewer_rounds(cfg, found.round, f"checkpoint {resume}")
        return found
    if state.finished and state.rounds_done == cfg.rounds:
        return Checkpoint(cfg.output_path, cfg.rounds, cfg.rounds)  # nothing left to run
    found = checkpoint.find(root, cfg.experiment_digest(), cfg.clients, cfg.experiment())
    if found is None and state.finished:
        raise _no_checkpoint_to_extend(cfg, state.rounds_done)
    if found is None and state.trained:
        sys.stdout.write(f"no checkpoint of {cfg.output_path} yet: starting from round 0\n")
    return found


def nothing_left(cfg: Config, start: Checkpoint | None) -> bool:
    """Whether `start` is resume_point's answer for a run file that already finished all its rounds."""
    return start is not None and start.path == cfg.output_path


def collect_env(cfg: Config, rt: Runtime, placement: list[list[int]]) -> dict:
    """Versions, hosts and devices of the job for /env (collective; the dict is filled on rank 0 only)."""
    import h5py
    import mpi4py
    import open_clip
    import torch
    from mpi4py import MPI

    import hpcfed
    from hpcfed.env import git_commit

    ranks = rt.world.gather((rt.local_rank, rt.device), root=SERVER)
    if not rt.is_server:
        return {}
    return {
        "hpcfed": hpcfed.__version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
        "mpi4py": mpi4py.__version__, "h5py": h5py.__version__, "numpy": np.__version__,
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0], "git_commit": git_commit(),
        "python": sys.version.split()[0], "world_size": rt.size,
        # where each rank ran: its host, its index among the ranks of that host, its device; then the hosts once
        "hostnames": list(rt.hosts), "local_ranks": np.array([local for local, _ in ranks]),
        "devices": [device for _, device in ranks], "nodes": list(dict.fromkeys(rt.hosts)),
        "placement": str(placement),  # clients of each client rank
        # MPICH's network module when the user or hpcfed chose it (runtime.mpich_netmod)
        **({"mpich_netmod": os.environ["MPIR_CVAR_CH4_NETMOD"]} if "MPIR_CVAR_CH4_NETMOD" in os.environ else {}),
        "server_pid": os.getpid(),  # lets `hpcfed status` on the server's host tell a killed job from a slow one
    }


def open_writer(cfg: Config, rt: Runtime, start: Checkpoint | None, env: dict, n_domains: int,
                replace: bool, staged: Path | None) -> RunWriter:
    """Rank 0's writer: the run file reopened at the checkpoint's row, or its training datasets made afresh.
    A replaced run (--overwrite) loses its file and checkpoints only here, once everything before has worked."""
    if staged is not None:
        os.replace(staged, cfg.output_path)
    if replace:  # checkpoints of a replaced run must never be resumed later
        shutil.rmtree(checkpoint.checkpoint_root(cfg.output_path), ignore_errors=True)
    if start is not None:
        return RunWriter.reopen(cfg.output_path, start.rows, rt.size, cfg.rounds, cfg.to_yaml(), cfg.digest(),
                                nodes=env["nodes"])
    return RunWriter.create(cfg.output_path, config_yaml=cfg.to_yaml(), config_hash=cfg.digest(), env=env,
                            n_clients=cfg.clients, rounds=cfg.rounds, n_ranks=rt.size, n_domains=n_domains,
                            replace=replace)


# ---- all of it -------------------------------------------------------------------------------------------------


@dataclass
class RunSetup:
    """What the round loop starts from."""

    splits: Splits
    placement: list[list[int]]  # client ids per client rank
    my_clients: list[int]
    host: object | None  # ClientHost on client ranks
    writer: RunWriter | None  # rank 0
    first_round: int
    n_domains: int
    zero_shot: list | None  # rank 0 of a fresh run with eval_zero_shot: per rank {client: metrics}
    n_shared: int  # floats in the shared buffer
    n_published: int  # floats a client publishes per round (0: the method publishes nothing)
    payload: tuple[int, int]  # floats a participating client uploads and downloads per round
    update: SharedUpdate  # what becomes of the clients' shared parameters each round (hpcfed.update)


@contextmanager
def _discarded_on_failure(staged: Path | None):
    try:
        yield
    except BaseException:
        if staged is not None:
            staged.unlink(missing_ok=True)
        raise


def set_up(cfg: Config, rt: Runtime, overwrite: bool, resume: str) -> RunSetup | None:
    """Collective: the set-up of a training run; None when the run file already finished every round."""
    from hpcfed.config.validate import validate_launch

    world = rt.world
    agree(world, lambda: validate_launch(cfg, rt.size))
    listing = agree(world, lambda: read_listing(cfg, quiet=not rt.is_server))  # every rank needs the paths
    start = world.bcast(agree(world, lambda: resume_point(cfg, resume, overwrite) if rt.is_server else None),
                        root=SERVER)
    if nothing_left(cfg, start):
        if rt.is_server:
            sys.stdout.write(f"{cfg.output_path} already finished all {cfg.rounds} rounds; nothing to resume\n")
        return None
    listing, prepared = shared_splits(cfg, rt, listing, overwrite, resume != "never")
    with _discarded_on_failure(prepared.staged):  # the replaced run stays whole until the new one starts
        if rt.is_server and prepared.reused:
            sys.stdout.write(f"using the splits stored in {cfg.output_path}\n")
        splits = prepared.splits
        placement = place_clients(splits.train_sizes(), rt.size - 1)
        my_clients = [] if rt.is_server else placement[rt.rank - 1]
        host = agree(world, lambda: None if rt.is_server else build_host(cfg, rt, listing, splits, my_clients))
        zero_shot = None
        if cfg.eval_zero_shot and start is None:  # before the feature cache: the baseline reads pixels
            zero_shot = rt.gather_to_server(agree(world, lambda: zero_shot_metrics(cfg, rt, listing, splits, host)))
        if cfg.extract.enabled:
            from hpcfed.extract.stage import prepare_cache

            cache, cut = prepare_cache(cfg, rt, host, listing, splits)
            agree(world, lambda: host is None or host.use_feature_cache(cache, cut))
        # The server builds no model: the reference client rank tells it the buffer sizes and payloads.
        layout = (host.n_shared, host.n_published, host.method.upload_download_floats(host.n_shared)) \
            if rt.is_reference else None
        n_shared, n_published, payload = world.bcast(layout, root=rt.reference_rank)
        update = SharedUpdate(cfg, n_shared, splits.train_sizes())
        env = collect_env(cfg, rt, placement)
        # auto without a checkpoint replaces a partial run
        replace = overwrite or (resume != "never" and start is None)
        n_domains = len(listing.domain_names)
        writer = agree(world, lambda: open_writer(cfg, rt, start, env, n_domains, replace, prepared.staged)
                       if rt.is_server else None)
        if start is not None:
            agree(world, lambda: checkpoint.load(start.path, host, update))
            if rt.is_server:
                sys.stdout.write(f"resuming {cfg.output_path} at round {start.round + 1} from {start.path}\n")
        return RunSetup(splits, placement, my_clients, host, writer, 0 if start is None else start.round, n_domains,
                        zero_shot, n_shared, n_published, payload, update)


def extract_only(cfg: Config, rt: Runtime, overwrite: bool = False) -> Path:
    """`hpcfed extract`: the splits of the run (made or reused, as `train` would), then the feature cache. Every
    client rank extracts a slice (rank 0 alone when the job has one rank)."""
    from hpcfed.extract.stage import prepare_cache

    listing = agree(rt.world, lambda: read_listing(cfg, quiet=not rt.is_server))
    listing, prepared = shared_splits(cfg, rt, listing, overwrite=False, resuming=True)
    extracts = rt.size == 1 or not rt.is_server
    host = agree(rt.world, lambda: build_host(cfg, rt, listing, prepared.splits, []) if extracts else None)
    path, _ = prepare_cache(cfg, rt, host, listing, prepared.splits, overwrite)
    return path

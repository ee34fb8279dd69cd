"""The federated round loop, in the order of the papers' algorithm box:
sample clients -> local training -> pack shared -> Allreduce -> unpack -> evaluate -> log."""

from __future__ import annotations

import socket
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from hpcfed.config import Config
from hpcfed.config.validate import validate_launch
from hpcfed.data import load_listing
from hpcfed.errors import CheckpointError, DataError, RunFileExists
from hpcfed.metrics import format_duration, select_round
from hpcfed.results import CLIENT_METRICS, PHASES, RunWriter
from hpcfed.rng import Stream, sample_clients, torch_seed
from hpcfed.split.stage import prepare_splits
from hpcfed.train import checkpoint
from hpcfed.train.checkpoint import EXIT_CHECKPOINTED, Checkpoint
from hpcfed.train.runtime import SERVER, RemoteRankFailed, Runtime, agree, place_clients
from hpcfed.train.signals import StopRequest

RESUME_MODES = ("auto", "never")  # or the path of one checkpoint directory


@dataclass
class RoundEvent:
    """What callbacks see around each aggregation (tests and tools hook in here; the loop never changes)."""

    stage: str  # "trained" (local training done, before the Allreduce) or "aggregated" (after it)
    round: int
    selected: np.ndarray
    buffer: np.ndarray
    host: object | None  # ClientHost on client ranks


@dataclass
class TrainResult:
    rounds_done: int
    final_test_accuracy: np.ndarray | None = None  # server only
    first_test_accuracy: np.ndarray | None = None


def build_host(cfg: Config, rt: Runtime, listing, splits, my_clients: list[int]):
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
    images = ImageSource(listing, preprocess, cache=cfg.data.cache_images, invert=cfg.data.invert)
    return ClientHost(cfg, clip, added, method, images, listing.labels, listing.class_names, tokenizer, splits,
                      my_clients, rt.device)


def collect_env(cfg: Config, rt: Runtime, placement: list[list[int]]) -> dict:
    import h5py
    import mpi4py
    import open_clip
    import torch
    from mpi4py import MPI

    import hpcfed

    hosts = rt.world.gather((socket.gethostname(), rt.device), root=SERVER)
    if not rt.is_server:
        return {}
    from hpcfed.env import git_commit

    return {
        "hpcfed": hpcfed.__version__, "torch": torch.__version__, "open_clip": open_clip.__version__,
        "mpi4py": mpi4py.__version__, "h5py": h5py.__version__, "numpy": np.__version__,
        "mpi_library": MPI.Get_library_version().strip().splitlines()[0], "git_commit": git_commit(),
        "python": sys.version.split()[0], "world_size": rt.size, "hostnames": [h for h, _ in hosts],
        "devices": [d for _, d in hosts], "placement": str(placement),
    }


def _same_listing(listing, splits) -> None:
    if listing.digest() != splits.listing_digest:
        raise DataError(f"this rank sees a different dataset listing ({listing.digest()}) than the one the splits "
                        f"were made from ({splits.listing_digest}); every node must see the same files under "
                        f"{listing.root}")


def is_eval_round(cfg: Config, r: int) -> bool:
    return (r + 1) % cfg.eval_every == 0 or r == 0 or r == cfg.rounds - 1


def resume_point(cfg: Config, resume: str, overwrite: bool) -> Checkpoint | None:
    """Where training starts (rank 0): None for round 0, else the checkpoint to continue from."""
    root = checkpoint.checkpoint_root(cfg.output_path)
    if resume == "never":
        if overwrite:
            import shutil

            shutil.rmtree(root, ignore_errors=True)  # checkpoints of the replaced run must not be resumed later
        return None
    if overwrite:
        raise RunFileExists("--overwrite starts the run again and --resume continues it: pass only one of them")
    if resume != "auto":
        try:
            return checkpoint.verify(Path(resume), cfg.experiment_digest(), cfg.clients)
        except CheckpointError as e:
            raise CheckpointError(f"cannot resume from {resume}: {e}") from None
    trained = False
    if cfg.output_path.exists():
        from hpcfed.results import open_run

        with open_run(cfg.output_path) as f:
            trained = "metrics" in f
            if f["status"].asstr()[()] == "finished":
                return Checkpoint(cfg.output_path, cfg.rounds, cfg.rounds)  # nothing left to run
    found = checkpoint.find(root, cfg.experiment_digest(), cfg.clients)
    if found is None and trained:
        sys.stdout.write(f"no checkpoint of {cfg.output_path} yet: starting from round 0\n")
    return found


def run(cfg: Config, rt: Runtime, overwrite: bool = False,
        callbacks: list[Callable[[RoundEvent], None]] | None = None, resume: str = "never",
        stop: StopRequest | None = None) -> TrainResult:
    world = rt.world
    stop = stop or StopRequest()  # from here on a SIGUSR1/SIGTERM checkpoints at the next round boundary
    agree(world, lambda: validate_launch(cfg, rt.size))
    # Every rank reads the listing (it needs the paths); rank 0 makes or reuses the splits and shares them.
    listing = agree(world, lambda: load_listing(cfg.data.dataset, cfg.data.root, cfg.data.domains,
                                                cfg.data.class_names_file))
    start = agree(world, lambda: resume_point(cfg, resume, overwrite) if rt.is_server else None)
    start = world.bcast(start, root=SERVER)
    if start is not None and start.round >= cfg.rounds:
        if rt.is_server:
            sys.stdout.write(f"{cfg.output_path} already finished all {cfg.rounds} rounds; nothing to resume\n")
        return TrainResult(cfg.rounds)
    fresh = overwrite or (resume != "never" and start is None)  # auto without a checkpoint replaces a partial run
    prepared = agree(world, lambda: prepare_splits(cfg, listing, overwrite, resume != "never") if rt.is_server
                                         else None)
    prepared = world.bcast(prepared, root=SERVER)
    splits = prepared.splits
    listing = listing.without(prepared.unreadable)  # rank 0 found these images unreadable before splitting
    agree(world, lambda: _same_listing(listing, splits))
    if rt.is_server and prepared.reused:
        sys.stdout.write(f"using the splits stored in {cfg.output_path}\n")
    placement = place_clients(splits.train_sizes(), rt.size - 1)
    my_clients = [] if rt.is_server else placement[rt.rank - 1]
    host = agree(world, lambda: None if rt.is_server else build_host(cfg, rt, listing, splits, my_clients))
    if cfg.extract.enabled:
        from hpcfed.extract.stage import prepare_cache, use_cache

        cache, cut = prepare_cache(cfg, rt, host, listing, splits)
        agree(world, lambda: host is None or use_cache(host, cache, cut))
    # What the server needs to know of the model without building one: buffer sizes and payloads.
    layout = (host.n_shared, host.n_published, host.method.upload_download_floats(host.n_shared)) if rt.rank == 1 \
        else None
    n_shared, n_published, (up_floats, down_floats) = world.bcast(layout, root=1)
    env = collect_env(cfg, rt, placement)
    writer = agree(world, lambda: (RunWriter.resume(cfg.output_path, start.rows, rt.size) if start else RunWriter(
        cfg.output_path, config_yaml=cfg.to_yaml(), config_hash=cfg.digest(), env=env, n_clients=cfg.clients,
        rounds=cfg.rounds, n_ranks=rt.size, n_domains=len(listing.domain_names), replace=fresh))
        if rt.is_server else None)
    first = 0 if start is None else start.round
    if start is not None:
        agree(world, lambda: host is None or checkpoint.load(start.path, host))
        if rt.is_server:
            sys.stdout.write(f"resuming {cfg.output_path} at round {first + 1} from {start.path}\n")

    n_clients, result = cfg.clients, TrainResult(first)
    recorder = Recorder(cfg, writer, splits, len(listing.domain_names), first) if rt.is_server else None
    try:
        for r in range(first, cfg.rounds):
            round_start = time.perf_counter()
            timing = dict.fromkeys(PHASES, 0.0)
            selected = sample_clients(cfg.seed, r, n_clients, cfg.participation)
            metrics: dict[int, dict[str, float]] = {c: {} for c in my_clients}
            buffer = rt.shared_buffer(n_shared + 1)  # server and non-participants add zeros

            # Local training; contributions are summed in float64 so the float32 average does not depend
            # on how the participating clients are spread over ranks.
            published = np.zeros((n_clients, n_published + 1), dtype=np.float32) if n_published else None
            t = time.perf_counter()
            chosen = set(selected.tolist())
            for c in (c for c in my_clients if c in chosen):
                client = host.clients[c]
                metrics[c]["train_loss"] = host.train(client, r)
                weight = float(len(client.split.train))
                buffer[:-1] += weight * host.shared_contribution(like=buffer)
                buffer[-1] += weight
                if published is not None:
                    published[c, :-1], published[c, -1] = host.published_contribution(client), 1.0
            timing["train"] = time.perf_counter() - t

            for callback in callbacks or []:
                callback(RoundEvent("trained", r, selected, buffer, host))
            t = time.perf_counter()
            if n_shared > 0:
                rt.allreduce_shared(buffer)
                if host is not None:
                    host.set_global(buffer)
            if published is not None:
                rt.allreduce_published(published)
                if host is not None:
                    host.set_published(published[:, :-1], published[:, -1])
            timing["aggregate"] = time.perf_counter() - t
            for callback in callbacks or []:
                callback(RoundEvent("aggregated", r, selected, buffer, host))

            # Every client is evaluated, not only the participants (methods.md §1.11).
            t = time.perf_counter()
            evaluate = is_eval_round(cfg, r)
            if evaluate:
                for c in my_clients:
                    metrics[c].update(host.evaluate(host.clients[c]))
            timing["evaluate"] = time.perf_counter() - t

            gathered = rt.gather_to_server((metrics, timing))
            if recorder is not None:
                comm = {"up": np.zeros(n_clients, dtype=np.int64), "down": np.zeros(n_clients, dtype=np.int64)}
                comm["up"][selected], comm["down"][selected] = 4 * up_floats, 4 * down_floats  # fp32 payloads
                recorder.round(r, selected, evaluate, gathered, comm, round_start)
            result.rounds_done = r + 1
            if _round_boundary(cfg, rt, stop, host, r + 1):
                if writer is not None:
                    writer.close("interrupted")
                    sys.stdout.write(f"stopped by {stop.received or 'a signal on another rank'} after round {r + 1}"
                                     f"; checkpoint written; continue with --resume auto (exit {EXIT_CHECKPOINTED})\n")
                    sys.stdout.flush()
                raise SystemExit(EXIT_CHECKPOINTED)
    except SystemExit:
        raise
    except RemoteRankFailed as e:
        if writer is not None:
            writer.close("failed", e.message, e.rank)
        raise
    except BaseException:
        if writer is not None:
            writer.close("failed", traceback.format_exc(), rt.rank)
        raise
    finally:
        stop.restore()
    if recorder is not None:
        result.first_test_accuracy, result.final_test_accuracy = recorder.finish()
    return result


def _round_boundary(cfg: Config, rt: Runtime, stop: StopRequest, host, rounds_done: int) -> bool:
    """Checkpoint when due or asked to; True when a signal asked the job to stop (all ranks agree on it)."""
    stopping = rt.any_rank(stop.received is not None) and rounds_done < cfg.rounds
    every = cfg.runtime.checkpoint_every
    if stopping or (every and rounds_done % every == 0 and rounds_done < cfg.rounds):
        checkpoint.save(rt, checkpoint.checkpoint_root(cfg.output_path), rounds_done, rounds_done,
                        cfg.experiment_digest(), host, cfg.runtime.checkpoint_keep)
    return stopping


class Recorder:
    """Rank 0's side of a round: assemble the gathered rows, write them, print one progress line, and at
    the end store the selected and last rounds in /final."""

    def __init__(self, cfg: Config, writer: RunWriter, splits, n_domains: int, first_round: int = 0):
        self.cfg, self.writer, self.n_domains, self.first_round = cfg, writer, n_domains, first_round
        self.client_domain = np.array([c.domain for c in splits.clients])
        # Rounds evaluated before a resume come back from the run file, for the model selection at the end.
        self.evaluated = {r: {name: writer.file[f"metrics/client/{name}"][r] for name in CLIENT_METRICS}
                          for r in range(first_round) if is_eval_round(cfg, r)}
        self.started = time.perf_counter()

    def round(self, r: int, selected: np.ndarray, evaluate: bool, gathered: list, comm: dict, round_start: float):
        t = time.perf_counter()
        rows = {name: np.full(self.cfg.clients, np.nan) for name in CLIENT_METRICS}
        for rank_metrics, _ in gathered:
            for c, values in rank_metrics.items():
                for name, v in values.items():
                    rows[name][c] = v
        round_seconds = time.perf_counter() - round_start
        mean_acc = float(np.nanmean(rows["test_accuracy"])) if evaluate else float("nan")
        train_losses = rows["train_loss"][np.isfinite(rows["train_loss"])]
        global_row = {"mean_test_accuracy": mean_acc,
                      "mean_train_loss": float(train_losses.mean()) if len(train_losses) else float("nan"),
                      "participants": len(selected), "round_seconds": round_seconds}
        timing_rows = {p: np.array([g[1][p] for g in gathered]) for p in PHASES}
        timing_rows["io"][SERVER] = time.perf_counter() - t
        self.writer.write_round(r, rows, global_row, timing_rows, comm)
        if evaluate:
            self.evaluated[r] = rows
        elapsed = time.perf_counter() - self.started
        comm_share = float(np.mean(timing_rows["aggregate"][1:]) / max(round_seconds, 1e-9))
        eta = elapsed / (r + 1 - self.first_round) * (self.cfg.rounds - r - 1)
        sys.stdout.write(
            f"round {r + 1:>3}/{self.cfg.rounds}  test acc {mean_acc:.3f}  "
            f"train loss {global_row['mean_train_loss']:.3f}  {round_seconds:.2f} s/round  "
            f"comm {comm_share:.1%}  ETA {format_duration(eta)}\n")
        sys.stdout.flush()

    def finish(self) -> tuple[np.ndarray, np.ndarray]:
        rounds = sorted(self.evaluated)
        chosen, how = select_round(rounds, {r: self.evaluated[r]["val_accuracy"] for r in rounds})
        for which, r in (("selected", chosen), ("last", rounds[-1])):
            self.writer.write_final(which, r, self.evaluated[r], self.client_domain, self.n_domains)
        self.writer.write_selection(how)
        self.writer.close("finished")
        return self.evaluated[rounds[0]]["test_accuracy"], self.evaluated[rounds[-1]]["test_accuracy"]

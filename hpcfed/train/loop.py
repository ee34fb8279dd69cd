"""The federated round loop, in the order of the papers' algorithm box:
sample clients -> local training -> pack shared -> Allreduce -> unpack -> evaluate -> log.
Set-up is in setup.py, aggregation in aggregate.py, rank 0's record of each round in recorder.py."""

from __future__ import annotations

import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass

import numpy as np

from hpcfed.config import Config
from hpcfed.results import PHASES
from hpcfed.rng import sample_clients
from hpcfed.runtime import RemoteRankFailed, Runtime, StopRequest
from hpcfed.train import checkpoint
from hpcfed.train.aggregate import Aggregation
from hpcfed.train.checkpoint import EXIT_CHECKPOINTED
from hpcfed.train.recorder import Recorder, evaluated_clients, is_eval_round
from hpcfed.train.setup import set_up
from hpcfed.update import RoundPlan, SharedUpdate


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


def run(cfg: Config, rt: Runtime, overwrite: bool = False,
        callbacks: list[Callable[[RoundEvent], None]] | None = None, resume: str = "never",
        stop: StopRequest | None = None) -> TrainResult:
    owned = stop is None  # the caller that installed a StopRequest restores it (hpcfed train: after the run)
    stop = stop or StopRequest()  # from here on a stop signal checkpoints at the next round boundary
    setup = set_up(cfg, rt, overwrite, resume)
    if setup is None:
        return TrainResult(cfg.rounds)
    stop.rounds_started()
    host, writer, my_clients = setup.host, setup.writer, setup.my_clients
    result = TrainResult(setup.first_round)
    recorder = Recorder(cfg, writer, setup.splits, setup.n_domains, setup.first_round) if rt.is_server else None
    if recorder is not None and setup.zero_shot is not None:
        recorder.zero_shot(setup.zero_shot)
    callbacks = callbacks or []
    held_out = set(() if setup.splits.holdout_clients is None else setup.splits.holdout_clients.tolist())
    try:
        for r in range(setup.first_round, cfg.rounds):
            round_start = time.perf_counter()
            timing = dict.fromkeys(PHASES, 0.0)
            selected = sample_clients(cfg.seed, r, cfg.clients, cfg.participation, setup.splits.holdout_clients)
            plan = setup.update.plan(r, selected)  # who trains and whose update reaches the sum
            metrics: dict[int, dict[str, float]] = {c: {} for c in my_clients}

            t = time.perf_counter()
            aggregation = Aggregation(rt, setup.update, plan, setup.n_published, cfg.clients)
            contributes = set(plan.contributes.tolist())
            for c in sorted(set(my_clients) & set(plan.trains.tolist())):
                metrics[c]["train_loss"] = host.train(host.clients[c], r)
                if c in contributes:
                    aggregation.add(host, host.clients[c])
            timing["train"] = time.perf_counter() - t

            for callback in callbacks:
                callback(RoundEvent("trained", r, selected, aggregation.buffer, host))
            t = time.perf_counter()
            aggregation.allreduce_and_apply(host)
            timing["aggregate"] = time.perf_counter() - t
            for callback in callbacks:
                callback(RoundEvent("aggregated", r, selected, aggregation.buffer, host))

            # Every client is evaluated, not only the participants (methods.md §1.11); held-out ones as new clients;
            # with train.eval_clients, a sample of them before the last round.
            t = time.perf_counter()
            evaluate = is_eval_round(cfg, r)
            sample = evaluated_clients(cfg, r)
            scored = my_clients if sample is None else sorted(set(my_clients) & set(sample.tolist()))
            for c in scored if evaluate else ():
                metrics[c].update(host.evaluate_new_client(host.clients[c], r) if c in held_out
                                  else host.evaluate(host.clients[c]))
            timing["evaluate"] = time.perf_counter() - t

            gathered = rt.gather_to_server((metrics, timing))
            if recorder is not None:
                recorder.round(r, selected, evaluate, gathered, _bytes_moved(cfg, setup.payload, plan, setup.update),
                               round_start, setup.update.record(plan))
            result.rounds_done = r + 1
            if _round_boundary(cfg, rt, stop, host, setup.update, r + 1):
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
    except KeyboardInterrupt:  # a second Ctrl-C: the newest checkpoint is still valid
        if writer is not None:
            writer.close("interrupted", "stopped at once by a second Ctrl-C; continue from the newest checkpoint "
                         "with --resume auto", rt.rank)
        raise
    except BaseException:
        if writer is not None:
            writer.close("failed", traceback.format_exc(), rt.rank)
        raise
    finally:
        if owned:
            stop.restore()
    if recorder is not None:
        result.first_test_accuracy, result.final_test_accuracy = recorder.finish()
    return result


def _bytes_moved(cfg: Config, payload: tuple[int, int], plan: RoundPlan, update: SharedUpdate
                 ) -> dict[str, np.ndarray]:
    """Per client, the bytes it moved this round: uploads are the shared update's (fp32, or masked integers with
    the secure aggregation overheads; only updates that reach the sum, and a lost client's keys and shares); every
    client that trained downloaded the global state first (a late one too). A client that dropped out before
    training moved nothing."""
    up_floats, down_floats = payload
    comm = {"up": update.upload_bytes(plan, up_floats), "down": np.zeros(cfg.clients, dtype=np.int64)}
    comm["down"][plan.trains] = 4 * down_floats
    return comm


def _round_boundary(cfg: Config, rt: Runtime, stop: StopRequest, host, update, rounds_done: int) -> bool:
    """Checkpoint when due, asked to, or after the last round (a finished run can be extended with more
    rounds); True when a signal asked the job to stop (all ranks agree on it)."""
    last = rounds_done == cfg.rounds
    stopping = rt.any_rank(stop.received is not None) and not last
    every = cfg.runtime.checkpoint_every
    if stopping or last or (every and rounds_done % every == 0):
        checkpoint.save(rt, checkpoint.checkpoint_root(cfg.output_path), rounds_done, rounds_done,
                        cfg.experiment_digest(), host, cfg.runtime.checkpoint_keep, cfg.experiment(), update)
    return stopping

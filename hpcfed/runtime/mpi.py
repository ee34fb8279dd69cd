"""The MPI runtime: who is the server, which clients live on which rank, the device of each rank, and
the one collective that moves model state (an Allreduce of the shared buffer). Knows no method."""

from __future__ import annotations

import os
import socket
import sys
import time
import traceback
from collections.abc import Mapping
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np

from hpcfed.errors import UserError
from hpcfed.runtime.signals import EXIT_INTERRUPTED, EXIT_STOPPED, Stopped, stop_in_setup

SERVER = 0
# The first client rank speaks for all of them where one must: it tells the server the buffer sizes, writes the
# global shared state into checkpoints and describes the feature cache. Every client rank holds the same
# global state after the Allreduce, so any would do; a job of one rank (`hpcfed extract`) uses the server.
REFERENCE_CLIENT_RANK = 1
FAILURE_TAG = 77  # a client rank's traceback, sent to the server before the job is aborted


class RemoteRankFailed(RuntimeError):
    def __init__(self, rank: int, message: str):
        super().__init__(f"rank {rank} failed:\n{message}")
        self.rank, self.message = rank, message


def place_clients(train_sizes: np.ndarray, n_client_ranks: int) -> list[list[int]]:
    """Fixed client->rank map balanced by sample count: largest client first onto the lightest rank.
    Depends only on the sizes, so every rank computes the same map."""
    loads = np.zeros(n_client_ranks)
    placement: list[list[int]] = [[] for _ in range(n_client_ranks)]
    for client in sorted(range(len(train_sizes)), key=lambda c: (-int(train_sizes[c]), c)):
        target = int(np.argmin(loads))  # ties go to the lowest rank
        placement[target].append(client)
        loads[target] += train_sizes[client]
    return [sorted(clients) for clients in placement]


@dataclass
class Runtime:
    world: object  # mpi4py MPI.Comm
    shared_comm: object  # a communicator that exists for the shared-parameter buffer alone
    local_rank: int  # rank among the processes of this node
    device: str
    poll_interval: float = 0.001  # seconds between tests of a pending collective; 0 blocks inside MPI
    cuda_aware: bool = False  # hand device memory to MPI directly (runtime.cuda_aware_mpi)
    published_comm: object = None  # created on first use, only by methods that publish per-client values
    hosts: tuple[str, ...] = ()  # host name of every rank

    @property
    def rank(self) -> int:
        return self.world.Get_rank()

    @property
    def size(self) -> int:
        return self.world.Get_size()

    @property
    def is_server(self) -> bool:
        return self.rank == SERVER

    @property
    def reference_rank(self) -> int:
        return REFERENCE_CLIENT_RANK if self.size > 1 else SERVER

    @property
    def is_reference(self) -> bool:
        return self.rank == self.reference_rank

    def _wait(self, request) -> None:
        # A rank blocked inside MPI busy-polls; on an oversubscribed node it steals the core of a rank
        # that is still computing. Sleeping between tests hands the core back.
        if self.poll_interval <= 0 and not self.is_server:
            request.Wait()
            return
        while not request.Test():
            if self.is_server:
                self._raise_remote_failure()
            time.sleep(max(self.poll_interval, 1e-4))

    def _raise_remote_failure(self) -> None:
        # The server waits in this loop whenever a client rank could fail, so it can record why before the abort.
        from mpi4py import MPI

        status = MPI.Status()
        if self.world.Iprobe(source=MPI.ANY_SOURCE, tag=FAILURE_TAG, status=status):
            message = self.world.recv(source=status.Get_source(), tag=FAILURE_TAG)
            raise RemoteRankFailed(status.Get_source(), message)

    def any_rank(self, flag: bool) -> bool:
        """True on every rank when `flag` is set on at least one (e.g. a signal that reached one rank)."""
        from mpi4py import MPI

        value = np.array([int(flag)], dtype=np.int32)
        self._wait(self.world.Iallreduce(MPI.IN_PLACE, value, op=MPI.MAX))
        return bool(value[0])

    def shared_buffer(self, n: int):
        """Zeros for the Allreduce of the shared state. On a GPU rank: pinned host memory (the parameters are
        staged through it by DMA), or with a CUDA-aware MPI a buffer on the device itself, so the sum never
        leaves the GPU. On CPU the device path is exercised with a CPU tensor, through the same code."""
        import torch

        if self.cuda_aware:
            return torch.zeros(n, dtype=torch.float64, device=self.device)
        if self.device.startswith("cuda"):
            return torch.zeros(n, dtype=torch.float64, pin_memory=True).numpy()
        return np.zeros(n, dtype=np.float64)

    def allreduce_shared(self, buffer) -> None:
        """Sum `buffer` over all ranks in place: weighted shared parameters plus the weight total. Any numeric
        dtype: unsigned integers wrap modulo 2^k (what masked sums rely on)."""
        from mpi4py import MPI

        self._wait(self.shared_comm.Iallreduce(MPI.IN_PLACE, buffer, op=MPI.SUM))

    def allreduce_published(self, table: np.ndarray) -> None:
        """Sum the per-client published rows (each row written by the one rank hosting that client), for
        methods whose clients read other clients' latest values; a communicator of its own."""
        from mpi4py import MPI

        if self.published_comm is None:
            self.published_comm = self.world.Dup()
        self._wait(self.published_comm.Iallreduce(MPI.IN_PLACE, table, op=MPI.SUM))

    def barrier(self) -> None:
        self._wait(self.world.Ibarrier())

    def gather_to_server(self, obj):
        """Per-rank metrics and timings to rank 0 (telemetry on the world communicator, not model state)."""
        self._wait(self.world.Ibarrier())
        return self.world.gather(obj, root=SERVER)


def node_layout(world) -> tuple[list[str], int, int]:
    """(host name of every rank, this rank's index among the ranks on its host, its client index there: one less
    when the server shares the host). Collective. By host name, not by MPI's COMM_TYPE_SHARED split: that follows
    the MPI library's node map, which some launches get wrong (srun -m arbitrary with pmi2 and the PyPI MPICH makes
    every rank a node of its own, so every client rank of a node would take GPU 0)."""
    hosts = world.allgather(socket.gethostname())
    rank = world.Get_rank()
    here = [r for r, host in enumerate(hosts) if host == hosts[rank]]
    local_rank = here.index(rank)
    return hosts, local_rank, local_rank - int(SERVER in here)


def visible_gpus() -> int:
    import torch

    return torch.cuda.device_count() if torch.cuda.is_available() else 0


def choose_device(client_index: int, is_server: bool, requested: str, gpus: int) -> str:
    """GPU = node-local client index modulo the visible devices; the server rank takes none; CPU without GPUs."""
    if is_server or requested == "cpu" or gpus == 0:
        return "cpu"
    return f"cuda:{client_index % gpus}"


def bind_device(client_index: int, is_server: bool, requested: str) -> str:
    """The device of `choose_device`, made current before any other CUDA call."""
    gpus = visible_gpus()
    if requested == "cuda" and not is_server and gpus == 0:
        raise RuntimeError("runtime.device is 'cuda' but no GPU is visible on this node; use device: auto")
    device = choose_device(client_index, is_server, requested, gpus)
    if device != "cpu":
        import torch

        torch.cuda.set_device(int(device.split(":")[1]))
    return device


def mpi_reports_cuda() -> bool | None:
    """Whether the MPI library says it is CUDA-aware (MPIX_Query_cuda_support); None when it cannot say."""
    from mpi4py import MPI

    query = getattr(MPI, "Query_cuda_support", None)
    return bool(query()) if query else None


def mpich_netmod(env: Mapping[str, str], library_version: str) -> str | None:
    """The netmod an MPICH built with both UCX and OFI must use for this launch, where its default (UCX) cannot
    start it: a step of Slurm's pmi2 plugin over several nodes. MPI_Init then exchanges the node roots' UCX
    addresses through pmi2 as values of several segments, and slurmstepd receives them broken ("mpi/pmi2: value
    not properly terminated in client request"; the values carried heap bytes from beyond the address), so
    MPICH fails with "UCX ERROR failed to unpack address" or hangs, depending on the process's memory layout.
    Measured with the PyPI mpich 5.0.2 under Slurm 22.05 on two nodes: 2 to 4 of 6 starts of `hpcfed train`
    failed; none with OFI (one short address), none under hydra's mpiexec. None keeps the library's choice: one
    node, another launcher or MPI, or MPIR_CVAR_CH4_NETMOD set by the user."""
    device = next((line for line in library_version.splitlines() if line.startswith("MPICH Device:")), "")
    if "ucx" not in device or "ofi" not in device or "MPIR_CVAR_CH4_NETMOD" in env:
        return None
    slurm_pmi2 = "PMI_FD" in env and "MPI_LOCALNRANKS" not in env  # hydra's proxy alone sets MPI_LOCALNRANKS
    nodes = env.get("SLURM_STEP_NUM_NODES", "")
    return "ofi" if slurm_pmi2 and nodes.isdigit() and int(nodes) > 1 else None


def mpi_not_started():
    """mpi4py's MPI module, imported without starting MPI (`start_mpi` does, once the netmod is chosen)."""
    import mpi4py

    if "mpi4py.MPI" not in sys.modules:  # a test process may have started MPI already
        mpi4py.rc.initialize, mpi4py.rc.finalize = False, True
    from mpi4py import MPI

    return MPI


def start_mpi():
    """MPI_Init_thread (unless MPI runs already) with the netmod `mpich_netmod` asks for; the MPI module."""
    MPI = mpi_not_started()
    if not MPI.Is_initialized():
        netmod = mpich_netmod(os.environ, MPI.Get_library_version())
        if netmod is not None:
            os.environ["MPIR_CVAR_CH4_NETMOD"] = netmod  # read by MPICH in MPI_Init
        MPI.Init_thread()
    return MPI


def init_runtime(device: str = "auto", threads: int = 1, poll_interval: float = 0.001,
                 cuda_aware_mpi: bool = False) -> Runtime:
    MPI = start_mpi()  # `hpcfed train` checks the launcher with MPI loaded but not yet started
    world = MPI.COMM_WORLD
    hosts, local_rank, client_index = node_layout(world)
    import torch

    torch.set_num_threads(threads)
    bound = bind_device(client_index, world.Get_rank() == SERVER, device)
    if cuda_aware_mpi and bound.startswith("cuda") and not mpi_reports_cuda():
        raise RuntimeError(f"runtime.cuda_aware_mpi is true but the MPI library ({MPI.Get_library_version()[:60]}) "
                           "does not report CUDA support; set it to false (buffers are then staged through pinned "
                           "host memory) or load a CUDA-aware MPI build")
    return Runtime(world=world, shared_comm=world.Dup(), local_rank=local_rank, device=bound,
                   poll_interval=poll_interval, cuda_aware=cuda_aware_mpi, hosts=tuple(hosts))


def world_rank_from_env() -> int | None:
    """This process's rank as the launcher announces it, readable before MPI is initialised."""
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID", "MV2_COMM_WORLD_RANK"):
        if os.environ.get(var, "").isdigit():
            return int(os.environ[var])
    return None


@contextmanager
def abort_on_error(world):
    """One rank's exception ends the whole job (MPI Abort) with that rank's traceback, never a hang."""
    try:
        yield
    except SystemExit:
        raise
    except KeyboardInterrupt:  # a second Ctrl-C reached every rank: no traceback, no wait for the server
        if world.Get_rank() == SERVER:
            sys.stderr.write("hpcfed: stopped at once by a second Ctrl-C; the rounds since the newest checkpoint are "
                             "lost: continue from it with --resume auto\n")
            sys.stderr.flush()
        os._exit(EXIT_INTERRUPTED)
    except BaseException as e:
        # Bad input found mid-run (an image damaged since the split) is one line; anything else is a bug: traceback.
        text = f"error: {e}" if isinstance(e, UserError) else traceback.format_exc()
        rank = world.Get_rank()
        if isinstance(e, UserError):
            sys.stderr.write(f"hpcfed (rank {rank} on {socket.gethostname()}): {text}\n")
            sys.stderr.flush()
        elif not isinstance(e, RemoteRankFailed):
            sys.stderr.write(f"hpcfed: rank {rank} of {world.Get_size()} failed on {socket.gethostname()}; aborting "
                             f"the job\n{text}")
            sys.stderr.flush()
        if rank != SERVER:
            # Let the server store the message in the run file; it aborts the job once it has (a few seconds).
            request = world.issend(text, dest=SERVER, tag=FAILURE_TAG)
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline and not request.Test():
                time.sleep(0.05)
            time.sleep(5)
        world.Abort(1)


def agree(world, fn):
    """Run `fn` on every rank; if it fails on any, all ranks stop cleanly and rank 0 reports the first failure, with
    the ranks and hosts it failed on unless it failed everywhere. Used for set-up steps (validation, data listing,
    splits) so bad input never hangs the other ranks."""
    try:
        result, error = fn(), None
    except Stopped:
        result, error = None, None
    except UserError as e:
        result, error = None, f"error: {e}"
    except Exception:
        result, error = None, traceback.format_exc()
    gathered = world.allgather((error, stop_in_setup(), socket.gethostname()))
    failed = [(rank, e) for rank, (e, _, _) in enumerate(gathered) if e]
    stopped = [s for _, s, _ in gathered if s]
    if stopped and not failed:
        if world.Get_rank() == SERVER:
            sys.stderr.write(f"hpcfed: stopped by {stopped[0]} during set-up, before this job ran a round (nothing new "
                             f"to checkpoint); continue with --resume auto (exit {EXIT_STOPPED})\n")
            sys.stderr.flush()
        raise SystemExit(EXIT_STOPPED)
    if failed:
        if world.Get_rank() == SERVER:
            _, message = failed[0]
            hosts = [host for _, _, host in gathered]
            where = "" if len(failed) == world.Get_size() else f" ({ranks_on_hosts([r for r, _ in failed], hosts)})"
            sys.stderr.write(f"hpcfed{where}: {message}\n")
            sys.stderr.flush()
        raise SystemExit(2)
    return result


def ranks_on_hosts(ranks: list[int], hosts: list[str]) -> str:
    """'rank 2 on n2', 'ranks 2, 3 on n2; rank 5 on n3': where something happened, by host (`hosts[rank]`)."""
    by_host: dict[str, list[int]] = {}
    for rank in ranks:
        by_host.setdefault(hosts[rank], []).append(rank)
    return "; ".join(f"rank{'s' if len(on_host) > 1 else ''} {', '.join(map(str, on_host))} on {host}"
                     for host, on_host in by_host.items())

"""The distributed runtime: MPI ranks, device binding, the client -> rank placement, the Allreduce of the shared
buffer, set-up steps every rank agrees on, and stop signals. It knows nothing of any method or dataset."""

from hpcfed.runtime.mpi import (
    SERVER,
    RemoteRankFailed,
    Runtime,
    abort_on_error,
    agree,
    init_runtime,
    place_clients,
    world_rank_from_env,
)
from hpcfed.runtime.signals import EXIT_INTERRUPTED, EXIT_STOPPED, Stopped, StopRequest, raise_if_stopped

__all__ = ["EXIT_INTERRUPTED", "EXIT_STOPPED", "SERVER", "RemoteRankFailed", "Runtime", "StopRequest", "Stopped",
           "abort_on_error", "agree", "init_runtime", "place_clients", "raise_if_stopped", "world_rank_from_env"]

"""pFedMMA under the real CLI, where rank 2 can signal or SIGKILL itself during a chosen round.

HPCFED_TEST_SIGNAL_IN=r: rank 2 sends itself SIGUSR1 as its first client starts training in round r (0-based;
mid-round, so the run must stop at the next boundary). HPCFED_TEST_KILL_IN=r: it SIGKILLs itself there instead.
Rounds are counted per client, so this needs participation 1.0. Without either variable this is plain pFedMMA,
so reference runs use the same script."""

import os
import signal
import sys
from collections import Counter

from hpcfed.cli import main
from hpcfed.methods.pfedmma import PFedMMA

trained = Counter()
original = PFedMMA.before_local_training


def before_local_training(self, client, published, known, rng):
    from mpi4py import MPI

    round_index = trained[client]
    trained[client] += 1
    if MPI.COMM_WORLD.Get_rank() == 2:
        if str(round_index) == os.environ.get("HPCFED_TEST_SIGNAL_IN"):
            os.kill(os.getpid(), signal.SIGUSR1)
        if str(round_index) == os.environ.get("HPCFED_TEST_KILL_IN"):
            os.kill(os.getpid(), signal.SIGKILL)
    return original(self, client, published, known, rng)


PFedMMA.before_local_training = before_local_training

if __name__ == "__main__":
    sys.exit(main())

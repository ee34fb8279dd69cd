"""A method that raises on one client in round 1, run through the real CLI path under mpiexec."""

import os
import sys
import time

from hpcfed.cli import main
from hpcfed.methods import METHODS
from hpcfed.methods.pfedmma import PFedMMA


@METHODS.register("fails_in_round_one")
class FailsInRoundOne(PFedMMA):
    """Raises on rank 2 when one of its clients starts training for the second time (round 1)."""

    seen: set[int] = set()

    def before_local_training(self, client, published, known, rng):
        from mpi4py import MPI

        if MPI.COMM_WORLD.Get_rank() == 2 and client in FailsInRoundOne.seen:
            # The test measures from this moment, not from the (load-dependent) launch.
            with open(os.environ["HPCFED_TEST_FAILED_AT"], "w") as f:
                f.write(repr(time.time()))
            raise RuntimeError("injected failure on rank 2")
        FailsInRoundOne.seen.add(client)


if __name__ == "__main__":
    sys.exit(main())

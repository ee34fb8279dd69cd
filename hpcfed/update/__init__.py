"""The shared update: what happens to the clients' shared parameters between local training and the next round.

Every rank holds the summed buffer after the Allreduce, so each step after it is a deterministic function that
every rank applies identically (no broadcast, bitwise equal everywhere). In order:
1. plan (dropout.py): which selected clients train and whose update reaches the sum (dropouts, stragglers);
2. client (privacy.py): each contributing client's delta from the global state, clipped, weighted;
3. server (privacy.py): rank 0 adds what belongs to no client (Gaussian noise) into its zeros;
4. transport (secagg.py): the Allreduce of the buffer, float64, or fixed-point integers with pairwise masks;
5. step (server_opt.py): the mean delta applied to the global state by the server optimizer (FedAvg: x + mean).
Each stage is a module with its config section; the round loop talks to `SharedUpdate` only."""

from hpcfed.update.pipeline import RoundPlan, SharedUpdate

__all__ = ["RoundPlan", "SharedUpdate"]

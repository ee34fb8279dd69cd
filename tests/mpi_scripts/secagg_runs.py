"""Two runs of one tiny config with secure aggregation in one MPI job: with pair masks, and with every pair mask
zero (the unmasked fixed-point sum). In round 1 client 1 trains and masks, but its row is lost before the sum,
so the runs with secure aggregation recover its masks. Writes what each rank held after each Allreduce to JSON.

usage: mpiexec -n N python secagg_runs.py OUT.json MASKED.yaml UNMASKED.yaml"""

import dataclasses
import hashlib
import json
import sys

import numpy as np

from hpcfed.config import load_config
from hpcfed.runtime import abort_on_error, init_runtime
from hpcfed.train.loop import run
from hpcfed.update import SharedUpdate
from hpcfed.update.secagg import SecureAggregation

LOST_ROUND, LOST_CLIENT = 1, 1


def plan_losing_one_client(update, r, selected):
    plan = planned(update, r, selected)
    if r != LOST_ROUND:
        return plan
    return dataclasses.replace(plan, contributes=plan.contributes[plan.contributes != LOST_CLIENT],
                               dropped_after_masking=np.array([LOST_CLIENT]))


def zero_masks(self, round_index, client, peers, length):
    return np.zeros(length, self.fixed.unsigned)


planned, masks = SharedUpdate.plan, SecureAggregation.masks


def main(out_path: str, masked: str, unmasked: str) -> None:
    rt = init_runtime(threads=1)
    SharedUpdate.plan = plan_losing_one_client
    seen = []

    def probe(event, name):
        if event.stage == "aggregated" and event.host is not None:
            state = event.host.global_shared.numpy()
            seen.append({"run": name, "round": event.round, "rank": rt.rank,
                         "digest": hashlib.sha256(state.tobytes()).hexdigest()})

    with abort_on_error(rt.world):
        for name, path in (("masked", masked), ("unmasked", unmasked)):
            SecureAggregation.masks = zero_masks if name == "unmasked" else masks
            run(load_config(path), rt, overwrite=True, callbacks=[lambda e, n=name: probe(e, n)])
        everything = rt.world.gather(seen, root=0)
        if rt.rank == 0:
            with open(out_path, "w") as f:
                json.dump([r for records in everything for r in records], f)


if __name__ == "__main__":
    main(*sys.argv[1:])

"""Run the real round loop under mpiexec and record, around every Allreduce, what held-out clients could have
put into it: each rank's own part of the shared buffer's weight slot before the sum, the sum after it, which
rows of the published table are known, and every hosted client's personal state and optimizer steps.

usage: mpiexec -n N python probe_holdout.py OUT.json CONFIG"""

import hashlib
import json
import sys

import numpy as np
import torch

from hpcfed.config import load_config
from hpcfed.runtime import abort_on_error, init_runtime
from hpcfed.train.loop import run


def digest(tensors) -> str:
    flat = torch.cat([t.detach().reshape(-1).cpu() for t in tensors])
    return hashlib.sha256(flat.contiguous().numpy().tobytes()).hexdigest()


def main(out_path: str, config_path: str) -> None:
    rt = init_runtime(threads=1)
    seen = []

    def probe(event):
        host = event.host
        buffer = np.asarray(torch.as_tensor(event.buffer).cpu(), dtype=np.float64)
        record = {"stage": event.stage, "round": event.round, "rank": rt.rank, "selected": event.selected.tolist(),
                  "weight_slot": float(buffer[-1]), "buffer_abs_sum": float(np.abs(buffer).sum())}
        if host is not None:
            record["clients"] = {str(c): {"local": digest(cl.local.values()),
                                          "optimizer_steps": len(cl.optimizer.state_dict()["state"]),
                                          "trained_shared": sorted(cl.trained_shared),
                                          "train_size": len(cl.split.train)}
                                 for c, cl in host.clients.items()}
            if host.published_known is not None:
                record["published_known"] = host.published_known.tolist()
        seen.append(record)

    with abort_on_error(rt.world):
        run(load_config(config_path), rt, overwrite=True, callbacks=[probe])
        everything = rt.world.gather(seen, root=0)
        if rt.rank == 0:
            with open(out_path, "w") as f:
                json.dump([r for records in everything for r in records], f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])

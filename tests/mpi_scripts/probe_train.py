"""Run the real round loop under mpiexec with a probe callback, then write what every rank saw to JSON.
Several configs run one after another in the same MPI job (one launch, many scenarios).

usage: mpiexec -n N python probe_train.py OUT.json CONFIG [CONFIG ...]"""

import hashlib
import json
import sys

import torch

from hpcfed.config import load_config
from hpcfed.runtime import abort_on_error, init_runtime
from hpcfed.train.loop import run


def digest(tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


def flat(tensors) -> torch.Tensor:
    tensors = [t.reshape(-1) for t in tensors]
    return torch.cat(tensors) if tensors else torch.zeros(0)


def main(out_path: str, config_paths: list[str]) -> None:
    rt = init_runtime(threads=1)
    seen = []

    def probe(event, config):
        host = event.host
        record = {"config": config, "stage": event.stage, "round": event.round, "rank": rt.rank,
                  "selected": event.selected.tolist(), "buffer_len": len(event.buffer)}
        if host is not None:
            record["n_shared"] = host.n_shared
            record["n_local"] = sum(p.numel() for p in host.local_params.values())
            record["global_shared"] = digest(host.global_shared)
            record["local"] = {str(c): digest(flat(cl.local.values())) for c, cl in host.clients.items()}
        seen.append(record)

    with abort_on_error(rt.world):
        for path in config_paths:
            run(load_config(path), rt, overwrite=True, callbacks=[lambda e, p=path: probe(e, p)])
        everything = rt.world.gather(seen, root=0)
        if rt.rank == 0:
            with open(out_path, "w") as f:
                json.dump([r for records in everything for r in records], f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2:])

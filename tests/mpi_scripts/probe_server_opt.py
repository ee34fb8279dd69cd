"""The real round loop under mpiexec, recording after each aggregation what every rank holds: its server optimizer
state (digests, and rank 0's values), and on client ranks the global shared state (digest, and rank 1's values).

usage: mpiexec -n N python probe_server_opt.py OUT.json CONFIG [RESUMED_CONFIG]
CONFIG runs uninterrupted. RESUMED_CONFIG (the same experiment, another output) runs one round, then is resumed
from its checkpoint (`resume="auto"`, a fresh set-up in the same job) for the rest of its rounds."""

import hashlib
import json
import sys

from hpcfed.config import load_config
from hpcfed.runtime import abort_on_error, init_runtime
from hpcfed.train.loop import run
from hpcfed.update import SharedUpdate

latest_state = {}  # this rank's server optimizer state after the latest aggregation


def digest(tensor) -> str:
    return hashlib.sha256(tensor.detach().cpu().contiguous().numpy().tobytes()).hexdigest()


original_after_round = SharedUpdate.after_round


def after_round(self, plan, summed):  # every rank, right after the server optimizer's step
    original_after_round(self, plan, summed)
    latest_state.clear()
    latest_state.update(self.optimizer.state_dict())


SharedUpdate.after_round = after_round


def main(out_path: str, config_path: str, resumed_path: str | None) -> None:
    rt = init_runtime(threads=1)
    seen = []

    def probe(event, label):
        if event.stage != "aggregated":
            return
        record = {"run": label, "round": event.round, "rank": rt.rank,
                  "optimizer": {name: digest(value) for name, value in latest_state.items()}}
        if rt.rank == 0:
            record["optimizer_values"] = {name: value.tolist() for name, value in latest_state.items()}
        if event.host is not None:
            record["global_shared"] = digest(event.host.global_shared)
            if rt.rank == 1:
                record["global_shared_values"] = event.host.global_shared.tolist()
        seen.append(record)

    with abort_on_error(rt.world):
        run(load_config(config_path), rt, overwrite=True, callbacks=[lambda e: probe(e, "uninterrupted")])
        if resumed_path:
            run(load_config(resumed_path, ["rounds=1"]), rt, overwrite=True,
                callbacks=[lambda e: probe(e, "before_stop")])
            run(load_config(resumed_path), rt, resume="auto", callbacks=[lambda e: probe(e, "resumed")])
        everything = rt.world.gather(seen, root=0)
        if rt.rank == 0:
            with open(out_path, "w") as f:
                json.dump([r for records in everything for r in records], f)


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2], sys.argv[3] if len(sys.argv) > 3 else None)

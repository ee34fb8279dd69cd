"""One JSON line per rank: its host, node-local rank and the device init_runtime bound it to, and the indices given to
torch.cuda.set_device (tests/test_multinode.py runs it with tests/fake_gpus on PYTHONPATH)."""

import json
import sys

import torch

from hpcfed.runtime.mpi import init_runtime

rt = init_runtime(device="auto")
sys.stdout.write(json.dumps({"rank": rt.rank, "host": rt.hosts[rt.rank], "local_rank": rt.local_rank,
                             "device": rt.device,
                             "set_device": getattr(torch.cuda, "fake_set_device_calls", None)}) + "\n")

"""Pretend CUDA devices for the device-mapping tests (tests/test_multinode.py puts this folder on PYTHONPATH, so every
rank imports it at start-up; hpcfed itself has no test hook). With HPCFED_TEST_FAKE_GPUS=N, torch.cuda answers as on a
node with N GPUs, and set_device records the index it was given instead of calling a driver. Only what device
binding asks is faked: real CUDA work would fail."""

import os

count = int(os.environ.get("HPCFED_TEST_FAKE_GPUS", "0"))
if count:
    import torch

    torch.cuda.fake_set_device_calls = []
    torch.cuda.is_available = lambda: True
    torch.cuda.device_count = lambda: count
    torch.cuda.set_device = torch.cuda.fake_set_device_calls.append

"""The GPU code path, exercised on CPU: autocast by train.precision (amp: fp16 with a per-client gradient scaler in
training, fp32 evaluation; bf16: bf16 in both) and the Allreduce buffer handed to MPI as a device tensor
(runtime.cuda_aware_mpi)."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from hpcfed.config import parse_config
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.split import make_splits
from hpcfed.train.setup import build_host

from conftest import HPCFED, run_mpi, write_config


def metrics(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[f"metrics/client/{k}"][:] for k in f["metrics/client"]}


@pytest.fixture(scope="module")
def fp32_host_buffer(tmp_path_factory, image_tree) -> dict[str, np.ndarray]:
    """A 2-round fp32 run through the host buffer: the reference of both the device-buffer and the amp run."""
    return train(tmp_path_factory.mktemp("fp32") / "host.yaml", image_tree)


def train(cfg_path, image_tree, **overrides) -> dict[str, np.ndarray]:
    cfg = write_config(cfg_path, image_tree, rounds=2, **overrides)
    r = run_mpi(2, [str(HPCFED), "train", str(cfg)])
    assert r.returncode == 0, r.stderr
    return metrics(cfg.with_suffix(".h5"))


def test_device_buffer_path_gives_bitwise_the_metrics_of_the_host_buffer(tmp_path, image_tree, fp32_host_buffer):
    device = train(tmp_path / "device.yaml", image_tree, **{"runtime.cuda_aware_mpi": True})
    assert sorted(device) == sorted(fp32_host_buffer)
    for key in fp32_host_buffer:
        np.testing.assert_array_equal(fp32_host_buffer[key], device[key], err_msg=key)


def test_amp_training_runs_end_to_end_and_stays_close_to_fp32(tmp_path, image_tree, fp32_host_buffer):
    amp = train(tmp_path / "amp.yaml", image_tree, **{"train.precision": "amp"})["train_loss"]
    fp32 = fp32_host_buffer["train_loss"]
    assert np.isfinite(amp[~np.isnan(fp32)]).all()
    assert not np.array_equal(fp32, amp)  # autocast really ran in fp16
    # Round 1 starts every client from the same parameters: fp16 autocast stays within 2% of fp32 there (later
    # rounds start from states that fp16 updates moved apart, so only round 1 is compared).
    np.testing.assert_allclose(amp[0], fp32[0], rtol=0.02)


def host_with(image_tree, precision: str):
    listing = read_imagefolder(image_tree, domain_level=True)
    cfg = parse_config({"clients": 2, "model": {"name": "hpcfed-tiny"}, "method": {"name": "pfedmma"},
                        "data": {"dataset": "imagefolder", "root": str(image_tree), "domains": ["a", "b"]},
                        "partition": {"scheme": "domain_dirichlet", "clients_per_domain": 1},
                        "train": {"lr": 0.01, "batch_size": 8, "precision": precision}})
    return build_host(cfg, SimpleNamespace(device="cpu"), listing, make_splits(listing, cfg.partition, 2, 0), [0, 1])


def record_autocast(host, hook: str, seen: list) -> None:
    """Wrap the method's `hook` to note, per call, (autocast on?, autocast dtype, dtype of what it returned)."""
    inner = getattr(host.method, hook)

    def wrapped(*args, **kwargs):
        out = inner(*args, **kwargs)
        seen.append((torch.is_autocast_enabled("cpu"), torch.get_autocast_dtype("cpu"), out.dtype))
        return out

    setattr(host.method, hook, wrapped)


def test_amp_trains_under_fp16_autocast_with_a_gradient_scaler(image_tree):
    host = host_with(image_tree, "amp")
    seen, scaled = [], []
    record_autocast(host, "training_loss", seen)
    scaler = host.clients[0].scaler
    assert all(isinstance(c.scaler, torch.amp.GradScaler) for c in host.clients.values())
    scale = scaler.scale
    scaler.scale = lambda loss: scaled.append(loss) or scale(loss)
    assert np.isfinite(host.train(host.clients[0], 0))
    assert seen and all(on and dtype == torch.float16 for on, dtype, _ in seen)
    assert len(scaled) == len(seen)  # every step's loss went through the scaler


def test_amp_evaluates_in_fp32_with_autocast_off(image_tree):
    host = host_with(image_tree, "amp")
    host.train(host.clients[0], 0)
    seen = []
    record_autocast(host, "logits", seen)
    host.evaluate(host.clients[0])
    assert seen and all(not on and out == torch.float32 for on, _, out in seen)


def test_bf16_trains_and_evaluates_under_bf16_autocast_without_a_scaler(image_tree):
    host = host_with(image_tree, "bf16")
    train, evaluate = [], []
    record_autocast(host, "training_loss", train)
    record_autocast(host, "logits", evaluate)
    host.train(host.clients[0], 0)
    host.evaluate(host.clients[0])
    assert host.clients[0].scaler is None
    assert train and all(on and dtype == torch.bfloat16 for on, dtype, _ in train)
    assert evaluate and all(on and out == torch.bfloat16 for on, _, out in evaluate)


def test_fp16_autocast_keeps_a_loss_scale_per_client_and_checkpoints_it(image_tree):
    host = host_with(image_tree, "amp")
    loss = host.train(host.clients[0], 0)
    assert np.isfinite(loss)
    state = host.client_states()
    assert state[0]["scaler"]["scale"] == host.clients[0].scaler.get_scale() and state[1]["scaler"] is not None
    state[0]["scaler"]["scale"] = 123.0  # as a checkpoint of a client whose scale was lowered after overflows
    host.set_client_state(1, state[0])
    assert host.clients[1].scaler.get_scale() == 123.0

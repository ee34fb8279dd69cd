"""The GPU code path, exercised on CPU: autocast (bf16 here; fp16 with a per-client gradient scaler where bf16
is missing) and the Allreduce buffer handed to MPI as a device tensor (runtime.cuda_aware_mpi)."""

from __future__ import annotations

from types import SimpleNamespace

import h5py
import numpy as np
import torch

from hpcfed.config import parse_config
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.split import make_splits
from hpcfed.train.setup import build_host

from conftest import HPCFED, run_mpi, write_config


def metrics(path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[f"metrics/client/{k}"][:] for k in f["metrics/client"]}


def test_device_buffer_path_gives_bitwise_the_metrics_of_the_host_buffer(tmp_path, image_tree):
    runs = {}
    for name, aware in (("host", False), ("device", True)):
        cfg = write_config(tmp_path / f"{name}.yaml", image_tree, rounds=2, **{"runtime.cuda_aware_mpi": aware})
        r = run_mpi(2, [str(HPCFED), "train", str(cfg)])
        assert r.returncode == 0, r.stderr
        runs[name] = metrics(tmp_path / f"{name}.h5")
    for key in runs["host"]:
        np.testing.assert_array_equal(runs["host"][key], runs["device"][key], err_msg=key)


def test_amp_trains_under_bf16_autocast_on_cpu(tmp_path, image_tree):
    runs = {}
    for precision in ("fp32", "amp"):
        cfg = write_config(tmp_path / f"{precision}.yaml", image_tree, rounds=2, **{"train.precision": precision})
        r = run_mpi(2, [str(HPCFED), "train", str(cfg)])
        assert r.returncode == 0, r.stderr
        runs[precision] = metrics(tmp_path / f"{precision}.h5")
    fp32, amp = runs["fp32"]["train_loss"], runs["amp"]["train_loss"]
    assert np.isfinite(amp[~np.isnan(fp32)]).all()
    assert not np.array_equal(fp32, amp)  # autocast really ran in bf16
    np.testing.assert_allclose(amp, fp32, rtol=0.05, equal_nan=True)  # and stayed close to fp32


def test_fp16_autocast_keeps_a_loss_scale_per_client_and_checkpoints_it(image_tree):
    listing = read_imagefolder(image_tree, domain_level=True)
    cfg = parse_config({"clients": 2, "model": {"name": "hpcfed-tiny"}, "method": {"name": "pfedmma"},
                        "data": {"dataset": "imagefolder", "root": str(image_tree), "domains": ["a", "b"]},
                        "partition": {"scheme": "domain_dirichlet", "clients_per_domain": 1},
                        "train": {"lr": 0.01, "batch_size": 8, "precision": "amp"}})
    host = build_host(cfg, SimpleNamespace(device="cpu"), listing, make_splits(listing, cfg.partition, 2, 0), [0, 1])
    assert host.amp_dtype == torch.bfloat16 and host.clients[0].scaler is None  # what a CPU gets
    host.amp_dtype = torch.float16  # what a GPU without bf16 gets
    for client in host.clients.values():
        client.scaler = torch.amp.GradScaler("cpu", init_scale=2.0**10)
    loss = host.train(host.clients[0], 0)
    assert np.isfinite(loss)
    state = host.client_states()
    assert state[0]["scaler"]["scale"] == host.clients[0].scaler.get_scale() and state[1]["scaler"] is not None
    state[0]["scaler"]["scale"] = 123.0  # as a checkpoint of a client whose scale was lowered after overflows
    host.set_client_state(1, state[0])
    assert host.clients[1].scaler.get_scale() == 123.0

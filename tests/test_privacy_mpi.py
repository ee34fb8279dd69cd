"""A private run under a real mpiexec (one launch, the same config twice): epsilon and the adaptive clip norm in
the run file, the run reproducible, `hpcfed status` and `hpcfed report` showing the privacy spent."""

import json
import math
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
from click.testing import CliRunner

from hpcfed.cli import main
from hpcfed.config import load_config
from hpcfed.update.privacy import make_accountant

from conftest import run_mpi, write_config

SCRIPTS = Path(__file__).parent / "mpi_scripts"
pytestmark = pytest.mark.mpi
PRIVACY = {"privacy.enabled": True, "privacy.noise_multiplier": 0.5, "privacy.clip_norm": 0.1,
           "privacy.adaptive_clip": True, "privacy.target_quantile": 0.5, "privacy.clip_lr": 0.2}


@pytest.fixture(scope="module")
def private_runs(tmp_path_factory, image_tree):
    """The same private config trained twice, one after the other in one MPI job on 3 ranks."""
    tmp = tmp_path_factory.mktemp("privacy")
    configs = [write_config(tmp / f"{name}.yaml", image_tree, rounds=3, **PRIVACY) for name in ("first", "again")]
    out = tmp / "probe.json"
    done = run_mpi(3, [sys.executable, str(SCRIPTS / "probe_train.py"), str(out), *map(str, configs)])
    assert done.returncode == 0, done.stderr[-3000:]
    return configs, json.loads(out.read_text())


def read_update(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        assert f["status"][()].decode() == "finished"
        return {name: f[f"update/{name}"][:] for name in ("epsilon", "clip_norm")} | {
            f"metrics/{name}": f[f"metrics/client/{name}"][:] for name in f["metrics/client"]}


def test_a_private_run_records_growing_epsilon_and_an_adapting_clip_norm_reproducibly(private_runs):
    configs, probes = private_runs
    first, again = (read_update(c.with_suffix(".h5")) for c in configs)
    cfg = load_config(configs[0])
    accountant = make_accountant(cfg.privacy, cfg.clients, cfg.participation)
    np.testing.assert_allclose(first["epsilon"], [accountant.epsilon(k, cfg.privacy.delta) for k in (1, 2, 3)])
    assert np.all(np.diff(first["epsilon"]) > 0)

    # Adaptive clipping: round 1 uses the configured C; each next C = C exp(-eta (b - gamma)) with b the noised
    # share of unclipped clients. Without the server's count noise, b * m would be a whole number of clients.
    clip = first["clip_norm"]
    assert clip[0] == pytest.approx(0.1) and np.all(clip > 0)
    m = [4, 2]  # clients sampled in rounds 0 and 1
    for r in (0, 1):
        unclipped_share = 0.5 - math.log(clip[r + 1] / clip[r]) / 0.2
        assert abs(unclipped_share * m[r] - round(unclipped_share * m[r])) > 1e-6

    for name, values in first.items():  # the same config twice: the same numbers, noise included
        np.testing.assert_array_equal(values, again[name], err_msg=name)
    by_config = {}
    for record in (r for r in probes if r["stage"] == "aggregated" and r["rank"] != 0):
        by_config.setdefault(record["config"], {}).setdefault(record["round"], set()).add(record["global_shared"])
    states = list(by_config.values())
    assert all(len(digests) == 1 for digests in states[0].values())  # every client rank reads the same state
    assert states[0] == states[1]


def test_status_and_report_show_the_privacy_spent(private_runs):
    configs, _ = private_runs
    path = configs[0].with_suffix(".h5")
    with h5py.File(path, "r") as f:
        epsilon = f["update/epsilon"][-1]
    status = CliRunner().invoke(main, ["status", str(path)])
    assert status.exit_code == 0, status.output
    assert f"privacy  epsilon {epsilon:.3g} at delta 1e-05 after round 3" in status.output
    report = CliRunner().invoke(main, ["report", str(path)])
    assert report.exit_code == 0, report.output
    header, *rows = report.output.splitlines()
    assert "epsilon" in header and any(f"{epsilon:.3g}" in row for row in rows)

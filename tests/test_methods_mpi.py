"""Every method under a real mpiexec: what is shared is exactly what moves, and personal state stays put."""

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcfed.methods import METHODS

from conftest import run_mpi, write_config

SCRIPTS = Path(__file__).parent / "mpi_scripts"
pytestmark = pytest.mark.mpi
SCENARIOS = {  # one per method; local and fedavg over more than one adapter family
    "pfedmma": {}, "fedmma": {}, "plora": {}, "fedlora": {}, "promptfl": {}, "zeroshot": {},
    "local": {"family": "lora"}, "fedavg": {"family": "mma"}, "local-prompt": {"family": "prompt"},
}


@pytest.fixture(scope="module")
def probed(tmp_path_factory, image_tree):
    tmp = tmp_path_factory.mktemp("methods")
    configs = {}
    extra = [m for m in METHODS if m not in {k.split("-")[0] for k in SCENARIOS}]  # methods added later
    for key, options in {**SCENARIOS, **{m: {} for m in extra}}.items():
        method = {"name": key.split("-")[0], **options}
        configs[key] = write_config(tmp / f"{key}.yaml", image_tree, rounds=2, method=method)
    out = tmp / "probe.json"
    done = run_mpi(3, [sys.executable, str(SCRIPTS / "probe_train.py"), str(out), *map(str, configs.values())],
                   timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    records = json.loads(out.read_text())
    return {key: [r for r in records if r["config"] == str(path)] for key, path in configs.items()}, configs


def test_every_registered_method_ran(probed):
    records, configs = probed
    assert set(METHODS) <= {key.split("-")[0] for key in configs}
    assert all(records[key] for key in configs)


def test_only_shared_parameters_enter_the_buffer_and_personal_state_stays(probed):
    records, _ = probed
    for key, rows in records.items():
        clients = [r for r in rows if r["rank"] != 0]
        for r in clients:
            assert r["buffer_len"] == r["n_shared"] + 1, key
        for rnd in (0, 1):
            trained = {r["rank"]: r for r in clients if r["round"] == rnd and r["stage"] == "trained"}
            aggregated = {r["rank"]: r for r in clients if r["round"] == rnd and r["stage"] == "aggregated"}
            assert len({r["global_shared"] for r in aggregated.values()}) == 1, key
            for rank, r in aggregated.items():
                assert r["local"] == trained[rank]["local"], key  # the Allreduce never touched personal state


def test_bytes_moved_follow_the_shared_count(probed):
    records, configs = probed
    for key, path in configs.items():
        n_shared = next(r["n_shared"] for r in records[key] if r["rank"] != 0)
        with h5py.File(Path(path).with_suffix(".h5"), "r") as f:
            up, down = f["comm/bytes_up"][:], f["comm/bytes_down"][:]
            participants = f["metrics/global/participants"][:]
            np.testing.assert_array_equal(f["comm/bytes"][:], up.sum(axis=1))
        assert up.sum(axis=1).tolist() == [4 * n_shared * p for p in participants], key
        assert (down >= up).all(), key
    for key in ("local", "local-prompt", "zeroshot"):
        with h5py.File(Path(configs[key]).with_suffix(".h5"), "r") as f:
            assert f["comm/bytes"][:].sum() == 0 and f["comm/bytes_down"][:].sum() == 0, key


def test_fedavg_ends_with_identical_parameters_on_every_client(probed):
    records, _ = probed
    last = [r for r in records["fedavg"] if r["rank"] != 0 and r["round"] == 1 and r["stage"] == "aggregated"]
    assert all(r["n_local"] == 0 for r in last)  # nothing personal: every client holds the global state
    assert len({r["global_shared"] for r in last}) == 1
    personal = [r for r in records["local"] if r["rank"] != 0 and r["round"] == 1 and r["stage"] == "aggregated"]
    states = [s for r in personal for s in r["local"].values()]
    assert len(set(states)) == len(states)  # local-only clients all differ


def test_report_tables_the_methods_and_names_an_unreadable_file(probed, tmp_path):
    from click.testing import CliRunner

    from hpcfed.cli import main

    _, configs = probed
    files = [str(Path(configs[k]).with_suffix(".h5")) for k in ("pfedmma", "local", "zeroshot")]
    result = CliRunner().invoke(main, ["report", *files])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert lines[0].split()[:5] == ["method", "Local", "Base", "Novel", "HM"]
    # 4 B x 3,168 shared x (4 + 2 participants) / 2 rounds = 38,016 B per round
    assert any(line.startswith("pfedmma") and "38,016" in line for line in lines)
    assert "WARNING" not in result.output  # same split for every method
    broken = tmp_path / "broken.h5"
    broken.write_bytes(b"not hdf5")
    bad = CliRunner().invoke(main, ["report", str(broken)])
    assert bad.exit_code == 2 and f"{broken} is not an HDF5 file" in bad.output


def test_ffa_lora_keeps_its_frozen_a_at_the_shared_init_and_fedsa_lora_personalizes_b(probed):
    records, _ = probed
    # ffa_lora's only personal state is A, frozen: after every round, on every client, the same initial values.
    frozen = {s for r in records["ffa_lora"] if r["rank"] != 0 and r["stage"] == "trained" for s in r["local"].values()}
    assert len(frozen) == 1
    assert len({r["global_shared"] for r in records["ffa_lora"] if r["stage"] == "aggregated" and r["rank"] != 0}) > 1
    # fedsa_lora's personal state is B, trained: every client ends with its own.
    last = [r for r in records["fedsa_lora"] if r["rank"] != 0 and r["round"] == 1 and r["stage"] == "aggregated"]
    personal = [s for r in last for s in r["local"].values()]
    assert len(set(personal)) == len(personal) > 1

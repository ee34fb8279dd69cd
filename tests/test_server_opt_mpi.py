"""FedAdam as the server optimizer under a real mpiexec (two launches: 4 and 2 ranks): its state and the shared
state are bitwise equal on every rank after each round, the server rank included (it writes the checkpoint);
a run resumed from a checkpoint continues bitwise; 2 and 4 ranks agree within float tolerance."""

import json
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import run_mpi, write_config

SCRIPT = Path(__file__).parent / "mpi_scripts" / "probe_server_opt.py"
pytestmark = pytest.mark.mpi
ROUNDS = 3  # participation 0.5 of 4 clients: in later rounds some client ranks train nobody


def fedadam_config(path: Path, image_tree: Path) -> Path:
    return write_config(path, image_tree, rounds=ROUNDS, **{"server.optimizer": "fedadam"})


def launch(n: int, folder: Path, image_tree: Path, with_resume: bool) -> dict:
    configs = [fedadam_config(folder / "run.yaml", image_tree)]
    if with_resume:
        configs.append(fedadam_config(folder / "resumed.yaml", image_tree))
    out = folder / "probe.json"
    done = run_mpi(n, [sys.executable, str(SCRIPT), str(out), *map(str, configs)], timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return {"records": json.loads(out.read_text()), "configs": configs, "stdout": done.stdout}


@pytest.fixture(scope="module")
def four_ranks(tmp_path_factory, image_tree) -> dict:
    return launch(4, tmp_path_factory.mktemp("fedadam4"), image_tree, with_resume=True)


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory, image_tree) -> dict:
    return launch(2, tmp_path_factory.mktemp("fedadam2"), image_tree, with_resume=False)


def records(launched: dict, run: str, **where) -> list[dict]:
    return [r for r in launched["records"] if r["run"] == run and all(r[k] == v for k, v in where.items())]


@pytest.mark.parametrize("n, launched", [(4, "four_ranks"), (2, "two_ranks")])
def test_optimizer_and_shared_state_are_bitwise_equal_on_every_rank_after_each_round(n, launched, request):
    launched = request.getfixturevalue(launched)
    for rnd in range(ROUNDS):
        seen = records(launched, "uninterrupted", round=rnd)
        assert sorted(r["rank"] for r in seen) == list(range(n))  # the server rank too
        assert len({json.dumps(r["optimizer"], sort_keys=True) for r in seen}) == 1, f"round {rnd}: moments differ"
        assert len({r["global_shared"] for r in seen if r["rank"] != 0}) == 1, f"round {rnd}: shared state differs"


def test_the_moments_move_every_round(four_ranks):
    server = records(four_ranks, "uninterrupted", rank=0)
    assert [r["round"] for r in server] == list(range(ROUNDS))
    assert len({r["optimizer"]["m"] for r in server}) == ROUNDS and len({r["optimizer"]["v"] for r in server}) == ROUNDS
    last = server[-1]["optimizer_values"]
    assert np.any(np.array(last["m"]) != 0) and np.any(np.array(last["v"]) > 1e-3**2)  # v started at τ²


def test_two_and_four_ranks_give_the_same_states_within_float_tolerance(four_ranks, two_ranks):
    for rnd in range(ROUNDS):
        four_shared, two_shared = (records(r, "uninterrupted", round=rnd, rank=1)[0] for r in (four_ranks, two_ranks))
        np.testing.assert_allclose(two_shared["global_shared_values"], four_shared["global_shared_values"],
                                   rtol=1e-5, atol=1e-6, err_msg=f"round {rnd}")
        four_server, two_server = (records(r, "uninterrupted", round=rnd, rank=0)[0] for r in (four_ranks, two_ranks))
        for name in ("m", "v"):
            np.testing.assert_allclose(two_server["optimizer_values"][name], four_server["optimizer_values"][name],
                                       rtol=1e-4, atol=1e-9, err_msg=f"round {rnd}: {name}")


def test_a_resumed_run_continues_bitwise_as_the_uninterrupted_one(four_ranks):
    assert "resuming" in four_ranks["stdout"] and "at round 2" in four_ranks["stdout"]
    for rnd in range(1, ROUNDS):
        for rank in range(4):
            (resumed,) = records(four_ranks, "resumed", round=rnd, rank=rank)
            (uninterrupted,) = records(four_ranks, "uninterrupted", round=rnd, rank=rank)
            assert resumed["optimizer"] == uninterrupted["optimizer"], f"round {rnd}, rank {rank}: moments"
            assert resumed.get("global_shared") == uninterrupted.get("global_shared"), f"round {rnd}, rank {rank}"
    run_file, resumed_file = (cfg.with_suffix(".h5") for cfg in four_ranks["configs"])
    with h5py.File(run_file, "r") as a, h5py.File(resumed_file, "r") as b:
        for name in a["metrics/client"]:
            np.testing.assert_array_equal(b[f"metrics/client/{name}"][:], a[f"metrics/client/{name}"][:], name)

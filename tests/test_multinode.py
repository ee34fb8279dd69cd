"""hpcfed across nodes, on a two-node SLURM cluster in network namespaces (tests/slurm_multinode.py; issue 21).

By default one short job runs: the demo train job over both nodes for one round, compared with the single-node demo
job of test_slurm (`demo_job`). The fuller set runs with HPCFED_MULTINODE=full, `pytest -m multinode` or
`make test-multinode`: the same job for every round, a run interrupted on two nodes and resumed on one, the device of
each rank with two pretend GPUs per node, a data root that differs on one node, check-env's report per node, the
feature cache assembled from parts written on both nodes, and the transport within a node and between nodes.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import time
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcfed.data.built import data_cache_dir

from conftest import HPCFED, REPO
from slurm_cluster import (
    DEMO,
    DEMO_RANKS,
    DEMO_ROUNDS,
    PYTHON,
    TRAIN,
    job_env,
    needs_demo_data,
    report,
    results,
    rounds_done,
    wait_until,
)

pytestmark = pytest.mark.multinode
TESTS = Path(__file__).resolve().parent
TWO_NODES = ("-N", "2", "--ntasks-per-node=2")  # ranks 0, 1 on n1 (the server shares it), 2, 3 on n2
# every rank of a step started here directly (train.sbatch sets these for its own)
RANK_ENV = {"HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", "PYTHONUNBUFFERED": "1"}
# MPI may sum the Allreduce in another order across nodes (here the metrics came out bitwise equal)
TOLERANCE = {"rtol": 1e-5, "atol": 1e-7}


def full_set(config) -> bool:
    return os.environ.get("HPCFED_MULTINODE") == "full" or "multinode" in (config.getoption("markexpr") or "")


@pytest.fixture
def full(request) -> None:
    """Skips the test unless the fuller multi-node set was asked for (the default suite has room for one job)."""
    if not full_set(request.config):
        pytest.skip("in the fuller multi-node set: run it with HPCFED_MULTINODE=full, pytest -m multinode, or "
                    "make test-multinode")


def assert_same_metrics(got: dict[str, np.ndarray], expected: dict[str, np.ndarray], rounds: int) -> None:
    """Every per-client metric of the first `rounds` rounds, and when `got` ran them all, every /final value."""
    client = sorted(name for name in expected if name.startswith("metrics/client/"))
    assert client and sorted(name for name in got if name.startswith("metrics/client/")) == client
    for name in client:
        np.testing.assert_allclose(got[name][:rounds], expected[name][:rounds], err_msg=name, **TOLERANCE)
    if rounds == DEMO_ROUNDS:
        final = sorted(name for name in expected if name.startswith("final/"))
        assert final and sorted(name for name in got if name.startswith("final/")) == final
        for name in final:
            if np.asarray(expected[name]).dtype.kind == "f":
                np.testing.assert_allclose(got[name], expected[name], err_msg=name, **TOLERANCE)
            else:  # the selected round, how it was selected
                np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


def env_of(run_file: Path) -> dict:
    with h5py.File(run_file, "r") as f:
        return {key: value.tolist() if isinstance(value, np.ndarray) else value
                for key, value in f["env"].attrs.items()}


# --- the demo train job over two nodes (the one multi-node job of the default suite) -----------------------------


@pytest.fixture(scope="module")
def two_node_job(request, slurm_two_nodes, tmp_path_factory):
    """`sbatch -N 2 --ntasks-per-node=2 jobs/train.sbatch configs/demo.yaml` with DEMO: one round by default (the
    shortest job that still sums the shared state across the nodes), every round in the fuller set."""
    rounds = DEMO_ROUNDS if full_set(request.config) else 1
    out = tmp_path_factory.mktemp("two_nodes")
    run_file = out / "demo.h5"
    started = time.monotonic()
    job = slurm_two_nodes.sbatch(*TWO_NODES, "-o", f"{out}/%j.out", TRAIN, "configs/demo.yaml", *DEMO.split(),
                                 "-o", f"rounds={rounds}", cwd=REPO, env=job_env(OVERRIDES=f"-o output={run_file}"))
    info = slurm_two_nodes.wait(job, timeout=600)
    seconds = time.monotonic() - started
    report(f"two-node demo job ({rounds} round(s)): {seconds:.0f} s")
    return run_file, info, (out / f"{job}.out").read_text(), rounds


@needs_demo_data
def test_train_job_runs_on_both_nodes_and_records_where_each_rank_ran(two_node_job):
    run_file, info, log, rounds = two_node_job
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log
    assert f"world size {DEMO_RANKS} on n[1-2]" in log and "hpcfed: finished" in log, log
    env = env_of(run_file)
    assert env["world_size"] == DEMO_RANKS and env["nodes"] == ["n1", "n2"]
    assert env["hostnames"] == ["n1", "n1", "n2", "n2"]  # rank -> host
    assert env["local_ranks"] == [0, 1, 0, 1]  # index among the ranks of its host
    assert env["devices"] == ["cpu"] * DEMO_RANKS
    assert env["mpich_netmod"] == "ofi"  # hpcfed's choice for pmi2 across nodes (runtime.mpich_netmod)
    assert sorted(client for clients in json.loads(env["placement"]) for client in clients) == [0, 1, 2, 3]
    with h5py.File(run_file, "r") as f:
        assert f["status"].asstr()[()] == "finished" and int(f["progress/rounds_done"][()]) == rounds


@needs_demo_data
def test_train_job_on_two_nodes_gives_the_metrics_of_the_single_node_job(two_node_job, demo_job):
    run_file, info, log, rounds = two_node_job
    assert info["JobState"] == "COMPLETED", log
    assert_same_metrics(results(run_file), results(demo_job.run_file), rounds)


# --- the fuller set ------------------------------------------------------------------------------------------------


@needs_demo_data
@pytest.mark.timeout(600)  # two train jobs one after the other: 130 s on a quiet machine, 300 s seen under load
def test_run_interrupted_on_two_nodes_resumes_on_one_and_matches_the_uninterrupted_run(full, slurm_two_nodes,
                                                                                     demo_job, tmp_path):
    run_file = tmp_path / "demo.h5"
    env = job_env(OVERRIDES=f"-o output={run_file}")
    # --no-requeue: the checkpointed job ends (exit 75, "resubmit to continue") instead of starting again on 2 nodes
    first = slurm_two_nodes.sbatch(*TWO_NODES, "--no-requeue", "-o", f"{tmp_path}/%j.out", TRAIN, "configs/demo.yaml",
                                   *DEMO.split(), cwd=REPO, env=env)
    wait_until(lambda: rounds_done(run_file) >= 1, 600, "the first round")
    assert slurm_two_nodes.run("scancel", "--batch", "--signal=USR1", str(first)).returncode == 0
    assert rounds_done(run_file) < DEMO_ROUNDS - 1, "the signal came too late to interrupt the run"
    info = slurm_two_nodes.wait(first, timeout=300)
    log = (tmp_path / f"{first}.out").read_text()
    assert (info["JobState"], info["ExitCode"]) == ("FAILED", "75:0"), log
    assert "resubmit to continue" in log, log
    checkpointed = rounds_done(run_file)

    second = slurm_two_nodes.sbatch("-N", "1", "-n", str(DEMO_RANKS), "-o", f"{tmp_path}/%j.out", TRAIN,
                                    "configs/demo.yaml", *DEMO.split(), cwd=REPO, env=env)
    info = slurm_two_nodes.wait(second, timeout=600)
    log = (tmp_path / f"{second}.out").read_text()
    assert info["JobState"] == "COMPLETED", log
    assert f"resuming {run_file} at round {checkpointed + 1}" in log, log
    with h5py.File(run_file, "r") as f:
        assert f["status"].asstr()[()] == "finished"
        resumes = json.loads(f["status"].attrs["resumes"])
    assert env_of(run_file)["nodes"] == ["n1", "n2"]  # /env: the first start
    assert len(resumes) == 1 and resumes[0]["world_size"] == DEMO_RANKS and len(resumes[0]["nodes"]) == 1, resumes
    assert_same_metrics(results(run_file), results(demo_job.run_file), DEMO_ROUNDS)


# (srun arguments, {rank: (host, device)}): the server alone on n1 takes no GPU; client k of a node takes GPU k mod 2
DEVICE_LAYOUTS = {
    "two_per_node": (TWO_NODES, {0: ("n1", "cpu"), 1: ("n1", "cuda:0"), 2: ("n2", "cuda:0"), 3: ("n2", "cuda:1")}),
    # srun -m arbitrary: MPICH's COMM_TYPE_SHARED split makes every rank a node of its own here (pmi2's node map)
    "three_clients_on_n2": (("-n", "4", "-w", "n1,n2,n2,n2", "-m", "arbitrary"),
                            {0: ("n1", "cpu"), 1: ("n2", "cuda:0"), 2: ("n2", "cuda:1"), 3: ("n2", "cuda:0")}),
}


def with_fake_gpus(count: int) -> dict[str, str]:
    """The environment of ranks that see `count` pretend GPUs (tests/fake_gpus/sitecustomize.py)."""
    return {**RANK_ENV, "HPCFED_TEST_FAKE_GPUS": str(count),
            "PYTHONPATH": os.pathsep.join([str(TESTS / "fake_gpus"), str(REPO), os.environ.get("PYTHONPATH", "")])}


@pytest.mark.parametrize("layout", sorted(DEVICE_LAYOUTS))
def test_each_node_gives_client_k_gpu_k_mod_two_and_the_server_none(full, slurm_two_nodes, layout):
    srun_args, expected = DEVICE_LAYOUTS[layout]
    done = slurm_two_nodes.run("srun", *srun_args, "--mpi=pmi2", PYTHON, str(TESTS / "mpi_scripts" / "device_map.py"),
                               env=with_fake_gpus(2), timeout=180)
    assert done.returncode == 0, done.stderr
    ranks = {row["rank"]: row for row in map(json.loads, done.stdout.splitlines())}
    assert {rank: (row["host"], row["device"]) for rank, row in ranks.items()} == expected
    for rank, row in ranks.items():  # set before any other CUDA call, on the client ranks only
        assert row["set_device"] == ([] if row["device"] == "cpu" else [int(row["device"][-1])]), (rank, row)


@pytest.fixture
def data_copy(tmp_path) -> Path:
    """Emoji-Domains as hard links under tmp_path: a data root of the test's own, which one node may see differently."""
    copy = tmp_path / "emoji_domains"
    shutil.copytree(data_cache_dir() / "emoji_domains", copy, copy_function=_link_or_copy)
    return copy


def _link_or_copy(source: str, target: str) -> None:
    try:
        os.link(source, target)
    except OSError:  # another file system
        shutil.copy2(source, target)


def one_file_fewer(folder: Path, view: Path) -> Path:
    """A copy of `folder` at `view` without one image; the image left out."""
    shutil.copytree(folder, view, copy_function=_link_or_copy)
    missing = sorted(view.rglob("*.png"))[0]
    missing.unlink()
    return missing


@needs_demo_data
def test_a_data_root_that_differs_on_one_node_stops_every_rank_naming_that_host(full, slurm_two_nodes, data_copy,
                                                                                  tmp_path):
    one_file_fewer(data_copy / "noto", tmp_path / "noto_on_n2")
    with slurm_two_nodes.node_view("n2", data_copy / "noto", tmp_path / "noto_on_n2"):
        done = slurm_two_nodes.run("srun", *TWO_NODES, "--mpi=pmi2", str(HPCFED), "train", "configs/demo.yaml",
                                   *DEMO.split(), "-o", f"data.root={data_copy}", "-o", f"output={tmp_path}/demo.h5",
                                   cwd=REPO, env=RANK_ENV, timeout=300)
    assert done.returncode == 2, done.stdout + done.stderr
    # one message, from rank 0, naming the ranks and the host that see another listing
    message = re.findall(r"hpcfed \((.*?)\): error: host (\S+) sees a different dataset listing", done.stderr)
    assert message == [("ranks 2, 3 on n2", "n2")], done.stderr
    assert f"every node must see the same files under {data_copy}" in done.stderr
    assert task_exits(done.stderr) == {0: ("n1", 2), 1: ("n1", 2), 2: ("n2", 2), 3: ("n2", 2)}, done.stderr


def task_exits(srun_stderr: str) -> dict[int, tuple[str, int]]:
    """{task: (host, exit code)} from srun's "error: n1: tasks 0-1: Exited with exit code 2" lines (a line per
    task, per range or per list, as the tasks happen to end)."""
    found = {}
    for host, tasks, code in re.findall(r"srun: error: (\S+): tasks? ([\d,-]+): Exited with exit code (\d+)",
                                        srun_stderr):
        for span in tasks.split(","):
            first, _, last = span.partition("-")
            found.update({task: (host, int(code)) for task in range(int(first), int(last or first) + 1)})
    return found


@needs_demo_data
def test_feature_cache_from_parts_written_on_both_nodes_equals_the_one_node_cache(full, slurm_two_nodes, tmp_path):
    caches = {}
    for name, layout in (("two_nodes", TWO_NODES), ("one_node", ("-N", "1", "-n", str(DEMO_RANKS)))):
        # every client rank extracts a slice into <cache>.parts/rank-N.h5 on the shared disk; rank 0 assembles
        done = slurm_two_nodes.run("srun", *layout, "--mpi=pmi2", str(HPCFED), "extract", "configs/demo.yaml",
                                   *DEMO.split(), "-o", f"output={tmp_path}/{name}.h5",
                                   "-o", f"extract.dir={tmp_path}/{name}", cwd=REPO, env=RANK_ENV, timeout=300)
        assert done.returncode == 0, done.stdout + done.stderr
        [caches[name]] = (tmp_path / name).glob("*.h5")
        assert not list((tmp_path / name).glob("*.parts")), "the per-rank parts outlived the assembly"
    assert caches["two_nodes"].name == caches["one_node"].name  # the same key: model, data, transform, views, cut
    with h5py.File(caches["two_nodes"], "r") as two, h5py.File(caches["one_node"], "r") as one:
        assert two.attrs["parts"] == one.attrs["parts"] and two.attrs["images"] == one.attrs["images"]
        for name in ("eval_index", "view_index", "features"):
            np.testing.assert_array_equal(two[name][()], one[name][()], err_msg=name)


def check_env(cluster, *args: str, env: dict[str, str]) -> tuple[int, str]:
    done = cluster.run("srun", *TWO_NODES, "--mpi=pmi2", str(HPCFED), "check-env", "configs/demo.yaml",
                       "-o", "clients=4", "-o", "data.domains=[noto,twemoji]", *args, cwd=REPO, env=env, timeout=180)
    assert done.stdout.count("hpcfed check-env:") == 1, done.stdout + done.stderr  # one report, by rank 0
    return done.returncode, done.stdout


@needs_demo_data
def test_check_env_reports_each_node_with_its_ranks_devices_and_dataset(full, slurm_two_nodes):
    code, report_text = check_env(slurm_two_nodes, env=with_fake_gpus(2))
    assert code == 0, report_text
    assert "4 rank(s) on 2 node(s)" in report_text
    assert re.search(r"ok +launcher +PMI \(srun --mpi=pmi2\) with MPICH [\d.]+, ofi netmod", report_text), report_text
    listing = r"dataset 992 samples, listing [0-9a-f]{16}; [\d.]+ GB free at \S+"
    assert re.search(r"ok +nodes +2 node\(s\), the same dataset listing on each\n"
                     rf" +n1: ranks 0 1 \(server\); {listing}\n +n2: ranks 2 3; {listing}\n", report_text), report_text
    assert re.search(r"ok +devices +n1: 2 rank\(s\), 2 GPU\(s\), 0->cpu 1->cuda:0; "
                     r"n2: 2 rank\(s\), 2 GPU\(s\), 2->cuda:0 3->cuda:1\n", report_text), report_text


@needs_demo_data
def test_check_env_names_the_node_whose_dataset_listing_differs(full, slurm_two_nodes, data_copy, tmp_path):
    one_file_fewer(data_copy / "noto", tmp_path / "noto_on_n2")
    with slurm_two_nodes.node_view("n2", data_copy / "noto", tmp_path / "noto_on_n2"):
        code, report_text = check_env(slurm_two_nodes, "-o", f"data.root={data_copy}", env=RANK_ENV)
    assert code == 1, report_text
    assert re.search(r"FAIL +nodes +the nodes see different dataset listings \(ranks 0, 1 on n1: 992 samples, "
                     r"listing \w+; ranks 2, 3 on n2: 991 samples, listing \w+\)", report_text), report_text


ALLREDUCE = """import socket, sys, numpy as np
from mpi4py import MPI
world = MPI.COMM_WORLD
node = world.Split_type(MPI.COMM_TYPE_SHARED)
values = np.full(3_000_000, world.rank + 1.0)  # 24 MB
world.Allreduce(MPI.IN_PLACE, values)
assert values[0] == values[-1] == world.size * (world.size + 1) / 2
sys.stdout.write(f"{world.rank} {socket.gethostname()} {node.rank}/{node.size}\\n")
"""


def test_messages_cross_the_network_between_nodes_and_shared_memory_within_one(full, slurm_two_nodes):
    # the netmod hpcfed chooses for this launch (runtime.mpich_netmod); a bare mpi4py program gets it from here
    env = {**RANK_ENV, "MPIR_CVAR_CH4_NETMOD": "ofi"}

    def traffic(srun_args: tuple[str, ...]) -> tuple[list[str], dict[str, int]]:
        counters = [("n1", "lo"), ("n1", "eth0"), ("n2", "eth0")]
        before = {f"{host} {interface}": slurm_two_nodes.network_bytes(host, interface) for host, interface in counters}
        done = slurm_two_nodes.run("srun", *srun_args, "--mpi=pmi2", PYTHON, "-c", ALLREDUCE, env=env, timeout=120)
        assert done.returncode == 0, done.stderr
        return sorted(done.stdout.splitlines()), {key: slurm_two_nodes.network_bytes(*key.split()) - value
                                                  for key, value in before.items()}

    ranks, moved = traffic(TWO_NODES)
    assert ranks == ["0 n1 0/2", "1 n1 1/2", "2 n2 0/2", "3 n2 1/2"]
    assert moved["n2 eth0"] > 20e6, moved  # the 24 MB sum crossed the veths
    ranks, moved = traffic(("-N", "1", "-n", "2", "-w", "n1"))
    assert ranks == ["0 n1 0/2", "1 n1 1/2"]
    assert moved["n1 lo"] + moved["n1 eth0"] < 1e6, moved  # within a node: MPICH's shared memory

"""The job scripts in jobs/ on a real single-node SLURM (tests/slurm_cluster.py, spec/slurm.md; the fixtures `slurm`
and `demo_job` come from there through conftest.py).

The two `demo` tests run the real `hpcfed train` on configs/demo.yaml; the others swap in a stand-in
`hpcfed` (a few lines of mpi4py) to check the scripts' exit-code protocol in seconds:
0 finished, 75 checkpointed on USR1/TERM -> requeue, anything else -> the job fails.
"""

import os
import subprocess
from pathlib import Path

import h5py
import numpy as np
import pytest

from conftest import REPO
from slurm_cluster import (
    DEMO,
    DEMO_RANKS,
    DEMO_ROUNDS,
    PYTHON,
    TRAIN,
    VENV,
    job_env,
    needs_demo_data,
    results,
    rounds_done,
    wait_until,
)

SWEEP, MPIRUN = (str(REPO / "jobs" / name) for name in ("sweep.sbatch", "mpirun.sh"))

# Stands in for `hpcfed train`: rank 0 logs world size, restart and arguments; then it finishes, fails (3), or
# (interrupt) waits for USR1/TERM and exits 75 like a checkpointed run, finishing on the next start.
FAKE_HPCFED = f"""#!{PYTHON}
import os, signal, sys, time
from pathlib import Path
from mpi4py import MPI
world, stop = MPI.COMM_WORLD, []
for sig in (signal.SIGUSR1, signal.SIGTERM):
    signal.signal(sig, lambda *_: stop.append(1))
log, mode = Path(os.environ["FAKE_LOG"]), os.environ["FAKE_MODE"]
restart = os.environ.get("SLURM_RESTART_COUNT", 0)
if world.rank == 0:
    with log.open("a") as f:
        f.write(f"size={{world.size}} restart={{restart}} {{' '.join(sys.argv[1:])}}\\n")
if mode == "fail":
    sys.exit(3)
if mode == "interrupt" and not log.with_suffix(".checkpoint").exists():
    while not world.allreduce(len(stop)):
        time.sleep(0.1)
    if world.rank == 0:
        log.with_suffix(".checkpoint").touch()
    world.Barrier()
    sys.exit(75)
"""


def test_node_runs_a_four_rank_pmi2_step_on_two_cores(slurm):
    world = "import sys; from mpi4py import MPI; sys.stdout.write(f'size {MPI.COMM_WORLD.size}\\n')"
    done = slurm.run("srun", "-n", "4", "--mpi=pmi2", PYTHON, "-c", world, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split("\n").count("size 4") == 4, done.stdout  # not 4 singletons


@needs_demo_data
def test_train_job_finishes_with_the_world_size_it_was_given(demo_job):
    run_file, info, log = demo_job.run_file, demo_job.info, demo_job.log
    assert info["JobState"] == "COMPLETED" and info["ExitCode"] == "0:0", log
    assert f"world size {DEMO_RANKS}" in log and "hpcfed: finished" in log, log
    with h5py.File(run_file, "r") as f:
        assert f["env"].attrs["world_size"] == DEMO_RANKS
        assert f["status"][()].decode() == "finished"
        assert int(f["progress/rounds_done"][()]) == DEMO_ROUNDS


@needs_demo_data
def test_signalled_train_job_checkpoints_requeues_and_matches_the_uninterrupted_run(slurm, demo_job, tmp_path):
    reference = demo_job.run_file
    run_file = tmp_path / "demo.h5"
    # the config as a script argument, the overrides half there and half in OVERRIDES
    job = slurm.sbatch("-n", str(DEMO_RANKS), "-o", f"{tmp_path}/%j.out", TRAIN, "configs/demo.yaml",
                       *DEMO.split(), cwd=REPO, env=job_env(OVERRIDES=f"-o output={run_file}"))
    wait_until(lambda: rounds_done(run_file) >= 1, 600, "the first round")
    # what --signal=B:USR1@N does before the time limit, delivered now: to the batch shell only
    assert slurm.run("scancel", "--batch", "--signal=USR1", str(job)).returncode == 0
    assert rounds_done(run_file) < DEMO_ROUNDS - 1, "the signal came too late to interrupt the run"
    info = slurm.wait(job, timeout=600)
    log = (tmp_path / f"{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", log
    assert "requeueing job" in log and "restart 1 of at most" in log, log
    with h5py.File(run_file, "r") as f:
        assert f["status"][()].decode() == "finished" and f["env"].attrs["world_size"] == DEMO_RANKS
    expected, got = results(reference), results(run_file)
    assert "metrics/client/test_accuracy" in got and any(name.startswith("final/") for name in got)
    assert sorted(got) == sorted(expected)
    for name in expected:
        np.testing.assert_array_equal(got[name], expected[name], err_msg=name)


@pytest.fixture
def fake_venv(tmp_path) -> Path:
    """A venv whose `hpcfed` is FAKE_HPCFED; hydra finds its proxy next to mpiexec, so link both."""
    bin_dir = tmp_path / "venv" / "bin"
    bin_dir.mkdir(parents=True)
    (bin_dir / "hpcfed").write_text(FAKE_HPCFED)
    (bin_dir / "hpcfed").chmod(0o755)
    for name in ("mpiexec", "hydra_pmi_proxy"):
        (bin_dir / name).symlink_to(VENV / "bin" / name)
    return bin_dir.parent


def fake_job(slurm, fake_venv: Path, script: str, *args: str, **env: str) -> tuple[int, Path]:
    log = fake_venv.parent / "fake.log"
    job = slurm.sbatch("-n", "2", "-o", f"{fake_venv.parent}/%j.out", script, *args, cwd=REPO,
                       env=job_env(HPCFED_VENV=str(fake_venv), FAKE_LOG=str(log), **env))
    return job, log


@pytest.mark.parametrize("launcher", ["srun", "mpiexec"])
def test_usr1_requeues_and_the_second_run_resumes(slurm, fake_venv, launcher):
    job, log = fake_job(slurm, fake_venv, TRAIN, "configs/demo.yaml", "-o", "rounds=3", FAKE_MODE="interrupt",
                        HPCFED_LAUNCHER=launcher)
    wait_until(lambda: log.exists(), 60, "the step to start")
    assert slurm.run("scancel", "--batch", "--signal=USR1", str(job)).returncode == 0
    info = slurm.wait(job, timeout=120)
    out = (fake_venv.parent / f"{job}.out").read_text()
    assert info["JobState"] == "COMPLETED" and info["Restarts"] == "1", out
    command = "train configs/demo.yaml -o rounds=3 --resume auto"
    assert log.read_text().splitlines() == [f"size=2 restart=0 {command}", f"size=2 restart=1 {command}"], out


def test_failed_run_fails_the_job_with_its_exit_code_and_is_not_requeued(slurm, fake_venv):
    job, _ = fake_job(slurm, fake_venv, TRAIN, FAKE_MODE="fail")
    info = slurm.wait(job, timeout=60)
    assert (info["JobState"], info["ExitCode"], info["Restarts"]) == ("FAILED", "3:0", "0")


def test_scancel_cancels_even_though_the_run_checkpoints_on_term(slurm, fake_venv):
    job, log = fake_job(slurm, fake_venv, TRAIN, FAKE_MODE="interrupt")
    wait_until(lambda: log.exists(), 60, "the step to start")
    assert slurm.run("scancel", str(job)).returncode == 0
    info = slurm.wait(job, timeout=60)
    out = (fake_venv.parent / f"{job}.out").read_text()
    assert (info["JobState"], info["Restarts"]) == ("CANCELLED", "0"), out
    assert "not requeued" in out, out


def test_sweep_runs_one_array_element_per_method_and_seed(slurm, fake_venv):
    sweep_dir = fake_venv.parent / "sweep"
    log = fake_venv.parent / "fake.log"
    env = {**slurm.env, **job_env(HPCFED_VENV=str(fake_venv), FAKE_LOG=str(log), FAKE_MODE="finish",
                                  CONFIG="configs/demo.yaml", METHODS="pfedmma plora", SEEDS="0 1 2",
                                  SWEEP_DIR=str(sweep_dir))}
    # run directly, the script submits itself as an array of |METHODS| x |SEEDS| elements
    done = subprocess.run([SWEEP, "--parsable", "-n", "2", "-o", f"{fake_venv.parent}/%A_%a.out"], cwd=REPO,
                          env=env, capture_output=True, text=True, timeout=60)
    assert done.returncode == 0, done.stderr
    array = done.stdout.strip()
    states = [slurm.wait(f"{array}_{index}", timeout=120)["JobState"] for index in range(6)]
    assert states == ["COMPLETED"] * 6
    assert sweep_dir.is_dir()
    expected = {f"size=2 restart=0 train configs/demo.yaml -o method.name={method} -o seed={seed} "
                f"-o output={sweep_dir}/{method}-s{seed}.h5 --resume auto"
                for method in ("pfedmma", "plora") for seed in (0, 1, 2)}
    assert set(log.read_text().splitlines()) == expected


def test_mpirun_script_starts_again_after_exit_75_only_with_loop(fake_venv, tmp_path):
    """No SLURM: the ranks (not the script) are signalled, as a watchdog would; exit 75 then means resume."""
    log = tmp_path / "fake.log"
    env = {**os.environ, "HPCFED_VENV": str(fake_venv), "FAKE_LOG": str(log), "FAKE_MODE": "interrupt"}
    for loop, expected_rc, expected_starts in ((False, 75, 1), (True, 0, 2)):
        log.unlink(missing_ok=True)
        log.with_suffix(".checkpoint").unlink(missing_ok=True)
        args = [MPIRUN, *(["--loop"] if loop else []), "configs/demo.yaml", "2", "-o", "rounds=3"]
        script = subprocess.Popen(args, cwd=REPO, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                                  text=True)
        wait_until(log.exists, 60, "the ranks to start")
        rank = subprocess.run(["pgrep", "-f", f"{fake_venv}/bin/hpcfed train", "-n"], capture_output=True,
                              text=True).stdout.split()
        assert rank, "no rank found"
        os.kill(int(rank[0]), 10)  # SIGUSR1 to one rank; the fake's allreduce tells the others
        out, _ = script.communicate(timeout=60)
        assert script.returncode == expected_rc, out
        assert len(log.read_text().splitlines()) == expected_starts, out

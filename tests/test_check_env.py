"""`hpcfed check-env` under real launchers: the venv's own mpiexec passes a good set-up, a bad data root and a
single rank fail with their fixes, and a foreign Open MPI mpirun is reported as a launcher mismatch."""

import os
import re
import shutil
import subprocess
from pathlib import Path

import pytest

from conftest import HPCFED, MPIEXEC, REPO, run_mpi, write_config

OPEN_MPI_MPIRUN = Path("/usr/bin/mpirun.openmpi")  # not /usr/bin/mpirun: an alternatives link that may be MPICH's


def report_of(result: subprocess.CompletedProcess) -> str:
    assert result.stdout.count("hpcfed check-env:") == 1, result.stdout + result.stderr  # one report, by rank 0
    return result.stdout


@pytest.fixture(scope="session")
def open_mpi_mpirun() -> Path:
    """Debian's Open MPI launcher (a real launcher foreign to the venv's MPICH), installed on first use."""
    if OPEN_MPI_MPIRUN.exists():
        return OPEN_MPI_MPIRUN
    root, apt = os.geteuid() == 0, shutil.which("apt-get") is not None
    if not root and not apt:
        if os.environ.get("CI"):
            pytest.fail("CI needs Debian's openmpi-bin for the launcher-mismatch test: install it in the image")
        pytest.skip("no Open MPI launcher, and apt-get is unavailable to install openmpi-bin")
    sudo = [] if root else ["sudo", "-n"]
    env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
    if subprocess.run(["apt-cache", "show", "openmpi-bin"], capture_output=True).returncode != 0:
        subprocess.run([*sudo, "apt-get", "update"], check=True, capture_output=True, env=env)
    subprocess.run([*sudo, "apt-get", "install", "-y", "--no-install-recommends", "openmpi-bin"], check=True,
                   capture_output=True, env=env, timeout=600)
    return OPEN_MPI_MPIRUN


@pytest.mark.mpi
def test_a_good_config_passes_under_the_venv_mpiexec(tmp_path, image_tree):
    config = write_config(tmp_path / "good.yaml", image_tree)
    result = run_mpi(3, [str(HPCFED), "check-env", str(config)])
    report = report_of(result)
    assert result.returncode == 0, report + result.stderr
    assert "FAIL" not in report and re.search(r"ok +launcher", report)
    assert all(re.search(rf"\b{rank}->(cpu|cuda:\d+)", report) for rank in range(3))  # every rank has a device
    assert re.search(rf"ok +dataset +imagefolder at {image_tree}", report)


@pytest.mark.mpi
def test_an_unreadable_dataset_root_fails_with_its_fix(tmp_path, image_tree):
    missing = tmp_path / "no_such_data"
    config = write_config(tmp_path / "bad.yaml", image_tree, **{"data.root": str(missing)})
    result = run_mpi(2, [str(HPCFED), "check-env", str(config)])
    report = report_of(result)
    assert result.returncode != 0
    failure = re.search(r"FAIL +dataset +(.*)\n +fix: (.*)", report)
    assert failure and str(missing) in failure.group(1) and "data.root" in failure.group(2)


@pytest.mark.mpi
def test_a_single_rank_fails_the_rank_check():
    result = run_mpi(1, [str(HPCFED), "check-env"])
    report = report_of(result)
    assert result.returncode != 0 and re.search(r"FAIL +ranks .*server rank and a client rank", report)


@pytest.mark.mpi
def test_an_unset_thread_count_is_a_warning_not_a_failure():
    result = run_mpi(2, [str(HPCFED), "check-env"], env={"OMP_NUM_THREADS": ""})
    report = report_of(result)
    assert result.returncode == 0 and re.search(r"WARN +threads .*\n +fix: export OMP_NUM_THREADS=1", report)


@pytest.mark.mpi
def test_a_foreign_open_mpi_launcher_is_reported_as_a_mismatch(open_mpi_mpirun):
    env = {**os.environ, "OMPI_ALLOW_RUN_AS_ROOT": "1", "OMPI_ALLOW_RUN_AS_ROOT_CONFIRM": "1"}
    result = subprocess.run([str(open_mpi_mpirun), "--allow-run-as-root", "--oversubscribe", "-n", "2", str(HPCFED),
                             "check-env"], capture_output=True, text=True, timeout=180, env=env, cwd=REPO)
    report = report_of(result)
    assert result.returncode != 0
    mismatch = re.search(r"FAIL +launcher +mismatch: started by Open MPI mpirun, but mpi4py uses MPICH.*\n +fix: (.*)",
                         report)
    assert mismatch and str(MPIEXEC) in mismatch.group(1)  # the fix names the launcher that matches mpi4py

"""The run file can be read while the job writes it (SWMR)."""

import os
import signal
import subprocess
import time

import numpy as np
import pytest

from hpcfed.results import open_run

from conftest import HPCFED, MPIEXEC, REPO, write_config


@pytest.mark.mpi
def test_a_reader_sees_rounds_while_the_job_is_still_running(tmp_path, image_tree):
    cfg = write_config(tmp_path / "live.yaml", image_tree, rounds=30, participation=1.0)
    out = cfg.with_suffix(".h5")
    job = subprocess.Popen([str(MPIEXEC), "-n", "2", str(HPCFED), "train", str(cfg)], cwd=REPO,
                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                           env={**os.environ, "HF_HUB_OFFLINE": "1"})
    try:
        seen_while_running = None
        deadline = time.monotonic() + 150
        while time.monotonic() < deadline and job.poll() is None:
            if out.exists():
                try:
                    with open_run(out) as f:
                        if "progress" in f and f["status"][()].decode() == "running":
                            done = int(f["progress/rounds_done"][()])
                            if done >= 1:
                                acc = f["metrics/client/test_accuracy"][:done]
                                seen_while_running = (done, acc)
                                break
                except OSError:
                    pass  # the writer has not switched SWMR on yet
            time.sleep(0.2)
        assert seen_while_running is not None, "no round was readable while the job ran"
        done, acc = seen_while_running
        assert np.isfinite(acc).all()
        assert job.poll() is None or done < 30  # read before the end
        job.send_signal(signal.SIGTERM)  # the rest of the 30 rounds would test nothing more
    finally:
        stdout, stderr = job.communicate(timeout=300)
    assert job.returncode == 75, stderr[-2000:]
    with open_run(out) as f:  # the reader never disturbed the writer: it closed the file cleanly
        assert f["status"][()].decode() == "interrupted" and done <= int(f["progress/rounds_done"][()]) < 30

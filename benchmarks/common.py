"""What every benchmark needs: medians of alternating repetitions, the memory of a process tree, hpcfed runs
under the venv's mpiexec, and a description of the machine. Ratios are measured side by side in one run, so
noise from other work on a shared machine hits both sides alike."""

from __future__ import annotations

import os
import platform
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import h5py
import numpy as np

REPO = Path(__file__).resolve().parents[1]
BIN = Path(sys.executable).parent
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}


def median(values) -> float:
    return float(statistics.median(values))


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem = int(next(line.split()[1] for line in Path("/proc/meminfo").read_text().splitlines()
                   if line.startswith("MemTotal"))) // 1024
    import torch

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_mb": mem, "python": platform.python_version(),
            "torch": torch.__version__, "load_average_at_start": os.getloadavg()[0], "host": platform.node()}


def _descendants(pid: int) -> list[int]:
    out, todo = [], [pid]
    while todo:
        p = todo.pop()
        out.append(p)
        try:
            children = Path(f"/proc/{p}/task/{p}/children").read_text().split()
        except OSError:
            continue
        todo.extend(int(c) for c in children)
    return out


def _pss_kb(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def _cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace")
    except OSError:
        return ""


class TreeMemory:
    """Samples the proportional set size (PSS: shared pages split between their users) of a process and all its
    descendants every `interval` s; keeps the peak of the sum, and the peak of each process matching `match`."""

    def __init__(self, pid: int, match: str = "", interval: float = 0.2):
        self.pid, self.match, self.interval = pid, match, interval
        self.peak_total_kb, self.peak_kb = 0, {}
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            total = 0
            for p in _descendants(self.pid):
                kb = _pss_kb(p)
                total += kb
                if self.match and self.match in _cmdline(p):
                    self.peak_kb[p] = max(self.peak_kb.get(p, 0), kb)
            self.peak_total_kb = max(self.peak_total_kb, total)
            self._stop.wait(self.interval)

    def __enter__(self) -> TreeMemory:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def hpcfed_train(ranks: int, config: str, overrides: dict, output: Path, match_memory: bool = False) -> dict:
    """One `mpiexec -n ranks hpcfed train` run; returns wall time, per-round seconds and timings from the run
    file, and (match_memory) the peak PSS of each rank process."""
    args = [str(BIN / "mpiexec"), "-n", str(ranks), str(BIN / "hpcfed"), "train", config, "--overwrite",
            "-o", f"output={output}"] + [a for k, v in overrides.items() for a in ("-o", f"{k}={v}")]
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    with TreeMemory(proc.pid, match="hpcfed train" if match_memory else "") as memory:
        out, err = proc.communicate()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{err[-3000:]}")
    with h5py.File(output, "r") as f:
        result = {"wall": wall, "round_seconds": f["metrics/global/round_seconds"][:],
                  "timing": {k: f[f"timing/{k}"][:] for k in f["timing"]},
                  "comm_bytes": f["comm/bytes_up"][:].sum(1) + f["comm/bytes_down"][:].sum(1)}
    result["peak_rank_mb"] = sorted(kb / 1024 for kb in memory.peak_kb.values())
    result["peak_total_mb"] = memory.peak_total_kb / 1024
    return result


def steady_rounds(round_seconds: np.ndarray) -> np.ndarray:
    """Rounds after the first (which pays the first decode of every image and the allocator's warm-up)."""
    return np.asarray(round_seconds)[1:]


def log(message: str) -> None:
    sys.stdout.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stdout.flush()

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


def proc_stat(pid: int) -> tuple[int, int] | None:
    """(parent pid, start time in ticks) of a live process, None once it is gone or a zombie; the start time tells
    a reused pid apart."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
        return None if fields[0] == "Z" else (int(fields[1]), int(fields[19]))
    except (OSError, IndexError):
        return None


def descendants(root: int) -> dict[int, int]:
    """pid -> start time of `root` and everything below it."""
    stats = {int(p): s for p in os.listdir("/proc") if p.isdigit() and (s := proc_stat(int(p)))}
    children: dict[int, list[int]] = {}
    for pid, (ppid, _) in stats.items():
        children.setdefault(ppid, []).append(pid)
    tree, todo = {}, [root]
    while todo:
        pid = todo.pop()
        if pid in stats and pid not in tree:
            tree[pid] = stats[pid][1]
            todo.extend(children.get(pid, []))
    return tree


def pss_kib(pid: int) -> int:
    try:
        for line in Path(f"/proc/{pid}/smaps_rollup").read_text().splitlines():
            if line.startswith("Pss:"):
                return int(line.split()[1])
    except OSError:
        pass
    return 0


def cmdline(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode(errors="replace").strip()
    except OSError:
        return ""


class TreeSampler(threading.Thread):
    """Peak of the summed PSS (shared pages split fairly between processes) of a launcher and all its descendants,
    and of each process whose command line contains `match`; remembers every process it saw (`seen`), so a
    caller can make sure none outlives the run."""

    def __init__(self, root: int, period: float = 0.25, match: str = ""):
        super().__init__(daemon=True)
        self.root, self.period, self.match, self.done = root, period, match, threading.Event()
        self.peak_kib, self.peak_each_kib, self.seen = 0, {}, {}

    def run(self) -> None:
        while not self.done.is_set():
            tree = descendants(self.root)
            self.seen.update(tree)
            sizes = {p: pss_kib(p) for p in tree}
            self.peak_kib = max(self.peak_kib, sum(sizes.values()))
            for p, kib in sizes.items():
                if self.match and self.match in cmdline(p):
                    self.peak_each_kib[p] = max(self.peak_each_kib.get(p, 0), kib)
            self.done.wait(self.period)

    def stop(self) -> None:
        self.done.set()
        self.join()


def hpcfed_train(ranks: int, config: str, overrides: dict, output: Path, match_memory: bool = False) -> dict:
    """One `mpiexec -n ranks hpcfed train` run; returns wall time, per-round seconds and timings from the run
    file, and (match_memory) the peak PSS of each rank process."""
    args = [str(BIN / "mpiexec"), "-n", str(ranks), str(BIN / "hpcfed"), "train", config, "--overwrite",
            "-o", f"output={output}"] + [a for k, v in overrides.items() for a in ("-o", f"{k}={v}")]
    started = time.perf_counter()
    proc = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=ENV, cwd=REPO)
    memory = TreeSampler(proc.pid, match="hpcfed train" if match_memory else "")
    memory.start()
    try:
        out, err = proc.communicate()
    finally:
        memory.stop()
    wall = time.perf_counter() - started
    if proc.returncode != 0:
        raise RuntimeError(f"{' '.join(args)} failed ({proc.returncode}):\n{err[-3000:]}")
    with h5py.File(output, "r") as f:
        result = {"wall": wall, "round_seconds": f["metrics/global/round_seconds"][:],
                  "timing": {k: f[f"timing/{k}"][:] for k in f["timing"]},
                  "comm_bytes": f["comm/bytes_up"][:].sum(1) + f["comm/bytes_down"][:].sum(1)}
    result["peak_rank_mb"] = sorted(kib / 1024 for kib in memory.peak_each_kib.values())
    result["peak_total_mb"] = memory.peak_kib / 1024
    return result


def steady_rounds(round_seconds: np.ndarray) -> np.ndarray:
    """Rounds after the first (which pays the first decode of every image and the allocator's warm-up)."""
    return np.asarray(round_seconds)[1:]


def log(message: str) -> None:
    sys.stdout.write(f"[bench {time.strftime('%H:%M:%S')}] {message}\n")
    sys.stdout.flush()

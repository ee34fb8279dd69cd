"""hpcfed vs Flower: the same pFedMMA clients (hpcfed's ClientHost) trained by hpcfed under MPI and by Flower's
simulation engine (Ray), side by side, alternating, on the same data, splits, client count and parallelism.

  .venv/bin/python benchmarks/flower.py --out DIR        (sets up .venv-flower first; see README-flower.md)

Writes DIR/flower.json: a header (machine, versions, load), one row per workload and metric (startup_s, round_s,
peak_mem_mb) with the median of each side and flower/hpcfed, the accuracy cross-check, and every run's raw numbers.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import re
import shutil
import signal
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))
from common import TreeSampler, cmdline, proc_stat  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent
HPCFED_BIN = ROOT / ".venv" / "bin"
FLOWER_PYTHON = ROOT / ".venv-flower" / "bin" / "python"
CONFIG = "configs/demo.yaml"
WORKERS = 2  # client ranks of `mpiexec -n 3` (server + 2) = Ray actors with one CPU each
ENV = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1"}
RUN_TIMEOUT = 900  # s; a run this slow is broken, not slow
MIN_REPS = 3  # repetitions per side that always run, whatever the budget (min and median need a few)


@dataclass
class Workload:
    name: str
    overrides: list[str]
    rounds: int  # >= 3: round 1 (warm-up) and the last (evaluation) are not timed
    reps: int
    about: str

    def all_overrides(self) -> list[str]:
        # eval_every=rounds: hpcfed always evaluates the first and last round, so Flower does exactly that too.
        return [*self.overrides, f"rounds={self.rounds}", f"eval_every={self.rounds}", "runtime.checkpoint_every=0"]


# The demo's clients already do seconds of work per round (2 epochs over ~150 images), so the overhead-bound case is
# its 4-shot variant (2-18 training images, one SGD step per epoch) and the compute-bound case is the demo itself.
WORKLOADS = [
    Workload("demo-4shot", ["participation=1.0", "partition.shots=4"], rounds=5, reps=MIN_REPS,
             about="configs/demo.yaml, participation 1.0, partition.shots=4: 8 clients x 2 epochs of one batch "
                   "(2-18 images)"),
    Workload("demo", ["participation=1.0"], rounds=4, reps=MIN_REPS,
             about="configs/demo.yaml, participation 1.0: 8 clients x 2 epochs over 121-177 images (batch 32)"),
]


# ----------------------------------------------------------------------------- process trees: cleanup
def kill_leftovers(seen: dict[int, int], marker: str | None) -> list[str]:
    """Stop the processes of one run that are still alive (by pid, checked against their start time), plus any
    whose command line names this run's private directory (Ray daemons detached before a sample saw them)."""
    def alive_of(pids):
        return {pid for pid in pids if (s := proc_stat(pid)) and s[1] == seen.get(pid, s[1])}

    deadline = time.time() + 5  # Ray's actors take a moment to exit after run_simulation returns
    while time.time() < deadline and alive_of(seen):
        time.sleep(0.1)
    alive = alive_of(seen)
    if marker:
        alive.update(int(p) for p in os.listdir("/proc") if p.isdigit() and marker in cmdline(int(p)))
    alive.discard(os.getpid())
    names = [f"{pid} {cmdline(pid)[:80]}" for pid in sorted(alive)]
    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in alive_of(alive):
            try:
                os.kill(pid, sig)
            except ProcessLookupError:
                pass
        deadline = time.time() + 5
        while time.time() < deadline and alive_of(alive):
            time.sleep(0.1)
    return names


@dataclass
class Launched:
    started: float  # time.time() just before the launch
    first_round_line: float | None  # when hpcfed's "round 1/R" line arrived
    peak_mem_mb: float
    leftovers: list[str]  # processes still running after the launcher exited, then killed


def launch(cmd: list[str], log: Path, marker: str | None = None) -> Launched:
    """Run `cmd` niced, its output to `log`; measure its tree's memory; leave nothing of it running."""
    first_line: list[float] = []
    with open(log, "w") as out:
        started = time.time()
        proc = subprocess.Popen(["nice", "-n", "19", *cmd], cwd=ROOT, env=ENV, stdout=subprocess.PIPE,
                                stderr=subprocess.STDOUT, text=True, start_new_session=True)
        sampler = TreeSampler(proc.pid)
        sampler.start()

        def copy_output() -> None:
            for line in proc.stdout:
                if not first_line and re.match(r"round\s+1/", line):
                    first_line.append(time.time())
                out.write(line)

        reader = threading.Thread(target=copy_output, daemon=True)
        reader.start()
        try:
            rc = proc.wait(timeout=RUN_TIMEOUT)
        finally:
            sampler.stop()
            leftovers = kill_leftovers(sampler.seen, marker)
            reader.join(timeout=10)
    if rc != 0:
        tail = "".join(log.read_text().splitlines(keepends=True)[-25:])
        raise RuntimeError(f"{' '.join(cmd[:4])} ... exited with {rc}; log {log}:\n{tail}")
    return Launched(started, first_line[0] if first_line else None, sampler.peak_kib / 1024, leftovers)


# ----------------------------------------------------------------------------- the two sides
def make_splits(w: Workload, path: Path) -> Path:
    """The splits of a workload, made once, untimed, in the file both sides read them from (`hpcfed split`)."""
    from hpcfed.config import load_config
    from hpcfed.data import load_listing
    from hpcfed.train.setup import prepare_splits

    cfg = load_config(ROOT / CONFIG, [*w.all_overrides(), f"output={path}"])
    prepare_splits(cfg, load_listing(cfg.data.dataset, cfg.data.root, cfg.data.domains, cfg.data.class_names_file),
                   overwrite=True)
    return path


def run_hpcfed(w: Workload, splits: Path, out: Path, rep: int) -> dict:
    from hpcfed.results import open_run

    run_file = out / w.name / f"hpcfed-{rep}.h5"
    shutil.copy(splits, run_file)  # holds only the splits: `hpcfed train` reuses them
    overrides = [a for o in [*w.all_overrides(), f"output={run_file}"] for a in ("-o", o)]
    cmd = [str(HPCFED_BIN / "mpiexec"), "-n", str(WORKERS + 1), str(HPCFED_BIN / "hpcfed"), "train", CONFIG,
           *overrides]
    done = launch(cmd, out / "logs" / f"{w.name}-hpcfed-{rep}.log")
    with open_run(run_file) as f:
        seconds = f["metrics/global/round_seconds"][:]
        busiest = f["timing/train"][:, 1:].max(axis=1)  # local training of the slower client rank
        accuracy = f["metrics/client/test_accuracy"][:]
    # round_seconds[r] runs from the start of round r on rank 0 to the gather that ends it; the line follows at once.
    ready = done.first_round_line - seconds[0]
    return {"side": "hpcfed", "rep": rep, "startup_s": ready - done.started, "first_round_s": float(seconds[0]),
            "rounds_s": [float(s) for s in seconds[1:-1]], "train_s": [float(s) for s in busiest[1:-1]],
            "peak_mem_mb": done.peak_mem_mb,
            "test_accuracy_first": accuracy[0].tolist(), "test_accuracy_last": accuracy[-1].tolist(),
            "leftovers": done.leftovers}


def run_flower(w: Workload, splits: Path, out: Path, rep: int) -> dict:
    result = out / w.name / f"flower-{rep}.json"
    workdir = Path(tempfile.mkdtemp(prefix="fl", dir="/tmp"))  # Ray's socket paths must stay short
    try:
        cmd = [str(FLOWER_PYTHON), str(ROOT / "benchmarks" / "flower_peer.py"), CONFIG,
               *[a for o in w.all_overrides() for a in ("-o", o)], "--splits", str(splits), "--result", str(result),
               "--workdir", str(workdir), "--workers", str(WORKERS)]
        done = launch(cmd, out / "logs" / f"{w.name}-flower-{rep}.log", marker=f"{workdir}/")
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    r = json.loads(result.read_text())
    # Ray starts in a background thread while round 1 already waits, so "round 1 started" says little: a worker is
    # ready when its first train call begins (backbone built); the run is ready when every worker is.
    first_call: dict[int, float] = {}
    for call in r["first_round"]:
        first_call[call["pid"]] = min(call["started"], first_call.get(call["pid"], float("inf")))
    ready = max(first_call.values())
    starts = r["round_start"]
    return {"side": "flower", "rep": rep, "startup_s": ready - done.started, "first_round_s": starts[1] - ready,
            "rounds_s": [b - a for a, b in zip(starts[1:-1], starts[2:], strict=True)],
            "train_s": r["busiest_train_s"][1:-1], "peak_mem_mb": done.peak_mem_mb,
            "test_accuracy_first": r["test_accuracy"]["1"], "test_accuracy_last": r["test_accuracy"][str(w.rounds)],
            "workers_seen": len(first_call), "launch_to_round1_call_s": starts[0] - done.started,
            "leftovers": done.leftovers}


# ----------------------------------------------------------------------------- the table
NOTES = {
    "startup_s": "launch -> every worker ready to train. hpcfed: start of round 1 on rank 0 (arrival of its "
                 "'round 1' line minus /metrics/global/round_seconds[0]); Flower: the later of the 2 actors' first "
                 "train call, after Ray start, actor spawn and building the host. Splits are made beforehand.",
    "round_s": "median over all timed rounds of all reps; rounds 2..R-1 (round 1 = warm-up, round R = evaluation). "
               "hpcfed: /metrics/global/round_seconds; Flower: time between consecutive configure_train calls of a "
               "FedAvg subclass. Neither evaluates in these rounds.",
    "overhead_s": "the framework's own cost per round: each timed round minus the local training of the busier "
                  "worker (both sides train the same clients with the same code and evaluate in no timed round), "
                  "median over all timed rounds of all reps.",
    "peak_mem_mb": "peak over the run of summed PSS (/proc/<pid>/smaps_rollup) of the launcher and all descendants, "
                   "sampled every 0.25 s (hpcfed: mpiexec, proxy, 3 ranks; Flower: driver, Ray daemons, 2 actors)",
}


def _samples(runs: list[dict], metric: str) -> list[float]:
    """Every value of `metric` over the runs of one side: per timed round for round_s and overhead_s."""
    if metric == "round_s":
        return [x for r in runs for x in r["rounds_s"]]
    if metric == "overhead_s":  # the framework's own cost: a round minus the local training of the busier worker
        return [t - x for r in runs for t, x in zip(r["rounds_s"], r["train_s"], strict=True)]
    return [r[metric] for r in runs]


def summarise(runs: list[dict]) -> tuple[list[dict], list[dict]]:
    """Per workload and metric, the median of each side (the ratio's) with its min, and for the per-round
    framework overhead its spread: min, quartiles and max over every timed round of every repetition."""
    rows, checks = [], []
    for w in WORKLOADS:
        sides = {s: [r for r in runs if r["workload"] == w.name and r["side"] == s] for s in ("hpcfed", "flower")}
        if not all(sides.values()):
            continue
        for metric in NOTES:
            samples = {s: _samples(rs, metric) for s, rs in sides.items()}
            median = {s: statistics.median(v) for s, v in samples.items()}
            notes = (f"{NOTES[metric].rstrip('.')}. {w.about}; {w.rounds} rounds. Min: hpcfed "
                     f"{min(samples['hpcfed']):.3f}, flower {min(samples['flower']):.3f}")
            if metric == "overhead_s":
                spread = {s: statistics.quantiles(v, n=4) if len(v) > 1 else [v[0]] * 3 for s, v in samples.items()}
                notes += "; spread (min / quartiles / max): " + ", ".join(
                    f"{s} {min(v):.3f} / {spread[s][0]:.3f}-{spread[s][2]:.3f} / {max(v):.3f} over {len(v)} rounds"
                    for s, v in samples.items())
            rows.append({"workload": w.name, "metric": metric, "hpcfed": round(median["hpcfed"], 3),
                         "flower": round(median["flower"], 3), "ratio": round(median["flower"] / median["hpcfed"], 2),
                         "hpcfed_min": round(min(samples["hpcfed"]), 3), "flower_min": round(min(samples["flower"]), 3),
                         "reps": min(len(rs) for rs in sides.values()), "notes": notes})
        # Same clients, same seeds, same code: the final personalised models must score (nearly) the same.
        h, f = sides["hpcfed"][0]["test_accuracy_last"], sides["flower"][0]["test_accuracy_last"]
        checks.append({"workload": w.name, "round": w.rounds, "hpcfed_mean_test_accuracy": statistics.fmean(h),
                       "flower_mean_test_accuracy": statistics.fmean(f),
                       "difference": statistics.fmean(f) - statistics.fmean(h),
                       "max_client_difference": max(abs(a - b) for a, b in zip(h, f, strict=True)),
                       "repeatable": all(r["test_accuracy_last"] == rs[0]["test_accuracy_last"]
                                         for rs in sides.values() for r in rs)})
    return rows, checks


def header() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor())
    mem_kib = int(Path("/proc/meminfo").read_text().split()[1])
    flower = json.loads(subprocess.run(
        [str(FLOWER_PYTHON), "-c", "import json; from importlib.metadata import version as v; "
         "print(json.dumps({p: v(p) for p in ('flwr', 'ray', 'torch')}))"], capture_output=True, text=True,
        check=True).stdout)

    def installed(package: str) -> str | None:
        try:
            return version(package)
        except PackageNotFoundError:
            return None

    return {"cpu": cpu, "cores": os.cpu_count(), "memory_gib": round(mem_kib / 2**20, 1),
            "python": platform.python_version(),
            "hpcfed_side": {p: installed(p) for p in ("hpcfed", "torch", "mpi4py", "mpich")},
            "flower_side": flower, "config": CONFIG, "workers": WORKERS,
            "launch": {"hpcfed": f"mpiexec -n {WORKERS + 1} hpcfed train (server + {WORKERS} client ranks)",
                       "flower": f"flwr.simulation.run_simulation, Ray backend, {WORKERS} actors x num_cpus=1, "
                                 "Flower's polling intervals left at their defaults"},
            "threads": "OMP_NUM_THREADS=1 and torch.set_num_threads(1) in every rank and actor; every run under "
                       "nice -n 19",
            "loadavg_before": Path("/proc/loadavg").read_text().split()[:3]}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, type=Path, help="directory for flower.json, run files and logs")
    parser.add_argument("--budget", type=float, default=400, help="seconds for the whole run; repetitions beyond "
                        f"the first {MIN_REPS} of each workload are skipped when the next one would overrun it")
    args = parser.parse_args()
    began = time.time()

    def say(message: str) -> None:
        print(f"[{time.time() - began:5.0f} s] {message}", flush=True)

    out = args.out.resolve()
    (out / "logs").mkdir(parents=True, exist_ok=True)
    say("Flower venv (benchmarks/flower_setup.sh)")
    subprocess.run(["bash", str(ROOT / "benchmarks" / "flower_setup.sh")], check=True)
    head = header()
    runs: list[dict] = []
    splits = {}
    for w in WORKLOADS:
        (out / w.name).mkdir(exist_ok=True)
        splits[w.name] = make_splits(w, out / w.name / "splits.h5")
    say(f"splits ready; workloads: {', '.join(w.name for w in WORKLOADS)}")

    last_pair: dict[str, float] = {}
    for rep in range(max(w.reps for w in WORKLOADS)):
        for w in WORKLOADS:
            if rep >= w.reps:
                continue
            if rep >= MIN_REPS and time.time() - began + last_pair[w.name] > args.budget:
                say(f"{w.name}: repetition {rep + 1} skipped (would overrun the {args.budget:.0f} s budget)")
                continue
            t = time.time()
            # Alternate which side goes first, so a drift in the machine's load does not favour one of them.
            order = (run_hpcfed, run_flower) if rep % 2 == 0 else (run_flower, run_hpcfed)
            for side in order:
                r = {"workload": w.name, **side(w, splits[w.name], out, rep),
                     "loadavg_1min_after": float(Path("/proc/loadavg").read_text().split()[0])}  # others' load too
                runs.append(r)
                say(f"{w.name} rep {rep + 1}/{w.reps} {r['side']:>6}: startup {r['startup_s']:.1f} s, round "
                    f"{statistics.median(r['rounds_s']):.2f} s (training {statistics.median(r['train_s']):.2f} s), "
                    f"first round {r['first_round_s']:.1f} s, peak "
                    f"{r['peak_mem_mb']:.0f} MB" + (f", killed leftovers {r['leftovers']}" if r["leftovers"] else ""))
            last_pair[w.name] = time.time() - t
            rows, checks = summarise(runs)
            head["loadavg_after"] = Path("/proc/loadavg").read_text().split()[:3]
            head["wall_s"] = round(time.time() - began, 1)
            report = {"header": head, "rows": rows, "accuracy": checks, "runs": runs}
            (out / "flower.json").write_text(json.dumps(report, indent=1))  # after every pair: partial results survive

    print(f"\n{'workload':<11} {'metric':<12} {'hpcfed':>8} {'flower':>8} {'ratio':>6} reps")
    for row in rows:
        print(f"{row['workload']:<11} {row['metric']:<12} {row['hpcfed']:>8.2f} {row['flower']:>8.2f} "
              f"{row['ratio']:>6.2f} {row['reps']:>4}")
    for c in checks:
        print(f"{c['workload']}: final mean test accuracy hpcfed {c['hpcfed_mean_test_accuracy']:.4f}, flower "
              f"{c['flower_mean_test_accuracy']:.4f} (difference {c['difference']:+.4f}, largest per client "
              f"{c['max_client_difference']:.4f})")
    say(f"wrote {out / 'flower.json'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())

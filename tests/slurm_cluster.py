"""Throw-away SLURM clusters for tests (munge + slurmctld + slurmd), after spec/slurm.md.

`SlurmCluster` is a cluster whose daemons, private config and state live under one 0755 directory in /tmp and are
stopped by PID file. `SlurmCluster.on_this_host` is the single-node one (session fixture `slurm`);
tests/slurm_multinode.py builds a two-node cluster in network namespaces from the same pieces. The fixtures are
imported once, in conftest.py, so that every test module shares the same clusters and the same demo job
(`demo_job`, the single-node reference the multi-node runs are compared with).
"""

from __future__ import annotations

import os
import random
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import pytest

from hpcfed.data.built import data_cache_dir
from hpcfed.results import open_run

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE"}
# A node claims this many CPUs whatever the machine has, so 4-task jobs run on a 2-core box
# (SlurmdParameters=config_overrides: slurmd trusts the config instead of draining the node as "Low CPUs").
NODE_CPUS = 4

# MPICH (PyPI wheel) names its /dev/shm segment after the PMI KVS name, "<jobid>.<stepid>" under
# srun --mpi=pmi2; ranks killed by requeue/scancel leak it and the next step with that name (the requeued
# job) attaches to the stale segment and MPI_Init fails or hangs (slurm.md). Runs at job end and at requeue.
EPILOG = r"""#!/bin/bash
fnv() { local s=$1 h=2166136261 i c
        for ((i = 0; i < ${#s}; i++)); do printf -v c %d "'${s:i:1}"
            h=$(( ((h ^ c) * 16777619) & 0xffffffff )); done; printf %x "$h"; }
[ -n "$SLURM_JOB_ID" ] || exit 0
for step in $(seq 0 63); do
    rm -f /dev/shm/mpich_shm_"$(fnv "$SLURM_JOB_ID.$step")"_* /dev/shm/mpich_vci_"$(fnv "$SLURM_JOB_ID.$step")"_*
done
exit 0
"""
MPICH_SEGMENT_PREFIXES = ("mpich_shm_", "mpich_vci_")


@dataclass(frozen=True)
class Host:
    name: str  # the host name its daemon runs under, and the NodeName of a slurmd
    address: str


def fnv1a(text: str) -> str:
    """The hash MPICH puts in its segment names (the Epilog's `fnv`)."""
    value = 2166136261
    for byte in text.encode():
        value = ((value ^ byte) * 16777619) & 0xFFFFFFFF
    return f"{value:x}"


def slurm_conf(root: Path, controller: Host, nodes: list[Host], ports: tuple[int, int], memory_mb: int,
               first_job_id: int) -> str:
    """slurm.md's tested config: no cgroups or accounting, fast scheduling and requeue, pmi2 by default.
    Each slurmd's spool, PID and log file carry its node name (%n), so several can share the state directory."""
    node_lines = "\n".join(f"NodeName={node.name} NodeAddr={node.address} CPUs={max(NODE_CPUS, os.cpu_count() or 1)} "
                           f"RealMemory={memory_mb} State=UNKNOWN" for node in nodes)
    return f"""ClusterName=hpcfed-test
SlurmctldHost={controller.name}({controller.address})
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also the wait (+1 s) before a requeued job may start again: 121 s by default
AuthInfo=socket={root}/munge-run/munge.socket.2,cred_expire=10
SlurmctldPort={ports[0]}
SlurmdPort={ports[1]}
StateSaveLocation={root}/state/ctld
SlurmdSpoolDir={root}/state/d-%n
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd-%n.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd-%n.log
SlurmctldDebug=info
SlurmdDebug=info
ProctrackType=proctrack/pgid
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
# never "defer=0": substring matching turns defer on
SchedulerParameters=bf_interval=1,sched_interval=2
SelectType=select/cons_tres
SelectTypeParameters=CR_Core
SlurmdParameters=config_overrides
MpiDefault=pmi2
JobRequeue=1
ReturnToService=2
MailProg=/bin/true
Epilog={root}/etc/epilog.sh
# job ids restart at FirstJobId on every fresh cluster: a random start keeps this session's
# <jobid>.<stepid> away from MPICH segments leaked by an earlier one
FirstJobId={first_job_id}
MinJobAge=600
KillWait=5
InactiveLimit=0
Waittime=0
{node_lines}
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """A cluster under `root`: bring-up, tear-down by PID file, client commands with its private SLURM_CONF, job
    submission and polling. Subclasses say how a daemon is started on a host and how a client command reaches
    the controller (`start_controller`, `start_node`, `client_command`)."""

    def __init__(self, root: Path, controller: Host, nodes: list[Host], ports: tuple[int, int]):
        self.root, self.controller, self.nodes, self.ports = root, controller, nodes, ports
        self.conf = root / "etc" / "slurm.conf"
        self.first_job_id = random.randrange(1000, 8_000_000)
        # no SLURM_* of an allocation the tests may themselves run in: this cluster only
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
                    "SLURM_CONF": str(self.conf)}
        self.timings: dict[str, float] = {}

    @classmethod
    def on_this_host(cls, root: Path) -> SlurmCluster:
        """One node named after this host, everything on 127.0.0.1 with free ports."""
        host = Host(socket.gethostname().split(".")[0], "127.0.0.1")
        return cls(root, host, [host], (_free_port(), _free_port()))

    @property
    def node(self) -> str:
        return self.nodes[0].name

    # --- bring-up / tear-down -------------------------------------------------------------------
    @staticmethod
    def install() -> float:
        """apt-get the four Debian packages (no recommends: 6 packages instead of ~36); seconds taken."""
        started = time.monotonic()
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        for cmd in (["apt-get", "update", "-qq"],
                    ["apt-get", "install", "-y", "-qq", "--no-install-recommends", *PACKAGES]):
            done = subprocess.run(cmd, env=env, capture_output=True, text=True, timeout=900)
            if done.returncode != 0:
                raise RuntimeError(f"`{' '.join(cmd)}` failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
        return time.monotonic() - started

    def up(self) -> None:
        started = time.monotonic()
        self.write_state()
        self.start_controller()
        for node in self.nodes:
            self.start_node(node)
        self.wait_idle([node.name for node in self.nodes])
        self.timings["start_to_idle"] = time.monotonic() - started

    def write_state(self) -> None:
        """State directories, the munge key and munged, slurm.conf, the Epilog and cgroup.conf."""
        for sub in ("etc", "log", "run", "state/ctld", "munge-key", "munge-run", "jobs"):
            (self.root / sub).mkdir(parents=True, exist_ok=True)
        self.root.chmod(0o755)
        (self.root / "munge-key").chmod(0o700)  # munged refuses a key directory others can read
        (self.root / "munge-run").chmod(0o755)  # ...and a socket below any directory without o+x
        key = self.root / "munge-key" / "munge.key"
        self._check("mungekey", "-c", "-k", str(key))
        self._check("munged", f"--key-file={key}", f"--socket={self.root}/munge-run/munge.socket.2",
                    f"--pid-file={self.root}/munge-run/munged.pid", f"--seed-file={self.root}/munge-key/munged.seed",
                    f"--log-file={self.root}/log/munged.log")
        memory_mb = int(_meminfo_kb("MemTotal") / 1024 * 0.9)  # above what slurmd measures -> node INVALID
        etc = self.root / "etc"
        self.conf.write_text(slurm_conf(self.root, self.controller, self.nodes, self.ports, memory_mb,
                                        self.first_job_id))
        (etc / "epilog.sh").write_text(EPILOG)
        (etc / "epilog.sh").chmod(0o755)
        # 22.05's slurmd always loads a cgroup plugin; autodetected v2 dies without systemd/dbus (containers)
        (etc / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")

    def start_controller(self) -> None:
        self._check("slurmctld", "-f", str(self.conf), "-i")  # -i: start from empty state

    def start_node(self, node: Host) -> None:
        self._check("slurmd", "-f", str(self.conf), "-N", node.name)

    def client_command(self, cmd: tuple[str, ...]) -> list[str]:
        """How a command reaches the cluster (here: as it is)."""
        return list(cmd)

    def wait_idle(self, nodes: list[str], timeout: float = 30) -> None:
        deadline = time.monotonic() + timeout
        states = ""
        while time.monotonic() < deadline:
            states = self.run("sinfo", "-h", "-N", "-n", ",".join(nodes), "-o", "%N %T").stdout.split()
            if states and states[1::2] == ["idle"] * len(nodes):
                return
            time.sleep(0.25)
        raise RuntimeError(f"SLURM did not come up: node states {states!r}\n{self.logs()}")

    def daemon_pid_files(self) -> list[tuple[Path, str]]:
        """(PID file, command name) of every daemon, slurmds first."""
        return [*((self.root / "run" / f"slurmd-{node.name}.pid", "slurmd") for node in self.nodes),
                (self.root / "run" / "slurmctld.pid", "slurmctld"), (self.root / "munge-run" / "munged.pid", "munged")]

    def down(self) -> None:
        """Stop the daemons by PID file (never by name): SLURM's at once (slurmctld takes seconds), then munged."""
        started = time.monotonic()
        files = self.daemon_pid_files()
        stop_pids([pid for pid in (_daemon_pid(path, name) for path, name in files[:-1]) if pid])
        stop_pids([pid for pid in [_daemon_pid(*files[-1])] if pid])
        self.remove_mpich_segments()
        self.timings["down"] = time.monotonic() - started

    def logs(self, lines: int = 30) -> str:
        out = []
        for path in sorted((self.root / "log").glob("*.log")):
            out.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def _check(self, *cmd: str) -> None:
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr}\n{self.logs()}")

    def mpich_segments(self, jobs: int = 500) -> list[Path]:
        """The /dev/shm segments MPICH left for this cluster's job ids (steps 0-63 of its first `jobs` jobs); never
        those of other clusters."""
        names = {fnv1a(f"{job}.{step}") for job in range(self.first_job_id, self.first_job_id + jobs)
                 for step in range(64)}
        found = []
        for path in Path("/dev/shm").iterdir():
            prefix = next((p for p in MPICH_SEGMENT_PREFIXES if path.name.startswith(p)), None)
            if prefix and path.name[len(prefix):].split("_")[0] in names:
                found.append(path)
        return found

    def remove_mpich_segments(self) -> None:
        """The Epilog's work, for jobs whose Epilog never ran (the cluster went down under them)."""
        for path in self.mpich_segments():
            path.unlink(missing_ok=True)

    def leftovers(self) -> list[str]:
        """What `down` should have removed and did not."""
        daemons = [f"{name} (pid {pid})" for path, name in self.daemon_pid_files() if (pid := _daemon_pid(path, name))]
        return daemons + [str(path) for path in self.mpich_segments()]

    # --- using it -------------------------------------------------------------------------------
    def run(self, *cmd: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("timeout", 60)
        return subprocess.run(self.client_command(cmd), env={**self.env, **kwargs.pop("env", {})},
                              capture_output=True, text=True, **kwargs)

    def sbatch(self, *args: str, env: dict | None = None, cwd: Path | None = None) -> int:
        """Submit (`sbatch --parsable ARGS`) and return the job id."""
        done = self.run("sbatch", "--parsable", *args, env=env or {}, cwd=cwd)
        assert done.returncode == 0, f"sbatch {' '.join(args)} failed: {done.stderr}"
        return int(done.stdout.strip().split(";")[0])

    def job(self, job_id: int | str) -> dict[str, str]:
        """`scontrol show job -o` (ID or ARRAYID_INDEX) as a dict (no accounting database here, so no sacct)."""
        out = self.run("scontrol", "show", "job", "-o", str(job_id)).stdout
        return dict(item.split("=", 1) for item in out.split() if "=" in item)

    def wait(self, job_id: int | str, timeout: float = 300) -> dict[str, str]:
        """Poll once a second until the job reaches a terminal state (sbatch --wait polls after 2, 8, 32 s)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            info = self.job(job_id)
            if info.get("JobState") in TERMINAL:
                return info
            time.sleep(1)
        self.run("scancel", str(job_id))
        raise TimeoutError(f"job {job_id} still {self.job(job_id).get('JobState')} after {timeout:.0f} s")


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _meminfo_kb(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/meminfo")


def _daemon_pid(pid_file: Path, name: str) -> int | None:
    """The PID in `pid_file` if that process is still `name` (a stale file may name a reused PID)."""
    if not pid_file.exists() or not pid_file.read_text().strip():
        return None
    pid = int(pid_file.read_text())
    comm = Path(f"/proc/{pid}/comm")
    return pid if comm.exists() and comm.read_text().strip() == name else None


def stop_pids(pids: list[int], grace: float = 20) -> None:
    """TERM to each of `pids`, KILL to those still alive after `grace` seconds."""
    for pid in pids:
        _signal(pid, 15)
    deadline = time.monotonic() + grace
    while time.monotonic() < deadline and any(Path(f"/proc/{pid}").exists() for pid in pids):
        time.sleep(0.1)
    for pid in pids:
        _signal(pid, 9)


def _signal(pid: int, number: int) -> None:
    try:
        os.kill(pid, number)
    except ProcessLookupError:
        pass


def report(message: str) -> None:
    sys.stderr.write(f"\n[slurm] {message}\n")


def prepare_host() -> dict[str, float]:
    """Skip unless this machine can run SLURM daemons; install the packages when missing. Timings of what it did."""
    missing = [cmd for cmd in ("slurmctld", "slurmd", "sbatch", "munged") if shutil.which(cmd) is None]
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root: slurmd runs as root and the packages are installed with apt-get "
                    "(CI runs the suite as root)")
    if missing and shutil.which("apt-get") is None:
        pytest.skip(f"no {', '.join(missing)} and no apt-get to install Debian's slurmctld slurmd slurm-client "
                    "munge")
    if not missing:
        return {}
    try:
        return {"apt_install": SlurmCluster.install()}
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        pytest.fail(f"installing SLURM failed: {error}")


def state_directory(prefix: str) -> Path:
    # not pytest's tmp_path: it is 0700 and munged wants o+x on every directory above its socket
    return Path(tempfile.mkdtemp(prefix=prefix, dir="/tmp"))


def serve(cluster: SlurmCluster, what: str):
    """The body of a session fixture: bring `cluster` up (a failure is a test failure: it could have come up),
    yield it, and always take it down and remove its state; anything left behind fails the last test."""
    try:
        cluster.up()
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        cluster.down()
        pytest.fail(f"bringing {what} up failed: {error}")
    report(f"{what} up: " + " ".join(f"{k}={v:.1f}s" for k, v in cluster.timings.items()) + f", state in "
           f"{cluster.root}")
    try:
        yield cluster
    finally:
        cluster.down()
        left = cluster.leftovers()
        report(f"{what} down in {cluster.timings['down']:.1f}s" + (f", LEFT BEHIND: {left}" if left else ""))
        shutil.rmtree(cluster.root, ignore_errors=True)
    if left:
        pytest.fail(f"{what} left behind after tear-down: {', '.join(left)}")


@pytest.fixture(scope="session", name="slurm")
def slurm_cluster():
    """The single-node cluster for the whole session; fails loudly whenever it could have been brought up and
    was not."""
    timings = prepare_host()
    cluster = SlurmCluster.on_this_host(state_directory("hpcfed-slurm."))
    cluster.timings.update(timings)
    yield from serve(cluster, "SLURM")


# --- the demo train job: configs/demo.yaml made small, shared by test_slurm and test_multinode --------------------

PYTHON = sys.executable
VENV = Path(sys.executable).parent.parent
TRAIN = str(REPO / "jobs" / "train.sbatch")
DEMO_RANKS = 4
DEMO_ROUNDS = 3  # the signal comes once round 1 is written and must land before the last round starts
# The demo on half its domains and clients (the jobs are what is tested): a few seconds per round on 2 cores; no
# zero-shot pass (the requeued job would pay it again for nothing).
DEMO = (f"-o rounds={DEMO_ROUNDS} -o train.local_epochs=1 -o eval_zero_shot=false -o clients=4 "
        "-o data.domains=[noto,twemoji]")
needs_demo_data = pytest.mark.skipif(not (data_cache_dir() / "emoji_domains" / ".complete").exists(),
                                     reason="Emoji-Domains not built: `make test` builds it first")


def job_env(**extra: str) -> dict[str, str]:
    """The scripts' parameters; set explicitly so a developer's own HPCFED_* settings do not leak in."""
    return {"HPCFED_VENV": str(VENV), "HPCFED_LAUNCHER": "srun", "OVERRIDES": "", **extra}


def wait_until(condition, timeout: float, what: str) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out after {timeout:.0f} s waiting for {what}"
        time.sleep(0.5)


def rounds_done(run_file: Path) -> int:
    """/progress/rounds_done of a run file being written (0 while it does not exist or is being created)."""
    try:
        with open_run(run_file) as f:
            return int(f["progress/rounds_done"][()])
    except (OSError, KeyError):
        return 0


def results(run_file: Path) -> dict[str, np.ndarray]:
    """Every per-client metric and every /final dataset of a run file, by path."""
    found = {}

    def keep(name: str, item) -> None:
        if isinstance(item, h5py.Dataset) and name.startswith(("metrics/client/", "final/")):
            found[name] = item[()]

    with h5py.File(run_file, "r") as f:
        f.visititems(keep)
    return found


@dataclass(frozen=True)
class DemoJob:
    run_file: Path
    info: dict[str, str]  # scontrol show job at its end
    log: str
    seconds: float


@pytest.fixture(scope="session")
def demo_job(slurm, tmp_path_factory) -> DemoJob:
    """DEMO as one uninterrupted train.sbatch job on DEMO_RANKS tasks of the single-node cluster: what the
    requeue test and the multi-node runs are compared with."""
    out = tmp_path_factory.mktemp("demo")
    run_file = out / "demo.h5"
    started = time.monotonic()
    job = slurm.sbatch("-n", str(DEMO_RANKS), "-o", f"{out}/%j.out", TRAIN, cwd=REPO,
                       env=job_env(CONFIG="configs/demo.yaml", OVERRIDES=f"{DEMO} -o output={run_file}"))
    info = slurm.wait(job, timeout=900)
    seconds = time.monotonic() - started
    report(f"uninterrupted single-node demo job: {seconds:.0f} s")
    return DemoJob(run_file, info, (out / f"{job}.out").read_text(), seconds)

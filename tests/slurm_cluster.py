"""A throw-away single-node SLURM (munge + slurmctld + slurmd) for tests, after spec/slurm.md.

`slurm_cluster` is a session fixture (named `slurm`): it installs the Debian packages when they are
missing (root + apt-get), writes a private config under a 0755 directory in /tmp, starts the daemons,
waits for the node to be idle and stops them by PID file at the end of the session. Import it into a test
module with `from slurm_cluster import slurm_cluster  # noqa: F401`.
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
from pathlib import Path

import pytest

PACKAGES = ("slurmctld", "slurmd", "slurm-client", "munge")
TERMINAL = {"COMPLETED", "FAILED", "TIMEOUT", "CANCELLED", "NODE_FAIL", "OUT_OF_MEMORY", "PREEMPTED",
            "BOOT_FAIL", "DEADLINE"}
# The node claims this many CPUs whatever the machine has, so 4-task jobs run on a 2-core box
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


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def slurm_conf(root: Path, node: str, memory_mb: int) -> str:
    """slurm.md's tested config: no cgroups or accounting, fast scheduling and requeue, pmi2 by default."""
    return f"""ClusterName=hpcfed-test
SlurmctldHost={node}(127.0.0.1)
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
# cred_expire is also the wait (+1 s) before a requeued job may start again: 121 s by default
AuthInfo=socket={root}/munge-run/munge.socket.2,cred_expire=10
SlurmctldPort={_free_port()}
SlurmdPort={_free_port()}
StateSaveLocation={root}/state/ctld
SlurmdSpoolDir={root}/state/d
SlurmctldPidFile={root}/run/slurmctld.pid
SlurmdPidFile={root}/run/slurmd.pid
SlurmctldLogFile={root}/log/slurmctld.log
SlurmdLogFile={root}/log/slurmd.log
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
FirstJobId={random.randrange(1000, 8_000_000)}
MinJobAge=600
KillWait=5
InactiveLimit=0
Waittime=0
NodeName={node} NodeAddr=127.0.0.1 CPUs={max(NODE_CPUS, os.cpu_count() or 1)} RealMemory={memory_mb} State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
"""


class SlurmCluster:
    """The running cluster: client commands with the private SLURM_CONF, job submission and polling."""

    def __init__(self, root: Path):
        self.root = root
        self.node = socket.gethostname().split(".")[0]
        # no SLURM_* of an allocation the tests may themselves run in: this cluster only
        self.env = {**{k: v for k, v in os.environ.items() if not k.startswith("SLURM_")},
                    "SLURM_CONF": str(root / "etc" / "slurm.conf")}
        self.timings: dict[str, float] = {}

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
        for sub in ("etc", "log", "run", "state/ctld", "state/d", "munge-key", "munge-run", "jobs"):
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
        (etc / "slurm.conf").write_text(slurm_conf(self.root, self.node, memory_mb))
        (etc / "epilog.sh").write_text(EPILOG)
        (etc / "epilog.sh").chmod(0o755)
        # 22.05's slurmd always loads a cgroup plugin; autodetected v2 dies without systemd/dbus (containers)
        (etc / "cgroup.conf").write_text("CgroupPlugin=cgroup/v1\n")
        self._check("slurmctld", "-f", self.env["SLURM_CONF"], "-i")  # -i: start from empty state
        self._check("slurmd", "-f", self.env["SLURM_CONF"], "-N", self.node)
        deadline = time.monotonic() + 30
        state = ""
        while time.monotonic() < deadline:
            state = self.run("sinfo", "-h", "-n", self.node, "-o", "%T").stdout.strip()
            if state == "idle":
                self.timings["start_to_idle"] = time.monotonic() - started
                return
            time.sleep(0.25)
        raise RuntimeError(f"SLURM did not come up: node state {state!r}\n{self.logs()}")

    def down(self) -> None:
        """Stop the daemons by PID file (never by name), slurmd first."""
        started = time.monotonic()
        for pid_file, name in (("run/slurmd.pid", "slurmd"), ("run/slurmctld.pid", "slurmctld"),
                               ("munge-run/munged.pid", "munged")):
            path = self.root / pid_file
            if not path.exists() or not path.read_text().strip():
                continue
            pid = int(path.read_text())
            comm = Path(f"/proc/{pid}/comm")
            if comm.exists() and comm.read_text().strip() == name:
                os.kill(pid, 15)
                for _ in range(80):
                    if not Path(f"/proc/{pid}").exists():
                        break
                    time.sleep(0.25)
                else:
                    os.kill(pid, 9)
        self.timings["down"] = time.monotonic() - started

    def logs(self, lines: int = 30) -> str:
        out = []
        for name in ("munged.log", "slurmctld.log", "slurmd.log"):
            path = self.root / "log" / name
            if path.exists():
                out.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-lines:]))
        return "\n".join(out)

    def _check(self, *cmd: str) -> None:
        done = subprocess.run(cmd, env=self.env, capture_output=True, text=True, timeout=60)
        if done.returncode != 0:
            raise RuntimeError(f"`{' '.join(cmd)}` failed ({done.returncode}): {done.stderr}\n{self.logs()}")

    # --- using it -------------------------------------------------------------------------------
    def run(self, *cmd: str, **kwargs) -> subprocess.CompletedProcess:
        kwargs.setdefault("timeout", 60)
        return subprocess.run(cmd, env={**self.env, **kwargs.pop("env", {})}, capture_output=True, text=True,
                              **kwargs)

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


def _meminfo_kb(field: str) -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"no {field} in /proc/meminfo")


def _report(message: str) -> None:
    sys.stderr.write(f"\n[slurm] {message}\n")


@pytest.fixture(scope="session", name="slurm")
def slurm_cluster():
    """The cluster for the whole session; fails loudly whenever it could have been brought up and was not."""
    missing = [cmd for cmd in ("slurmctld", "slurmd", "sbatch", "munged") if shutil.which(cmd) is None]
    if os.geteuid() != 0:
        pytest.skip("SLURM tests need root: slurmd runs as root and the packages are installed with apt-get "
                    "(CI runs the suite as root)")
    if missing and shutil.which("apt-get") is None:
        pytest.skip(f"no {', '.join(missing)} and no apt-get to install Debian's slurmctld slurmd slurm-client "
                    "munge")
    timings = {}
    if missing:
        try:
            timings["apt_install"] = SlurmCluster.install()
        except (RuntimeError, subprocess.TimeoutExpired) as error:
            pytest.fail(f"installing SLURM failed: {error}")
    # not pytest's tmp_path: it is 0700 and munged wants o+x on every directory above its socket
    cluster = SlurmCluster(Path(tempfile.mkdtemp(prefix="hpcfed-slurm.", dir="/tmp")))
    cluster.timings.update(timings)
    try:
        cluster.up()
    except (RuntimeError, subprocess.TimeoutExpired) as error:
        cluster.down()
        pytest.fail(f"bringing SLURM up failed: {error}")
    _report(" ".join(f"{k}={v:.1f}s" for k, v in cluster.timings.items()) + f" state in {cluster.root}")
    try:
        yield cluster
    finally:
        cluster.down()
        _report(f"down in {cluster.timings['down']:.1f}s")
        shutil.rmtree(cluster.root, ignore_errors=True)

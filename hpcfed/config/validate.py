"""Value checks that need more than a type: ranges, names known to a registry, the launch size."""

from __future__ import annotations

import dataclasses
import os

from hpcfed.config.schema import Config, _build
from hpcfed.data import DATASETS
from hpcfed.errors import ConfigError
from hpcfed.methods import METHODS
from hpcfed.models import check_model
from hpcfed.options import check_options
from hpcfed.split import PARTITIONERS


def _require(ok: bool, key: str, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(key, problem, fix)


def validate(c: Config, check_weights: bool = True) -> None:
    """Every declared range (hpcfed.options), then what needs more: keys that are wrong together, names known to
    a registry, each method's own options, and whether the model and (with `check_weights`) its weights are here."""
    check_options(c)
    p = c.partition
    _require(p.val_fraction + p.test_fraction < 1, "partition.test_fraction",
             f"val_fraction {p.val_fraction} + test_fraction {p.test_fraction} must leave a training share",
             "keep both in [0, 1) with a sum below 1, e.g. 0.1 and 0.3")
    _require("{}" in c.data.prompt, "data.prompt", f"has no '{{}}' for the class name: {c.data.prompt!r}",
             "write it like 'a photo of a {}.'")
    t = c.train
    _require(t.augment or t.augment_views == 0, "train.augment_views",
             f"{t.augment_views} fixed augmented views per image, but train.augment is false, so none would be used",
             "set train.augment: true to train on them, or train.augment_views: 0")
    _require(not (t.augment and c.extract.enabled and t.augment_views == 0), "train.augment_views",
             "is 0 with train.augment and extract.enabled: fresh crops every epoch cannot come from the feature "
             "cache, which holds K fixed views per image",
             "set train.augment_views to K > 0 (e.g. 8) to train on K cached views per image, or extract.enabled: "
             "false for fresh crops every epoch")
    PARTITIONERS[p.scheme], DATASETS[c.data.dataset]  # noqa: B018  (an unknown name raises, naming the key)
    # Each method declares its own options; unknown, mistyped or out-of-range ones fail here as method.<key>.
    method_cls = METHODS[c.method.name]
    given = set(c.method.options)
    options = _build(method_cls.Options, c.method.options, "method.")
    check_options(options, "method.")
    c.method.options = dataclasses.asdict(options)
    method_cls.check_options(c.method.options, given)
    check_model(c.model.name, c.model.pretrained if check_weights else None)
    check_output(c)


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
    folder = path.parent
    while not folder.exists():  # train creates the missing folders; the nearest existing one must allow it
        folder = folder.parent
    _require(folder.is_dir(), "output", f"{folder} is a file, so {path} cannot be made under it",
             "choose an output path whose folders are folders")
    writable = os.access(path if path.exists() else folder, os.W_OK)
    _require(writable, "output", f"{path if path.exists() else folder} is not writable by this user",
             "set -o output=<a path in a writable folder>, e.g. under $SCRATCH or $HOME")


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

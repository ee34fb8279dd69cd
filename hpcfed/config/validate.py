"""Value checks that need more than a type: ranges, names known to a registry, the launch size."""

from __future__ import annotations

import dataclasses
import os

from hpcfed.config.schema import Config, _build
from hpcfed.errors import ConfigError


def _require(ok: bool, key: str, problem: str, fix: str) -> None:
    if not ok:
        raise ConfigError(key, problem, fix)


def validate(c: Config) -> None:
    _require(c.rounds >= 1, "rounds", f"must be at least 1, got {c.rounds}", "set rounds to a positive integer")
    _require(c.clients >= 1, "clients", f"must be at least 1, got {c.clients}", "set clients to a positive integer")
    _require(0 < c.participation <= 1, "participation", f"must lie in (0, 1], got {c.participation}",
             "use e.g. participation: 0.1 for 10% of clients per round, 1.0 for all")
    _require(c.eval_every >= 1, "eval_every", f"must be at least 1, got {c.eval_every}", "evaluate every k>=1 rounds")
    _require(c.seed >= 0, "seed", f"must be non-negative, got {c.seed}", "use any integer >= 0 (0 is a real seed)")
    t = c.train
    _require(t.local_epochs >= 1, "train.local_epochs", f"must be at least 1, got {t.local_epochs}", "set it to >= 1")
    _require(t.batch_size >= 1, "train.batch_size", f"must be at least 1, got {t.batch_size}", "set it to >= 1")
    _require(t.eval_batch_size >= 1, "train.eval_batch_size", f"must be at least 1, got {t.eval_batch_size}",
             "set it to >= 1")
    _require(t.lr > 0, "train.lr", f"must be positive, got {t.lr}", "use e.g. lr: 0.001")
    _require(0 <= t.momentum < 1, "train.momentum", f"must lie in [0, 1), got {t.momentum}", "use e.g. 0.9")
    _require(t.weight_decay >= 0, "train.weight_decay", f"must be >= 0, got {t.weight_decay}", "use e.g. 5e-4")
    _require(t.optimizer in ("sgd", "adam", "adamw"), "train.optimizer", f"unknown optimizer {t.optimizer!r}",
             "choose sgd, adam or adamw")
    _require(t.prox_mu >= 0, "train.prox_mu", f"must be >= 0, got {t.prox_mu}",
             "0 turns FedProx off; e.g. 0.01 pulls shared parameters toward the global state")
    _require(t.precision in ("fp32", "amp"), "train.precision", f"unknown precision {t.precision!r}",
             "choose fp32, or amp (bf16 autocast where supported, else fp16 with a gradient scaler)")
    _require(0 <= t.augment_views <= 256, "train.augment_views", f"must lie in [0, 256], got {t.augment_views}",
             "0 turns augmentation off; e.g. 8 gives each training image 8 fixed augmented views")
    _require(c.extract.dtype in ("float16", "float32"), "extract.dtype", f"unknown dtype {c.extract.dtype!r}",
             "choose float16 (half the size) or float32 (exact features)")
    p = c.partition
    from hpcfed.split import PARTITIONERS

    _require(p.scheme in PARTITIONERS, "partition.scheme", f"unknown partition scheme {p.scheme!r}",
             f"choose one of {sorted(PARTITIONERS)}")
    _require(p.beta > 0, "partition.beta", f"must be positive, got {p.beta}",
             "use e.g. beta: 0.5 (smaller = more skew)")
    _require(p.clients_per_domain >= 0, "partition.clients_per_domain", f"must be >= 0, got {p.clients_per_domain}",
             "give clients per domain, or 0 to spread the clients over the domains by size")
    _require(0 <= p.val_fraction < 1 and 0 < p.test_fraction < 1 and p.val_fraction + p.test_fraction < 1,
             "partition.test_fraction",
             f"val_fraction {p.val_fraction} + test_fraction {p.test_fraction} must leave a training share",
             "keep both in [0, 1) with a sum below 1, e.g. 0.1 and 0.3")
    _require(p.min_samples >= 1, "partition.min_samples", f"must be >= 1, got {p.min_samples}", "set it to >= 1")
    _require(p.classes_per_client >= 1, "partition.classes_per_client",
             f"must be >= 1, got {p.classes_per_client}", "use e.g. classes_per_client: 2")
    _require(p.shots >= 0, "partition.shots", f"must be >= 0, got {p.shots}",
             "use e.g. shots: 16 for 16 training images per class, or 0 for all of them")
    _require(p.fine_alpha > 0, "partition.fine_alpha", f"must be positive, got {p.fine_alpha}",
             "use e.g. fine_alpha: 10 (the CIFAR-100 protocol)")
    _require(p.samples_per_client >= 1, "partition.samples_per_client",
             f"must be >= 1, got {p.samples_per_client}", "use e.g. samples_per_client: 600 (the CIFAR-100 protocol)")
    _require(c.runtime.threads >= 1, "runtime.threads", f"must be >= 1, got {c.runtime.threads}", "use 1 per rank")
    _require(c.runtime.poll_interval >= 0, "runtime.poll_interval", f"must be >= 0, got {c.runtime.poll_interval}",
             "use 0.001 on shared or oversubscribed nodes, 0 on dedicated cores")
    _require(c.runtime.checkpoint_every >= 0, "runtime.checkpoint_every", f"must be >= 0, got "
             f"{c.runtime.checkpoint_every}", "use 0 to checkpoint only on a signal, or k for every k rounds")
    _require(c.runtime.checkpoint_keep >= 1, "runtime.checkpoint_keep", f"must be >= 1, got "
             f"{c.runtime.checkpoint_keep}", "keep at least 1 (2 leaves a fallback if the newest is damaged)")
    _require(c.runtime.device in ("auto", "cpu", "cuda"), "runtime.device", f"unknown device {c.runtime.device!r}",
             "choose auto, cpu or cuda")
    _require("{}" in c.data.prompt, "data.prompt", f"has no '{{}}' for the class name: {c.data.prompt!r}",
             "write it like 'a photo of a {}.'")
    from hpcfed.data import DATASETS

    _require(c.data.dataset in DATASETS, "data.dataset", f"unknown dataset {c.data.dataset!r}",
             f"choose one of {sorted(DATASETS)}")
    from hpcfed.methods import METHODS

    _require(c.method.name in METHODS, "method.name", f"unknown method {c.method.name!r}",
             f"choose one of {sorted(METHODS)}")
    # Each method declares its own options; unknown or mistyped ones fail here, named as method.<key>.
    method_cls = METHODS[c.method.name]
    given = set(c.method.options)
    c.method.options = dataclasses.asdict(_build(method_cls.Options, c.method.options, "method."))
    method_cls.check_options(c.method.options, given)
    from hpcfed.models import check_model

    check_model(c.model.name, c.model.pretrained)


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

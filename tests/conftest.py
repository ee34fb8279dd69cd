"""Shared fixtures: a small generated ImageFolder tree, config files, and a real `mpiexec` launcher."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import yaml
from PIL import Image

# The SLURM clusters and the single-node demo job, imported here once so that every test module shares them (a
# fixture imported into two test modules is two fixtures: two clusters, two reference jobs).
from slurm_cluster import demo_job, slurm_cluster  # noqa: F401
from slurm_multinode import slurm_two_nodes  # noqa: F401

# Test files that share one SLURM cluster (a session fixture) must run on one pytest-xdist worker: two workers would
# each start a cluster, and two slurmctld on one machine fight over ports and state. Every other file is its own unit,
# as with `--dist loadfile`. The SLURM unit is the longest (6-7 min of jobs, much of it waiting on slurmctld) and goes
# first: given out in its turn by test count, it could start late and leave one worker running it alone at the end.
SLURM_TEST_FILES = ("tests/test_slurm.py", "tests/test_multinode.py")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    from xdist.scheduler import LoadScopeScheduling

    class OneWorkerForSlurm(LoadScopeScheduling):
        def _split_scope(self, nodeid):
            path = nodeid.split("::", 1)[0]
            return "slurm" if path.endswith(SLURM_TEST_FILES) else path

        def _assign_work_unit(self, node):
            if "slurm" in self.workqueue:
                self.workqueue.move_to_end("slurm", last=False)
            super()._assign_work_unit(node)

    return OneWorkerForSlurm(config, log)


BIN = Path(sys.executable).parent
MPIEXEC = BIN / "mpiexec"  # the venv's own launcher: its MPI matches mpi4py's (install.md)
HPCFED = BIN / "hpcfed"
REPO = Path(__file__).resolve().parents[1]


def make_image_tree(root: Path, domains=("a", "b"), classes=("cat", "dog", "ice_cream"), per_class=24,
                    seed=0) -> Path:
    """Colour-coded images: class sets the hue, domain the brightness, so a model can learn them."""
    rng = np.random.default_rng(seed)
    for d, domain in enumerate(domains):
        for c, name in enumerate(classes):
            folder = root / domain / name
            folder.mkdir(parents=True, exist_ok=True)
            for k in range(per_class):
                base = np.array([40 + 80 * c, 60 + 60 * d, 200 - 70 * c])
                pixels = (rng.normal(0, 25, (24, 24, 3)) + base).clip(0, 255).astype(np.uint8)
                Image.fromarray(pixels).save(folder / f"{k:03d}.png")
    return root


@pytest.fixture(scope="session")
def image_tree(tmp_path_factory) -> Path:
    return make_image_tree(tmp_path_factory.mktemp("data") / "tree")


def write_config(path: Path, image_tree: Path, **overrides) -> Path:
    tree = {
        # No zero-shot pass before round 1 unless a test asks for it: it is tested on its own (test_mpi).
        "name": "t", "seed": 0, "rounds": 3, "clients": 4, "participation": 0.5, "eval_zero_shot": False,
        "output": str(path.with_suffix(".h5")),
        "model": {"name": "hpcfed-tiny"},
        "data": {"dataset": "imagefolder", "root": str(image_tree), "domains": ["a", "b"]},
        "partition": {"scheme": "domain_dirichlet", "clients_per_domain": 2, "beta": 1.0},
        "method": {"name": "pfedmma"},
        "train": {"lr": 0.01, "batch_size": 8},
    }
    for key, value in overrides.items():
        node = tree
        *parents, leaf = key.split(".")
        for p in parents:
            node = node.setdefault(p, {})
        node[leaf] = value
    path.write_text(yaml.safe_dump(tree))
    return path


def run_mpi(n: int, args: list[str], timeout: float = 180, env: dict | None = None) -> subprocess.CompletedProcess:
    """Launch `args` (a python script or the hpcfed command) on n ranks with the venv's mpiexec."""
    full_env = {**os.environ, "HF_HUB_OFFLINE": "1", "OMP_NUM_THREADS": "1", **(env or {})}
    full_env.pop("SLURM_NTASKS", None)
    cmd = [str(MPIEXEC), "-n", str(n), *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=timeout, env=full_env, cwd=REPO)


PACS_DOMAINS = ("art_painting", "cartoon", "photo", "sketch")
PACS_LABELS = {"dog": 1, "elephant": 2, "giraffe": 3, "guitar": 4, "horse": 5, "house": 6, "person": 7}


def pacs_file_name(domain: str, k: int) -> str:
    """The real name patterns: photo/dog/056_0001.jpg, sketch/dog/n02103406_343-1.png, art and cartoon pic_NNN.jpg."""
    if domain == "photo":
        return f"{56 + k:03d}_{k + 1:04d}.jpg"
    if domain == "sketch":
        return f"n02103406_{343 + k}-1.png"
    return f"pic_{225 + k:03d}.jpg"


def make_pacs_tree(images: Path, lists: Path | None, classes=("dog", "elephant", "giraffe"), per_class: int = 4,
                   n_val: int = 1) -> None:
    """PACS as its archives hold it: <images>/<domain>/<class>/<file> (4x4 pixels) and, with `lists`, the kfold
    lists in their line format '<domain>/<class>/<file> <label>' (labels 1..7): the last n_val images of a class
    in <domain>_crossval_kfold.txt, the others in _train_kfold.txt, and _test_kfold.txt = train + crossval (the
    whole domain)."""
    rng = np.random.default_rng(0)
    for domain in PACS_DOMAINS:
        parts: dict[str, list[str]] = {"train": [], "crossval": []}
        for cls in classes:
            for k in range(per_class):
                name = pacs_file_name(domain, k)
                (images / domain / cls).mkdir(parents=True, exist_ok=True)
                Image.fromarray(rng.integers(0, 256, (4, 4, 3), dtype=np.uint8)).save(images / domain / cls / name)
                parts["crossval" if k >= per_class - n_val else "train"].append(
                    f"{domain}/{cls}/{name} {PACS_LABELS[cls]}")
        parts["test"] = parts["train"] + parts["crossval"]
        if lists is not None:
            lists.mkdir(parents=True, exist_ok=True)
            for part, lines in parts.items():
                (lists / f"{domain}_{part}_kfold.txt").write_text("\n".join(lines) + "\n")

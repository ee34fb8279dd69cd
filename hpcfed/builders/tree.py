"""Building a dataset tree at set-up: build beside it, stamp it, swap it in; the shared builder CLI.

Every builder follows the same contract: the tree is built in a hidden sibling folder and renamed into place in
one step; the STAMP file (JSON: what it was built from) is written last, so a tree with a stamp is complete (the
readers in hpcfed.data.built check only that); a second run whose stamp matches returns at once.
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing
import multiprocessing.pool
import os
import shutil
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np

from hpcfed.data.built import STAMP, data_cache_dir, read_stamp
from hpcfed.errors import DataError

__all__ = [
    "STAMP", "building", "default_root", "out_only_main", "process_pool", "publish", "read_stamp", "run_cli",
    "save_pngs", "stamp_matches", "write_classnames", "write_stamp",
]


def default_root(name: str) -> Path:
    """Where set-up builds tree `name` when no --out is given."""
    return data_cache_dir() / name


def stamp_matches(tree: Path, key: dict) -> bool:
    """Whether a complete tree was built from `key` (a stamp also holds results, e.g. counts, not compared)."""
    stamp = read_stamp(tree)
    return stamp is not None and all(stamp.get(k) == v for k, v in key.items())


def write_stamp(tree: Path, stamp: dict) -> None:
    """Last step of a build: the stamp marks the tree complete."""
    (tree / STAMP).write_text(json.dumps(stamp, indent=1) + "\n")


def write_classnames(tree: Path, classes: Iterable[tuple[str, str]]) -> None:
    """classnames.txt: folder<TAB>readable name per class, the prompt text the readers hand on."""
    (tree / "classnames.txt").write_text("".join(f"{f}\t{n}\n" for f, n in classes))


def _save_pngs(items: list[tuple[np.ndarray, Path]]) -> int:
    from PIL import Image

    for pixels, path in items:
        Image.fromarray(pixels).save(path, compress_level=1)
    return len(items)


def save_pngs(items: Iterable[tuple[np.ndarray, Path]], workers: int = 8, chunk: int = 64) -> int:
    """Write uint8 arrays ([H, W] grey or [H, W, 3] RGB) as PNG files; returns how many.

    Threads, because creating thousands of small files waits on the file system far more than it computes
    (PNG encoding releases the GIL too); this is about 3x faster than a plain loop on a virtual disk.
    """
    items = list(items)
    chunks = [items[i : i + chunk] for i in range(0, len(items), chunk)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return sum(pool.map(_save_pngs, chunks))


def process_pool(processes: int) -> multiprocessing.pool.Pool:
    """Worker processes for rendering, forked from a fresh forkserver and never from the caller.

    A fork of a process that already runs threads (torch, matplotlib, save_pngs' writers) copies their locks
    held, and a worker waiting on one hangs for ever; the workers' functions must be importable top-level ones.
    """
    return multiprocessing.get_context("forkserver").Pool(processes)


def publish(tmp: Path, out: Path) -> None:
    """Swap the finished tree in; an old tree is moved aside first because rename cannot replace a folder."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        out.rename(old)
    tmp.rename(out)
    shutil.rmtree(old, ignore_errors=True)


@contextlib.contextmanager
def building(out: Path) -> Iterator[Path]:
    """A fresh hidden folder next to `out` to build into; on success it replaces `out` in one rename.

    Building on the same file system as `out` keeps the final rename atomic, so readers never see a partial tree.
    """
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out.name}.building-", dir=out.parent))
    umask = os.umask(0)
    os.umask(umask)
    tmp.chmod(0o777 & ~umask)  # mkdtemp makes it private; the tree should be readable like any other
    try:
        yield tmp
        if not (tmp / STAMP).is_file():
            raise DataError(f"internal error: the build of {out} finished without writing its {STAMP} stamp")
        publish(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def out_only_main(doc: str, build: Callable[[Path | None], Path], summary: Callable[[Path], str],
                  argv: Sequence[str] | None = None) -> int:
    """The CLI of a builder whose only option is where to build (default: the data cache)."""
    import argparse

    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help="folder to build (default: in the data cache)")
    return run_cli(lambda: build(parser.parse_args(argv).out), summary)


def run_cli(build: Callable[[], Path], summary: Callable[[Path], str]) -> int:
    """A builder CLI's exit status: 0 after printing the summary and time taken, 2 after printing the error."""
    t0 = time.perf_counter()
    try:
        out = build()
    except DataError as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(f"{summary(out)} ({time.perf_counter() - t0:.1f} s)")
    return 0

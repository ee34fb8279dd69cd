"""Checks that a listing's files are really there: split files must name existing images, images must open."""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from hpcfed.data.folders import note_skipped
from hpcfed.data.listing import Listing
from hpcfed.errors import DataError
from hpcfed.runtime.signals import raise_if_stopped


def require_files(root: Path, relpaths: Iterable[str], source: Path) -> None:
    """Every image a split file names must exist under `root`.

    One directory listing per folder instead of one stat per file: on a parallel file system (Lustre, GPFS)
    a hundred thousand stats take minutes, a few hundred listings take a second."""
    seen: dict[str, set[str]] = {}
    missing = []
    for rel in relpaths:
        parent, _, name = rel.rpartition("/")
        if parent not in seen:
            try:
                seen[parent] = set(os.listdir(root / parent))
            except OSError as e:  # said with the error below: its images then seem missing
                note_skipped(root / parent, f"cannot be read: {e.strerror or e}")
                seen[parent] = set()
        if name not in seen[parent]:
            missing.append(rel)
    if missing:
        raise DataError(
            f"{source} names {len(missing)} image(s) that do not exist under {root}, e.g. {missing[:3]}; the "
            "images and the split file do not belong together: re-extract the images or use the split file "
            "that matches them"
        )


LARGE_LISTING = 50_000  # images; from here the decode pass says it runs (DomainNet: ~10 min of one core)


def _decodes(path: Path) -> bool:
    """Whether PIL decodes every pixel of the image, as ImageSource will. A header check (`verify`) passes a
    truncated JPEG, which then stopped a client in round 1; only a full decode finds it. PIL's
    LOAD_TRUNCATED_IMAGES stays False: a truncated file must fail here, not train on grey padding."""
    try:
        with Image.open(path) as img:
            img.convert("RGB")
        return True
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, DecompressionBombError... for bad files
        return False


def _decode_chunk(paths: list[Path]) -> list[bool]:
    ok = []
    for k, path in enumerate(paths):
        if k % 256 == 0:
            raise_if_stopped()  # decoding a large dataset takes minutes; a stop signal must not wait for it
        ok.append(_decodes(path))
    return ok


def usable_cores() -> int:
    """Cores this process may run on (its MPI binding or SLURM allocation, not the whole node)."""
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1


def decodable(paths: list[Path], workers: int | None = None) -> np.ndarray:
    """Bool mask: which images decode completely. Threads, not processes (a fork after torch started its
    threads can hang): PIL's decoders release the GIL, so large images decode in parallel. One contiguous
    chunk per thread: a task per image costs more in GIL hand-offs than a small image takes to decode."""
    workers = max(1, min(workers or usable_cores(), len(paths)))
    if workers == 1:
        return np.array(_decode_chunk(paths), dtype=bool)
    size = -(-len(paths) // workers)
    chunks = [paths[i:i + size] for i in range(0, len(paths), size)]
    with ThreadPoolExecutor(max_workers=workers) as pool:
        return np.array([ok for chunk in pool.map(_decode_chunk, chunks) for ok in chunk], dtype=bool)


def verify_images(listing: Listing, workers: int | None = None) -> Listing:
    """Drop file-backed images PIL cannot decode, say so, and record them in `notes` (never a silent shrink).
    Run once, by rank 0 before splitting; the other ranks drop the paths it records."""
    if listing.pixels is not None:
        return listing  # array datasets have no files to go bad
    if len(listing) >= LARGE_LISTING:  # minutes on a large dataset, while the other ranks wait: say what it is
        sys.stdout.write(f"decoding all {len(listing):,} images under {listing.root} once, before splitting, to "
                         "leave out any that cannot be read\n")
        sys.stdout.flush()
    ok = decodable([listing.root / p for p in listing.paths], workers)
    bad = [listing.paths[i] for i in np.flatnonzero(~ok)]
    notes = {**listing.notes, "corrupt_images": len(bad), "corrupt_paths": bad}
    if not bad:
        return replace(listing, notes=notes)
    if not ok.any():
        raise DataError(f"none of the {len(listing)} images under {listing.root} can be read (e.g. {bad[:3]}); "
                        "check that data.root points at the image files and that they are not truncated")
    warnings.warn(
        f"{len(bad)} of {len(listing)} images under {listing.root} cannot be read and are left out, e.g. "
        f"{bad[:5]}; replace or delete them (the count is stored with the splits as notes['corrupt_images'])",
        stacklevel=2,
    )
    return replace(listing.without(bad), notes=notes)

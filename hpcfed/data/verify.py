"""Checks that a listing's files are really there: split files must name existing images, images must open."""

from __future__ import annotations

import os
import warnings
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import replace
from pathlib import Path

import numpy as np
from PIL import Image

from hpcfed.data.listing import Listing
from hpcfed.errors import DataError


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
            except OSError:
                seen[parent] = set()
        if name not in seen[parent]:
            missing.append(rel)
    if missing:
        raise DataError(
            f"{source} names {len(missing)} image(s) that do not exist under {root}, e.g. {missing[:3]}; the "
            "images and the split file do not belong together: re-extract the images or use the split file "
            "that matches them"
        )


def _readable(path: Path) -> bool:
    try:
        with Image.open(path) as img:
            img.verify()  # header and (for PNG) chunk checksums only: no full decode, so it stays fast
        return True
    except Exception:  # PIL raises OSError, SyntaxError, ValueError, struct.error... for bad files
        return False


def verify_images(listing: Listing, workers: int = 16) -> Listing:
    """Drop file-backed images PIL cannot open, say so, and record them in `notes` (never a silent shrink)."""
    if listing.pixels is not None:
        return listing  # array datasets have no files to go bad
    # Threads suffice: the work is file I/O and PIL releases the GIL while reading.
    with ThreadPoolExecutor(max_workers=workers) as pool:
        ok = np.fromiter(pool.map(_readable, (listing.root / p for p in listing.paths)), dtype=bool,
                         count=len(listing))
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

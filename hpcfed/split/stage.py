"""The split stage: make the splits of a run, or reuse those already stored in its run file."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from pathlib import Path

import yaml

from hpcfed.config import Config
from hpcfed.data.listing import Listing
from hpcfed.data.verify import verify_images
from hpcfed.errors import RunFileExists, SplitError
from hpcfed.results import create_split_file, open_run, read_splits
from hpcfed.split.partition import Splits, make_splits


@dataclass(frozen=True)
class Prepared:
    splits: Splits
    reused: bool
    unreadable: tuple[str, ...]  # files left out of the listing before splitting (corrupt images)


def split_hash(cfg: Config, listing: Listing) -> str:
    """Everything a split depends on: the data listing, the partition settings, the client count, the seed."""
    key = {"listing": listing.digest(), "partition": dataclasses.asdict(cfg.partition), "clients": cfg.clients,
           "seed": cfg.seed}
    return hashlib.sha256(yaml.safe_dump(key, sort_keys=True).encode()).hexdigest()[:16]


def _stored(path: Path) -> tuple[str | None, str | None, bool]:
    """(split hash, digest of the listing as read from disk, has training results) of an existing run file."""
    try:
        f = open_run(path)
    except OSError as e:
        raise RunFileExists(f"output {path} exists and is not a readable hpcfed run file ({e}); it is left "
                            f"untouched: pass --overwrite to replace it, or set -o output=<new path>") from e
    with f:
        if "splits" not in f:
            return None, None, "metrics" in f
        return f["splits"].attrs["split_hash"], f["splits"].attrs["source_digest"], "metrics" in f


def _stored_unreadable(path: Path) -> tuple[str, ...]:
    with open_run(path) as f:
        return tuple(f["splits/notes"].attrs.get("corrupt_paths", ()))


def prepare_splits(cfg: Config, listing: Listing, overwrite: bool = False, resuming: bool = False) -> Prepared:
    """Reuse the run file's splits when their hash matches, refuse a mismatch, else make and store them.
    `listing` is the dataset as read from disk; unreadable images are found here, once, before splitting.
    `resuming`: the file may hold training results (train --resume continues or replaces them)."""
    path, wanted = cfg.output_path, split_hash(cfg, listing)
    if path.exists() and not overwrite:
        stored, old_digest, trained = _stored(path)
        if trained and not resuming:
            raise RunFileExists(f"run file {path} already holds training results; continue it with --resume auto, "
                                f"replace it with --overwrite, or set -o output=<new path>")
        if stored == wanted:
            with open_run(path) as f:
                return Prepared(read_splits(f), True, _stored_unreadable(path))
        if stored is not None:
            why = ("the dataset listing changed since the split was made (files added, removed or relabelled: "
                   f"listing {old_digest} then, {listing.digest()} now)" if old_digest != listing.digest()
                   else "the partition settings, client count or seed differ from those of the stored split")
            raise SplitError(f"run file {path} holds splits that do not match this config: {why}; re-run "
                             f"'hpcfed split' with --overwrite, or set -o output=<new path>")
    readable = verify_images(listing)
    splits = make_splits(readable, cfg.partition, cfg.clients, cfg.seed)
    create_split_file(path, config_yaml=cfg.to_yaml(), config_hash=cfg.digest(), splits=splits, split_hash=wanted,
                      source_digest=listing.digest(), listing=readable, overwrite=True)
    return Prepared(splits, False, tuple(readable.notes.get("corrupt_paths", ())))

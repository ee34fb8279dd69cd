"""Datasets by name: each reader module registers the datasets it reads (`DATASETS.register`), and
`load_listing` turns the config's data section into a Listing through the registered reader."""

from __future__ import annotations

import warnings
from collections.abc import Callable
from dataclasses import replace

from hpcfed.data.folders import recording_skipped
from hpcfed.data.listing import Listing
from hpcfed.errors import DataError
from hpcfed.registry import Registry

# A reader: (data.root, data.domains, data.class_names_file) -> Listing.
Reader = Callable[[str | None, list[str] | None, str | None], Listing]
DATASETS: Registry[Reader] = Registry("dataset", "data.dataset")


def load_listing(name: str, root: str | None = None, domains: list[str] | None = None,
                 class_names_file: str | None = None) -> Listing:
    """The reader's listing; entries it skipped (symlink loops, broken links, unreadable folders) are reported
    in one warning and kept in `notes`, or named in the reader's error, which they may explain."""
    reader = DATASETS[name]
    with recording_skipped() as skipped:
        try:
            listing = reader(root, domains, class_names_file)
        except DataError as e:
            if skipped:
                e.args = (f"{e}; skipped while listing: {_examples(list(skipped))}",)
            raise
    return _with_skipped(listing, list(skipped))


def _examples(items: list[str]) -> str:
    return ", ".join(items[:3]) + (f" and {len(items) - 3} more" if len(items) > 3 else "")


def _with_skipped(listing: Listing, skipped: list[str]) -> Listing:
    if not skipped:
        return listing
    entries = "entry" if len(skipped) == 1 else "entries"
    warnings.warn(f"skipped {len(skipped)} unusable {entries} under {listing.root}: {_examples(skipped)}; fix or "
                  "remove them (they are stored with the splits as notes['skipped_paths'])", stacklevel=3)
    return replace(listing, notes={**listing.notes, "skipped_entries": len(skipped), "skipped_paths": skipped})

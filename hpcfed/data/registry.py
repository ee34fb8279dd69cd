"""Datasets by name: each reader module registers the datasets it reads (`DATASETS.register`), and
`load_listing` turns the config's data section into a Listing through the registered reader."""

from __future__ import annotations

from collections.abc import Callable

from hpcfed.data.listing import Listing
from hpcfed.registry import Registry

# A reader: (data.root, data.domains, data.class_names_file) -> Listing.
Reader = Callable[[str | None, list[str] | None, str | None], Listing]
DATASETS: Registry[Reader] = Registry("dataset", "data.dataset")


def load_listing(name: str, root: str | None = None, domains: list[str] | None = None,
                 class_names_file: str | None = None) -> Listing:
    return DATASETS[name](root, domains, class_names_file)

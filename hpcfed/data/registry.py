"""Datasets by name: each reader module registers the datasets it reads (`DATASETS.register`), and
`load_listing` turns the config's data section into a Listing through the registered reader."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from pathlib import Path

from hpcfed.data.listing import Listing
from hpcfed.errors import DataError
from hpcfed.registry import Registry

# A reader: (data.root, data.domains, data.class_names_file) -> Listing.
Reader = Callable[[str | None, list[str] | None, str | None], Listing]
DATASETS: Registry[Reader] = Registry("dataset", "data.dataset")


def data_cache_dir() -> Path:
    """Where set-up builds the offline datasets (outside git): $HPCFED_DATA or ~/.cache/hpcfed/data."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hpcfed" / "data"
    return Path(os.environ.get("HPCFED_DATA", default)).expanduser()


def _emoji_domains(root: str | None, domains: list[str] | None, class_names_file: str | None) -> Listing:
    from hpcfed.data.emoji_domains import STYLES

    base = Path(root).expanduser() if root else data_cache_dir() / "emoji_domains"
    if not (base / "classnames.txt").is_file():
        raise DataError(
            f"Emoji-Domains is not built at {base}; run 'make data' (or "
            f"'python -m hpcfed.data.emoji_domains --out {base}') once on this machine"
        )
    unknown = [d for d in domains or [] if d not in STYLES]
    if unknown:
        raise DataError(f"unknown Emoji-Domains style(s) {unknown}; choose from {list(STYLES)}")
    from hpcfed.data.imagefolder import read_imagefolder

    return read_imagefolder(base, domains=domains, domain_level=True, class_names_file=base / "classnames.txt")


def _built_offline(module: str, reader: str) -> Callable[..., Listing]:
    """Readers of the set-up-built offline sets, imported only when such a dataset is used."""

    def read(root: str | None, domains: list[str] | None, class_names_file: str | None) -> Listing:
        return getattr(importlib.import_module(f"hpcfed.data.{module}"), reader)(root, domains, class_names_file)

    return read


# built at set-up from registry packages (offline-data.md): recreations are labelled as such
for _name, _reader in {
    "emoji_domains": _emoji_domains,
    "digits5_offline": _built_offline("digits5", "read_digits5"),
    "fashion_mnist": _built_offline("mnist_like", "read_fashion_mnist"),
    "animal_mnist": _built_offline("mnist_like", "read_animal_mnist"),
    # evaluation-only photo domain (GPL-2 Tux Paint stamps) and public-domain clip art, for the tiny CLIP
    "tuxpaint": _built_offline("tuxpaint", "read_tuxpaint"),
    "openclipart": _built_offline("openclipart", "read_openclipart"),
    "coarse_domains": _built_offline("coarse_domains", "read_coarse_domains"),
}.items():
    DATASETS.register(_name, _reader)


def load_listing(name: str, root: str | None = None, domains: list[str] | None = None,
                 class_names_file: str | None = None) -> Listing:
    return DATASETS[name](root, domains, class_names_file)

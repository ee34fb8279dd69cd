"""Datasets by name: each entry turns the config's data section into a Listing."""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from functools import partial
from pathlib import Path

from hpcfed.data.cifar import CIFAR_DATASETS, read_cifar
from hpcfed.data.coop import COOP_DATASETS, read_coop
from hpcfed.data.domains import DOMAIN_DATASETS, read_domain_dataset
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.data.listing import Listing
from hpcfed.errors import DataError


def data_cache_dir() -> Path:
    """Where set-up builds the offline datasets (outside git): $HPCFED_DATA or ~/.cache/hpcfed/data."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hpcfed" / "data"
    return Path(os.environ.get("HPCFED_DATA", default)).expanduser()


def _emoji_domains(root: str | None, domains: list[str] | None, class_names_file: str | None) -> Listing:
    from hpcfed.builders.emoji_domains import STYLES

    base = Path(root).expanduser() if root else data_cache_dir() / "emoji_domains"
    if not (base / "classnames.txt").is_file():
        raise DataError(
            f"Emoji-Domains is not built at {base}; run 'make data' (or "
            f"'python -m hpcfed.builders.emoji_domains --out {base}') once on this machine"
        )
    unknown = [d for d in domains or [] if d not in STYLES]
    if unknown:
        raise DataError(f"unknown Emoji-Domains style(s) {unknown}; choose from {list(STYLES)}")
    return read_imagefolder(base, domains=domains, domain_level=True, class_names_file=base / "classnames.txt")


def _imagefolder(root: str | None, domains: list[str] | None, class_names_file: str | None) -> Listing:
    if not root:
        raise DataError("data.root is required for dataset 'imagefolder'; set it to the folder of class folders")
    return read_imagefolder(root, domains=domains, domain_level=bool(domains), class_names_file=class_names_file)


def _built_offline(module: str, reader: str) -> Callable[..., Listing]:
    """Readers of the set-up-built offline sets, imported only when such a dataset is used."""

    def read(root: str | None, domains: list[str] | None, class_names_file: str | None) -> Listing:
        return getattr(importlib.import_module(f"hpcfed.builders.{module}"), reader)(root, domains, class_names_file)

    return read


DATASETS: dict[str, Callable[..., Listing]] = {
    "emoji_domains": _emoji_domains,
    "imagefolder": _imagefolder,
    # office_home, domainnet, domainnet10, office_caltech10, pacs
    **{name: partial(read_domain_dataset, name) for name in DOMAIN_DATASETS},
    # caltech101, oxford_pets, oxford_flowers, food101, dtd, ucf101, sun397, stanford_cars, fgvc_aircraft,
    # eurosat, imagenet
    **{name: partial(read_coop, name) for name in COOP_DATASETS},
    **{name: partial(read_cifar, name) for name in CIFAR_DATASETS},  # cifar10, cifar100
    # built at set-up from registry packages (offline-data.md): recreations are labelled as such
    "digits5_offline": _built_offline("digits5", "read_digits5"),
    "fashion_mnist": _built_offline("mnist_like", "read_fashion_mnist"),
    "animal_mnist": _built_offline("mnist_like", "read_animal_mnist"),
    # evaluation-only photo domain (GPL-2 Tux Paint stamps) and public-domain clip art, for the tiny CLIP
    "tuxpaint": _built_offline("tuxpaint", "read_tuxpaint"),
    "openclipart": _built_offline("openclipart", "read_openclipart"),
    "coarse_domains": _built_offline("coarse_domains", "read_coarse_domains"),
}


def load_listing(name: str, root: str | None = None, domains: list[str] | None = None,
                 class_names_file: str | None = None) -> Listing:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {sorted(DATASETS)}")
    return DATASETS[name](root, domains, class_names_file)

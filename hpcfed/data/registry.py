"""Datasets by name: each entry turns the config's data section into a Listing."""

from __future__ import annotations

from collections.abc import Callable
from functools import partial

from hpcfed.data.built import read_built
from hpcfed.data.cifar import CIFAR_DATASETS, read_cifar
from hpcfed.data.coop import COOP_DATASETS, read_coop
from hpcfed.data.domains import DOMAIN_DATASETS, read_domain_dataset
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.data.listing import Listing
from hpcfed.errors import DataError


def _imagefolder(root: str | None, domains: list[str] | None, class_names_file: str | None) -> Listing:
    if not root:
        raise DataError("data.root is required for dataset 'imagefolder'; set it to the folder of class folders")
    return read_imagefolder(root, domains=domains, domain_level=bool(domains), class_names_file=class_names_file)


DATASETS: dict[str, Callable[..., Listing]] = {
    "emoji_domains": partial(read_built, "emoji_domains"),
    "imagefolder": _imagefolder,
    # office_home, domainnet, domainnet10, office_caltech10, pacs
    **{name: partial(read_domain_dataset, name) for name in DOMAIN_DATASETS},
    # caltech101, oxford_pets, oxford_flowers, food101, dtd, ucf101, sun397, stanford_cars, fgvc_aircraft,
    # eurosat, imagenet
    **{name: partial(read_coop, name) for name in COOP_DATASETS},
    **{name: partial(read_cifar, name) for name in CIFAR_DATASETS},  # cifar10, cifar100
    # built at set-up from registry packages (offline-data.md): recreations are labelled as such
    "digits5_offline": partial(read_built, "digits5_offline"),
    "fashion_mnist": partial(read_built, "fashion_mnist"),
    "animal_mnist": partial(read_built, "animal_mnist"),
    # evaluation-only photo domain (GPL-2 Tux Paint stamps) and public-domain clip art, for the tiny CLIP
    "tuxpaint": partial(read_built, "tuxpaint"),
    "openclipart": partial(read_built, "openclipart"),
    "coarse_domains": partial(read_built, "coarse_domains"),
}


def load_listing(name: str, root: str | None = None, domains: list[str] | None = None,
                 class_names_file: str | None = None) -> Listing:
    if name not in DATASETS:
        raise DataError(f"unknown dataset {name!r}; known datasets: {sorted(DATASETS)}")
    return DATASETS[name](root, domains, class_names_file)

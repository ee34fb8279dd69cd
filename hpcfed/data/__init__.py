"""Readers: each turns a dataset's on-disk layout into a `Listing` (paths, labels, domains, class names,
official split) and registers the datasets it reads; `load_listing` picks the reader by name. Every module of
this folder is imported here, so a dataset registered in a new reader module needs no other line.

Readers only: the offline sets built at set-up are made by hpcfed.builders and read by hpcfed.data.built,
which never imports a builder."""

import importlib
import pkgutil

from hpcfed.data.listing import Listing
from hpcfed.data.registry import DATASETS, load_listing

for _module in pkgutil.iter_modules(__path__):
    importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["DATASETS", "Listing", "load_listing"]

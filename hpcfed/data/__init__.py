"""Datasets: readers turn an on-disk layout into a `Listing`; `load_dataset` picks the reader by name."""

from hpcfed.data.listing import Listing
from hpcfed.data.registry import DATASETS, load_listing

__all__ = ["DATASETS", "Listing", "load_listing"]

"""Datasets: readers turn an on-disk layout into a `Listing`; `load_listing` picks the reader by name.

Readers only: the offline sets built at set-up are made by hpcfed.builders and read by hpcfed.data.built.
"""

from hpcfed.data.listing import Listing
from hpcfed.data.registry import DATASETS, load_listing

__all__ = ["DATASETS", "Listing", "load_listing"]

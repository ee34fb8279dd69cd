"""Split: which sample belongs to which client, and its train/validation/test share."""

from hpcfed.split.base import ClientSplit, Splits
from hpcfed.split.classes import base_novel_classes, disjoint_class_chunks
from hpcfed.split.partition import make_splits
from hpcfed.split.schemes import PARTITIONERS

__all__ = ["PARTITIONERS", "ClientSplit", "Splits", "base_novel_classes", "disjoint_class_chunks",
           "make_splits"]

"""A dataset listing: which files exist, their labels and domains, and the class names for prompts."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

from hpcfed.errors import DataError


@dataclass(frozen=True)
class Listing:
    root: Path
    paths: tuple[str, ...]  # relative to root, in a fixed sorted order
    labels: np.ndarray  # int64 [N], index into class_names
    domains: np.ndarray  # int64 [N], index into domain_names
    class_names: tuple[str, ...]  # readable names used in text prompts
    domain_names: tuple[str, ...] = ("all",)
    # Official split of each sample where the dataset defines one (CoOp split files, CIFAR train/test):
    # 0 train, 1 val, 2 test. None when the dataset has none and partitioners cut their own.
    subset: np.ndarray | None = None
    # In-memory images [N, H, W] or [N, H, W, 3] uint8 for array datasets (CIFAR, MNIST-like); `paths` then
    # name the records (e.g. "data_batch_1/17") and `root` the folder they came from.
    pixels: np.ndarray | None = None
    notes: dict = field(default_factory=dict)  # e.g. {"corrupt_images": 3}, stored with the splits

    def __len__(self) -> int:
        return len(self.paths)

    def without(self, drop: list[str] | tuple[str, ...]) -> Listing:
        """The listing minus the files named in `drop` (e.g. images found unreadable), order kept."""
        if not drop:
            return self
        gone = set(drop)
        keep = np.array([i for i, p in enumerate(self.paths) if p not in gone], dtype=np.int64)
        return replace(self, paths=tuple(self.paths[i] for i in keep), labels=self.labels[keep],
                       domains=self.domains[keep], subset=None if self.subset is None else self.subset[keep],
                       pixels=None if self.pixels is None else self.pixels[keep])

    def digest(self) -> str:
        """Hash of the listing (paths, labels, domains, names): a split made from another listing is refused."""
        h = hashlib.sha256()
        for part in (self.class_names, self.domain_names, self.paths):
            h.update("\x1f".join(part).encode())
            h.update(b"\x1e")
        h.update(np.ascontiguousarray(self.labels, dtype=np.int64).tobytes())
        h.update(np.ascontiguousarray(self.domains, dtype=np.int64).tobytes())
        if self.subset is not None:
            h.update(np.ascontiguousarray(self.subset, dtype=np.int64).tobytes())
        if self.pixels is not None:
            h.update(np.ascontiguousarray(self.pixels).tobytes())
        return h.hexdigest()[:16]


Row = tuple[int, int, str, int]  # domain index, label, path relative to the listing root, subset (-1: none)


def rows_to_listing(root: Path, rows: list[Row], class_names: list[str] | tuple[str, ...],
                    domain_names: tuple[str, ...] = ("all",), notes: dict | None = None) -> Listing:
    """The one way readers build a Listing: rows sorted by domain, class, path, so that every machine and
    every rank sees the same order (and the same digest)."""
    if not rows:
        raise DataError(f"no images found under {root}; check data.root and the expected folder layout")
    dom, labels, paths, subset = zip(*sorted(rows), strict=True)
    return Listing(
        root=root,
        paths=tuple(paths),
        labels=np.asarray(labels, dtype=np.int64),
        domains=np.asarray(dom, dtype=np.int64),
        class_names=tuple(class_names),
        domain_names=domain_names,
        subset=np.asarray(subset, dtype=np.int64) if subset[0] >= 0 else None,
        notes=notes or {},
    )

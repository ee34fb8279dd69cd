"""CIFAR-10/100 in the python pickle format, read only through the restricted unpickler.

`cifar-10-batches-py/{data_batch_1..5,test_batch,batches.meta}` and `cifar-100-python/{train,test,meta}`; each
batch is a dict with `data` [N, 3072] uint8 (the red, green and blue planes of a 32x32 image, row-major) and the
labels. Keys are bytes or str depending on how the pickle is decoded, so both are accepted.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from hpcfed.data.domains import no_domains
from hpcfed.data.folders import need_root
from hpcfed.data.imagefolder import read_class_names
from hpcfed.data.listing import Listing
from hpcfed.data.registry import DATASETS
from hpcfed.data.safe_pickle import load_restricted
from hpcfed.errors import DataError


@dataclass(frozen=True)
class CifarSpec:
    title: str
    folder: str
    train: tuple[str, ...]
    test: tuple[str, ...]
    meta: str
    labels: str  # label key in a batch
    names: str  # class-name key in the meta file
    coarse_labels: str = ""  # CIFAR-100 superclasses, which the pachinko-style partitioner needs
    coarse_names: str = ""

    @property
    def layout(self) -> str:
        return f"{self.folder}/{{{','.join(self.train + self.test + (self.meta,))}}} (the python version)"


CIFAR_DATASETS = {
    "cifar10": CifarSpec("CIFAR-10", "cifar-10-batches-py", tuple(f"data_batch_{i}" for i in range(1, 6)),
                         ("test_batch",), "batches.meta", "labels", "label_names"),
    "cifar100": CifarSpec("CIFAR-100", "cifar-100-python", ("train",), ("test",), "meta", "fine_labels",
                          "fine_label_names", "coarse_labels", "coarse_label_names"),
}


def _entry(d: object, key: str, path: Path):
    if isinstance(d, dict):
        for k in (key, key.encode()):
            if k in d:
                return d[k]
    raise DataError(f"{path} has no {key!r} entry; it is not a CIFAR python batch: re-extract the official archive")


def _names(meta: dict, key: str, path: Path) -> list[str]:
    names = [n.decode() if isinstance(n, bytes) else str(n) for n in _entry(meta, key, path)]
    if not names:
        raise DataError(f"{path}: the class list {key!r} is empty; re-extract the official archive")
    return names


def _labels(batch: dict, key: str, n_classes: int, n: int, path: Path) -> np.ndarray:
    labels = np.asarray(_entry(batch, key, path), dtype=np.int64)
    if labels.shape != (n,) or (n and (labels.min() < 0 or labels.max() >= n_classes)):
        raise DataError(f"{path}: {key!r} must hold {n} labels in 0..{n_classes - 1}; re-extract the official archive")
    return labels


def read_cifar(name: str, root: str | Path | None, domains: list[str] | None = None,
               class_names_file: str | Path | None = None) -> Listing:
    spec = CIFAR_DATASETS[name]
    no_domains(spec.title, domains)
    base = need_root(root, spec.title, spec.layout)
    folder = base if (base / spec.meta).is_file() else base / spec.folder
    for f in (spec.meta, *spec.train, *spec.test):
        if not (folder / f).is_file():
            raise DataError(f"{spec.title} file {folder / f} does not exist; set data.root to the folder holding "
                            f"{spec.layout}")
    meta = load_restricted(folder / spec.meta)
    raw = _names(meta, spec.names, folder / spec.meta)
    coarse_raw = _names(meta, spec.coarse_names, folder / spec.meta) if spec.coarse_names else []
    pixels, labels, coarse, subset, paths = [], [], [], [], []
    for sub, batch_name in [(0, b) for b in spec.train] + [(2, b) for b in spec.test]:
        path = folder / batch_name
        batch = load_restricted(path)
        data = np.asarray(_entry(batch, "data", path))
        if data.dtype != np.uint8 or data.ndim != 2 or data.shape[1] != 3 * 32 * 32:
            raise DataError(f"{path}: 'data' is {data.dtype}{list(data.shape)}, expected uint8 [N, 3072]; "
                            "re-extract the official archive")
        n = len(data)
        pixels.append(data.reshape(n, 3, 32, 32).transpose(0, 2, 3, 1))  # channel planes -> [N, H, W, C]
        labels.append(_labels(batch, spec.labels, len(raw), n, path))
        if spec.coarse_labels:
            coarse.append(_labels(batch, spec.coarse_labels, len(coarse_raw), n, path))
        subset.append(np.full(n, sub, dtype=np.int64))
        paths += [f"{batch_name}/{i}" for i in range(n)]
    notes: dict = {}
    if spec.coarse_labels:
        notes = {"coarse_labels": np.concatenate(coarse), "coarse_names": [c.replace("_", " ") for c in coarse_raw]}
    names = read_class_names(Path(class_names_file), raw) if class_names_file else [c.replace("_", " ") for c in raw]
    label_array = np.concatenate(labels)
    return Listing(
        root=folder,
        paths=tuple(paths),
        labels=label_array,
        domains=np.zeros(len(label_array), dtype=np.int64),
        class_names=tuple(names),
        subset=np.concatenate(subset),
        pixels=np.ascontiguousarray(np.concatenate(pixels)),
        notes=notes,
    )


for _name in CIFAR_DATASETS:
    DATASETS.register(_name, partial(read_cifar, _name))

"""The feature cache: the frozen prefix of the image tower for every image of a run's splits, in one HDF5 file
named by its key (model, weights, dataset listing, transform, views, cut, dtype).

    <extract.dir>/<key>.h5   attrs: the key's parts (JSON) and a digest of the image files' sizes and times
      /eval_index [n]            images seen under the eval transform (sorted dataset indices): val, test,
                                 and the training images when there is no augmentation
      /view_index [m]            training images with K fixed augmented views each (train.augment with
                                 train.augment_views K)
      /features [n + m*K, ...]   prefix outputs: eval rows first, then the K views of each training image

Each rank extracts a contiguous slice into <key>.parts/rank-NNNNN.h5; rank 0 copies the slices into the final
file under a temporary name and renames it, so a crash never leaves a half-written cache under the key."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np
import torch

from hpcfed.data.listing import Listing
from hpcfed.errors import CacheError
from hpcfed.extract.prefix import Cut, frozen_prefix
from hpcfed.runtime import agree, raise_if_stopped

FORMAT = 1
CHUNK = 64  # images per forward pass and per write




def file_digest(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 22), b""):
            h.update(block)
    return h.hexdigest()[:16]


def images_digest(listing: Listing) -> str:
    """Sizes and modification times of the image files: a cheap way to notice images replaced in place."""
    if listing.pixels is not None:
        return "in-memory"  # the listing digest already covers the pixels
    h = hashlib.sha256()
    for rel in listing.paths:
        st = (listing.root / rel).stat()
        h.update(f"{rel}\x1f{st.st_size}\x1f{st.st_mtime_ns}\x1e".encode())
    return h.hexdigest()[:16]


def cache_parts(cfg, listing: Listing, preprocess, cut: Cut, weights_file: Path | None) -> dict:
    """Everything the cached features depend on. Random-init backbones depend on the run's seed."""
    weights = (f"file {file_digest(weights_file)}" if weights_file else
               f"open_clip tag {cfg.model.pretrained}" if cfg.model.pretrained else f"random init, seed {cfg.seed}")
    parts = {"format": FORMAT, "model": cfg.model.name, "weights": weights, "listing": listing.digest(),
             "transform": repr(preprocess).replace("\n", " "), "invert": cfg.data.invert,
             "views": cfg.train.augment_views, "cut": cut.block, "blocks": cut.n_blocks, "dtype": cfg.extract.dtype}
    if cfg.train.augment_views:
        # 2: views fall back to torchvision's central crop (version 1 took the central square); caches without
        # views keep their key
        parts["view_crops"] = 2
    return parts


def cache_key(parts: dict) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True).encode()).hexdigest()[:16]


@dataclass
class Plan:
    """Which (image, view) pairs the cache holds: view -1 is the eval transform."""

    eval_index: np.ndarray
    view_index: np.ndarray
    views: int

    @classmethod
    def of(cls, splits, views: int) -> Plan:
        train = np.unique(np.concatenate([c.train for c in splits.clients]))
        held_out = [c.val for c in splits.clients] + [c.test for c in splits.clients]
        held_out += splits.global_tests()
        if views == 0:
            held_out.append(train)  # training without augmentation sees the eval transform
        return cls(np.unique(np.concatenate(held_out)).astype(np.int64),
                   train.astype(np.int64) if views else np.zeros(0, np.int64), views)

    def jobs(self) -> list[tuple[str, int, int]]:
        """(group, dataset index, view) in file order."""
        return ([("eval", int(i), -1) for i in self.eval_index]
                + [("views", int(i), v) for i in self.view_index for v in range(self.views)])


def _write_slice(path: Path, jobs: list, images, visual, cut: Cut, dtype: torch.dtype) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    with h5py.File(path, "w") as f:
        out = None
        for start in range(0, len(jobs), CHUNK):
            raise_if_stopped()
            part = jobs[start:start + CHUNK]
            index = np.array([i for _, i, _ in part])
            views = np.array([v for _, _, v in part])
            x = frozen_prefix(visual, images.batch(index, next(visual.parameters()).device, views), cut)
            x = x.to(dtype).cpu().numpy()
            if out is None:
                out = f.create_dataset("features", (len(jobs), *x.shape[1:]), dtype=x.dtype)
            out[start:start + len(part)] = x


def build(path: Path, parts: dict, plan: Plan, rt, images, visual, cut: Cut, listing: Listing) -> None:
    """Extract on every client rank (rank 0 too when it is alone), then assemble on rank 0. Collective."""
    workers = list(range(1, rt.size)) if rt.size > 1 else [0]
    jobs = plan.jobs()
    pieces = np.array_split(np.arange(len(jobs)), len(workers))
    parts_dir = path.with_suffix(".parts")
    dtype = {"float16": torch.float16, "float32": torch.float32}[parts["dtype"]]

    def write_mine() -> None:
        if rt.rank in workers:
            mine = pieces[workers.index(rt.rank)]
            _write_slice(parts_dir / f"rank-{rt.rank:05d}.h5", [jobs[k] for k in mine], images, visual, cut, dtype)

    def assemble() -> None:
        if rt.rank == 0:
            _assemble(path, parts, plan, [parts_dir / f"rank-{w:05d}.h5" for w in workers], images_digest(listing))
            shutil.rmtree(parts_dir, ignore_errors=True)

    # Through `agree`, not barriers: a full disk or a stop signal on one rank stops all of them at the same point.
    agree(rt.world, write_mine)
    agree(rt.world, assemble)


def _assemble(path: Path, parts: dict, plan: Plan, slices: list[Path], stat_digest: str) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with h5py.File(tmp, "w") as out:
        out.attrs["parts"] = json.dumps(parts, sort_keys=True)
        out.attrs["images"] = stat_digest
        out.attrs["views"] = plan.views
        out["eval_index"], out["view_index"] = plan.eval_index, plan.view_index
        features, row = None, 0
        for s in slices:
            with h5py.File(s, "r") as f:
                if "features" not in f:
                    continue  # a rank with no work
                data = f["features"]
                if features is None:
                    features = out.create_dataset("features", (len(plan.jobs()), *data.shape[1:]), dtype=data.dtype)
                for start in range(0, len(data), 4 * CHUNK):
                    block = data[start:start + 4 * CHUNK]
                    features[row + start:row + start + len(block)] = block
                row += len(data)
    os.replace(tmp, path)


def check(path: Path, parts: dict, listing: Listing) -> None:
    """Refuse a cache file that does not belong to this run, or whose images changed since extraction."""
    fix = f"delete {path} or run 'hpcfed extract CONFIG --overwrite'"
    try:
        with h5py.File(path, "r") as f:
            stored, stat_digest = json.loads(f.attrs["parts"]), f.attrs["images"]
    except (OSError, KeyError, ValueError) as e:
        raise CacheError(f"feature cache {path} is unreadable or incomplete ({e}); {fix}") from e
    differ = sorted(k for k in parts.keys() | stored.keys() if parts.get(k) != stored.get(k))
    if differ:
        raise CacheError(f"feature cache {path} was made for other settings ({', '.join(differ)} differ); {fix}")
    if stat_digest != images_digest(listing):
        raise CacheError(f"feature cache {path} is stale: image files under {listing.root} changed (size or "
                         f"modification time) since it was extracted; {fix}")


class FeatureSource:
    """Stands in for ImageSource when training from the cache: the same `batch(indices, device, views)`, but it
    returns prefix features. Holds in memory only the rows of the images this rank's clients use."""

    def __init__(self, path: Path, held_out: np.ndarray, train: np.ndarray):
        with h5py.File(path, "r") as f:
            eval_index, view_index, self.n_views = f["eval_index"][:], f["view_index"][:], int(f.attrs["views"])
            # Without augmentation the training images are read under the eval transform too.
            needed_eval = np.unique(np.concatenate([held_out, train] if self.n_views == 0 else [held_out]))
            needed_train = np.unique(train) if self.n_views else np.zeros(0, np.int64)
            eval_rows = self._rows(eval_index, needed_eval)
            view_rows = len(eval_index) + (self._rows(view_index, needed_train)[:, None] * self.n_views
                                           + np.arange(self.n_views)).reshape(-1)
            rows = np.unique(np.concatenate([eval_rows, view_rows]))
            self.features = torch.from_numpy(f["features"][rows] if len(rows) else np.zeros(0))
        self.where = {int(r): k for k, r in enumerate(rows)}  # file row -> row in memory
        self.eval_row = dict(zip(map(int, needed_eval), map(int, eval_rows), strict=True))
        self.view_row = dict(zip(map(int, needed_train), map(int, view_rows[::max(self.n_views, 1)]), strict=True))

    @staticmethod
    def _rows(index: np.ndarray, needed: np.ndarray) -> np.ndarray:
        rows = np.searchsorted(index, needed)
        if len(needed) and (rows.max() >= len(index) or not np.array_equal(index[rows], needed)):
            raise CacheError("the feature cache lacks images of this run's splits; rebuild it with "
                             "'hpcfed extract CONFIG --overwrite'")
        return rows.astype(np.int64)

    def batch(self, indices: np.ndarray, device="cpu", views: np.ndarray | None = None) -> torch.Tensor:
        if views is None:
            rows = [self.where[self.eval_row[int(i)]] for i in indices]
        else:
            rows = [self.where[self.view_row[int(i)] + int(v)] for i, v in zip(indices, views, strict=True)]
        return self.features[rows].to(device, non_blocking=True).float()

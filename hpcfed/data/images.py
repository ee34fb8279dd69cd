"""Decoding images for the model: resize and crop once (uint8, optionally cached), normalise per batch.

Training augmentation (train.augment_views K > 0) uses K fixed random views per image, view v of image i drawn
from its own stream: a cache of the frozen prefix (`hpcfed extract --views K`) then holds exactly the pixels
that training from images would see, so augmentation survives caching."""

from __future__ import annotations

import math

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms as T
from torchvision.transforms import functional as TF

from hpcfed.data.listing import Listing
from hpcfed.errors import DataError

AUGMENT_SEED = 20231  # views are a property of the image set, not of a run's seed: one cache serves every seed


def view_params(index: int, view: int, width: int, height: int) -> tuple[int, int, int, int, bool]:
    """RandomResizedCrop(scale (0.08, 1), ratio (3/4, 4/3)) + horizontal flip as in CoOp/MMA (methods.md §1.2),
    drawn from the view's own stream: (top, left, crop height, crop width, flip)."""
    rng = np.random.default_rng((AUGMENT_SEED, index, view))
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(0.08, 1.0)
        ratio = math.exp(rng.uniform(math.log(3 / 4), math.log(4 / 3)))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w, bool(
                rng.random() < 0.5)
    side = min(width, height)  # torchvision's fallback: the central square
    return (height - side) // 2, (width - side) // 2, side, side, bool(rng.random() < 0.5)


class ImageSource:
    """Reads a listing's images through the backbone's eval preprocess, split at its Normalize step."""

    def __init__(self, listing: Listing, preprocess: T.Compose, cache: bool = True, invert: bool = False):
        self.listing, self.invert, self.preprocess = listing, invert, preprocess
        steps = list(preprocess.transforms)
        normalize = next(s for s in steps if isinstance(s, T.Normalize))
        # open_clip wraps ToTensor (MaybeToTensor); everything before Normalize except it is geometry.
        self.geometric = [s for s in steps if not (isinstance(s, T.Normalize) or type(s).__name__.endswith("ToTensor"))]
        self.mean = torch.tensor(normalize.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(normalize.std).view(1, 3, 1, 1)
        self.size = next(s.size for s in steps if isinstance(s, T.CenterCrop))
        self.cache: dict[tuple[int, int], torch.Tensor] | None = {} if cache else None

    def _prepare(self, img: Image.Image, index: int, view: int) -> torch.Tensor:
        img = img.convert("RGB")
        if self.invert:
            img = ImageOps.invert(img)
        if view < 0:
            for step in self.geometric:
                img = step(img)
        else:
            top, left, h, w, flip = view_params(index, view, *img.size)
            img = TF.resized_crop(img, top, left, h, w, list(self.size), T.InterpolationMode.BICUBIC)
            img = TF.hflip(img) if flip else img
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)

    def _decode(self, index: int, view: int) -> torch.Tensor:
        if self.listing.pixels is not None:
            return self._prepare(Image.fromarray(self.listing.pixels[index]), index, view)
        path = self.listing.root / self.listing.paths[index]
        try:
            with Image.open(path) as img:
                return self._prepare(img, index, view)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image {path}: {e}; replace or remove the file") from e

    def uint8(self, indices: np.ndarray, views: np.ndarray | None = None) -> torch.Tensor:
        """[B, 3, H, W] uint8; `views[k]` >= 0 picks that augmented view of `indices[k]`, -1 (or None) the eval one."""
        views = np.full(len(indices), -1) if views is None else views
        out = []
        for i, v in zip(map(int, indices), map(int, views), strict=True):
            if self.cache is None:
                out.append(self._decode(i, v))
                continue
            if (i, v) not in self.cache:
                self.cache[(i, v)] = self._decode(i, v)
            out.append(self.cache[(i, v)])
        return torch.stack(out)

    def batch(self, indices: np.ndarray, device: torch.device | str = "cpu",
              views: np.ndarray | None = None) -> torch.Tensor:
        """Normalised float batch [B, 3, H, W] on `device`."""
        x = self.uint8(indices, views).to(device, non_blocking=True).float().div_(255)
        return (x - self.mean.to(device)) / self.std.to(device)

"""Decoding images for the model: resize and crop once (uint8, optionally cached), normalise per batch.

Training augmentation is the reference's RandomResizedCrop(scale (0.08, 1), ratio (3/4, 4/3), bicubic) +
horizontal flip (p 0.5) at the model's input size (methods.md §1.2), in one of two forms:
- `crops`: drawn anew for every image in every epoch from a generator the caller seeds per client, round and
  epoch, cut from the decoded full-size image (kept in memory with `cache`) and then resized, as torchvision
  does on the original image;
- `views`: K fixed views per image (train.augment_views), view v of image i drawn from its own stream, so that a
  cache of the frozen prefix (`hpcfed extract --views K`) holds exactly the pixels training from images would
  see. Every epoch picks one of the K: an approximation of fresh crops that lets augmentation survive caching."""

from __future__ import annotations

import math

import numpy as np
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image, ImageOps
from torchvision import transforms as T
from torchvision.transforms import InterpolationMode

from hpcfed.data.listing import Listing
from hpcfed.errors import DataError

AUGMENT_SEED = 20231  # views are a property of the image set, not of a run's seed: one cache serves every seed
SCALE, RATIO = (0.08, 1.0), (3 / 4, 4 / 3)

Crop = tuple[int, int, int, int, bool]  # top, left, crop height, crop width, flip


def crop_params(rng: np.random.Generator, width: int, height: int) -> Crop:
    """torchvision's RandomResizedCrop.get_params (scale (0.08, 1), ratio (3/4, 4/3)) and a flip with p 0.5,
    drawn from `rng` instead of torch's global stream."""
    area = width * height
    for _ in range(10):
        target = area * rng.uniform(*SCALE)
        ratio = math.exp(rng.uniform(math.log(RATIO[0]), math.log(RATIO[1])))
        w, h = round(math.sqrt(target * ratio)), round(math.sqrt(target / ratio))
        if 0 < w <= width and 0 < h <= height:
            return int(rng.integers(0, height - h + 1)), int(rng.integers(0, width - w + 1)), h, w, bool(
                rng.random() < 0.5)
    # torchvision's fallback: the central crop of the whole image, clamped to the ratio range
    w, h = width, height
    if width / height < RATIO[0]:
        h = round(width / RATIO[0])
    elif width / height > RATIO[1]:
        w = round(height * RATIO[1])
    return (height - h) // 2, (width - w) // 2, h, w, bool(rng.random() < 0.5)


def view_params(index: int, view: int, width: int, height: int) -> Crop:
    """Fixed view `view` of image `index`, from the view's own stream."""
    return crop_params(np.random.default_rng((AUGMENT_SEED, index, view)), width, height)


class ImageSource:
    """Reads a listing's images through the backbone's eval preprocess, split at its Normalize step.

    With `cache`, keeps in memory what it decoded: each (image, view) at the model's input size (uint8), and for
    fresh crops the decoded full-size image (uint8, 3 bytes a pixel: the training images of this rank's clients)."""

    def __init__(self, listing: Listing, preprocess: T.Compose, cache: bool = True, invert: bool = False):
        self.listing, self.invert, self.preprocess = listing, invert, preprocess
        steps = list(preprocess.transforms)
        normalize = next(s for s in steps if isinstance(s, T.Normalize))
        # open_clip wraps ToTensor (MaybeToTensor); everything before Normalize except it is geometry.
        self.geometric = [s for s in steps if not (isinstance(s, T.Normalize) or type(s).__name__.endswith("ToTensor"))]
        self.mean = torch.tensor(normalize.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(normalize.std).view(1, 3, 1, 1)
        self.size = list(next(s.size for s in steps if isinstance(s, T.CenterCrop)))
        self.cache: dict[tuple[int, int], torch.Tensor] | None = {} if cache else None
        self.originals: dict[int, np.ndarray] | None = {} if cache else None

    def _open(self, index: int) -> Image.Image:
        """Image `index` decoded at full size, RGB, inverted when asked."""
        if self.listing.pixels is not None:
            img = Image.fromarray(self.listing.pixels[index]).convert("RGB")
        else:
            path = self.listing.root / self.listing.paths[index]
            try:
                with Image.open(path) as f:
                    img = f.convert("RGB")
            # Whatever the split stage's decode pass counts as unreadable (hpcfed.data.verify): PIL also raises
            # SyntaxError, struct.error, DecompressionBombError... for a file damaged after the split.
            except Exception as e:
                raise DataError(f"cannot read image {path}: {e}; replace or remove the file") from e
        return ImageOps.invert(img) if self.invert else img

    @staticmethod
    def _tensor(img: Image.Image) -> torch.Tensor:
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)

    def _decode(self, index: int, view: int) -> torch.Tensor:
        img = self._open(index)
        if view < 0:
            for step in self.geometric:
                img = step(img)
            return self._tensor(img)
        return self._tensor(self._cut(img, view_params(index, view, *img.size)))

    def _cut(self, img: Image.Image, crop: Crop) -> Image.Image:
        top, left, h, w, flip = crop
        img = F.resized_crop(img, top, left, h, w, self.size, InterpolationMode.BICUBIC)
        return F.horizontal_flip(img) if flip else img

    def _original(self, index: int) -> np.ndarray:
        """The decoded full-size image [H, W, 3] uint8, kept when caching (array datasets hold it already)."""
        if self.originals is None or self.listing.pixels is not None:
            return np.asarray(self._open(index))
        if index not in self.originals:
            self.originals[index] = np.asarray(self._open(index))
        return self.originals[index]

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

    def random_crops(self, indices: np.ndarray, rng: np.random.Generator) -> torch.Tensor:
        """[B, 3, H, W] uint8: a fresh crop and flip of each image, parameters drawn from `rng` in order, cut from
        the full-size image and then resized to the input size (torchvision's RandomResizedCrop on the original)."""
        out = []
        for i in map(int, indices):
            pixels = self._original(i)
            crop = crop_params(rng, pixels.shape[1], pixels.shape[0])
            out.append(self._tensor(self._cut(Image.fromarray(pixels), crop)))
        return torch.stack(out)

    def _normalised(self, x: torch.Tensor, device: torch.device | str) -> torch.Tensor:
        x = x.to(device, non_blocking=True).float().div_(255)
        return (x - self.mean.to(device)) / self.std.to(device)

    def batch(self, indices: np.ndarray, device: torch.device | str = "cpu",
              views: np.ndarray | None = None) -> torch.Tensor:
        """Normalised float batch [B, 3, H, W] on `device`."""
        return self._normalised(self.uint8(indices, views), device)

    def augmented_batch(self, indices: np.ndarray, rng: np.random.Generator,
                        device: torch.device | str = "cpu") -> torch.Tensor:
        """Normalised float batch of fresh crops (`random_crops`) on `device`."""
        return self._normalised(self.random_crops(indices, rng), device)

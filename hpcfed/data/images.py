"""Decoding images for the model: resize and crop once (uint8, optionally cached), normalise per batch."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image, ImageOps
from torchvision import transforms as T

from hpcfed.data.listing import DataError, Listing


class ImageSource:
    """Reads a listing's images through the backbone's eval preprocess, split at its Normalize step."""

    def __init__(self, listing: Listing, preprocess: T.Compose, cache: bool = True, invert: bool = False):
        self.listing, self.invert = listing, invert
        steps = list(preprocess.transforms)
        normalize = next(s for s in steps if isinstance(s, T.Normalize))
        # open_clip wraps ToTensor (MaybeToTensor); everything before Normalize except it is geometry.
        self.geometric = [s for s in steps if not (isinstance(s, T.Normalize) or type(s).__name__.endswith("ToTensor"))]
        self.mean = torch.tensor(normalize.mean).view(1, 3, 1, 1)
        self.std = torch.tensor(normalize.std).view(1, 3, 1, 1)
        self.cache: dict[int, torch.Tensor] | None = {} if cache else None

    def _prepare(self, img: Image.Image) -> torch.Tensor:
        img = img.convert("RGB")
        if self.invert:
            img = ImageOps.invert(img)
        for step in self.geometric:
            img = step(img)
        return torch.from_numpy(np.array(img, dtype=np.uint8)).permute(2, 0, 1)

    def _decode(self, index: int) -> torch.Tensor:
        if self.listing.pixels is not None:
            return self._prepare(Image.fromarray(self.listing.pixels[index]))
        path = self.listing.root / self.listing.paths[index]
        try:
            with Image.open(path) as img:
                return self._prepare(img)
        except (OSError, ValueError) as e:
            raise DataError(f"cannot read image {path}: {e}; replace or remove the file") from e

    def uint8(self, indices: np.ndarray) -> torch.Tensor:
        out = []
        for i in map(int, indices):
            if self.cache is None:
                out.append(self._decode(i))
                continue
            if i not in self.cache:
                self.cache[i] = self._decode(i)
            out.append(self.cache[i])
        return torch.stack(out)

    def batch(self, indices: np.ndarray, device: torch.device | str = "cpu") -> torch.Tensor:
        """Normalised float batch [B, 3, H, W] on `device`."""
        x = self.uint8(indices).to(device, non_blocking=True).float().div_(255)
        return (x - self.mean.to(device)) / self.std.to(device)

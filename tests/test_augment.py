"""Training augmentation as the reference trains (methods.md §1.2): RandomResizedCrop + horizontal flip drawn anew
every epoch from the client's own stream and cut from the full-size image; without it nothing else changes."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.data.images import ImageSource, crop_params
from hpcfed.models import create_backbone


@pytest.fixture(scope="module")
def large_images(tmp_path_factory) -> Path:
    """Images much larger than the input size (64 px) and not square, so that where the crop is cut matters."""
    root = tmp_path_factory.mktemp("large")
    rng = np.random.default_rng(0)
    for name in ("cat", "dog"):
        (root / name).mkdir()
        for k in range(2):
            Image.fromarray(rng.integers(0, 256, (150, 230, 3), dtype=np.uint8)).save(root / name / f"{k}.png")
    return root


def test_a_fresh_crop_is_cut_from_the_full_size_image_then_resized(large_images):
    listing = read_imagefolder(large_images)
    source = ImageSource(listing, create_backbone("hpcfed-tiny", None)[1], cache=True)
    full = Image.open(large_images / listing.paths[1]).convert("RGB")
    for _ in range(2):  # decoded from the file, then from the in-memory copy
        got = source.random_crops(np.array([1]), np.random.default_rng(7))[0]
        top, left, height, width, flip = crop_params(np.random.default_rng(7), *full.size)
        expected = F.resized_crop(full, top, left, height, width, [64, 64], InterpolationMode.BICUBIC)
        expected = F.horizontal_flip(expected) if flip else expected
        assert torch.equal(got, torch.from_numpy(np.array(expected)).permute(2, 0, 1))


def test_a_crop_that_misses_ten_times_falls_back_to_torchvisions_central_crop():
    class TopOfEveryRange:  # scale 1 and ratio 4/3: too tall for a 300x100 image, every try misses
        def uniform(self, low, high):
            return high

        def integers(self, low, high):
            return low

        def random(self):
            return 0.0

    # torchvision: the whole height, the width at the largest allowed ratio (4/3), centred
    assert crop_params(TopOfEveryRange(), 300, 100) == (0, 83, 100, 133, True)

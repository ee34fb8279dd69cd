"""Training augmentation as the reference trains (methods.md §1.2): RandomResizedCrop + horizontal flip drawn anew
every epoch from the client's own stream and cut from the full-size image; without it nothing else changes."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
import torchvision.transforms.v2.functional as F
from PIL import Image
from torchvision.transforms import InterpolationMode

from hpcfed.config import parse_config
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.data.images import ImageSource, crop_params
from hpcfed.errors import ConfigError
from hpcfed.models import create_backbone
from hpcfed.split import make_splits
from hpcfed.train.setup import build_host


def host_with(image_tree: Path, **train):
    listing = read_imagefolder(image_tree, domain_level=True)
    cfg = parse_config({"clients": 2, "model": {"name": "hpcfed-tiny"}, "method": {"name": "pfedmma"},
                        "data": {"dataset": "imagefolder", "root": str(image_tree), "domains": ["a", "b"]},
                        "partition": {"scheme": "domain_dirichlet", "clients_per_domain": 1},
                        "train": {"lr": 0.01, "batch_size": 8, **train}})
    return build_host(cfg, SimpleNamespace(device="cpu"), listing, make_splits(listing, cfg.partition, 2, 0), [0, 1])


def record_training_images(host) -> list[tuple[int, torch.Tensor]]:
    """(dataset index, uint8 image) of every training image the host reads, in order, augmented or not."""
    seen = []
    crops, uint8 = host.images.random_crops, host.images.uint8

    def recording_crops(indices, rng):
        out = crops(indices, rng)
        seen.extend(zip(map(int, indices), out, strict=True))
        return out

    def recording_uint8(indices, views=None):
        out = uint8(indices, views)
        seen.extend(zip(map(int, indices), out, strict=True))
        return out

    host.images.random_crops, host.images.uint8 = recording_crops, recording_uint8
    return seen


def test_two_epochs_draw_different_crops_for_the_same_image(image_tree):
    host = host_with(image_tree, augment=True, local_epochs=2)
    seen = record_training_images(host)
    host.train(host.clients[0], 0)
    by_image: dict[int, list[torch.Tensor]] = {}
    for index, image in seen:
        by_image.setdefault(index, []).append(image)
    assert sorted(by_image) == sorted(host.clients[0].split.train.tolist())
    assert all(len(crops) == 2 and not torch.equal(*crops) for crops in by_image.values())


def test_augmentation_leaves_the_data_order_stream_of_a_client_unchanged(image_tree):
    orders, states = {}, {}
    for augment in (False, True):
        host = host_with(image_tree, augment=augment, local_epochs=2)
        seen = record_training_images(host)
        host.train(host.clients[0], 0)
        orders[augment] = [index for index, _ in seen]
        states[augment] = host.clients[0].data_rng.bit_generator.state
    assert orders[True] == orders[False]
    assert states[True] == states[False]


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


def test_fresh_crops_with_the_feature_cache_are_refused_naming_the_views_key():
    with pytest.raises(ConfigError) as err:
        parse_config({"train": {"augment": True}, "extract": {"enabled": True}})
    assert err.value.key == "train.augment_views"
    assert "train.augment_views to K > 0" in str(err.value) and "extract.enabled: false" in str(err.value)
    cached = parse_config({"train": {"augment": True, "augment_views": 8}, "extract": {"enabled": True}})
    assert cached.train.augment_views == 8  # K cached views: the cache's form of augmentation


def test_views_without_augmentation_are_refused_naming_the_views_key():
    with pytest.raises(ConfigError) as err:
        parse_config({"train": {"augment_views": 4}})
    assert err.value.key == "train.augment_views" and "train.augment: true" in str(err.value)

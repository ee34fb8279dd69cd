"""CoOp datasets as today's downloads unpack them, which drift from CoOp's DATASETS.md: EuroSAT_RGB/ for 2750/,
Kaggle's doubly nested Stanford Cars folders; and a missing image folder named with its near-named neighbour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcfed.data.registry import load_listing
from hpcfed.errors import DataError

# EuroSAT's ten class folders; CoOp's labels follow their sorted order, file names are <Class>_<n>.jpg.
EUROSAT_CLASSES = ("AnnualCrop", "Forest", "HerbaceousVegetation", "Highway", "Industrial", "Pasture",
                   "PermanentCrop", "Residential", "River", "SeaLake")
SUBSETS = ("train", "val", "test")


def _jpeg(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), 128, dtype=np.uint8)).save(path)


def _split_file(path: Path, entries: dict[str, list[list]]) -> None:
    """A split file in CoOp's format: {"train"|"val"|"test": [[image path, label, class name], ...]}."""
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(entries))


def _eurosat(data: Path, image_folder: str) -> Path:
    """eurosat/<image_folder>/<Class>/<Class>_<n>.jpg, one image per class and subset, and CoOp's split file."""
    ds = data / "eurosat"
    split: dict[str, list[list]] = {key: [] for key in SUBSETS}
    for label, cls in enumerate(EUROSAT_CLASSES):
        for n, key in enumerate(SUBSETS, 1):
            _jpeg(ds / image_folder / cls / f"{cls}_{n}.jpg")
            split[key].append([f"{cls}/{cls}_{n}.jpg", label, cls])
    _split_file(ds / "split_zhou_EuroSAT.json", split)
    return ds


CARS = ((0, "2012 AM General Hummer SUV"), (1, "2012 Acura RL Sedan"))


def _stanford_cars(data: Path, train_folder: str, test_folder: str) -> Path:
    """stanford_cars/ with the images of cars_train/ and cars_test/ under the given folders; the split file
    names them as CoOp's does (cars_train/00001.jpg, relative to stanford_cars/)."""
    ds = data / "stanford_cars"
    split: dict[str, list[list]] = {key: [] for key in SUBSETS}
    number = 0
    for key, split_folder, disk_folder in (("train", "cars_train", train_folder), ("val", "cars_train", train_folder),
                                           ("test", "cars_test", test_folder)):
        for label, name in CARS:
            number += 1
            _jpeg(ds / disk_folder / f"{number:05d}.jpg")
            split[key].append([f"{split_folder}/{number:05d}.jpg", label, name])
    _split_file(ds / "split_zhou_StanfordCars.json", split)
    return ds


def _every_path_resolves(listing) -> bool:
    return all((listing.root / p).is_file() for p in listing.paths)


def test_eurosat_from_todays_archive_folder_eurosat_rgb(tmp_path):
    ds = _eurosat(tmp_path, "EuroSAT_RGB")
    listing = load_listing("eurosat", root=str(tmp_path))
    assert listing.root == ds / "EuroSAT_RGB" and _every_path_resolves(listing)
    assert len(listing.class_names) == 10 and listing.class_names[0] == "Annual Crop Land"
    assert np.bincount(listing.subset).tolist() == [10, 10, 10]


def test_eurosat_prefers_coops_2750_when_both_folders_exist(tmp_path):
    ds = _eurosat(tmp_path, "2750")
    _eurosat(tmp_path, "EuroSAT_RGB")
    assert load_listing("eurosat", root=str(ds)).root == ds / "2750"
    (ds / "2750" / "River" / "River_2.jpg").unlink()  # an incomplete 2750/ is refused, not silently replaced
    with pytest.raises(DataError, match=r"names 1 image\(s\) that do not exist under .*2750, e.g. \['River/River_2"):
        load_listing("eurosat", root=str(ds))


@pytest.mark.parametrize("train_folder, test_folder", [
    ("cars_train/cars_train", "cars_test/cars_test"),  # Kaggle's mirror
    ("cars_train", "cars_test/cars_test"),  # half moved: each folder is looked at on its own
], ids=["kaggle", "half-moved"])
def test_stanford_cars_from_kaggles_nested_folders(tmp_path, train_folder, test_folder):
    ds = _stanford_cars(tmp_path, train_folder, test_folder)
    listing = load_listing("stanford_cars", root=str(tmp_path))
    assert listing.root == ds and _every_path_resolves(listing)
    assert {p.rpartition("/")[0] for p in listing.paths} == {train_folder, test_folder}
    assert listing.class_names == tuple(name for _, name in CARS)
    assert np.bincount(listing.subset).tolist() == [2, 2, 2]
    assert listing.labels[listing.paths.index(f"{test_folder}/00006.jpg")] == 1


def test_stanford_cars_coops_own_layout_is_unchanged(tmp_path):
    _stanford_cars(tmp_path, "cars_train", "cars_test")
    listing = load_listing("stanford_cars", root=str(tmp_path))
    assert listing.paths[0] == "cars_test/00005.jpg" and _every_path_resolves(listing)


def test_stanford_cars_with_images_at_both_levels_is_refused(tmp_path):
    ds = _stanford_cars(tmp_path, "cars_train/cars_train", "cars_test")
    _jpeg(ds / "cars_train" / "00001.jpg")
    with pytest.raises(DataError, match=r"both .*cars_train and .*cars_train/cars_train hold images; keep one copy: "
                                        r"move the images of .*cars_train/cars_train up into"):
        load_listing("stanford_cars", root=str(tmp_path))


def test_stanford_cars_without_cars_test_names_the_folder(tmp_path):
    ds = _stanford_cars(tmp_path, "cars_train", "car_test")
    with pytest.raises(DataError, match=r"StanfordCars image folder .*stanford_cars/cars_test does not exist, but "
                                        r".*stanford_cars has car_test/, a near name: if it holds the images "
                                        r"split_zhou_StanfordCars.json names, rename it to cars_test"):
        load_listing("stanford_cars", root=str(ds))


def _split_only(data: Path, folder: str, split_file: str, *folders: str) -> None:
    """A dataset folder with its split file and the given sub-folders, but not the image folder CoOp names."""
    _split_file(data / folder / split_file, {key: [] for key in SUBSETS})
    for name in folders:
        (data / folder / name).mkdir()


@pytest.mark.parametrize("name, folder, split_file, present, looked_for, near", [
    ("ucf101", "ucf101", "split_zhou_UCF101.json", ["UCF-101"], ["UCF-101-midframes"], "UCF-101/"),
    ("eurosat", "eurosat", "split_zhou_EuroSAT.json", ["EuroSAT"], ["2750", "EuroSAT_RGB"], "EuroSAT/"),
    ("sun397", "sun397", "split_zhou_SUN397.json", ["sun_397", "a"], ["SUN397"], "sun_397/"),
    ("dtd", "dtd", "split_zhou_DescribableTextures.json", ["labels"], ["images"], None),
], ids=["ucf101", "eurosat", "sun397", "dtd-no-near-name"])
def test_a_missing_image_folder_is_named_with_any_near_named_folder(tmp_path, name, folder, split_file, present,
                                                                     looked_for, near):
    _split_only(tmp_path, folder, split_file, *present)
    with pytest.raises(DataError) as err:
        load_listing(name, root=str(tmp_path))
    message = str(err.value)
    assert all(f"{tmp_path / folder / want}" in message for want in looked_for)
    if near:
        assert f"has {near}, a near name: if it holds the images {split_file} names" in message
        assert f"rename it to {looked_for[0]}" in message
    else:
        assert "near name" not in message and "put the images there as CoOp's DATASETS.md describes" in message


def test_a_dataset_folder_under_a_near_name_is_named(tmp_path):
    _eurosat(tmp_path, "2750")
    (tmp_path / "eurosat").rename(tmp_path / "EuroSAT")
    with pytest.raises(DataError, match=r"no split_zhou_EuroSAT.json in .* but .* has EuroSAT/, a near name"):
        load_listing("eurosat", root=str(tmp_path))

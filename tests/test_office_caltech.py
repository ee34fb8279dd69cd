"""Office-Caltech10 as users assemble it: the pre-made copy, or Office-31's and Caltech-256's own archives, on tiny
trees with the real folder names; the 10 classes by the fixed mapping, and the errors naming both archives."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from torchvision import transforms as T

from hpcfed.data import office_caltech
from hpcfed.data.images import ImageSource
from hpcfed.data.registry import load_listing
from hpcfed.data.verify import verify_images
from hpcfed.errors import DataError

# Office-31 class -> Caltech-256 folder, as published; the order is the label order.
MAPPING = {"back_pack": "003.backpack", "bike": "224.touring-bike", "calculator": "027.calculator",
           "headphones": "101.head-phones", "keyboard": "045.computer-keyboard", "laptop_computer": "127.laptop-101",
           "monitor": "046.computer-monitor", "mouse": "047.computer-mouse", "mug": "041.coffee-mug",
           "projector": "238.video-projector"}
CLASSES = tuple(MAPPING)
OTHER_OFFICE31 = ("bike_helmet", "bookcase", "desk_lamp", "trash_can")  # 4 of the 21 classes Caltech-256 lacks
OTHER_CALTECH256 = ("001.ak47", "146.mountain-bike", "257.clutter")
OFFICE = ("amazon", "dslr", "webcam")
PER_DOMAIN = {"amazon": 1, "caltech": 2, "dslr": 0, "webcam": 1}  # images per class: 1 + (class + this) % 3


def _count(domain: str, class_index: int) -> int:
    return 1 + (class_index + PER_DOMAIN[domain]) % 3


def _expected_counts(domain: str) -> list[int]:
    return [_count(domain, ci) for ci in range(len(CLASSES))]


def _image(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.full((4, 4, 3), len(path.name), dtype=np.uint8)).save(path)


def _office31(base: Path, images_folder: bool = True) -> Path:
    """Office-31's archive: <domain>/images/<class>/frame_0001.jpg, the 10 classes and some of the 21 others."""
    for domain in OFFICE:
        for ci, cls in enumerate(CLASSES + OTHER_OFFICE31):
            for k in range(_count(domain, ci) if cls in CLASSES else 2):
                _image(base / domain / ("images" if images_folder else "") / cls / f"frame_{k + 1:04d}.jpg")
    return base


def _caltech256(base: Path) -> Path:
    """256_ObjectCategories/NNN.name/NNN_NNNN.jpg for the 10 classes and some other categories."""
    for ci, folder in enumerate((*MAPPING.values(), *OTHER_CALTECH256)):
        number = folder.split(".")[0]
        for k in range(_count("caltech", ci) if ci < len(CLASSES) else 2):
            _image(base / folder / f"{number}_{k + 1:04d}.jpg")
    return base


def _premade(base: Path) -> Path:
    """office_caltech_10/{amazon,caltech,dslr,webcam}/<class>/, amazon and caltech keeping an images/ level."""
    for domain in ("amazon", "caltech", "dslr", "webcam"):
        class_root = base / domain / ("images" if domain in ("amazon", "caltech") else "")
        for ci, cls in enumerate(CLASSES):
            for k in range(_count(domain, ci)):
                _image(class_root / cls / f"{domain}_{k}.jpg")
    return base


def _check_counts_and_labels(listing, domains=("amazon", "caltech", "dslr", "webcam")) -> None:
    assert listing.domain_names == domains
    assert listing.class_names == ("back pack", "bike", "calculator", "headphones", "keyboard", "laptop computer",
                                   "monitor", "mouse", "mug", "projector")
    for di, domain in enumerate(domains):
        assert np.bincount(listing.labels[listing.domains == di]).tolist() == _expected_counts(domain), domain


def _label_of(listing, path: str) -> int:
    return int(listing.labels[listing.paths.index(path)])


LAYOUTS = {  # name: (Office-31 folder, with images/, Caltech-256 folder), relative to data.root
    "side_by_side": ("domain_adaptation_images", True, "256_ObjectCategories"),
    "caltech_one_level_down": ("domain_adaptation_images", True, "caltech256/256_ObjectCategories"),
    "apart_at_different_depths": ("office31/Office31", False, "downloads/caltech/256_ObjectCategories"),
    "domains_directly_in_root": (".", True, "256_ObjectCategories"),
}


@pytest.mark.parametrize("layout", LAYOUTS)
def test_two_archives_give_the_ten_classes_in_four_domains(tmp_path, layout):
    office_dir, images_folder, caltech_dir = LAYOUTS[layout]
    _office31(tmp_path / office_dir, images_folder)
    _caltech256(tmp_path / caltech_dir)
    listing = load_listing("office_caltech10", root=str(tmp_path))
    assert listing.root == tmp_path
    _check_counts_and_labels(listing)
    inner = "images/" if images_folder else ""
    amazon = f"{office_dir}/amazon/{inner}back_pack/frame_0001.jpg".removeprefix("./")
    assert _label_of(listing, amazon) == _label_of(listing, f"{caltech_dir}/003.backpack/003_0001.jpg") == 0
    assert _label_of(listing, f"{caltech_dir}/224.touring-bike/224_0001.jpg") == CLASSES.index("bike")
    assert not any(other in p for p in listing.paths for other in (*OTHER_OFFICE31, *OTHER_CALTECH256))


def test_the_listing_root_is_above_both_archives(tmp_path):
    """data.root a level above the archives' common folder: paths start at the common folder, and open."""
    _office31(tmp_path / "data" / "domain_adaptation_images")
    _caltech256(tmp_path / "data" / "256_ObjectCategories")
    listing = load_listing("office_caltech10", root=str(tmp_path))
    assert listing.root == tmp_path / "data"
    assert "domain_adaptation_images/amazon/images/back_pack/frame_0001.jpg" in listing.paths
    assert "256_ObjectCategories/003.backpack/003_0001.jpg" in listing.paths
    assert len(verify_images(listing, workers=1)) == len(listing)  # the split stage's decode pass
    preprocess = T.Compose([T.Resize(4), T.CenterCrop(4), T.ToTensor(), T.Normalize((0.5,) * 3, (0.5,) * 3)])
    both = np.array([0, listing.paths.index("256_ObjectCategories/003.backpack/003_0001.jpg")])
    assert ImageSource(listing, preprocess, cache=False).uint8(both).shape == (2, 3, 4, 4)  # training's reader


def test_the_premade_copy_with_and_without_images_folders(tmp_path):
    _premade(tmp_path / "office_caltech_10")
    listing = load_listing("office_caltech10", root=str(tmp_path))
    assert listing.root == tmp_path / "office_caltech_10"
    _check_counts_and_labels(listing)
    assert {"amazon/images/back_pack/amazon_0.jpg", "caltech/images/back_pack/caltech_0.jpg",
            "dslr/back_pack/dslr_0.jpg"} <= set(listing.paths)


def test_a_class_name_file_overrides_the_prompt_names(tmp_path):
    _premade(tmp_path)
    names = tmp_path / "names.txt"
    names.write_text("".join(f"{c}\t{c.upper()}\n" for c in CLASSES))
    assert load_listing("office_caltech10", str(tmp_path), None, str(names)).class_names[:2] == ("BACK_PACK", "BIKE")


def test_without_caltech_only_office31_is_needed(tmp_path):
    _office31(tmp_path / "Office31", images_folder=False)
    listing = load_listing("office_caltech10", root=str(tmp_path), domains=["webcam", "amazon"])
    assert listing.root == tmp_path / "Office31" and listing.paths[0].startswith("webcam/back_pack/")
    _check_counts_and_labels(listing, ("webcam", "amazon"))


def test_caltech_alone_needs_only_caltech256(tmp_path):
    _caltech256(tmp_path / "caltech256" / "256_ObjectCategories")
    listing = load_listing("office_caltech10", root=str(tmp_path), domains=["caltech"])
    assert listing.root == tmp_path / "caltech256" / "256_ObjectCategories"
    _check_counts_and_labels(listing, ("caltech",))


def test_a_missing_caltech256_folder_names_both_archives_before_listing_images(tmp_path, monkeypatch):
    office = _office31(tmp_path / "office" / "domain_adaptation_images")
    caltech = _caltech256(tmp_path / "256_ObjectCategories")
    shutil.rmtree(caltech / "224.touring-bike")
    monkeypatch.setattr(office_caltech, "list_images", pytest.fail)  # the error comes before any image is listed
    with pytest.raises(DataError) as err:
        load_listing("office_caltech10", root=str(tmp_path))
    message = str(err.value)
    assert f"needs Caltech-256 class folder(s) 224.touring-bike (for 'bike') in {caltech}" in message
    assert f"found Office-31 at {office} and Caltech-256 at {caltech}" in message
    assert "re-extract that archive" in message and "data.domains: [amazon, dslr, webcam]" in message


def test_a_missing_office31_class_is_named_with_its_domain(tmp_path):
    office = _office31(tmp_path / "domain_adaptation_images")
    caltech = _caltech256(tmp_path / "256_ObjectCategories")
    shutil.rmtree(office / "dslr" / "images" / "mug")
    shutil.rmtree(office / "webcam" / "images" / "mouse")
    with pytest.raises(DataError) as err:
        load_listing("office_caltech10", root=str(tmp_path))
    message = str(err.value)
    assert f"Office-31 class folder(s) mug in {office / 'dslr' / 'images'} (domain dslr)" in message
    assert f"mouse in {office / 'webcam' / 'images'} (domain webcam)" in message
    assert f"found Office-31 at {office} and Caltech-256 at {caltech}" in message and "re-extract" in message


def test_office31_without_caltech256_says_where_it_looked_and_how_to_leave_caltech_out(tmp_path):
    office = _office31(tmp_path / "domain_adaptation_images")
    with pytest.raises(DataError) as err:
        load_listing("office_caltech10", root=str(tmp_path))
    message = str(err.value)
    assert "no Caltech-256 (256_ObjectCategories/" in message and f"in data.root {tmp_path} or up to three" in message
    assert f"Office-31 is at {office}" in message
    assert "data.domains: [amazon, dslr, webcam]" in message and "extract Caltech-256" in message


def test_caltech256_without_office31_says_where_it_looked_and_how_to_read_caltech_alone(tmp_path):
    caltech = _caltech256(tmp_path / "256_ObjectCategories")
    with pytest.raises(DataError) as err:
        load_listing("office_caltech10", root=str(tmp_path), domains=["amazon", "caltech"])
    message = str(err.value)
    assert "no Office-31 (domain_adaptation_images/" in message and f"in data.root {tmp_path} or up to three" in message
    assert f"Caltech-256 is at {caltech}" in message
    assert "data.domains: [caltech]" in message and "extract Office-31" in message


def test_plain_class_names_are_not_taken_for_caltech256(tmp_path):
    """A DomainNet domain next to Office-31 holds 'calculator' and 'mug': Caltech-256 folders carry their number."""
    _office31(tmp_path / "domain_adaptation_images")
    for cls in ("calculator", "headphones", "keyboard", "mug"):
        _image(tmp_path / "domainnet" / "clipart" / cls / "a.jpg")
    with pytest.raises(DataError, match="no Caltech-256"):
        load_listing("office_caltech10", root=str(tmp_path))


def test_a_missing_office31_domain_and_bad_domain_lists(tmp_path):
    office = tmp_path / "domain_adaptation_images"
    _office31(office)
    shutil.rmtree(office / "webcam")
    with pytest.raises(DataError, match=r"domain folder\(s\) \['webcam'\] do not exist in .*data.domains"):
        load_listing("office_caltech10", root=str(tmp_path), domains=["amazon", "webcam"])
    assert len(load_listing("office_caltech10", root=str(tmp_path), domains=["Amazon", "DSLR"])) > 0
    with pytest.raises(DataError, match=r"unknown Office-Caltech10 domain\(s\) \['amazom'\]; choose from"):
        load_listing("office_caltech10", root=str(tmp_path), domains=["amazom"])
    with pytest.raises(DataError, match="names a domain twice; list each domain once"):
        load_listing("office_caltech10", root=str(tmp_path), domains=["amazon", "Amazon"])


def test_an_empty_root_names_the_accepted_layouts(tmp_path):
    with pytest.raises(DataError, match=r"no Office-31 .* office_caltech_10/\{amazon,caltech,dslr,webcam\}"):
        load_listing("office_caltech10", root=str(tmp_path))

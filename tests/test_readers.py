"""Dataset readers on small fake trees in each benchmark's on-disk layout, the bad-input errors, verify_images."""

from __future__ import annotations

import json
import pickle
import re
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcfed.config import PartitionConfig
from hpcfed.data.registry import DATASETS, load_listing
from hpcfed.data.verify import verify_images
from hpcfed.errors import DataError
from hpcfed.split import make_splits

from conftest import make_pacs_tree


def _image(path: Path, seed: int = 0) -> str:
    path.parent.mkdir(parents=True, exist_ok=True)
    pixels = np.random.default_rng(seed).integers(0, 256, (4, 4, 3), dtype=np.uint8)
    Image.fromarray(pixels).save(path)
    return path.name


def _tree(base: Path, domains, classes, per_class: int = 2, suffix: str = ".png") -> Path:
    for d in domains:
        for c in classes:
            for k in range(per_class):
                _image(base / d / c / f"{d.replace(' ', '')}_{k:03d}{suffix}", k)
    return base


def _counts(values) -> list[int]:
    return np.bincount(values).tolist()


# ---------------------------------------------------------------- multi-domain benchmarks

OFFICE_HOME = ("Art", "Clipart", "Product", "Real World")
DOMAINNET = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
DOMAINNET10 = ("bird", "feather", "headphones", "ice_cream", "teapot", "tiger", "whale", "windmill", "wine_glass",
               "zebra")
PACS = ("art_painting", "cartoon", "photo", "sketch")


def test_office_home_from_the_archive_folder_or_its_parent(tmp_path):
    archive = _tree(tmp_path / "OfficeHomeDataset_10072016", OFFICE_HOME, ("Alarm_Clock", "Bottle"))
    a, b = load_listing("office_home", root=str(tmp_path)), load_listing("office_home", root=str(archive))
    assert a.root == b.root == archive and a.paths == b.paths and len(a) == 16
    assert a.class_names == ("Alarm Clock", "Bottle") and a.domain_names == OFFICE_HOME and a.subset is None
    assert _counts(a.domains) == [4, 4, 4, 4] and (archive / a.paths[-1]).is_file()
    some = load_listing("office_home", root=str(tmp_path), domains=["real_world", "art"])
    assert some.domain_names == ("Real World", "Art") and len(some) == 8
    assert all(p.startswith("Real World/") for p in np.array(some.paths)[some.domains == 0])


# Official DomainNet labels: the rank of the name, lower-cased without its non-alphanumeric characters, among
# the 345 class names (so 'The_Eiffel_Tower' comes after 'cell_phone'; Python's sorted() puts it first).
DOMAINNET_LABELS = {"aircraft_carrier": 0, "airplane": 1, "bird": 31, "cello": 66, "cell_phone": 67, "feather": 110,
                    "headphones": 140, "ice_cream": 156, "teapot": 302, "The_Eiffel_Tower": 308, "tiger": 311,
                    "t-shirt": 327, "whale": 336, "windmill": 338, "wine_glass": 340, "zebra": 343}


def _domainnet_name(domain: str, cls: str, k: int) -> str:
    return f"{domain}_{DOMAINNET_LABELS[cls] + 1:03d}_{k + 1:06d}.jpg"  # e.g. clipart_001_000018.jpg


def _domainnet_tree(base: Path, domains, classes, per_class: int) -> Path:
    for d in domains:
        for c in classes:
            for k in range(per_class):
                _image(base / d / c / _domainnet_name(d, c, k), k)
    return base


def _domainnet_lists(base: Path, domains, classes, per_class: int, extra: str = "", missing=()) -> None:
    """Official-style lists, lines '<domain>/<class>/<file> <official label>': image 0 of each class in
    <domain>_train.txt, the others in <domain>_test.txt. `missing`: (list file, class) pairs left out (the real
    painting_train.txt has no t-shirt line)."""
    for d in domains:
        lines = {k: [] for k in ("train", "test")}
        for c in classes:
            for k in range(per_class):
                part = "train" if k == 0 else "test"
                if (f"{d}_{part}.txt", c) not in missing:
                    lines[part].append(f"{d}/{c}/{_domainnet_name(d, c, k)} {DOMAINNET_LABELS[c]}")
        (base / f"{d}_train.txt").write_text("\n".join(lines["train"]) + "\n")
        (base / f"{d}_test.txt").write_text("\n".join(lines["test"]) + "\n" + extra)


def test_domainnet_all_classes_with_official_splits(tmp_path):
    classes = ("aircraft_carrier", "bird", "The_Eiffel_Tower")
    base = _domainnet_tree(tmp_path / "domainnet", DOMAINNET, classes, per_class=3)
    plain = load_listing("domainnet", root=str(tmp_path))
    assert plain.subset is None and len(plain) == 54 and plain.domain_names == DOMAINNET
    _domainnet_lists(base, DOMAINNET, classes, per_class=3)
    listing = load_listing("domainnet", root=str(base))
    assert listing.class_names == ("aircraft carrier", "bird", "The Eiffel Tower")
    assert len(listing) == 54 and _counts(listing.subset) == [18, 0, 36]
    assert len(listing.notes["split_files"]) == 12 and listing.notes["unlisted_images"] == 0
    assert listing.notes["test_list"] == "held out" and listing.notes["official_labels"] == [0, 31, 308]
    _image(base / "real" / "bird" / "extra.png")
    with pytest.warns(UserWarning, match="1 DomainNet images .* are in no official split list"):
        assert len(load_listing("domainnet", root=str(base))) == 54


def test_domainnet_classes_follow_the_official_labels_with_and_without_lists(tmp_path):
    classes = ("zebra", "The_Eiffel_Tower", "cell_phone", "t-shirt", "cello", "tiger", "aircraft_carrier")
    official = ("aircraft carrier", "cello", "cell phone", "The Eiffel Tower", "tiger", "t-shirt", "zebra")
    base = _domainnet_tree(tmp_path / "DomainNet", ("clipart", "painting"), classes, per_class=2)
    plain = load_listing("domainnet", root=str(tmp_path), domains=["clipart", "painting"])
    assert plain.class_names == official and "official_labels" not in plain.notes
    _domainnet_lists(base, ("clipart", "painting"), classes, per_class=2, missing={("painting_train.txt", "t-shirt")})
    with pytest.warns(UserWarning, match="1 DomainNet images .* are in no official split list"):
        listed = load_listing("domainnet", root=str(tmp_path), domains=["clipart", "painting"])
    assert listed.class_names == official and listed.notes["official_labels"] == [0, 66, 67, 308, 311, 327, 343]
    for listing in (plain, listed):
        eiffel = listing.paths.index("clipart/The_Eiffel_Tower/clipart_309_000001.jpg")
        assert listing.labels[eiffel] == 3 and listing.class_names[3] == "The Eiffel Tower"


def test_official_labels_that_disagree_take_the_majority_with_one_warning(tmp_path):
    classes = ("bird", "cello", "zebra")
    base = _domainnet_tree(tmp_path / "DomainNet", ("clipart", "real"), classes, per_class=3)
    _domainnet_lists(base, ("clipart", "real"), classes, per_class=3)
    test = base / "real_test.txt"
    test.write_text(test.read_text().replace("real_344_000002.jpg 343", "real_344_000002.jpg 0"))
    with pytest.warns(UserWarning, match=r"1 line\(s\) .* e.g. .*real_test.txt:5 gives zebra/real_344_000002.jpg "
                      r"label 0 where 5 lines give zebra label 343; the majority label is used"):
        listing = load_listing("domainnet", root=str(tmp_path), domains=["clipart", "real"])
    assert listing.class_names == ("bird", "cello", "zebra") and listing.notes["official_labels"] == [31, 66, 343]
    assert listing.labels[listing.paths.index("real/zebra/real_344_000002.jpg")] == 2


def test_two_class_folders_with_one_official_label_are_refused(tmp_path):
    base = _domainnet_tree(tmp_path / "DomainNet", ("clipart",), ("bird", "cello"), per_class=2)
    _domainnet_lists(base, ("clipart",), ("bird", "cello"), per_class=2)
    for part in ("train", "test"):
        lists = base / f"clipart_{part}.txt"
        lists.write_text(lists.read_text().replace(" 66\n", " 31\n"))  # cello's lines say bird's label
    with pytest.raises(DataError, match=r"label 31 to two class folders, 'bird' \(.*clipart_train.txt:1\) and "
                       r"'cello' \(.*clipart_train.txt:2\); .* rename the folders"):
        load_listing("domainnet", root=str(tmp_path), domains=["clipart"])


def test_the_right_dataset_is_found_among_its_neighbours(tmp_path):
    """$DATA holding DomainNet next to PACS: DomainNet's 'sketch' must not pass for a PACS folder."""
    _tree(tmp_path / "domainnet", DOMAINNET, ("bird",), per_class=1)
    _tree(tmp_path / "PACS" / "pacs_data" / "pacs_data", PACS, ("dog",), per_class=1)
    listing = load_listing("pacs", root=str(tmp_path))
    assert listing.root == tmp_path / "PACS" / "pacs_data" / "pacs_data" and len(listing) == 4
    assert load_listing("domainnet", root=str(tmp_path), domains=["sketch"]).root == tmp_path / "domainnet"


def test_a_class_name_file_overrides_the_prompt_names(tmp_path):
    _coop_json(tmp_path, "oxford_pets")
    names = tmp_path / "names.txt"
    names.write_text("abyssinian\tAbyssinian cat\namerican_bulldog\tAmerican bulldog\n")
    assert load_listing("oxford_pets", str(tmp_path), None, str(names)).class_names == ("Abyssinian cat",
                                                                                       "American bulldog")


def test_domainnet10_keeps_the_ten_classes_in_official_order_and_reads_the_full_lists(tmp_path):
    classes = (*reversed(DOMAINNET10), "aircraft_carrier")
    base = _domainnet_tree(tmp_path / "DomainNet", ("clipart", "sketch"), classes, per_class=2)
    listing = load_listing("domainnet10", root=str(tmp_path), domains=["clipart", "sketch"])
    readable = tuple(c.replace("_", " ") for c in DOMAINNET10)  # bird, feather, ..., zebra: the official order
    assert listing.class_names == readable and len(listing) == 40 and listing.subset is None
    _domainnet_lists(base, ("clipart", "sketch"), classes, per_class=2)
    listing = load_listing("domainnet10", root=str(tmp_path), domains=["clipart", "sketch"])
    assert _counts(listing.subset) == [20, 0, 20] and not any("aircraft" in p for p in listing.paths)
    assert listing.class_names == readable and _counts(listing.labels) == [4] * 10  # re-indexed 0..9, FedBN-style
    assert listing.notes["official_labels"] == [DOMAINNET_LABELS[c] for c in DOMAINNET10]
    assert listing.notes["official_labels"][0] == 31 and listing.notes["official_labels"][-1] == 343


# Where users have PACS (images, kfold lists), relative to $DATA.
PACS_LAYOUTS = {"authors' archive": ("PACS/pacs_data/pacs_data", "PACS/pacs_label"),
                "kfold variant": ("PACS/kfold", "PACS/pacs_label"),
                "Dassl": ("pacs/images", "pacs/splits"),
                "DomainBed": ("PACS", None)}


@pytest.mark.parametrize("layout", sorted(PACS_LAYOUTS))
def test_pacs_is_found_in_each_layout_users_have(tmp_path, layout):
    images, lists = PACS_LAYOUTS[layout]
    make_pacs_tree(tmp_path / images, lists and tmp_path / lists, per_class=3)
    listing = load_listing("pacs", root=str(tmp_path))
    assert listing.root == tmp_path / images and len(listing) == 36
    assert listing.class_names == ("dog", "elephant", "giraffe") and listing.domain_names == PACS
    if lists:
        assert _counts(listing.subset) == [24, 12] and listing.notes["test_list"] == "whole domain"
    else:
        assert listing.subset is None and listing.notes == {}


def test_pacs_kfold_lists_give_train_and_val_and_their_test_list_is_the_whole_domain(tmp_path):
    make_pacs_tree(tmp_path / "PACS" / "pacs_data" / "pacs_data", tmp_path / "PACS" / "pacs_label")
    listing = load_listing("pacs", root=str(tmp_path / "PACS"), domains=["photo", "sketch"])
    assert listing.domain_names == ("photo", "sketch") and len(listing) == 24
    assert _counts(listing.subset) == [18, 6] and listing.notes["test_list"] == "whole domain"
    assert listing.notes["split_overlap"] == 0 and listing.notes["test_only_images"] == 0
    assert listing.notes["official_labels"] == [1, 2, 3] and listing.notes["unlisted_images"] == 0
    splits = make_splits(listing, PartitionConfig(scheme="domain_dirichlet", clients_per_domain=1), 2, seed=0)
    assert all(len(c.train) and len(c.val) and len(c.test) for c in splits.clients)


def test_pacs_odd_lines_warn_and_are_left_out_without_failing(tmp_path):
    """Copies of the lists carry odd lines: an image labelled 0 instead of dog's 1, an image named by the test
    list alone. Neither stops the reader; both are said."""
    images, labels = tmp_path / "PACS" / "pacs_data" / "pacs_data", tmp_path / "PACS" / "pacs_label"
    make_pacs_tree(images, labels)
    train = labels / "art_painting_train_kfold.txt"
    train.write_text(train.read_text().replace("art_painting/dog/pic_225.jpg 1", "art_painting/dog/pic_225.jpg 0"))
    _image(images / "art_painting" / "dog" / "pic_999.jpg")
    with (labels / "art_painting_test_kfold.txt").open("a") as test:
        test.write("art_painting/dog/pic_999.jpg 1\n")
    with pytest.warns(UserWarning) as caught:
        listing = load_listing("pacs", root=str(tmp_path))
    said = " | ".join(str(w.message) for w in caught)
    assert re.search(r"art_painting_train_kfold.txt:1 gives dog/pic_225.jpg label 0 where \d+ lines give dog label 1",
                     said), said
    assert re.search(r"1 PACS image\(s\) .* named only by a test list that holds the whole domain .*pic_999", said)
    assert listing.class_names == ("dog", "elephant", "giraffe") and listing.notes["official_labels"] == [1, 2, 3]
    assert listing.labels[listing.paths.index("art_painting/dog/pic_225.jpg")] == 0
    assert "art_painting/dog/pic_999.jpg" not in listing.paths and listing.notes["test_only_images"] == 1


# ---------------------------------------------------------------- CoOp datasets

# name: (dataset folder, image folder, split file, [(image path, raw class name)], expected prompt names)
COOP_JSON = {
    "caltech101": ("caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                   [("accordion/image_{k}.jpg", "accordion"), ("BACKGROUND_Google/image_{k}.jpg", "BACKGROUND_Google"),
                    ("Faces/image_{k}.jpg", "Faces")], ["accordion", "face"]),
    "oxford_pets": ("oxford_pets", "images", "split_zhou_OxfordPets.json",
                    [("Abyssinian_{k}.jpg", "abyssinian"), ("american_bulldog_{k}.jpg", "american_bulldog")],
                    ["abyssinian", "american bulldog"]),
    "oxford_flowers": ("oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json",
                       [("image_0000{k}.jpg", "pink primrose"), ("image_0010{k}.jpg", "hard-leaved pocket orchid")],
                       ["pink primrose", "hard-leaved pocket orchid"]),
    "food101": ("food-101", "images", "split_zhou_Food101.json",
                [("apple_pie/{k}.jpg", "apple_pie"), ("baby_back_ribs/{k}.jpg", "baby_back_ribs")],
                ["apple pie", "baby back ribs"]),
    "dtd": ("dtd", "images", "split_zhou_DescribableTextures.json",
            [("banded/banded_{k}.jpg", "banded"), ("blotchy/blotchy_{k}.jpg", "blotchy")], ["banded", "blotchy"]),
    "ucf101": ("ucf101", "UCF-101-midframes", "split_zhou_UCF101.json",
               [("Apply_Eye_Makeup/v_{k}.jpg", "Apply_Eye_Makeup"), ("Archery/v_{k}.jpg", "Archery")],
               ["Apply Eye Makeup", "Archery"]),
    "sun397": ("sun397", "SUN397", "split_zhou_SUN397.json",
               [("a/abbey/sun_{k}.jpg", "abbey"), ("b/bakery/shop/sun_{k}.jpg", "shop bakery")],
               ["abbey", "shop bakery"]),
    "stanford_cars": ("stanford_cars", "", "split_zhou_StanfordCars.json",
                      [("cars_train/0000{k}.jpg", "2012 AM General Hummer SUV"),
                       ("cars_test/0001{k}.jpg", "2012 Acura RL")],
                      ["2012 AM General Hummer SUV", "2012 Acura RL"]),
    "eurosat": ("eurosat", "2750", "split_zhou_EuroSAT.json",
                [("AnnualCrop/AnnualCrop_{k}.jpg", "AnnualCrop"), ("SeaLake/SeaLake_{k}.jpg", "SeaLake"),
                 ("Highway/Highway_{k}.jpg", "Highway or Road")],
                ["Annual Crop Land", "Sea or Lake", "Highway or Road"]),
}


def _coop_json(data: Path, name: str) -> Path:
    folder, images, split_file, classes, _ = COOP_JSON[name]
    split = {"train": [], "val": [], "test": []}
    for label, (pattern, cname) in enumerate(classes):
        for k, key in enumerate(split):  # one image per class and subset
            rel = pattern.format(k=k)
            _image(data / folder / images / rel, k)
            split[key].append([rel, label, cname])
    (data / folder / split_file).write_text(json.dumps(split))
    return data / folder


@pytest.mark.parametrize("name", sorted(COOP_JSON))
def test_coop_split_json_datasets(tmp_path, name):
    ds = _coop_json(tmp_path, name)
    expected = COOP_JSON[name][4]
    for root in (tmp_path, ds):  # CoOp's $DATA or the dataset folder itself
        listing = load_listing(name, root=str(root))
        assert list(listing.class_names) == expected
        assert len(listing) == 3 * len(expected) and _counts(listing.subset) == [len(expected)] * 3
        assert sorted(_counts(listing.labels)) == [3] * len(expected) and listing.domain_names == ("all",)
        assert all((listing.root / p).is_file() for p in listing.paths)


def test_caltech101_drops_background_and_relabels(tmp_path):
    listing = load_listing("caltech101", root=str(_coop_json(tmp_path, "caltech101")))
    faces = [i for i, p in enumerate(listing.paths) if p.startswith("Faces/")]
    assert set(listing.labels[faces]) == {1} and not any("BACKGROUND" in p for p in listing.paths)


def test_fgvc_aircraft_variant_files(tmp_path):
    ds = tmp_path / "fgvc_aircraft"
    variants = ["707-320", "A300B4", "Cessna 172"]
    (ds / "images").mkdir(parents=True)
    (ds / "variants.txt").write_text("\n".join(variants) + "\n")
    for s, key in enumerate(("train", "val", "test")):
        lines = [f"{1000000 + 10 * s + v} {variant}" for v, variant in enumerate(variants)]
        for line in lines:
            _image(ds / "images" / f"{line.split(' ')[0]}.jpg")
        (ds / f"images_variant_{key}.txt").write_text("\n".join(lines) + "\n")
    listing = load_listing("fgvc_aircraft", root=str(tmp_path))
    assert list(listing.class_names) == variants and _counts(listing.subset) == [3, 3, 3]
    assert listing.labels[listing.paths.index("1000002.jpg")] == 2


def test_imagenet_train_and_val_folders(tmp_path):
    ds = tmp_path / "imagenet"
    (ds / "classnames.txt").parent.mkdir(parents=True)
    (ds / "classnames.txt").write_text("n01440764 tench\nn01443537 goldfish\nn09999999 great white shark\n")
    for split, n in (("train", 3), ("val", 1)):
        for wnid in ("n01440764", "n01443537"):
            for k in range(n):
                _image(ds / "images" / split / wnid / f"{wnid}_{k}.JPEG")
    listing = load_listing("imagenet", root=str(ds))
    assert listing.class_names == ("tench", "goldfish") and _counts(listing.subset) == [6, 0, 2]
    assert listing.paths[0] == "train/n01440764/n01440764_0.JPEG" and listing.root == ds / "images"


# ---------------------------------------------------------------- CIFAR


def _pickle(path: Path, obj) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(pickle.dumps(obj, protocol=2))


def _batch(n: int, seed: int, **labels) -> dict:
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 256, (n, 3072), dtype=np.uint8)
    data[0, :1024], data[0, 1024:2048], data[0, 2048:] = 10, 20, 30  # red, green, blue planes of image 0
    return {b"batch_label": b"fake", b"data": data, b"filenames": [b"x.png"] * n,
            **{k.encode(): list(map(int, v)) for k, v in labels.items()}}


CIFAR10_NAMES = [b"airplane", b"automobile", b"bird", b"cat", b"deer", b"dog", b"frog", b"horse", b"ship", b"truck"]


def test_cifar10_python_batches(tmp_path):
    folder = tmp_path / "cifar-10-batches-py"
    for i in range(1, 6):
        _pickle(folder / f"data_batch_{i}", _batch(2, i, labels=[i, 9]))
    _pickle(folder / "test_batch", _batch(3, 0, labels=[0, 1, 2]))
    _pickle(folder / "batches.meta", {b"label_names": CIFAR10_NAMES, b"num_vis": 3072})
    for root in (tmp_path, folder):
        listing = load_listing("cifar10", root=str(root))
        assert listing.pixels.shape == (13, 32, 32, 3) and listing.pixels.dtype == np.uint8
        assert listing.pixels[0, 0, 0].tolist() == [10, 20, 30] and listing.pixels[0, 31, 31].tolist() == [10, 20, 30]
        assert listing.class_names[1] == "automobile" and listing.labels[:2].tolist() == [1, 9]
        assert _counts(listing.subset) == [10, 0, 3] and listing.paths[-1] == "test_batch/2"


def test_cifar100_fine_and_coarse_labels(tmp_path):
    folder = tmp_path / "cifar-100-python"
    _pickle(folder / "train", _batch(4, 1, fine_labels=[0, 1, 2, 1], coarse_labels=[0, 1, 0, 1]))
    _pickle(folder / "test", _batch(2, 2, fine_labels=[2, 0], coarse_labels=[0, 0]))
    _pickle(folder / "meta", {b"fine_label_names": [b"apple", b"aquarium_fish", b"maple_tree"],
                              b"coarse_label_names": [b"fruit_and_vegetables", b"fish"]})
    listing = load_listing("cifar100", root=str(tmp_path))
    assert listing.class_names == ("apple", "aquarium fish", "maple tree") and len(listing) == 6
    assert isinstance(listing.notes["coarse_labels"], np.ndarray)
    assert listing.notes["coarse_labels"].tolist() == [0, 1, 0, 1, 0, 0]
    assert listing.notes["coarse_names"] == ["fruit and vegetables", "fish"] and _counts(listing.subset) == [4, 0, 2]


def test_cifar_batch_of_the_wrong_shape(tmp_path):
    folder = tmp_path / "cifar-100-python"
    _pickle(folder / "train", {b"data": np.zeros((2, 10), np.uint8), b"fine_labels": [0, 0], b"coarse_labels": [0, 0]})
    _pickle(folder / "test", _batch(1, 0, fine_labels=[0], coarse_labels=[0]))
    _pickle(folder / "meta", {b"fine_label_names": [b"apple"], b"coarse_label_names": [b"fruit"]})
    with pytest.raises(DataError, match=r"train: 'data' is uint8\[2, 10\], expected uint8 \[N, 3072\]"):
        load_listing("cifar100", root=str(folder))


# ---------------------------------------------------------------- bad input

NEW_NAMES = ["office_home", "domainnet", "domainnet10", "office_caltech10", "pacs", "cifar10", "cifar100",
             *sorted(COOP_JSON), "fgvc_aircraft", "imagenet"]
LAYOUT_HINT = {"office_home": "OfficeHomeDataset_10072016", "domainnet": "clipart", "domainnet10": "clipart",
               "office_caltech10": "amazon", "pacs": "pacs_data", "cifar10": "cifar-10-batches-py",
               "cifar100": "cifar-100-python", "fgvc_aircraft": "variants.txt", "imagenet": "classnames.txt",
               **{n: spec[2] for n, spec in COOP_JSON.items()}}


def test_every_new_name_is_registered():
    assert set(NEW_NAMES) <= set(DATASETS) and {"emoji_domains", "imagefolder"} <= set(DATASETS)


@pytest.mark.parametrize("name", NEW_NAMES)
def test_a_missing_root_names_the_path_and_the_layout(tmp_path, name):
    with pytest.raises(DataError, match="does not exist") as err:
        load_listing(name, root=str(tmp_path / "nowhere"))
    assert str(tmp_path / "nowhere") in str(err.value) and LAYOUT_HINT[name] in str(err.value)
    with pytest.raises(DataError, match="data.root is required"):
        load_listing(name, root=None)


def test_an_empty_root_says_which_layout_is_expected(tmp_path):
    with pytest.raises(DataError, match=r"no Office-Home domain folders .* OfficeHomeDataset_10072016"):
        load_listing("office_home", root=str(tmp_path))
    with pytest.raises(DataError, match=r"no split_zhou_DescribableTextures.json .* dtd/images/"):
        load_listing("dtd", root=str(tmp_path))
    with pytest.raises(DataError, match="cifar-10-batches-py/batches.meta does not exist"):
        load_listing("cifar10", root=str(tmp_path))


@pytest.mark.parametrize("name", ["cifar10", "oxford_pets", "imagenet"])
def test_datasets_without_domains_refuse_domains(tmp_path, name):
    with pytest.raises(DataError, match=r"has no domains, but data.domains is \['a'\]"):
        load_listing(name, root=str(tmp_path), domains=["a"])


def test_missing_and_unknown_domains(tmp_path):
    _tree(tmp_path, OFFICE_HOME[:3], ("Mug",))
    with pytest.raises(DataError, match=r"domain folder .*Real World does not exist .* data.domains"):
        load_listing("office_home", root=str(tmp_path))
    assert len(load_listing("office_home", root=str(tmp_path), domains=["Art", "Product"])) == 4
    with pytest.raises(DataError, match=r"unknown Office-Home domain\(s\) \['Artt'\]"):
        load_listing("office_home", root=str(tmp_path), domains=["Artt"])


def test_classes_that_differ_between_domains(tmp_path):
    _tree(tmp_path, PACS, ("dog", "elephant"))
    for f in (tmp_path / "cartoon" / "elephant").iterdir():
        f.unlink()
    (tmp_path / "cartoon" / "elephant").rmdir()
    with pytest.raises(DataError, match=r"classes differ between domains: .*cartoon .* lacks \['elephant'\]"):
        load_listing("pacs", root=str(tmp_path))


def test_empty_class_lists(tmp_path):
    (tmp_path / "Art").mkdir()
    _tree(tmp_path, OFFICE_HOME[1:], ("Bottle",))
    with pytest.raises(DataError, match=r"Art has no class folders"):
        load_listing("office_home", root=str(tmp_path))
    ds = tmp_path / "dtd"
    (ds / "images").mkdir(parents=True)
    (ds / "split_zhou_DescribableTextures.json").write_text(json.dumps({"train": [], "val": [], "test": []}))
    with pytest.raises(DataError, match="lists no classes"):
        load_listing("dtd", root=str(tmp_path))
    (tmp_path / "fgvc_aircraft" / "images").mkdir(parents=True)
    (tmp_path / "fgvc_aircraft" / "variants.txt").write_text("\n")
    with pytest.raises(DataError, match="variants.txt is empty"):
        load_listing("fgvc_aircraft", root=str(tmp_path))
    _tree(tmp_path / "dn", ("clipart",), ("bird", "zebra"))
    with pytest.raises(DataError, match=r"DomainNet-10 needs the class folders \['feather'"):
        load_listing("domainnet10", root=str(tmp_path / "dn"), domains=["clipart"])


def test_split_files_that_name_missing_images(tmp_path):
    ds = _coop_json(tmp_path, "dtd")
    (ds / "images" / "banded" / "banded_1.jpg").unlink()
    with pytest.raises(DataError, match=r"split_zhou_DescribableTextures.json names 1 image\(s\) that do not exist"):
        load_listing("dtd", root=str(tmp_path))
    base = _domainnet_tree(tmp_path / "dn", DOMAINNET, ("bird",), per_class=2)
    _domainnet_lists(base, DOMAINNET, ("bird",), per_class=2, extra="clipart/bird/clipart_032_000999.jpg 31\n")
    with pytest.raises(DataError, match=r"clipart_test.txt names 1 image\(s\) that do not exist .*clipart_032_000999"):
        load_listing("domainnet", root=str(base))
    (base / "sketch_train.txt").unlink()
    (base / "sketch_test.txt").unlink()
    with pytest.raises(DataError, match=r"split lists found for .* but not for \['sketch'\]"):
        load_listing("domainnet", root=str(base))


def test_fgvc_unknown_variant(tmp_path):
    ds = tmp_path / "fgvc_aircraft"
    _image(ds / "images" / "1.jpg")
    (ds / "variants.txt").write_text("A300B4\n")
    for key in ("train", "val", "test"):
        (ds / f"images_variant_{key}.txt").write_text("1 Boeing 999\n")
    with pytest.raises(DataError, match=r"images_variant_train.txt:1: variant 'Boeing 999' is not in"):
        load_listing("fgvc_aircraft", root=str(ds))


# ---------------------------------------------------------------- verify_images


def test_verify_images_drops_and_reports_a_corrupt_file(tmp_path):
    _tree(tmp_path, ("a", "b"), ("cat", "dog"), per_class=3)
    (tmp_path / "b" / "dog" / "b_001.png").write_bytes(b"\x89PNG\r\n\x1a\n truncated")
    listing = load_listing("imagefolder", root=str(tmp_path), domains=["a", "b"])
    with pytest.warns(UserWarning, match=r"1 of 12 images .* cannot be read .*b/dog/b_001.png"):
        checked = verify_images(listing)
    assert len(checked) == 11 and "b/dog/b_001.png" not in checked.paths
    assert checked.notes["corrupt_images"] == 1 and checked.notes["corrupt_paths"] == ["b/dog/b_001.png"]
    assert checked.labels.tolist() == [listing.labels[i] for i, p in enumerate(listing.paths) if p != "b/dog/b_001.png"]
    (tmp_path / "b" / "dog" / "b_001.png").unlink()
    clean = verify_images(load_listing("imagefolder", root=str(tmp_path), domains=["a", "b"]))
    assert len(clean) == 11 and clean.notes["corrupt_images"] == 0


def test_verify_images_skips_pixel_listings(tmp_path):
    folder = tmp_path / "cifar-100-python"
    _pickle(folder / "train", _batch(2, 1, fine_labels=[0, 0], coarse_labels=[0, 0]))
    _pickle(folder / "test", _batch(1, 2, fine_labels=[0], coarse_labels=[0]))
    _pickle(folder / "meta", {b"fine_label_names": [b"apple"], b"coarse_label_names": [b"fruit"]})
    listing = load_listing("cifar100", root=str(folder))
    assert verify_images(listing) is listing

"""The eleven CoOp benchmark datasets, in the on-disk layouts of CoOp's DATASETS.md.

Nine come with a `split_zhou_<Name>.json` ({"train"|"val"|"test": [[image path, label, class name], ...]},
paths relative to the image folder) that fixes both the split and the class names. FGVC-Aircraft has its
`images_variant_{train,val,test}.txt` and `variants.txt`; ImageNet has `images/{train,val}/<wnid>/` and
`classnames.txt` (`<wnid> <name>`), its val set serving as the test set as in CoOp. `data.root` may be the
folder holding all datasets (CoOp's $DATA) or the dataset's own folder.

Today's downloads drift from DATASETS.md in two known ways, both accepted: EuroSAT_RGB.zip unpacks to
`eurosat/EuroSAT_RGB/` (CoOp: `eurosat/2750/`), and Kaggle's Stanford Cars mirror nests each folder in itself
(`cars_train/cars_train/00001.jpg`). A missing image folder is named, with any folder of a near name beside it.

Prompt names follow CoOp: underscores become spaces (its prompt learner does that), EuroSAT's and Caltech101's
folder names get CoOp's readable names when a split file still carries them, and Caltech101 has no
BACKGROUND_Google or Faces_easy class.
"""

from __future__ import annotations

import difflib
import json
import re
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path

from hpcfed.data.domains import no_domains
from hpcfed.data.folders import list_images, need_root, subdirs, warn_empty
from hpcfed.data.imagefolder import read_class_names
from hpcfed.data.listing import Listing, Row, rows_to_listing
from hpcfed.data.registry import DATASETS
from hpcfed.data.verify import require_files
from hpcfed.errors import DataError

SUBSETS = ("train", "val", "test")  # Listing.subset 0, 1, 2

EUROSAT_NAMES = {
    "AnnualCrop": "Annual Crop Land", "Forest": "Forest", "HerbaceousVegetation": "Herbaceous Vegetation Land",
    "Highway": "Highway or Road", "Industrial": "Industrial Buildings", "Pasture": "Pasture Land",
    "PermanentCrop": "Permanent Crop Land", "Residential": "Residential Buildings", "River": "River",
    "SeaLake": "Sea or Lake",
}
CALTECH_NAMES = {"airplanes": "airplane", "Faces": "face", "Leopards": "leopard", "Motorbikes": "motorbike"}


@dataclass(frozen=True)
class CoopSpec:
    title: str
    folder: str  # the dataset's folder under $DATA
    images: str  # image folder inside it ("" = the dataset folder itself)
    marker: str  # the file that identifies the dataset folder: the split json, or variants.txt / classnames.txt
    renames: dict[str, str] = field(default_factory=dict)
    ignored: tuple[str, ...] = ()
    image_aliases: tuple[str, ...] = ()  # other names today's downloads give the image folder
    # Folders the split file's paths start with, which a mirror may nest in themselves (cars_train/cars_train/)
    nestable: tuple[str, ...] = ()

    @property
    def layout(self) -> str:
        if self.nestable:
            images = f"{self.folder}/{{{','.join(self.nestable)}}}/"
        elif self.images:
            images = " or ".join(f"{self.folder}/{name}/" for name in (self.images, *self.image_aliases))
        else:
            images = f"{self.folder}/<images>"
        return f"{images} and {self.folder}/{self.marker} (CoOp's DATASETS.md)"


COOP_DATASETS = {
    "caltech101": CoopSpec("Caltech101", "caltech-101", "101_ObjectCategories", "split_zhou_Caltech101.json",
                           CALTECH_NAMES, ("BACKGROUND_Google", "Faces_easy")),
    "oxford_pets": CoopSpec("OxfordPets", "oxford_pets", "images", "split_zhou_OxfordPets.json"),
    "oxford_flowers": CoopSpec("Flowers102", "oxford_flowers", "jpg", "split_zhou_OxfordFlowers.json"),
    "food101": CoopSpec("Food101", "food-101", "images", "split_zhou_Food101.json"),
    "dtd": CoopSpec("DTD", "dtd", "images", "split_zhou_DescribableTextures.json"),
    "ucf101": CoopSpec("UCF101", "ucf101", "UCF-101-midframes", "split_zhou_UCF101.json"),
    "sun397": CoopSpec("SUN397", "sun397", "SUN397", "split_zhou_SUN397.json"),
    "stanford_cars": CoopSpec("StanfordCars", "stanford_cars", "", "split_zhou_StanfordCars.json",
                              nestable=("cars_train", "cars_test")),
    "eurosat": CoopSpec("EuroSAT", "eurosat", "2750", "split_zhou_EuroSAT.json", EUROSAT_NAMES,
                        image_aliases=("EuroSAT_RGB",)),
    "fgvc_aircraft": CoopSpec("FGVCAircraft", "fgvc_aircraft", "images", "variants.txt"),
    "imagenet": CoopSpec("ImageNet", "imagenet", "images", "classnames.txt"),
}


def read_coop(name: str, root: str | Path | None, domains: list[str] | None = None,
              class_names_file: str | Path | None = None) -> Listing:
    spec = COOP_DATASETS[name]
    no_domains(spec.title, domains)
    base = need_root(root, spec.title, spec.layout)
    ds = base if (base / spec.marker).is_file() else base / spec.folder
    if not (ds / spec.marker).is_file():
        near = _near_hint(base, (spec.folder,))
        raise DataError(f"{spec.title}: no {spec.marker} in {base} or {base / spec.folder}{near}; expected "
                        f"{spec.layout}. Set data.root to the folder holding {spec.folder}/ and add the file as "
                        "CoOp's DATASETS.md describes")
    images = _image_folder(ds, spec)
    reader = {"fgvc_aircraft": _aircraft, "imagenet": _imagenet}.get(name, _split_json)
    rows, keys, default_names = reader(ds, images, spec)
    # CoOp's prompt learner turns underscores into spaces for every dataset.
    names = (read_class_names(Path(class_names_file), keys) if class_names_file
             else [n.replace("_", " ") for n in default_names])
    return rows_to_listing(images, rows, names)


def _image_folder(ds: Path, spec: CoopSpec) -> Path:
    """The image folder under CoOp's name, else under a name today's download gives it. CoOp's name wins when
    both exist: the split file is then checked against it, so an incomplete copy there is still refused."""
    for name in (spec.images, *spec.image_aliases):
        if (ds / name).is_dir():
            return ds / name
    raise _missing_folder(spec, ds, (spec.images, *spec.image_aliases))


def _missing_folder(spec: CoopSpec, parent: Path, names: tuple[str, ...]) -> DataError:
    looked = " or ".join(str(parent / name) for name in names)
    hint = _near_hint(parent, names)
    if not hint:
        return DataError(f"{spec.title} image folder {looked} does not exist; expected {spec.layout}: put the "
                         "images there as CoOp's DATASETS.md describes")
    return DataError(f"{spec.title} image folder {looked} does not exist{hint}: if it holds the images "
                     f"{spec.marker} names, rename it to {names[0]}; otherwise download the images as CoOp's "
                     f"DATASETS.md describes (expected {spec.layout})")


def _near_hint(parent: Path, names: tuple[str, ...]) -> str:
    near = _near_names(parent, names)
    return f", but {parent} has {', '.join(n + '/' for n in near)}, a near name" if near else ""


def _near_names(parent: Path, names: tuple[str, ...]) -> list[str]:
    """Sub-folders of `parent` whose name is close to one of `names` (case, '-', '_' aside): a download that
    names the folder differently (UCF-101 for UCF-101-midframes, eurosat_rgb for EuroSAT_RGB)."""
    if not parent.is_dir():
        return []
    wanted = [_plain(n) for n in names if n]
    return [folder for folder in subdirs(parent) if folder not in names and any(
        _close(_plain(folder), w) for w in wanted)]


def _plain(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _close(a: str, b: str) -> bool:
    shorter, longer = sorted((a, b), key=len)
    contained = len(shorter) >= 4 and shorter in longer  # 'ucf101' in 'ucf101midframes'
    return contained or difflib.SequenceMatcher(None, a, b).ratio() >= 0.8  # 'jpeg' for 'jpg'


def _nested_folders(images: Path, spec: CoopSpec) -> dict[str, str]:
    """Where each of `spec.nestable` really is, relative to the image folder: `cars_train` as CoOp has it, or
    `cars_train/cars_train` as Kaggle's Stanford Cars mirror unpacks. Images at both levels are refused: it
    cannot be told which copy the split file means."""
    found = {}
    for name in spec.nestable:
        flat, nested = images / name, images / name / name
        if not flat.is_dir():
            raise _missing_folder(spec, images, (name,))
        if nested.is_dir() and list_images(flat):
            raise DataError(f"{spec.title}: both {flat} and {nested} hold images; keep one copy: move the images "
                            f"of {nested} up into {flat} (CoOp's layout {spec.layout}) and delete {nested}")
        found[name] = f"{name}/{name}" if nested.is_dir() else name
    return found


def _relocated(path: str, folders: dict[str, str]) -> str:
    """A split-file path with its first folder where `_nested_folders` found it."""
    head, sep, rest = path.partition("/")
    return f"{folders[head]}/{rest}" if sep and head in folders else path


def _split_json(ds: Path, images: Path, spec: CoopSpec) -> tuple[list[Row], list[str], list[str]]:
    path = ds / spec.marker
    try:
        split = json.loads(path.read_text())
    except (OSError, ValueError) as e:
        raise DataError(f"{path} is not readable JSON ({e}); download it again") from e
    if not isinstance(split, dict) or any(not isinstance(split.get(k), list) for k in SUBSETS):
        raise DataError(f"{path} must hold lists 'train', 'val' and 'test'; download the CoOp split file again")
    items = []
    for subset, key in enumerate(SUBSETS):
        for item in split[key]:
            if not (isinstance(item, list) and len(item) == 3 and isinstance(item[0], str)
                    and isinstance(item[1], int) and isinstance(item[2], str)):
                raise DataError(f"{path}: entries of {key!r} must be [image path, label, class name], got {item!r}")
            items.append((subset, item[0], item[1], item[2]))
    raw: dict[int, str] = {}
    for _, _, label, cname in items:
        if raw.setdefault(label, cname) != cname:
            raise DataError(f"{path}: label {label} is named both {raw[label]!r} and {cname!r}; download it again")
    kept = sorted(label for label, cname in raw.items() if cname not in spec.ignored)
    if not kept:
        raise DataError(f"{path} lists no classes; download the CoOp split file again")
    relabel = {old: new for new, old in enumerate(kept)}  # identity unless an ignored class had to go
    folders = _nested_folders(images, spec)
    items = [(subset, _relocated(impath, folders), label, cname) for subset, impath, label, cname in items
             if label in relabel]
    require_files(images, (it[1] for it in items), path)
    keys = [raw[label] for label in kept]
    names = [spec.renames.get(k, k) for k in keys]
    return [(0, relabel[label], impath, subset) for subset, impath, label, _ in items], keys, names


def _aircraft(ds: Path, images: Path, spec: CoopSpec) -> tuple[list[Row], list[str], list[str]]:
    variants_file = ds / "variants.txt"
    variants = [line.strip() for line in variants_file.read_text().splitlines() if line.strip()]
    if not variants:
        raise DataError(f"{variants_file} is empty; it needs one aircraft variant per line (FGVC-Aircraft data/)")
    label = {v: i for i, v in enumerate(variants)}
    items = []
    for subset, key in enumerate(SUBSETS):
        path = ds / f"images_variant_{key}.txt"
        if not path.is_file():
            raise DataError(f"{path} does not exist; copy it from the FGVC-Aircraft archive's data/ folder")
        for lineno, line in enumerate(path.read_text().splitlines(), 1):
            image, _, variant = line.strip().partition(" ")  # '1025794 707-320': image id, then the variant
            if not image:
                continue
            if variant not in label:
                raise DataError(f"{path}:{lineno}: variant {variant!r} is not in {variants_file}; use the files "
                                "of one FGVC-Aircraft release")
            items.append((0, label[variant], f"{image}.jpg", subset))
        require_files(images, (it[2] for it in items if it[3] == subset), path)
    return items, variants, variants


def _imagenet(ds: Path, images: Path, spec: CoopSpec) -> tuple[list[Row], list[str], list[str]]:
    names_file = ds / "classnames.txt"
    names = {}
    for line in names_file.read_text().splitlines():
        wnid, _, name = line.strip().partition(" ")
        if wnid:
            names[wnid] = name.strip()
    if not names:
        raise DataError(f"{names_file} is empty; it needs one '<wnid> <class name>' line per class")
    folders: list[str] = []
    rows: list[Row] = []
    for subset, split in ((0, "train"), (2, "val")):  # CoOp tests on ImageNet's val set
        split_dir = images / split
        if not split_dir.is_dir():
            raise DataError(f"ImageNet folder {split_dir} does not exist; expected {spec.layout} with "
                            "images/{train,val}/<wnid>/")
        found = subdirs(split_dir)
        if not found:
            raise DataError(f"{split_dir} has no <wnid> class folders; sort its images into one folder per class")
        if folders and found != folders:
            raise DataError(f"classes differ between {images / 'train'} and {split_dir} ({len(folders)} vs "
                            f"{len(found)} folders, e.g. {sorted(set(folders) ^ set(found))[:5]}); use the same wnids")
        folders = found
        names_in = {w: list_images(split_dir / w) for w in folders}
        warn_empty([split_dir / w for w in folders if not names_in[w]], images)
        rows += [(0, ci, f"{split}/{w}/{n}", subset) for ci, w in enumerate(folders) for n in names_in[w]]
    unnamed = [w for w in folders if w not in names]
    if unnamed:
        raise DataError(f"{names_file} has no name for {len(unnamed)} class folder(s), e.g. {unnamed[:5]}; "
                        "use CoOp's classnames.txt")
    return rows, folders, [names[w] for w in folders]


for _name in COOP_DATASETS:
    DATASETS.register(_name, partial(read_coop, _name))

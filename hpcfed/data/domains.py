"""Multi-domain benchmarks: Office-Home, DomainNet (all 345 classes or the 10-class FedBN subset) and PACS, all
laid out as `<base>/<domain>/<class>/<image>` (Office-Caltech10, read from two archives, is in office_caltech.py).

`base` may be the given root or sit up to two folders below it (three through the dataset's own archive folders),
because the archives unpack into their own folder (`OfficeHomeDataset_10072016/`, `PACS/pacs_data/pacs_data/`).
Domain folders are matched ignoring case, spaces and underscores ("Real World" = "real_world"). Official split
lists set `Listing.subset`: DomainNet's `<domain>_train.txt`/`_test.txt`, PACS's
`<domain>_{train,crossval,test}_kfold.txt`. PACS's test list holds the whole domain (it is meant for
leave-one-domain-out), so an image in two lists keeps the first of train, val, test, and
`notes["split_overlap"]` counts such images. Images on disk that no list names are left out, with a warning.

Folders are listed with hpcfed.data.folders (`subdirs`, `list_images`, `need_root`), as in every reader.
"""

from __future__ import annotations

import re
import warnings
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from hpcfed.data.folders import list_images, need_root, recording_skipped, subdirs, warn_empty
from hpcfed.data.imagefolder import read_class_names
from hpcfed.data.listing import Listing, Row, rows_to_listing
from hpcfed.data.registry import DATASETS
from hpcfed.errors import DataError


def no_domains(title: str, domains: list[str] | None) -> None:
    if domains:
        raise DataError(f"{title} has no domains, but data.domains is {domains}; remove data.domains")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


@dataclass(frozen=True)
class DomainSpec:
    title: str
    domains: tuple[str, ...]  # canonical names, used as Listing.domain_names
    layout: str  # for error messages
    classes: tuple[str, ...] = ()  # a fixed class subset (DomainNet-10); empty: whatever the domains share
    split_files: tuple[tuple[int, str], ...] = ()  # (subset, file name pattern with {domain}), in precedence order
    split_dirs: tuple[str, ...] = ("",)  # where split lists may sit, relative to base and its two parents
    archives: tuple[str, ...] = ()  # folder names the archive unpacks into: searched one level deeper


DOMAINNET_DOMAINS = ("clipart", "infograph", "painting", "quickdraw", "real", "sketch")
DOMAINNET_SPLITS = ((0, "{domain}_train.txt"), (2, "{domain}_test.txt"))
DOMAIN_DATASETS = {
    "office_home": DomainSpec(
        "Office-Home", ("Art", "Clipart", "Product", "Real World"),
        "OfficeHomeDataset_10072016/{Art,Clipart,Product,Real World}/<class>/<image> (the archive folder or its "
        "parent)", archives=("OfficeHomeDataset_10072016", "OfficeHome")),
    "domainnet": DomainSpec(
        "DomainNet", DOMAINNET_DOMAINS,
        "{clipart,infograph,painting,quickdraw,real,sketch}/<class>/<image>, optionally <domain>_{train,test}.txt",
        split_files=DOMAINNET_SPLITS, split_dirs=("", "splits"), archives=("DomainNet",)),
    "domainnet10": DomainSpec(
        "DomainNet-10", DOMAINNET_DOMAINS,
        "the DomainNet folders {clipart,...,sketch}/<class>/<image> with at least the 10 subset classes",
        classes=("bird", "feather", "headphones", "ice_cream", "teapot", "tiger", "whale", "windmill",
                 "wine_glass", "zebra"),
        split_files=DOMAINNET_SPLITS, split_dirs=("", "splits"), archives=("DomainNet",)),
    "pacs": DomainSpec(
        "PACS", ("art_painting", "cartoon", "photo", "sketch"),
        "pacs_data/{art_painting,cartoon,photo,sketch}/<class>/<image>, optionally pacs_label/"
        "<domain>_{train,crossval,test}_kfold.txt",
        split_files=((0, "{domain}_train_kfold.txt"), (1, "{domain}_crossval_kfold.txt"),
                     (2, "{domain}_test_kfold.txt")),
        split_dirs=("", "pacs_label", "kfold"), archives=("PACS", "pacs_data", "kfold")),
}


def _find_base(root: Path, wanted: set[str], spec: DomainSpec) -> Path:
    """The folder below `root` holding the most of the wanted domain folders; shallower wins ties.

    Every folder down to depth 2 is looked at, depth 3 only inside the dataset's own archive folders
    (`$DATA/PACS/pacs_data/pacs_data`): looking everywhere would list every class folder of every dataset."""
    archives = {_norm(a) for a in spec.archives}
    best, best_score, level = root, 0, [root]
    for depth in range(4):
        children = {}
        for folder in level:
            with recording_skipped():  # damaged neighbours of the dataset are not our business: no warning
                children[folder] = subdirs(folder)
            score = len(wanted & {_norm(s) for s in children[folder]})
            if score > best_score:
                best, best_score = folder, score
        if best_score == len(wanted):
            break
        level = [f / s for f in level for s in children[f] if depth < 2 or _norm(s) in archives]
    if not best_score:
        raise DataError(f"no {spec.title} domain folders under {root} or its sub-folders; expected {spec.layout}")
    return best


def _class_root(domain_dir: Path) -> Path:
    # Office-31-style copies keep the classes one level down, in <domain>/images/<class>.
    return domain_dir / "images" if subdirs(domain_dir) == ["images"] else domain_dir


def _read_list(path: Path) -> list[tuple[int, str, str]]:
    """(line number, class folder, file name) per line of an official split list `<dom>/<class>/<file> <label>`."""
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        rel, *label = line.rsplit(None, 1)
        if not label or not label[0].lstrip("-").isdigit():  # no label column: the whole line is the path
            rel = line
        parts = rel.replace("\\", "/").split("/")
        if len(parts) < 3:
            raise DataError(f"{path}:{lineno}: expected '<domain>/<class>/<image> <label>', got {line!r}; "
                            "use the split list that came with the dataset")
        out.append((lineno, parts[-2], parts[-1]))  # class and file: any prefix (absolute, kfold/) is ignored
    return out


def _split_lists(base: Path, spec: DomainSpec, canonical: str, folder: str) -> dict[int, Path]:
    found: dict[int, Path] = {}
    places = [a / s for a in (base, base.parent, base.parent.parent) for s in spec.split_dirs]
    for subset, pattern in spec.split_files:
        names = dict.fromkeys(pattern.format(domain=d) for d in (canonical, folder))
        hit = next((p / n for p in places for n in names if (p / n).is_file()), None)
        if hit is not None:
            found[subset] = hit
    return found


def _apply_lists(lists: dict[int, Path], on_disk: set[tuple[str, str]], only: set[str], class_root: Path
                 ) -> tuple[dict[tuple[str, str], int], int]:
    """Subset of each (class, file) the lists name, and how many were named twice. An image the lists name but
    the disk lacks is an error; with `only`, lines of other classes are skipped (DomainNet-10 reads the full
    DomainNet lists)."""
    assigned: dict[tuple[str, str], int] = {}
    overlap = 0
    for subset, path in lists.items():  # in the spec's precedence order
        missing = []
        for lineno, cls, name in _read_list(path):
            if only and cls not in only:
                continue
            if (cls, name) not in on_disk:
                missing.append(f"{cls}/{name} (line {lineno})")
            elif (cls, name) in assigned:
                overlap += 1
            else:
                assigned[(cls, name)] = subset
        if missing:
            raise DataError(
                f"{path} names {len(missing)} image(s) that do not exist under {class_root}, e.g. {missing[:3]}; "
                "the images and the split list do not belong together: re-extract the domain or remove the list"
            )
    return assigned, overlap


def _domain_rows(di: int, base: Path, class_root: Path, folders: list[str], lists: dict[int, Path],
                 spec: DomainSpec) -> tuple[list[Row], int, int]:
    """One domain's rows; with official lists only the images they name, plus overlap and unlisted counts."""
    prefix = class_root.relative_to(base).as_posix()
    names = {c: list_images(class_root / c) for c in folders}
    warn_empty([class_root / c for c in folders if not names[c]], base)
    if not lists:
        return [(di, ci, f"{prefix}/{c}/{n}", -1) for ci, c in enumerate(folders) for n in names[c]], 0, 0
    on_disk = {(c, n) for c in folders for n in names[c]}
    assigned, overlap = _apply_lists(lists, on_disk, set(spec.classes), class_root)
    rows = [(di, ci, f"{prefix}/{c}/{n}", assigned[(c, n)]) for ci, c in enumerate(folders) for n in names[c]
            if (c, n) in assigned]
    return rows, overlap, len(on_disk) - len(assigned)


def read_domain_dataset(name: str, root: str | Path | None, domains: list[str] | None = None,
                        class_names_file: str | Path | None = None) -> Listing:
    spec = DOMAIN_DATASETS[name]
    root = need_root(root, spec.title, spec.layout)
    canonical = {_norm(d): d for d in spec.domains}
    unknown = [d for d in domains or [] if _norm(d) not in canonical]
    if unknown:
        raise DataError(f"unknown {spec.title} domain(s) {unknown}; choose from {list(spec.domains)}")
    chosen = [canonical[_norm(d)] for d in domains] if domains else list(spec.domains)
    base = _find_base(root, {_norm(d) for d in chosen}, spec)
    present = {_norm(s): s for s in subdirs(base)}
    for d in chosen:
        if _norm(d) not in present:
            raise DataError(f"{spec.title} domain folder {base / d} does not exist (found {sorted(present.values())});"
                            f" download that domain, list the ones you have in data.domains, or point data.root at "
                            f"the folder holding {spec.layout}")
    class_roots = [_class_root(base / present[_norm(d)]) for d in chosen]
    folders = _common_classes(class_roots, spec)

    lists = [_split_lists(base, spec, d, present[_norm(d)]) for d in chosen]
    if any(lists) and not all(lists):
        have = [d for d, li in zip(chosen, lists, strict=True) if li]
        lack = [d for d, li in zip(chosen, lists, strict=True) if not li]
        raise DataError(f"{spec.title}: official split lists found for {have} but not for {lack} (looked in "
                        f"{base} and its parents); add the lists for {lack} or remove them all")
    rows: list[Row] = []
    overlap = unlisted = 0
    for di, (class_root, dom_lists) in enumerate(zip(class_roots, lists, strict=True)):
        dom_rows, dom_overlap, dom_unlisted = _domain_rows(di, base, class_root, folders, dom_lists, spec)
        rows += dom_rows
        overlap, unlisted = overlap + dom_overlap, unlisted + dom_unlisted
    notes: dict = {}
    if any(lists):
        notes = {"split_files": [str(p) for li in lists for p in li.values()], "split_overlap": overlap,
                 "unlisted_images": unlisted}
        if unlisted:
            warnings.warn(f"{unlisted} {spec.title} images under {base} are in no official split list and are left "
                          "out; remove the lists to use every image", stacklevel=2)
    class_names = (read_class_names(Path(class_names_file), folders) if class_names_file
                   else [f.replace("_", " ") for f in folders])  # CoOp's rule: 'ice_cream' -> 'ice cream'
    return rows_to_listing(base, rows, class_names, tuple(chosen), notes)


def _common_classes(class_roots: list[Path], spec: DomainSpec) -> list[str]:
    found = {}
    for d in class_roots:
        found[d] = subdirs(d)
        if not found[d]:
            raise DataError(f"{d} has no class folders; expected {d}/<class>/<image> ({spec.layout})")
    if spec.classes:
        for d, have in found.items():
            lack = [c for c in spec.classes if c not in have]
            if lack:
                raise DataError(f"{spec.title} needs the class folders {lack} in {d}; re-extract that domain")
        return sorted(spec.classes)
    first = class_roots[0]
    for d, have in found.items():
        if have != found[first]:
            extra, lack = sorted(set(have) - set(found[first])), sorted(set(found[first]) - set(have))
            raise DataError(
                f"classes differ between domains: {d} has extra {extra[:5]} and lacks {lack[:5]} compared with "
                f"{first}; every domain needs the same class folders"
            )
    return found[first]


for _name in DOMAIN_DATASETS:
    DATASETS.register(_name, partial(read_domain_dataset, _name))

"""Multi-domain benchmarks: Office-Home, DomainNet (all 345 classes or the 10-class FedBN subset) and PACS, all
laid out as `<base>/<domain>/<class>/<image>` (Office-Caltech10, read from two archives, is in office_caltech.py).

`base` may be the given root or sit up to two folders below it (three through the dataset's own archive folders),
because the archives unpack into their own folder (`OfficeHomeDataset_10072016/`, `PACS/pacs_data/pacs_data/`).
Domain folders are matched ignoring case, spaces and underscores ("Real World" = "real_world"). Official split
lists (hpcfed.data.splitlists) set `Listing.subset`: DomainNet's `<domain>_train.txt`/`_test.txt`, PACS's
`<domain>_{train,crossval,test}_kfold.txt`. PACS's test list holds the whole domain (it is meant for
leave-one-domain-out): it is recognised as such (`notes["test_list"]`) and gives no test part, so each client's
test set is cut from its train at split time. Images on disk that no list names are left out, with a warning.

Class order: by the label column of the split lists where there are lists (`notes["official_labels"]` keeps each
class's official label; DomainNet-10 re-indexes its 10 classes 0..9), else the dataset's own order: DomainNet's
official order is its class names sorted lower-case with every non-alphanumeric character removed, the others
sort their folder names.

Folders are listed with hpcfed.data.folders (`subdirs`, `list_images`, `need_root`), as in every reader.
"""

from __future__ import annotations

import re
import warnings
from collections.abc import Callable
from dataclasses import dataclass
from functools import partial
from pathlib import Path

from hpcfed.data.folders import classes_folder, list_images, need_root, recording_skipped, subdirs, warn_empty
from hpcfed.data.imagefolder import read_class_names
from hpcfed.data.listing import Listing, Row, rows_to_listing
from hpcfed.data.registry import DATASETS
from hpcfed.data.splitlists import Assignment, ListLine, assign_subsets, official_labels, read_list
from hpcfed.errors import DataError


def no_domains(title: str, domains: list[str] | None) -> None:
    if domains:
        raise DataError(f"{title} has no domains, but data.domains is {domains}; remove data.domains")


def _norm(name: str) -> str:
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _domainnet_order(name: str) -> tuple[str, str]:
    # DomainNet's official labels sort the names this way: 'The_Eiffel_Tower' (308) after 'cell_phone' (67).
    return _norm(name), name


@dataclass(frozen=True)
class DomainSpec:
    title: str
    domains: tuple[str, ...]  # canonical names, used as Listing.domain_names
    layout: str  # for error messages
    classes: tuple[str, ...] = ()  # a fixed class subset (DomainNet-10); empty: whatever the domains share
    split_files: tuple[tuple[int, str], ...] = ()  # (subset, file name pattern with {domain}), in precedence order
    split_dirs: tuple[str, ...] = ("",)  # where split lists may sit, relative to base and its two parents
    archives: tuple[str, ...] = ()  # folder names the archive unpacks into: searched one level deeper
    class_order: Callable[[str], object] = str  # sort key of the class folders when no list gives labels


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
        split_files=DOMAINNET_SPLITS, split_dirs=("", "splits"), archives=("DomainNet",),
        class_order=_domainnet_order),
    "domainnet10": DomainSpec(
        "DomainNet-10", DOMAINNET_DOMAINS,
        "the DomainNet folders {clipart,...,sketch}/<class>/<image> with at least the 10 subset classes",
        classes=("bird", "feather", "headphones", "ice_cream", "teapot", "tiger", "whale", "windmill",
                 "wine_glass", "zebra"),
        split_files=DOMAINNET_SPLITS, split_dirs=("", "splits"), archives=("DomainNet",),
        class_order=_domainnet_order),
    # The authors' PACS/pacs_data/pacs_data/ with PACS/pacs_label/, the kfold variant PACS/kfold/ with
    # pacs_label/, Dassl's pacs/images/ with pacs/splits/, DomainBed's PACS/<domain>/ without lists.
    "pacs": DomainSpec(
        "PACS", ("art_painting", "cartoon", "photo", "sketch"),
        "pacs_data/{art_painting,cartoon,photo,sketch}/<class>/<image> (or kfold/, images/ or PACS/ itself), "
        "optionally pacs_label/ or splits/ with <domain>_{train,crossval,test}_kfold.txt",
        split_files=((0, "{domain}_train_kfold.txt"), (1, "{domain}_crossval_kfold.txt"),
                     (2, "{domain}_test_kfold.txt")),
        split_dirs=("", "pacs_label", "kfold", "splits"), archives=("PACS", "pacs_data", "kfold", "images")),
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


def _split_lists(base: Path, spec: DomainSpec, canonical: str, folder: str) -> dict[int, Path]:
    found: dict[int, Path] = {}
    places = [a / s for a in (base, base.parent, base.parent.parent) for s in spec.split_dirs]
    for subset, pattern in spec.split_files:
        names = dict.fromkeys(pattern.format(domain=d) for d in (canonical, folder))
        hit = next((p / n for p in places for n in names if (p / n).is_file()), None)
        if hit is not None:
            found[subset] = hit
    return found


def _domain_rows(di: int, base: Path, class_root: Path, folders: list[str], lists: dict[int, list[ListLine]],
                 spec: DomainSpec) -> tuple[list[Row], Assignment | None, int]:
    """One domain's rows; with official lists only the images they name, what the lists said, and how many
    images on disk no list names."""
    prefix = class_root.relative_to(base).as_posix()
    names = {c: list_images(class_root / c) for c in folders}
    warn_empty([class_root / c for c in folders if not names[c]], base)
    if not lists:
        return [(di, ci, f"{prefix}/{c}/{n}", -1) for ci, c in enumerate(folders) for n in names[c]], None, 0
    on_disk = {(c, n) for c in folders for n in names[c]}
    done = assign_subsets(lists, on_disk, set(spec.classes), class_root)
    rows = [(di, ci, f"{prefix}/{c}/{n}", done.subset[(c, n)]) for ci, c in enumerate(folders) for n in names[c]
            if (c, n) in done.subset]
    return rows, done, len(on_disk) - len(done.subset) - len(done.test_only)


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
    class_roots = [classes_folder(base / present[_norm(d)]) for d in chosen]
    folders = _common_classes(class_roots, spec)

    lists = [_split_lists(base, spec, d, present[_norm(d)]) for d in chosen]
    if any(lists) and not all(lists):
        have = [d for d, li in zip(chosen, lists, strict=True) if li]
        lack = [d for d, li in zip(chosen, lists, strict=True) if not li]
        raise DataError(f"{spec.title}: official split lists found for {have} but not for {lack} (looked in "
                        f"{base} and its parents); add the lists for {lack} or remove them all")
    lines = [{subset: read_list(path) for subset, path in dom.items()} for dom in lists]
    folders, labels = _class_order(folders, lines, spec)
    rows: list[Row] = []
    assignments: dict[str, Assignment] = {}
    unlisted = 0
    for di, (domain, class_root, dom_lines) in enumerate(zip(chosen, class_roots, lines, strict=True)):
        dom_rows, done, dom_unlisted = _domain_rows(di, base, class_root, folders, dom_lines, spec)
        rows += dom_rows
        unlisted += dom_unlisted
        if done is not None:
            assignments[domain] = done
    notes = _list_notes(spec, base, lists, assignments, unlisted, labels)
    class_names = (read_class_names(Path(class_names_file), folders) if class_names_file
                   else [f.replace("_", " ") for f in folders])  # CoOp's rule: 'ice_cream' -> 'ice cream'
    return rows_to_listing(base, rows, class_names, tuple(chosen), notes)


def _class_order(folders: list[str], lines: list[dict[int, list[ListLine]]], spec: DomainSpec
                 ) -> tuple[list[str], list[int]]:
    """The class folders in official order and, where the lists' lines carry labels, the official label of each
    (-1: no line labels it). With labels the classes follow them, so indices match other code reading the same
    lists; folders no line labels come last, in the dataset's own order."""
    kept = set(folders)
    labelled = official_labels([x for dom in lines for part in dom.values() for x in part if x.cls in kept])
    ordered = sorted(folders, key=lambda c: (c not in labelled, labelled.get(c, 0), spec.class_order(c)))
    return ordered, [labelled.get(c, -1) for c in ordered] if labelled else []


def _list_notes(spec: DomainSpec, base: Path, lists: list[dict[int, Path]], assignments: dict[str, Assignment],
                unlisted: int, labels: list[int]) -> dict:
    """What the official lists said, stored with the splits; warnings for the images they leave out."""
    if not assignments:
        return {}
    notes: dict = {"split_files": [str(p) for li in lists for p in li.values()],
                   "split_overlap": sum(a.overlap for a in assignments.values()), "unlisted_images": unlisted}
    if labels:
        notes["official_labels"] = labels  # per class index, so that users can map back
    test_lists = {d: a.test_list for d, a in assignments.items() if a.test_list}
    if test_lists:
        notes["test_list"] = _test_list_kind(test_lists)
    test_only = [f"{d}/{x}" for d, a in assignments.items() for x in a.test_only]
    notes["test_only_images"] = len(test_only)
    if unlisted:
        warnings.warn(f"{unlisted} {spec.title} images under {base} are in no official split list and are left "
                      "out; remove the lists to use every image", stacklevel=3)
    if test_only:
        warnings.warn(f"{len(test_only)} {spec.title} image(s) under {base} are named only by a test list that holds "
                      f"the whole domain (train + val), not by the train or val list, and are left out, e.g. "
                      f"{test_only[:3]}; add them to a train or val list to use them", stacklevel=3)
    return notes


def _test_list_kind(test_lists: dict[str, str]) -> str:
    """'whole domain' (PACS: the test list repeats train + val), 'held out' (DomainNet), or which domain is which."""
    kinds = sorted(set(test_lists.values()))
    if len(kinds) == 1:
        return kinds[0]
    return "; ".join(f"{k} for {[d for d, v in test_lists.items() if v == k]}" for k in kinds)


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

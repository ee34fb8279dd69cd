"""Office-Caltech10: the 10 classes Office-31 and Caltech-256 share, in the domains amazon, caltech, dslr, webcam.

data.root may hold either layout, up to two folders below it (three through the archives' own folders):
- the pre-made copy `office_caltech_10/{amazon,caltech,dslr,webcam}/<class>/<image>` (a domain may keep its classes
  in `<domain>/images/<class>/`);
- the two original archives, side by side or apart: Office-31 (`domain_adaptation_images/` or `Office31/` or the
  domain folders themselves: `{amazon,dslr,webcam}/[images/]<class>/`, 31 classes) and Caltech-256
  (`256_ObjectCategories/NNN.name/`, 257 folders). Only the 10 classes are read, Caltech-256's from its fixed
  folders (back_pack: `003.backpack`, bike: `224.touring-bike`, ...); the listing root is the archives' common folder.
data.domains may leave a domain out: without caltech Caltech-256 is not needed, with [caltech] alone Office-31 is not.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from hpcfed.data.folders import classes_folder, list_images, need_root, recording_skipped, subdirs, warn_empty
from hpcfed.data.imagefolder import read_class_names
from hpcfed.data.listing import Listing, Row, rows_to_listing
from hpcfed.data.registry import DATASETS
from hpcfed.errors import DataError

TITLE = "Office-Caltech10"
DOMAINS = ("amazon", "caltech", "dslr", "webcam")
OFFICE_DOMAINS = ("amazon", "dslr", "webcam")
# Office-31 class folder -> the Caltech-256 folder of the same objects (Gong et al., CVPR 2012); the keys, in this
# order, are the class names and labels of every domain.
CALTECH256_FOLDERS = {
    "back_pack": "003.backpack",
    "bike": "224.touring-bike",
    "calculator": "027.calculator",
    "headphones": "101.head-phones",
    "keyboard": "045.computer-keyboard",
    "laptop_computer": "127.laptop-101",
    "monitor": "046.computer-monitor",
    "mouse": "047.computer-mouse",
    "mug": "041.coffee-mug",
    "projector": "238.video-projector",
}
CLASSES = tuple(CALTECH256_FOLDERS)
LAYOUT = ("office_caltech_10/{amazon,caltech,dslr,webcam}/<class>/<image>, or Office-31 "
          "(domain_adaptation_images/{amazon,dslr,webcam}/images/<class>/<image>) and Caltech-256 "
          "(256_ObjectCategories/NNN.name/<image>)")
# Folders the archives unpack into (compared by _key): the only ones searched three levels down.
ARCHIVE_FOLDERS = {"officecaltech10", "officecaltech", "domainadaptationimages", "office31", "office", "caltech256",
                   "256objectcategories", "caltech"}
OFFICE31_WHERE = "domain_adaptation_images/ or Office31/ holding {amazon,dslr,webcam}/[images/]<class>/"
CALTECH256_WHERE = "256_ObjectCategories/ holding 003.backpack/, 224.touring-bike/, ..."


def _key(name: str) -> str:
    """Folder names compared ignoring case, spaces and punctuation ('Back_Pack' = 'back_pack')."""
    return re.sub(r"[^a-z0-9]", "", name.lower())


def _caltech_name(folder: str) -> str | None:
    """'003.backpack' -> 'backpack', None for a folder without Caltech-256's number: matched by name, whatever the
    number, but never a plain 'calculator' (a DomainNet class)."""
    numbered = re.fullmatch(r"\d+\.(.+)", folder)
    return numbered.group(1) if numbered else None


def _premade_caltech(class_root: Path) -> bool:
    """A pre-made copy's caltech/ (or caltech/images/) folder, whose class folders may carry the Office names."""
    domain_dir = class_root.parent if class_root.name == "images" else class_root
    return _key(domain_dir.name) == "caltech"


def _office_classes(names: list[str]) -> dict[str, str]:
    """Class -> its folder among `names`, for the classes present."""
    by_key: dict[str, str] = {}
    for name in names:
        by_key.setdefault(_key(name), name)
    return {c: by_key[_key(c)] for c in CLASSES if _key(c) in by_key}


def _caltech_classes(class_root: Path, names: list[str]) -> dict[str, str]:
    """Class -> its Caltech-256 folder among the sub-folders `names` of `class_root` (the official one first)."""
    premade = _premade_caltech(class_root)
    found = {}
    for cls, official in CALTECH256_FOLDERS.items():
        hits = [n for n in names if _caltech_name(n) == _caltech_name(official) or (premade and _key(n) == _key(cls))]
        if hits:
            found[cls] = official if official in hits else hits[0]
    return found


def _caltech_candidate(folder: Path, names: list[str]) -> tuple[Path, dict[str, str]]:
    """Where `folder` keeps class folders (`images/` in a pre-made copy) and which of the 10 it holds."""
    if names == ["images"]:
        folder, names = folder / "images", subdirs(folder / "images")
    return folder, _caltech_classes(folder, names)


def _find_sources(root: Path, office_wanted: list[str], caltech_wanted: bool) -> tuple[Path | None, Path | None]:
    """The folder holding the most Office-31 domain folders (the wanted ones first) and the folder holding the most
    of the 10 Caltech-256 class folders; shallower wins ties. Both are looked for, so errors can name both.

    Every folder down to depth 2 is looked at, depth 3 only inside the archives' own folders: looking everywhere
    would list every class folder of every dataset under a shared $DATA."""
    office = caltech = None
    office_score, caltech_score = (0, 0), 0
    level = [root]
    for depth in range(4):
        children = []
        for folder in level:
            with recording_skipped():  # damaged neighbours of the dataset are not our business: no warning
                names = subdirs(folder)
                keys = {_key(n) for n in names}
                score = (len(keys & set(office_wanted)), len(keys & set(OFFICE_DOMAINS)))
                if score > office_score:
                    office, office_score = folder, score
                class_root, classes = _caltech_candidate(folder, names)
                if len(classes) > caltech_score:
                    caltech, caltech_score = class_root, len(classes)
            if not classes:  # the sub-folders of Caltech-256 are its classes: not searched
                children += [folder / n for n in names if depth < 2 or _key(n) in ARCHIVE_FOLDERS]
        if office_score[0] == len(office_wanted) and (caltech_score == len(CLASSES) or not caltech_wanted):
            break
        level = children
    return office, caltech


def _found(office: Path | None, caltech: Path | None) -> str:
    return (f"found {f'Office-31 at {office}' if office else 'no Office-31'} and "
            f"{f'Caltech-256 at {caltech}' if caltech else 'no Caltech-256'}")


def _require_sources(root: Path, office_domains: list[str], caltech_wanted: bool, office: Path | None,
                     caltech: Path | None) -> None:
    """The archives the chosen domains need are there, else say which one is missing, where it was looked for and
    how to do without it."""
    looked = f"in data.root {root} or up to three folders below it"
    if office_domains and not office:
        fix = f"extract Office-31 (domain_adaptation_images.tar.gz) under {root}"
        if caltech_wanted and caltech:
            fix += ", or read only the caltech domain with data.domains: [caltech]"
        seen = f" (Caltech-256 is at {caltech})" if caltech else ""
        raise DataError(f"{TITLE}: no Office-31 ({OFFICE31_WHERE}) {looked}{seen}; {fix}; the accepted layouts "
                        f"are {LAYOUT}")
    if caltech_wanted and not caltech:
        fix = f"extract Caltech-256 (256_ObjectCategories.tar) under {root}"
        if office_domains:
            fix += f", or leave the caltech domain out with data.domains: [{', '.join(office_domains)}]"
        seen = f" (Office-31 is at {office})" if office else ""
        raise DataError(f"{TITLE}: no Caltech-256 ({CALTECH256_WHERE}) and no pre-made caltech/<class>/ folder "
                        f"{looked}{seen}; {fix}")


def _class_roots(chosen: list[str], office: Path | None, caltech: Path | None) -> list[Path]:
    """Each chosen domain's folder of class folders; an Office-31 domain folder that is missing is an error."""
    present = {_key(n): n for n in subdirs(office)} if office else {}
    missing = [d for d in chosen if d != "caltech" and d not in present]
    if missing:
        raise DataError(f"{TITLE}: domain folder(s) {missing} do not exist in {office} (it holds "
                        f"{sorted(present.values())}; {_found(office, caltech)}); re-extract Office-31, or list the "
                        f"domains you have in data.domains")
    return [caltech if d == "caltech" else classes_folder(office / present[d]) for d in chosen]


def _class_folders(chosen: list[str], class_roots: list[Path], office: Path | None, caltech: Path | None
                   ) -> list[dict[str, str]]:
    """Each domain's class -> folder for the 10 classes; every missing folder is named in one error."""
    folders, problems, complete = [], [], []
    for domain, class_root in zip(chosen, class_roots, strict=True):
        names = subdirs(class_root)
        if domain == "caltech":
            found = _caltech_classes(class_root, names)
            lack = [f"{CALTECH256_FOLDERS[c]} (for '{c}')" for c in CLASSES if c not in found]
            archive = "Caltech-256"
        else:
            found = _office_classes(names)
            lack = [c for c in CLASSES if c not in found]
            archive = "Office-31"
        if lack:
            problems.append(f"{archive} class folder(s) {', '.join(lack)} in {class_root} (domain {domain})")
        else:
            complete.append(domain)
        folders.append(found)
    if problems:
        leave_out = f", or leave the domain out with data.domains: [{', '.join(complete)}]" if complete else ""
        raise DataError(f"{TITLE} needs {'; and '.join(problems)}; {_found(office, caltech)}; re-extract that archive "
                        f"(a copy with fewer classes is not Office-Caltech10){leave_out}")
    return folders


def _rows(class_roots: list[Path], folders: list[dict[str, str]], listing_root: Path) -> list[Row]:
    rows: list[Row] = []
    for di, (class_root, found) in enumerate(zip(class_roots, folders, strict=True)):
        images = {c: list_images(class_root / found[c]) for c in CLASSES}
        warn_empty([class_root / found[c] for c in CLASSES if not images[c]], listing_root)
        prefix = class_root.relative_to(listing_root).as_posix()
        rows += [(di, ci, f"{prefix}/{found[c]}/{n}".removeprefix("./"), -1) for ci, c in enumerate(CLASSES)
                 for n in images[c]]
    return rows


def _chosen_domains(domains: list[str] | None) -> list[str]:
    if not domains:
        return list(DOMAINS)
    unknown = [d for d in domains if _key(d) not in DOMAINS]
    if unknown:
        raise DataError(f"unknown {TITLE} domain(s) {unknown}; choose from {list(DOMAINS)}")
    chosen = [_key(d) for d in domains]
    if len(set(chosen)) < len(chosen):
        raise DataError(f"data.domains {domains} names a domain twice; list each domain once")
    return chosen


def read_office_caltech10(root: str | Path | None, domains: list[str] | None = None,
                          class_names_file: str | Path | None = None) -> Listing:
    root = need_root(root, TITLE, LAYOUT)
    chosen = _chosen_domains(domains)
    office_domains = [d for d in chosen if d != "caltech"]
    office, caltech = _find_sources(root, office_domains, "caltech" in chosen)
    _require_sources(root, office_domains, "caltech" in chosen, office, caltech)
    class_roots = _class_roots(chosen, office, caltech)
    folders = _class_folders(chosen, class_roots, office, caltech)
    used = ([office] if office_domains else []) + ([caltech] if "caltech" in chosen else [])
    listing_root = Path(os.path.commonpath(used))  # rows_to_listing takes one root: the archives' common folder
    class_names = (read_class_names(Path(class_names_file), list(CLASSES)) if class_names_file
                   else [c.replace("_", " ") for c in CLASSES])  # CoOp's rule: 'back_pack' -> 'back pack'
    return rows_to_listing(listing_root, _rows(class_roots, folders, listing_root), class_names,
                           tuple(chosen))


DATASETS.register("office_caltech10", read_office_caltech10)

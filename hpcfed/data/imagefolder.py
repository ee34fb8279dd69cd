"""Generic ImageFolder reader: root/[domain/]class/image, with an optional class-name file."""

from __future__ import annotations

from pathlib import Path

from hpcfed.data.folders import IMAGE_SUFFIXES, list_images, require_folder, subdirs, warn_empty
from hpcfed.data.listing import Listing, rows_to_listing
from hpcfed.data.registry import DATASETS
from hpcfed.errors import DataError


def read_class_names(path: Path, folders: list[str]) -> list[str]:
    """A class-name file maps folder names to prompt names: `folder<TAB>name` or `folder name` per line."""
    if not path.is_file():
        raise DataError(f"class-name file {path} does not exist; remove 'class_names_file' or create it")
    mapping = {}
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip() or line.startswith("#"):
            continue
        key, sep, name = line.partition("\t") if "\t" in line else line.partition(" ")
        if not sep or not name.strip():
            raise DataError(f"{path}:{lineno}: expected 'folder<TAB>class name', got {line!r}")
        mapping[key.strip()] = name.strip()
    missing = [f for f in folders if f not in mapping]
    if missing:
        raise DataError(f"{path} has no name for class folder(s) {missing[:5]}; add a line per folder")
    return [mapping[f] for f in folders]


def default_class_name(folder: str) -> str:
    """'ice_cream' -> 'ice cream', '001.Black_footed_Albatross' -> 'Black footed Albatross'."""
    name = folder.split(".", 1)[1] if folder[:3].isdigit() and "." in folder else folder
    return name.replace("_", " ").replace("-", " ").strip()


def read_imagefolder(
    root: str | Path,
    domains: list[str] | None = None,
    domain_level: bool = False,
    class_names_file: str | Path | None = None,
) -> Listing:
    """List an ImageFolder tree. With `domain_level` the first level is the domain (all or `domains`)."""
    root = require_folder(Path(root).expanduser(), "dataset root", "set data.root to the folder holding the images")
    if domains and not domain_level:
        domain_level = True
    domain_dirs = [root] if not domain_level else [root / d for d in (domains or subdirs(root))]
    if not domain_dirs:
        raise DataError(f"dataset root {root} has no domain folders; expected {root}/<domain>/<class>/<image>, or "
                        "set data.root to the folder that holds them")
    if domain_level:
        fix = _domains_fix(root)
        for d in domain_dirs:
            require_folder(d, "domain folder", fix)
    folders = _common_classes(domain_dirs)
    images = {(di, ci): list_images(d / c) for di, d in enumerate(domain_dirs) for ci, c in enumerate(folders)}
    rows = [(di, ci, str((domain_dirs[di] / folders[ci] / name).relative_to(root)), -1)
            for (di, ci), names in images.items() for name in names]
    if not rows:
        raise DataError(f"no images ({', '.join(sorted(IMAGE_SUFFIXES))}) found in the class folders under {root}; "
                        "put the images in <class>/ folders there, or set data.root to the folder holding them")
    warn_empty([domain_dirs[di] / folders[ci] for (di, ci), names in images.items() if not names], root)
    class_names = read_class_names(Path(class_names_file), folders) if class_names_file else \
        [default_class_name(f) for f in folders]
    domain_names = tuple(d.name for d in domain_dirs) if domain_level else ("all",)
    return rows_to_listing(root, rows, class_names, domain_names)


def _domains_fix(root: Path) -> str:
    have = subdirs(root)
    if not have:
        return f"{root} holds no folders at all: set data.root to the folder of <domain>/<class>/<image>"
    return f"set data.domains to the available domains under {root}: {have}"


def _common_classes(domain_dirs: list[Path]) -> list[str]:
    """The class folders every domain has (the same in each, or a DataError naming the difference)."""
    folders = None
    for d in domain_dirs:
        found = subdirs(d)
        if not found:
            raise DataError(f"{d} has no class folders; expected {d}/<class>/<image>: put each class's images in "
                            "a folder named after it, or set data.root to the folder that holds such folders")
        if folders is None:
            folders = found
        elif found != folders:
            only_here, only_first = sorted(set(found) - set(folders)), sorted(set(folders) - set(found))
            raise DataError(
                f"classes differ between domains: {d} has extra {only_here[:5]} and lacks {only_first[:5]} "
                f"compared with {domain_dirs[0]}; every domain needs the same class folders"
            )
    assert folders is not None
    return folders


@DATASETS.register("imagefolder")
def read_imagefolder_dataset(root: str | None, domains: list[str] | None, class_names_file: str | None) -> Listing:
    """Dataset `imagefolder`: data.root holds class folders, or domain folders of class folders (data.domains)."""
    if not root:
        raise DataError("data.root is required for dataset 'imagefolder'; set it to the folder of class folders")
    return read_imagefolder(root, domains=domains, domain_level=bool(domains), class_names_file=class_names_file)

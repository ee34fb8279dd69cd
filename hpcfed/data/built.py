"""The one reader of the datasets that set-up builds into the data cache (`make data`, hpcfed.builders).

A built tree is `<root>/<domain>/<class>/<image>` plus `classnames.txt`, and is complete once its STAMP file
exists: every builder writes the stamp last and renames the finished tree into place in one step. Reading
needs nothing from the builders, so this module never imports hpcfed.builders.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from functools import partial
from pathlib import Path

import numpy as np

from hpcfed.data.folders import subdirs
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.data.listing import Listing
from hpcfed.data.registry import DATASETS
from hpcfed.errors import DataError

STAMP = ".complete"  # JSON: what the tree was built from; its presence marks the build finished


@dataclass(frozen=True)
class BuiltSet:
    """How to find and read one built dataset."""

    title: str  # for messages
    folder: str  # the tree's default folder under data_cache_dir()
    command: str  # the command that builds it (takes --out)
    build_order: str | None = None  # stamp key listing the built domains in the builder's order; requests follow it
    splits: tuple[tuple[str, int], ...] = ()  # official split folders -> Listing.subset code; then one domain
    split_domain: str = "all"  # the name of that one domain
    domain_option: str | None = None  # the builder's option that chooses which domains to build


def _builder(module: str, *args: str) -> str:
    return " ".join(("python -m", f"hpcfed.builders.{module}", *args))


BUILT: dict[str, BuiltSet] = {
    "emoji_domains": BuiltSet("Emoji-Domains", "emoji_domains", _builder("emoji_domains"), domain_option="--styles"),
    "digits5_offline": BuiltSet("Digits-5-offline", "digits5_offline", _builder("digits5"), build_order="domains",
                                domain_option="--domains"),
    # train/test is the official split (Listing.subset 0 train, 2 test), not a domain shift
    "fashion_mnist": BuiltSet("Fashion-MNIST", "fashion_mnist", _builder("mnist_like", "fashion_mnist"),
                              splits=(("train", 0), ("test", 2))),
    "animal_mnist": BuiltSet("Animal-MNIST", "animal_mnist", _builder("mnist_like", "animal_mnist")),
    "tuxpaint": BuiltSet("Tux Paint photos", "tuxpaint", _builder("tuxpaint")),
    "openclipart": BuiltSet("Openclipart", "openclipart", _builder("openclipart")),
    "coarse_domains": BuiltSet("Coarse Photo/Clipart/Emoji/Line-art", "coarse_domains", _builder("coarse_domains")),
}


def data_cache_dir() -> Path:
    """Where set-up builds the offline datasets (outside git): $HPCFED_DATA or ~/.cache/hpcfed/data."""
    default = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "hpcfed" / "data"
    return Path(os.environ.get("HPCFED_DATA", default)).expanduser()


def read_stamp(tree: Path) -> dict | None:
    """The build stamp of a tree, or None when there is none (never built, or the build did not finish)."""
    try:
        return json.loads((tree / STAMP).read_text())
    except (OSError, ValueError):
        return None


def built_root(name: str, root: str | Path | None = None) -> Path:
    """The tree of built dataset `name`: `root` when given, else its folder in the data cache."""
    return Path(root).expanduser() if root else data_cache_dir() / BUILT[name].folder


def built_domains(name: str, root: str | Path | None = None) -> tuple[str, ...]:
    """The domains the complete tree of `name` has (refusing an unfinished or missing tree with the fix)."""
    spec, base = BUILT[name], built_root(name, root)
    stamp = read_stamp(base)
    if stamp is None:
        default = " (or 'make data')" if base == data_cache_dir() / spec.folder else ""
        raise DataError(
            f"{spec.title} is not built at {base} (no {STAMP} stamp: never built, or the build did not finish); "
            f"run '{spec.command} --out {base}'{default} once on this machine"
        )
    if spec.splits:
        return (spec.split_domain,)
    listed = stamp.get(spec.build_order) if spec.build_order else None
    if isinstance(listed, list):
        return tuple(listed)
    # the domain folders, in ImageFolder's order (hidden ones are a build in progress or a tree moved aside)
    return tuple(subdirs(base))


def read_built(name: str, root: str | Path | None = None, domains: list[str] | None = None,
               class_names_file: str | Path | None = None) -> Listing:
    """Registry reader of built dataset `name`: the requested domains (all when None) of its complete tree,
    with the class names of its classnames.txt unless another file is given."""
    spec, base = BUILT[name], built_root(name, root)
    have = built_domains(name, root)
    missing = [d for d in domains or [] if d not in have]
    if missing:
        rebuild = ""
        if spec.domain_option:
            every = ",".join(dict.fromkeys([*have, *missing]))
            rebuild = (f", or build them too ('{spec.command} --help' lists what it can build): "
                       f"'{spec.command} --out {base} {spec.domain_option} {every}'")
        raise DataError(f"{spec.title} at {base} has no domain(s) {missing}; choose from {list(have)}{rebuild}")
    if spec.build_order:  # the listing (and its digest) keeps the builder's domain order, however asked
        wanted = [d for d in have if d in (domains or have)]
    else:
        wanted = list(domains or have)
    names = Path(class_names_file) if class_names_file else base / "classnames.txt"
    if not spec.splits:
        return read_imagefolder(base, domains=wanted, domain_level=True, class_names_file=names)
    code = dict(spec.splits)  # the split folders are read as domains, then folded into one domain and `subset`
    by_split = read_imagefolder(base, domains=list(code), domain_level=True, class_names_file=names)
    subset = np.asarray([code[s] for s in by_split.domain_names], dtype=np.int64)[by_split.domains]
    return Listing(root=by_split.root, paths=by_split.paths, labels=by_split.labels,
                   domains=np.zeros(len(by_split), dtype=np.int64), class_names=by_split.class_names,
                   domain_names=(spec.split_domain,), subset=subset)


for _name in BUILT:
    DATASETS.register(_name, partial(read_built, _name))

"""Official split lists of the multi-domain benchmarks (DomainNet's `<domain>_{train,test}.txt`, PACS's
`<domain>_{train,crossval,test}_kfold.txt`): lines `<domain>/<class>/<image> <label>`.

Two things come out of them: the subset of each image (0 train, 1 val, 2 test, as in `Listing.subset`) and the
official label of each class folder, so that class indices match other code that reads the same lists.
"""

from __future__ import annotations

import warnings
from collections import Counter, defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import NamedTuple

from hpcfed.errors import DataError

TRAIN, VAL, TEST = 0, 1, 2  # values of Listing.subset


class ListLine(NamedTuple):  # a tuple: DomainNet's lists have 586,575 lines
    path: Path  # the list file, for messages
    lineno: int
    cls: str  # class folder
    name: str  # image file name
    label: int | None  # the label column; None when the line has none

    @property
    def where(self) -> str:
        return f"{self.path}:{self.lineno}"


def read_list(path: Path) -> list[ListLine]:
    """The lines of one split list `<dom>/<class>/<file> <label>`; any prefix before the class folder (absolute,
    `kfold/`) is ignored."""
    out = []
    for lineno, line in enumerate(path.read_text().splitlines(), 1):
        line = line.strip()
        if not line:
            continue
        rel, *label = line.rsplit(None, 1)
        if not label or not label[0].lstrip("-").isdigit():  # no label column: the whole line is the path
            rel, label = line, []
        parts = rel.replace("\\", "/").split("/")
        if len(parts) < 3:
            raise DataError(f"{path}:{lineno}: expected '<domain>/<class>/<image> <label>', got {line!r}; "
                            "use the split list that came with the dataset")
        out.append(ListLine(path, lineno, parts[-2], parts[-1], int(label[0]) if label else None))
    return out


# ---- official labels ------------------------------------------------------------------------------------------


def official_labels(lines: list[ListLine]) -> dict[str, int]:
    """The label the lines give each class folder. Where a folder's lines disagree (one PACS copy gives a dog
    image label 0 instead of 1) the majority wins, with one warning; two folders with one label are an error."""
    votes: dict[str, Counter] = defaultdict(Counter)
    for line in lines:
        if line.label is not None:
            votes[line.cls][line.label] += 1
    chosen = {cls: counts.most_common(1)[0][0] for cls, counts in votes.items()}
    odd = [line for line in lines if line.label is not None and line.label != chosen[line.cls]]
    if odd:
        e = odd[0]
        warnings.warn(f"{len(odd)} line(s) of the split lists give an image a label other than most lines of its "
                      f"class folder do, e.g. {e.where} gives {e.cls}/{e.name} label {e.label} where "
                      f"{votes[e.cls][chosen[e.cls]]} lines give {e.cls} label {chosen[e.cls]}; the majority label is "
                      "used and every image keeps its folder's class", stacklevel=3)
    _refuse_shared_labels(chosen, lines)
    return chosen


def _refuse_shared_labels(chosen: dict[str, int], lines: list[ListLine]) -> None:
    holders: dict[int, list[str]] = defaultdict(list)
    for cls, label in sorted(chosen.items()):
        holders[label].append(cls)
    for label, folders in sorted(holders.items()):
        if len(folders) > 1:
            a, b = (next(x for x in lines if x.cls == f and x.label == label) for f in folders[:2])
            raise DataError(f"the split lists give label {label} to two class folders, {a.cls!r} ({a.where}) and "
                            f"{b.cls!r} ({b.where}); the lists and the class folders do not belong together: "
                            "rename the folders as the lists name them, or use the lists that came with the dataset")


# ---- subsets --------------------------------------------------------------------------------------------------


@dataclass
class Assignment:
    """What one domain's lists say about its images on disk."""

    subset: dict[tuple[str, str], int] = field(default_factory=dict)  # (class, file) -> 0 train, 1 val, 2 test
    overlap: int = 0  # images named twice by lists meant to be disjoint (the first list keeps them)
    test_list: str | None = None  # "held out" (DomainNet), "whole domain" (PACS: it repeats train + val), None
    test_only: list[str] = field(default_factory=list)  # "class/file" named only by such a test list: left out


def assign_subsets(lists: dict[int, list[ListLine]], on_disk: set[tuple[str, str]], only: set[str],
                   class_root: Path) -> Assignment:
    """Subset of each (class, file) the lists name, lists in precedence order (train, val, test). An image the
    lists name but the disk lacks is an error; with `only`, lines of other classes are skipped (DomainNet-10
    reads the full DomainNet lists). A test list whose images are mostly in the train and val lists holds the
    whole domain (PACS, meant for leave-one-domain-out) and gives no test part."""
    done = Assignment()
    for subset, lines in lists.items():
        lines = [line for line in lines if not only or line.cls in only]
        _require_on_disk(lines, on_disk, class_root)
        keys = [(line.cls, line.name) for line in lines]
        if subset == TEST:
            done.test_list = "whole domain" if _mostly_named_before(keys, done.subset) else "held out"
        if done.test_list == "whole domain":
            done.test_only = sorted({f"{c}/{n}" for c, n in keys if (c, n) not in done.subset})
            continue
        for key in keys:
            if key in done.subset:
                done.overlap += 1
            else:
                done.subset[key] = subset
    return done


def _mostly_named_before(keys: list[tuple[str, str]], assigned: dict[tuple[str, str], int]) -> bool:
    return 2 * sum(key in assigned for key in set(keys)) > len(set(keys))


def _require_on_disk(lines: list[ListLine], on_disk: set[tuple[str, str]], class_root: Path) -> None:
    missing = [f"{line.cls}/{line.name} (line {line.lineno})" for line in lines if (line.cls, line.name) not in on_disk]
    if missing:
        raise DataError(
            f"{lines[0].path} names {len(missing)} image(s) that do not exist under {class_root}, e.g. {missing[:3]}; "
            "the images and the split list do not belong together: re-extract the domain or remove the list"
        )

"""Listing the folders of a data root without a traceback or a hang when the tree is damaged.

Readers list one folder at a time and never recurse, so a symlink loop cannot hang them; but a loop
(`ln -s .. loop`) could pass for a class folder, a broken link vanished silently and a folder this user cannot
read raised a bare PermissionError. Here each such entry is skipped and recorded; `load_listing` reports them
in one warning and the split stage stores them with the splits (notes['skipped_paths'])."""

from __future__ import annotations

import errno
import os
import stat
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar
from pathlib import Path

from hpcfed.errors import DataError

IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg", ".bmp", ".gif", ".webp", ".tif", ".tiff"}

# "path (why)" of every entry skipped by the listing in progress; None outside `recording_skipped`.
_skipped: ContextVar[dict[str, None] | None] = ContextVar("skipped", default=None)


@contextmanager
def recording_skipped() -> Iterator[dict[str, None]]:
    """Collect the entries skipped inside the block (an ordered set: two readers of one folder record it once)."""
    token = _skipped.set({})
    try:
        yield _skipped.get()
    finally:
        _skipped.reset(token)


def note_skipped(path: str | Path, why: str) -> None:
    found = _skipped.get()
    if found is None:  # a reader called directly, not through load_listing: say it at once
        warnings.warn(f"skipped {path}: {why}; fix or remove it", stacklevel=3)
    else:
        found[f"{path} ({why})"] = None


def _entries(folder: Path) -> list[os.DirEntry]:
    """The entries of `folder`; none (and a note) when it cannot be read."""
    try:
        with os.scandir(folder) as it:
            return list(it)
    except OSError as e:
        note_skipped(folder, f"cannot be read: {e.strerror or e}")
        return []


def _link_problem(entry: os.DirEntry) -> str | None:
    """Why a symbolic link cannot be used: it leads nowhere, or back to a folder that holds it. Costs a stat
    for links only (entry types come free with the listing)."""
    if not entry.is_symlink():
        return None
    try:
        target = entry.stat()
    except OSError as e:
        return "symlink loop" if e.errno == errno.ELOOP else "broken symlink"
    if stat.S_ISDIR(target.st_mode):
        real, here = os.path.realpath(entry.path), os.path.realpath(os.path.dirname(entry.path))
        if os.path.commonpath([real, here]) == real:
            return "symlink loop: it points at a folder that holds it"
    return None


def _usable(folder: Path) -> Iterator[os.DirEntry]:
    """The entries of `folder` minus the links that cannot be used (noted)."""
    for entry in _entries(folder):
        problem = _link_problem(entry)
        if problem:
            note_skipped(entry.path, problem)
        else:
            yield entry


def subdirs(folder: Path) -> list[str]:
    """Visible sub-folders of `folder` (links to folders count), sorted."""
    return sorted(e.name for e in _usable(folder) if not e.name.startswith(".") and e.is_dir())


def list_images(folder: Path) -> list[str]:
    """Image file names in `folder`, sorted; scandir's entry types avoid one stat per file on parallel file
    systems."""
    return sorted(e.name for e in _usable(folder)
                  if os.path.splitext(e.name)[1].lower() in IMAGE_SUFFIXES and e.is_file())


def classes_folder(domain_dir: Path) -> Path:
    """Where a domain's class folders are: Office-31's archive keeps them one level down, in <domain>/images/."""
    return domain_dir / "images" if subdirs(domain_dir) == ["images"] else domain_dir


def warn_empty(class_folders: list[Path], root: Path) -> None:
    """Class folders without an image are kept (the class is then learnt from the other domains, or not at all),
    but said: an empty folder is more often a failed copy than a choice. A folder that cannot be read is noted
    as skipped already."""
    class_folders = [f for f in class_folders if _listable(f)]
    if class_folders:
        shown = ", ".join(str(f.relative_to(root)) for f in class_folders[:5])
        warnings.warn(f"{len(class_folders)} class folder(s) under {root} hold no images: {shown}; add the images "
                      "or remove the folder(s)", stacklevel=3)


def _listable(folder: Path) -> bool:
    try:
        with os.scandir(folder):
            return True
    except OSError:
        return False


def require_folder(path: Path, what: str, fix: str) -> Path:
    """`path` is a folder this process can list, else a DataError naming it, what is wrong, and `fix`."""
    if not path.exists():
        raise DataError(f"{what} {path} does not exist; {fix}")
    if not path.is_dir():
        raise DataError(f"{what} {path} is a file, not a folder; {fix}")
    try:
        with os.scandir(path):
            pass
    except OSError as e:  # not _listable: the error's text says why
        raise DataError(f"{what} {path} cannot be read ({e.strerror or e}); make it readable (chmod u+rx), or "
                        f"{fix}") from None
    return path


def need_root(root: str | Path | None, title: str, layout: str) -> Path:
    """data.root of a dataset, checked to be a readable folder."""
    if not root:
        raise DataError(f"data.root is required for {title}; set it to the folder holding {layout}")
    return require_folder(Path(root).expanduser(), f"{title} root", f"set data.root to the folder holding {layout}")

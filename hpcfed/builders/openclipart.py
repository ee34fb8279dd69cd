"""Openclipart (Debian `openclipart-svg`, public domain) as a "Clipart" domain on coarse classes, plus the
topical-folder SVG list the tiny-CLIP distillation trains on (unlabelled).

Layout of the built domain: <out>/clipart/<class>/<svg stem>.png (on white, SIZE px) + classnames.txt.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from hpcfed.builders.fetch import DebFetcher, apt_download, deb_extract, deb_version
from hpcfed.builders.tree import (
    building,
    default_root,
    out_only_main,
    process_pool,
    read_stamp,
    stamp_matches,
    write_classnames,
    write_stamp,
)
from hpcfed.data.built import BUILT
from hpcfed.errors import DataError

STAMP_FORMAT = 2  # 2: SVG sizes in mm/pt converted to px (about half the files failed before)
DEB = "openclipart-svg"
SVG_DIR = "usr/share/openclipart/svg"
DOMAIN = "clipart"
SIZE = 128
COMMAND = BUILT["openclipart"].command

# (class folder, prompt name, svg folders; a trailing '/.' means that folder's own files only, not sub-folders)
CLASSES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("mammal", "mammal", ("animals/mammals",)),
    ("bird", "bird", ("animals/birds",)),
    ("insect", "insect", ("animals/bugs",)),
    ("fish", "fish", ("animals/fish",)),
    ("fruit", "fruit", ("food/fruit",)),
    ("vegetable", "vegetable", ("food/vegetables",)),
    ("flower", "flower", ("plants/flowers",)),
    ("building", "building", ("buildings/homes", "buildings/.")),
    ("instrument", "musical instrument", ("recreation/music",)),
    ("vehicle", "vehicle", ("transportation/vehicles",)),
    ("tool", "tool", ("tools/.",)),
)
# Topical folders for unlabelled training: objects, not shapes, patterns, flags, UI icons, signs or text.
TRAIN_FOLDERS = ("animals", "food", "plants", "buildings", "people/clothing", "tools", "transportation/vehicles",
                 "transportation/boating", "transportation/.", "recreation/music", "recreation/sports",
                 "recreation/toys", "electronics", "computer/hardware", "office", "containers", "science",
                 "signs_and_symbols/weather", "education")


def svgs_in(root: Path, folders: Sequence[str]) -> list[Path]:
    out = set()
    for f in folders:
        if f.endswith("/."):
            out.update((root / f[:-2]).glob("*.svg"))
        else:
            out.update((root / f).rglob("*.svg"))
    return sorted(out)


def caption(path: Path) -> str:
    """'apple_bitten_dan_gerhard_01.svg' -> 'apple bitten dan gerhard' (author names stay: cheap, harmless)."""
    words = [w for w in path.stem.replace("-", "_").split("_") if w and not w.isdigit()]
    return " ".join(words[:4]).lower()


def _render(job: tuple[str, int]) -> np.ndarray | None:
    path, size = job
    return _render_text((Path(path).read_text(errors="replace"), size))


PX_PER = {"px": 1.0, "pt": 4 / 3, "pc": 16.0, "mm": 96 / 25.4, "cm": 96 / 2.54, "in": 96.0}
_SIZE_ATTR = re.compile(r'\b(width|height)="\s*([0-9.]+)\s*(px|pt|pc|mm|cm|in)\s*"')


def px_sizes(svg: str) -> str:
    """Root width/height in mm, pt, ... -> px: resvg rejects many of the old Inkscape files' units otherwise."""
    start = svg.find("<svg")
    end = svg.find(">", start)
    if start < 0 or end < 0:
        return svg
    head = _SIZE_ATTR.sub(lambda m: f'{m[1]}="{float(m[2]) * PX_PER[m[3]]:.2f}"', svg[start:end])
    return svg[:start] + head + svg[end:]


def _render_text(job: tuple[str, int]) -> np.ndarray | None:
    from hpcfed.builders.emoji_domains import render_svg
    from hpcfed.builders.tuxpaint import square_on_white

    text, size = job
    try:
        if len(text) > 2_000_000:  # a few huge traced SVGs take minutes each; not worth it
            return None
        return np.asarray(square_on_white(render_svg(px_sizes(text), size), size))  # SVGs need not be square
    except Exception:  # malformed SVG: skip it, the set is large
        return None


def render_many(paths: Sequence[Path], size: int, processes: int = 2) -> tuple[np.ndarray, list[int]]:
    """uint8 [N, size, size, 3] of the SVGs that rendered, and their indices into `paths`."""
    with process_pool(processes) as pool:
        imgs = pool.map(_render, [(str(p), size) for p in paths], chunksize=8)
    return _stack(imgs, size)


def render_svg_texts(svgs: Sequence[str], size: int, processes: int = 2) -> tuple[np.ndarray, list[int]]:
    """As render_many, for SVG documents in memory."""
    with process_pool(processes) as pool:
        imgs = pool.map(_render_text, [(s, size) for s in svgs], chunksize=16)
    return _stack(imgs, size)


def _stack(imgs: list[np.ndarray | None], size: int) -> tuple[np.ndarray, list[int]]:
    keep = [i for i, im in enumerate(imgs) if im is not None and im.shape == (size, size, 3) and im.min() < 250]
    if not keep:
        return np.zeros((0, size, size, 3), np.uint8), keep
    return np.stack([imgs[i] for i in keep]), keep


def svg_root(downloads: Path, fetch_deb: DebFetcher = apt_download) -> tuple[Path, str]:
    deb = fetch_deb(DEB, downloads)
    return deb_extract(deb) / SVG_DIR, f"{DEB} {deb_version(deb)}"


def build(out: Path | str | None = None, *, downloads: Path | None = None, fetch_deb: DebFetcher = apt_download,
          svg_dir: Path | None = None) -> Path:
    """Build the Clipart domain; `svg_dir` (an openclipart svg tree) replaces the Debian download, e.g. in tests."""
    from PIL import Image

    out = Path(out).expanduser().resolve() if out else default_root("openclipart")
    source = "local"
    if svg_dir is None:
        svg_dir, source = svg_root(Path(downloads) if downloads else out.parent / "downloads", fetch_deb)
    key = {"format": STAMP_FORMAT, "dataset": "openclipart", "source": source, "size": SIZE}
    if stamp_matches(out, key):
        return out
    with building(out) as tmp:
        counts = {}
        for folder, _, subdirs in CLASSES:
            paths = svgs_in(Path(svg_dir), subdirs)
            (tmp / DOMAIN / folder).mkdir(parents=True)
            imgs, keep = render_many(paths, SIZE) if paths else (np.zeros((0,)), [])
            for im, i in zip(imgs, keep, strict=True):
                Image.fromarray(im).save(tmp / DOMAIN / folder / f"{paths[i].stem}.png")
            counts[folder] = len(keep)
        if not sum(counts.values()):
            raise DataError(f"no SVG under {svg_dir} rendered; is it an openclipart svg tree?")
        write_classnames(tmp, [(f, n) for f, n, _ in CLASSES])
        (tmp / "ATTRIBUTION.md").write_text(
            f"# Openclipart clip art\n\nBuilt locally by `{COMMAND}` from Debian `{source}`: public domain\n"
            "(Openclipart dedicates all clip art to the public domain; see the package's copyright file).\n")
        write_stamp(tmp, key | {"counts": counts})
    return out


def summary(out: Path) -> str:
    counts = (read_stamp(out) or {}).get("counts", {})
    return f"openclipart at {out}: {sum(counts.values())} images, " + ", ".join(f"{k} {v}" for k, v in counts.items())


def main(argv: Sequence[str] | None = None) -> int:
    return out_only_main(__doc__, build, summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())

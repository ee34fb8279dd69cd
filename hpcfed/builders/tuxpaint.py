"""Tux Paint photo stamps (Debian `tuxpaint-stamps-default`, GPL-2) as a 13-class "Photo" domain.

Evaluation only: GPL-2 images are built locally at set-up time, never committed and never trained on.
Layout: <out>/photo/<class>/<stamp>.png (on white, padded to a square, SIZE px) + classnames.txt.
Folder -> class mapping of offline-data.md §1.3 A (coarse classes shared with the Clipart/Emoji domains).
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from hpcfed.builders.fetch import DebFetcher, apt_download, deb_extract, deb_version
from hpcfed.builders.tree import (
    building,
    default_root,
    out_only_main,
    read_stamp,
    stamp_matches,
    write_classnames,
    write_stamp,
)
from hpcfed.data.built import BUILT
from hpcfed.errors import DataError

STAMP_FORMAT = 1
DEB = "tuxpaint-stamps-default"
STAMPS_DIR = "usr/share/tuxpaint/stamps"
DOMAIN = "photo"
SIZE = 224
COMMAND = BUILT["tuxpaint"].command

# (class folder, prompt name, stamp sub-folders whose PNGs, recursively, belong to it)
CLASSES: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("mammal", "mammal", ("animals/mammals",)),
    ("bird", "bird", ("animals/birds",)),
    ("insect", "insect", ("animals/insects",)),
    ("fish", "fish", ("animals/fish",)),
    ("fruit", "fruit", ("food/fruit",)),
    ("vegetable", "vegetable", ("food/vegetables",)),
    ("flower", "flower", ("plants/flowers",)),
    ("building", "building", ("town/houses", "town/monuments")),
    ("hat", "hat", ("clothes/hats",)),
    ("tool", "tool", ("household/tools",)),
    ("instrument", "musical instrument", ("hobbies/music",)),
    ("dishes", "dish", ("household/dishes",)),
    ("vehicle", "vehicle", ("vehicles",)),
)


def square_on_white(img, size: int = SIZE):
    """RGBA cut-out -> RGB on white, aspect kept, padded to a centred size x size square."""
    from PIL import Image

    rgba = img.convert("RGBA")
    rgba.thumbnail((size, size), Image.Resampling.LANCZOS)
    canvas = Image.new("RGBA", (size, size), (255, 255, 255, 255))
    canvas.alpha_composite(rgba, ((size - rgba.width) // 2, (size - rgba.height) // 2))
    return canvas.convert("RGB")


def stamp_files(stamps: Path) -> dict[str, list[Path]]:
    """class folder -> sorted PNG stamps (the `_mirror`/`_back` variants are other views of the same stamp)."""
    out = {}
    for folder, _, subdirs in CLASSES:
        files = sorted({p for s in subdirs for p in (stamps / s).rglob("*.png")})
        out[folder] = [p for p in files if not p.stem.endswith(("_mirror", "_back"))]
    return out


def build(out: Path | str | None = None, *, downloads: Path | None = None, fetch_deb: DebFetcher = apt_download,
          stamps_dir: Path | None = None) -> Path:
    """Build the Photo domain; `stamps_dir` (a stamps tree) replaces the Debian download, e.g. in tests."""
    from PIL import Image

    out = Path(out).expanduser().resolve() if out else default_root("tuxpaint")
    source = "local"
    if stamps_dir is None:
        deb = fetch_deb(DEB, Path(downloads) if downloads else out.parent / "downloads")
        stamps_dir, source = deb_extract(deb) / STAMPS_DIR, f"{DEB} {deb_version(deb)}"
    key = {"format": STAMP_FORMAT, "dataset": "tuxpaint", "source": source, "size": SIZE}
    if stamp_matches(out, key):
        return out
    files = stamp_files(Path(stamps_dir))
    if not any(files.values()):
        raise DataError(f"no PNG stamps found under {stamps_dir}; is it a Tux Paint stamps tree?")
    with building(out) as tmp:
        counts = {}
        for folder, paths in files.items():
            (tmp / DOMAIN / folder).mkdir(parents=True)
            for i, p in enumerate(paths):
                square_on_white(Image.open(p)).save(tmp / DOMAIN / folder / f"{i:03d}_{p.stem}.png")
            counts[folder] = len(paths)
        write_classnames(tmp, [(f, n) for f, n, _ in CLASSES])
        (tmp / "ATTRIBUTION.md").write_text(
            "# Tux Paint photo stamps: source and licence\n\n"
            f"Built locally by `{COMMAND}` from Debian `{source}`. GPL-2 (see the package's copyright file):\n"
            "evaluation only, never commit these images and never train a shipped model on them.\n")
        write_stamp(tmp, key | {"counts": counts})
    return out


def summary(out: Path) -> str:
    counts = (read_stamp(out) or {}).get("counts", {})
    return f"tuxpaint at {out}: {sum(counts.values())} images, " + ", ".join(f"{k} {v}" for k, v in counts.items())


def main(argv: Sequence[str] | None = None) -> int:
    return out_only_main(__doc__, build, summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())



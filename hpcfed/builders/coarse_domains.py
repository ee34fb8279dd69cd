"""Photo / Clipart / Emoji / Line-art: a small DomainNet-like benchmark on 11 shared coarse classes.

Built from already built trees (no download of its own): Tux Paint photos (`hpcfed.builders.tuxpaint`, GPL-2,
evaluation only), Openclipart (`hpcfed.builders.openclipart`, public domain) and Emoji-Domains
(`hpcfed.builders.emoji_domains`: 'emoji' = Noto colour, 'lineart' = Fluent high-contrast). Images are copied into
<out>/<domain>/<class>/ so the tree reads like any ImageFolder. Domains whose source is not built are left out.
"""

from __future__ import annotations

import shutil
from collections.abc import Sequence
from pathlib import Path

from hpcfed.builders.tree import building, default_root, out_only_main, read_stamp, write_classnames, write_stamp
from hpcfed.data.built import BUILT
from hpcfed.errors import DataError

STAMP_FORMAT = 1
COMMAND = BUILT["coarse_domains"].command
# class folder, prompt name, Emoji-Domains class folder (emoji-datasource subcategory slug)
CLASSES: tuple[tuple[str, str, str], ...] = (
    ("mammal", "mammal", "animal-mammal"),
    ("bird", "bird", "animal-bird"),
    ("insect", "insect", "animal-bug"),
    ("fish", "fish", "animal-marine"),
    ("fruit", "fruit", "food-fruit"),
    ("vegetable", "vegetable", "food-vegetable"),
    ("flower", "flower", "plant-flower"),
    ("building", "building", "place-building"),
    ("instrument", "musical instrument", "musical-instrument"),
    ("vehicle", "vehicle", "transport-ground"),
    ("tool", "tool", "tool"),
)
# domain -> (source tree, domain folder in it, class folder of our class in it: 'same' or 'emoji')
DOMAINS: dict[str, tuple[str, str, str]] = {
    "photo": ("tuxpaint", "photo", "same"),
    "clipart": ("openclipart", "clipart", "same"),
    "emoji": ("emoji_domains", "noto", "emoji"),
    "lineart": ("emoji_domains", "fluent_line", "emoji"),
}


def build(out: Path | str | None = None, sources: dict[str, Path] | None = None) -> Path:
    """Copy the coarse classes of every built source into one tree; `sources` maps tree name -> root (tests)."""
    out = Path(out).expanduser().resolve() if out else default_root("coarse_domains")
    roots = {name: Path((sources or {}).get(name) or default_root(name)) for name, _, _ in DOMAINS.values()}
    present = {d: spec for d, spec in DOMAINS.items() if (roots[spec[0]] / spec[1]).is_dir()}
    if not present:
        raise DataError(f"none of {sorted(roots)} is built; build Tux Paint / Openclipart / Emoji-Domains first")
    with building(out) as tmp:
        counts: dict[str, dict[str, int]] = {}
        for domain, (tree, sub, kind) in present.items():
            counts[domain] = {}
            for folder, _, emoji_folder in CLASSES:
                src = roots[tree] / sub / (emoji_folder if kind == "emoji" else folder)
                dst = tmp / domain / folder
                dst.mkdir(parents=True)
                files = sorted(src.glob("*.png")) if src.is_dir() else []
                for f in files:
                    shutil.copyfile(f, dst / f.name)
                counts[domain][folder] = len(files)
        write_classnames(tmp, [(f, n) for f, n, _ in CLASSES])
        (tmp / "ATTRIBUTION.md").write_text(
            "# Photo / Clipart / Emoji / Line-art (coarse classes)\n\nCopied from locally built trees; see their\n"
            "ATTRIBUTION.md files. The photo domain is Tux Paint (GPL-2): evaluation only, never commit it.\n")
        write_stamp(tmp, {"format": STAMP_FORMAT, "dataset": "coarse_domains", "counts": counts})
    return out


def summary(out: Path) -> str:
    counts = (read_stamp(out) or {}).get("counts", {})
    return f"coarse_domains at {out}: " + ", ".join(f"{d} {sum(c.values())}" for d, c in counts.items())


def main(argv: Sequence[str] | None = None) -> int:
    return out_only_main(__doc__, build, summary, argv)


if __name__ == "__main__":
    raise SystemExit(main())

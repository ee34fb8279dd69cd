"""Set-up-time builder of the offline "Emoji-Domains-20" dataset: 20 classes, one domain per emoji art style.

The classes are Unicode emoji subgroups (npm `emoji-datasource` metadata); the images are the same emoji drawn
by different artists (npm `@iconify-json/*` SVG sets, optionally the Debian Symbola font). Nothing here is
committed: `build` fetches the pinned packages into `<out>/../downloads/` and renders PNGs into

    <out>/<style>/<class_folder>/<codepoints>.png      RGB on white, size x size
    <out>/classnames.txt                               folder<TAB>readable name (prompt text)
    <out>/ATTRIBUTION.md                               sources, versions and licences
    <out>/.complete                                    JSON stamp, written last

CLI: python -m hpcfed.builders.emoji_domains --out DIR [--styles noto,twemoji] [--size 64]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import shutil
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from hpcfed.builders.fetch import (
    DebFetcher,
    NpmFetcher,
    apt_download,
    deb_extract,
    deb_version,
    fetch_all,
    npm_pack,
    read_tar_json,
)
from hpcfed.builders.tree import (
    STAMP,
    building,
    default_root,
    process_pool,
    read_stamp,
    run_cli,
    stamp_matches,
    write_classnames,
    write_stamp,
)
from hpcfed.data.built import BUILT
from hpcfed.errors import DataError

__all__ = ["ALL", "STAMP", "STYLES", "build", "main"]

STAMP_FORMAT = 1
EMOJI_DATA = "emoji-datasource@16.0.0"  # MIT; only package/emoji.json is read (groups give the labels)
SKIN_TONES = frozenset({"1f3fb", "1f3fc", "1f3fd", "1f3fe", "1f3ff"})
UNASSIGNED = "\u0378"  # never assigned in Unicode: a font draws its missing-glyph box ("tofu") for it
SERIAL_BELOW = 200  # fewer renders than this are not worth starting worker processes for
COMMAND = BUILT["emoji_domains"].command


@dataclass(frozen=True)
class StyleSource:
    kind: str  # "iconify" (npm SVG set) or "font" (Debian font package rendered with Pillow)
    package: str  # npm package name or Debian package name
    version: str
    licence: str
    author: str
    chars_from: str | None = None  # style whose chars.json maps codepoints -> icon names, if not its own
    note: str = ""

    @property
    def spec(self) -> str:
        # Debian packages are not pinned: apt only offers the version of the configured release.
        return f"{self.package}@{self.version}" if self.kind == "iconify" else self.package


STYLES: dict[str, StyleSource] = {
    "noto": StyleSource("iconify", "@iconify-json/noto", "1.2.9", "Apache-2.0", "Google Inc"),
    "twemoji": StyleSource("iconify", "@iconify-json/twemoji", "1.2.5", "CC-BY-4.0", "Twitter"),
    "fluent_flat": StyleSource("iconify", "@iconify-json/fluent-emoji-flat", "1.2.6", "MIT", "Microsoft"),
    "fluent_color": StyleSource(
        "iconify", "@iconify-json/fluent-emoji", "1.2.7", "MIT", "Microsoft", chars_from="fluent_flat"
    ),
    "fluent_line": StyleSource(
        "iconify",
        "@iconify-json/fluent-emoji-high-contrast",
        "1.2.6",
        "MIT",
        "Microsoft",
        note="black line art",
    ),
    "openmoji": StyleSource("iconify", "@iconify-json/openmoji", "1.2.29", "CC-BY-SA-4.0", "OpenMoji"),
    "symbola": StyleSource(
        "font",
        "fonts-symbola",
        "2.60-1.1",
        "free for any use (see Debian copyright)",
        "George Douros",
        note="monochrome font glyphs; emoji the font lacks are left out",
    ),
}
ALL: tuple[str, ...] = tuple(STYLES)

# (emoji-datasource subcategory, readable class name used as prompt text). Folder = slug of the subcategory.
CLASSES: tuple[tuple[str, str], ...] = (
    ("animal-mammal", "mammal"),
    ("animal-bird", "bird"),
    ("animal-bug", "insect"),
    ("animal-marine", "sea animal"),
    ("plant-flower", "flower"),
    ("plant-other", "plant"),
    ("food-fruit", "fruit"),
    ("food-vegetable", "vegetable"),
    ("food-sweet", "sweet food"),
    ("drink", "drink"),
    ("clothing", "piece of clothing"),
    ("transport-ground", "ground vehicle"),
    ("transport-air", "aircraft"),
    ("transport-water", "boat"),
    ("musical-instrument", "musical instrument"),
    ("place-building", "building"),
    ("sky & weather", "weather symbol"),
    ("sport", "sports equipment"),
    ("tool", "tool"),
    ("computer", "computer"),
)


@dataclass(frozen=True)
class Emoji:
    code: str  # lower-case codepoints joined by '-', as in emoji-datasource `unified`
    name: str
    folder: str  # class folder


def slug(subcategory: str) -> str:
    """'sky & weather' -> 'sky-weather': folder names without spaces or shell-special characters."""
    return re.sub(r"[^a-z0-9]+", "-", subcategory.lower()).strip("-")


def class_table() -> list[tuple[str, str]]:
    """[(folder, readable name)] in a fixed order."""
    return [(slug(sub), name) for sub, name in CLASSES]


# ----------------------------------------------------------------------------------------------- joining


def skin_toned(code: str) -> bool:
    return any(part in SKIN_TONES for part in code.split("-"))


def select_emoji(emoji_json: Iterable[dict]) -> list[Emoji]:
    """Emoji of the benchmark classes, base forms only (skin-tone variants would duplicate concepts)."""
    folder_of = {sub: slug(sub) for sub, _ in CLASSES}
    rows = sorted(emoji_json, key=lambda e: (e.get("sort_order", 0), e.get("unified", "")))
    picked: dict[str, Emoji] = {}
    for e in rows:
        code = str(e.get("unified", "")).lower()
        sub = e.get("subcategory")
        if sub not in folder_of or not code or skin_toned(code) or code in picked:
            continue
        picked[code] = Emoji(code, str(e.get("name") or e.get("short_name") or code).lower(), folder_of[sub])
    return list(picked.values())


def without_fe0f(code: str) -> str:
    """'2764-fe0f' -> '2764': the emoji presentation selector, which icon sets keep or drop at will."""
    return "-".join(p for p in code.split("-") if p != "fe0f")


def code_keys(code: str) -> list[str]:
    """Lookup keys for an emoji: as given, then without the emoji presentation selector FE0F."""
    keys = [code]
    bare = without_fe0f(code)
    if bare and bare != code:
        keys.append(bare)
    return keys


def has_icon(icons: dict, name: str) -> bool:
    return name in icons.get("icons", {}) or name in icons.get("aliases", {})


def join_icons(emoji: Sequence[Emoji], chars: dict[str, str], icons: dict) -> dict[str, str]:
    """Map emoji code -> icon name of one iconify set, via its chars.json (codepoints -> icon name)."""
    joined = {}
    for e in emoji:
        for key in code_keys(e.code):
            name = chars.get(key)
            if name and has_icon(icons, name):
                joined[e.code] = name
                break
    return joined


# ----------------------------------------------------------------------------------------------- rendering


def resolve_icon(icons: dict, name: str) -> dict:
    """An icon's body and box, following iconify aliases (which may flip or rotate their parent)."""
    chain, seen = [], set()
    while name not in icons.get("icons", {}):
        alias = icons.get("aliases", {}).get(name)
        if alias is None or name in seen:
            raise DataError(f"iconify set {icons.get('prefix')!r}: icon {name!r} is missing or a bad alias")
        seen.add(name)
        chain.append(alias)
        name = alias["parent"]
    icon = {k: icons[k] for k in ("left", "top", "width", "height") if k in icons}
    icon.update(icons["icons"][name])
    hflip = vflip = False
    rotate = 0
    for alias in reversed(chain):  # parent first: each alias transforms what its parent shows
        icon.update({k: v for k, v in alias.items() if k in ("left", "top", "width", "height")})
        hflip ^= bool(alias.get("hFlip"))
        vflip ^= bool(alias.get("vFlip"))
        rotate += int(alias.get("rotate", 0))
    icon.update(hFlip=hflip, vFlip=vflip, rotate=rotate % 4)
    return icon


def icon_svg(icons: dict, name: str, size: int) -> str:
    """A standalone SVG document for one icon, scaled to size x size."""
    ic = resolve_icon(icons, name)
    left, top = ic.get("left", 0), ic.get("top", 0)
    width, height = ic.get("width", 16), ic.get("height", 16)
    cx, cy = left + width / 2, top + height / 2
    transforms = []  # SVG applies the last-listed transform first: flip, then rotate
    if ic["rotate"]:
        transforms.append(f"rotate({90 * ic['rotate']} {cx} {cy})")
    if ic["hFlip"]:
        transforms.append(f"translate({2 * left + width} 0) scale(-1 1)")
    if ic["vFlip"]:
        transforms.append(f"translate(0 {2 * top + height}) scale(1 -1)")
    body = ic["body"]
    if transforms:
        body = f'<g transform="{" ".join(transforms)}">{body}</g>'
    return (
        f'<svg xmlns="http://www.w3.org/2000/svg" xmlns:xlink="http://www.w3.org/1999/xlink" '
        f'viewBox="{left} {top} {width} {height}" width="{size}" height="{size}">{body}</svg>'
    )


def on_white(img: Any) -> Any:
    """Composite onto white: transparent pixels would otherwise turn black when dropped to RGB."""
    from PIL import Image

    rgba = img.convert("RGBA")
    white = Image.new("RGBA", rgba.size, (255, 255, 255, 255))
    return Image.alpha_composite(white, rgba).convert("RGB")


def render_svg(svg: str, size: int) -> Any:
    import resvg_py
    from PIL import Image

    png = resvg_py.svg_to_bytes(svg_string=svg, width=size, height=size, skip_system_fonts=True)
    return on_white(Image.open(io.BytesIO(bytes(png))))


def _render_job(job: tuple[str, str, int]) -> tuple[str, str | None]:
    """Worker: render one SVG to a PNG file. Returns (path, error or None): one bad icon must not stop all."""
    svg, path, size = job
    try:
        render_svg(svg, size).save(path)
        return path, None
    except Exception as e:  # resvg raises ValueError on malformed SVG; keep going and report it
        return path, f"{type(e).__name__}: {e}"


def run_jobs(jobs: list[tuple[str, str, int]]) -> list[str]:
    """Render all jobs, on 2 processes when there are many; returns the error messages."""
    if len(jobs) < SERIAL_BELOW or (os.cpu_count() or 1) < 2:
        results = [_render_job(j) for j in jobs]
    else:
        with process_pool(2) as pool:
            results = list(pool.imap_unordered(_render_job, jobs, chunksize=16))
    return [f"{Path(p).name}: {err}" for p, err in results if err]


def glyph_image(font: Any, text: str, size: int) -> Any:
    """Black glyph centred on white, scaled to fill ~7/8 of the square (like the padded iconify sets)."""
    from PIL import Image, ImageDraw

    left, top, right, bottom = font.getbbox(text)
    canvas = Image.new("L", (max(1, right - left), max(1, bottom - top)), 0)
    ImageDraw.Draw(canvas).text((-left, -top), text, font=font, fill=255)
    ink = canvas.getbbox()
    if ink is None:
        return None
    glyph = canvas.crop(ink)
    scale = 0.875 * size / max(glyph.size)
    glyph = glyph.resize(
        (max(1, round(glyph.width * scale)), max(1, round(glyph.height * scale))), Image.Resampling.LANCZOS
    )
    out = Image.new("L", (size, size), 255)
    out.paste(0, ((size - glyph.width) // 2, (size - glyph.height) // 2), mask=glyph)
    return out.convert("RGB")


def font_char(code: str) -> str | None:
    """The single character a plain font can draw for an emoji; sequences (ZWJ, keycaps) need ligatures."""
    parts = [p for p in code.split("-") if p != "fe0f"]
    return chr(int(parts[0], 16)) if len(parts) == 1 else None


def symbola_font_bytes(deb: Path) -> bytes:
    fonts = sorted(deb_extract(deb).rglob("Symbola*.ttf"))
    if not fonts:
        raise DataError(f"no Symbola .ttf unpacked from {deb}; delete the file")
    return fonts[0].read_bytes()


def render_font_style(font_bytes: bytes, emoji: Sequence[Emoji], style_dir: Path, size: int) -> int:
    """Render the emoji a font really has; missing ones look like the glyph of an unassigned codepoint."""
    from PIL import ImageFont

    # BASIC layout: one glyph per codepoint, the same on machines with and without libraqm.
    font = ImageFont.truetype(io.BytesIO(font_bytes), 4 * size, layout_engine=ImageFont.Layout.BASIC)
    tofu = font.getmask(UNASSIGNED)
    tofu_key = (tofu.size, bytes(tofu))
    count = 0
    for e in emoji:
        ch = font_char(e.code)
        if ch is None:
            continue
        mask = font.getmask(ch)
        if (mask.size, bytes(mask)) == tofu_key:
            continue
        img = glyph_image(font, ch, size)
        if img is not None:
            img.save(style_dir / e.folder / f"{e.code}.png")
            count += 1
    return count


# ----------------------------------------------------------------------------------------------- building


def normalise_styles(styles: Sequence[str] | str) -> list[str]:
    names = [s.strip() for s in (styles.split(",") if isinstance(styles, str) else styles) if s.strip()]
    unknown = [s for s in names if s not in STYLES]
    if unknown:
        raise DataError(f"unknown emoji style(s) {unknown}; choose from {', '.join(STYLES)}")
    if not names:
        raise DataError(f"no emoji style requested; choose from {', '.join(STYLES)}")
    return [s for s in STYLES if s in names]  # canonical order, no duplicates


def stamp_key(requested: Sequence[str], size: int) -> dict:
    """What a finished tree must have been built from to be reused as is."""
    return {
        "format": STAMP_FORMAT,
        "requested": list(requested),
        "size": size,
        "sources": {s: STYLES[s].spec for s in requested} | {"classes": EMOJI_DATA},
        "classes": [folder for folder, _ in class_table()],
    }


def iconify_needed(styles: Sequence[str]) -> list[str]:
    """The requested iconify styles plus those whose chars.json they borrow."""
    needed = [s for s in styles if STYLES[s].kind == "iconify"]
    borrowed = [STYLES[s].chars_from for s in needed]
    return needed + [b for b in dict.fromkeys(borrowed) if b and b not in needed]


def load_chars(style: str, tarballs: dict[str, Path]) -> dict[str, str]:
    chars = read_tar_json(tarballs[style], "package/chars.json") or {}
    source = STYLES[style].chars_from
    if not chars and source:
        chars = read_tar_json(tarballs[source], "package/chars.json") or {}
    if not chars:
        raise DataError(
            f"{tarballs[style].name} has no chars.json to map codepoints to icons; "
            f"set chars_from for style {style!r}"
        )
    return chars


def iconify_jobs(
    style: str, emoji: Sequence[Emoji], tarballs: dict[str, Path], style_dir: Path, size: int
) -> tuple[list[tuple[str, str, int]], dict]:
    """Render jobs for one iconify style, and its info.json (author and licence for the attribution)."""
    icons = read_tar_json(tarballs[style], "package/icons.json")
    if not isinstance(icons, dict) or "icons" not in icons:
        raise DataError(f"{tarballs[style]} has no package/icons.json; delete it so it is fetched again")
    joined = join_icons(emoji, load_chars(style, tarballs), icons)
    jobs = [
        (icon_svg(icons, joined[e.code], size), str(style_dir / e.folder / f"{e.code}.png"), size)
        for e in emoji
        if e.code in joined
    ]
    return jobs, read_tar_json(tarballs[style], "package/info.json") or {}


def write_attribution(
    path: Path, built: Sequence[str], infos: dict[str, dict], deb_versions: dict[str, str]
) -> None:
    lines = [
        "# Emoji-Domains-20: sources and licences",
        "",
        f"Built locally by `{COMMAND}`; do not redistribute or commit these images",
        "without honouring the terms below. CC-BY-4.0 needs attribution to the author; CC-BY-SA-4.0 also",
        "needs attribution, and any redistributed images (or images derived from them) must carry the same",
        "licence (share-alike). Apache-2.0 and MIT need their licence notice kept with redistributed copies.",
        "",
        f"- Class labels: Unicode emoji subgroups from npm `{EMOJI_DATA}` (`emoji.json`), MIT licence.",
    ]
    for s in built:
        src, info = STYLES[s], infos.get(s, {})
        author = info.get("author", {}).get("name") or src.author
        url = info.get("author", {}).get("url") or info.get("license", {}).get("url")
        version = deb_versions.get(s, src.version)
        where = "npm" if src.kind == "iconify" else "Debian package"
        lines.append(
            f"- `{s}`: {where} `{src.package}` {version}, artwork by {author}"
            + (f" (<{url}>)" if url else "")
            + f", licence {src.licence}"
            + (f"; {src.note}" if src.note else "")
            + "."
        )
    path.write_text("\n".join(lines) + "\n")


def make_tree(tmp: Path, styles: Sequence[str], emoji: Sequence[Emoji]) -> None:
    for s in styles:
        for folder, _ in class_table():
            (tmp / s / folder).mkdir(parents=True, exist_ok=True)
    write_classnames(tmp, class_table())


def count_images(tree: Path, styles: Sequence[str]) -> dict[str, int]:
    return {s: sum(1 for _ in (tree / s).glob("*/*.png")) for s in styles}


def render_into(
    tmp: Path,
    styles: list[str],
    emoji: list[Emoji],
    size: int,
    downloads: Path,
    tarballs: dict[str, Path],
    fetch_deb: DebFetcher,
    symbola_required: bool,
) -> tuple[list[str], dict]:
    """Render every requested style into `tmp`; returns the styles actually built and attribution info."""
    jobs, infos, deb_versions = [], {}, {}
    for s in styles:
        if STYLES[s].kind == "iconify":
            style_jobs, infos[s] = iconify_jobs(s, emoji, tarballs, tmp / s, size)
            jobs += style_jobs
    errors = run_jobs(jobs)
    if errors:
        print(
            f"emoji_domains: warning: {len(errors)} icon(s) did not render, e.g. {errors[:3]}",
            file=sys.stderr,
        )
    built = list(styles)
    for s in [s for s in styles if STYLES[s].kind == "font"]:
        try:
            deb = fetch_deb(STYLES[s].package, downloads)
            deb_versions[s] = deb_version(deb)
            render_font_style(symbola_font_bytes(deb), emoji, tmp / s, size)
        except DataError as e:
            if symbola_required:
                raise
            print(f"emoji_domains: warning: skipping style {s!r}: {e}", file=sys.stderr)
            shutil.rmtree(tmp / s, ignore_errors=True)
            built.remove(s)
    return built, {"infos": infos, "deb_versions": deb_versions}


def check_counts(counts: dict[str, int]) -> None:
    empty = [s for s, n in counts.items() if n == 0]
    if empty:
        raise DataError(
            f"style(s) {empty} produced no images: the package layout may have changed; "
            "check the pinned versions in hpcfed/builders/emoji_domains.py"
        )


def build(
    out: Path | str,
    styles: Sequence[str] | str = ALL,
    size: int = 64,
    *,
    downloads: Path | None = None,
    fetch_npm: NpmFetcher = npm_pack,
    fetch_deb: DebFetcher = apt_download,
) -> Path:
    """Build the tree at `out` unless a complete one for the same arguments is there; returns `out`.

    Symbola is skipped with a warning when it cannot be fetched, unless the style list was given explicitly
    (anything other than the default `ALL`).
    """
    out = Path(out).expanduser().resolve()
    requested = normalise_styles(styles)
    if not isinstance(size, int) or not 8 <= size <= 1024:
        raise DataError(f"size must be an integer pixel count between 8 and 1024, got {size!r}")
    key = stamp_key(requested, size)
    if stamp_matches(out, key):
        return out
    downloads = Path(downloads) if downloads else out.parent / "downloads"
    needed = iconify_needed(requested)
    fetched = fetch_all(fetch_npm, [EMOJI_DATA] + [STYLES[s].spec for s in needed], downloads)
    tarballs = {s: fetched[STYLES[s].spec] for s in needed}
    emoji_json = read_tar_json(fetched[EMOJI_DATA], "package/emoji.json")
    if not isinstance(emoji_json, list):
        raise DataError(f"{EMOJI_DATA} has no package/emoji.json list; delete its tarball in {downloads}")
    emoji = select_emoji(emoji_json)
    with building(out) as tmp:
        make_tree(tmp, requested, emoji)
        built, meta = render_into(tmp, requested, emoji, size, downloads, tarballs, fetch_deb,
                                  symbola_required=tuple(requested) != ALL)
        counts = count_images(tmp, built)
        check_counts(counts)
        write_attribution(tmp / "ATTRIBUTION.md", built, meta["infos"], meta["deb_versions"])
        versions = {s: meta["deb_versions"].get(s, STYLES[s].version) for s in built}
        write_stamp(tmp, key | {"styles": built, "counts": counts, "versions": versions})
    return out


def summary(out: Path) -> str:
    stamp = read_stamp(out) or {}
    counts = ", ".join(f"{s} {n}" for s, n in stamp.get("counts", {}).items())
    classes = len(stamp.get("classes", []))
    return f"emoji_domains at {out}: {classes} classes, {stamp.get('size')} px; images per style: {counts}"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=COMMAND, description=__doc__.splitlines()[0])
    default_out = default_root(BUILT["emoji_domains"].folder)
    parser.add_argument("--out", type=Path, default=default_out, help=f"folder to build (default {default_out})")
    parser.add_argument("--styles", default=",".join(ALL), help=f"comma-separated subset of {','.join(ALL)}")
    parser.add_argument("--size", type=int, default=64, help="image side in pixels (default 64)")
    args = parser.parse_args(argv)
    return run_cli(lambda: build(args.out, args.styles, args.size), summary)


if __name__ == "__main__":
    sys.exit(main())

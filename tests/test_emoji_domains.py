"""Emoji-Domains-20 builder: class table, codepoint join, rendering and the completion stamp, offline.

The build tests use tiny hand-made npm tarballs in tmp_path (the fetch step is injected); only the last test
reads the real tree that set-up ('make data') builds in the data cache.
"""

from __future__ import annotations

import io
import json
import tarfile
import time
from pathlib import Path

import numpy as np
import pytest

from hpcfed.builders import emoji_domains as ed
from hpcfed.builders import fetch
from hpcfed.data.built import data_cache_dir
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.data.registry import load_listing
from hpcfed.errors import DataError

RED_SQUARE = '<path fill="#f00" d="M4 4h8v8H4z"/>'
BLACK_LINE = '<path fill="#000" d="M0 7h16v2H0z"/>'

# A few emoji-datasource rows: classes, a non-class group, a skin-tone row, an FE0F form and a ZWJ sequence.
EMOJI_JSON = [
    {"unified": "1F415", "name": "DOG", "category": "Animals & Nature", "subcategory": "animal-mammal",
     "sort_order": 1, "skin_variations": {"1F3FB": {"unified": "1F415-1F3FB"}}},
    {"unified": "1F415-1F3FB", "name": "DOG LIGHT", "subcategory": "animal-mammal", "sort_order": 2},
    {"unified": "1F408", "name": "CAT", "subcategory": "animal-mammal", "sort_order": 3},
    {"unified": "1F415-200D-1F9BA", "name": "SERVICE DOG", "subcategory": "animal-mammal", "sort_order": 4},
    {"unified": "2744-FE0F", "name": "SNOWFLAKE", "subcategory": "sky & weather", "sort_order": 5},
    {"unified": "1F34E", "name": "RED APPLE", "subcategory": "food-fruit", "sort_order": 6},
    {"unified": "1F600", "name": "GRINNING FACE", "subcategory": "face-smiling", "sort_order": 7},
    {"unified": "1F6F8", "name": "FLYING SAUCER", "subcategory": "transport-air", "sort_order": 8},
]
# chars.json keys are lower-case codepoints; the snowflake is listed without FE0F, the saucer is missing.
CHARS = {"1f415": "dog", "1f408": "cat", "1f415-200d-1f9ba": "service-dog", "2744": "snowflake",
         "1f34e": "red-apple", "1f600": "grinning-face", "1f415-1f3fb": "dog-light"}


def icons_json(prefix: str, body: str) -> dict:
    names = ["dog", "service-dog", "snowflake", "red-apple", "grinning-face", "dog-light", "dog-base"]
    return {"prefix": prefix, "width": 16, "height": 16, "icons": {n: {"body": body} for n in names},
            "aliases": {"cat": {"parent": "dog-base", "hFlip": True}}}


def write_tgz(path: Path, files: dict[str, object]) -> None:
    with tarfile.open(path, "w:gz") as tf:
        for name, obj in files.items():
            data = json.dumps(obj).encode()
            info = tarfile.TarInfo(f"package/{name}")
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))


class FakeNpm:
    """Stands in for `npm pack`: writes a tiny tarball of the right layout and counts the calls."""

    def __init__(self, empty: bool = False) -> None:
        self.calls: list[str] = []
        self.empty = empty

    def __call__(self, spec: str, dest: Path) -> Path:
        self.calls.append(spec)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / fetch.npm_tarball_name(spec)
        if spec == ed.EMOJI_DATA:
            write_tgz(target, {"emoji.json": EMOJI_JSON})
            return target
        line = "high-contrast" in spec
        icons = icons_json(spec, BLACK_LINE if line else RED_SQUARE)
        if self.empty:
            icons["icons"], icons["aliases"] = {}, {}
        # Like the real fluent-emoji package, the colour set ships an empty chars.json.
        chars = {} if spec.startswith("@iconify-json/fluent-emoji@") else CHARS
        info = {"author": {"name": f"author of {spec}", "url": "https://example.org"}}
        write_tgz(target, {"icons.json": icons, "chars.json": chars, "info.json": info})
        return target


def no_deb(package: str, dest: Path) -> Path:
    raise DataError(f"'apt-get download {package}' failed (test): run 'apt-get update' first")


# ------------------------------------------------------------------------------------------- pure logic


def test_class_table_has_20_unique_readable_classes():
    table = ed.class_table()
    folders, names = [f for f, _ in table], [n for _, n in table]
    assert len(table) == 20
    assert len(set(folders)) == 20 and len(set(names)) == 20
    assert all(n.strip() and n == n.lower() and "-" not in n for n in names)
    assert all(f == ed.slug(f) for f in folders)
    assert ed.slug("sky & weather") == "sky-weather"
    assert ("animal-mammal", "mammal") in table


def test_styles_table():
    iconify = ["noto", "twemoji", "fluent_flat", "fluent_color", "fluent_line", "openmoji"]
    assert list(ed.STYLES)[:6] == iconify
    assert ed.ALL == tuple(ed.STYLES)
    assert ed.STYLES["fluent_color"].chars_from == "fluent_flat"
    assert ed.STYLES["openmoji"].spec == "@iconify-json/openmoji@1.2.29"
    assert fetch.npm_tarball_name("@iconify-json/noto@1.2.9") == "iconify-json-noto-1.2.9.tgz"
    assert fetch.npm_tarball_name("emoji-datasource@16.0.0") == "emoji-datasource-16.0.0.tgz"


def test_select_emoji_skips_skin_tones_and_other_groups():
    picked = ed.select_emoji(EMOJI_JSON)
    codes = [e.code for e in picked]
    assert codes == ["1f415", "1f408", "1f415-200d-1f9ba", "2744-fe0f", "1f34e", "1f6f8"]
    assert {e.code: e.folder for e in picked}["2744-fe0f"] == "sky-weather"


def test_join_uses_fe0f_fallback_and_aliases():
    picked = ed.select_emoji(EMOJI_JSON)
    joined = ed.join_icons(picked, CHARS, icons_json("x", RED_SQUARE))
    assert joined == {"1f415": "dog", "1f408": "cat", "1f415-200d-1f9ba": "service-dog",
                      "2744-fe0f": "snowflake", "1f34e": "red-apple"}
    assert ed.code_keys("2744-fe0f") == ["2744-fe0f", "2744"]
    assert ed.code_keys("1f415") == ["1f415"]


def test_alias_flip_becomes_svg_transform():
    icons = icons_json("x", RED_SQUARE)
    svg = ed.icon_svg(icons, "cat", 32)
    assert 'viewBox="0 0 16 16"' in svg and 'width="32"' in svg
    assert "translate(16 0) scale(-1 1)" in svg
    assert "transform" not in ed.icon_svg(icons, "dog", 32)
    with pytest.raises(DataError, match="missing"):
        ed.icon_svg(icons, "no-such-icon", 32)


def test_font_style_drops_tofu_and_sequences(tmp_path):
    image = pytest.importorskip("PIL.Image")
    font = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not font.is_file():
        pytest.skip("DejaVu Sans is not installed")
    emoji = [ed.Emoji("2602-fe0f", "umbrella", "sky-weather"), ed.Emoji("1f415", "dog", "animal-mammal"),
             ed.Emoji("1f415-200d-1f9ba", "service dog", "animal-mammal")]
    ed.make_tree(tmp_path, ["font"], emoji)
    # DejaVu has the umbrella but no dog (tofu); sequences are never drawn by a plain font.
    assert ed.render_font_style(font.read_bytes(), emoji, tmp_path / "font", 32) == 1
    img = np.asarray(image.open(tmp_path / "font/sky-weather/2602-fe0f.png"))
    assert img.shape == (32, 32, 3) and img.min() < 100 and img[0, 0].tolist() == [255, 255, 255]


def test_bad_arguments_raise_data_error(tmp_path):
    with pytest.raises(DataError, match="unknown emoji style"):
        ed.build(tmp_path / "e", ["noto", "comic_sans"], fetch_npm=FakeNpm())
    with pytest.raises(DataError, match="size"):
        ed.build(tmp_path / "e", ["noto"], size=3, fetch_npm=FakeNpm())
    assert ed.main(["--out", str(tmp_path / "e"), "--styles", "bogus"]) == 2


def test_npm_missing_names_the_fix(tmp_path, monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda name: None)
    with pytest.raises(DataError, match="npm is not on PATH"):
        fetch.npm_pack("@iconify-json/noto@1.2.9", tmp_path)


# ------------------------------------------------------------------------------------------- builds


@pytest.fixture
def fake_build(tmp_path):
    pytest.importorskip("resvg_py")
    npm = FakeNpm()
    out = tmp_path / "data" / "emoji_domains"
    return out, npm, ed.build(out, ["noto", "fluent_color", "fluent_line"], size=16, fetch_npm=npm,
                              fetch_deb=no_deb)


def test_fake_build_layout(fake_build):
    out, npm, returned = fake_build
    assert returned == out.resolve()
    assert sorted(p.name for p in out.iterdir()) == [
        ".complete", "ATTRIBUTION.md", "classnames.txt", "fluent_color", "fluent_line", "noto"]
    assert not [p for p in out.parent.iterdir() if p.name.startswith(".")]  # no temporary trees left
    # fluent_color has no chars.json of its own: the flat set's was fetched and used.
    assert "@iconify-json/fluent-emoji-flat@1.2.6" in npm.calls
    assert (out.parent / "downloads" / "iconify-json-noto-1.2.9.tgz").is_file()
    for style in ("noto", "fluent_color", "fluent_line"):
        assert sorted(p.relative_to(out / style).as_posix() for p in (out / style).glob("*/*.png")) == [
            "animal-mammal/1f408.png", "animal-mammal/1f415-200d-1f9ba.png", "animal-mammal/1f415.png",
            "food-fruit/1f34e.png", "sky-weather/2744-fe0f.png"]
        assert len([p for p in (out / style).iterdir() if p.is_dir()]) == 20  # empty classes still listed
    stamp = json.loads((out / ".complete").read_text())
    assert stamp["styles"] == ["noto", "fluent_color", "fluent_line"] and stamp["size"] == 16
    assert stamp["counts"] == {"noto": 5, "fluent_color": 5, "fluent_line": 5}
    attribution = (out / "ATTRIBUTION.md").read_text()
    assert "@iconify-json/fluent-emoji-high-contrast" in attribution and "share-alike" in attribution


def test_fake_build_pixels(fake_build):
    from PIL import Image

    out = fake_build[0]
    red = np.asarray(Image.open(out / "noto/animal-mammal/1f415.png"))
    assert red.shape == (16, 16, 3) and red.dtype == np.uint8
    assert red[0, 0].tolist() == [255, 255, 255]  # transparent corner composited onto white, not black
    assert red[8, 8].tolist() == [255, 0, 0]
    line = np.asarray(Image.open(out / "fluent_line/food-fruit/1f34e.png"))
    assert line[8, 8].tolist() == [0, 0, 0] and line[0, 0].tolist() == [255, 255, 255]


def test_fake_build_reads_as_imagefolder(fake_build):
    out = fake_build[0]
    listing = read_imagefolder(out, domains=["noto", "fluent_line"], domain_level=True,
                               class_names_file=out / "classnames.txt")
    assert len(listing) == 10 and listing.domain_names == ("noto", "fluent_line")
    assert len(listing.class_names) == 20 and "mammal" in listing.class_names
    via_registry = load_listing("emoji_domains", root=str(out), domains=["fluent_color"])
    assert via_registry.class_names == listing.class_names


def test_second_build_is_a_noop(fake_build):
    out, npm, _ = fake_build
    calls, mtime = len(npm.calls), (out / ".complete").stat().st_mtime_ns
    t0 = time.perf_counter()
    ed.build(out, ["fluent_line", "noto", "fluent_color"], size=16, fetch_npm=npm)  # order does not matter
    assert time.perf_counter() - t0 < 0.5
    assert len(npm.calls) == calls and (out / ".complete").stat().st_mtime_ns == mtime


def test_tree_without_stamp_or_other_arguments_is_rebuilt(fake_build):
    out, npm, _ = fake_build
    (out / ".complete").unlink()
    (out / "noto/animal-mammal/1f415.png").unlink()
    ed.build(out, ["noto", "fluent_color", "fluent_line"], size=16, fetch_npm=npm)
    assert (out / "noto/animal-mammal/1f415.png").is_file() and (out / ".complete").is_file()
    ed.build(out, ["noto"], size=16, fetch_npm=npm)
    assert sorted(p.name for p in out.iterdir() if p.is_dir()) == ["noto"]
    ed.build(out, ["noto"], size=24, fetch_npm=npm)
    assert json.loads((out / ".complete").read_text())["size"] == 24


def test_symbola_skipped_unless_requested(tmp_path, capsys):
    pytest.importorskip("resvg_py")
    out = ed.build(tmp_path / "all", size=16, fetch_npm=FakeNpm(), fetch_deb=no_deb)
    assert json.loads((out / ".complete").read_text())["styles"] == list(ed.ALL[:6])
    assert not (out / "symbola").exists() and "skipping style 'symbola'" in capsys.readouterr().err
    with pytest.raises(DataError, match="apt-get update"):
        ed.build(tmp_path / "sym", ["noto", "symbola"], size=16, fetch_npm=FakeNpm(), fetch_deb=no_deb)
    assert not (tmp_path / "sym").exists()


def test_symbola_from_a_deb(tmp_path):
    """The font style: the .deb is unpacked next to it (a ready folder stands in here) and its version recorded."""
    font = Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")
    if not font.is_file():
        pytest.skip("DejaVu Sans is not installed")

    def fake_deb(package: str, dest: Path) -> Path:
        deb = dest / f"{package}_1%3a2.0-1_all.deb"
        unpacked = deb.with_suffix("") / "usr/share/fonts/truetype"
        unpacked.mkdir(parents=True)
        (unpacked / "Symbola_hint.ttf").write_bytes(font.read_bytes())
        (deb.with_suffix("") / ".extracted").write_text(deb.name)
        deb.write_bytes(b"")
        return deb

    out = ed.build(tmp_path / "e", ["symbola"], size=16, fetch_npm=FakeNpm(), fetch_deb=fake_deb)
    stamp = json.loads((out / ed.STAMP).read_text())
    # DejaVu draws the snowflake; the animals, the apple and the saucer are its missing-glyph box.
    assert stamp["counts"] == {"symbola": 1} and stamp["versions"] == {"symbola": "1:2.0-1"}
    assert (out / "symbola/sky-weather/2744-fe0f.png").is_file()
    assert "`fonts-symbola` 1:2.0-1" in (out / "ATTRIBUTION.md").read_text()


def test_failed_build_leaves_nothing_behind(tmp_path):
    pytest.importorskip("resvg_py")
    with pytest.raises(DataError, match="produced no images"):
        ed.build(tmp_path / "e", ["noto"], size=16, fetch_npm=FakeNpm(empty=True))
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]


# ------------------------------------------------------------------------------------------- real tree

REAL = data_cache_dir() / "emoji_domains"


@pytest.mark.skipif(not (REAL / ed.STAMP).is_file(), reason=f"Emoji-Domains not built at {REAL}")
def test_real_tree():
    styles = json.loads((REAL / ed.STAMP).read_text())["styles"]
    assert len(styles) >= 4
    listing = load_listing("emoji_domains", domains=styles)  # also checks every domain has the same classes
    assert len(listing.class_names) == 20 and listing.domain_names == tuple(styles)
    for d, name in enumerate(styles):
        labels = listing.labels[listing.domains == d]
        assert len(labels) > 300, name
        assert len(np.unique(labels)) == 20, name
    assert not [p for p in REAL.parent.iterdir() if p.name.startswith(f".{REAL.name}.building-")]

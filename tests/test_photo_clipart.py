"""Tux Paint (Photo), Openclipart (Clipart) and the coarse Photo/Clipart/Emoji/Line-art builders, offline:
fake source trees in tmp_path stand in for the Debian packages."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcfed.builders import coarse_domains, openclipart, tuxpaint
from hpcfed.data.built import read_built
from hpcfed.errors import DataError

SVG = ('<svg xmlns="http://www.w3.org/2000/svg" width="{w}" height="{h}" viewBox="0 0 10 10">'
       '<circle cx="5" cy="5" r="4" fill="#c00"/></svg>')


def fake_stamps(root: Path) -> Path:
    for sub, n in (("animals/mammals/bears", 2), ("animals/birds", 1), ("vehicles/flight", 1)):
        (root / sub).mkdir(parents=True)
        for i in range(n):
            rgba = np.zeros((30, 50, 4), np.uint8)
            rgba[5:25, 10:40] = (200, 40, 40, 255)  # an opaque block on a transparent background
            Image.fromarray(rgba, "RGBA").save(root / sub / f"s{i}.png")
    Image.new("RGBA", (8, 8)).save(root / "animals/birds/s0_mirror.png")  # a variant: left out
    return root


def fake_svgs(root: Path) -> Path:
    (root / "animals/mammals").mkdir(parents=True)
    (root / "tools").mkdir()
    (root / "animals/mammals/cat.svg").write_text(SVG.format(w="10mm", h="20mm"))  # mm units: converted to px
    (root / "tools/hammer.svg").write_text(SVG.format(w="10", h="10"))
    (root / "tools/broken.svg").write_text("<svg nonsense")
    return root


def test_tuxpaint_builds_squares_on_white_and_reads(tmp_path: Path) -> None:
    out = tuxpaint.build(tmp_path / "tux", stamps_dir=fake_stamps(tmp_path / "stamps"))
    lst = read_built("tuxpaint", str(out), None, None)
    counts = dict(zip(lst.class_names, np.bincount(lst.labels, minlength=len(lst.class_names)), strict=True))
    assert counts["mammal"] == 2 and counts["bird"] == 1 and counts["vehicle"] == 1 and len(lst) == 4
    im = np.asarray(Image.open(lst.root / lst.paths[0]))
    assert im.shape == (tuxpaint.SIZE, tuxpaint.SIZE, 3) and tuple(im[0, 0]) == (255, 255, 255)
    with pytest.raises(DataError):
        read_built("tuxpaint", str(out), ["clipart"], None)


def test_openclipart_builds_and_skips_bad_svgs(tmp_path: Path) -> None:
    out = openclipart.build(tmp_path / "oc", svg_dir=fake_svgs(tmp_path / "svg"))
    lst = read_built("openclipart", str(out), None, None)
    assert sorted(lst.class_names[i] for i in lst.labels) == ["mammal", "tool"]  # broken.svg skipped
    assert np.asarray(Image.open(lst.root / lst.paths[0])).shape == (openclipart.SIZE, openclipart.SIZE, 3)


def test_px_sizes_and_caption() -> None:
    assert 'width="37.80"' in openclipart.px_sizes(SVG.format(w="10mm", h="1in"))
    assert openclipart.caption(Path("apple_bitten_dan_01.svg")) == "apple bitten dan"


def test_coarse_domains_from_built_trees(tmp_path: Path) -> None:
    tux = tuxpaint.build(tmp_path / "tux", stamps_dir=fake_stamps(tmp_path / "stamps"))
    oc = openclipart.build(tmp_path / "oc", svg_dir=fake_svgs(tmp_path / "svg"))
    emoji = tmp_path / "emoji"
    for style in ("noto", "fluent_line"):
        (emoji / style / "animal-mammal").mkdir(parents=True)
        Image.new("RGB", (8, 8), "white").save(emoji / style / "animal-mammal" / "1f436.png")
    out = coarse_domains.build(tmp_path / "coarse", {"tuxpaint": tux, "openclipart": oc, "emoji_domains": emoji})
    lst = read_built("coarse_domains", str(out), None, None)
    assert set(lst.domain_names) == {"photo", "clipart", "emoji", "lineart"}
    assert len(lst.class_names) == len(coarse_domains.CLASSES)
    assert len(lst) == 4 + 2 + 1 + 1

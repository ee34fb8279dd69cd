"""hpcfed.data.built, the one reader of the set-up-built datasets: on small hand-made trees of every built dataset
(and the real trees in the data cache where set-up built them), without ever importing hpcfed.builders."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcfed.data.built import BUILT, STAMP, data_cache_dir, read_built
from hpcfed.data.registry import DATASETS, load_listing
from hpcfed.errors import DataError

REPO = Path(__file__).resolve().parents[1]
DOMAINS = {  # the domain folders of each hand-made tree (Fashion-MNIST: its split folders)
    "emoji_domains": ("twemoji", "noto"),
    "digits5_offline": ("mnist", "uci_digits", "handfont"),
    "fashion_mnist": ("train", "test"),
    "animal_mnist": ("silhouette",),
    "tuxpaint": ("photo",),
    "openclipart": ("clipart",),
    "coarse_domains": ("photo", "clipart", "emoji"),
}


def fake_tree(root: Path, name: str, stamp: bool = True) -> Path:
    """Two classes of two images in every domain folder, classnames.txt, and the stamp a builder writes last."""
    for d in DOMAINS[name]:
        for c in ("a_cls", "b_cls"):
            (root / d / c).mkdir(parents=True)
            for k in range(2):
                Image.new("RGB", (4, 4), (40 * k, 0, 0)).save(root / d / c / f"{k}.png")
    (root / "classnames.txt").write_text("a_cls\tfirst class\nb_cls\tsecond class\n")
    if stamp:  # digits5 lists its domains in its own order, emoji_domains as "styles"
        (root / STAMP).write_text(json.dumps({"domains": list(DOMAINS[name]), "styles": list(DOMAINS[name])}))
    return root


def test_every_built_dataset_is_in_the_registry_and_has_a_builder():
    builders = REPO / "hpcfed" / "builders"
    for name, spec in BUILT.items():
        assert name in DATASETS and name in DOMAINS
        module = spec.command.split()[2]
        assert module.startswith("hpcfed.builders.") and (builders / f"{module.split('.')[-1]}.py").is_file()


def test_reading_never_imports_the_builders(tmp_path):
    """In a fresh interpreter: every built dataset read through load_listing, then no hpcfed.builders module."""
    roots = {name: str(fake_tree(tmp_path / name, name)) for name in BUILT}
    real = [name for name, spec in BUILT.items() if (data_cache_dir() / spec.folder / STAMP).is_file()]
    script = (
        "import json, sys\n"
        "from hpcfed.data import load_listing\n"
        f"for name, root in json.loads({json.dumps(json.dumps(roots))}).items():\n"
        "    assert len(load_listing(name, root=root)) > 0, name\n"
        f"for name in {real!r}:\n"
        "    assert len(load_listing(name)) > 0, name\n"
        "print(sorted(m for m in sys.modules if m.startswith('hpcfed.builders')))\n"
    )
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip() == "[]", f"reading imported builder modules: {proc.stdout}"


def test_hand_made_trees_read_like_the_builders_wrote_them(tmp_path):
    emoji = load_listing("emoji_domains", root=str(fake_tree(tmp_path / "e", "emoji_domains")))
    assert emoji.domain_names == ("noto", "twemoji") and emoji.class_names == ("first class", "second class")
    assert emoji.subset is None and len(emoji) == 8
    some = load_listing("emoji_domains", root=str(tmp_path / "e"), domains=["twemoji", "noto"])
    assert some.domain_names == ("twemoji", "noto")  # the requested order
    digits = fake_tree(tmp_path / "d", "digits5_offline")
    assert load_listing("digits5_offline", root=str(digits)).domain_names == ("mnist", "uci_digits", "handfont")
    picked = load_listing("digits5_offline", root=str(digits), domains=["handfont", "mnist"])
    assert picked.domain_names == ("mnist", "handfont")  # the builder's order, whatever order was asked
    fashion = load_listing("fashion_mnist", root=str(fake_tree(tmp_path / "f", "fashion_mnist")))
    assert fashion.domain_names == ("all",) and set(fashion.domains.tolist()) == {0}
    assert np.bincount(fashion.subset).tolist() == [4, 0, 4]  # train 0, test 2
    assert all(p.startswith("train/") == (s == 0) for p, s in zip(fashion.paths, fashion.subset, strict=True))


def test_missing_or_unfinished_tree_names_the_path_and_the_command(tmp_path, monkeypatch):
    for name, spec in BUILT.items():
        root = tmp_path / name
        with pytest.raises(DataError) as missing:
            read_built(name, str(root))
        assert f"'{spec.command} --out {root}'" in str(missing.value) and "make data" not in str(missing.value)
        fake_tree(root, name, stamp=False)  # classnames.txt and images, but the build never finished
        with pytest.raises(DataError, match=f"not built at {root} .*no {STAMP} stamp"):
            read_built(name, str(root))
    monkeypatch.setenv("HPCFED_DATA", str(tmp_path / "cache"))
    with pytest.raises(DataError, match="or 'make data'"):  # the default tree: set-up builds it there
        load_listing("emoji_domains")


def test_requested_domains_are_checked_against_the_built_tree(tmp_path):
    emoji = fake_tree(tmp_path / "e", "emoji_domains")
    with pytest.raises(DataError, match=r"no domain\(s\) \['symbola'\]; choose from \['noto', 'twemoji'\], or "
                                        r"build them too .* --styles noto,twemoji,symbola'"):
        load_listing("emoji_domains", root=str(emoji), domains=["symbola"])
    tux = fake_tree(tmp_path / "t", "tuxpaint")
    with pytest.raises(DataError, match=r"choose from \['photo'\]$"):
        load_listing("tuxpaint", root=str(tux), domains=["clipart"])


def test_class_names_file_overrides_the_built_names(tmp_path):
    tree = fake_tree(tmp_path / "o", "openclipart")
    names = tmp_path / "names.txt"
    names.write_text("a_cls\tapple\nb_cls\tbus\n")
    assert read_built("openclipart", tree, class_names_file=names).class_names == ("apple", "bus")

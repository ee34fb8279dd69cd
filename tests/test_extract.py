"""The frozen-prefix feature cache: the split of the image tower is exact, training from the cache gives the
metrics of training from images, and a cache that does not belong to the run is refused."""

from __future__ import annotations

import os
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

from hpcfed.extract.prefix import EMBEDDING, CachedVisual, TextPrefixCache, find_cut, frozen_prefix
from hpcfed.methods import METHODS
from hpcfed.models import create_backbone

from conftest import HPCFED, make_image_tree, run_mpi, write_config


def attached(method: str, **options):
    torch.manual_seed(0)
    clip, _, tokenizer = create_backbone("hpcfed-tiny", None)
    m = METHODS[method](options)
    added = m.attach(clip, torch.Generator().manual_seed(1))
    return clip, m, added, tokenizer


@pytest.mark.parametrize("method, options, expected", [
    ("pfedmma", {"adapter_start": 3}, 2),  # first adapted block (1-based 3)
    ("plora", {}, 0),  # LoRA on every block: only the patch embedding is frozen before it
    ("promptfl", {}, EMBEDDING),  # image tower untouched
    ("fedclip", {}, EMBEDDING),
    ("fedotp", {}, 4),  # reads the patch tokens: stop after the last block
])
def test_the_cut_is_where_the_method_first_touches_the_image_tower(method, options, expected):
    clip, m, added, _ = attached(method, **options)
    assert find_cut(clip, added, m.image_tokens).block == expected


def test_a_method_training_the_patch_embedding_has_no_prefix_to_cache():
    clip, m, added, _ = attached("pfedmma")
    added["stem"] = torch.nn.Linear(1, 1)
    clip.visual.conv1.extra = added["stem"]
    with pytest.raises(ValueError, match="outside its transformer blocks"):
        find_cut(clip, added, False)


@pytest.mark.parametrize("method", ["pfedmma", "plora", "promptfl", "fedotp"])
def test_prefix_then_cached_tower_equals_the_whole_tower(method):
    clip, m, added, _ = attached(method)
    clip.eval()
    images = torch.randn(5, 3, 64, 64)
    with torch.no_grad():
        full = clip.visual(images)
        clip.visual.output_tokens = True
        full_tokens = clip.visual(images)[1] if m.image_tokens else None
        clip.visual.output_tokens = False
    cut = find_cut(clip, added, m.image_tokens)
    cached = CachedVisual(clip.visual, cut)
    with torch.no_grad():
        torch.testing.assert_close(cached(frozen_prefix(clip.visual, images, cut)), full, rtol=1e-5, atol=1e-6)
        if full_tokens is not None:
            cached.output_tokens = True
            torch.testing.assert_close(cached(frozen_prefix(clip.visual, images, cut))[1], full_tokens)


def test_text_prefix_is_reused_for_the_same_prompts_and_gradients_still_reach_the_adapters():
    clip, m, added, tokenizer = attached("pfedmma", adapter_start=3)
    tokens = tokenizer(["a photo of a cat.", "a photo of a dog."])
    reference = clip.encode_text(tokens)
    clip.transformer = TextPrefixCache(clip.transformer, added)
    assert clip.transformer.cut == 2
    first, second = clip.encode_text(tokens), clip.encode_text(tokens)
    torch.testing.assert_close(first, reference)
    torch.testing.assert_close(second, reference)
    assert len(clip.transformer.entries) == 1  # computed once, reused
    second.sum().backward()
    assert added["text_down"]["0"].weight.grad is not None
    other = tokenizer(["a photo of a fish."])
    assert clip.encode_text(other).shape == (1, reference.shape[1]) and len(clip.transformer.entries) == 2


def metrics(path: Path) -> dict[str, np.ndarray]:
    with h5py.File(path, "r") as f:
        return {k: f[f"metrics/client/{k}"][:] for k in f["metrics/client"]}


def assert_same_metrics(a: Path, b: Path, atol: float) -> None:
    ma, mb = metrics(a), metrics(b)
    for name in ma:
        np.testing.assert_allclose(ma[name], mb[name], atol=atol, rtol=0, equal_nan=True, err_msg=name)


@pytest.fixture(scope="module")
def tree(tmp_path_factory) -> Path:
    return make_image_tree(tmp_path_factory.mktemp("extract") / "tree", per_class=12)


def test_training_from_the_cache_gives_the_metrics_of_training_from_images(tmp_path, tree):
    # With augmentation on: the K fixed views make the cached and the image path see the same pixels.
    common = {"rounds": 2, "train.augment": True, "train.augment_views": 2, "extract.dir": str(tmp_path / "cache")}
    images = write_config(tmp_path / "images.yaml", tree, **common)
    exact = write_config(tmp_path / "exact.yaml", tree, **common, **{"extract.enabled": True,
                                                                     "extract.dtype": "float32"})
    half = write_config(tmp_path / "half.yaml", tree, **common, **{"extract.enabled": True})
    made = run_mpi(3, [str(HPCFED), "extract", str(exact)])  # two client ranks extract a slice each
    assert made.returncode == 0, made.stderr
    assert "extracting the frozen prefix (hidden states entering image block 2" in made.stdout
    assert "and 2 views of" in made.stdout
    runs = {config: run_mpi(2, [str(HPCFED), "train", str(config)]) for config in (images, exact, half)}
    for r in runs.values():
        assert r.returncode == 0, r.stderr
    assert "using feature cache" in runs[exact].stdout
    assert "extracting the frozen prefix" in runs[half].stdout  # train makes a missing cache itself
    assert_same_metrics(tmp_path / "images.h5", tmp_path / "exact.h5", atol=1e-5)
    with h5py.File(next(p for p in (tmp_path / "cache").glob("*.h5") if h5py.File(p, "r")["features"].dtype ==
                        np.float16), "r") as f:
        assert f["features"].shape[0] == len(f["eval_index"]) + 2 * len(f["view_index"])
    ma, mb = metrics(tmp_path / "images.h5"), metrics(tmp_path / "half.h5")  # fp16 features: close, not equal
    np.testing.assert_allclose(ma["train_loss"], mb["train_loss"], atol=2e-2, equal_nan=True)
    assert np.nanmean(np.abs(ma["test_accuracy"] - mb["test_accuracy"])) < 0.05


def test_a_stale_or_foreign_cache_is_refused_before_training(tmp_path):
    tree = make_image_tree(tmp_path / "tree", per_class=8)
    config = write_config(tmp_path / "run.yaml", tree, rounds=1, **{"extract.enabled": True,
                                                                      "extract.dir": str(tmp_path / "cache")})
    made = run_mpi(2, [str(HPCFED), "extract", str(config)])
    assert made.returncode == 0, made.stderr
    cache = next((tmp_path / "cache").glob("*.h5"))
    before = cache.read_bytes()
    image = next(tree.rglob("*.png"))
    os.utime(image, ns=(image.stat().st_atime_ns, image.stat().st_mtime_ns + 10**9))  # an image replaced in place
    r = run_mpi(2, [str(HPCFED), "train", str(config)])
    assert r.returncode != 0
    assert "is stale" in r.stderr and "--overwrite" in r.stderr and "Traceback" not in r.stderr
    assert cache.read_bytes() == before and not (tmp_path / "run.h5").with_suffix(".h5.ckpt").exists()
    with h5py.File(cache, "a") as f:  # a file under the key that was made for something else
        f.attrs["parts"] = f.attrs["parts"].replace('"views": 0', '"views": 3')
    r = run_mpi(2, [str(HPCFED), "train", str(config)])
    assert r.returncode != 0 and "made for other settings (views differ)" in r.stderr
    redo = run_mpi(2, [str(HPCFED), "extract", str(config), "--overwrite"])
    assert redo.returncode == 0, redo.stderr
    with h5py.File(cache, "r") as f:  # rebuilt under the same key, for this run's settings
        assert '"views": 0' in f.attrs["parts"]


@pytest.mark.parametrize("method", ["pfedmma", "plora", "promptfl"])
def test_cutting_the_text_context_after_the_last_eot_changes_no_feature(method):
    from hpcfed.models import trim_text_context

    clip, m, added, tokenizer = attached(method)
    tokens = tokenizer(m.prompt_texts(["cat", "ice cream", "dog"], "a photo of a {}."))
    reference = m.text_features(clip, tokens)
    length = trim_text_context(clip, [tokens])
    assert length == int(tokens.argmax(-1).max()) + 1 < tokens.shape[1]
    torch.testing.assert_close(m.text_features(clip, tokens[:, :length]), reference, rtol=1e-5, atol=1e-6)


def test_an_extract_dir_that_cannot_be_made_stops_every_rank_with_the_fix(tmp_path):
    tree = make_image_tree(tmp_path / "tree", per_class=8)
    (tmp_path / "a_file").write_text("not a directory")
    config = write_config(tmp_path / "run.yaml", tree, rounds=1, **{"extract.enabled": True,
                                                                      "extract.dir": str(tmp_path / "a_file" / "c")})
    r = run_mpi(2, [str(HPCFED), "train", str(config)])
    assert r.returncode != 0
    assert "extract.dir" in r.stderr and "writable directory" in r.stderr and "Traceback" not in r.stderr
    with h5py.File(tmp_path / "run.h5", "r") as f:
        assert "metrics" not in f  # stopped before any training

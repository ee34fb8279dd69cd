"""The zero-shot evaluation sets (all built at set-up time; none is trained on with labels) and their prompts."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from hpcfed.data.listing import Listing

EMOJI_TEMPLATES = ("a drawing of {}.", "an emoji of {}.", "a picture of {}.", "an icon of {}.")
PHOTO_TEMPLATES = ("a photo of a {}.",)
EVAL_SEED = 0
MNIST_EVAL = 2000  # fixed random subset size of the MNIST-like sets (as in offline-data.md §2.3)


def article(name: str) -> str:
    return ("an " if name[0] in "aeiou" else "a ") + name


@dataclass
class EvalSet:
    name: str
    paths: list[str]  # absolute
    labels: np.ndarray
    classes: list[str]  # prompt text per class, after the article where the templates need one
    templates: tuple[str, ...]
    invert: bool = False  # MNIST-like: light-on-dark -> dark-on-white, like every other set


def _from_listing(name: str, lst: Listing, idx: np.ndarray | None, templates, art: bool, invert=False) -> EvalSet:
    idx = np.arange(len(lst)) if idx is None else idx
    classes = [article(c.lower()) if art else c.lower() for c in lst.class_names]
    return EvalSet(name, [str(lst.root / lst.paths[i]) for i in idx], lst.labels[idx], classes, templates, invert)


def animal_eval_indices(n: int) -> np.ndarray:
    """The fixed Animal-MNIST evaluation subset; the rest may be used for unlabelled distillation."""
    return np.sort(np.random.default_rng(EVAL_SEED).permutation(n)[:MNIST_EVAL])


def eval_sets(which: list[str] | None = None) -> list[EvalSet]:
    from hpcfed.builders.emoji_domains import STYLES  # every style, in the order of the card's rows
    from hpcfed.data.registry import load_listing

    out = []
    for style in STYLES:
        if which and f"emoji/{style}" not in which:
            continue
        lst = load_listing("emoji_domains", domains=[style])
        out.append(_from_listing(f"emoji/{style}", lst, None, EMOJI_TEMPLATES, art=True))
    if not which or "tuxpaint" in which:
        out.append(_from_listing("tuxpaint", load_listing("tuxpaint"), None, PHOTO_TEMPLATES, art=False))
    if not which or "openclipart" in which:
        lst = load_listing("openclipart")
        out.append(_from_listing("openclipart", lst, None, EMOJI_TEMPLATES, art=True))
    if not which or "fashion_mnist" in which:
        lst = load_listing("fashion_mnist")
        test = np.flatnonzero(lst.subset == 2)
        idx = np.sort(np.random.default_rng(EVAL_SEED).permutation(test)[:MNIST_EVAL])
        out.append(_from_listing("fashion_mnist", lst, idx, PHOTO_TEMPLATES, art=False, invert=True))
    if not which or "animal_mnist" in which:
        lst = load_listing("animal_mnist")
        out.append(_from_listing("animal_mnist", lst, animal_eval_indices(len(lst)), PHOTO_TEMPLATES, art=False,
                                 invert=True))
    return out


def load_pil(es: EvalSet) -> list:
    """RGB images on white (MNIST-like sets inverted to dark-on-white), at their stored size."""
    from PIL import Image, ImageOps

    from hpcfed.builders.emoji_domains import on_white

    out = []
    for p in es.paths:
        im = on_white(Image.open(p))
        out.append(ImageOps.invert(im) if es.invert else im)
    return out


def load_images(es: EvalSet, size: int) -> np.ndarray:
    """uint8 [N, size, size, 3] (bicubic resize, as open_clip's preprocess does)."""
    from PIL import Image

    return np.stack([np.asarray(im.resize((size, size), Image.Resampling.BICUBIC)) for im in load_pil(es)])


def scores(pred: np.ndarray, labels: np.ndarray, n_classes: int) -> dict[str, float]:
    recalls = [float((pred[labels == c] == c).mean()) for c in range(n_classes) if (labels == c).any()]
    return {"acc": float((pred == labels).mean()), "bal": float(np.mean(recalls)),
            "top_share": float(np.bincount(pred, minlength=n_classes).max() / len(pred))}

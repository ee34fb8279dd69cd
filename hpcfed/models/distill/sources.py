"""Unlabelled training images and the text corpus, from permissively licensed registry packages only.

Images (uint8, on white): every emoji of emoji-datasource (not only the benchmark's 20 classes) in the TRAIN_STYLES
(Noto Apache-2.0, Fluent flat/colour MIT) and as Microsoft's Fluent 3D renders (MIT; shaded objects, the nearest
thing to product photos the registries hold under such a licence); EmojiOne Monotone's black glyphs (CC-BY-4.0,
credited in the model card); Openclipart object folders (public domain);
random crops of scikit-image's CC0 and public-domain photos; Fashion-MNIST train split (MIT) and the Animal-MNIST
images outside its fixed evaluation subset (MIT), inverted to dark-on-white. No label of any evaluation set is
read: the emoji and MNIST-like images are used as pixels only.
Unseen in any form: the Twemoji, Fluent line-art, OpenMoji and Symbola styles, and the Tux Paint photos.
"""

from __future__ import annotations

import io
import random
from pathlib import Path

import numpy as np

TRAIN_STYLES = ("noto", "fluent_flat", "fluent_color")
UNSEEN_STYLES = ("twemoji", "fluent_line", "openmoji", "symbola")
MNIST_TRAIN = 2000  # per MNIST-like set: 800 left Fashion-/Animal-MNIST at 0.67/0.47 of the teacher
FLUENT_3D = "@lobehub/fluent-emoji-3d@1.1.0"  # MIT: Fluent Emoji 3D as 256 px WebP named by code point
MONOTONE = "@iconify-json/emojione-monotone@1.2.1"  # CC-BY-4.0: black glyphs, the look of the unseen glyph fonts
# Openclipart folders beyond the benchmark's object folders: more objects for the teacher to name (no flags,
# shapes, patterns or gradients: the teacher's targets for those say little).
EXTRA_CLIPART = ("computer/icons", "recreation", "people", "unsorted", "decorations", "geography/astronomy",
                 "signs_and_symbols/clocks")
SKIMAGE = "scikit-image==0.26.0"
# The photos in scikit-image's wheel whose docstrings say CC0 or public domain (motorcycle and coins do not).
PHOTOS = {"astronaut.png": "public domain (NASA)", "chelsea.png": "CC0", "coffee.png": "CC0",
          "rocket.jpg": "public domain (SpaceX)", "camera.png": "CC0", "hubble_deep_field.jpg": "public domain (NASA)",
          "brick.png": "CC0", "grass.png": "CC0", "gravel.png": "CC0"}
PHOTO_CROPS = 48  # random crops per photo: too few photos to do without

TEMPLATES = ("a photo of a {}.", "a drawing of a {}.", "an emoji of a {}.", "an icon of a {}.", "a sketch of a {}.",
             "{}", "a black and white drawing of a {}.", "a cartoon {}.", "a picture of a {}.", "a clip art of a {}.")


def _emoji_names(emoji_data) -> dict[str, str]:
    """code point -> name of every non-skin-tone emoji in emoji-datasource's emoji.json."""
    from hpcfed.builders.emoji_domains import skin_toned
    from hpcfed.builders.fetch import read_tar_json

    rows = read_tar_json(emoji_data, "package/emoji.json")
    return {str(e["unified"]).lower(): str(e.get("name") or e.get("short_name")).lower()
            for e in rows if e.get("unified") and not skin_toned(str(e["unified"]).lower())}


def emoji_images(size: int) -> tuple[np.ndarray, list[str]]:
    """All non-skin-tone emoji of emoji-datasource, rendered in each training style; returns images and names."""
    from hpcfed.builders.emoji_domains import EMOJI_DATA, STYLES, code_keys, has_icon, icon_svg, load_chars
    from hpcfed.builders.fetch import fetch_all, npm_pack, read_tar_json
    from hpcfed.builders.openclipart import render_svg_texts
    from hpcfed.builders.tree import default_root

    downloads = default_root("downloads")
    needed = list(TRAIN_STYLES)
    fetched = fetch_all(npm_pack, [EMOJI_DATA] + [STYLES[s].spec for s in needed], downloads)
    emoji = _emoji_names(fetched[EMOJI_DATA])
    tarballs = {s: fetched[STYLES[s].spec] for s in needed}
    svgs, names = [], []
    for style in TRAIN_STYLES:
        icons = read_tar_json(tarballs[style], "package/icons.json")
        chars = load_chars(style, tarballs)
        for code, name in emoji.items():
            icon = next((chars[k] for k in code_keys(code) if k in chars and has_icon(icons, chars[k])), None)
            if icon:
                svgs.append(icon_svg(icons, icon, size))
                names.append(name)
    imgs, keep = render_svg_texts(svgs, size)
    return imgs, [names[i] for i in keep]


def fluent3d_images(size: int) -> tuple[np.ndarray, list[str]]:
    """Fluent Emoji 3D renders of every non-skin-tone emoji, on white; returns images and names."""
    import tarfile

    from PIL import Image

    from hpcfed.builders.emoji_domains import EMOJI_DATA, on_white, without_fe0f
    from hpcfed.builders.fetch import fetch_all, npm_pack
    from hpcfed.builders.tree import default_root
    from hpcfed.errors import DataError

    fetched = fetch_all(npm_pack, [EMOJI_DATA, FLUENT_3D], default_root("downloads"))
    names = {without_fe0f(code): name for code, name in _emoji_names(fetched[EMOJI_DATA]).items()}
    imgs, out_names = [], []
    with tarfile.open(fetched[FLUENT_3D], "r|gz") as tf:
        for info in tf:
            stem = Path(info.name).stem
            if not (info.isfile() and info.name.startswith("package/assets/") and without_fe0f(stem) in names):
                continue
            im = on_white(Image.open(io.BytesIO(tf.extractfile(info).read())))
            imgs.append(np.asarray(im.resize((size, size), Image.Resampling.LANCZOS)))
            out_names.append(names[without_fe0f(stem)])
    if not imgs:
        raise DataError(f"{fetched[FLUENT_3D]} has no package/assets/<code point>.webp of any emoji: not the layout of "
                        f"{FLUENT_3D}; delete it to fetch it again")
    return np.stack(imgs), out_names


def monotone_images(size: int) -> tuple[np.ndarray, list[str]]:
    """Every EmojiOne Monotone icon (black on white; its icon names are the emoji names, hyphenated)."""
    from hpcfed.builders.emoji_domains import icon_svg
    from hpcfed.builders.fetch import fetch_all, npm_pack, read_tar_json
    from hpcfed.builders.openclipart import render_svg_texts
    from hpcfed.builders.tree import default_root
    from hpcfed.errors import DataError

    tarball = fetch_all(npm_pack, [MONOTONE], default_root("downloads"))[MONOTONE]
    icons = read_tar_json(tarball, "package/icons.json")
    if not (icons or {}).get("icons"):
        raise DataError(f"{tarball} has no package/icons.json with icons: not the layout of {MONOTONE}; delete it to "
                        f"fetch it again")
    names = sorted(icons["icons"])
    imgs, keep = render_svg_texts([icon_svg(icons, n, size) for n in names], size)
    return imgs, [names[i].replace("-", " ") for i in keep]


def photo_crops(size: int, seed: int) -> np.ndarray:
    """PHOTO_CROPS random square crops (5-100% of the area of the largest square) of each photo in PHOTOS."""
    from PIL import Image

    from hpcfed.builders.fetch import pip_download, read_zip_member
    from hpcfed.builders.tree import default_root

    wheel = pip_download(SKIMAGE, default_root("downloads"))
    rng = np.random.default_rng(seed)
    out = []
    for name in PHOTOS:
        im = Image.open(io.BytesIO(read_zip_member(wheel, f"skimage/data/{name}"))).convert("RGB")
        w, h = im.size
        for _ in range(PHOTO_CROPS):
            side = int(min(w, h) * np.sqrt(rng.uniform(0.05, 1.0)))
            x, y = rng.integers(0, w - side + 1), rng.integers(0, h - side + 1)
            crop = im.crop((x, y, x + side, y + side)).resize((size, size), Image.Resampling.BICUBIC)
            out.append(np.asarray(crop))
    return np.stack(out)


def clipart_images(size: int) -> tuple[np.ndarray, list[str]]:
    from hpcfed.builders.openclipart import TRAIN_FOLDERS, caption, render_many, svg_root, svgs_in
    from hpcfed.builders.tree import default_root

    root, _ = svg_root(default_root("downloads"))
    paths = svgs_in(root, TRAIN_FOLDERS + EXTRA_CLIPART)
    imgs, keep = render_many(paths, size)
    return imgs, [caption(paths[i]) for i in keep]


def mnist_like_images(size: int, seed: int) -> np.ndarray:
    from PIL import Image

    from hpcfed.data.registry import load_listing
    from hpcfed.models.distill.evalsets import animal_eval_indices

    rng = np.random.default_rng(seed)
    fashion = load_listing("fashion_mnist")
    f_idx = rng.permutation(np.flatnonzero(fashion.subset == 0))[:MNIST_TRAIN]  # official train split only
    animal = load_listing("animal_mnist")
    a_pool = np.setdiff1d(np.arange(len(animal)), animal_eval_indices(len(animal)))
    a_idx = rng.permutation(a_pool)[:MNIST_TRAIN]
    out = []
    for lst, idx in ((fashion, f_idx), (animal, a_idx)):
        for i in idx:
            im = Image.open(Path(lst.root) / lst.paths[i]).convert("L").resize((size, size), Image.Resampling.BICUBIC)
            out.append(np.repeat(255 - np.asarray(im)[..., None], 3, axis=2))
    return np.stack(out)


def text_corpus(concepts: list[str], class_phrases: list[str], seed: int, per_concept: int = 3) -> list[str]:
    """Sentences for text distillation: each concept in a few random templates; the zero-shot class phrases (no
    image labels, just the words) in every template, since those are the sentences the student must get right."""
    from hpcfed.models.distill.evalsets import EMOJI_TEMPLATES, PHOTO_TEMPLATES

    rng = random.Random(seed)
    out = []
    for c in dict.fromkeys(concepts):
        out += [t.format(c) for t in rng.sample(TEMPLATES, per_concept)]
    for c in class_phrases:
        out += [t.format(c) for t in TEMPLATES] + [t.format(c) for t in PHOTO_TEMPLATES]
        out += [t.format(c) for t in EMOJI_TEMPLATES]  # the emoji templates take the phrase with its article
    return list(dict.fromkeys(out))

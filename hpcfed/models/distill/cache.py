"""Stage 1: render the training images, make augmented views, and cache the teacher's targets for every view.

The student never calls the teacher while training: every view's ConSE embedding and the MiniLM embedding of
every corpus sentence are computed here once and saved to one .pt file.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch
import torch.nn.functional as F

from hpcfed.models.distill import sources

LINE_ART_SHARE = 0.15


def line_art(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    """Black ink on white: the outlines (Sobel magnitude above a per-image threshold, thickened by one pixel) and
    the darkest areas of each image, the look of monochrome glyph fonts such as Symbola, which stay unseen."""
    grey = x.mean(1, keepdim=True)
    kx = torch.tensor([[-1.0, 0, 1], [-2, 0, 2], [-1, 0, 1]]) / 4
    k = torch.stack([kx, kx.T])[:, None]
    grad = F.conv2d(F.pad(grey, (1, 1, 1, 1), mode="replicate"), k).norm(dim=1, keepdim=True)
    ink = (grad > threshold[:, None, None, None]) | (grey < 0.2)
    ink = F.max_pool2d(ink.float(), 3, stride=1, padding=1)
    return (1 - ink).expand_as(x).clone()


def augment(x: torch.Tensor, g: torch.Generator) -> torch.Tensor:
    """One random view per image, float [N, 3, H, W] in [0, 1]: scale / rotate / shift on white, line art, colour
    jitter, grey, low resolution, and the looks of a photograph that drawings lack (shading, sensor noise, blur).
    The teacher labels exactly this view, so strong changes are safe."""
    n, _, h, w = x.shape
    u = lambda lo, hi: lo + (hi - lo) * torch.rand(n, generator=g)  # noqa: E731
    ang, scale = u(-0.3, 0.3), u(0.7, 1.15)
    cos, sin = torch.cos(ang) / scale, torch.sin(ang) / scale
    flip = torch.where(torch.rand(n, generator=g) < 0.5, -1.0, 1.0)
    theta = torch.stack([torch.stack([cos * flip, -sin, u(-0.15, 0.15)], 1),
                         torch.stack([sin * flip, cos, u(-0.15, 0.15)], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    x = 1 - F.grid_sample(1 - x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)  # white fill
    ink = torch.rand(n, generator=g) < LINE_ART_SHARE
    threshold = u(0.05, 0.2)
    if ink.any():
        x[ink] = line_art(x[ink], threshold[ink])
    grey = x.mean(1, keepdim=True)
    sat = u(0.3, 1.4)[:, None, None, None] * (torch.rand(n, generator=g) > 0.25)[:, None, None, None]
    x = grey + sat * (x - grey)  # saturation 0 = greyscale for a quarter of the views
    x = (x - 0.5) * u(0.7, 1.3)[:, None, None, None] + 0.5 + u(-0.15, 0.15)[:, None, None, None]
    low = torch.rand(n, generator=g) < 0.15
    if low.any():
        small = F.interpolate(x[low], scale_factor=0.4, mode="bilinear", align_corners=False)
        x[low] = F.interpolate(small, size=(h, w), mode="bilinear", align_corners=False)
    yy, xx = torch.meshgrid(torch.linspace(0, 1, h), torch.linspace(0, 1, w), indexing="ij")
    a = u(0, 2 * math.pi)[:, None, None]
    ramp = (torch.cos(a) * xx + torch.sin(a) * yy - torch.cos(a).clamp(max=0) - torch.sin(a).clamp(max=0))
    ramp = ramp / ramp.amax((1, 2), keepdim=True)  # 0..1 across the image in a random direction
    light = u(0, 0.4) * (torch.rand(n, generator=g) < 0.3)
    x = x * (1 - light[:, None, None, None] * ramp[:, None])
    blur = torch.rand(n, generator=g) < 0.2
    if blur.any():
        x[blur] = F.avg_pool2d(x[blur], 3, stride=1, padding=1, count_include_pad=False)
    sigma = u(0.01, 0.05) * (torch.rand(n, generator=g) < 0.3)
    x = x + sigma[:, None, None, None] * torch.randn(x.shape, generator=g)
    return x.clamp(0, 1)


def caption_targets(captions: list[str], text_teacher) -> tuple[torch.Tensor, torch.Tensor]:
    """Per image, the index of its caption in a bank of the distinct captions' MiniLM embeddings (-1: none).
    Captions are emoji names and Openclipart file-name words, never the labels of an evaluation set."""
    distinct = sorted({c for c in captions if c})
    where = {c: i for i, c in enumerate(distinct)}
    index = torch.tensor([where.get(c, -1) for c in captions])
    return index, text_teacher.encode(distinct)


def build_cache(out: str, size: int, views: int, teacher_res: int, seed: int, batch: int = 64) -> dict:
    from open_clip.zero_shot_metadata import IMAGENET_CLASSNAMES

    from hpcfed.models.distill.evalsets import article, eval_sets
    from hpcfed.models.distill.teachers import ImageTeacher, TextTeacher

    torch.manual_seed(seed)
    t0 = time.time()
    flat, flat_names = sources.emoji_images(size)
    e3d, e3d_names = sources.fluent3d_images(size)
    mono, mono_names = sources.monotone_images(size)
    clip, clip_names = sources.clipart_images(size)
    photos = sources.photo_crops(size, seed)
    mnist = sources.mnist_like_images(size, seed)
    counts = {"emoji": len(flat), "emoji_3d": len(e3d), "emoji_monotone": len(mono), "clipart": len(clip),
              "photo_crops": len(photos), "mnist_like": len(mnist)}
    images = np.concatenate([flat, e3d, mono, clip, photos, mnist])
    emoji_names = flat_names + e3d_names + mono_names
    print(f"images: {counts} ({time.time() - t0:.0f} s)", flush=True)

    # The same caption for an emoji in every style: one target per concept. Photos and MNIST-like: none.
    captions = [f"an emoji of {article(n)}." for n in emoji_names] + \
        [f"a clip art of {article(c)}." for c in clip_names] + [""] * (len(photos) + len(mnist))
    text_t = TextTeacher()
    phrases = sorted({c for es in eval_sets() for c in es.classes})
    bare = sorted({p.split(" ", 1)[1] if p.startswith(("a ", "an ")) else p for p in phrases})
    concepts = list(IMAGENET_CLASSNAMES) + emoji_names + clip_names + bare
    corpus = sources.text_corpus(concepts, phrases, seed)
    t1 = time.time()
    text_emb = text_t.encode(corpus)
    bank = text_t.encode([f"a photo of a {c}." for c in dict.fromkeys(concepts)])  # concept bank for the KL term
    caption_index, caption_bank = caption_targets(captions, text_t)
    print(f"text: {len(corpus)} sentences, bank {len(bank)} ({time.time() - t1:.0f} s)", flush=True)

    img_t = ImageTeacher(text_t, resolution=teacher_res)
    g = torch.Generator().manual_seed(seed)
    n = len(images)
    view_emb = torch.zeros(views, n, 384, dtype=torch.float16)
    view_img = np.zeros((views, *images.shape), np.uint8)
    t2 = time.time()
    for i in range(0, n, batch):
        x = torch.from_numpy(images[i : i + batch]).permute(0, 3, 1, 2).float() / 255
        for v in range(views):
            xv = x if v == 0 else augment(x, g)  # view 0 is the clean image
            view_emb[v, i : i + batch] = img_t.embed(img_t.logits(xv)).half()
            view_img[v, i : i + batch] = (xv * 255).round().byte().permute(0, 2, 3, 1).numpy()
        if (i // batch) % 20 == 0:
            rate = (i + len(x)) * views / (time.time() - t2)
            print(f"teacher {i + len(x)}/{n} images x {views} views, {rate:.0f} views/s, "
                  f"eta {math.ceil((n - i) * views / rate)} s", flush=True)
    cache = {"images": torch.from_numpy(view_img), "image_targets": view_emb,
             "corpus": corpus, "text_targets": text_emb.half(), "bank": bank.half(),
             "caption_index": caption_index, "caption_bank": caption_bank.half(),
             "meta": {"size": size, "views": views, "teacher_res": teacher_res, "seed": seed,
                      "counts": counts,
                      "seconds": {"render": t1 - t0, "text": t2 - t1, "teacher": time.time() - t2}}}
    torch.save(cache, out)
    print(f"cache written to {out}: {cache['meta']}", flush=True)
    return cache

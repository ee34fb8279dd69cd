"""Backbones through open_clip: an architecture name (open_clip's or one in models/configs), and weights
from an open_clip tag in the local cache, a checkpoint file, or none (random init)."""

from __future__ import annotations

import logging
import os
from pathlib import Path

from hpcfed.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"  # checkpoints that ship with hpcfed (see their model cards)


def local_weights(pretrained: str | None) -> Path | None:
    """The checkpoint file `pretrained` names: a path, or the file name of a checkpoint shipped with hpcfed."""
    if pretrained is None:
        return None
    for candidate in (Path(pretrained).expanduser(), WEIGHTS_DIR / pretrained):
        if candidate.is_file():
            return candidate
    return None


def register_hpcfed_configs() -> None:
    import open_clip

    for path in sorted(CONFIG_DIR.glob("*.json")):
        if path.stem not in open_clip.list_models():
            open_clip.add_model_config(path)


def known_models() -> list[str]:
    import open_clip

    register_hpcfed_configs()
    return open_clip.list_models()


def cached_weight(name: str, tag: str) -> str | None:
    """The local file open_clip would load for (name, tag), or None when it is not in the local cache."""
    import open_clip
    from huggingface_hub import try_to_load_from_cache

    cfg = open_clip.get_pretrained_cfg(name, tag)
    if cfg.get("hf_hub"):
        # open_clip's form is 'org/model/[filename]', and it prefers a .safetensors twin of the file.
        repo, filename = os.path.split(cfg["hf_hub"])
        stem = Path(filename or "open_clip_pytorch_model.bin").stem
        for candidate in (f"{stem}.safetensors", stem.replace("pytorch_model", "model") + ".safetensors",
                          filename or "open_clip_pytorch_model.bin"):
            hit = try_to_load_from_cache(repo, candidate)
            if isinstance(hit, str):
                return hit
    if cfg.get("url"):
        legacy = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "clip" / Path(cfg["url"]).name
        if legacy.is_file():
            return str(legacy)
    return None


def weights_file(name: str, pretrained: str | None) -> Path | None:
    """The file the weights of (name, pretrained) are read from: a checkpoint (a path or one shipped with hpcfed),
    the open_clip cache entry of a tag, or None for random init or a tag that is not cached."""
    if pretrained is None:
        return None
    found = local_weights(pretrained) or cached_weight(name, pretrained)
    return Path(found) if found else None


def check_model(name: str, pretrained: str | None) -> None:
    """Fail at once, before any launch work, when the architecture or its weights are not available here."""
    import open_clip

    if name not in known_models():
        raise ConfigError("model.name", f"unknown architecture {name!r}",
                          f"use an open_clip name such as ViT-B-16, or one of hpcfed's: "
                          f"{sorted(p.stem for p in CONFIG_DIR.glob('*.json'))}")
    if pretrained is None or local_weights(pretrained):
        return
    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        raise ConfigError("model.pretrained", f"{pretrained!r} is neither a file nor an open_clip tag of {name}",
                          f"give a checkpoint path, the name of a file in {WEIGHTS_DIR}, null for random init, "
                          f"or one of {tags or ['(no tags)']}")
    if cached_weight(name, pretrained) is None:
        raise ConfigError("model.pretrained", f"weights {name}/{pretrained} are not in the local cache (compute "
                          "nodes have no network)",
                          f"on a login node with network run: python -c \"import open_clip; "
                          f"open_clip.create_model('{name}', pretrained='{pretrained}')\" to fill "
                          "~/.cache/huggingface, then keep HF_HUB_OFFLINE=1 on compute nodes")


def create_backbone(name: str, pretrained: str | None, device: str = "cpu"):
    """Return (model, eval preprocess, tokenizer) with every backbone parameter frozen."""
    import open_clip

    register_hpcfed_configs()
    local_file = local_weights(pretrained)
    weights = str(local_file) if local_file else pretrained
    # open_clip warns on the root logger for every random init; on N ranks that is N lines of noise.
    root_logger, level = logging.getLogger(), logging.getLogger().level
    root_logger.setLevel(logging.ERROR)
    try:
        model, _, preprocess = open_clip.create_model_and_transforms(name, pretrained=weights, device=device)
    finally:
        root_logger.setLevel(level)
    model.eval()
    for p in model.parameters():
        p.requires_grad_(False)
    return model, preprocess, open_clip.get_tokenizer(name)


def trim_text_context(clip, token_sets: list) -> int | None:
    """CLIP's text tower is causal and reads only the end-of-text token, so positions after the last EOT of any
    prompt never reach a feature. Cutting the context there (77 -> about 10 tokens for short class prompts) makes
    the text tower several times cheaper and changes no feature. Returns the kept length, or None when the model
    does not pool the EOT token under a causal mask (then nothing is cut)."""
    import torch

    mask = getattr(clip, "attn_mask", None)
    if getattr(clip, "text_pool_type", None) != "argmax" or mask is None:
        return None
    if not torch.equal(torch.isinf(mask), torch.ones_like(mask, dtype=torch.bool).triu(1)):
        return None  # not a causal mask
    length = max(int(t.argmax(dim=-1).max()) for t in token_sets) + 1
    if length < mask.shape[0]:
        clip.attn_mask = mask[:length, :length].clone()
        clip.positional_embedding = torch.nn.Parameter(clip.positional_embedding[:length].detach().clone(),
                                                       requires_grad=False)
    return length

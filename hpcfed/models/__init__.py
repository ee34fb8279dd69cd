"""Backbones through open_clip: an architecture name (open_clip's or one in models/configs), and weights
from an open_clip tag in the local cache, a checkpoint file, or none (random init)."""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path

from hpcfed.errors import ConfigError

CONFIG_DIR = Path(__file__).parent / "configs"
WEIGHTS_DIR = Path(__file__).parent / "weights"  # checkpoints that ship with hpcfed (see their model cards)
WEIGHT_SUFFIXES = (".pt", ".pth", ".bin", ".ckpt", ".safetensors", ".npz", ".npy")


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


SHIPPED, FILE, CACHE = "shipped", "file", "cache"


@dataclass(frozen=True)
class WeightsSource:
    """Where the weights of (name, pretrained) are read from: a file shipped with hpcfed, a file the config
    names, or open_clip's local cache entry of a tag."""

    path: Path
    origin: str  # SHIPPED, FILE or CACHE
    name: str
    pretrained: str

    def where(self) -> str:
        return {SHIPPED: f"shipped with hpcfed ({self.path})", FILE: f"from the file {self.path}",
                CACHE: f"from the local open_clip cache ({self.path})"}[self.origin]

    def label(self) -> str:
        """The file as an error names it."""
        return {SHIPPED: f"weights file {self.path} (shipped with hpcfed)", FILE: f"weights file {self.path}",
                CACHE: f"cached weights file {self.path} of {self.name}/{self.pretrained}"}[self.origin]


def weights_source(name: str, pretrained: str | None) -> WeightsSource | None:
    """Where the weights come from; None for random init, or a tag that is not in the local cache."""
    local = local_weights(pretrained)
    if local is not None:
        shipped = local.resolve().parent == WEIGHTS_DIR.resolve()
        return WeightsSource(local.absolute(), SHIPPED if shipped else FILE, name, pretrained)
    cached = cached_weight(name, pretrained) if pretrained is not None else None
    return WeightsSource(Path(cached), CACHE, name, pretrained) if cached else None


def weights_file(name: str, pretrained: str | None) -> Path | None:
    """The file the weights of (name, pretrained) are read from: a checkpoint (a path or one shipped with hpcfed),
    the open_clip cache entry of a tag, or None for random init or a tag that is not cached."""
    source = weights_source(name, pretrained)
    return source.path if source else None


def fetch_command(name: str, tag: str) -> str:
    return f"python -c \"import open_clip; open_clip.create_model('{name}', pretrained='{tag}')\""


def check_model(name: str, pretrained: str | None) -> WeightsSource | None:
    """Fail at once, before any launch work, when the architecture or its weights are not usable here; else
    where the weights come from (None: random init)."""
    if name not in known_models():
        raise ConfigError("model.name", f"unknown architecture {name!r}",
                          f"use an open_clip name such as ViT-B-16, or one of hpcfed's: "
                          f"{sorted(p.stem for p in CONFIG_DIR.glob('*.json'))}")
    if pretrained is None:
        return None
    source = weights_source(name, pretrained)
    if source is None:
        _weights_not_found(name, pretrained)
    check_weights_file(source)
    return source


def _weights_not_found(name: str, pretrained: str) -> None:
    import open_clip

    tags = open_clip.list_pretrained_tags_by_model(name)
    if pretrained not in tags:
        looks_like_path = os.sep in pretrained or Path(pretrained).suffix in WEIGHT_SUFFIXES
        where = f": there is no file {Path(pretrained).expanduser().absolute()}" if looks_like_path else ""
        raise ConfigError("model.pretrained", f"{pretrained!r} is neither a file nor an open_clip tag of {name}{where}",
                          f"give a checkpoint path (a relative one is read from the directory hpcfed runs in), the "
                          f"name of a file in {WEIGHTS_DIR}, null for random init, or one of {tags or ['(no tags)']}")
    raise ConfigError("model.pretrained", f"weights {name}/{pretrained} are not in the local cache (compute "
                      "nodes have no network)",
                      f"on a login node with network run: {fetch_command(name, pretrained)} to fill "
                      "~/.cache/huggingface, then keep HF_HUB_OFFLINE=1 on compute nodes")


def check_weights_file(source: WeightsSource) -> None:
    """A ConfigError naming the file and the fix when it would not load as the weights of `source.name`."""
    from hpcfed.models.weightfile import DAMAGED, OTHER_ARCHITECTURE, UnusableWeights, check_fits

    try:
        check_fits(source.path, source.name)
    except UnusableWeights as e:
        if e.kind == DAMAGED:
            fix = {SHIPPED: "restore it from the hpcfed repository (git checkout -- hpcfed/models/weights) or "
                            "rebuild it with 'make tiny-clip'",
                   FILE: f"copy {source.path.name} again from where it came from (an interrupted copy or a full "
                         "disk leaves such a file), or set model.pretrained: null for random init",
                   CACHE: f"delete {source.path} and fetch it again on a login node: "
                          f"{fetch_command(source.name, source.pretrained)}"}[source.origin]
        elif e.kind == OTHER_ARCHITECTURE:
            fix = (f"set model.name to the architecture these weights were trained as, or point model.pretrained "
                   f"at weights of {source.name}")
        else:
            fix = ("give a file that holds only the state dict, as saved by torch.save(model.state_dict(), path); "
                   "hpcfed loads nothing else")
        raise ConfigError("model.pretrained", f"{source.label()} {e}", fix) from None


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

"""Will a weights file load into an architecture? Checked before launch, without reading tensor data: the pickle
and zip index are read memory-mapped (a safetensors file: its header), and the keys and shapes are compared with
the architecture's state dict built on the meta device, after the renames open_clip.load_checkpoint applies."""

from __future__ import annotations

import functools
import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from hpcfed.torchfile import UnreadableTorchFile, load_torch_file

UNCHECKED_SUFFIXES = (".npz", ".npy")  # big_vision (SigLIP) weights: open_clip converts them its own way
DAMAGED, NOT_TENSORS, OTHER_ARCHITECTURE = "damaged", "not tensors", "other architecture"


class UnusableWeights(Exception):
    """Why a weights file cannot be used; the text continues "<file> ...". `kind` chooses the fix."""

    def __init__(self, reason: str, kind: str):
        self.kind = kind
        super().__init__(reason)


def check_fits(path: Path, name: str) -> None:
    """Raise UnusableWeights when `path` would not load as the weights of architecture `name`."""
    if path.suffix in UNCHECKED_SUFFIXES:
        return
    state = _state_dict(_read(path))
    model = _meta_model(name)
    if model is not None:  # an architecture that cannot be built offline is left to open_clip at load
        _compare(state, model, name)


def _read(path: Path) -> Any:
    if path.suffix == ".safetensors":
        return _read_safetensors(path)
    try:
        return load_torch_file(path)
    except UnreadableTorchFile as e:
        raise UnusableWeights(str(e), DAMAGED if e.damaged else NOT_TENSORS) from None


def _read_safetensors(path: Path) -> dict:
    """Keys and shapes from the header, as meta tensors."""
    import torch
    from safetensors import safe_open

    if path.stat().st_size == 0:
        raise UnusableWeights("is empty (0 bytes)", DAMAGED)
    try:
        with safe_open(str(path), "pt") as f:
            return {k: torch.empty(f.get_slice(k).get_shape(), device="meta") for k in f.keys()}
    except Exception as e:  # SafetensorError and OSError, depending on where the file breaks off
        raise UnusableWeights(f"is truncated or not a safetensors file ({str(e)[:160]})", DAMAGED) from None


def _state_dict(content: Any) -> dict:
    """The parameter dict inside `content`, unwrapped as open_clip.load_state_dict does."""
    import torch

    if isinstance(content, Mapping) and "state_dict" in content:
        content = content["state_dict"]
    if isinstance(content, torch.Tensor):
        raise UnusableWeights(f"holds a single tensor of shape {list(content.shape)}, not a state dict (parameter "
                              "names mapped to tensors)", NOT_TENSORS)
    if not isinstance(content, Mapping) or not content:
        what = "an empty mapping" if isinstance(content, Mapping) else f"a {type(content).__name__}"
        raise UnusableWeights(f"holds {what}, not a state dict (parameter names mapped to tensors)", NOT_TENSORS)
    for key, value in content.items():
        if not isinstance(key, str) or not isinstance(value, torch.Tensor):
            raise UnusableWeights(f"is not a state dict: its entry {key!r} is of type {type(value).__name__}, not a "
                                  "tensor", NOT_TENSORS)
    if next(iter(content)).startswith("module"):  # saved from a DistributedDataParallel wrapper
        content = {k[7:]: v for k, v in content.items()}
    return dict(content)


@functools.lru_cache(maxsize=4)
def _meta_model(name: str):
    """The architecture with shapes and no data (about 1 s for ViT-B-16), or None when it cannot be built here."""
    import open_clip

    from hpcfed.models import register_hpcfed_configs

    register_hpcfed_configs()
    # open_clip warns on the root logger that no weights were loaded: true, and beside the point here.
    root_logger, level = logging.getLogger(), logging.getLogger().level
    root_logger.setLevel(logging.ERROR)
    try:
        return open_clip.create_model(name, device="meta")
    except Exception:  # e.g. a Hugging Face text tower whose config is not cached on this machine
        return None
    finally:
        root_logger.setLevel(level)


def _compare(state: dict, model, name: str) -> None:
    from open_clip.convert import convert_state_dict
    from open_clip.model import convert_to_custom_text_state_dict

    # the key renames of open_clip.load_checkpoint, so that every file it accepts passes here
    state = convert_state_dict(model, state)
    if "positional_embedding" in state and not hasattr(model, "positional_embedding"):
        state = convert_to_custom_text_state_dict(state)
    expected = {k: v.shape for k, v in model.state_dict().items()}
    optional = {"logit_bias"}  # filled with zeros by open_clip when absent
    missing = [k for k in expected if k not in state and k not in optional]
    unexpected = [k for k in state if k not in expected and k != "text.transformer.embeddings.position_ids"]
    reshaped = [k for k in expected if k in state and not _same_shape(k, state[k].shape, expected[k])]
    parts = []
    if missing:
        parts.append(f"{len(missing)} of its {len(expected)} parameters are missing (e.g. {missing[0]})")
    if unexpected:
        parts.append(f"{len(unexpected)} of the file's {len(state)} keys are not {name}'s (e.g. {unexpected[0]})")
    if reshaped:
        k = reshaped[0]
        parts.append(f"{len(reshaped)} parameters have other shapes (e.g. {k}: {list(state[k].shape)} in the file, "
                     f"{list(expected[k])} in {name})")
    if parts:
        raise UnusableWeights(f"does not fit architecture {name}: " + "; ".join(parts), OTHER_ARCHITECTURE)


def _same_shape(key: str, found, wanted) -> bool:
    if key.endswith("positional_embedding"):
        return True  # open_clip interpolates position embeddings to the model's grid and context
    if key in ("logit_scale", "logit_bias"):
        return found.numel() == wanted.numel()  # open_clip reshapes a scalar to a 1-element vector and back
    return found == wanted

"""Learned text context (CoOp): "X X ... X {class}." with the n_ctx X embeddings replaced by vectors that
are trained; the image tower and the rest of the text tower stay frozen (methods.md §3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from open_clip.transformer import text_global_pool
from torch import nn

from hpcfed.methods.base import Method
from hpcfed.options import option


def encode_text_from_embeddings(clip: nn.Module, embeddings: torch.Tensor, tokens: torch.Tensor) -> torch.Tensor:
    """open_clip's encode_text from token embeddings on, so learned vectors can stand in for some tokens."""
    cast = clip.transformer.get_cast_dtype()
    x = embeddings.to(cast) + clip.positional_embedding.to(cast)
    x = clip.transformer(x, attn_mask=clip.attn_mask)
    x = clip.ln_final(x)
    x = text_global_pool(x, tokens, clip.text_pool_type, eos_token_id=getattr(clip, "text_eos_id", None))
    x = clip.text_projection(x) if isinstance(clip.text_projection, nn.Linear) else x @ clip.text_projection
    return F.normalize(x, dim=-1)


def prompted_text_features(clip: nn.Module, tokens: torch.Tensor, context: torch.Tensor) -> torch.Tensor:
    """Text features with `context` [n_ctx, width] in token positions 1..n_ctx (after the start token)."""
    embeddings = clip.token_embedding(tokens)
    n_ctx = context.shape[0]
    embeddings = torch.cat([embeddings[:, :1], context.unsqueeze(0).expand(len(tokens), -1, -1),
                            embeddings[:, 1 + n_ctx:]], dim=1)
    return encode_text_from_embeddings(clip, embeddings, tokens)


class Prompt(Method):
    """One learned context shared by all classes; subclasses choose what is shared."""

    # CoOp-style federated prompt learning as in the FedPGP/FedOTP/pFedMMA code bases: SGD lr 0.001 with Dassl's
    # momentum 0.9 and weight decay 5e-4, batch 32 (methods.md 3, PromptFL).
    recipe = {"optimizer": "sgd", "lr": 0.001, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 32}
    recipe_source = "PromptFL in the FedPGP/FedOTP/pFedMMA code (SGD lr 0.001, Dassl momentum/wd), methods.md 3"

    batch_is_shots = False  # FedPGP, FedOTP and pFedMoAP train with batch = #shots in their few-shot scripts

    @classmethod
    def reference_recipe(cls, options: dict, shots: int) -> dict:
        return {**cls.recipe, **({"batch_size": shots} if cls.batch_is_shots and shots > 0 else {})}

    @dataclass
    class Options:
        n_ctx: int = option(16, ge=1, le=64, fix="use e.g. 16 (CoOp)")
        ctx_std: float = option(0.02, gt=0, fix="use e.g. 0.02")  # init N(0, std^2), as CoOp

    def attach(self, clip: nn.Module, generator: torch.Generator) -> nn.Module:
        width = clip.token_embedding.weight.shape[1]
        ctx = torch.randn(self.options.n_ctx, width, generator=generator) * self.options.ctx_std
        self.added = nn.ParameterDict({"ctx": nn.Parameter(ctx)})
        return self.added

    def prompt_texts(self, class_names: list[str], template: str) -> list[str]:
        # The class name goes last after the placeholders; the dataset template is replaced by the context.
        return [" ".join(["X"] * self.options.n_ctx) + f" {name}." for name in class_names]

    def text_features(self, clip: nn.Module, text_tokens: torch.Tensor) -> torch.Tensor:
        return prompted_text_features(clip, text_tokens, self.added["ctx"])

"""LoRA on the attention projections (q, k, v, out) of both towers: W' = W + (alpha/r) B A, with A [r, d_in]
Kaiming-uniform and B [d_out, r] zero at the start, so training starts from the frozen model (§2.3)."""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hpcfed.errors import ConfigError
from hpcfed.methods.base import Method
from hpcfed.options import option

TARGETS = ("q", "k", "v", "o")


class LoRAFactors(nn.Module):
    def __init__(self, d_in: int, d_out: int, rank: int, generator: torch.Generator):
        super().__init__()
        self.A = nn.Parameter(torch.empty(rank, d_in))
        nn.init.kaiming_uniform_(self.A, a=math.sqrt(5), generator=generator)
        self.B = nn.Parameter(torch.zeros(d_out, rank))

    def delta(self, x: torch.Tensor) -> torch.Tensor:
        return (x @ self.A.T) @ self.B.T


class LoRAAttention(nn.Module):
    """Stands in for an nn.MultiheadAttention (same call signature as open_clip uses it) and adds the LoRA
    deltas to the frozen q/k/v/out projections."""

    def __init__(self, attn: nn.MultiheadAttention, factors: nn.ModuleDict, scale: float, dropout: float):
        super().__init__()
        self.attn, self.factors, self.scale, self.dropout = attn, factors, scale, dropout

    def _delta(self, x: torch.Tensor, name: str) -> torch.Tensor:
        # CLIP-LoRA drops out the input of the LoRA branch only, in training; the frozen path sees all of x.
        return self.scale * self.factors[name].delta(F.dropout(x, self.dropout, training=self.training))

    def _project(self, x: torch.Tensor, which: int, name: str) -> torch.Tensor:
        d = self.attn.embed_dim
        out = F.linear(x, self.attn.in_proj_weight[which * d:(which + 1) * d],
                       self.attn.in_proj_bias[which * d:(which + 1) * d])
        return out + self._delta(x, name) if name in self.factors else out

    def forward(self, query, key, value, need_weights=False, attn_mask=None):
        if not self.attn.batch_first:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        b, n, d = query.shape
        heads = self.attn.num_heads
        q, k, v = (self._project(t, i, name).view(b, -1, heads, d // heads).transpose(1, 2)
                   for i, (t, name) in enumerate(zip((query, key, value), ("q", "k", "v"), strict=True)))
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=attn_mask).transpose(1, 2).reshape(b, n, d)
        result = self.attn.out_proj(out)
        if "o" in self.factors:
            result = result + self._delta(out, "o")
        if not self.attn.batch_first:
            result = result.transpose(0, 1)
        return result, None


class LoRA(Method):
    """LoRA factors on every block of both towers; subclasses choose which factors are shared."""

    # FedVLM publishes no recipe (methods.md 2.2); CLIP-LoRA's is the reference for LoRA on CLIP: AdamW lr 2e-4,
    # weight decay 1e-2, betas (0.9, 0.999), batch 32, rank 2, alpha 1, dropout 0.25 before the LoRA branch.
    # Its cosine schedule over all iterations has no round-wise equivalent here: the lr stays constant.
    recipe = {"optimizer": "adamw", "lr": 2e-4, "weight_decay": 1e-2, "adam_betas": [0.9, 0.999], "adam_eps": 1e-8,
              "batch_size": 32}
    recipe_source = "CLIP-LoRA (Zanella & Ben Ayed 2024, run_utils.py and lora.py), methods.md 2.3"

    @dataclass
    class Options:
        rank: int = option(2, ge=1, fix="use e.g. 2 or 8")
        lora_alpha: float = 1.0  # scaling alpha / r (CLIP-LoRA's choice, methods.md §2.3)
        dropout: float = option(0.25, ge=0, lt=1, fix="use e.g. 0.25 (CLIP-LoRA) or 0 for none")
        targets: list[str] = field(default_factory=lambda: list(TARGETS))

    @classmethod
    def check_options(cls, options: dict, given: set[str]) -> None:
        bad = [t for t in options["targets"] if t not in TARGETS]
        if bad or not options["targets"]:
            raise ConfigError("method.targets", f"unknown or empty LoRA targets {options['targets']}",
                              f"choose a non-empty subset of {list(TARGETS)}")

    def attach(self, clip: nn.Module, generator: torch.Generator) -> nn.Module:
        o = self.options
        self.added = nn.ModuleDict()
        for tower, blocks in (("visual", clip.visual.transformer.resblocks), ("text", clip.transformer.resblocks)):
            for j, block in enumerate(blocks):
                d = block.attn.embed_dim
                factors = nn.ModuleDict({t: LoRAFactors(d, d, o.rank, generator) for t in TARGETS if t in o.targets})
                self.added[f"{tower}_{j}"] = factors
                block.attn = LoRAAttention(block.attn, factors, o.lora_alpha / o.rank, o.dropout)
        return self.added

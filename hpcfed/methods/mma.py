"""Multi-modal adapter (MMA, Yang et al. CVPR'24), as used by pFedMMA (methods.md §1.2).

At each upper block j of both towers a parallel branch is added:
    h = GS(x, a) -> ln_1_j (frozen) -> ReLU(down_o) -> ReLU(shared_j) -> up_o * a -> GS(., 1/a)
    x_out = block_j(x) + h
`shared_j` is one Linear(r, r) used by both towers; down/up are modality specific."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from hpcfed.errors import ConfigError
from hpcfed.methods.base import Method
from hpcfed.options import option


class GradScale(torch.autograd.Function):
    """Identity forward, gradient times `scale` backward. With the pair GS(a) ... GS(1/a) the branch adds
    a*A(x) to the stream while A's weights get gradients as if a were 1 (methods.md §1.2)."""

    @staticmethod
    def forward(ctx, x: torch.Tensor, scale: float) -> torch.Tensor:
        ctx.scale = scale
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad: torch.Tensor):
        return grad * ctx.scale, None


def kaiming_linear(d_in: int, d_out: int, generator: torch.Generator) -> nn.Linear:
    layer = nn.Linear(d_in, d_out)
    nn.init.kaiming_normal_(layer.weight, mode="fan_out", nonlinearity="relu", generator=generator)
    nn.init.zeros_(layer.bias)
    return layer


class AdaptedBlock(nn.Module):
    """Wraps one open_clip ResidualAttentionBlock with the MMA branch in parallel."""

    def __init__(self, block: nn.Module, down: nn.Linear, shared: nn.Module, up: nn.Linear, alpha: float):
        super().__init__()
        self.block, self.down, self.shared, self.up, self.alpha = block, down, shared, up, alpha

    def __getattr__(self, name: str):
        # open_clip reads attributes of resblocks[0] (e.g. mlp.c_fc for the cast dtype): delegate them.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["block"], name)

    def forward(self, x: torch.Tensor, *args, **kwargs) -> torch.Tensor:
        h = GradScale.apply(x, self.alpha)
        h = self.block.ln_1(h)
        h = torch.relu(self.down(h))
        h = self.shared(h)
        h = self.up(h) * self.alpha
        h = GradScale.apply(h, 1.0 / self.alpha)
        return self.block(x, *args, **kwargs) + h


def adapted_blocks(n_layers: int, adapter_start: int | None) -> list[int]:
    """0-based indices of adapted blocks. `adapter_start` is 1-based as in MMA (5 for blocks 5..12 of 12);
    by default the same fraction (the top two thirds) of a shallower tower."""
    start = adapter_start if adapter_start is not None else 1 + round(n_layers * 4 / 12)
    return list(range(start - 1, n_layers))


def tower_width(blocks: nn.ModuleList) -> int:
    return blocks[0].ln_1.normalized_shape[0]


class MMA(Method):
    """MMA adapters on both towers; subclasses choose what is shared."""

    recipe = {"optimizer": "sgd", "lr": 0.001, "momentum": 0.9, "weight_decay": 5e-4, "batch_size": 32,
              "local_epochs": 2}
    recipe_source = ("pFedMMA code (SGD lr 0.001, momentum 0.9, wd 5e-4, batch 32) and paper (2 local epochs), "
                     "methods.md 1.5")

    @dataclass
    class Options:
        adapter_dim: int = option(32, ge=1, fix="use e.g. 32")
        # 1-based first adapted block; null: 5 of 12, the same fraction of a shallower tower
        adapter_start: int | None = option(None, ge=1, fix="use e.g. 5 for blocks 5..12 of a 12-block tower")
        alpha: float = option(0.001, gt=0, fix="use e.g. 0.001")

    def attach(self, clip: nn.Module, generator: torch.Generator) -> nn.Module:
        o = self.options
        towers = {"visual": clip.visual.transformer.resblocks, "text": clip.transformer.resblocks}
        depth = min(len(blocks) for blocks in towers.values())
        if o.adapter_start is not None and o.adapter_start > depth:
            raise ConfigError("method.adapter_start", f"{o.adapter_start} is past the last block ({depth})",
                              f"choose a block between 1 and {depth}")
        # Pair the top blocks of the two towers; each pair shares one projection.
        n_adapted = len(adapted_blocks(depth, o.adapter_start))
        added = self.added = nn.ModuleDict({"shared": nn.ModuleDict()})
        for level in range(n_adapted):
            added["shared"][str(level)] = nn.Sequential(kaiming_linear(o.adapter_dim, o.adapter_dim, generator),
                                                        nn.ReLU())
        for tower, blocks in towers.items():
            width = tower_width(blocks)
            down, up = nn.ModuleDict(), nn.ModuleDict()
            for level, j in enumerate(range(len(blocks) - n_adapted, len(blocks))):
                down[str(level)] = kaiming_linear(width, o.adapter_dim, generator)
                up[str(level)] = kaiming_linear(o.adapter_dim, width, generator)
                blocks[j] = AdaptedBlock(blocks[j], down[str(level)], added["shared"][str(level)], up[str(level)],
                                         o.alpha)
            added[f"{tower}_down"], added[f"{tower}_up"] = down, up
        return added

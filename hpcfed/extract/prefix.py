"""Where a method's trainable parameters first touch each tower, and the frozen computation before that point.

The cut is read off the attached model, never from the method's name: the first image block that holds an
added parameter (pFedMMA: the first adapted block; LoRA: block 0), or, when the image tower is untouched
(prompt methods, zero-shot, FedCLIP), its final embedding; or the last block's tokens when the method reads
them (`Method.image_tokens`, FedOTP). Everything before the cut is the same for every client, round and
epoch, so `hpcfed extract` computes it once."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

EMBEDDING = -1  # cut after the whole image tower: the cached feature is the image embedding


@dataclass(frozen=True)
class Cut:
    block: int  # hidden states entering this image block (0-based); EMBEDDING for the final embedding
    n_blocks: int

    def describe(self) -> str:
        if self.block == EMBEDDING:
            return "image embeddings (the image tower is frozen)"
        if self.block == self.n_blocks:
            return f"tokens after the last image block ({self.n_blocks} of {self.n_blocks} frozen)"
        return f"hidden states entering image block {self.block + 1} ({self.block} of {self.n_blocks} frozen)"


def _is_vit(visual: nn.Module) -> bool:
    # open_clip's VisionTransformer; other towers (ModifiedResNet, timm) can only cache their embedding.
    return all(hasattr(visual, a) for a in ("_embeds", "_pool", "transformer", "proj"))


def find_cut(clip: nn.Module, added: nn.Module, needs_tokens: bool) -> Cut:
    """The first point of the image tower that the method's parameters (`added`) can change."""
    ids = {id(p) for p in added.parameters()}
    visual = clip.visual
    if not _is_vit(visual):
        if any(id(p) in ids for p in visual.parameters()) or needs_tokens:
            raise ValueError("the method trains or reads the inside of a non-ViT image tower; only the final "
                             "embedding of such a tower can be cached")
        return Cut(EMBEDDING, 0)
    blocks = visual.transformer.resblocks
    in_blocks = {id(p) for p in blocks.parameters()}
    if any(id(p) in ids and id(p) not in in_blocks for p in visual.parameters()):
        raise ValueError("the method trains a part of the image tower outside its transformer blocks (patch "
                         "embedding, ln_post or proj), which the cache cannot split")
    for i, block in enumerate(blocks):
        if any(id(p) in ids for p in block.parameters()):
            return Cut(i, len(blocks))
    return Cut(len(blocks) if needs_tokens else EMBEDDING, len(blocks))


def _run_blocks(transformer: nn.Module, x: torch.Tensor, start: int, stop: int) -> torch.Tensor:
    """open_clip's transformer loop over blocks[start:stop] on batch-first `x`."""
    if not transformer.batch_first:
        x = x.transpose(0, 1)
    for block in transformer.resblocks[start:stop]:
        x = block(x, attn_mask=None)
    return x if transformer.batch_first else x.transpose(0, 1)


@torch.no_grad()
def frozen_prefix(visual: nn.Module, images: torch.Tensor, cut: Cut) -> torch.Tensor:
    """What the image tower computes before `cut`: [B, tokens, width] hidden states, or [B, dim] embeddings."""
    if cut.block == EMBEDDING:
        return visual(images)
    return _run_blocks(visual.transformer, visual._embeds(images), 0, cut.block)


class CachedVisual(nn.Module):
    """Stands in for `clip.visual` when training from the cache: takes the cached prefix output and runs the rest
    of open_clip's VisionTransformer.forward (blocks from the cut, pooling, projection)."""

    def __init__(self, visual: nn.Module, cut: Cut):
        super().__init__()
        self.visual, self.cut = visual, cut
        self.output_tokens = getattr(visual, "output_tokens", False)

    def __getattr__(self, name: str):
        # Methods read attributes of the tower (proj, transformer, ...): delegate them.
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["visual"], name)

    def forward(self, x: torch.Tensor):
        if self.cut.block == EMBEDDING:
            return x
        v = self.visual
        x = _run_blocks(v.transformer, x, self.cut.block, len(v.transformer.resblocks))
        pooled, tokens = v._pool(x)
        if v.proj is not None:
            pooled = pooled @ v.proj
        return (pooled, tokens) if self.output_tokens else pooled


class TextPrefixCache(nn.Module):
    """Wraps the text transformer: the blocks before the first one holding a trainable parameter are run once per
    distinct input (the class prompts of a task) and remembered. An input that needs gradients (learned prompt
    context) or that was not seen before is computed in full, so the result is always exactly the same."""

    def __init__(self, transformer: nn.Module, added: nn.Module, max_entries: int = 8):
        super().__init__()
        ids = {id(p) for p in added.parameters()}
        blocks = transformer.resblocks
        self.transformer = transformer
        self.cut = next((i for i, b in enumerate(blocks) if any(id(p) in ids for p in b.parameters())), len(blocks))
        self.max_entries = max_entries
        self.entries: list[tuple[torch.Tensor, torch.Tensor]] = []  # (input, hidden states at the cut)

    def __getattr__(self, name: str):
        try:
            return super().__getattr__(name)
        except AttributeError:
            return getattr(self._modules["transformer"], name)

    def _prefix(self, x: torch.Tensor, attn_mask) -> torch.Tensor:
        t = self.transformer
        x = x if t.batch_first else x.transpose(0, 1)
        for block in t.resblocks[:self.cut]:
            x = block(x, attn_mask=attn_mask)
        return x

    def forward(self, x: torch.Tensor, attn_mask: torch.Tensor | None = None) -> torch.Tensor:
        if self.cut == 0 or x.requires_grad:
            return self.transformer(x, attn_mask=attn_mask)
        hit = next((h for inp, h in self.entries if inp.shape == x.shape and torch.equal(inp, x)), None)
        if hit is None:
            with torch.no_grad():
                hit = self._prefix(x, attn_mask)
            self.entries = [(x.detach(), hit), *self.entries][:self.max_entries]
        t = self.transformer
        h = hit
        for block in t.resblocks[self.cut:]:
            h = block(h, attn_mask=attn_mask)
        return h if t.batch_first else h.transpose(0, 1)

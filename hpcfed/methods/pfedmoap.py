"""pFedMoAP (Luo et al., ICLR'25), methods.md §3: a CoOp prompt that is averaged across clients and also
published, so that other clients can download it as a fixed expert; each round a client takes K - 1 = 9 of the
other clients' latest prompts (nearest to its own last prompt in L2, random on first participation) and a local
attention gating network mixes the text features of all K experts per image.

    logits = lambda * logit_scale * <img, text_local> + logit_scale * cos(q, gate(q; experts' features))

with q the image feature sub-sampled 512 -> 128 by stride-4 slicing (the same slicing for the text features),
lambda = 0.5. Gating: multi-head attention, d = 128, 8 heads, 4 Linear(128, 128) (66,048 parameters), scores
scaled by 10, dropout 0.1 on the attention weights in training. Trainable per client: 8,192 + 66,048; per round
a participant uploads its prompt and downloads the global prompt plus 9 experts (8,192 + 9 x 8,192 floats).

Choices where methods.md is silent or the runtime differs from the reference:
- pool(img) in the second term is read as the same stride-4 sub-sampling as the gating query, and both sides
  of the inner product are L2-normalized so that logit_scale (100) turns it into a CLIP-scale logit;
- the attention scaling 10 replaces the usual 1/sqrt(head dim); the output projection's result is the gated
  text feature (no residual);
- the experts live in a non-trainable per-client parameter (it stays with the client); before the first round
  anyone has published, all experts are copies of the starting global prompt; with fewer than K - 1 other
  prompts published, the known ones (random order) are repeated to fill the K - 1 slots;
- one optimizer group: the reference trains the prompt with SGD lr 0.002 (cosine, warm-up) and the gating with
  SGD lr 0.01 (constant). Here the gating's gradients are multiplied by `gating_lr_ratio` (0.01 / 0.002 = 5),
  which equals the separate learning rate for SGD with or without momentum up to the weight-decay term and
  does nothing under Adam; the prompt's cosine schedule is not reproduced (constant lr)."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hpcfed.errors import ConfigError
from hpcfed.methods.base import METHODS
from hpcfed.methods.prompt import Prompt
from hpcfed.methods.prompt_sets import FrozenCache, embed_dim, prompt_set_features, seeded_linear
from hpcfed.options import option


class AttentionGate(nn.Module):
    """Multi-head attention from one image query to the K experts' features of every class."""

    def __init__(self, dim: int, heads: int, scaling: float, dropout: float, generator: torch.Generator):
        super().__init__()
        self.q, self.k, self.v, self.o = (seeded_linear(dim, dim, generator) for _ in range(4))
        self.heads, self.scaling, self.dropout = heads, scaling, dropout

    def forward(self, query: torch.Tensor, experts: torch.Tensor, train: bool) -> torch.Tensor:
        """query [B, g], experts [K, C, g] -> gated text features [B, C, g]."""
        b, (k, c, g), h = len(query), experts.shape, self.heads
        q = self.q(query).view(b, h, g // h)
        keys, values = self.k(experts).view(k, c, h, g // h), self.v(experts).view(k, c, h, g // h)
        weights = torch.softmax(self.scaling * torch.einsum("bhe,kche->bchk", q, keys), dim=-1)
        weights = F.dropout(weights, self.dropout, training=train)
        return self.o(torch.einsum("bchk,kche->bche", weights, values).reshape(b, c, g))


@METHODS.register("pfedmoap")
class PFedMoAP(Prompt):
    shared = ("params.prompt",)
    published = ("params.prompt",)
    recipe = {**Prompt.recipe, "lr": 0.002, "local_epochs": 5}
    recipe_source = ("pFedMoAP official code (prompt SGD lr 0.002 from PFEDMOAP/vit_b16.yaml, batch = #shots, "
                     "5 local epochs), methods.md 3")
    batch_is_shots = True

    @dataclass
    class Options(Prompt.Options):
        n_experts: int = option(10, ge=1, fix="use e.g. 10")  # K, the local prompt included
        gating_dim: int = option(128, ge=1, fix="use e.g. gating_dim 128 with 8 heads")
        heads: int = option(8, ge=1, fix="use e.g. 8 heads with gating_dim 128")
        scaling: float = option(10.0, gt=0, fix="keep the default")
        dropout: float = option(0.1, ge=0, lt=1, fix="use e.g. 0.1")
        lam: float = 0.5  # weight of the local prompt's plain CLIP logits
        # gating lr / prompt lr (0.01 / 0.002), see the module docstring
        gating_lr_ratio: float = option(5.0, gt=0, fix="keep the default")

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self.expert_text = FrozenCache()

    @classmethod
    def check_options(cls, options: dict, given: set[str]) -> None:
        super().check_options(options, given)
        if options["gating_dim"] % options["heads"]:
            raise ConfigError("method.gating_dim", f"{options['gating_dim']} must be a multiple of "
                              f"heads ({options['heads']})", "use e.g. gating_dim 128 with 8 heads")

    def attach(self, clip: nn.Module, generator: torch.Generator) -> nn.Module:
        o, width, d = self.options, clip.token_embedding.weight.shape[1], embed_dim(clip)
        if o.gating_dim > d:
            raise ConfigError("method.gating_dim", f"{o.gating_dim} exceeds the embedding width {d}",
                              f"use at most {d}")
        self.stride = d // o.gating_dim  # 512 -> 128: every 4th feature
        prompt = torch.randn(o.n_ctx, width, generator=generator) * o.ctx_std
        gate = AttentionGate(o.gating_dim, o.heads, o.scaling, o.dropout, generator)
        for p in gate.parameters():
            p.register_hook(lambda grad: grad * self.options.gating_lr_ratio)
        self.added = nn.ModuleDict({
            "params": nn.ParameterDict({
                "prompt": nn.Parameter(prompt),
                # Downloaded, fixed during local training, and kept per client by the runtime.
                "experts": nn.Parameter(prompt.expand(o.n_experts - 1, -1, -1).clone(), requires_grad=False)}),
            "gate": gate,
        })
        return self.added

    @property
    def _prompt(self) -> nn.Parameter:
        return self.added["params"]["prompt"]

    @property
    def _experts(self) -> nn.Parameter:
        return self.added["params"]["experts"]

    def _sub(self, features: torch.Tensor) -> torch.Tensor:
        return features[..., ::self.stride][..., :self.options.gating_dim]

    def text_features(self, clip: nn.Module, text_tokens: torch.Tensor) -> torch.Tensor:
        """[K, C, d]: the local prompt's class features first, then the K - 1 downloaded experts'."""
        local = prompt_set_features(clip, text_tokens, self._prompt.unsqueeze(0))
        if len(self._experts) == 0:
            return local
        experts = self.expert_text.get((text_tokens, self._experts),
                                       lambda: prompt_set_features(clip, text_tokens, self._experts))
        return torch.cat([local, experts])

    def logits(self, clip: nn.Module, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        scale = clip.logit_scale.exp()
        image = clip.encode_image(images, normalize=True)
        query = self._sub(image)
        gated = self.added["gate"](query, self._sub(text_features), train=clip.training)
        mixture = torch.einsum("bg,bcg->bc", F.normalize(query, dim=-1), F.normalize(gated, dim=-1))
        return self.options.lam * scale * image @ text_features[0].T + scale * mixture

    def upload_download_floats(self, n_shared: int) -> tuple[int, int]:
        # The download adds the K - 1 expert prompts to the global prompt (methods.md §1.3: 8,192 + 9 x 8,192).
        return n_shared, n_shared + self._experts.numel()

    @torch.no_grad()
    def before_local_training(self, client: int, published: torch.Tensor | None, known: torch.Tensor | None,
                              rng: np.random.Generator) -> None:
        slots = self.options.n_experts - 1
        if slots == 0:
            return
        others = [] if known is None else [j for j in torch.nonzero(known).flatten().tolist() if j != client]
        if not others:
            self._experts.copy_(self._prompt.expand(slots, -1, -1))  # nothing published yet
            return
        if bool(known[client]) and len(others) >= slots:
            distance = (published[others] - published[client]).norm(dim=1)
            chosen = [others[i] for i in torch.argsort(distance, stable=True)[:slots].tolist()]
        else:  # first participation, or too few prompts to choose from
            order = [others[i] for i in rng.permutation(len(others))]
            chosen = [order[i % len(order)] for i in range(slots)]
        self._experts.copy_(published[chosen].view_as(self._experts))

"""FedPGP (Cui et al., ICML'24), methods.md §3: client prompt ctx_i = sigma_G + U_i V_i with a shared sigma_G
[n_ctx, width] and local low-rank U_i [n_ctx, b], V_i [b, width] (b = 8: 12,416 trainable, 8,192 shared on
ViT-B/16). Loss = CE(sigma_G + U_i V_i) + mu * L_con, where L_con is a 2-way InfoNCE per class (tau = 0.5):
positive cos(f(anchor), f(sigma_G)), negative cos(f(sigma_G), f(sigma_G + U_i V_i)); the anchor is frozen CLIP's
encoding of the literal "X X .. X {class}." prompt, as in the official code. One prompt set (N = 1, §3)."""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpcfed.methods.base import METHODS
from hpcfed.methods.prompt import Prompt
from hpcfed.methods.prompt_sets import FrozenCache, prompt_set_features
from hpcfed.options import option


@METHODS.register("fedpgp")
class FedPGP(Prompt):
    shared = ("sigma",)
    recipe = {**Prompt.recipe, "local_epochs": 2}
    recipe_source = "FedPGP official script (SGD lr 0.001 constant, batch = #shots, 2 local epochs), methods.md 3"
    batch_is_shots = True

    @dataclass
    class Options(Prompt.Options):
        bottleneck: int = option(8, ge=1, fix="use e.g. 8")  # b: rank of U V (8 in the official scripts)
        mu: float = option(0.5, ge=0, fix="use e.g. 0.5")  # weight of the contrastive term (0.5 in the scripts)
        temperature: float = option(0.5, gt=0, fix="use e.g. 0.5")  # tau of the InfoNCE

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self.anchor = FrozenCache()

    def attach(self, clip: nn.Module, generator: torch.Generator) -> nn.Module:
        o, width = self.options, clip.token_embedding.weight.shape[1]

        def normal(*shape: int) -> nn.Parameter:
            return nn.Parameter(torch.randn(*shape, generator=generator) * o.ctx_std)

        self.added = nn.ParameterDict({"sigma": normal(o.n_ctx, width), "U": normal(o.n_ctx, o.bottleneck),
                                       "V": normal(o.bottleneck, width)})
        return self.added

    def _contexts(self) -> torch.Tensor:
        """[personalized sigma + U V, global sigma], encoded together in one text pass."""
        a = self.added
        return torch.stack([a["sigma"] + a["U"] @ a["V"], a["sigma"]])

    def text_features(self, clip: nn.Module, text_tokens: torch.Tensor) -> torch.Tensor:
        return prompt_set_features(clip, text_tokens, self._contexts()[:1])[0]

    def contrastive(self, clip: nn.Module, text_tokens: torch.Tensor, personal: torch.Tensor,
                    sigma: torch.Tensor) -> torch.Tensor:
        """L_con over the classes: the anchor is the positive of sigma_G, the personalized prompt its negative."""
        # The anchor depends only on frozen weights and the task's tokens: computed once per task.
        anchor = self.anchor.get((text_tokens,), lambda: clip.encode_text(text_tokens, normalize=True))
        positive = (anchor * sigma).sum(-1)  # all three are L2-normalized: dot = cosine
        negative = (sigma * personal).sum(-1)
        contrast = torch.stack([positive, negative], dim=1) / self.options.temperature
        return F.cross_entropy(contrast, torch.zeros(len(contrast), dtype=torch.long, device=contrast.device))

    def training_loss(self, clip: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      text_tokens: torch.Tensor) -> torch.Tensor:
        personal, sigma = prompt_set_features(clip, text_tokens, self._contexts())
        ce = F.cross_entropy(self.logits(clip, images, personal), labels)
        return ce + self.options.mu * self.contrastive(clip, text_tokens, personal, sigma)

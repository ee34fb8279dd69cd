"""FedCLIP (Lu et al., IEEE Data Eng. Bull. 2023), methods.md §3: the AttAI adapter on the image embedding,
a = Softmax(Linear(d, d)(Tanh(Linear(d, d)(f_img)))), f' = a * f_img (525,312 parameters for d = 512), averaged
across clients with nothing local. Loss: symmetric CLIP contrastive loss between the batch's f' and the text
features of its labels ("a picture of a {class}."); evaluation classifies f' against every class's text.

Choices where methods.md is silent: the adapter acts on the unnormalized embedding (f' is normalized
afterwards), and the contrastive targets are the diagonal even when two images of a batch share a class, as the
CLIP loss is usually written."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from hpcfed.methods.base import METHODS, Method
from hpcfed.methods.prompt_sets import FrozenCache, embed_dim, seeded_linear


@METHODS.register("fedclip")
class FedCLIP(Method):
    shared = ("*",)
    # The reference recreates Adam every round (reset_optimizer).
    recipe = {"optimizer": "adam", "lr": 5e-5, "adam_betas": [0.9, 0.98], "adam_eps": 1e-6, "weight_decay": 0.2,
              "reset_optimizer": True, "batch_size": 32}
    recipe_source = "FedCLIP official code (Adam lr 5e-5, betas 0.9/0.98, eps 1e-6, wd 0.2, per round), methods.md 3"

    def aggregation_weight(self, train_size: int) -> float:
        # The official server averages the clients' adapters with equal weights, whatever their sizes.
        return 1.0

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        self.texts = FrozenCache()

    def attach(self, clip: nn.Module, generator: torch.Generator) -> nn.Module:
        d = embed_dim(clip)
        self.added = nn.Sequential(seeded_linear(d, d, generator), nn.Tanh(), seeded_linear(d, d, generator),
                                   nn.Softmax(dim=-1))
        return self.added

    def prompt_texts(self, class_names: list[str], template: str) -> list[str]:
        return [f"a picture of a {name}." for name in class_names]

    def text_features(self, clip: nn.Module, text_tokens: torch.Tensor) -> torch.Tensor:
        # The text tower is frozen and FedCLIP leaves it alone, so the features depend on the tokens only.
        return self.texts.get((text_tokens,), lambda: clip.encode_text(text_tokens, normalize=True))

    def image_features(self, clip: nn.Module, images: torch.Tensor) -> torch.Tensor:
        features = clip.encode_image(images)
        return F.normalize(self.added(features) * features, dim=-1)

    def logits(self, clip: nn.Module, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        return clip.logit_scale.exp() * self.image_features(clip, images) @ text_features.T

    def training_loss(self, clip: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      text_tokens: torch.Tensor) -> torch.Tensor:
        text = self.text_features(clip, text_tokens)[labels]
        per_image = clip.logit_scale.exp() * self.image_features(clip, images) @ text.T
        target = torch.arange(len(labels), device=per_image.device)
        return (F.cross_entropy(per_image, target) + F.cross_entropy(per_image.T, target)) / 2

"""FedOTP (Li et al., CVPR'24), methods.md §3: two prompts of n_ctx tokens, prompt 0 global (averaged), prompt 1
local (16,384 trainable, 8,192 shared on ViT-B/16). An image is matched to a class by unbalanced optimal
transport between its M patch tokens (after ln_post and the image projection, L2-normalized, CLS dropped) and the
class's N = 2 prompt features: cost 1 - cos, an entropic plan T solved without gradient, logit =
logit_scale * sum(T * cos). Training and evaluation both use these OT logits.

The plan is the official code's COT iteration (token marginal at most 1/M, prompt marginal exactly
top_percent/N), written in the log domain: with eps = 0.01 the kernel exp(-cost/eps) reaches exp(-200) and
underflows float32. Consequently the stop test (mean change < thresh) is on log v, i.e. the relative change of
the prompt scaling, where the official code compares absolute changes of v (a choice: those depend on the
kernel's scale)."""

from __future__ import annotations

import math
from contextlib import contextmanager
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from hpcfed.errors import ConfigError
from hpcfed.methods.base import METHODS
from hpcfed.methods.prompt import Prompt
from hpcfed.methods.prompt_sets import prompt_set_features
from hpcfed.options import option


@torch.no_grad()
def unbalanced_plan(cost: torch.Tensor, eps: float, prompt_mass: float, thresh: float = 1e-3,
                    max_iter: int = 100) -> torch.Tensor:
    """Entropic plans [P, M, N] for P independent cost matrices [P, M, N]: rows (tokens) carry at most 1/M,
    columns (prompts) exactly prompt_mass/N, so prompt_mass (0.8) of the token mass is transported."""
    n_rows, n_cols = cost.shape[1:]
    log_k = -cost / eps
    log_a, log_b = math.log(1.0 / n_rows), math.log(prompt_mass / n_cols)
    log_u = torch.zeros(cost.shape[:2], dtype=cost.dtype, device=cost.device)
    log_v = torch.zeros((cost.shape[0], n_cols), dtype=cost.dtype, device=cost.device)
    for _ in range(max_iter):
        previous = log_v
        # u = min(a / (K v), 1): a row is scaled down only when it would carry more than its mass a.
        log_u = (log_a - torch.logsumexp(log_k + log_v.unsqueeze(1), dim=2)).clamp(max=0.0)
        log_v = log_b - torch.logsumexp(log_k + log_u.unsqueeze(2), dim=1)
        if (log_v - previous).abs().mean().item() < thresh:
            break
    return torch.exp(log_u.unsqueeze(2) + log_k + log_v.unsqueeze(1))


@contextmanager
def _with_tokens(visual: nn.Module):
    # open_clip's VisionTransformer returns (pooled, tokens) only while output_tokens is set; restore it so
    # every other caller of encode_image still gets the pooled feature.
    before = visual.output_tokens
    visual.output_tokens = True
    try:
        yield
    finally:
        visual.output_tokens = before


def patch_features(clip: nn.Module, images: torch.Tensor) -> torch.Tensor:
    """L2-normalized patch tokens [B, M, d] after ln_post and the image projection (CLS dropped)."""
    visual = clip.visual
    with _with_tokens(visual):
        _, tokens = visual(images)  # open_clip: after ln_post, not projected, CLS already split off
    return F.normalize(tokens @ visual.proj, dim=-1)


@METHODS.register("fedotp")
class FedOTP(Prompt):
    shared = ("ctx_global",)
    image_tokens = True  # optimal transport over patch tokens
    recipe = {**Prompt.recipe, "local_epochs": 1}
    recipe_source = "FedOTP official few-shot script (SGD lr 0.001, batch = #shots, 1 local epoch), methods.md 3"
    batch_is_shots = True

    @dataclass
    class Options(Prompt.Options):
        # entropic regularization (few-shot script; 0.1 is the code default)
        eps: float = option(0.01, gt=0, fix="use e.g. 0.01")
        top_percent: float = option(0.8, gt=0, le=1, fix="use e.g. 0.8")  # mass carried to the prompts
        thresh: float = option(1e-3, gt=0, fix="use e.g. 1e-3")
        max_iter: int = option(100, ge=1, fix="use e.g. 100")

    def attach(self, clip: nn.Module, generator: torch.Generator) -> nn.Module:
        if getattr(clip.visual, "proj", None) is None or not hasattr(clip.visual, "output_tokens"):
            raise ConfigError("model.name", "FedOTP needs a ViT image tower with a projection (patch tokens)",
                              "use a ViT backbone such as ViT-B-16")
        width = clip.token_embedding.weight.shape[1]
        self.added = nn.ParameterDict({
            name: nn.Parameter(torch.randn(self.options.n_ctx, width, generator=generator) * self.options.ctx_std)
            for name in ("ctx_global", "ctx_local")})
        return self.added

    def text_features(self, clip: nn.Module, text_tokens: torch.Tensor) -> torch.Tensor:
        """[N = 2, C, d]: the global prompt's class features, then the local prompt's."""
        contexts = torch.stack([self.added["ctx_global"], self.added["ctx_local"]])
        return prompt_set_features(clip, text_tokens, contexts)

    def logits(self, clip: nn.Module, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        tokens = patch_features(clip, images)  # [B, M, d]
        sim = torch.einsum("bmd,ncd->bcmn", tokens, text_features)  # [B, C, M, N]
        b, c, m, n = sim.shape
        o = self.options
        plan = unbalanced_plan(1.0 - sim.detach().reshape(b * c, m, n), o.eps, o.top_percent, o.thresh, o.max_iter)
        return clip.logit_scale.exp() * (plan.view(b, c, m, n) * sim).sum(dim=(2, 3))

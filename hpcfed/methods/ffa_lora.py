"""FFA-LoRA (Sun, Li, Li, Ding, "Improving LoRA in Privacy-preserving Federated Learning", ICLR 2024, arXiv
2403.12313): Federated Freeze-A LoRA. A stays frozen at its random initialisation on every client, only the
zero-initialised B is trained and averaged. The update B A is then linear in what is averaged (the average of
the clients' B times the common A is exactly the average of their updates), half the LoRA parameters are
trained and sent, and DP-SGD noise enters only B instead of being multiplied through the product of two noisy
factors.

Paper recipe: A frozen, B trained and shared [secondary summaries of the paper: liner.com review, sciencestack
TL;DR; the FedSA-LoRA code runs it as its `federate.freeze_A: True` baseline]; RoBERTa-large on GLUE with 3
clients, the split FedSA-LoRA says it copies [FedSA-LoRA paper, via the acmrep2026 reproducibility summary].
Scaling: the paper reports that FFA-LoRA's accuracy is consistent over a wide range of alpha, so alpha needs no
tuning [secondary summaries] (with A fixed, alpha/r only rescales B's step, i.e. acts as a learning-rate
factor). The paper's rank, alpha, optimizer, learning rate and local steps: UNVERIFIED (the paper body and an
official FFA-LoRA repository could not be read).

Carried to CLIP: the LoRA family's recipe, rank, alpha and dropout (CLIP-LoRA: AdamW lr 2e-4, batch 32, rank 2,
alpha 1, dropout 0.25 on q, k, v, out of both towers, methods.md §2.3), as for fedsa_lora, so that the LoRA
methods differ only in which factor is shared or frozen. A is drawn once from the shared init seed, so it is the
same on every client without being sent; it is per-client state of the runtime that never changes."""

import torch
from torch import nn

from hpcfed.methods.base import METHODS
from hpcfed.methods.lora import LoRA


@METHODS.register("ffa_lora")
class FFALoRA(LoRA):
    shared = ("*.B",)
    recipe_source = ("CLIP-LoRA recipe of the LoRA family (methods.md 2.3); FFA-LoRA's own (RoBERTa) is "
                     "UNVERIFIED, see hpcfed/methods/ffa_lora.py")

    def attach(self, clip: nn.Module, generator: torch.Generator) -> nn.Module:
        added = super().attach(clip, generator)
        for name, parameter in added.named_parameters():
            if name.endswith(".A"):
                parameter.requires_grad_(False)  # frozen: out of the optimizer, kept as never-changing local state
        return added

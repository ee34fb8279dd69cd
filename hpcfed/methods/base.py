"""What a method is: the parameters it adds to the frozen backbone, which of them are shared (averaged
across clients), and its local objective. The runtime only ever sees this interface."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import nn

from hpcfed.registry import Registry


class Method:
    """What a new client gets (partition.holdout_clients: clients that never train) follows from these hooks, with
    no hook of its own: the global shared state and the personal parameters as `attach` made them; to adapt, its
    first `before_local_training` (it has published nothing and was never sampled) and `training_loss`."""

    # Glob patterns over added-parameter names that are communicated and averaged ("*" shares everything,
    # () nothing); every other added parameter stays on its client and never enters an MPI call.
    shared: ClassVar[tuple[str, ...]] = ()
    # Glob patterns among the shared parameters that each client is evaluated with as it trained them: their
    # average only starts the next local training, and a client keeps its own trained copy as personal state
    # (pFedMoAP evaluates each client's own prompt, methods.md §3). A client that never trained uses the average.
    evaluated_as_trained: ClassVar[tuple[str, ...]] = ()
    # Glob patterns of parameters whose latest per-client values every client can read after each round
    # (e.g. pFedMoAP's prompt experts); the runtime gathers them into a table, see before_local_training.
    published: ClassVar[tuple[str, ...]] = ()
    # True when the method reads the image tower's patch tokens, not only its pooled embedding (the feature
    # cache then stops after the last block instead of at the embedding).
    image_tokens: ClassVar[bool] = False
    # The method's reference training recipe (train.* keys: optimizer, lr, momentum, weight decay, batch size,
    # local epochs where the paper fixes them) and where it comes from. It fills every train key the config
    # does not set, so switching method.name gives each method its own recipe (`hpcfed train --print-config`).
    recipe: ClassVar[dict[str, Any]] = {}
    recipe_source: ClassVar[str] = ""

    @dataclass
    class Options:
        pass

    def __init__(self, options: dict[str, Any] | None = None):
        self.options = self.Options(**(options or {}))
        self.added: nn.Module = nn.ModuleDict()

    @classmethod
    def reference_recipe(cls, options: dict[str, Any], shots: int) -> dict[str, Any]:
        """The recipe for these options and this protocol's shots (some papers train with batch = #shots)."""
        return dict(cls.recipe)

    @classmethod
    def reference_source(cls, options: dict[str, Any]) -> str:
        """Where the recipe comes from (paper, official code), shown by `hpcfed train --print-config`."""
        return cls.recipe_source

    @classmethod
    def check_options(cls, options: dict[str, Any], given: set[str]) -> None:
        """Raise ConfigError for options that are wrong together (types and each option's declared range are
        checked by the config layer). `given` holds the option names the user set explicitly."""

    def attach(self, clip: nn.Module, generator: torch.Generator) -> nn.Module:
        """Insert the method's parameters into `clip`; return (and keep) the module that owns all of them."""
        return self.added

    def is_shared(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.shared)

    def is_evaluated_as_trained(self, name: str) -> bool:
        return self.is_shared(name) and any(fnmatch.fnmatchcase(name, p) for p in self.evaluated_as_trained)

    def prompt_texts(self, class_names: list[str], template: str) -> list[str]:
        return [template.format(name) for name in class_names]

    def text_features(self, clip: nn.Module, text_tokens: torch.Tensor) -> torch.Tensor:
        """Class text features. Recomputed per training step and per client evaluation, since the
        method's parameters change them (never a cache shared across clients, methods.md §1.12)."""
        return clip.encode_text(text_tokens, normalize=True)

    def logits(self, clip: nn.Module, images: torch.Tensor, text_features: torch.Tensor) -> torch.Tensor:
        image_features = clip.encode_image(images, normalize=True)
        return clip.logit_scale.exp() * image_features @ text_features.T

    def training_loss(self, clip: nn.Module, images: torch.Tensor, labels: torch.Tensor,
                      text_tokens: torch.Tensor) -> torch.Tensor:
        """The local objective on one batch; cross-entropy over the task's classes by default."""
        return F.cross_entropy(self.logits(clip, images, self.text_features(clip, text_tokens)), labels)

    def is_published(self, name: str) -> bool:
        return any(fnmatch.fnmatchcase(name, pattern) for pattern in self.published)

    def before_local_training(self, client: int, published: torch.Tensor | None, known: torch.Tensor | None,
                              rng) -> None:
        """Called with the client's parameters loaded, before its local epochs. `published` [clients, n] holds
        every client's latest published values, `known` [clients] which rows have been published yet;
        changes made here to the loaded parameters stay with the client."""

    def aggregation_weight(self, train_size: int) -> float:
        """A participating client's weight in the average of the shared state: its sample count (FedAvg)."""
        return float(train_size)

    def upload_download_floats(self, n_shared: int) -> tuple[int, int]:
        """Floats a participating client sends and receives per round (methods with extra downloads add them)."""
        return n_shared, n_shared


# `@METHODS.register("name")` above a Method subclass makes it `method.name: name` in configs.
METHODS: Registry[type[Method]] = Registry("method", "method.name")

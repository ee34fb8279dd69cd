"""Local-only training and plain FedAvg over any adapter family (MMA, LoRA, prompt): the two ends of the
sharing spectrum, on the same parameters as the personalized methods.

    method: {name: local, family: lora, rank: 4}    # nothing leaves the client
    method: {name: fedavg, family: mma}              # everything averaged (= fedmma)"""

from __future__ import annotations

import dataclasses

import torch
from torch import nn

from hpcfed.errors import ConfigError
from hpcfed.methods.base import METHODS, Method
from hpcfed.methods.lora import LoRA
from hpcfed.methods.mma import MMA
from hpcfed.methods.prompt import Prompt
from hpcfed.options import option

FAMILIES: dict[str, type[Method]] = {"mma": MMA, "lora": LoRA, "prompt": Prompt}


def _union_options() -> type:
    fields = [("family", str, option("mma", choices=tuple(FAMILIES)))]
    for family in FAMILIES.values():
        fields += [(f.name, f.type, f) for f in dataclasses.fields(family.Options)]
    return dataclasses.make_dataclass("Options", fields)


class FamilyMethod(Method):
    """Delegates every hook to the chosen family; only the sharing differs between subclasses."""

    Options = _union_options()

    def __init__(self, options: dict | None = None):
        super().__init__(options)
        family = FAMILIES[self.options.family]
        own = {f.name for f in dataclasses.fields(family.Options)}
        self.family = family({k: v for k, v in dataclasses.asdict(self.options).items() if k in own})

    @classmethod
    def reference_recipe(cls, options: dict, shots: int) -> dict:
        return FAMILIES[options["family"]].reference_recipe(options, shots)

    @classmethod
    def reference_source(cls, options: dict) -> str:
        return FAMILIES[options["family"]].reference_source(options)

    @classmethod
    def check_options(cls, options: dict, given: set[str]) -> None:
        family = FAMILIES[options["family"]]
        own = {f.name for f in dataclasses.fields(family.Options)}
        stray = sorted(given - own - {"family"})
        if stray:
            raise ConfigError(f"method.{stray[0]}", f"does not apply to family {options['family']!r}",
                              f"remove it, or use one of {sorted(own)}")
        family.check_options({k: v for k, v in options.items() if k in own}, given & own)

    def attach(self, clip: nn.Module, generator: torch.Generator) -> nn.Module:
        self.added = self.family.attach(clip, generator)
        return self.added

    def prompt_texts(self, class_names, template):
        return self.family.prompt_texts(class_names, template)

    def text_features(self, clip, text_tokens):
        return self.family.text_features(clip, text_tokens)

    def logits(self, clip, images, text_features):
        return self.family.logits(clip, images, text_features)


@METHODS.register("local")
class Local(FamilyMethod):
    shared = ()


@METHODS.register("fedavg")
class FedAvg(FamilyMethod):
    shared = ("*",)

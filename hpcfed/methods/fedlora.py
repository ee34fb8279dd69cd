"""Federated LoRA: both LoRA factors averaged across clients (the fully shared baseline of FedVLM)."""

from hpcfed.methods.base import METHODS
from hpcfed.methods.lora import LoRA


@METHODS.register("fedlora")
class FedLoRA(LoRA):
    shared = ("*",)

"""pLoRA (FedVLM, Mitra et al. 2025): LoRA whose B factors are averaged across clients while each client
keeps its own A (methods.md §2.1, §2.3). Every client starts from the same A (the shared init seed)."""

from hpcfed.methods.base import METHODS
from hpcfed.methods.lora import LoRA


@METHODS.register("plora")
class PLoRA(LoRA):
    shared = ("*.B",)

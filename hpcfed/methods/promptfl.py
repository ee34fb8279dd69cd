"""PromptFL / FedCoOp (Guo et al., TMC'23): one CoOp context of 16 tokens, averaged across clients; nothing
stays local, so every client is evaluated with the global prompt (methods.md §3)."""

from hpcfed.methods.base import METHODS
from hpcfed.methods.prompt import Prompt


@METHODS.register("promptfl")
class PromptFL(Prompt):
    shared = ("*",)

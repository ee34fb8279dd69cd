"""CLIP zero-shot: the frozen backbone and the dataset's prompt template; no training, no communication."""

from hpcfed.methods.base import METHODS, Method


@METHODS.register("zeroshot")
class ZeroShot(Method):
    """Adds nothing: every hook is the base class's."""

"""FedMMA: the MMA adapters of pFedMMA with every part averaged, the non-personalized control."""

from hpcfed.methods.base import METHODS
from hpcfed.methods.mma import MMA


@METHODS.register("fedmma")
class FedMMA(MMA):
    shared = ("*",)

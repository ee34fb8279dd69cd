"""pFedMMA (Ghiasvand et al., ICLR'26): MMA adapters whose shared projections are averaged across clients
while each client keeps its own down- and up-projections (methods.md §1.1-1.4)."""

from hpcfed.methods.base import METHODS
from hpcfed.methods.mma import MMA


@METHODS.register("pfedmma")
class PFedMMA(MMA):
    shared = ("shared.*",)

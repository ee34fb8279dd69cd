"""Evaluation values reused while the model is bitwise the same model: class text features (a client's validation
and test splits, the global model that scores every client's `global_accuracy`) and scores of the global test sets
(Base, Novel, a held-out domain) when several clients evaluate the same parameters (methods that share
everything, zero-shot). Recomputing them gives the same numbers, only slower; a value computed from one client's
parameters can never reach a client whose parameters differ in any element (methods.md §1.12 caveat 1)."""

from __future__ import annotations

import torch


class SameParameters:
    """A few dicts of values, each kept with a copy of the parameters it was computed from; `values()` returns the
    one whose copy equals the current parameters element for element (torch.equal), else a new empty one."""

    def __init__(self, parameters: list[torch.Tensor], slots: int = 4):
        # 4: a client's own parameters, the global model and a spare; more would only cost comparisons.
        self.parameters, self.slots = parameters, slots
        self.entries: list[tuple[list[torch.Tensor], dict]] = []  # least recently used first

    def values(self) -> dict:
        for i, (copies, values) in enumerate(self.entries):
            if all(torch.equal(p, c) for p, c in zip(self.parameters, copies, strict=True)):
                self.entries.append(self.entries.pop(i))
                return values
        self.entries.append(([p.detach().clone() for p in self.parameters], {}))
        del self.entries[:-self.slots]
        return self.entries[-1][1]

"""Aggregation, in one place: pack -> Allreduce -> unpack (design.md, "Aggregation").

Each participating client adds w_i * theta_i (its shared parameters, w_i the method's aggregation weight, by
default its training-set size) and w_i into the shared buffer; non-participants and the server add zeros. One
Allreduce sums the buffer over all ranks, and every rank reads the new global state sum(w_i theta_i) / sum(w_i)
from the result: no broadcast. Sums are float64 so the float32 average does not depend on how the participants
are spread over ranks. Methods whose clients read other clients' latest values (pFedMoAP's experts) publish one
row per client into a table summed the same way on a communicator of its own."""

from __future__ import annotations

import numpy as np
import torch

from hpcfed.runtime import Runtime


class Aggregation:
    """One round's buffers; `add` each trained client, then `allreduce_and_apply` on every rank."""

    def __init__(self, rt: Runtime, n_shared: int, n_published: int, n_clients: int):
        self.rt, self.n_shared = rt, n_shared
        self.buffer = rt.shared_buffer(n_shared + 1)  # weighted shared parameters, then the weight total
        self.published = np.zeros((n_clients, n_published + 1), dtype=np.float32) if n_published else None

    def add(self, host, client) -> None:
        """Pack the shared (and published) parameters of `client`, just trained and still loaded in `host`."""
        weight = host.method.aggregation_weight(len(client.split.train))
        self.buffer[:-1] += weight * host.shared_contribution(like=self.buffer)
        self.buffer[-1] += weight
        if self.published is not None:
            self.published[client.index, :-1] = host.published_contribution(client)
            self.published[client.index, -1] = 1.0  # marks the row as fresh this round

    def allreduce_and_apply(self, host) -> None:
        """Sum over all ranks and give every client host the new global state (rank 0 has no host)."""
        if self.n_shared > 0:
            self.rt.allreduce_shared(self.buffer)
            average = weighted_average(self.buffer)
            if host is not None and average is not None:
                host.global_shared = average
        if self.published is not None:
            self.rt.allreduce_published(self.published)
            if host is not None:
                host.set_published(self.published[:, :-1], self.published[:, -1])


def weighted_average(buffer) -> torch.Tensor | None:
    """sum(w_i theta_i) / sum(w_i) from the summed buffer (numpy in host memory or a device tensor), as float32 on
    the CPU; None when nobody contributed (the global state then stays as it was)."""
    buffer = torch.as_tensor(buffer)
    total = float(buffer[-1])
    return (buffer[:-1] / total).float().cpu() if total > 0 else None

"""Aggregation, in one place: pack -> Allreduce -> unpack (design.md, "Aggregation").

Each contributing client adds w_i * delta_i (its shared parameters minus the global state it started from, w_i
the method's aggregation weight, by default its training-set size) and w_i into the shared buffer; the others and
the server add zeros (the server: privacy noise). One Allreduce sums the buffer over all ranks, and every rank
steps the global state along sum(w_i delta_i) / sum(w_i) (hpcfed.update; FedAvg: the weighted average of the
clients' parameters): no broadcast. Sums are float64 so the float32 average does not depend on how the participants
are spread over ranks. Methods whose clients read other clients' latest values (pFedMoAP's experts) publish one
row per client into a table summed the same way on a communicator of its own."""

from __future__ import annotations

import numpy as np
import torch

from hpcfed.runtime import Runtime
from hpcfed.update import RoundPlan, SharedUpdate


class Aggregation:
    """One round's buffers; `add` each contributing client, then `allreduce_and_apply` on every rank. What a client
    adds and how the sum becomes the new global state is the shared update's (hpcfed.update)."""

    def __init__(self, rt: Runtime, update: SharedUpdate, plan: RoundPlan, n_published: int, n_clients: int):
        self.rt, self.update, self.plan = rt, update, plan
        self.buffer = rt.shared_buffer(update.buffer_size)  # weighted shared deltas, the weight total, stage slots
        self.accumulator = update.accumulator(plan, self.buffer)  # client rows: added, or masked (secure aggregation)
        self.published = np.zeros((n_clients, n_published + 1), dtype=np.float32) if n_published else None

    def add(self, host, client) -> None:
        """Pack the shared (and published) parameters of `client`, just trained and still loaded in `host`."""
        if self.update.n_shared:
            trained = torch.as_tensor(host.shared_contribution(like=self.buffer))
            delta = trained - host.global_shared.to(trained.device, torch.float64)
            weight = host.method.aggregation_weight(len(client.split.train))
            self.accumulator.add(client.index, self.update.contribution(self.plan, client.index, delta, weight))
        if self.published is not None:
            self.published[client.index, :-1] = host.published_contribution(client)
            self.published[client.index, -1] = 1.0  # marks the row as fresh this round

    def allreduce_and_apply(self, host) -> None:
        """Sum over all ranks and give every client host the new global state (rank 0 has no host)."""
        if self.update.n_shared > 0:
            self.update.allreduce(self.rt, self.plan, self.accumulator)
            # The server steps too (without a global state): it checkpoints the server optimizer's state.
            new_global = self.update.step(self.plan, None if host is None else host.global_shared, self.buffer)
            if new_global is not None:
                host.global_shared = new_global
            self.update.after_round(self.plan, self.buffer)
        if self.published is not None:
            self.rt.allreduce_published(self.published)
            if host is not None:
                host.set_published(self.published[:, :-1], self.published[:, -1])

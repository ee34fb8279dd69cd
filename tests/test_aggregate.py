"""Aggregation (train/aggregate.py): the weighted sum packed into the shared buffer and the average every rank
reads from it, with each method's declared aggregation weight."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch

from hpcfed.config import Config
from hpcfed.methods import METHODS
from hpcfed.train.aggregate import Aggregation
from hpcfed.update import SharedUpdate


class OneRank:
    """The part of the MPI runtime Aggregation uses, for one rank (the Allreduce of one rank is the identity)."""

    is_server = False

    def shared_buffer(self, n):
        return np.zeros(n, dtype=np.float64)

    def allreduce_shared(self, buffer):
        pass


class Host:
    def __init__(self, method):
        self.method, self.loaded, self.global_shared = method, None, torch.zeros(2)

    def shared_contribution(self, like=None):
        return self.loaded


def _average(method_name: str, clients: list[tuple[int, list[float]]]) -> torch.Tensor:
    host = Host(METHODS[method_name]())
    update = SharedUpdate(Config(clients=len(clients)), n_shared=2)
    aggregation = Aggregation(OneRank(), update, update.plan(0, np.arange(len(clients))), n_published=0,
                              n_clients=len(clients))
    for index, (n_train, values) in enumerate(clients):
        host.loaded = np.array(values, dtype=np.float64)
        aggregation.add(host, SimpleNamespace(index=index, split=SimpleNamespace(train=np.arange(n_train))))
    aggregation.allreduce_and_apply(host)
    return host.global_shared


def test_fedavg_weights_each_client_by_its_training_set_size():
    average = _average("pfedmma", [(1, [0.0, 4.0]), (3, [4.0, 8.0])])
    np.testing.assert_allclose(average.numpy(), [3.0, 7.0])  # (1*0 + 3*4)/4, (1*4 + 3*8)/4


def test_fedclip_averages_its_clients_with_equal_weights_as_its_official_server():
    average = _average("fedclip", [(1, [0.0, 4.0]), (3, [4.0, 8.0])])
    np.testing.assert_allclose(average.numpy(), [2.0, 6.0])


def test_a_round_without_participants_keeps_the_global_state():
    update = SharedUpdate(Config(clients=2), n_shared=2)
    plan = update.plan(0, np.arange(2))
    assert update.step(plan, torch.ones(2), np.zeros(3)) is None
    assert update.step(plan, torch.ones(2), np.array([2.0, 4.0, 2.0])).dtype == torch.float32


@pytest.mark.parametrize("name", METHODS.names())
def test_every_method_declares_a_positive_weight(name):
    assert METHODS[name]().aggregation_weight(7) > 0

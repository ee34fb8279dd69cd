"""Pieces of the runtime that need no launcher: client placement, sampling, seed streams, the node layout and
device of a rank, MPICH's netmod for a launch."""

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from hpcfed.rng import Stream, generator, sample_clients
from hpcfed.runtime import place_clients, world_rank_from_env
from hpcfed.runtime.mpi import choose_device, mpich_netmod, node_layout, ranks_on_hosts


@given(st.lists(st.integers(1, 500), min_size=1, max_size=60), st.integers(1, 12))
def test_placement_covers_every_client_once_and_balances_load(sizes, ranks):
    ranks = min(ranks, len(sizes))
    placement = place_clients(np.array(sizes), ranks)
    assert sorted(c for clients in placement for c in clients) == list(range(len(sizes)))
    assert all(clients for clients in placement)  # no idle client rank when clients >= ranks
    loads = [sum(sizes[c] for c in clients) for clients in placement]
    assert max(loads) - min(loads) <= max(sizes)  # greedy largest-first bound


def test_placement_is_deterministic():
    sizes = np.array([5, 9, 9, 3, 7, 1])
    assert place_clients(sizes, 3) == place_clients(sizes.copy(), 3)


def test_round_zero_takes_every_client_then_a_fixed_fraction():
    assert list(sample_clients(0, 0, 10, 0.3)) == list(range(10))
    later = [sample_clients(0, r, 10, 0.3) for r in range(1, 20)]
    assert all(len(s) == 3 and len(set(s)) == 3 for s in later)
    assert len({tuple(s) for s in later}) > 5  # it varies over rounds
    assert list(sample_clients(0, 7, 100, 0.001)) and len(sample_clients(0, 7, 100, 0.001)) == 1


def test_sampling_depends_on_seed_and_round_only():
    assert np.array_equal(sample_clients(3, 5, 50, 0.2), sample_clients(3, 5, 50, 0.2))
    assert not np.array_equal(sample_clients(3, 5, 50, 0.2), sample_clients(4, 5, 50, 0.2))


def test_streams_are_independent_per_purpose_and_client():
    a = generator(0, Stream.CLIENT_DATA, 1).random(4)
    b = generator(0, Stream.CLIENT_DATA, 2).random(4)
    c = generator(0, Stream.PARTITION).random(4)
    assert not np.allclose(a, b) and not np.allclose(a, c)
    assert np.array_equal(a, generator(0, Stream.CLIENT_DATA, 1).random(4))


def test_rank_is_read_from_the_launcher_environment(monkeypatch):
    for var in ("PMI_RANK", "OMPI_COMM_WORLD_RANK", "PMIX_RANK", "SLURM_PROCID", "MV2_COMM_WORLD_RANK"):
        monkeypatch.delenv(var, raising=False)
    assert world_rank_from_env() is None
    monkeypatch.setenv("SLURM_PROCID", "3")
    assert world_rank_from_env() == 3


class HostsOnly:
    """The two calls node_layout makes of a communicator, on a made-up placement of ranks on hosts."""

    def __init__(self, hosts: list[str], rank: int):
        self.hosts, self.rank = hosts, rank

    def allgather(self, _):
        return self.hosts

    def Get_rank(self):  # noqa: N802  (mpi4py's name)
        return self.rank


def test_node_local_rank_counts_the_ranks_of_its_host_and_the_server_shifts_its_hosts_clients():
    hosts = ["n1", "n2", "n2", "n1", "n2"]
    layouts = [node_layout(HostsOnly(hosts, rank)) for rank in range(len(hosts))]
    assert all(found == hosts for found, _, _ in layouts)
    assert [(local, client) for _, local, client in layouts] == [(0, -1), (0, 0), (1, 1), (1, 0), (2, 2)]


def test_a_client_takes_gpu_index_modulo_count_and_the_server_none():
    assert [choose_device(k, False, "auto", 2) for k in range(3)] == ["cuda:0", "cuda:1", "cuda:0"]
    assert choose_device(0, True, "auto", 2) == "cpu"
    assert choose_device(1, False, "cpu", 2) == choose_device(1, False, "auto", 0) == "cpu"


def test_failures_are_located_by_rank_and_host():
    hosts = ["n1", "n1", "n2", "n2", "n3"]
    assert ranks_on_hosts([2, 3], hosts) == "ranks 2, 3 on n2"
    assert ranks_on_hosts([1, 4], hosts) == "rank 1 on n1; rank 4 on n3"


PYPI_MPICH = "MPICH Version:      5.0.2\nMPICH Device:       ch4:ucx ofi\n"
PMI2_STEP_ON_TWO_NODES = {"PMI_FD": "11", "PMI_RANK": "0", "PMI_SIZE": "4", "SLURM_STEP_NUM_NODES": "2"}


def test_mpich_takes_ofi_for_a_pmi2_step_over_several_nodes_only():
    assert mpich_netmod(PMI2_STEP_ON_TWO_NODES, PYPI_MPICH) == "ofi"
    assert mpich_netmod({**PMI2_STEP_ON_TWO_NODES, "SLURM_STEP_NUM_NODES": "1"}, PYPI_MPICH) is None
    assert mpich_netmod({**PMI2_STEP_ON_TWO_NODES, "MPI_LOCALNRANKS": "2"}, PYPI_MPICH) is None  # hydra
    assert mpich_netmod({**PMI2_STEP_ON_TWO_NODES, "MPIR_CVAR_CH4_NETMOD": "ucx"}, PYPI_MPICH) is None  # the user's
    assert mpich_netmod(PMI2_STEP_ON_TWO_NODES, "MPICH Version: 4.1\nMPICH Device: ch4:ucx\n") is None  # no OFI
    assert mpich_netmod(PMI2_STEP_ON_TWO_NODES, "Open MPI v4.1.4, package: Debian") is None

"""Simulated secure aggregation (hpcfed/update/secagg.py): without MPI, the masks cancel bit for bit in the
integer sum, a masked row on its own looks uniform, a client lost after masking is recovered, and a modulus the
sum could overflow is refused before any training; under one mpiexec launch, masked and unmasked runs agree."""

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch
import yaml
from scipy.stats import chisquare

from hpcfed.config import Config, load_config, parse_config
from hpcfed.errors import ConfigError, UserError
from hpcfed.train.aggregate import Aggregation
from hpcfed.update import RoundPlan, SharedUpdate
from hpcfed.update.secagg import FixedPoint, SecureAggregation, SecureAggregationConfig, check_headroom, pair_mask

from conftest import run_mpi, write_config

SCRIPTS = Path(__file__).parent / "mpi_scripts"
N_CLIENTS = 7
LENGTH = 600


class OneRank:
    """The runtime as one rank sees it when it hosts every client: its Allreduce is the identity."""

    is_server = True

    def shared_buffer(self, n):
        return np.zeros(n, dtype=np.float64)

    def allreduce_shared(self, buffer):
        pass


def plan(contributes, dropped_after_masking=(), round_index=3) -> RoundPlan:
    contributes, lost = np.array(contributes, dtype=int), np.array(dropped_after_masking, dtype=int)
    trains = np.union1d(contributes, lost)
    return RoundPlan(round_index, trains, trains, contributes, lost, np.full(N_CLIENTS, np.nan))


def rows(seed=1) -> np.ndarray:
    """Weighted contributions of several magnitudes and both signs, one row per client."""
    rng = np.random.default_rng(seed)
    return rng.normal(0, 1, (N_CLIENTS, LENGTH)) * 10.0 ** rng.integers(-4, 4, (N_CLIENTS, 1))


def aggregate(cfg: SecureAggregationConfig, round_plan: RoundPlan, values: np.ndarray) -> np.ndarray:
    """Every contributing client's row added on one rank, summed, and decoded: what the pipeline continues with."""
    stage = SecureAggregation(cfg, seed=5, n_clients=N_CLIENTS)
    accumulator = stage.accumulator(round_plan, np.zeros(values.shape[1]))
    for client in round_plan.contributes:
        accumulator.add(int(client), torch.from_numpy(values[client]))
    stage.allreduce(OneRank(), round_plan, accumulator)
    return accumulator.buffer


def unmasked_sum(cfg: SecureAggregationConfig, values: np.ndarray) -> np.ndarray:
    fixed = FixedPoint(cfg)
    total = np.zeros(values.shape[1] + 1, fixed.unsigned)
    for row in values:
        total += fixed.encode(row)
    return fixed.decode(total)[0]


@pytest.mark.parametrize("modulus_bits, bits", [(64, 24), (32, 12)])
def test_masks_cancel_bit_for_bit_in_the_sum(modulus_bits, bits):
    cfg = SecureAggregationConfig(enabled=True, bits=bits, range=1e4, modulus_bits=modulus_bits)
    values = rows() if modulus_bits == 64 else rows().clip(-100, 100)
    summed = aggregate(cfg, plan(range(N_CLIENTS)), values)
    np.testing.assert_array_equal(summed, unmasked_sum(cfg, values))
    np.testing.assert_allclose(summed, values.sum(0), rtol=0, atol=N_CLIENTS * 2.0 ** -(bits + 1))
    # ...while what a client sends is far from its own encoding.
    stage = SecureAggregation(cfg, seed=5, n_clients=N_CLIENTS)
    sent = stage.masked_row(plan(range(N_CLIENTS)), 2, values[2])
    assert np.mean(sent == FixedPoint(cfg).encode(values[2])) < 0.01


def test_without_secure_aggregation_rows_are_added_in_float64_as_before():
    cfg = SecureAggregationConfig(enabled=False)
    values = rows()
    expected = np.zeros(LENGTH)
    for row in values:
        expected += row
    np.testing.assert_array_equal(aggregate(cfg, plan(range(N_CLIENTS)), values), expected)


def byte_histogram_p_value(vector: np.ndarray) -> float:
    counts = np.bincount(vector.view(np.uint8), minlength=256)
    return chisquare(counts).pvalue


def test_a_masked_row_looks_uniform_while_its_encoding_does_not():
    cfg = SecureAggregationConfig(enabled=True)
    stage = SecureAggregation(cfg, seed=5, n_clients=N_CLIENTS)
    row = np.random.default_rng(2).normal(0, 0.01, 8000)  # small deltas: mostly 0x00 and 0xff high bytes
    sent = stage.masked_row(plan(range(N_CLIENTS)), 4, row)
    assert byte_histogram_p_value(sent) > 0.001
    assert byte_histogram_p_value(FixedPoint(cfg).encode(row)) < 1e-12


def test_a_client_with_masks_toward_only_one_peer_still_sends_uniform_bytes():
    cfg = SecureAggregationConfig(enabled=True, modulus_bits=32, bits=16, range=100.0)
    sent = SecureAggregation(cfg, 5, N_CLIENTS).masked_row(plan([0, 6]), 6, np.zeros(8000))
    assert byte_histogram_p_value(sent) > 0.001


def test_pair_masks_depend_on_the_pair_and_round_not_on_its_order():
    a = pair_mask(5, 3, 1, 4, 16, np.dtype("uint64"))
    np.testing.assert_array_equal(a, pair_mask(5, 3, 4, 1, 16, np.dtype("uint64")))
    assert not np.array_equal(a, pair_mask(5, 4, 1, 4, 16, np.dtype("uint64")))
    assert not np.array_equal(a, pair_mask(5, 3, 1, 5, 16, np.dtype("uint64")))


def test_clients_lost_after_masking_still_leave_the_survivors_sum():
    cfg = SecureAggregationConfig(enabled=True)
    values = rows(seed=3)
    survivors, lost = [0, 2, 3, 5], [1, 4, 6]
    summed = aggregate(cfg, plan(survivors, lost), values)
    np.testing.assert_array_equal(summed, unmasked_sum(cfg, values[survivors]))


def test_values_beyond_the_range_are_clipped_and_counted_for_the_run_file():
    cfg = SecureAggregationConfig(enabled=True, range=1.0)
    values = np.zeros((N_CLIENTS, 4))
    values[0] = [3.0, -5.0, 0.5, 0.0]
    values[1] = [2.0, 0.25, 0.0, 0.0]
    stage = SecureAggregation(cfg, seed=5, n_clients=N_CLIENTS)
    accumulator = stage.accumulator(plan(range(N_CLIENTS)), np.zeros(4))
    for client in range(N_CLIENTS):
        accumulator.add(client, torch.from_numpy(values[client]))
    stage.allreduce(OneRank(), plan(range(N_CLIENTS)), accumulator)
    np.testing.assert_array_equal(accumulator.buffer, [2.0, -0.75, 0.5, 0.0])
    assert stage.record(plan(range(N_CLIENTS))) == {"clipped_to_range": 3}
    assert SecureAggregation(SecureAggregationConfig(), 5, N_CLIENTS).record(plan([0])) == {}


def test_a_diverged_update_is_refused_rather_than_encoded():
    stage = SecureAggregation(SecureAggregationConfig(enabled=True), seed=5, n_clients=N_CLIENTS)
    with pytest.raises(UserError, match="client 2's update in round 3 is not finite.*train.lr"):
        stage.masked_row(plan(range(N_CLIENTS)), 2, np.array([0.0, np.nan]))


def test_fedavg_through_the_whole_update_pipeline_with_secure_aggregation():
    host = SimpleNamespace(method=SimpleNamespace(aggregation_weight=lambda n: n), global_shared=torch.zeros(2))
    cfg = parse_config({"clients": 2, "secure_aggregation": True})
    update = SharedUpdate(cfg, n_shared=2)
    aggregation = Aggregation(OneRank(), update, update.plan(0, np.arange(2)), n_published=0, n_clients=2)
    for index, (n_train, values) in enumerate([(1, [0.0, 4.0]), (3, [4.0, 8.0])]):
        host.shared_contribution = lambda like=None, v=values: np.array(v)
        aggregation.add(host, SimpleNamespace(index=index, split=SimpleNamespace(train=np.arange(n_train))))
    assert isinstance(aggregation.accumulator.total, np.ndarray)  # the rows went into the masked integers
    aggregation.allreduce_and_apply(host)
    np.testing.assert_array_equal(host.global_shared.numpy(), [3.0, 7.0])


def test_upload_bytes_count_the_masked_integers_keys_and_shares():
    round_plan = plan([0, 2, 3, 5], [1])
    plain = SecureAggregation(SecureAggregationConfig(), 5, N_CLIENTS).upload_bytes(round_plan, 100, 102)
    np.testing.assert_array_equal(plain, [400, 0, 400, 400, 0, 400, 0])
    masked = SecureAggregation(SecureAggregationConfig(enabled=True, modulus_bits=32, bits=8), 5, N_CLIENTS)
    up = masked.upload_bytes(round_plan, 100, 102)
    before_masking = 32 + 32 * 4  # a public key, a share to each of the 4 other clients that mask
    assert up[1] == before_masking  # lost after masking: its row never arrived
    assert up[0] == before_masking + 4 * 103 + 32  # the row and the clipped count in 32 bits, a share for client 1
    assert up[4] == up[6] == 0


def test_a_sum_that_could_overflow_the_modulus_is_refused_naming_fixes_that_work():
    cfg = SecureAggregationConfig(enabled=True, bits=24, range=2.0**20, modulus_bits=32)
    with pytest.raises(ConfigError, match="secure_aggregation.range.*overflows.*modulus_bits: 64") as caught:
        check_headroom(100, cfg)
    fixes = str(caught.value).split("Fix: set ")[1].split(", or ")
    assert len(fixes) == 3
    for fix in fixes:
        key, value = fix.removeprefix("secure_aggregation.").split(": ")
        fixed = SecureAggregationConfig(**{**vars(cfg), key: type(getattr(cfg, key))(float(value))})
        check_headroom(100, fixed)  # each suggestion alone makes the config fit
    check_headroom(100, SecureAggregationConfig(enabled=False, bits=24, range=2.0**20, modulus_bits=32))


def test_the_overflow_check_runs_with_the_config_validation():
    with pytest.raises(ConfigError, match="secure_aggregation.range"):
        parse_config({"clients": 40, "secure_aggregation": {"enabled": True, "modulus_bits": 32}})


def test_secure_aggregation_true_is_short_for_enabled_in_files_bases_and_overrides(tmp_path):
    assert parse_config({"secure_aggregation": True}).secure_aggregation.enabled
    assert not parse_config({}, ["secure_aggregation=false"]).secure_aggregation.enabled
    assert parse_config({}, ["secure_aggregation=true"]).secure_aggregation.enabled
    (tmp_path / "base.yaml").write_text(yaml.safe_dump({"secure_aggregation": {"bits": 16}}))
    (tmp_path / "run.yaml").write_text(yaml.safe_dump({"base": "base.yaml", "secure_aggregation": True}))
    loaded = load_config(tmp_path / "run.yaml").secure_aggregation
    assert (loaded.enabled, loaded.bits) == (True, 16)
    assert Config().secure_aggregation.enabled is False
    with pytest.raises(ConfigError, match="secure_aggregation"):
        parse_config({"secure_aggregation": "yes"})


@pytest.mark.mpi
def test_masked_and_unmasked_runs_aggregate_bitwise_alike_under_mpi_with_a_client_lost_after_masking(
        tmp_path, image_tree):
    """One launch, two runs (tests/mpi_scripts/secagg_runs.py); client 1's masked row is lost in round 1."""
    configs = {name: write_config(tmp_path / f"{name}.yaml", image_tree, rounds=2, participation=1.0,
                                  secure_aggregation=True) for name in ("masked", "unmasked")}
    out = tmp_path / "seen.json"
    done = run_mpi(3, [sys.executable, str(SCRIPTS / "secagg_runs.py"), str(out), *map(str, configs.values())])
    assert done.returncode == 0, done.stderr[-3000:]
    state = {(r["run"], r["round"], r["rank"]): r["digest"] for r in json.loads(out.read_text())}
    for run in configs:
        for rnd in range(2):  # both client ranks hold the same global state after each Allreduce
            assert state[run, rnd, 1] == state[run, rnd, 2], (run, rnd)
    # The masks cancel in the integer sum across ranks, also after the recovery of the lost client's masks.
    for rnd in range(2):
        assert state["masked", rnd, 1] == state["unmasked", rnd, 1], rnd
    assert state["masked", 0, 1] != state["masked", 1, 1]  # and the rounds did move the global state
    with h5py.File(configs["masked"].with_suffix(".h5"), "r") as masked, \
            h5py.File(configs["unmasked"].with_suffix(".h5"), "r") as unmasked:
        for name in masked["metrics/client"]:
            np.testing.assert_array_equal(masked[f"metrics/client/{name}"][:],
                                          unmasked[f"metrics/client/{name}"][:])
        np.testing.assert_array_equal(masked["update/clipped_to_range"][:], [0, 0])  # -1 would mean off
        # The lost client sent its key and shares but no row; the others their row in 64-bit integers too.
        up = masked["comm/bytes_up"][:]
        assert up[1, 1] == 32 + 3 * 32
        n_shared = 3168  # hpcfed-tiny with pfedmma; the row adds the weight and the clipped count
        assert (up[1, [0, 2, 3]] == 32 + 3 * 32 + 8 * (n_shared + 2) + 32).all()
        assert (up[0] == 32 + 3 * 32 + 8 * (n_shared + 2)).all()

"""Client dropouts and stragglers (hpcfed.update.dropout): the round plan every rank computes from the seed, its
record in the run file, and the bytes it lets move. The run under mpiexec is in test_dropout_mpi.py."""

from types import SimpleNamespace

import numpy as np
import pytest
import torch
from test_aggregate import Host, OneRank

from hpcfed.config import Config, parse_config
from hpcfed.errors import ConfigError
from hpcfed.train.aggregate import Aggregation
from hpcfed.train.loop import _bytes_moved
from hpcfed.update import SharedUpdate
from hpcfed.update.dropout import ARRIVED_LATE, DROPPED_BEFORE_TRAINING, DropoutConfig


def make(seed=0, clients=6, train_sizes=None, epochs=1, **dropout) -> SharedUpdate:
    cfg = Config(seed=seed, clients=clients, dropout=DropoutConfig(**dropout))
    cfg.train.local_epochs = epochs
    sizes = np.arange(10, 10 * (clients + 1), 10) if train_sizes is None else np.asarray(train_sizes)
    return SharedUpdate(cfg, n_shared=2, train_sizes=sizes)


def same_plan(a, b) -> bool:
    return (a.round == b.round and all(np.array_equal(getattr(a, k), getattr(b, k)) for k in
                                       ("selected", "trains", "contributes", "dropped_after_masking"))
            and np.array_equal(a.virtual_seconds, b.virtual_seconds, equal_nan=True))


def test_every_rank_computes_the_same_plan_from_seed_and_round_alone():
    # Two ranks (two instances), one asking the rounds in another order, as a run resumed at round 5 would.
    first, second = make(probability=0.4, deadline=0.25, jitter=0.3), make(probability=0.4, deadline=0.25, jitter=0.3)
    everyone = np.arange(6)
    plans = {r: first.plan(r, everyone) for r in range(10)}
    for r in (9, 5, 0, 7):
        assert same_plan(second.plan(r, everyone), plans[r])
    assert not all(np.array_equal(plans[r].trains, plans[0].trains) for r in range(10))  # the rounds differ
    other_seed = make(seed=1, probability=0.4, deadline=0.25, jitter=0.3)
    assert not all(same_plan(other_seed.plan(r, everyone), plans[r]) for r in range(10))


def test_a_clients_fate_does_not_depend_on_who_else_was_selected():
    update = make(probability=0.5, deadline=0.3, jitter=0.2)
    for r in range(20):
        everyone, some = update.plan(r, np.arange(6)), update.plan(r, np.array([1, 4, 5]))
        assert np.array_equal(some.trains, np.intersect1d(everyone.trains, [1, 4, 5]))
        assert np.array_equal(some.dropped_after_masking, np.intersect1d(everyone.dropped_after_masking, [1, 4, 5]))
        np.testing.assert_array_equal(some.virtual_seconds[[1, 4, 5]], everyone.virtual_seconds[[1, 4, 5]])


@pytest.mark.parametrize("probability", [0.1, 0.5])
def test_clients_drop_out_before_training_at_the_configured_rate(probability):
    update, rounds, clients = make(clients=10, probability=probability), 2000, 10
    dropped = np.array([update.record(update.plan(r, np.arange(clients)))["dropped"] for r in range(rounds)])
    gone = dropped == DROPPED_BEFORE_TRAINING
    # binomial standard errors: 0.0035 overall, 0.011 per client
    assert gone.mean() == pytest.approx(probability, abs=0.015)
    np.testing.assert_allclose(gone.mean(axis=0), probability, atol=0.05)  # no client is always the one to go
    assert gone[0].any() or gone[1].any()  # round 0 is no exception


def test_without_dropout_or_deadline_every_selected_client_trains_and_contributes():
    update = make()
    for r, selected in enumerate([np.arange(6), np.array([0, 3])]):
        plan = update.plan(r, selected)
        assert np.array_equal(plan.trains, selected) and np.array_equal(plan.contributes, selected)
        assert len(plan.dropped_after_masking) == 0
        assert not update.record(plan)["dropped"].any()


def test_virtual_time_is_the_work_over_the_clients_speed():
    sizes = np.array([5, 50, 20, 80])
    update = make(clients=4, train_sizes=sizes, epochs=3, speed="constant", samples_per_second=40.0)
    plan = update.plan(2, np.array([0, 1, 3]))
    np.testing.assert_allclose(plan.virtual_seconds, [5 * 3 / 40, 50 * 3 / 40, np.nan, 80 * 3 / 40])
    lognormal = make(clients=4, train_sizes=sizes, epochs=3)
    plan = lognormal.plan(2, np.arange(4))
    np.testing.assert_allclose(plan.virtual_seconds, sizes * 3 / lognormal.dropout.speed)


def test_a_client_past_the_deadline_trains_but_its_update_does_not_reach_the_sum():
    sizes = np.array([10, 30, 50, 70])  # 0.1 .. 0.7 virtual seconds at 100 samples per second
    update = make(clients=4, train_sizes=sizes, speed="constant", deadline=0.4)
    plan = update.plan(1, np.arange(4))
    assert np.array_equal(plan.trains, np.arange(4))
    assert np.array_equal(plan.dropped_after_masking, [2, 3]) and np.array_equal(plan.contributes, [0, 1])
    np.testing.assert_array_equal(update.record(plan)["dropped"], [0, 0, ARRIVED_LATE, ARRIVED_LATE])


def test_the_record_codes_each_client_and_leaves_the_time_of_those_that_did_not_train_nan():
    update = make(clients=8, probability=0.5, deadline=0.3)
    for r in range(30):
        selected = np.array([0, 2, 3, 5, 6, 7])
        plan = update.plan(r, selected)
        record = update.record(plan)
        gone = np.setdiff1d(selected, plan.trains)
        assert set(np.flatnonzero(record["dropped"] == DROPPED_BEFORE_TRAINING)) == set(gone)
        assert set(np.flatnonzero(record["dropped"] == ARRIVED_LATE)) == set(plan.dropped_after_masking)
        assert np.array_equal(np.flatnonzero(np.isfinite(record["virtual_seconds"])), plan.trains)
        assert (record["virtual_seconds"][plan.dropped_after_masking] > 0.3).all()
        assert (record["virtual_seconds"][plan.contributes] <= 0.3).all()
        assert record["dropped"][[1, 4]].tolist() == [0, 0]  # not selected


def test_lognormal_speeds_have_the_configured_median_and_spread():
    speeds = make(clients=4000, speed_sigma=0.7, samples_per_second=50.0).dropout.speed
    assert np.median(speeds) == pytest.approx(50.0, rel=0.05)
    assert np.log(speeds).std() == pytest.approx(0.7, rel=0.05)
    assert np.array_equal(speeds, make(clients=4000, speed_sigma=0.7, samples_per_second=50.0).dropout.speed)


def test_jitter_changes_a_clients_time_from_round_to_round_around_its_own():
    update = make(clients=3, jitter=0.3, speed="constant")
    times = np.array([update.plan(r, np.arange(3)).virtual_seconds for r in range(1500)])
    own = np.arange(10, 40, 10) / 100.0
    log_factor = np.log(times / own)
    np.testing.assert_allclose(log_factor.mean(axis=0), 0.0, atol=0.03)
    np.testing.assert_allclose(log_factor.std(axis=0), 0.3, rtol=0.08)


def test_a_round_in_which_nobody_contributes_keeps_the_global_state():
    update = make(clients=2, probability=0.9)
    r = next(r for r in range(100) if len(update.plan(r, np.arange(2)).contributes) == 0)
    plan = update.plan(r, np.arange(2))
    host = Host(SimpleNamespace(aggregation_weight=float))
    host.global_shared = torch.tensor([1.0, 2.0])
    aggregation = Aggregation(OneRank(), update, plan, n_published=0, n_clients=2)
    for c in plan.contributes:  # as the round loop does: none
        host.loaded = np.array([9.0, 9.0])
        aggregation.add(host, SimpleNamespace(index=c, split=SimpleNamespace(train=np.arange(3))))
    aggregation.allreduce_and_apply(host)
    assert host.global_shared.tolist() == [1.0, 2.0]


def test_dropped_clients_move_no_bytes_and_late_ones_only_download():
    update = make(clients=8, probability=0.4, deadline=0.3)
    plan = next(p for p in (update.plan(r, np.arange(8)) for r in range(50))
                if len(p.dropped_after_masking) and len(p.trains) < 8)
    comm = _bytes_moved(Config(clients=8), (100, 250), plan, update)
    np.testing.assert_array_equal(np.flatnonzero(comm["up"]), plan.contributes)
    np.testing.assert_array_equal(np.flatnonzero(comm["down"]), plan.trains)
    assert set(comm["up"][plan.contributes]) == {400} and set(comm["down"][plan.trains]) == {1000}


@pytest.mark.parametrize("dropout,key", [({"probability": 1.0}, "dropout.probability"),
                                         ({"probability": -0.1}, "dropout.probability"),
                                         ({"speed": "warp"}, "dropout.speed"),
                                         ({"samples_per_second": 0}, "dropout.samples_per_second"),
                                         ({"speed_sigma": -1}, "dropout.speed_sigma"),
                                         ({"jitter": -0.5}, "dropout.jitter"),
                                         ({"deadline": -2}, "dropout.deadline")])
def test_a_bad_dropout_section_names_the_key_and_the_fix(dropout, key):
    with pytest.raises(ConfigError) as err:
        parse_config({"dropout": dropout})
    assert err.value.key == key and "Fix:" in str(err.value)


def test_the_dropout_section_is_part_of_the_experiment():
    assert parse_config({"dropout": {"probability": 0.2}}).experiment_digest() != parse_config({}).experiment_digest()


"""Central differential privacy of the shared update (hpcfed/update/privacy.py, accountant.py): clipping, the
server's noise, adaptive clipping, the accountant, and the budget check before launch. No MPI: the hooks are
called directly, one fake rank at a time."""

import numpy as np
import pytest
import torch

from hpcfed.config import Config
from hpcfed.config.schema import MethodConfig
from hpcfed.config.validate import problems
from hpcfed.update import SharedUpdate
from hpcfed.update.accountant import Accountant
from hpcfed.update.privacy import PrivacyConfig, make_accountant


class Rank:
    """The part of the runtime SharedUpdate.allreduce uses; the sum over ranks is done by the test."""

    def __init__(self, is_server: bool):
        self.is_server = is_server

    def allreduce_shared(self, buffer):
        pass


def private_update(n_shared=3, clients=4, participation=1.0, seed=0, **privacy) -> SharedUpdate:
    return SharedUpdate(Config(clients=clients, participation=participation, seed=seed,
                               privacy=PrivacyConfig(enabled=True, **privacy)), n_shared)


def summed_over_ranks(update: SharedUpdate, plan, contributions: list[np.ndarray]) -> np.ndarray:
    """Rank 0 (the server, no clients) plus one client rank per contribution, each through the pipeline's
    allreduce hook, then summed as the Allreduce would."""
    buffers = [np.zeros(update.buffer_size)] + [c.copy() for c in contributions]
    for rank, buffer in enumerate(buffers):
        update.allreduce(Rank(is_server=rank == 0), plan, update.accumulator(plan, buffer))
    return np.sum(buffers, axis=0)


# ---- the accountant ------------------------------------------------------------------------------------------


def test_accountant_matches_dp_accounting_published_poisson_subsampled_gaussian():
    # dp_accounting/rdp/rdp_privacy_accountant_test.py, test_compute_rdp_poisson_sampled_gaussian: q = 0.01,
    # noise multiplier 2.5, 50 steps, its RDP at these orders (rtol 1e-4 there). Epsilon follows from them.
    from dp_accounting.rdp.rdp_privacy_accountant import compute_epsilon

    orders = [1.5, 2.5, 5, 50, 100]
    published = np.array([6.70579741e-04, 1.08548710e-03, 2.18075656e-03, 2.38460375e-02, 1.67416308e02])
    accountant = Accountant([2.5], first_rate=0.01, rate=0.01, orders=orders)
    np.testing.assert_allclose(50 * accountant.later_round, published, rtol=1e-4)
    expected = compute_epsilon(orders, published, 1e-5)[0]
    assert accountant.epsilon(50, 1e-5) == pytest.approx(expected, rel=1e-4)


def test_a_round_with_every_client_is_the_plain_gaussian_mechanism():
    # Round 0 samples everyone (q = 1). dp_accounting's test_compute_epsilon_delta_gaussian: noise multiplier
    # 4.530877117 gives exactly (1, 1e-6)-DP.
    accountant = Accountant([4.530877117], first_rate=1.0, rate=0.1)
    assert accountant.epsilon(1, 1e-6) == pytest.approx(1.0, abs=1e-6)


def test_epsilon_grows_with_rounds_and_the_count_noise_costs_privacy_too():
    fixed = make_accountant(PrivacyConfig(enabled=True, noise_multiplier=1.0), 100, 0.1)
    spent = [fixed.epsilon(k, 1e-5) for k in range(1, 30)]
    assert all(a < b for a, b in zip(spent, spent[1:], strict=False))
    adaptive = make_accountant(PrivacyConfig(enabled=True, noise_multiplier=1.0, adaptive_clip=True), 100, 0.1)
    assert adaptive.epsilon(29, 1e-5) > fixed.epsilon(29, 1e-5)
    assert make_accountant(PrivacyConfig(enabled=True, noise_multiplier=0.0), 100, 0.1).epsilon(1, 1e-5) == np.inf


# ---- the server's noise ----------------------------------------------------------------------------------------


def test_noise_is_added_once_per_round_with_variance_z_squared_c_squared():
    z, clip, n_shared, seeds = 1.5, 0.5, 100, 400
    noise = []
    for seed in range(seeds):
        update = private_update(n_shared, seed=seed, noise_multiplier=z, clip_norm=clip)
        plan = update.plan(0, np.arange(4))
        zeros = [np.zeros(update.buffer_size) for _ in range(3)]  # three client ranks, nothing to add
        noise.append(summed_over_ranks(update, plan, zeros)[:n_shared])
    noise = np.array(noise)  # [seed, coordinate]
    per_coordinate = noise.var(axis=0)
    # The mean over coordinates is within ~1% of z^2 C^2; four ranks each adding noise would give 4x.
    assert per_coordinate.mean() == pytest.approx(z**2 * clip**2, rel=0.05)
    assert np.all(np.abs(per_coordinate / (z**2 * clip**2) - 1) < 0.35)
    assert abs(noise.mean()) < 0.02


def test_noise_depends_on_seed_and_round_only_not_on_the_rank_count():
    update = private_update(50, noise_multiplier=1.0)
    plan = update.plan(3, np.arange(4))
    on_two_ranks = summed_over_ranks(update, plan, [np.zeros(update.buffer_size)])
    on_five_ranks = summed_over_ranks(update, plan, [np.zeros(update.buffer_size)] * 4)
    np.testing.assert_array_equal(on_two_ranks, on_five_ranks)
    next_round = summed_over_ranks(update, update.plan(4, np.arange(4)), [np.zeros(update.buffer_size)])
    assert not np.array_equal(on_two_ranks, next_round)
    assert on_two_ranks[50] == 0  # the weight total gets no noise: it is not released


def test_without_privacy_the_server_adds_nothing():
    update = SharedUpdate(Config(clients=4), n_shared=5)
    assert np.all(summed_over_ranks(update, update.plan(1, np.arange(4)), [np.zeros(6)]) == 0)


# ---- clipping and the mean -------------------------------------------------------------------------------------


def test_clipping_bounds_each_contribution_and_weights_every_client_equally():
    update = private_update(3, clip_norm=2.0)
    plan = update.plan(0, np.arange(4))
    large, small = torch.tensor([30.0, 40.0, 0.0], dtype=torch.float64), torch.tensor([0.3, 0.4, 0.0],
                                                                                      dtype=torch.float64)
    for delta in (large, small):
        contribution = update.contribution(plan, 0, delta, weight=500.0)  # a training-set-size weight
        assert torch.linalg.vector_norm(contribution[:3]) <= 2.0 + 1e-12
        assert contribution[3] == 1.0
    np.testing.assert_allclose(update.contribution(plan, 0, large, 500.0)[:3], [1.2, 1.6, 0.0])  # direction kept
    np.testing.assert_allclose(update.contribution(plan, 0, small, 500.0)[:3], small)  # within C: unchanged


def test_the_private_mean_divides_by_the_clients_sampled_not_by_those_that_contributed():
    update = private_update(2, noise_multiplier=0.0, clip_norm=10.0)
    plan = update.plan(1, np.arange(4))  # four sampled, two contribute (two dropped out)
    contributions = [update.contribution(plan, c, torch.tensor([4.0, 8.0], dtype=torch.float64), 1.0).numpy()
                     for c in (0, 1)]
    summed = summed_over_ranks(update, plan, contributions)
    new_global = update.step(plan, torch.zeros(2), summed)
    np.testing.assert_allclose(new_global.numpy(), [2.0, 4.0])  # (4 + 4) / 4, (8 + 8) / 4


def adapt(update: SharedUpdate, norms: np.ndarray, rounds: int) -> list[float]:
    """Run `rounds` of adaptive clipping with every client's delta of the given norm; the clip norm per round."""
    history = []
    for r in range(rounds):
        plan = update.plan(r, np.arange(len(norms)))
        contributions = [update.contribution(plan, c, torch.tensor([n, 0.0], dtype=torch.float64), 1.0).numpy()
                         for c, n in enumerate(norms)]
        summed = summed_over_ranks(update, plan, contributions)
        update.after_round(plan, summed)
        history.append(update.privacy.clip_norm)
    return history


@pytest.mark.parametrize("start", [1.0, 1000.0])
def test_adaptive_clip_norm_moves_to_the_target_quantile_of_the_norms(start):
    norms = np.arange(1.0, 101.0)  # the 0.3 quantile is 30
    update = private_update(2, clients=100, noise_multiplier=0.0, clip_norm=start, adaptive_clip=True,
                            target_quantile=0.3, clip_lr=0.2, clipped_count_stddev=0.0)
    history = adapt(update, norms, 200)
    assert 28 <= history[-1] <= 32
    moving = np.diff(history[:10])
    assert np.all(moving > 0) if start < 30 else np.all(moving < 0)


def test_adaptive_clip_norm_still_finds_the_quantile_with_count_noise():
    norms = np.arange(1.0, 101.0)
    update = private_update(2, clients=100, noise_multiplier=0.0, clip_norm=1.0, adaptive_clip=True,
                            target_quantile=0.5)  # count noise: 100 / 20 = 5, as Andrew et al.
    history = adapt(update, norms, 200)
    assert 35 <= np.mean(history[-50:]) <= 65


def test_the_clip_norm_of_the_next_round_is_checkpointed():
    update = private_update(2, clients=10, noise_multiplier=0.0, adaptive_clip=True, clipped_count_stddev=0.0)
    adapt(update, np.full(10, 5.0), 3)
    resumed = private_update(2, clients=10, noise_multiplier=0.0, adaptive_clip=True, clipped_count_stddev=0.0)
    resumed.load_state_dict(update.state_dict())
    assert resumed.privacy.clip_norm == update.privacy.clip_norm != 1.0


# ---- checks before launch --------------------------------------------------------------------------------------


def privacy_problems(config: Config) -> list[str]:
    return [str(p) for p in problems(config, check_weights=False) if p.key.startswith("privacy.")]


def test_a_budget_the_planned_rounds_would_exceed_is_refused_naming_the_round_and_the_fixes():
    config = Config(clients=100, participation=0.1, rounds=200,
                    privacy=PrivacyConfig(enabled=True, noise_multiplier=1.5, target_epsilon=4.0))
    (message,) = privacy_problems(config)
    accountant = make_accountant(config.privacy, 100, 0.1)
    over = next(k for k in range(1, 201) if accountant.epsilon(k, 1e-5) > 4.0)
    assert 1 < over < 200  # the budget runs out part-way, not at once
    assert f"from round {over} on" in message and f"rounds: {over - 1}" in message
    assert "noise_multiplier" in message and "participation" in message and "200 rounds" in message
    config.rounds = over - 1
    assert privacy_problems(config) == []


def test_privacy_is_refused_where_no_guarantee_can_hold():
    published = Config(clients=100, method=MethodConfig(name="pfedmoap"), privacy=PrivacyConfig(enabled=True))
    assert any("publishes" in p for p in privacy_problems(published))
    loose = Config(clients=100, privacy=PrivacyConfig(enabled=True, delta=0.05))
    assert any("below 1/clients" in p for p in privacy_problems(loose))

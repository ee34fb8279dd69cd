"""train.eval_clients without MPI: which clients a sampled evaluation round scores, and how a resumed run tells
the rounds that scored every client (the only model-selection candidates) from the sampled ones."""

import numpy as np

from hpcfed.config import parse_config
from hpcfed.results import CLIENT_METRICS
from hpcfed.rng import evaluation_sample
from hpcfed.train.recorder import _fully_evaluated, evaluated_clients


def test_sample_is_distinct_clients_per_round_from_the_seed():
    draws = [evaluation_sample(7, r, 100, 10) for r in range(5)]
    assert all(len(d) == 10 and len(set(d.tolist())) == 10 and d.max() < 100 for d in draws)
    assert len({tuple(d) for d in draws}) == 5  # a new draw every round
    np.testing.assert_array_equal(evaluation_sample(7, 3, 100, 10), draws[3])  # the seed alone decides
    assert not np.array_equal(evaluation_sample(8, 3, 100, 10), draws[3])


def test_zero_or_every_client_means_no_sample():
    assert evaluation_sample(0, 1, 10, 0) is None
    assert evaluation_sample(0, 1, 10, 10) is None


def test_last_round_scores_every_client():
    cfg = parse_config({"clients": 20, "rounds": 4, "train": {"eval_clients": 3}})
    assert all(len(evaluated_clients(cfg, r)) == 3 for r in range(3))
    assert evaluated_clients(cfg, 3) is None


def test_a_stored_round_is_full_only_if_a_client_outside_its_sample_was_scored():
    cfg = parse_config({"clients": 20, "rounds": 6, "train": {"eval_clients": 3}})
    sample = evaluated_clients(cfg, 2)
    rows = {name: np.full(20, np.nan) for name in CLIENT_METRICS}
    rows["test_accuracy"][sample] = 0.5
    assert not _fully_evaluated(cfg, 2, rows)
    rows["val_accuracy"][:] = 0.4  # the last round of an earlier start with rounds: 3 scored everyone
    assert _fully_evaluated(cfg, 2, rows)


def test_eval_clients_at_its_default_keeps_the_digests_of_runs_made_before_it():
    """0 (every client) is the behaviour before the key existed: the experiment digest leaves it out then."""
    plain, sampled = parse_config({"clients": 20}), parse_config({"clients": 20, "train": {"eval_clients": 5}})
    assert "eval_clients" not in plain.experiment()["train"]
    assert plain.experiment_digest() != sampled.experiment_digest()

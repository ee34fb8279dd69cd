"""Server optimizers (hpcfed/update/server_opt.py, the `server:` section): each step against an independent
reference over several rounds (Reddi et al. Algorithm 2 written out in numpy as Flower writes it, and torch.optim
where one is the same algorithm), state that survives a checkpoint bitwise, the server rank's state, bad inputs."""

import io

import numpy as np
import pytest
import torch

from hpcfed.config import Config, parse_config
from hpcfed.errors import ConfigError
from hpcfed.update import SharedUpdate
from hpcfed.update.server_opt import SERVER_OPTIMIZERS, ServerConfig, make_server_optimizer

N = 50
# Deltas whose scale jumps between rounds, so that FedYogi's sign(v - Δ²) takes both signs.
SCALES = [1.0, 0.01, 3.0, 0.001, 1.0, 0.1, 2.0]
DELTAS = np.random.default_rng(7).normal(size=(len(SCALES), N)) * np.array(SCALES)[:, None]
X0 = np.random.default_rng(8).normal(size=N)
# Not the defaults, so that an optimizer ignoring its config fails.
SETTINGS = {"lr": 0.05, "momentum": 0.7, "betas": [0.8, 0.95], "tau": 0.01}


def run_optimizer(name: str, deltas=DELTAS, **settings) -> np.ndarray:
    """x_t after each round: x_0 = X0 plus the optimizer's steps."""
    optimizer = make_server_optimizer(ServerConfig(optimizer=name, **settings), N)
    x, xs = torch.from_numpy(X0), []
    for delta in deltas:
        x = x + optimizer.step(torch.from_numpy(delta))
        xs.append(x.numpy())
    return np.array(xs)


def reference(name: str, lr: float, momentum: float, betas: list[float], tau: float, yogi_signs=None) -> np.ndarray:
    """Flower's FedAvgM / FedAdagrad / FedYogi / FedAdam updates in numpy, started as the paper starts them
    (m = 0, v = τ²) and without Flower's FedAdam bias correction (Algorithm 2 has none)."""
    beta1, beta2 = betas
    x, m, v, xs = X0.copy(), np.zeros(N), np.full(N, tau**2), []
    for delta in DELTAS:
        if name == "fedavg":
            x = x + lr * delta
        elif name == "fedavgm":
            m = momentum * m + delta
            x = x + lr * m
        else:
            m = np.multiply(beta1, m) + (1 - beta1) * delta
            if name == "fedadagrad":
                v = v + np.multiply(delta, delta)
            elif name == "fedadam":
                v = beta2 * v + (1 - beta2) * np.multiply(delta, delta)
            else:
                sign = np.sign(v - np.multiply(delta, delta))
                if yogi_signs is not None:
                    yogi_signs.update(sign.tolist())
                v = v - (1.0 - beta2) * np.multiply(delta, delta) * sign
            x = x + lr * m / (np.sqrt(v) + tau)
        xs.append(x)
    return np.array(xs)


@pytest.mark.parametrize("name", ["fedavg", "fedavgm", "fedadagrad", "fedyogi", "fedadam"])
def test_each_optimizer_follows_the_papers_update_over_several_rounds(name):
    signs = set()
    expected = reference(name, **SETTINGS, yogi_signs=signs)
    np.testing.assert_allclose(run_optimizer(name, **SETTINGS), expected, rtol=1e-12, atol=1e-14)
    if name == "fedyogi":
        assert signs >= {-1.0, 1.0}  # both branches of Yogi's second moment were exercised


def test_every_registered_optimizer_is_checked_against_a_reference():
    assert SERVER_OPTIMIZERS.names() == ["fedadagrad", "fedadam", "fedavg", "fedavgm", "fedyogi"]


def test_the_adaptive_optimizers_really_differ():
    finals = {name: run_optimizer(name, **SETTINGS)[-1] for name in ("fedadagrad", "fedyogi", "fedadam")}
    assert not np.allclose(finals["fedadam"], finals["fedyogi"])
    assert not np.allclose(finals["fedadam"], finals["fedadagrad"])


def _torch_optimizer_path(make) -> np.ndarray:
    """x_t when a torch.optim optimizer steps x along the gradient -Δ_t (an update is the opposite of a gradient)."""
    x = torch.nn.Parameter(torch.from_numpy(X0.copy()))
    optimizer, xs = make([x]), []
    for delta in DELTAS:
        x.grad = -torch.from_numpy(delta)
        optimizer.step()
        xs.append(x.detach().numpy().copy())
    return np.array(xs)


def test_fedavgm_is_torch_sgd_with_momentum_on_the_negative_delta():
    expected = _torch_optimizer_path(lambda p: torch.optim.SGD(p, lr=0.05, momentum=0.7))
    np.testing.assert_allclose(run_optimizer("fedavgm", lr=0.05, momentum=0.7), expected, rtol=1e-12, atol=1e-14)


def test_fedadagrad_without_momentum_is_torch_adagrad_started_at_tau_squared():
    expected = _torch_optimizer_path(lambda p: torch.optim.Adagrad(p, lr=0.05, eps=0.01,
                                                                   initial_accumulator_value=0.01**2))
    got = run_optimizer("fedadagrad", lr=0.05, betas=[0.0, 0.5], tau=0.01)
    np.testing.assert_allclose(got, expected, rtol=1e-12, atol=1e-14)


def test_fedavg_with_the_default_lr_steps_by_the_mean_delta_exactly():
    optimizer = make_server_optimizer(ServerConfig(), N)
    for delta in DELTAS:  # x + mean delta: the clients' weighted average, bit for bit as before this stage
        np.testing.assert_array_equal(optimizer.step(torch.from_numpy(delta)).numpy(), delta)


def test_lr_null_takes_each_optimizers_flower_default():
    defaults = {name: make_server_optimizer(ServerConfig(optimizer=name), N).lr for name in SERVER_OPTIMIZERS}
    assert defaults == {"fedavg": 1.0, "fedavgm": 1.0, "fedadagrad": 0.1, "fedadam": 0.1, "fedyogi": 0.01}
    assert make_server_optimizer(ServerConfig(optimizer="fedyogi", lr=0.3), N).lr == 0.3


@pytest.mark.parametrize("name", ["fedavgm", "fedadagrad", "fedyogi", "fedadam"])
def test_a_state_restored_mid_run_continues_bitwise(name):
    uninterrupted = run_optimizer(name, **SETTINGS)
    first = make_server_optimizer(ServerConfig(optimizer=name, **SETTINGS), N)
    x = torch.from_numpy(X0)
    for delta in DELTAS[:3]:
        x = x + first.step(torch.from_numpy(delta))
    saved = io.BytesIO()
    torch.save(first.state_dict(), saved)  # as checkpoint.py writes update.pt
    saved.seek(0)
    state = torch.load(saved)
    assert state and all(t.dtype == torch.float64 and t.shape == (N,) for t in state.values())
    resumed = make_server_optimizer(ServerConfig(optimizer=name, **SETTINGS), N)
    resumed.load_state_dict(state)
    for i, delta in enumerate(DELTAS[3:], start=3):
        x = x + resumed.step(torch.from_numpy(delta))
        np.testing.assert_array_equal(x.numpy(), uninterrupted[i])


def test_a_state_of_another_optimizer_is_refused():
    adam = make_server_optimizer(ServerConfig(optimizer="fedadam"), N)
    with pytest.raises(ValueError, match="no v of 50 values"):
        adam.load_state_dict(make_server_optimizer(ServerConfig(optimizer="fedavgm"), N).state_dict())


def test_the_server_rank_keeps_the_same_state_without_a_global_state():
    """Rank 0 holds no shared parameters but writes the checkpoint: its optimizer state must advance too."""
    cfg = Config(clients=2)
    cfg.server.optimizer = "fedadam"
    client_rank, server_rank = SharedUpdate(cfg, n_shared=N), SharedUpdate(cfg, n_shared=N)
    plan = client_rank.plan(0, np.arange(2))
    x = torch.from_numpy(X0).float()
    for delta in DELTAS:
        summed = np.concatenate([2.0 * delta, [2.0]])  # two clients of weight 1 with the same delta
        x = client_rank.step(plan, x, summed)
        assert server_rank.step(plan, None, summed) is None
    assert x.dtype == torch.float32
    for key, value in client_rank.state_dict()["optimizer"].items():
        torch.testing.assert_close(server_rank.state_dict()["optimizer"][key], value, rtol=0, atol=0)
    assert client_rank.step(plan, x, np.zeros(N + 1)) is None  # nobody contributed: no step, the state stays
    torch.testing.assert_close(client_rank.state_dict(), server_rank.state_dict(), rtol=0, atol=0)


BAD = [
    ({"optimizer": "fedsgd"}, "server.optimizer", "fedadagrad, fedadam, fedavg, fedavgm, fedyogi"),
    ({"lr": 0}, "server.lr", "positive"),
    ({"lr": -0.1}, "server.lr", "positive"),
    ({"momentum": 1.0}, "server.momentum", "[0, 1)"),
    ({"betas": [0.9, 1.0]}, "server.betas[1]", "[0, 1)"),
    ({"betas": [-0.1, 0.99]}, "server.betas[0]", "[0, 1)"),
    ({"betas": [0.9]}, "server.betas", "two numbers"),
    ({"tau": 0}, "server.tau", "positive"),
]


@pytest.mark.parametrize("server,key,says", BAD, ids=[f"{b[1]}-{i}" for i, b in enumerate(BAD)])
def test_bad_server_settings_name_the_key_and_the_fix(server, key, says):
    with pytest.raises(ConfigError) as err:
        parse_config({"server": server})
    assert err.value.key == key
    assert says in str(err.value).replace("'", "") and "Fix:" in str(err.value)


def test_server_settings_are_part_of_the_experiment():
    base = parse_config({})
    adam = parse_config({"server": {"optimizer": "fedadam", "betas": [0.9, 0.999]}})
    assert adam.server.betas == [0.9, 0.999]
    assert adam.experiment_digest() != base.experiment_digest()

"""The personalized prompt/adapter baselines of methods.md §3 (FedPGP, FedOTP, pFedMoAP, FedCLIP): parameter
counts against §1.3, their mechanics on the tiny model, and one short MPI run each."""

from __future__ import annotations

import copy
import dataclasses
import io
import math
import sys
from pathlib import Path
from types import SimpleNamespace

import h5py
import numpy as np
import pytest
import torch

from hpcfed.config import parse_config
from hpcfed.data.imagefolder import read_imagefolder
from hpcfed.methods import METHODS
from hpcfed.methods.fedotp import unbalanced_plan
from hpcfed.methods.pfedmoap import AttentionGate
from hpcfed.methods.prompt_sets import prompt_set_features
from hpcfed.models import create_backbone
from hpcfed.split import make_splits
from hpcfed.train.aggregate import Aggregation
from hpcfed.train.setup import build_host
from hpcfed.update import SharedUpdate

from conftest import run_mpi, write_config

BASELINES = ("fedpgp", "fedotp", "pfedmoap", "fedclip")
CLASSES = ["cat", "dog", "ice cream"]


def counts(method, added) -> tuple[int, int]:
    trainable = sum(p.numel() for p in added.parameters() if p.requires_grad)
    shared = sum(p.numel() for name, p in added.named_parameters() if method.is_shared(name))
    return trainable, shared


@pytest.fixture(scope="module", autouse=True)
def one_thread():
    # Small tensors: extra threads only add contention on a shared machine.
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="module")
def vit_b16():
    torch.manual_seed(0)
    return create_backbone("ViT-B-16", None)[0]


@pytest.mark.slow
@pytest.mark.parametrize("name, trainable, shared", [
    ("fedpgp", 12_416, 8_192),  # sigma 16x512 shared; U 16x8 + V 8x512 local
    ("fedotp", 16_384, 8_192),  # global and local prompt, 16x512 each
    ("pfedmoap", 8_192 + 66_048, 8_192),  # prompt + gating (4 x Linear(128, 128)); experts are not trained
    ("fedclip", 525_312, 525_312),  # 2 x Linear(512, 512), all shared
])
def test_vit_b16_counts_match_methods_md(vit_b16, name, trainable, shared):
    clip = copy.deepcopy(vit_b16)  # a fresh backbone per method
    method = METHODS[name]()
    added = method.attach(clip, torch.Generator().manual_seed(0))
    assert counts(method, added) == (trainable, shared)
    if name == "pfedmoap":
        published = sum(p.numel() for n, p in added.named_parameters() if method.is_published(n))
        assert published == 8_192
        assert added["params"]["experts"].numel() == 9 * 8_192
        assert method.upload_download_floats(shared) == (8_192, 8_192 + 9 * 8_192)  # = 81,920 down
    else:
        assert method.upload_download_floats(shared) == (shared, shared)


def tiny(name: str, **options):
    torch.manual_seed(0)
    clip, _, tokenizer = create_backbone("hpcfed-tiny", None)
    method = METHODS[name](options)
    added = method.attach(clip, torch.Generator().manual_seed(0))
    tokens = tokenizer(method.prompt_texts(CLASSES, "a photo of a {}."))
    return clip, method, added, tokens


def batch(n: int = 12, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(n, 3, 64, 64, generator=g), torch.arange(n) % len(CLASSES)


@pytest.mark.parametrize("name, optimizer, lr", [
    # pFedMoAP at 0.01: its raw dot-product mixture, with the gating at 5x the lr, diverges at 0.5.
    ("fedpgp", "sgd", 0.5), ("fedotp", "sgd", 0.5), ("pfedmoap", "sgd", 0.01), ("fedclip", "adam", 1e-3)])
def test_a_few_steps_reduce_the_training_loss(name, optimizer, lr):
    clip, method, added, tokens = tiny(name)
    if name == "pfedmoap":  # with experts downloaded: the gated mixture, not only the plain prompt, trains
        method.before_local_training(0, *published_prompts(added, 10))
    images, labels = batch()
    params = [p for p in added.parameters() if p.requires_grad]
    opt = torch.optim.SGD(params, lr=lr) if optimizer == "sgd" else torch.optim.Adam(params, lr=lr)

    def loss_now() -> float:
        clip.eval()  # no dropout while measuring
        with torch.no_grad():
            return method.training_loss(clip, images, labels, tokens).item()

    before = loss_now()
    clip.train()
    for _ in range(5):
        loss = method.training_loss(clip, images, labels, tokens)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert np.isfinite(before) and loss_now() < before
    # Evaluation path: per-client text features once, then logits per batch.
    clip.eval()
    with torch.no_grad():
        logits = method.logits(clip, images, method.text_features(clip, tokens))
    assert logits.shape == (len(images), len(CLASSES)) and torch.isfinite(logits).all()


def cot_linear(cost: torch.Tensor, eps: float, mass: float, iters: int) -> torch.Tensor:
    """The COT iteration in the plain (linear) domain, float64, for comparison."""
    m, n = cost.shape[1:]
    k = torch.exp(-cost.double() / eps)
    u, v = torch.ones(cost.shape[:2], dtype=k.dtype), torch.ones(cost.shape[0], n, dtype=k.dtype)
    for _ in range(iters):
        u = torch.minimum((1 / m) / (k @ v.unsqueeze(-1)).squeeze(-1), torch.ones_like(u))
        v = (mass / n) / (k.transpose(1, 2) @ u.unsqueeze(-1)).squeeze(-1)
    return u.unsqueeze(2) * k * v.unsqueeze(1)


def test_ot_plan_respects_the_marginals():
    g = torch.Generator().manual_seed(0)
    m, n = 64, 2
    cost = 1.0 - (0.1 + 0.3 * torch.rand(50, m, n, generator=g))  # cosines of CLIP features: 0.1..0.4
    plan = unbalanced_plan(cost, eps=0.01, prompt_mass=0.8)
    assert torch.isfinite(plan).all() and (plan >= 0).all()
    # Each prompt receives exactly 0.8 / N; no token gives more than its mass 1/M; 0.8 moves in total.
    torch.testing.assert_close(plan.sum(1), torch.full((50, n), 0.8 / n), rtol=1e-4, atol=1e-6)
    # Rows meet their cap only at convergence: within 5% at the default stop, 0.1% when run longer.
    assert (plan.sum(2) <= 1.05 / m).all()
    assert (unbalanced_plan(cost, eps=0.01, prompt_mass=0.8, thresh=1e-5, max_iter=1000).sum(2) <= 1.001 / m).all()
    torch.testing.assert_close(plan.sum((1, 2)), torch.full((50,), 0.8), rtol=1e-4, atol=1e-6)
    # The log-domain solver runs the official iteration: same plan as the linear one where that one is exact.
    milder = cost[:5].double()
    torch.testing.assert_close(unbalanced_plan(milder, 0.1, 0.8, thresh=0, max_iter=30),
                               cot_linear(milder, 0.1, 0.8, 30), rtol=1e-8, atol=1e-12)


def test_fedotp_matches_patch_tokens_and_leaves_encode_image_alone():
    clip, method, added, tokens = tiny("fedotp")
    images, _ = batch(4)
    text = method.text_features(clip, tokens)
    assert text.shape == (2, len(CLASSES), 128)  # [global, local] prompts
    logits = method.logits(clip, images, text)
    assert clip.visual.output_tokens is False
    assert clip.encode_image(images).shape == (4, 128)
    # The plan moves 0.8 of the mass, so |logit| <= logit_scale * 0.8 * max |cos|.
    assert logits.shape == (4, len(CLASSES))
    assert (logits.abs() <= clip.logit_scale.exp() * 0.8 + 1e-4).all()
    # Gradients reach both prompts (the plan itself is solved without gradient).
    torch.nn.functional.cross_entropy(logits, torch.tensor([0, 1, 2, 0])).backward()
    assert added["ctx_global"].grad.abs().sum() > 0 and added["ctx_local"].grad.abs().sum() > 0


def test_fedpgp_contrastive_term_is_finite_and_moves_u_and_v():
    clip, method, added, tokens = tiny("fedpgp")
    personal, sigma = prompt_set_features(clip, tokens, method._contexts())
    contrast = method.contrastive(clip, tokens, personal, sigma)
    assert torch.isfinite(contrast) and contrast > 0
    contrast.backward()
    for name in ("U", "V", "sigma"):
        assert torch.isfinite(added[name].grad).all() and added[name].grad.abs().sum() > 0, name
    before = {k: p.detach().clone() for k, p in added.items()}
    torch.optim.SGD(added.parameters(), lr=1.0).step()
    assert not torch.equal(before["U"], added["U"]) and not torch.equal(before["V"], added["V"])
    # The anchor is frozen CLIP on the placeholder prompt: no parameter of the method changes it.
    torch.testing.assert_close(method.anchor.get((tokens,), lambda: None), clip.encode_text(tokens, normalize=True))


def test_pfedmoap_gating_shapes_and_parameter_count():
    gate = AttentionGate(128, heads=8, scaling=10.0, generator=torch.Generator().manual_seed(0))
    assert sum(p.numel() for p in gate.parameters()) == 66_048
    query, experts = torch.randn(5, 128), torch.randn(10, 3, 128)
    assert gate(query, experts).shape == (5, 3, 128)
    gate.train()
    assert torch.equal(gate(query, experts), gate(query, experts))  # no dropout, not even in training

    clip, method, added, tokens = tiny("pfedmoap")
    method.before_local_training(0, *published_prompts(added, 10))
    text = method.text_features(clip, tokens)
    assert text.shape == (10, len(CLASSES), 128)  # own prompt + 9 experts
    images, labels = batch(4)
    assert method.logits(clip, images, text).shape == (4, len(CLASSES))


def published_prompts(added, n_clients: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor, None]:
    """(table, known, rng) for before_local_training: n_clients published prompts, the own one (row 0) first."""
    prompt = added["params"]["prompt"].detach().reshape(-1)
    g = torch.Generator().manual_seed(seed)
    table = prompt + 0.01 * torch.randn(n_clients, prompt.numel(), generator=g)
    return table, torch.ones(n_clients, dtype=torch.bool), None


def test_pfedmoap_gating_gradients_are_scaled_by_the_lr_ratio():
    grads = {}
    for ratio in (1.0, 5.0):
        clip, method, added, tokens = tiny("pfedmoap", gating_lr_ratio=ratio)
        method.before_local_training(0, *published_prompts(added, 10))
        images, labels = batch(4)
        method.training_loss(clip, images, labels, tokens).backward()
        grads[ratio] = (added["gate"].q.weight.grad.clone(), added["params"]["prompt"].grad.clone())
    torch.testing.assert_close(grads[5.0][0], 5 * grads[1.0][0])
    torch.testing.assert_close(grads[5.0][1], grads[1.0][1])  # the prompt keeps its own lr


def test_pfedmoap_downloads_the_nearest_published_prompts_never_its_own():
    clip, method, added, tokens = tiny("pfedmoap")
    experts, prompt = added["params"]["experts"], added["params"]["prompt"]
    in_use = added["params"]["expert_in_use"]
    n = prompt.numel()
    own = 3
    # Client j's prompt sits at distance rank[j] from client 3's; client 7 would be nearest but never published.
    rank = torch.tensor([5.0, 9, 2, 0, 11, 4, 8, 0.5, 1, 10, 7, 3, 6, 12])
    table = torch.randn(n).expand(len(rank), n) + rank.unsqueeze(1) * torch.ones(n) / n ** 0.5
    known = torch.ones(len(rank), dtype=torch.bool)
    known[7] = False
    global_prompt = prompt.detach().clone()
    method.before_local_training(own, table, known, None)
    expected = [8, 2, 11, 5, 0, 12, 10, 6, 1]  # by distance 1, 2, ..., 9; skips itself (0) and 7 (unknown)
    torch.testing.assert_close(experts.detach().view(9, n), table[expected])
    assert in_use.tolist() == [1.0] * 9
    assert torch.equal(prompt.detach(), global_prompt)  # the averaged prompt is left as loaded


def test_pfedmoap_first_participation_downloads_no_expert():
    clip, method, added, tokens = tiny("pfedmoap")
    in_use = added["params"]["expert_in_use"]
    table, known, _ = published_prompts(added, 12)
    known[4] = False  # client 4 has never trained (federated_main.py:362-374): no expert, however many exist
    method.before_local_training(4, table, known, None)
    assert in_use.sum() == 0 and method.text_features(clip, tokens).shape[0] == 1
    method.before_local_training(0, None, None, None)  # round 0: nothing published at all
    assert in_use.sum() == 0 and method.text_features(clip, tokens).shape[0] == 1


def test_pfedmoap_takes_every_other_published_prompt_when_fewer_than_k_minus_1_once():
    clip, method, added, tokens = tiny("pfedmoap")
    experts, in_use = added["params"]["experts"], added["params"]["expert_in_use"]
    table, known, _ = published_prompts(added, 14)
    known[:] = False
    known[[3, 1, 4]] = True
    method.before_local_training(3, table, known, None)
    assert in_use.tolist() == [1.0, 1.0] + [0.0] * 7  # two experts, not 9 slots filled by repetition
    torch.testing.assert_close(experts.detach()[:2].reshape(2, -1), table[[1, 4]])
    assert method.text_features(clip, tokens).shape[0] == 3  # own prompt + the 2 experts in use


def test_pfedmoap_without_experts_gives_plain_clip_logits_without_lambda():
    clip, method, added, tokens = tiny("pfedmoap")
    images, _ = batch(4)
    with torch.no_grad():
        text = method.text_features(clip, tokens)
        expected = clip.logit_scale.exp() * clip.encode_image(images, normalize=True) @ text[0].T
        torch.testing.assert_close(method.logits(clip, images, text), expected)


def test_pfedmoap_mixture_is_a_raw_dot_product_of_pooled_image_and_gated_features():
    # gating_dim 2 on the tiny model's 128-wide embedding: pool keeps features 0 and 64.
    clip, method, added, tokens = tiny("pfedmoap", gating_dim=2, heads=1, scaling=10.0, lam=0.5)
    gate = added["gate"]
    with torch.no_grad():
        clip.logit_scale.fill_(math.log(100.0))
        for layer in (gate.q, gate.k, gate.v, gate.o):  # identity projections: the arithmetic below is the gate
            layer.weight.copy_(torch.eye(2))
            layer.bias.zero_()
    image = torch.zeros(1, 128)
    image[0, 0], image[0, 64] = 0.6, 0.8  # unit norm; pooled q = (0.6, 0.8)
    text = torch.zeros(2, 2, 128)  # [own, expert] x [class 0, class 1], unit vectors
    text[0, 0, 0] = 1.0  # own, class 0: pooled (1, 0)
    text[1, 0, 64], text[1, 0, 1] = 0.6, 0.8  # expert, class 0: pooled (0, 0.6), not renormalized
    text[0, 1, 64], text[0, 1, 2] = 0.6, 0.8  # own, class 1: pooled (0, 0.6)
    text[1, 1, 0], text[1, 1, 64] = 0.8, 0.6  # expert, class 1: pooled (0.8, 0.6)
    clip.encode_image = lambda images, normalize=True: image

    def softmax2(a: float, b: float) -> tuple[float, float]:
        return math.exp(a) / (math.exp(a) + math.exp(b)), math.exp(b) / (math.exp(a) + math.exp(b))

    # Class 0: scores 10 * (0.6*1 + 0.8*0) = 6 and 10 * (0.8*0.6) = 4.8; gated = w0 (1, 0) + w1 (0, 0.6).
    w0, w1 = softmax2(6.0, 4.8)
    class0 = 0.5 * 100 * 0.6 + 100 * (0.6 * w0 + 0.8 * 0.6 * w1)
    # Class 1: scores 10 * (0.8*0.6) = 4.8 and 10 * (0.6*0.8 + 0.8*0.6) = 9.6; gated = w0 (0, 0.6) + w1 (0.8, 0.6).
    w0, w1 = softmax2(4.8, 9.6)
    class1 = 0.5 * 100 * 0.48 + 100 * (0.8 * 0.6 * w0 + (0.6 * 0.8 + 0.8 * 0.6) * w1)
    with torch.no_grad():
        logits = method.logits(clip, torch.zeros(1, 3, 64, 64), text)
    torch.testing.assert_close(logits, torch.tensor([[class0, class1]]), rtol=1e-5, atol=1e-4)


def pfedmoap_host(image_tree: Path, clients=(0, 1)):
    """A ClientHost of pFedMoAP on the tiny model with 2 clients (one per domain), both on this process."""
    cfg = parse_config({"clients": 2, "model": {"name": "hpcfed-tiny"}, "method": {"name": "pfedmoap"},
                        "data": {"dataset": "imagefolder", "root": str(image_tree), "domains": ["a", "b"]},
                        "partition": {"scheme": "domain_dirichlet", "clients_per_domain": 1},
                        "train": {"lr": 0.01, "batch_size": 8}})
    listing = read_imagefolder(image_tree, domain_level=True)
    return build_host(cfg, SimpleNamespace(device="cpu"), listing, make_splits(listing, cfg.partition, 2, 0),
                      list(clients))


def train_and_aggregate(host, round_index: int) -> None:
    """One round of the loop on a single process: local training, then the real aggregation code (its Allreduce
    over one process is the identity)."""
    one_process = SimpleNamespace(shared_buffer=lambda n: np.zeros(n), allreduce_shared=lambda buffer: None,
                                  allreduce_published=lambda table: None, is_server=False)
    n_clients = len(host.splits.clients)
    update = host.__dict__.setdefault("update", SharedUpdate(host.cfg, host.n_shared))  # one per run, as set_up's
    aggregation = Aggregation(one_process, update, update.plan(round_index, np.arange(n_clients)), host.n_published,
                              n_clients)
    for client in host.clients.values():
        host.train(client, round_index)
        aggregation.add(host, client)
    aggregation.allreduce_and_apply(host)


def prompts_seen_by_text_features(host) -> list[torch.Tensor]:
    """Every prompt the method computes text features with from now on."""
    seen, original = [], host.method.text_features

    def spy(clip, tokens):
        seen.append(host.method.added["params"]["prompt"].detach().clone())
        return original(clip, tokens)

    host.method.text_features = spy
    return seen


def test_pfedmoap_evaluates_each_client_with_its_own_trained_prompt(image_tree):
    host = pfedmoap_host(image_tree)
    train_and_aggregate(host, 0)
    a, b = host.clients[0], host.clients[1]
    shape = host.method.added["params"]["prompt"].shape
    trained_a, trained_b = host.published[0].view(shape), host.published[1].view(shape)  # as they were averaged
    global_prompt = host.global_shared.view(shape)
    assert not torch.equal(trained_a, trained_b)
    common = a.split.test  # the same images for both clients
    a.split, b.split = dataclasses.replace(a.split, test=common), dataclasses.replace(b.split, test=common)
    seen = prompts_seen_by_text_features(host)
    out_a = host.evaluate(a)
    evaluated = seen[0]  # validation and test share one text pass: the same parameters (hpcfed.train.reuse)
    assert torch.equal(evaluated, trained_a)
    assert not torch.equal(evaluated, global_prompt)
    out_b = host.evaluate(b)
    assert out_a["test_loss"] != out_b["test_loss"]  # same images, same (untrained) gating: only the prompts differ
    # The global metric is the average prompt's, the one a client that never trained gets: encoded once, for a
    # and b alike; b's own pass is its own prompt.
    assert len(seen) == 3 and torch.equal(seen[1], global_prompt) and torch.equal(seen[2], trained_b)
    assert out_a["global_accuracy"] == out_b["global_accuracy"]


def test_pfedmoap_local_training_starts_from_the_global_prompt(image_tree):
    host = pfedmoap_host(image_tree)
    train_and_aggregate(host, 0)
    global_prompt = host.global_shared.clone()
    started = []
    original = host.method.before_local_training
    host.method.before_local_training = lambda *args: (
        started.append(host.method.added["params"]["prompt"].detach().reshape(-1).clone()), original(*args))
    train_and_aggregate(host, 1)
    assert len(started) == 2 and all(torch.equal(s, global_prompt) for s in started)
    # Round 1 used the experts: each client downloaded the other's round-0 prompt.
    assert [int(c.local["params.expert_in_use"].sum()) for c in host.clients.values()] == [1, 1]


def test_pfedmoap_resumed_from_a_checkpoint_continues_bitwise(image_tree):
    host = pfedmoap_host(image_tree)
    for r in (0, 1):
        train_and_aggregate(host, r)
    saved = io.BytesIO()  # what checkpoint.save writes and checkpoint.load reads back
    torch.save((host.client_states(), host.global_state()), saved)
    saved.seek(0)
    clients, global_state = torch.load(saved, weights_only=True)
    resumed = pfedmoap_host(image_tree)
    resumed.set_global_state(global_state)
    for index, state in clients.items():
        resumed.set_client_state(index, state)
    for index in (0, 1):  # the own trained prompts came back: evaluation as before the checkpoint
        assert host.evaluate(host.clients[index]) == resumed.evaluate(resumed.clients[index])
    for h in (host, resumed):
        train_and_aggregate(h, 2)
    assert torch.equal(host.global_shared, resumed.global_shared) and torch.equal(host.published, resumed.published)
    for index in (0, 1):
        assert host.evaluate(host.clients[index]) == resumed.evaluate(resumed.clients[index])


EXPECTED_FLOATS = {  # per participant and round, hpcfed-tiny: text width 128, embedding 128, 16 context tokens
    "fedpgp": (16 * 128, 16 * 128),
    "fedotp": (16 * 128, 16 * 128),
    "pfedmoap": (16 * 128, 16 * 128 + 9 * 16 * 128),  # the download includes the 9 experts
    "fedclip": (2 * (128 * 128 + 128), 2 * (128 * 128 + 128)),
}


@pytest.fixture(scope="module")
def mpi_runs(tmp_path_factory, image_tree) -> dict[str, Path]:
    """Two rounds of every baseline on 3 ranks, one after another in a single MPI job (this file run as a
    script, see the bottom): one launch instead of four saves the start-up of three."""
    tmp = tmp_path_factory.mktemp("baselines")
    configs = [write_config(tmp / f"{name}.yaml", image_tree, rounds=2, method={"name": name},
                            train={"batch_size": 8})  # the method's own train defaults (lr, optimizer)
               for name in BASELINES]
    done = run_mpi(3, [sys.executable, __file__, *map(str, configs)], timeout=240)
    assert done.returncode == 0, done.stderr[-3000:]
    return {name: cfg.with_suffix(".h5") for name, cfg in zip(BASELINES, configs, strict=True)}


@pytest.mark.mpi
@pytest.mark.parametrize("name", BASELINES)
def test_two_rounds_under_mpi_account_the_declared_floats(mpi_runs, name):
    up, down = EXPECTED_FLOATS[name]
    with h5py.File(mpi_runs[name], "r") as f:
        assert f["status"][()].decode() == "finished"
        assert int(f["progress/rounds_done"][()]) == 2
        trained = np.isfinite(f["metrics/client/train_loss"][:])  # [round, client]: the participants
        assert trained[0].all() and trained.sum(1).tolist() == f["metrics/global/participants"][:].tolist()
        np.testing.assert_array_equal(f["comm/bytes_up"][:], np.where(trained, 4 * up, 0))
        np.testing.assert_array_equal(f["comm/bytes_down"][:], np.where(trained, 4 * down, 0))
        assert np.isfinite(f["metrics/client/test_accuracy"][-1]).all()


if __name__ == "__main__":  # under mpiexec (mpi_runs): train every config given, in order, in one MPI job
    from hpcfed.config import load_config
    from hpcfed.runtime import abort_on_error, init_runtime
    from hpcfed.train.loop import run

    rt = init_runtime(threads=1)
    with abort_on_error(rt.world):
        for config in sys.argv[1:]:
            run(load_config(config), rt, overwrite=True)

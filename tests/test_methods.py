"""The methods of the harness: parameter counts against methods.md §1.3, and what each declaration means."""

import numpy as np
import pytest
import torch

from hpcfed.config import parse_config
from hpcfed.errors import ConfigError
from hpcfed.methods import METHODS
from hpcfed.methods.lora import LoRAAttention
from hpcfed.methods.prompt import prompted_text_features
from hpcfed.metrics import harmonic_mean, select_round
from hpcfed.models import create_backbone


def attach(model: str, method: str, **options):
    torch.manual_seed(0)
    clip, _, tokenizer = create_backbone(model, None)
    m = METHODS[method](parse_config({"method": {"name": method, **options}}).method.options)
    added = m.attach(clip, torch.Generator().manual_seed(0))
    trainable = sum(p.numel() for p in added.parameters() if p.requires_grad)
    shared = sum(p.numel() for n, p in added.named_parameters() if m.is_shared(n))
    return clip, tokenizer, m, added, trainable, shared


# ViT-B-16: 12 blocks per tower, widths 768 (image) and 512 (text), text context width 512.
LORA_B = 4 * 12 * 768 + 4 * 12 * 512  # d_out x r per target per block: 61,440 per unit of rank (§2.3)
assert LORA_B == 61_440  # the pLoRA payload per unit of rank in methods.md
EXPECTED = {
    ("pfedmma", ()): (674_560, 8_448),
    ("fedmma", ()): (674_560, 674_560),
    ("promptfl", ()): (8_192, 8_192),
    ("zeroshot", ()): (0, 0),
    ("plora", (("rank", 2),)): (2 * 2 * LORA_B, 2 * LORA_B),  # A is as large as B here (square projections)
    ("fedlora", (("rank", 2),)): (2 * 2 * LORA_B, 2 * 2 * LORA_B),
    ("local", (("family", "mma"),)): (674_560, 0),
    ("fedavg", (("family", "prompt"),)): (8_192, 8_192),
    ("local", (("family", "lora"), ("rank", 8))): (2 * 8 * LORA_B, 0),
}


@pytest.mark.slow
@pytest.mark.parametrize("method,options", list(EXPECTED), ids=[f"{m}{dict(o)}" for m, o in EXPECTED])
def test_vit_b16_trainable_and_communicated_counts(method, options):
    *_, trainable, shared = attach("ViT-B-16", method, **dict(options))
    assert (trainable, shared) == EXPECTED[(method, options)]


def lora_factor_floats(model: str, rank: int, n_targets: int = 4) -> int:
    """Floats of all A factors (r x d_in), equal to those of all B factors (d_out x r) since the attention
    projections are square: n_targets per block, every block of both towers, from open_clip's architecture config."""
    import open_clip

    towers = open_clip.get_model_config(model)
    return rank * sum(n_targets * towers[t]["layers"] * towers[t]["width"] for t in ("vision_cfg", "text_cfg"))


# Which factor each LoRA sharing variant averages, keeps on the client, or freezes at its shared initial value.
LORA_VARIANTS = {"fedsa_lora": {"shared": "A", "local": "B", "frozen": None},
                 "ffa_lora": {"shared": "B", "local": "A", "frozen": "A"}}


@pytest.mark.slow
@pytest.mark.parametrize("method", list(LORA_VARIANTS))
def test_vit_b16_shared_local_and_frozen_counts_of_the_lora_sharing_variants(method):
    clip, _, m, added, trainable, shared = attach("ViT-B-16", method)
    factor = lora_factor_floats("ViT-B-16", rank=2)
    assert factor == 2 * LORA_B == 122_880  # 12 x 4 x (768 + 512) x r
    named = dict(added.named_parameters())
    local = sum(p.numel() for n, p in named.items() if not m.is_shared(n))
    frozen = sum(p.numel() for p in named.values() if not p.requires_grad)
    roles = LORA_VARIANTS[method]
    assert {n.rsplit(".", 1)[1] for n in named if m.is_shared(n)} == {roles["shared"]}
    frozen_factors = {n.rsplit(".", 1)[1] for n, p in named.items() if not p.requires_grad}
    assert frozen_factors == ({roles["frozen"]} if roles["frozen"] else set())
    assert (shared, local, frozen) == (factor, factor, factor if roles["frozen"] else 0)
    assert trainable == {"fedsa_lora": 245_760, "ffa_lora": 122_880}[method] == 2 * factor - frozen
    # Nothing else of the backbone trains: the whole model's trainable parameters are the method's.
    assert sum(p.numel() for p in clip.parameters() if p.requires_grad) == trainable


def test_lora_sharing_variants_differ_only_in_the_factor_shared_or_frozen():
    shared = {}
    for method in ("fedlora", "plora", *LORA_VARIANTS):
        _, _, m, added, trainable, n_shared = attach("hpcfed-tiny", method)
        names = [n for n, _ in added.named_parameters()]
        shared[method] = {n.rsplit(".", 1)[1] for n in names if m.is_shared(n)}
        assert trainable + sum(p.numel() for p in added.parameters() if not p.requires_grad) == \
            sum(p.numel() for p in added.parameters())
    assert shared == {"fedlora": {"A", "B"}, "plora": {"B"}, "fedsa_lora": {"A"}, "ffa_lora": {"B"}}
    assert METHODS["ffa_lora"].recipe == METHODS["fedsa_lora"].recipe == METHODS["plora"].recipe  # CLIP-LoRA's


def test_lora_starts_as_the_frozen_model_and_then_moves():
    clip, tokenizer, method, added, *_ = attach("hpcfed-tiny", "plora")
    plain, _, _ = create_backbone("hpcfed-tiny", None)
    plain.load_state_dict({k.replace(".attn.attn.", ".attn."): v for k, v in clip.state_dict().items()
                           if ".factors." not in k})
    images, tokens = torch.randn(2, 3, 64, 64), tokenizer(["a photo of a cat.", "a dog."])
    assert any(isinstance(b.attn, LoRAAttention) for b in clip.visual.transformer.resblocks)
    with torch.no_grad():
        assert torch.allclose(clip.encode_image(images), plain.encode_image(images), atol=1e-5)
        assert torch.allclose(clip.encode_text(tokens), plain.encode_text(tokens), atol=1e-5)  # causal mask kept
        for name, p in added.named_parameters():
            if name.endswith(".B"):
                p.normal_()
        assert not torch.allclose(clip.encode_image(images), plain.encode_image(images), atol=1e-3)


def test_prompt_context_equal_to_the_placeholder_embeddings_reproduces_plain_text_features():
    clip, tokenizer, method, added, *_ = attach("hpcfed-tiny", "promptfl", n_ctx=4)
    texts = method.prompt_texts(["cat", "ice cream"], "ignored {}")
    assert texts == ["X X X X cat.", "X X X X ice cream."]
    tokens = tokenizer(texts)
    with torch.no_grad():
        placeholder = clip.token_embedding(tokens)[0, 1:5]
        same = prompted_text_features(clip, tokens, placeholder)
        assert torch.allclose(same, clip.encode_text(tokens, normalize=True), atol=1e-5)
        assert not torch.allclose(method.text_features(clip, tokens), same, atol=1e-3)  # the learned context


def test_family_options_that_do_not_apply_are_refused():
    with pytest.raises(ConfigError) as err:
        parse_config({"method": {"name": "local", "family": "mma", "rank": 4}})
    assert err.value.key == "method.rank"
    with pytest.raises(ConfigError) as err:
        parse_config({"method": {"name": "fedavg", "family": "adapterz"}})
    assert err.value.key == "method.family"


def test_reference_hyperparameters_fill_only_unset_train_keys():
    from hpcfed.methods.base import Method

    @METHODS.register("tuned_for_test")
    class Tuned(Method):
        recipe = {"lr": 0.123, "optimizer": "adam"}

    try:
        cfg = parse_config({"method": "tuned_for_test", "train": {"lr": 0.5}})
        assert cfg.train.lr == 0.5 and cfg.train.optimizer == "adam"
    finally:
        METHODS.remove("tuned_for_test")


def test_evaluated_as_trained_applies_only_to_shared_parameters():
    from hpcfed.methods.base import Method

    class Declared(Method):
        shared = ("prompt",)
        evaluated_as_trained = ("prompt", "gate.*")  # gate.* is not shared: already personal, nothing to keep

    method = Declared()
    assert method.is_evaluated_as_trained("prompt") and not method.is_evaluated_as_trained("gate.weight")
    pfedmoap = METHODS["pfedmoap"]()
    assert pfedmoap.is_evaluated_as_trained("params.prompt") and not pfedmoap.is_evaluated_as_trained("params.experts")
    assert not any(METHODS[name].evaluated_as_trained for name in ("pfedmma", "promptfl", "fedavg", "fedpgp"))


def test_harmonic_mean_of_local_base_novel():
    assert harmonic_mean(0.9, 0.6, 0.3) == pytest.approx(3 / (1 / 0.9 + 1 / 0.6 + 1 / 0.3))
    assert harmonic_mean(97.17, 77.40, 81.49) == pytest.approx(84.55, abs=0.01)  # pFedMMA averages, §1.7
    assert harmonic_mean(0.5, 0.0, 0.7) == 0.0
    assert np.isnan(harmonic_mean(0.5, float("nan"), 0.7))  # a client without that evaluation


def test_model_selection_uses_validation_and_ignores_missing_values():
    val = {0: np.array([0.2, 0.4]), 2: np.array([0.6, np.nan]), 4: np.array([0.5, 0.5])}
    assert select_round([0, 2, 4], val)[0] == 2  # nanmean: 0.6 beats 0.5
    tie = {0: np.array([0.5]), 1: np.array([0.5])}
    assert select_round([0, 1], tie)[0] == 0
    none = {0: np.array([np.nan]), 1: np.array([np.nan])}
    r, how = select_round([0, 1], none)
    assert r == 1 and "no validation" in how
